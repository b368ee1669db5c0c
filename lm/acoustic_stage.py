"""Semantic -> acoustic stage: turn semantic-only ids (the `semantic_only` pattern, or acoustic-BPE pieces decoded
back to semantic ids) into full codes `[2, F]` the codec can decode, AudioLM-style.

    semanticodec-hf decode-semantic semantic.npy out.wav --acoustic-lm runs/acoustic-stage/final --codec PATH
    semanticodec-hf decode-semantic semantic.npy out.wav --acoustic-lm runs/acoustic-stage-tiny-cpu/final --tiny

    stage = AcousticStage.from_pretrained("runs/acoustic-stage/final")
    codes = stage.predict_acoustic(semantic_ids)          # [F] -> [2, F]; a list of clips -> a list (batched)

Form chosen: the stage is an ordinary causal LM on the *interleaved* pattern (`s0 a0 s1 a1 ...`), trained by
lm/train.py like any other audio LM (same recipes, same exact resume; `recipes/acoustic_stage_tiny_cpu.yaml`).
At prediction time the semantic ids are not generated but *forced*: `ForcedSemanticLogitsProcessor` allows, at
each semantic position, only the given id, and `PatternLogitsProcessor` keeps every other position on the
pattern's rules (an acoustic id after each semantic one). So each frame's acoustic id is predicted from the
current and all past semantic ids and all past acoustic ids, the 1:1 frame structure is exploited, and every
output decodes. Why this form rather than a separate encoder-decoder or a per-frame classifier: it reuses the
trainer, the checkpoints, `generate` and the pattern constraint unchanged, and a model trained for interleaved
continuation is already such a stage (and vice versa). Its limits: the stage does not see future semantic ids
(no lookahead; an acoustic id that depends on the next phone cannot be predicted better than from the past), and
the trainer's loss also covers the semantic targets, which the stage never needs (capacity spent on them; a
loss restricted to acoustic targets would need a change in lm/train.py).

Training data: a stage learns the first frames of a window best from blocks that, like its windows, start at
`<bos>` with the clip's past before them. With packing, blocks start mid-clip, where a frame's previous semantic
ids are cut off; the tiny recipe therefore trains on whole clips, one per block (`data.packing: false`).

Prompt (voice/timbre): the full codes of a prompt clip are put before the new clip's semantic ids, so the
acoustic ids continue the prompt's. Long clips: an LM call holds at most `max_frames = (positions - 1) // 2`
frames. Longer clips are predicted in windows of whole frames: each window starts with the last `context_frames`
frames of known codes (the prompt, then the frames already predicted; default `max_frames // 2`) and predicts
the next `max_frames - context_frames` frames. With a prompt, only its last `context_frames` frames are used.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch
from transformers import LogitsProcessorList

from semanticodec_hf.atomic_files import atomic_write
from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout, codes_to_ids
from semanticodec_hf.cpu_threads import add_threads_option, use_threads
from semanticodec_hf.lm.codec_access import check_decode_settings, tiny_codec_tokenizer
from semanticodec_hf.lm.joint_corpus import is_joint_folder
from semanticodec_hf.lm.masked_generate import generate_with_mask
from semanticodec_hf.lm.pattern_logits import PatternLogitsProcessor
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[int]]


class ForcedSemanticLogitsProcessor:
    """A `transformers` logits processor that writes the given semantic ids at the semantic positions of an
    interleaved body (every even offset after the row's last `<bos>`/`<sep>`) and leaves all other positions alone.

    `semantic_ids` has one entry per row: the semantic ids of the row's whole body, the ones already in the
    prompt included (so that offset 2k is frame k). At a semantic position of frame k < len(row), only
    `semantic_ids[row][k]` may follow (its score set to 0, every other id to -inf); past the row's ids nothing is
    changed (compose with `PatternLogitsProcessor`, which then asks for `<eos>`). Stateless: it reads everything
    from `input_ids`, so it also holds under beam search.
    """

    def __init__(self, layout: SemantiCodecVocabularyLayout, semantic_ids: Sequence[ArrayLike]):
        self.layout = layout
        rows = [np.asarray(row.cpu() if torch.is_tensor(row) else row, dtype=np.int64).reshape(-1)
                for row in semantic_ids]
        for index, row in enumerate(rows):
            bad = np.flatnonzero((row < 0) | (row >= layout.semantic_vocab_size))
            if bad.size:
                raise ValueError(f"semantic_ids row {index} holds {int(row[bad[0]])} at frame {int(bad[0])}, not a "
                                 f"semantic id in 0..{layout.semantic_vocab_size - 1}.")
        longest = max([row.size for row in rows] + [1])
        table = torch.full((len(rows), longest), -1, dtype=torch.long)
        for index, row in enumerate(rows):
            table[index, : row.size] = torch.from_numpy(row)
        self.table, self.lengths = table, torch.tensor([row.size for row in rows], dtype=torch.long)

    def body_length(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Audio ids of each row after its last `<bos>`/`<sep>` (from its first non-`<pad>` id if it has neither)."""
        layout = self.layout
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        starts = (input_ids == layout.bos_token_id) | (input_ids == layout.sep_token_id)
        last_start = torch.where(starts, positions, -1).max(dim=1).values
        first_id = (input_ids != layout.pad_token_id).long().argmax(dim=1)
        body = positions >= torch.where(last_start >= 0, last_start + 1, first_id)[:, None]
        return (body & (input_ids < layout.special_offset)).sum(dim=1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != self.table.shape[0]:
            raise ValueError(f"semantic_ids has {self.table.shape[0]} rows but the batch has {input_ids.shape[0]}; "
                             "give one per row (beams included).")
        length = self.body_length(input_ids).cpu()
        frame = length // 2
        due = (length % 2 == 0) & (frame < self.lengths)
        if not bool(due.any()):
            return scores
        rows = torch.nonzero(due).flatten()
        forced = self.table[rows, frame[rows]].to(scores.device)
        rows = rows.to(scores.device)
        out = scores.clone()
        out[rows] = float("-inf")
        out[rows, forced] = 0.0
        return out


def _semantic_row(semantic: Any, index: int, layout: SemantiCodecVocabularyLayout) -> np.ndarray:
    """One clip's semantic codes (`[F]` or `[1, F]`) as int64 `[F]`, checked (ValueError naming the clip)."""
    array = semantic.detach().cpu().numpy() if torch.is_tensor(semantic) else np.asarray(semantic)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise ValueError(f"clip {index}: semantic codes must have shape [F] or [1, F], got {tuple(array.shape)} "
                         "(for full codes [2, F] pass codes[0]).")
    if array.size == 0:
        raise ValueError(f"clip {index}: no semantic codes (0 frames); there is nothing to predict.")
    if array.dtype.kind not in "iu":
        raise ValueError(f"clip {index}: semantic codes must be integers, got dtype {array.dtype}.")
    array = array.astype(np.int64)
    bad = np.flatnonzero((array < 0) | (array >= layout.semantic_vocab_size))
    if bad.size:
        raise ValueError(f"clip {index}: semantic code {int(array[bad[0]])} at frame {int(bad[0])} is outside "
                         f"0..{layout.semantic_vocab_size - 1}; the codes come from another codec variant than the "
                         "stage's (or are acoustic-BPE pieces: decode them with the BPE model first).")
    return array


def _prompt_codes(prompt: Any, index: int, layout: SemantiCodecVocabularyLayout) -> np.ndarray:
    """A prompt's full codes `[2, F]` as int64, checked by `codes_to_ids` (ValueError naming the clip)."""
    array = prompt.detach().cpu().numpy() if torch.is_tensor(prompt) else np.asarray(prompt)
    try:
        codes_to_ids(array, layout, "interleaved")
    except ValueError as error:
        raise ValueError(f"prompt of clip {index}: {error}") from None
    return array.astype(np.int64)


class AcousticStage:
    """An interleaved audio LM used as a semantic -> acoustic stage: `predict_acoustic(semantic)` -> codes [2, F].

    Build it from an LM folder written by lm/train.py (`from_pretrained`) or around a loaded causal LM and an
    audio tokenizer (ids-only is enough; a codec is only needed to make audio). The LM must have been trained on
    interleaved ids of the tokenizer's layout: an LM on another pattern cannot predict acoustic ids from
    semantic ones, and one of another layout would read the ids as other codes.
    """

    def __init__(self, lm: Any, tokenizer: SemantiCodecAudioTokenizer, device: str = "cpu"):
        layout = tokenizer.layout
        if tokenizer.pattern != "interleaved":
            raise ValueError(f"The acoustic stage needs an LM trained on interleaved ids, but this one was trained on "
                             f"{tokenizer.pattern!r} ids; train one with recipes/acoustic_stage_tiny_cpu.yaml (or any "
                             "interleaved recipe).")
        vocab = int(lm.config.vocab_size)
        if vocab != layout.vocab_size:
            raise ValueError(f"The LM has {vocab} ids but the layout {layout.semantic_vocab_size} semantic / "
                             f"{layout.acoustic_vocab_size} acoustic has {layout.vocab_size}; the LM was trained for "
                             "another codec variant.")
        positions = getattr(lm.config, "max_position_embeddings", None) or getattr(lm.config, "n_positions", None)
        if positions is None or positions < 5:
            raise ValueError(f"The LM's config does not state at least 5 positions (got {positions!r}); the stage "
                             "needs <bos> and two whole frames per call.")
        self.lm, self.tokenizer, self.device = lm.to(device).eval(), tokenizer, device
        self.positions = int(positions)

    @property
    def layout(self) -> SemantiCodecVocabularyLayout:
        return self.tokenizer.layout

    @property
    def max_frames(self) -> int:
        """Frames one LM call holds: `<bos>` plus two ids per frame must fit the LM's positions."""
        return (self.positions - 1) // 2

    @classmethod
    def from_pretrained(cls, lm_path: Union[str, Path], codec_tokenizer: Optional[SemantiCodecAudioTokenizer] = None,
                        device: str = "cpu") -> "AcousticStage":
        """Load an LM folder of lm/train.py (`OUTPUT/final`). With `codec_tokenizer` (a codec to make audio with),
        its layout must be the LM's; without, the stage is ids-only."""
        from transformers import AutoModelForCausalLM

        if is_joint_folder(lm_path):
            raise ValueError(f"{lm_path} is a text+audio LM (model.keep_text_vocab: true); the acoustic stage is an "
                             "audio-only LM trained on interleaved ids.")
        saved = SemantiCodecAudioTokenizer.from_pretrained(lm_path, load_codec=False)
        if (Path(lm_path) / "acoustic_bpe").is_dir():
            raise ValueError(f"{lm_path} was trained on acoustic-BPE pieces (semantic_only); the acoustic stage needs "
                             "an LM trained on interleaved ids.")
        tokenizer = saved
        if codec_tokenizer is not None:
            if codec_tokenizer.layout != saved.layout:
                raise ValueError(f"The stage LM was trained on ids of layout {saved.layout.to_dict()} but the codec has "
                                 f"{codec_tokenizer.layout.to_dict()}; use the codec variant the LM was trained with.")
            if saved.pattern != "interleaved":
                raise ValueError(f"The acoustic stage needs an LM trained on interleaved ids, but {lm_path} was "
                                 f"trained on {saved.pattern!r} ids.")
            codec_tokenizer.pattern = "interleaved"
            tokenizer = codec_tokenizer
        return cls(AutoModelForCausalLM.from_pretrained(lm_path), tokenizer, device)

    # ------------------------------------------------------------------------------------------- prediction
    def predict_acoustic(
        self,
        semantic: Any,
        prompt: Any = None,
        context_frames: Optional[int] = None,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        seed: int = 0,
    ) -> Union[torch.LongTensor, List[torch.LongTensor]]:
        """Semantic codes -> full codes `[2, F]` (row 0: exactly the given semantic codes; row 1: predicted).

        `semantic`: one clip (`[F]` or `[1, F]`, array, tensor or list of ints) or a list of clips (batched
        LM calls; then a list comes back). `prompt`: full codes `[2, Fp]` to continue from (voice/timbre), one
        for every clip or a list with one (or None) per clip. Greedy by default; `temperature` (with `top_k`)
        samples instead, seeded by `seed`. Clips longer than `max_frames` are predicted in windows (see the
        module docstring); `context_frames` frames of known codes start each window (default `max_frames // 2`).
        """
        layout = self.layout
        batched = isinstance(semantic, (list, tuple)) and len(semantic) > 0 and not isinstance(
            semantic[0], (int, np.integer))
        clips = list(semantic) if batched else [semantic]
        if isinstance(semantic, (list, tuple)) and len(semantic) == 0:
            raise ValueError("No clips given: pass one clip's semantic codes or a non-empty list of clips.")
        rows = [_semantic_row(clip, index, layout) for index, clip in enumerate(clips)]
        if prompt is None or not (isinstance(prompt, (list, tuple)) and batched):
            prompts = [prompt] * len(rows)
        else:
            prompts = list(prompt)
            if len(prompts) != len(rows):
                raise ValueError(f"{len(prompts)} prompts for {len(rows)} clips; give one prompt (or None) per clip.")
        known = [np.zeros((2, 0), dtype=np.int64) if p is None else _prompt_codes(p, i, layout)
                 for i, p in enumerate(prompts)]
        if context_frames is None:
            context_frames = self.max_frames // 2
        if isinstance(context_frames, bool) or not isinstance(context_frames, (int, np.integer)) or not (
                0 <= context_frames < self.max_frames):
            raise ValueError(f"context_frames must be an integer in 0..{self.max_frames - 1} (the LM holds "
                             f"{self.max_frames} frames per call and each window needs one new frame), got "
                             f"{context_frames!r}.")
        decoding = self._decoding(temperature, top_k)
        predicted: List[List[np.ndarray]] = [[] for _ in rows]
        done = [0] * len(rows)
        if decoding["do_sample"]:  # greedy prediction leaves the global RNG alone
            torch.manual_seed(seed)
        while True:
            active = [i for i, row in enumerate(rows) if done[i] < row.size]
            if not active:
                break
            contexts = {}
            for i in active:
                history = np.concatenate([known[i], self._predicted_codes(rows[i], predicted[i])], axis=1)
                contexts[i] = history[:, history.shape[1] - min(context_frames, history.shape[1]):]
            window = self.max_frames - max(contexts[i].shape[1] for i in active)
            new = {i: rows[i][done[i]:done[i] + window] for i in active}
            acoustic = self._predict_window([contexts[i] for i in active], [new[i] for i in active], decoding)
            for i, codes in zip(active, acoustic):
                predicted[i].append(codes)
                done[i] += new[i].size
        out = [torch.from_numpy(np.stack([row, np.concatenate(parts)])) for row, parts in zip(rows, predicted)]
        return out if batched else out[0]

    @staticmethod
    def _predicted_codes(semantic: np.ndarray, parts: List[np.ndarray]) -> np.ndarray:
        """The frames predicted so far as codes `[2, n]`."""
        acoustic = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return np.stack([semantic[: acoustic.size], acoustic])

    @staticmethod
    def _decoding(temperature: Optional[float], top_k: Optional[int]) -> dict:
        if temperature is None:
            if top_k is not None:
                raise ValueError(f"top_k={top_k} needs sampling: give a temperature too (greedy is the default).")
            return {"do_sample": False}
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number (None: greedy), got {temperature!r}.")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        return {"do_sample": True, "temperature": float(temperature), "top_k": top_k or 0}

    def _predict_window(self, contexts: List[np.ndarray], semantic: List[np.ndarray], decoding: dict
                        ) -> List[np.ndarray]:
        """One batched `generate`: row i is `<bos>` + contexts[i] (interleaved), then semantic[i] forced with an
        acoustic id predicted after each; returns each row's predicted acoustic codes `[len(semantic[i])]`."""
        layout, tok = self.layout, self.tokenizer
        prompts = [[layout.bos_token_id, *codes_to_ids(c, layout, "interleaved").tolist()] for c in contexts]
        batch = tok.pad(prompts, padding_side="left")
        body_semantic = [np.concatenate([c[0], s]) for c, s in zip(contexts, semantic)]
        new_ids = 2 * max(s.size for s in semantic)
        assert batch["input_ids"].shape[1] + new_ids <= self.positions + 1, "window planning exceeded the positions"
        processors = LogitsProcessorList([
            PatternLogitsProcessor(layout, "interleaved", target_frames=[b.size for b in body_semantic]),
            ForcedSemanticLogitsProcessor(layout, body_semantic),
        ])
        sequences = generate_with_mask(
            self.lm, batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
            max_new_tokens=new_ids, min_new_tokens=0, logits_processor=processors,
            bos_token_id=layout.bos_token_id, eos_token_id=layout.eos_token_id, pad_token_id=layout.pad_token_id,
            **decoding,
        ).cpu()
        written = sequences[:, batch["input_ids"].shape[1]:]
        out = []
        for row, ids in enumerate(semantic):
            pairs = written[row, : 2 * ids.size].reshape(-1, 2).numpy()
            if pairs.shape[0] != ids.size or not np.array_equal(pairs[:, 0], ids):
                raise RuntimeError(f"row {row}: the LM's output does not hold the forced semantic ids (a bug).")
            out.append(pairs[:, 1] - layout.acoustic_offset)
        return out


# ---------------------------------------------------------------------------------------------- command line
def read_semantic_codes(path: Union[str, Path]) -> np.ndarray:
    """Semantic codes from a `.npy` file: shape [F], [1, F], or [2, F] (full codes; the acoustic row is ignored)."""
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"{path}: give the semantic codes as a .npy file (shape [F], [1, F] or [2, F]).")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if array.ndim == 2 and array.shape[0] in (1, 2):
        array = array[0]
    if array.ndim != 1:
        raise ValueError(f"{path}: codes of shape {tuple(array.shape)}; expected [F], [1, F] or [2, F] "
                         "(row 0 semantic).")
    if array.size == 0:
        raise ValueError(f"{path}: holds no frames; there is nothing to decode.")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{path}: codes must be integers, got dtype {array.dtype}.")
    return array.astype(np.int64)


def register_decode_semantic_command(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add `decode-semantic` to the `semanticodec-hf` command line (entry point `semanticodec_hf.commands`:
    `decode-semantic=semanticodec_hf.lm.acoustic_stage:register_decode_semantic_command`)."""
    parser = add_command(
        "decode-semantic", "semantic-only codes -> audio, acoustic ids predicted by a stage LM (lm toolkit)",
        "Predict the acoustic ids of semantic-only codes with an acoustic-stage LM (an interleaved audio LM, e.g. "
        "from recipes/acoustic_stage_tiny_cpu.yaml) and decode the full codes to a wav file.")
    parser.add_argument("codes", metavar="CODES", help=".npy semantic codes: [F], [1, F] or [2, F] (acoustic row ignored)")
    parser.add_argument("output", metavar="OUTPUT", help="wav file to write")
    parser.add_argument("--acoustic-lm", required=True, metavar="PATH",
                        help="stage LM folder written by lm/train.py (OUTPUT/final), trained on interleaved ids")
    parser.add_argument("--codec", help="converted SemantiCodec folder or Hub id (default: the one the LM records)")
    parser.add_argument("--tiny", action="store_true",
                        help="a RANDOM tiny codec (64 semantic / 128 acoustic ids): its output is noise, smoke tests only")
    parser.add_argument("--prompt-codes", metavar="NPY",
                        help="full codes [2, F] of a prompt clip whose voice the prediction continues")
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps of the codec decoder (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the codec's decoder")
    parser.add_argument("--device", default="cpu")
    add_threads_option(parser)
    parser.set_defaults(func=run_decode_semantic)


def run_decode_semantic(args: argparse.Namespace) -> int:
    """Read the codes, predict the acoustic ids (greedy), decode and write OUTPUT atomically.

    Returns 0, or 2 with a one-line message for anything the user can fix (no output is left then)."""
    use_threads(getattr(args, "threads", None))
    try:
        if args.tiny and args.codec:
            raise ValueError("give --codec PATH or --tiny (a random codec for smoke tests), not both.")
        semantic = read_semantic_codes(args.codes)
        prompt = None
        if args.prompt_codes is not None:
            try:
                prompt = np.load(args.prompt_codes, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise ValueError(f"cannot read --prompt-codes {args.prompt_codes}: {error}") from None
        if args.tiny:
            codec = tiny_codec_tokenizer()
        else:
            source = args.codec or SemantiCodecAudioTokenizer.from_pretrained(args.acoustic_lm,
                                                                              load_codec=False).codec_name_or_path
            if source is None:
                raise ValueError(f"{args.acoustic_lm} does not record its codec; pass --codec PATH.")
            codec = SemantiCodecAudioTokenizer.from_pretrained(source, device=args.device)
        codec.model.to(args.device)
        check_decode_settings(codec.model, args.steps, None)  # before any prediction
        stage = AcousticStage.from_pretrained(args.acoustic_lm, codec_tokenizer=codec, device=args.device)
        codes = stage.predict_acoustic(semantic, prompt=prompt)
        wave = codec.processor.decode_codes(codec.model, [codes], seed=args.seed,
                                            num_inference_steps=args.steps)[0]
    except (ValueError, OSError) as error:
        print(f"decode-semantic: error: {error}", file=sys.stderr)
        return 2
    target = Path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    samples, rate = wave.numpy(), codec.sampling_rate
    atomic_write(target, lambda temporary: sf.write(str(temporary), samples, rate, subtype="PCM_16"))
    print(f"{target}: {codes.shape[1]} frames, {samples.shape[-1] / rate:.2f} s")
    return 0

#!/usr/bin/env python
"""Continue audio with an audio LM: prompt audio -> codes -> ids -> `generate` -> codes -> codec decode -> waveform.

    python lm/generate.py prompt.wav out.wav --lm runs/lm-100tps/final --seconds 8   # the LM records its codec
    semanticodec-hf continue prompt.wav out.wav --lm PATH --codec PATH --seconds 8     # the same, from the CLI
    semanticodec-hf continue prompt.wav out.wav --lm runs/lm-tiny-cpu/final --tiny --seconds 2.4 --steps 10

The LM must have been trained on this codec's ids (its layout is checked) with enough positions for `--seconds`
(interleaved: 2 per frame plus `<bos>`/`<eos>`; 8 s at 100 tokens/s is 400 frames, 802 positions). The last
line is the smoke test: the tiny recipe trains on a synthetic corpus in the random tiny codec's layout and has
256 positions (2.4 s at most).

No text is involved. `PatternLogitsProcessor` constrains sampling so that every sequence the LM writes is
decodable by the codec (the right stream at every position, `<eos>` only after a whole frame); the output starts
with exactly the prompt's reconstruction and then the LM's continuation.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # a script run: drop lm/ from sys.path so its config.py, data.py, ... shadow nothing
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import torch

from semanticodec_hf.audio_token_layout import PATTERNS, SemantiCodecVocabularyLayout

SPLICE_SECONDS = 0.01  # length of the offset ramp that hides the seam between prompt and continuation


class PatternLogitsProcessor:
    """A `transformers` logits processor that only lets the LM write ids the codec can decode.

    For every row it reads the ids after the row's last `<bos>`/`<sep>` and allows exactly what the pattern
    permits next: interleaved - a semantic id at even offsets, an acoustic id at odd ones; semantic_then_acoustic -
    semantic ids, then as many acoustic ids (the prompt's own acoustic ids first, if given); semantic_only -
    semantic ids. `<eos>` is allowed only after a whole frame and, with `target_frames`, is forced once a row has
    that many frames (and forbidden before, unless `allow_early_eos`). Finished rows may only write `<pad>`/`<eos>`.

    All of it runs batched on the ids' device, with no copy to the host. A row's state (semantic ids, acoustic
    ids, finished) is scanned from the ids at the first call of a `generate`; each later call adds the one new id
    (a table lookup) and checks that the ids extend the previous call's (otherwise - a new prompt, reordered
    beams - it scans again). The state gives six yes/no facts per row (`_FACTS`); the allowed ids for each of
    their 64 combinations are tabulated once from the plain rule in `_rule`. `target_frames` and
    `forced_acoustic` have one entry per row.
    """

    def __init__(
        self,
        layout: SemantiCodecVocabularyLayout,
        pattern: str,
        target_frames: Optional[Sequence[int]] = None,
        allow_early_eos: bool = False,
        forced_acoustic: Optional[Sequence[Sequence[int]]] = None,
    ):
        if pattern not in PATTERNS:
            raise ValueError(f"Unknown pattern {pattern!r}; choose one of {list(PATTERNS)}.")
        if pattern == "semantic_then_acoustic" and target_frames is None:
            raise ValueError("semantic_then_acoustic generation needs target_frames: the model must know when to "
                             "switch from semantic to acoustic ids.")
        self.layout, self.pattern = layout, pattern
        self.target_frames = None if target_frames is None else [int(f) for f in target_frames]
        self.allow_early_eos = bool(allow_early_eos)
        self.forced_acoustic = None if forced_acoustic is None else [list(map(int, f)) for f in forced_acoustic]
        if self.forced_acoustic is not None:
            bad = [(row, i) for row, f in enumerate(self.forced_acoustic) for i in f
                   if not 0 <= i < layout.acoustic_vocab_size]
            if bad:
                raise ValueError(f"forced_acoustic row {bad[0][0]} holds {bad[0][1]}, not an acoustic code in "
                                 f"0..{layout.acoustic_vocab_size - 1} (give codes, not LM ids).")
        self._tables: Dict[Any, torch.Tensor] = {}  # per (name, device, width, rows)
        self._previous: Optional[torch.Tensor] = None  # the ids of the last call
        self._state: Optional[torch.Tensor] = None  # int64 [B, 3]: semantic ids, acoustic ids, <eos> seen

    # ------------------------------------------------------------------------------------------- the rule
    def _rule(self, frame_open: bool, more: bool, has_frame: bool, finished: bool, no_acoustic: bool,
              forced_due: bool) -> Tuple[bool, bool, bool, bool]:
        """(semantic ids, acoustic ids, `<eos>`, only the row's forced acoustic id) allowed next, from the facts."""
        if finished:
            return False, False, True, False  # (and <pad>)
        if self.pattern == "semantic_then_acoustic":  # target is known
            if no_acoustic and more:
                return True, False, False, False
            if frame_open:  # fewer acoustic than semantic ids
                return False, not forced_due, False, forced_due
            return False, False, has_frame, False
        if self.pattern == "interleaved" and frame_open:
            return False, True, False, False
        eos = has_frame and (not more or self.allow_early_eos or self.target_frames is None)
        return more, False, eos, False

    def _check_rows(self, rows: int) -> None:
        for name, values in (("target_frames", self.target_frames), ("forced_acoustic", self.forced_acoustic)):
            if values is not None and len(values) != rows:
                raise ValueError(f"{name} has {len(values)} entries but the batch has {rows} rows; give one per row "
                                 "(beams included).")

    def _mode(self, state: torch.Tensor) -> torch.Tensor:
        """[B] mode code: bit k says whether fact k of `_FACTS` holds. Integer comparisons, so counts stay exact
        under autocast and at any length."""
        device, rows = state.device, state.shape[0]
        semantic, acoustic, eos = state.unbind(dim=1)
        facts = torch.stack([
            semantic > acoustic,  # frame_open
            semantic < self._table("targets", device, rows=rows),  # more
            semantic > 0,  # has_frame
            eos > 0,  # finished
            acoustic == 0,  # no_acoustic
            acoustic < self._table("forced_counts", device, rows=rows),  # forced_due
        ], dim=1)
        return (facts.long() * self._table("bits", device)).sum(dim=1)

    # ------------------------------------------------------------------------------------------- tables
    def _table(self, name: str, device: torch.device, width: int = 0, rows: int = 0) -> torch.Tensor:
        """Constant tensors built once per device (and width / rows): id effects, fact weights, mode masks."""
        key = (name, device, width, rows)
        if key not in self._tables:
            self._tables[key] = self._build_table(name, width, rows).to(device)
        return self._tables[key]

    def _build_table(self, name: str, width: int, rows: int) -> torch.Tensor:
        layout = self.layout
        if name == "effects":  # appending id i: state = state * effects[i, 0] + effects[i, 1]
            effects = torch.zeros(max(width, layout.vocab_size), 2, 3, dtype=torch.long)
            effects[:, 0] = 1
            effects[: layout.acoustic_offset, 1, 0] = 1
            effects[layout.acoustic_offset: layout.special_offset, 1, 1] = 1
            effects[layout.eos_token_id, 1, 2] = 1
            effects[[layout.bos_token_id, layout.sep_token_id], 0] = 0  # a new body starts
            return effects
        if name == "targets":  # per row: the frames to reach (no target: always more)
            return torch.tensor(self.target_frames or [2 ** 62] * rows, dtype=torch.long)
        if name == "forced_counts":  # per row: how many acoustic ids are forced
            forced = [len(f) for f in self.forced_acoustic] if self.forced_acoustic is not None else [0] * rows
            return torch.tensor(forced, dtype=torch.long)
        if name == "forced":  # [rows, longest]: LM ids of each row's forced acoustic codes (read where due)
            longest = max([len(f) for f in self.forced_acoustic] + [1])
            forced = torch.zeros(len(self.forced_acoustic), longest, dtype=torch.long)
            for row, codes in enumerate(self.forced_acoustic):
                forced[row, : len(codes)] = torch.tensor(codes, dtype=torch.long) + layout.acoustic_offset
            return forced
        if name == "blocked":  # [64, width]: the ids a row may NOT write next, for each combination of the facts
            columns = torch.arange(width)
            semantic = columns < layout.acoustic_offset
            acoustic = (columns >= layout.acoustic_offset) & (columns < layout.special_offset)
            eos, pad = columns == layout.eos_token_id, columns == layout.pad_token_id
            allowed = torch.zeros(len(_ALL_FACTS), width, dtype=torch.bool)
            for code, facts in enumerate(_ALL_FACTS):
                sem, ac, end, _ = self._rule(*facts)
                allowed[code] = (semantic & sem) | (acoustic & ac) | (eos & end) | (pad & facts[3])
            return ~allowed
        if name == "forced_only":  # [64]: combinations in which only the row's forced acoustic id may follow
            return torch.tensor([self._rule(*facts)[3] for facts in _ALL_FACTS])
        if name == "bits":
            return torch.tensor([1 << bit for bit in range(len(_FACTS))])
        raise KeyError(name)

    # ------------------------------------------------------------------------------------------- row state
    def _scan(self, ids: torch.Tensor) -> torch.Tensor:
        """Int64 [B, 3] (semantic ids, acoustic ids, `<eos>` seen) of each row of `ids` [B, L], counted after the
        row's last `<bos>`/`<sep>` (or, with neither, from its first non-`<pad>` id)."""
        layout = self.layout
        positions = torch.arange(ids.shape[1], device=ids.device)
        starts = (ids == layout.bos_token_id) | (ids == layout.sep_token_id)
        last_start = torch.where(starts, positions, -1).max(dim=1).values
        first_id = (ids != layout.pad_token_id).long().argmax(dim=1)
        body = positions >= torch.where(last_start >= 0, last_start + 1, first_id)[:, None]
        semantic = (body & (ids < layout.acoustic_offset)).sum(dim=1)
        acoustic = (body & (ids >= layout.acoustic_offset) & (ids < layout.special_offset)).sum(dim=1)
        finished = (body & (ids == layout.eos_token_id)).any(dim=1)
        return torch.stack([semantic, acoustic, finished.long()], dim=1)

    def _advance(self, state: torch.Tensor, new: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """The state after appending the ids `new` [B] (< `vocab_size`): what `_scan` of the longer ids gives
        (the `<eos>` column may count past 1; only > 0 matters)."""
        effects = self._table("effects", new.device, width=vocab_size)[new]
        return state * effects[:, 0] + effects[:, 1]

    def _blocked(self, state: torch.Tensor, width: int) -> torch.Tensor:
        """Bool [B, width]: True where a row may NOT write the id next (ids past the layout's: always)."""
        code = self._mode(state)
        blocked = self._table("blocked", state.device, width=width)[code]
        if self.forced_acoustic is not None:  # rows whose next id is forced: only that one
            only = self._table("forced_only", state.device)[code]
            rows = torch.arange(state.shape[0], device=state.device)[only]
            table = self._table("forced", state.device)
            blocked[rows, table[rows, state[rows, 1]]] = False
        return blocked

    def allowed(self, row: int, ids: np.ndarray) -> torch.Tensor:
        """Boolean mask over the layout's vocabulary of the ids row `row` of a batch may write after `ids`."""
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)[None]
        rows = max(len(self.target_frames or []), len(self.forced_acoustic or []), row + 1)
        self._check_rows(rows)
        state = self._scan(ids).expand(rows, 3).contiguous()  # the row sits at its index in the batch
        return ~self._blocked(state, self.layout.vocab_size)[row]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        previous = self._previous
        if (previous is not None and previous.device == input_ids.device
                and previous.shape == (input_ids.shape[0], input_ids.shape[1] - 1)
                and torch.equal(input_ids[:, :-1], previous)):
            self._state = self._advance(self._state, input_ids[:, -1], scores.shape[-1])
        else:  # the first step of a generate call (or ids that do not extend the last call's)
            self._check_rows(input_ids.shape[0])
            self._state = self._scan(input_ids)
        self._previous = input_ids
        return scores.masked_fill(self._blocked(self._state, scores.shape[-1]), float("-inf"))


# The yes/no facts about a row that decide what it may write next (bit k of a mode code is fact k).
_FACTS = ("frame_open", "more", "has_frame", "finished", "no_acoustic", "forced_due")
_ALL_FACTS = [[bool(code >> bit & 1) for bit in range(len(_FACTS))] for code in range(2 ** len(_FACTS))]


def new_tokens_needed(pattern: str, prompt_frames: int, target_frames: int) -> int:
    """Ids the LM must write to take a prompt of `prompt_frames` to `target_frames` frames, `<eos>` included."""
    extra = target_frames - prompt_frames
    if pattern == "interleaved":
        return 2 * extra + 1
    if pattern == "semantic_only":
        return extra + 1
    return extra + target_frames + 1  # the rest of the semantic ids, then every acoustic id


def prompt_ids(codes: torch.Tensor, layout: SemantiCodecVocabularyLayout, pattern: str) -> List[int]:
    """`<bos>` + the prompt's ids in the pattern, left open for the LM (no `<eos>`; only semantic ids for
    semantic_then_acoustic, whose acoustic half comes after all semantic ids)."""
    from semanticodec_hf.audio_token_layout import codes_to_ids

    if pattern == "semantic_then_acoustic":
        return [layout.bos_token_id, *codes[0].tolist()]
    return [layout.bos_token_id, *codes_to_ids(codes, layout, pattern).tolist()]


def splice(prompt_audio: torch.Tensor, full_audio: torch.Tensor, sampling_rate: int = 16000) -> torch.Tensor:
    """Prompt reconstruction, then the full decode from where the prompt ends.

    Diffusion decoding attends over whole windows, so decoding prompt + continuation together changes the
    prompt part slightly; we keep the prompt's own reconstruction exactly and remove the step at the seam with
    a short decaying offset on the continuation side.
    """
    cut = prompt_audio.shape[-1]
    out = full_audio.clone()
    out[:cut] = prompt_audio
    ramp = min(int(SPLICE_SECONDS * sampling_rate), out.shape[-1] - cut)
    if cut and ramp > 0:
        step = prompt_audio[cut - 1] - full_audio[cut - 1]
        out[cut:cut + ramp] += step * torch.linspace(1.0, 0.0, ramp + 1, dtype=out.dtype)[1:]
    return out


class PromptError(ValueError):
    """A problem with one prompt of a batch; `index` says which (the command line names its file)."""

    def __init__(self, index: int, message: str):
        super().__init__(f"prompt {index}: {message}")
        self.index, self.message = index, message


def check_decode_settings(config: Any, num_inference_steps: Optional[int], sampler: Optional[str]) -> None:
    """Refuse decoder settings the codec would refuse, before minutes of LM generation are spent.

    `config`: the codec's config (its default step count and training timesteps); `None` means its default."""
    from semanticodec_hf.modeling_semanticodec_decoder import SAMPLERS, reference_ddim_timesteps

    if sampler is not None and sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}.")
    if num_inference_steps is not None and (isinstance(num_inference_steps, bool) or
                                            not isinstance(num_inference_steps, int) or num_inference_steps < 1):
        raise ValueError(f"--steps must be a positive integer, got {num_inference_steps!r}.")
    if (sampler or "ddim") == "ddim":  # the original DDIM crashes on some counts: say which ones work
        steps = num_inference_steps or config.num_inference_steps
        try:
            reference_ddim_timesteps(steps, config.num_train_timesteps)
        except ValueError as error:
            raise ValueError(f"--steps {steps} cannot be decoded with the ddim sampler: {error}") from None


def longest_fitting_seconds(pattern: str, prompt_positions: int, prompt_frames: Sequence[int], prompt_samples: int,
                            token_rate: int, limit: int) -> Optional[float]:
    """The largest total length (in 0.01 s steps) whose continuation of these prompts fits in `limit` positions,
    or None when even the shortest continuation does not fit."""
    from semanticodec_hf.feature_extraction_semanticodec import SAMPLING_RATE, reference_frame_count

    centiseconds = math.floor(prompt_samples / SAMPLING_RATE * 100) + 1  # the first length beyond the prompts
    best = None
    while True:
        frames = reference_frame_count(int(round(centiseconds * SAMPLING_RATE / 100)), token_rate)
        if prompt_positions + max(new_tokens_needed(pattern, f, frames) for f in prompt_frames) > limit:
            return best
        best = centiseconds / 100
        centiseconds += 1


class AudioContinuation:
    """An audio LM plus a codec: `continue_audio(prompts, seconds)` -> waveforms that start with the prompts."""

    def __init__(self, lm, codec_tokenizer, device: str = "cpu"):
        self.lm = lm.to(device).eval()
        self.tokenizer = codec_tokenizer
        self.device = device
        lm_vocab = int(lm.config.vocab_size)
        if lm_vocab < self.tokenizer.layout.vocab_size:
            raise ValueError(
                f"The LM's vocabulary ({lm_vocab} ids) is smaller than the codec tokenizer's "
                f"({self.tokenizer.layout.vocab_size}); the LM was trained for another codec variant."
            )

    @classmethod
    def from_pretrained(cls, lm_path: str, codec_path: Optional[str] = None, device: str = "cpu",
                        codec_tokenizer=None) -> "AudioContinuation":
        """Load the LM folder written by `lm/train.py` and the codec it was trained for (checked by layout)."""
        from transformers import AutoModelForCausalLM

        from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

        saved = SemantiCodecAudioTokenizer.from_pretrained(lm_path, load_codec=False)
        if codec_tokenizer is None:
            source = codec_path or saved.codec_name_or_path
            if source is None:
                raise ValueError(f"{lm_path} does not record its codec; pass --codec PATH (a converted SemantiCodec).")
            codec_tokenizer = SemantiCodecAudioTokenizer.from_pretrained(source, pattern=saved.pattern, device=device)
        if codec_tokenizer.layout != saved.layout:
            raise ValueError(
                f"The LM was trained on ids of layout {saved.layout.to_dict()} but the codec has "
                f"{codec_tokenizer.layout.to_dict()}; use the codec variant the LM was trained with."
            )
        codec_tokenizer.pattern = saved.pattern
        return cls(AutoModelForCausalLM.from_pretrained(lm_path), codec_tokenizer, device)

    def continue_audio(
        self,
        prompts: Sequence[np.ndarray],
        sampling_rate: int,
        seconds: float,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: int = 0,
        allow_early_eos: bool = False,
        num_inference_steps: Optional[int] = None,
        sampler: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Continue each prompt to `seconds` of audio in total; returns `audio` (16 kHz tensors), `ids`, `codes`."""
        from transformers import LogitsProcessorList

        from semanticodec_hf.feature_extraction_semanticodec import (
            PATCH_SAMPLES,
            PATCH_SECONDS,
            SAMPLING_RATE,
            reference_frame_count,
        )
        from semanticodec_hf.tokenization_semanticodec import AudioItemError

        tok, layout, pattern = self.tokenizer, self.tokenizer.layout, self.tokenizer.pattern
        if pattern == "semantic_only":
            raise ValueError("An LM on semantic_only ids cannot make audio: the codec decoder needs acoustic ids too.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use a small value for near-greedy sampling), got {temperature}.")
        check_decode_settings(tok.model.config, num_inference_steps, sampler)  # before any generation
        token_rate = tok.model.config.token_rate
        target_samples = int(round(seconds * SAMPLING_RATE))
        # The prompt's length at 16 kHz, as the feature extractor resamples it (last axis = time).
        prompt_samples = [int(round(np.shape(p)[-1] * SAMPLING_RATE / sampling_rate)) for p in prompts]
        for index, samples in enumerate(prompt_samples):
            if samples < PATCH_SAMPLES:
                raise PromptError(index, f"it lasts {samples / SAMPLING_RATE:.3f} s; the codec needs at least "
                                         f"{PATCH_SECONDS} s ({PATCH_SAMPLES} samples at 16 kHz). Use a longer prompt.")
        short = [i for i, n in enumerate(prompt_samples) if n >= target_samples]
        if short:
            raise ValueError(
                f"--seconds {seconds} is the total length and must exceed the prompt; prompt(s) {short} are already "
                f"{max(prompt_samples[i] for i in short) / SAMPLING_RATE:.2f} s long."
            )
        try:
            prompt_codes = tok.encode_audio(list(prompts), sampling_rate)
        except AudioItemError as error:
            raise PromptError(error.index, error.message) from None
        target_frames = reference_frame_count(target_samples, token_rate)
        rows = [prompt_ids(c, layout, pattern) for c in prompt_codes]
        batch = tok.pad(rows, padding_side="left")
        prompt_frames = [int(c.shape[1]) for c in prompt_codes]
        needed = max(new_tokens_needed(pattern, frames, target_frames) for frames in prompt_frames)
        limit = getattr(self.lm.config, "max_position_embeddings", None) or getattr(self.lm.config, "n_positions", None)
        if limit is not None and batch["input_ids"].shape[1] + needed > limit:
            fits = longest_fitting_seconds(pattern, batch["input_ids"].shape[1], prompt_frames, max(prompt_samples),
                                           token_rate, limit)
            advice = (f"--seconds {fits:.2f} is the longest that fits with these prompts" if fits is not None else
                      "the prompts alone leave no room for a continuation; use shorter prompts")
            raise ValueError(
                f"--seconds {seconds} needs {batch['input_ids'].shape[1] + needed} positions but the LM has {limit}: "
                f"{advice} (or use an LM with a longer context)."
            )
        processor = PatternLogitsProcessor(
            layout, pattern, target_frames=[target_frames] * len(rows), allow_early_eos=allow_early_eos,
            forced_acoustic=[c[1].tolist() for c in prompt_codes] if pattern == "semantic_then_acoustic" else None,
        )
        torch.manual_seed(seed)
        with torch.no_grad():
            sequences = self.lm.generate(
                input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device),
                do_sample=True, temperature=temperature, top_k=top_k or 0, top_p=top_p if top_p is not None else 1.0,
                max_new_tokens=needed, logits_processor=LogitsProcessorList([processor]),
                bos_token_id=layout.bos_token_id, eos_token_id=layout.eos_token_id, pad_token_id=layout.pad_token_id,
            ).cpu()
        codes = tok.decode_ids(sequences)
        decode = dict(num_inference_steps=num_inference_steps, seed=seed)
        if sampler is not None:
            decode["sampler"] = sampler
        full = tok.ids_to_audio(sequences, **decode)
        prompt_recon = self.reconstruct(prompt_codes, prompt_samples, **decode)
        audio = []
        for i, wave in enumerate(full):
            samples = min(target_samples, reference_samples_for(codes[i].shape[1], token_rate))
            audio.append(splice(prompt_recon[i], wave[:samples]))
        return {"audio": audio, "ids": sequences, "codes": codes, "prompt_reconstruction": prompt_recon,
                "target_frames": target_frames}

    def reconstruct(self, codes: Sequence[torch.Tensor], num_samples: Sequence[int], **decode: Any) -> List[torch.Tensor]:
        """The codec's reconstruction of each prompt alone, cut to the prompt's length (what `roundtrip` gives)."""
        model = self.tokenizer.model
        lengths = torch.tensor([c.shape[1] for c in codes])
        padded = torch.zeros(len(codes), 2, int(lengths.max()), dtype=torch.long)
        for i, c in enumerate(codes):
            padded[i, :, : c.shape[1]] = c
        out = model.decode(padded, audio_codes_lengths=lengths, num_samples=torch.tensor(num_samples), **decode)
        return [out.audio_values[i, 0, : int(out.audio_values_lengths[i])].clone() for i in range(len(codes))]


def reference_samples_for(frames: int, token_rate: int) -> int:
    from semanticodec_hf.long_audio import reference_output_samples

    return reference_output_samples(frames, token_rate)


# ---------------------------------------------------------------------------------------------- command line
def add_continue_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `semanticodec-hf continue` and `python lm/generate.py` (one definition for both)."""
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help="prompt audio file(s); the last argument is OUTPUT")
    parser.add_argument("--lm", required=True, help="LM folder written by lm/train.py (OUTPUT/final)")
    parser.add_argument("--codec", help="converted SemantiCodec folder or Hub id (default: the one the LM records)")
    parser.add_argument("--tiny", action="store_true",
                        help="a RANDOM tiny codec (64 semantic / 128 acoustic ids, 100 tokens/s: the layout of "
                             "recipes/lm_tiny_cpu.yaml's synthetic corpus and of tokenize_dataset.py --tiny); its output "
                             "is noise: smoke tests only")
    parser.add_argument("--seconds", type=float, required=True, help="total output length in seconds (prompt included)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of LM sampling and of the codec's decoder")
    parser.add_argument("--allow-early-eos", action="store_true", help="stop a clip early when the LM writes <eos>")
    parser.add_argument("--steps", type=int, default=None,
                        help="diffusion steps of the codec decoder (default 50; checked before generation starts)")
    parser.add_argument("--sampler", default=None, choices=list(_samplers()),
                        help="codec decoder sampler: ddim (default, the original) or a faster solver such as dpmsolver++")
    parser.add_argument("--device", default="cpu")


def _samplers() -> Sequence[str]:
    from semanticodec_hf.modeling_semanticodec_decoder import SAMPLERS

    return SAMPLERS


def tiny_codec_tokenizer():
    """The random tiny codec behind `--tiny` (seed 0: the one `tokenize_dataset.py --tiny` uses), loudly warned."""
    from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

    print("WARNING: --tiny uses a small RANDOMLY INITIALISED codec. Its output is noise; use it only to check that "
          "the pipeline runs (e.g. with an LM from recipes/lm_tiny_cpu.yaml).", file=sys.stderr)
    return SemantiCodecAudioTokenizer.tiny(seed=0)


def _read_prompts(paths: Sequence[str]):
    import soundfile as sf

    prompts, rates = [], set()
    for path in paths:
        try:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
        except Exception as error:  # soundfile raises several types for missing or unreadable files
            raise ValueError(f"cannot read prompt {path}: {error}") from None
        prompts.append(audio.T)
        rates.add(rate)
    if len(rates) != 1:
        raise ValueError(f"prompts have different sample rates {sorted(rates)}; resample them to one rate.")
    return prompts, rates.pop()


def run_continue(args: argparse.Namespace) -> int:
    """Read prompts, continue them in one batch, write OUTPUT (a file for one prompt, else a folder of wavs).

    Returns 0, or 2 with a one-line message for anything the user can fix (no partial output is left)."""
    import os
    import tempfile

    import soundfile as sf

    *inputs, output = args.prompts
    try:
        if not inputs:
            raise ValueError("give at least one prompt file and an OUTPUT path.")
        if args.tiny and args.codec:
            raise ValueError("give --codec PATH or --tiny (a random codec for smoke tests), not both.")
        prompts, rate = _read_prompts(inputs)
        tiny = tiny_codec_tokenizer() if args.tiny else None
        if tiny is not None:
            tiny.model.to(args.device)
        engine = AudioContinuation.from_pretrained(args.lm, args.codec, device=args.device, codec_tokenizer=tiny)
        result = engine.continue_audio(
            prompts, rate, args.seconds, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            seed=args.seed, allow_early_eos=args.allow_early_eos, num_inference_steps=args.steps,
            sampler=args.sampler,
        )
    except PromptError as error:
        print(f"continue: error: {inputs[error.index]}: {error.message}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:
        print(f"continue: error: {error}", file=sys.stderr)
        return 2
    targets = [Path(output)] if len(inputs) == 1 else [Path(output) / (Path(p).stem + ".wav") for p in inputs]
    for target, wave in zip(targets, result["audio"]):
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(suffix=".wav", dir=target.parent)
        os.close(handle)
        sf.write(temporary, wave.numpy(), 16000, subtype="PCM_16")
        os.replace(temporary, target)  # atomic: a reader never sees half a file
        print(f"{target}: {wave.shape[-1] / 16000:.2f} s")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_continue_arguments(parser)
    return run_continue(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

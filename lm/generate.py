#!/usr/bin/env python
"""Continue audio with an audio LM: prompt audio -> codes -> ids -> `generate` -> codes -> codec decode -> waveform.

    python lm/generate.py prompt.wav out.wav --lm runs/lm-100tps/final --seconds 8   # the LM records its codec
    semanticodec-hf continue prompt.wav out.wav --lm PATH --codec PATH --seconds 8     # the same, from the CLI
    semanticodec-hf continue prompt.wav out.wav --lm runs/lm-tiny-cpu/final --tiny --seconds 2.4 --steps 10

The LM must have been trained on this codec's ids (its layout is checked). A continuation that fits in the LM's
positions (interleaved: 2 per frame plus `<bos>`/`<eos>`; 8 s at 100 tokens/s is 400 frames, 802 positions) is
one `generate` call. A longer `--seconds` is generated long-form: whenever the context is full, the LM keeps
its last `context - --extend-stride` seconds (cut at a frame boundary) and continues from them, and the result
is decoded and written as a stream of pieces (bounded memory for minutes of audio). The last line is the smoke
test: the tiny recipe trains on a synthetic corpus in the random tiny codec's layout and has 256 positions.

An audio LM reads no text. `PatternLogitsProcessor` constrains sampling so that every sequence the LM writes is
decodable by the codec (the right stream at every position, `<eos>` only after a whole frame); the output starts
with exactly the prompt's reconstruction and then the LM's continuation.

Decoding: sampling by default (`--temperature`, `--top-k`, `--top-p`), or `--greedy`, or beam search
(`--num-beams N`); the pattern constraint holds for every beam. `--repetition-penalty`, `--no-repeat-ngram-size`
(semantic ids only) and `--min-seconds` (with it the LM may end a clip with `<eos>` once it is that long) apply
to all of them. Across slides (long-form): sampling, greedy, `--min-seconds`, `--allow-early-eos` and
`--no-repeat-ngram-size` (over the whole clip's semantic ids) hold as for a short clip; `--repetition-penalty`
sees the LM's window; beam search is refused (its beams cannot be carried across a slide).

An LM on `semantic_only` ids needs `--acoustic-lm` (the semantic -> acoustic stage, lm/acoustic_stage.py). So does an
LM trained on acoustic-BPE pieces (`data.acoustic_bpe`; its folder holds `acoustic_bpe/`): the prompt's semantic
ids become pieces, the LM writes pieces until they cover `--seconds` of frames (the last piece is cut to the exact
length), and the pieces are decoded back to semantic ids before the stage adds the acoustic ids.

A text+audio LM (a text LM trained with `model.keep_text_vocab: true`; its folder holds `joint_vocabulary.json`)
is continued by `semanticodec_hf.lm.joint_generation.JointAudioContinuation`, with the same decoding options:

    semanticodec-hf continue prompt.wav out.wav --lm runs/lm-joint/final --seconds 8 --text "a dog barks"
    semanticodec-hf continue out.wav --lm runs/lm-joint/final --seconds 4 --text "a dog barks"   # text only

`--text` goes before the audio span, as the corpus put a clip's text (once for every prompt, or once per
prompt); with no prompt file OUTPUT is the only positional argument and one clip is written. A `--seconds` past
the LM's context slides as for an audio LM (`--extend-stride`): the windows after the first hold the last audio
frames only, as the training blocks after a clip's first do, so the text and the first window (text, prompt and
one new frame) must fit in the context. `--acoustic-lm` and `--no-repeat-ngram-size` are refused (that engine
has no acoustic stage or n-gram rule); `--text` with an audio LM is refused.
"""

from __future__ import annotations

import argparse
import math
import numbers
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # a script run: drop lm/ from sys.path so its config.py, data.py, ... shadow nothing
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import soundfile as sf
import torch
from transformers import AutoModelForCausalLM, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from semanticodec_hf.acoustic_bpe import AcousticBPE
from semanticodec_hf.atomic_files import atomic_write
from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout, codes_to_ids
from semanticodec_hf.cli_jobs import CliError, refuse_overwriting, stat_kind
from semanticodec_hf.cpu_threads import add_threads_option, use_threads
from semanticodec_hf.lm.acoustic_stage import AcousticStage
from semanticodec_hf.lm.codec_access import check_decode_settings, tiny_codec_tokenizer
from semanticodec_hf.lm.data import bpe_layout
from semanticodec_hf.lm.joint_corpus import is_joint_folder
from semanticodec_hf.lm.masked_generate import generate_with_mask
from semanticodec_hf.lm.pattern_logits import (
    PatternLogitsProcessor,
    SemanticNoRepeatNGramLogitsProcessor,
    body_mask,
)
from semanticodec_hf.lm.token_healing import HealedFirstPieceLogitsProcessor, heal_prompts, piece_base_ids
from semanticodec_hf.processing_semanticodec import AudioItemError, read_audio
from semanticodec_hf.progress import progress_bar
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

SPLICE_SECONDS = 0.01  # length of the offset ramp that hides the seam between prompt and continuation


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
    if pattern == "semantic_then_acoustic":
        return [layout.bos_token_id, *codes[0].tolist()]
    return [layout.bos_token_id, *codes_to_ids(codes, layout, pattern).tolist()]


def splice(prompt_audio: torch.Tensor, full_audio: torch.Tensor, sampling_rate: int) -> torch.Tensor:
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


def longest_fitting_seconds(pattern: str, prompt_positions: int, prompt_frames: Sequence[int], prompt_samples: int,
                            config: Any, limit: int) -> Optional[float]:
    """The largest total length (in 0.01 s steps) whose continuation of these prompts fits in `limit` positions,
    or None when even the shortest continuation does not fit. `config`: the codec's `SemantiCodecConfig`."""
    rate = config.sampling_rate
    centiseconds = math.floor(prompt_samples / rate * 100) + 1  # the first length beyond the prompts
    best = None
    while True:
        frames = config.frame_budget(int(round(centiseconds * rate / 100)))
        if prompt_positions + max(new_tokens_needed(pattern, f, frames) for f in prompt_frames) > limit:
            return best
        best = centiseconds / 100
        centiseconds += 1


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def decoding_arguments(
    greedy: bool = False,
    num_beams: int = 1,
    temperature: Optional[float] = None,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    repetition_penalty: Optional[float] = None,
) -> Dict[str, Any]:
    """The `generate` keyword arguments of a decoding choice, checked: sampling (the default), greedy
    (`greedy`, do_sample=False) or beam search (`num_beams` > 1, do_sample=False).

    Checked here, before any audio is encoded, so a typo costs no minutes. The sampling knobs are refused with
    greedy or beam decoding rather than silently ignored. Errors name the option as the command line spells it.
    """
    if not isinstance(greedy, bool):
        raise ValueError(f"greedy must be True or False, got {greedy!r}.")
    if not _is_int(num_beams) or num_beams < 1:
        raise ValueError(f"--num-beams must be a positive integer (1: no beam search), got {num_beams!r}.")
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"--temperature must be > 0 (use --greedy for argmax decoding), got {temperature}.")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise ValueError(f"--top-k must be a non-negative integer (0: no top-k), got {top_k!r}.")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"--top-p must be in (0, 1] (1: no nucleus cut), got {top_p}.")
    if repetition_penalty is not None and not (math.isfinite(repetition_penalty) and repetition_penalty > 0):
        raise ValueError(f"--repetition-penalty must be > 0 (1: none; above 1 discourages repeats), got "
                         f"{repetition_penalty}.")
    arguments: Dict[str, Any] = {"num_beams": int(num_beams)}
    if greedy or num_beams > 1:
        given = [name for name, value in (("--temperature", temperature), ("--top-k", top_k), ("--top-p", top_p))
                 if value is not None]
        if given:
            mode = "--num-beams" if num_beams > 1 else "--greedy"
            verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
            raise ValueError(f"{', '.join(given)} {verb} only to sampling; drop {them} or drop {mode} (greedy and "
                             "beam decoding are deterministic).")
        arguments["do_sample"] = False
    else:
        arguments.update(do_sample=True, temperature=1.0 if temperature is None else float(temperature),
                         top_k=top_k or 0, top_p=1.0 if top_p is None else float(top_p))
    if repetition_penalty is not None:
        arguments["repetition_penalty"] = float(repetition_penalty)
    return arguments


def min_frames_for(min_seconds: Optional[float], seconds: float, config: Any) -> Optional[int]:
    """Frames of `min_seconds` of audio, mapped as `--seconds` is (`config.frame_budget` of the 16 kHz sample
    count); None for no minimum. Refuses a negative minimum or one beyond the total length."""
    if min_seconds is None:
        return None
    if not (math.isfinite(min_seconds) and min_seconds >= 0):
        raise ValueError(f"--min-seconds must be >= 0, got {min_seconds}.")
    if min_seconds > seconds:
        raise ValueError(f"--min-seconds {min_seconds} exceeds --seconds {seconds}; the minimum length must not pass "
                         "the total length.")
    return config.frame_budget(int(round(min_seconds * config.sampling_rate)))


def check_seconds(seconds: Any) -> None:
    """Refuse a `--seconds` that is not a positive, finite number (before any audio is encoded)."""
    if isinstance(seconds, bool) or not (isinstance(seconds, numbers.Real) and math.isfinite(seconds)
                                         and seconds > 0):
        raise ValueError(f"--seconds must be a positive number of seconds, got {seconds!r}.")


def prompt_lengths(prompts: Sequence[Any], sampling_rate: int, seconds: float, config: Any) -> Tuple[List[int], int]:
    """Each prompt's length in samples at the codec's rate (16 kHz, as the feature extractor resamples it; last
    axis = time) and the target's (`seconds`). Checked before encoding, in the command line's words: a prompt
    shorter than the codec's minimum (`PromptError`, naming it) or not shorter than `--seconds` is refused."""
    rate, minimum = config.sampling_rate, config.min_num_samples  # 16 kHz; one 0.16 s patch
    target_samples = int(round(seconds * rate))
    prompt_samples = [int(round(np.shape(p)[-1] * rate / sampling_rate)) for p in prompts]
    for index, samples in enumerate(prompt_samples):
        if samples < minimum:
            raise PromptError(index, f"it lasts {samples / rate:.3f} s; the codec needs at least "
                                     f"{minimum / rate} s ({minimum} samples at {rate} Hz). Use a longer prompt.")
    short = [i for i, n in enumerate(prompt_samples) if n >= target_samples]
    if short:
        raise ValueError(
            f"--seconds {seconds} is the total length and must exceed the prompt; prompt(s) {short} are already "
            f"{max(prompt_samples[i] for i in short) / rate:.2f} s long."
        )
    return prompt_samples, target_samples


# ---------------------------------------------------------------------------------------------- long-form
DEFAULT_STRIDE_FRACTION = 0.25  # of the LM's context: what one slide forgets (it keeps the other three quarters)


def check_extend_stride(extend_stride: Optional[float]) -> None:
    """Refuse an `--extend-stride` that is not a positive number of seconds (None: the default)."""
    if extend_stride is not None and (isinstance(extend_stride, bool) or not isinstance(extend_stride, numbers.Real)
                                      or not math.isfinite(extend_stride) or extend_stride <= 0):
        raise ValueError(f"--extend-stride must be a positive number of seconds, got {extend_stride!r}.")


def stride_frames_for(extend_stride: Optional[float], limit: int, config: Any) -> int:
    """Frames one slide drops (`--extend-stride` seconds at the codec's frame rate, `token_rate` / 2 frames/s).

    Default: a quarter of the context (`limit` // 2 frames, interleaved). Three quarters of the context stay
    as the LM's memory after a slide, so what it continues is mostly what it was writing; the price
    is one rebuild of the KV cache (one parallel forward pass over the kept window) per quarter context of
    new audio, which the benchmark shows is small next to writing the ids one by one."""
    context_frames = limit // 2
    if extend_stride is None:  # (no frame rate needed: `config` may be None then)
        return max(1, int(context_frames * DEFAULT_STRIDE_FRACTION))
    check_extend_stride(extend_stride)
    frame_rate = config.token_rate / 2
    context_seconds = context_frames / frame_rate
    frames = int(round(extend_stride * frame_rate))
    if frames < 1:
        raise ValueError(f"--extend-stride {extend_stride} is less than one frame ({1 / frame_rate:g} s at "
                         f"{frame_rate:g} frames/s); give at least {1 / frame_rate:g}.")
    if frames >= context_frames:
        raise ValueError(f"--extend-stride {extend_stride} must be smaller than the LM's context ({context_seconds:.2f}"
                         f" s, {limit} positions): a slide must keep some audio for the LM to continue from. Try "
                         f"{context_seconds * DEFAULT_STRIDE_FRACTION:.2f} (a quarter of the context).")
    return frames


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> Dict[str, torch.Tensor]:
    """Id rows -> `input_ids` / `attention_mask` padded on the left with `pad_id` (what `generate` continues)."""
    longest = max(len(row) for row in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        if row:
            ids[i, longest - len(row):] = torch.as_tensor(list(row), dtype=torch.long)
            mask[i, longest - len(row):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    longest = max(len(row) for row in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return ids


class GenerationProgress(BaseStreamer):
    """A progress bar over generation steps, as a transformers streamer: `generate` passes the prompt to `put`
    first, then every step's new ids, and calls `end` when done (so a new call starts with its prompt again)."""

    def __init__(self, bar: Any):
        self.bar = bar
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen:
            self.bar.update(1)
        self._prompt_seen = True

    def end(self) -> None:
        self._prompt_seen = False


def generate_sliding(
    lm: Any,
    layout: SemantiCodecVocabularyLayout,
    prompts: Sequence[Sequence[int]],
    target_frames: int,
    limit: int,
    stride_frames: int,
    decoding: Dict[str, Any],
    allow_early_eos: bool = False,
    min_frames: Optional[int] = None,
    no_repeat_ngram_size: Optional[int] = None,
    device: str = "cpu",
    streamer: Optional[BaseStreamer] = None,
    head_lengths: Optional[Sequence[int]] = None,
    pattern_processor: Optional[Callable[..., Any]] = None,
    eos_token_id: Optional[int] = None,
) -> Tuple[List[List[int]], int]:
    """Interleaved continuation past the LM's `limit` positions: returns each row's `<bos> ids <eos>` and the
    number of slides.

    Each round is one `generate` call on a window and runs until the context is full (an even number of new
    ids, so every row ends on a whole frame) or every row is done. The next window is each row's last
    `limit // 2 - stride_frames` frames: it starts on a semantic id and holds no `<bos>`, which is how the
    training blocks after a long clip's first one look (`lm/data.py` cuts clips into blocks between frames and
    adds no `<bos>`); a `<bos>` would tell the LM a new clip starts there. A new `generate` call on the window
    IS the KV-cache rebuild. Rows slide together; a row that wrote `<eos>` leaves the batch. Ids once written
    never change. Per row, the target and `min_frames` are shifted by the frames that slid out, so the pattern
    rules hold for the whole clip; `no_repeat_ngram_size` is given the slid-out semantic ids, so it holds over
    the whole clip too. The first window is the prompts with their `<bos>` when they leave room for a frame.
    Sampling draws from torch's global generator (seed it once before the call).

    Another vocabulary (a text+audio LM's, lm/joint_generation.py) says where its audio starts and ends and how
    its pattern is constrained: `head_lengths` (per row, the ids of `prompts` before the audio; they open the
    first window and the returned row; default: the `<bos>`), `pattern_processor` (called with `target_frames`,
    `allow_early_eos` and `min_frames` for each window; default `PatternLogitsProcessor(layout, "interleaved")`)
    and `eos_token_id` (what closes a row; default `layout.eos_token_id`)."""
    if decoding.get("num_beams", 1) > 1:
        raise ValueError("beam search cannot be carried across a slide; use sampling or --greedy.")
    eos = layout.eos_token_id if eos_token_id is None else eos_token_id
    if head_lengths is None:
        heads = [[layout.bos_token_id] for _ in prompts]
        bodies = [[int(i) for i in row[1:]] for row in prompts]  # audio ids after <bos>: whole frames
    else:
        heads = [[int(i) for i in row[:n]] for row, n in zip(prompts, head_lengths)]
        bodies = [[int(i) for i in row[n:]] for row, n in zip(prompts, head_lengths)]
    if any(len(body) % 2 for body in bodies):
        raise ValueError("interleaved prompts must hold whole frames (an even number of audio ids after <bos>).")
    make_pattern = pattern_processor or partial(PatternLogitsProcessor, layout, "interleaved")
    keep = limit // 2 - stride_frames
    if keep < 1 or stride_frames < 1:
        raise ValueError(f"stride_frames must be in 1..{limit // 2 - 1} for {limit} positions, got {stride_frames}.")
    finished = [False] * len(bodies)
    slides, first = 0, True
    while not all(finished):
        active = [i for i, done in enumerate(finished) if not done]
        fits = first and max(len(heads[i]) + len(bodies[i]) for i in active) + 2 <= limit  # prompts + a frame
        if fits:
            windows, dropped = [[*heads[i], *bodies[i]] for i in active], [0] * len(active)
        else:
            windows = [bodies[i][-2 * keep:] for i in active]
            dropped = [(len(bodies[i]) - len(w)) // 2 for i, w in zip(active, windows)]
            slides += 1
        first = False
        room = limit - max(map(len, windows))
        remaining = max(2 * (target_frames - len(bodies[i]) // 2) + 1 for i in active)
        new_tokens = remaining if remaining <= room else room - room % 2
        processors: List[Any] = [make_pattern(
            target_frames=[target_frames - d for d in dropped],
            allow_early_eos=allow_early_eos or min_frames is not None,
            min_frames=None if min_frames is None else [max(0, min_frames - d) for d in dropped],
        )]
        if no_repeat_ngram_size:
            history = [bodies[i][: 2 * d: 2] for i, d in zip(active, dropped)]  # semantic ids that slid out
            processors.append(SemanticNoRepeatNGramLogitsProcessor(layout, int(no_repeat_ngram_size), history))
        written = generate_window(lm, layout, windows, new_tokens, processors, decoding, device, streamer,
                                  eos_token_id=eos)
        for (new, ended), i in zip(written, active):
            bodies[i].extend(new)
            finished[i] = ended
    return [[*head, *body, eos] for head, body in zip(heads, bodies)], slides


def generate_window(lm: Any, layout: SemantiCodecVocabularyLayout, windows: Sequence[Sequence[int]], max_new_tokens: int,
                    processors: Sequence[Any], decoding: Dict[str, Any], device: str = "cpu",
                    streamer: Optional[BaseStreamer] = None,
                    eos_token_id: Optional[int] = None) -> List[Tuple[List[int], bool]]:
    """One `generate` call of a long-form loop on left-padded `windows`: each row's new ids (cut before its
    `<eos>`; the padding of a finished row comes after it) and whether it wrote `<eos>`. `eos_token_id`: what
    ends a row when it is not `layout.eos_token_id` (a text+audio LM's `<|audio_end|>`)."""
    eos = layout.eos_token_id if eos_token_id is None else eos_token_id
    batch = left_pad(windows, layout.pad_token_id)
    width = batch["input_ids"].shape[1]
    sequences = generate_with_mask(
        lm, batch["input_ids"].to(device), batch["attention_mask"].to(device),
        max_new_tokens=max_new_tokens, logits_processor=LogitsProcessorList(list(processors)),
        bos_token_id=layout.bos_token_id, eos_token_id=eos, pad_token_id=layout.pad_token_id,
        streamer=streamer, **decoding,
    ).cpu()
    written = []
    for row in sequences[:, width:].tolist():
        ended = eos in row
        written.append((row[: row.index(eos)] if ended else row, ended))
    return written


def splice_pieces(prompt_audio: torch.Tensor, pieces: Iterable[torch.Tensor], sampling_rate: int,
                  total: int) -> Iterator[torch.Tensor]:
    """`splice` for a waveform that arrives in pieces (`total` samples in all): the same samples, piece by
    piece, so a long continuation is never held whole."""
    cut = prompt_audio.shape[-1]
    ramp = min(int(SPLICE_SECONDS * sampling_rate), total - cut)
    weights = step = None
    start = 0
    for piece in pieces:
        end = start + piece.shape[-1]
        out = piece.clone()
        if start < cut:
            if end >= cut:  # this piece holds the last prompt sample: the seam's step
                step = prompt_audio[cut - 1] - piece[cut - 1 - start]
            out[: min(end, cut) - start] = prompt_audio[start: min(end, cut)]
        if ramp > 0 and step is not None and start < cut + ramp and end > cut:
            if weights is None:
                weights = torch.linspace(1.0, 0.0, ramp + 1, dtype=out.dtype)[1:]
            lo, hi = max(start, cut), min(end, cut + ramp)
            out[lo - start: hi - start] += step * weights[lo - cut: hi - cut]
        start = end
        yield out


def row_decode_settings(decode: Dict[str, Any], row: int) -> Tuple[Dict[str, Any], Optional[int]]:
    """A result's codec decode settings (`seed` included) -> those without the seed, and row `row`'s seed: `seed +
    row`, what a batch decode gives that row, so a row decoded alone sounds as in the batch."""
    settings = dict(decode)
    seed = settings.pop("seed")
    return settings, None if seed is None else seed + row


def stream_decode_row(codec_tokenizer: Any, result: Dict[str, Any], row: int,
                      windows_per_chunk: int) -> Tuple[Iterator[torch.Tensor], int]:
    """Row `row` of a continuation result (`codes`, `target_samples`, `decode`) as a streamed codec decode
    (`processor.decode_stream`, `windows_per_chunk` decode windows a piece: memory does not grow with the
    length) and its length in samples (the target, or less for a row that ended early)."""
    config = codec_tokenizer.model.config
    decode, seed = row_decode_settings(result["decode"], row)
    codes = result["codes"][row]
    total = min(result["target_samples"], config.output_num_samples(codes.shape[1]))
    pieces = codec_tokenizer.processor.decode_stream(codec_tokenizer.model, codes, num_samples=total,
                                                     windows_per_chunk=windows_per_chunk, seed=seed, **decode)
    return pieces, total


# ---------------------------------------------------------------------------------------------- acoustic BPE
def piece_frame_table(bpe: Any, lm_layout: SemantiCodecVocabularyLayout) -> torch.Tensor:
    """Int64 [lm_layout.vocab_size]: the frames (semantic ids) each LM id stands for: `len(bpe.piece_ids(p))`
    for a piece p >= 1, 0 for `<unk>` (piece 0) and for every acoustic or special id."""
    table = torch.zeros(lm_layout.vocab_size, dtype=torch.long)
    for piece in range(1, bpe.vocab_size):
        table[piece] = len(bpe.piece_ids(piece))
    return table


class PieceFramesLogitsProcessor:
    """A `transformers` logits processor for an LM on acoustic-BPE pieces (`semantic_only` + `data.acoustic_bpe`):
    lengths are counted in frames (the semantic ids the pieces stand for), not in LM positions.

    Per row (the ids after its last `<bos>`, or from its first non-`<pad>` id when a slid window has none): never
    `<unk>` (piece 0, which decodes to nothing); once the row's pieces cover `target_frames[row]` frames, only
    `<eos>`; before that, `<eos>` only with `allow_early_eos` and from `min_frames[row]` frames on. A finished row
    (one that wrote `<eos>`) is left alone. Compose with `PatternLogitsProcessor(layout, "semantic_only")`, which
    keeps every other id out (acoustic ids, `<bos>`, `<pad>`). Stateless (it rescans the ids at every step), so it
    holds per beam under beam search. The last piece may pass the target (a piece covers one frame or more); the
    caller cuts the decoded semantic ids to the target.
    """

    def __init__(self, layout: SemantiCodecVocabularyLayout, piece_frames: torch.Tensor,
                 target_frames: Sequence[int], allow_early_eos: bool = False,
                 min_frames: Optional[Sequence[int]] = None):
        self.layout, self.allow_early_eos = layout, bool(allow_early_eos)
        self.piece_frames = torch.as_tensor(piece_frames, dtype=torch.long)
        self.target_frames = torch.tensor([int(f) for f in target_frames], dtype=torch.long)
        self.min_frames = torch.tensor([int(f) for f in (min_frames or [0] * len(self.target_frames))],
                                       dtype=torch.long)
        if self.min_frames.shape != self.target_frames.shape:
            raise ValueError(f"min_frames has {len(self.min_frames)} entries but target_frames has "
                             f"{len(self.target_frames)}; give one of each per row.")

    def frames(self, input_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """([B] frames covered, [B] finished) of each row of `input_ids` [B, L]."""
        layout, device = self.layout, input_ids.device
        body = body_mask(input_ids, layout)
        table = self.piece_frames.to(device)
        lookup = input_ids.clamp(0, table.numel() - 1)
        frames = torch.where(body & (input_ids < table.numel()), table[lookup], 0).sum(dim=1)
        finished = (body & (input_ids == layout.eos_token_id)).any(dim=1)
        return frames, finished

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != self.target_frames.numel():
            raise ValueError(f"target_frames has {self.target_frames.numel()} entries but the batch has "
                             f"{input_ids.shape[0]} rows; give one per row (beams included).")
        frames, finished = self.frames(input_ids)
        target, minimum = self.target_frames.to(scores.device), self.min_frames.to(scores.device)
        eos = self.layout.eos_token_id
        blocked = torch.zeros_like(scores, dtype=torch.bool)
        blocked[:, 0] = True  # <unk>
        done = frames >= target
        blocked[done] = True
        blocked[done, eos] = False
        no_eos = ~done & ((frames < minimum) | (not self.allow_early_eos))
        blocked[no_eos, eos] = True
        blocked[finished] = False
        return scores.masked_fill(blocked, float("-inf"))


def generate_pieces(
    lm: Any,
    layout: SemantiCodecVocabularyLayout,
    piece_frames: torch.Tensor,
    prompts: Sequence[Sequence[int]],
    target_frames: int,
    limit: Optional[int],
    decoding: Dict[str, Any],
    stride_frames: Optional[int] = None,
    allow_early_eos: bool = False,
    min_frames: Optional[int] = None,
    device: str = "cpu",
    streamer: Optional[BaseStreamer] = None,
    first_pieces: Optional[Sequence[Optional[Sequence[int]]]] = None,
) -> Tuple[List[List[int]], int]:
    """Continue each row of acoustic-BPE pieces (`prompts`: the prompt's pieces, no `<bos>`) until its pieces cover
    `target_frames` frames (or it writes `<eos>`, with `allow_early_eos`); returns each row's pieces (prompt
    included, no `<bos>`/`<eos>`) and the number of slides.

    A piece covers one frame or more, so `target - covered + 1` new ids (the last one `<eos>`) always suffice: a
    continuation whose bound fits in the LM's `limit` positions is one `generate` call on `<bos>` + prompt. Past
    that, each `generate` call runs until the context is full and the window slides: it drops its oldest pieces,
    until they cover `stride_frames` frames (`--extend-stride`), or a quarter of the window's pieces by default
    (`stride_frames` None), and always enough to leave room for a new piece; the kept window has no `<bos>`, as the
    training blocks after a clip's first have none (blocks are cut between any two pieces). Targets and minimums
    are shifted by the frames that slid out, so lengths count over the whole clip. Rows slide together; a row that
    is done leaves the batch. Beam search cannot slide (checked by the caller). Sampling draws from torch's global
    generator. `first_pieces` (token healing, `lm/token_healing.py`): per row, the only pieces its first new piece
    may be (None: any)."""
    bos = layout.bos_token_id
    frames_of = piece_frames.tolist()
    bodies = [[int(p) for p in row] for row in prompts]
    covered = [sum(frames_of[p] for p in body) for body in bodies]
    starts = [0] * len(bodies)  # index of each row's window start in its body
    finished = [c >= target_frames for c in covered]
    slides, first = 0, True
    heal = first_pieces is not None
    while not all(finished):
        active = [i for i, done in enumerate(finished) if not done]
        if first and (limit is None or 1 + max(len(bodies[i]) for i in active) + 1 <= limit):
            windows = [[bos, *bodies[i]] for i in active]
        else:
            if decoding.get("num_beams", 1) > 1:
                raise ValueError("beam search cannot be carried across a slide; use sampling or --greedy.")
            for i in active:
                starts[i] = _slide_start(bodies[i], starts[i], frames_of, limit, stride_frames)
            windows = [bodies[i][starts[i]:] for i in active]
            slides += 1
        first = False
        dropped = [sum(frames_of[p] for p in bodies[i][: starts[i]]) for i in active]
        bound = max(target_frames - covered[i] for i in active) + 1
        new_tokens = bound if limit is None else min(bound, limit - max(map(len, windows)))
        beams = decoding.get("num_beams", 1)
        processors = [
            PatternLogitsProcessor(layout, "semantic_only"),
            PieceFramesLogitsProcessor(
                layout, piece_frames, [target_frames - d for d in dropped for _ in range(beams)],
                allow_early_eos=allow_early_eos or min_frames is not None,
                min_frames=None if min_frames is None else [max(0, min_frames - d) for d in dropped
                                                            for _ in range(beams)]),
        ]
        if heal:  # the first generate call only: its first new piece restates the piece healing took back
            processors.append(HealedFirstPieceLogitsProcessor(
                [first_pieces[i] for i in active for _ in range(beams)], start_width=max(map(len, windows))))
            heal = False
        written = generate_window(lm, layout, windows, new_tokens, processors, decoding, device, streamer)
        for (new, ended), i in zip(written, active):
            bodies[i].extend(new)
            covered[i] += sum(frames_of[p] for p in new)
            finished[i] = ended or covered[i] >= target_frames
    return bodies, slides


def _slide_start(body: List[int], start: int, frames_of: List[int], limit: int,
                 stride_frames: Optional[int]) -> int:
    """Where a row's next window starts, after a `generate` call that filled the context: past the oldest pieces of
    its last window (or, for a prompt longer than the context, of the full context's worth of its last pieces)
    covering `stride_frames` frames (default: a quarter of the window's pieces), and far enough that at least one
    new piece fits; never past its last piece."""
    last = len(body) - 1
    start = max(start, len(body) - limit)  # the window the LM last saw
    if stride_frames is None:
        start += max(1, (len(body) - start) // 4)
    else:
        dropped = 0
        while dropped < stride_frames and start < last:
            dropped += frames_of[body[start]]
            start += 1
    return min(max(start, len(body) - (limit - 1)), last)


class AudioContinuation:
    """An audio LM plus a codec: `continue_audio(prompts, seconds)` -> waveforms that start with the prompts.

    An LM on `semantic_only` ids needs `acoustic_stage` (an `AcousticStage`, lm/acoustic_stage.py): it predicts
    the acoustic ids of the continuation from its semantic ids, after the prompt's own codes (voice, timbre).

    An LM trained on acoustic-BPE pieces (`data.acoustic_bpe`: its folder has `acoustic_bpe/`) also takes
    `acoustic_bpe` (the `AcousticBPE` of its pieces; `codec_tokenizer` keeps the codec's own layout and the
    `semantic_only` pattern): the prompt's semantic ids become pieces, the LM writes pieces (never `<unk>`) until
    they cover the requested frames, the pieces are decoded back to semantic ids and cut to the exact length, and
    the stage adds the acoustic ids."""

    def __init__(self, lm, codec_tokenizer, device: str = "cpu", acoustic_stage: Optional[AcousticStage] = None,
                 acoustic_bpe: Optional[AcousticBPE] = None):
        self.lm = lm.to(device).eval()
        self.tokenizer = codec_tokenizer
        self.device = device
        self.acoustic_stage = acoustic_stage
        self.acoustic_bpe = acoustic_bpe
        self.lm_layout = codec_tokenizer.layout  # the ids the LM reads and writes
        if acoustic_bpe is not None:
            if codec_tokenizer.pattern != "semantic_only":
                raise ValueError(f"Acoustic-BPE pieces stand for semantic_only ids; the codec tokenizer's pattern is "
                                 f"{codec_tokenizer.pattern!r}.")
            if acoustic_bpe.num_base_ids != codec_tokenizer.layout.semantic_vocab_size:
                raise ValueError(f"The LM's BPE model covers {acoustic_bpe.num_base_ids} semantic ids but the codec "
                                 f"has {codec_tokenizer.layout.semantic_vocab_size}; use the codec variant the LM "
                                 "was trained with.")
            self.lm_layout = bpe_layout(acoustic_bpe, codec_tokenizer.layout)
            self.piece_frames = piece_frame_table(acoustic_bpe, self.lm_layout)
            self.piece_bases = piece_base_ids(acoustic_bpe)
        if acoustic_stage is not None:
            if codec_tokenizer.pattern != "semantic_only":
                raise ValueError(f"An acoustic stage completes the ids of a semantic_only LM; this LM writes "
                                 f"{codec_tokenizer.pattern!r} ids, acoustic ones included. Drop --acoustic-lm.")
            if acoustic_stage.layout != codec_tokenizer.layout:
                raise ValueError(f"The acoustic stage's layout {acoustic_stage.layout.to_dict()} is not the codec's "
                                 f"{codec_tokenizer.layout.to_dict()}; train the stage on this codec's ids.")
        lm_vocab = int(lm.config.vocab_size)
        if lm_vocab < self.lm_layout.vocab_size:
            what = "its acoustic-BPE layout's" if acoustic_bpe is not None else "the codec tokenizer's"
            raise ValueError(
                f"The LM's vocabulary ({lm_vocab} ids) is smaller than {what} ({self.lm_layout.vocab_size}); the LM "
                "was trained for another codec variant."
            )

    @classmethod
    def from_pretrained(cls, lm_path: str, codec_path: Optional[str] = None, device: str = "cpu",
                        codec_tokenizer=None, acoustic_lm: Optional[str] = None) -> "AudioContinuation":
        """Load the LM folder written by `lm/train.py` and the codec it was trained for (checked by layout); with
        `acoustic_lm` (a semantic_only LM), also the acoustic stage LM folder that completes its ids. An LM folder
        with `acoustic_bpe/` (trained with `data.acoustic_bpe`) is an LM on BPE pieces: its BPE model is loaded
        too, and `acoustic_lm` is required."""
        if is_joint_folder(lm_path):
            raise ValueError(f"{lm_path} is a text+audio LM (trained with model.keep_text_vocab: true); load it with "
                             "semanticodec_hf.lm.joint_generation.JointAudioContinuation (the continue command "
                             "does so itself).")
        saved = SemantiCodecAudioTokenizer.from_pretrained(lm_path, load_codec=False)
        bpe = None
        if (Path(lm_path) / "acoustic_bpe").is_dir():
            bpe = AcousticBPE.load(Path(lm_path) / "acoustic_bpe")
            if acoustic_lm is None:  # before the codec and the LM are loaded
                raise ValueError(f"{lm_path} is an LM on acoustic-BPE pieces of semantic ids (it has acoustic_bpe/): "
                                 "it writes no acoustic ids, so give the acoustic stage that adds them: --acoustic-lm "
                                 "PATH (an LM trained on interleaved ids of the same codec, see lm/acoustic_stage.py).")
        if codec_tokenizer is None:
            source = codec_path or saved.codec_name_or_path
            if source is None:
                raise ValueError(f"{lm_path} does not record its codec; pass --codec PATH (a converted SemantiCodec).")
            codec_tokenizer = SemantiCodecAudioTokenizer.from_pretrained(source, pattern=saved.pattern, device=device)
        expected = codec_tokenizer.layout if bpe is None else bpe_layout(bpe, codec_tokenizer.layout)
        semantic = codec_tokenizer.layout.semantic_vocab_size
        if expected != saved.layout or (bpe is not None and bpe.num_base_ids != semantic):
            pieces = "" if bpe is None else f" (pieces of a BPE model over {bpe.num_base_ids} semantic ids)"
            raise ValueError(
                f"The LM was trained on ids of layout {saved.layout.to_dict()}{pieces} but the codec has "
                f"{codec_tokenizer.layout.to_dict()}; use the codec variant the LM was trained with."
            )
        codec_tokenizer.pattern = saved.pattern
        stage = None
        if acoustic_lm is not None:  # the stage gets its own (interleaved) tokenizer on the same codec
            stage_tokenizer = SemantiCodecAudioTokenizer(codec_tokenizer.model, codec_tokenizer.feature_extractor,
                                                         pattern="interleaved")
            stage = AcousticStage.from_pretrained(acoustic_lm, codec_tokenizer=stage_tokenizer, device=device)
        return cls(AutoModelForCausalLM.from_pretrained(lm_path), codec_tokenizer, device, acoustic_stage=stage,
                   acoustic_bpe=bpe)

    windows_per_chunk = 4  # decode windows per piece of a streamed decode (bounds the decoder's memory)

    def continue_audio(
        self,
        prompts: Sequence[np.ndarray],
        sampling_rate: int,
        seconds: float,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: int = 0,
        allow_early_eos: bool = False,
        num_inference_steps: Optional[int] = None,
        sampler: Optional[str] = None,
        greedy: bool = False,
        num_beams: int = 1,
        repetition_penalty: Optional[float] = None,
        no_repeat_ngram_size: Optional[int] = None,
        min_seconds: Optional[float] = None,
        extend_stride: Optional[float] = None,
        token_healing: bool = True,
    ) -> Dict[str, Any]:
        """Continue each prompt to `seconds` of audio in total; returns `audio` (16 kHz tensors), `ids`, `codes`.

        Sampling (`temperature`, default 1, `top_k`, `top_p`) unless `greedy` or `num_beams` > 1 (beam search);
        `repetition_penalty` is transformers' (all ids); `no_repeat_ngram_size` bans repeated n-grams of the
        semantic stream only; `min_seconds` lets a clip end with `<eos>` once it is that long (total, prompt
        included, as `seconds`), never before: it implies `allow_early_eos` from that length on.

        Past the LM's context the continuation is long-form (`generate_continuation`, `extend_stride` seconds
        per slide) and decoded as a stream (`audio_pieces`); `audio` then joins the pieces. To keep minutes of
        output out of memory, call `generate_continuation` and write `audio_pieces` as they come (the command
        line does)."""
        result = self.generate_continuation(
            prompts, sampling_rate, seconds, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
            allow_early_eos=allow_early_eos, num_inference_steps=num_inference_steps, sampler=sampler,
            greedy=greedy, num_beams=num_beams, repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size, min_seconds=min_seconds, extend_stride=extend_stride,
            token_healing=token_healing)
        return self.decode_result(result)

    def decode_result(self, result: Dict[str, Any], progress: bool = False) -> Dict[str, Any]:
        """Add `audio` and `prompt_reconstruction` to a `generate_continuation` result: one batched codec decode
        with the prompt reconstruction spliced in front (`progress`: the decoder's step bar), or, for a streamed
        result, each row's `audio_pieces` joined (the decoder's memory stays bounded; only the waveform itself is
        held)."""
        config = self.tokenizer.model.config
        prompt_recon = self.reconstruct(result["prompt_codes"], result["prompt_samples"], **result["decode"])
        if result["streamed"]:
            audio = [torch.cat(list(self.audio_pieces(result, i, prompt_recon[i])))
                     for i in range(len(result["codes"]))]
        else:
            tok = self.tokenizer  # from the codes: a semantic_only LM's ids alone hold no acoustic ids
            full = tok.processor.decode_codes(tok.model, result["codes"], progress=progress, **result["decode"])
            audio = []
            for i, wave in enumerate(full):
                samples = min(result["target_samples"], config.output_num_samples(result["codes"][i].shape[1]))
                audio.append(splice(prompt_recon[i], wave[:samples], config.sampling_rate))
        result.update(audio=audio, prompt_reconstruction=prompt_recon)
        return result

    def generate_continuation(
        self,
        prompts: Sequence[np.ndarray],
        sampling_rate: int,
        seconds: float,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: int = 0,
        allow_early_eos: bool = False,
        num_inference_steps: Optional[int] = None,
        sampler: Optional[str] = None,
        greedy: bool = False,
        num_beams: int = 1,
        repetition_penalty: Optional[float] = None,
        no_repeat_ngram_size: Optional[int] = None,
        min_seconds: Optional[float] = None,
        extend_stride: Optional[float] = None,
        progress: bool = False,
        token_healing: bool = True,
    ) -> Dict[str, Any]:
        """The LM half of `continue_audio` (same arguments; `progress`: a bar over generation steps on stderr,
        not with beam search, which takes no streamer): checks, encodes the prompts and generates; returns
        `ids`, `codes`, `target_frames`, `target_samples`, `prompt_codes`, `prompt_samples`, `decode` (codec
        decoder settings), `slides` (0: it fitted in one `generate` call) and `streamed` (whether the audio is
        to be decoded as a stream: after any slide, or codes too long for one decode call).

        When the continuation does not fit in the LM's positions it is generated long-form (`generate_sliding`):
        interleaved only (semantic_then_acoustic writes every acoustic id after all semantic ids, so no window
        of it can be continued), and not with beam search (its beams cannot be carried across a slide).

        An acoustic-BPE LM (`acoustic_bpe`) is continued by `generate_pieces`: `ids` are then the LM's pieces
        (`<bos>` pieces `<eos>` in its layout, `self.lm_layout`), `codes` the decoded semantic ids cut to the target
        plus the stage's acoustic ids; it slides past the context too (not with beam search), `extend_stride`
        counting the frames the dropped pieces stand for; `no_repeat_ngram_size` (a rule on semantic ids) is
        refused. With `token_healing` (the default) the prompt's last piece is taken back and the LM's first piece
        must start with its semantic ids (`lm/token_healing.py`): a prompt cut out of a clip often ends inside a
        merge the LM saw whole in training. `token_healing=False` is only for acoustic-BPE LMs (every other LM
        writes one id per stream position, which has nothing to heal)."""
        tok, layout, pattern = self.tokenizer, self.tokenizer.layout, self.tokenizer.pattern
        bpe = self.acoustic_bpe
        if pattern == "semantic_only" and self.acoustic_stage is None:
            what = "acoustic-BPE pieces of semantic ids" if bpe is not None else "semantic_only ids"
            raise ValueError(f"An LM on {what} cannot make audio by itself: the codec decoder needs acoustic "
                             "ids too. Give an acoustic stage (--acoustic-lm PATH, an LM trained on interleaved ids, "
                             "see lm/acoustic_stage.py).")
        if bpe is None and not token_healing:
            raise ValueError("--no-token-healing applies to LMs on acoustic-BPE pieces only (their prompt's last "
                             "piece may end inside a merge); this LM writes single ids, which have nothing to heal: "
                             "drop it.")
        if bpe is not None and no_repeat_ngram_size:
            raise ValueError("--no-repeat-ngram-size bans repeated n-grams of semantic ids, but this LM writes "
                             "acoustic-BPE pieces (one or more semantic ids each); drop it (--repetition-penalty "
                             "works on pieces).")
        check_seconds(seconds)
        decoding = decoding_arguments(greedy, num_beams, temperature, top_k, top_p, repetition_penalty)
        if no_repeat_ngram_size is not None and (not _is_int(no_repeat_ngram_size) or no_repeat_ngram_size < 0):
            raise ValueError(f"--no-repeat-ngram-size must be a positive integer (0: no rule), got "
                             f"{no_repeat_ngram_size!r}.")
        extra_processors = ([SemanticNoRepeatNGramLogitsProcessor(layout, int(no_repeat_ngram_size))]
                            if no_repeat_ngram_size else [])
        check_decode_settings(tok.model, num_inference_steps, sampler)  # before any generation
        config = tok.model.config
        min_frames = min_frames_for(min_seconds, seconds, config)
        limit = getattr(self.lm.config, "max_position_embeddings", None) or getattr(self.lm.config, "n_positions", None)
        check_extend_stride(extend_stride)  # before any encoding; against the context too when there is one
        if bpe is not None:  # a window of pieces holds a variable number of frames: at least one per position
            stride_frames = None if extend_stride is None else int(round(extend_stride * config.token_rate / 2))
            if stride_frames is not None and stride_frames < 1:
                raise ValueError(f"--extend-stride {extend_stride} is less than one frame "
                                 f"({2 / config.token_rate:g} s); give at least {2 / config.token_rate:g}.")
        else:
            stride_frames = None if limit is None else stride_frames_for(extend_stride, int(limit), config)
        prompt_samples, target_samples = prompt_lengths(prompts, sampling_rate, seconds, config)
        target_frames = config.frame_budget(target_samples)
        try:
            prompt_codes = tok.encode_audio(list(prompts), sampling_rate)
        except AudioItemError as error:
            raise PromptError(error.index, error.message) from None
        if bpe is not None:
            return self._generate_bpe(prompt_codes, target_frames, target_samples, prompt_samples, decoding,
                                      limit, stride_frames, allow_early_eos, min_frames, num_inference_steps,
                                      sampler, seed, progress, token_healing)
        rows = [prompt_ids(c, layout, pattern) for c in prompt_codes]
        batch = tok.pad(rows, padding_side="left")
        prompt_frames = [int(c.shape[1]) for c in prompt_codes]
        needed = max(new_tokens_needed(pattern, frames, target_frames) for frames in prompt_frames)
        decode = dict(num_inference_steps=num_inference_steps, seed=seed)
        if sampler is not None:
            decode["sampler"] = sampler
        result = {"target_frames": target_frames, "target_samples": target_samples, "prompt_codes": prompt_codes,
                  "prompt_samples": prompt_samples, "decode": decode, "slides": 0}
        show = progress and decoding["num_beams"] == 1
        bar = progress_bar(total=needed, desc="continue", unit="step", quiet=not show)
        streamer = GenerationProgress(bar) if show else None
        if limit is not None and batch["input_ids"].shape[1] + needed > limit:
            if pattern != "interleaved" or num_beams > 1:
                self._refuse_long_form(pattern, seconds, batch["input_ids"].shape[1] + needed, limit,
                                       batch["input_ids"].shape[1], prompt_frames, prompt_samples, config)
            torch.manual_seed(seed)
            rows_out, result["slides"] = generate_sliding(
                self.lm, layout, rows, target_frames, int(limit), stride_frames, decoding,
                allow_early_eos=allow_early_eos, min_frames=min_frames, no_repeat_ngram_size=no_repeat_ngram_size,
                device=self.device, streamer=streamer)
            sequences = tok.pad(rows_out, padding_side="right")["input_ids"]
        else:
            beams = decoding["num_beams"]  # generate repeats each row `beams` times (repeat_interleave): so do we
            processor = PatternLogitsProcessor(
                layout, pattern, target_frames=[target_frames] * (len(rows) * beams),
                allow_early_eos=allow_early_eos or min_frames is not None,
                forced_acoustic=([c[1].tolist() for c in prompt_codes for _ in range(beams)]
                                 if pattern == "semantic_then_acoustic" else None),
                min_frames=None if min_frames is None else [min_frames] * (len(rows) * beams),
            )
            torch.manual_seed(seed)
            sequences = generate_with_mask(
                self.lm, batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                max_new_tokens=needed, logits_processor=LogitsProcessorList([processor, *extra_processors]),
                bos_token_id=layout.bos_token_id, eos_token_id=layout.eos_token_id,
                pad_token_id=layout.pad_token_id, streamer=streamer, **decoding,
            ).cpu()
        bar.close()
        codes = tok.decode_ids(sequences)
        if pattern == "semantic_only":  # the stage adds the acoustic ids after each prompt's own codes
            codes = self._complete_acoustic(codes, prompt_codes)
        streamed = result["slides"] > 0 or any(tok.processor.streams_decode(config, c.shape[1]) for c in codes)
        result.update(ids=sequences, codes=codes, streamed=streamed)
        return result

    def _generate_bpe(self, prompt_codes: Sequence[torch.Tensor], target_frames: int, target_samples: int,
                      prompt_samples: Sequence[int], decoding: Dict[str, Any], limit: Optional[int],
                      stride_frames: Optional[int], allow_early_eos: bool, min_frames: Optional[int],
                      num_inference_steps: Optional[int], sampler: Optional[str], seed: int,
                      progress: bool, token_healing: bool = True) -> Dict[str, Any]:
        """`generate_continuation` for an acoustic-BPE LM, from the encoded prompts on: prompt semantic ids ->
        pieces (the last one taken back with `token_healing`) -> `generate_pieces` -> semantic ids (cut to
        `target_frames`) -> the stage's acoustic ids."""
        bpe, layout, config = self.acoustic_bpe, self.lm_layout, self.tokenizer.model.config
        prompt_semantic = [c[0].tolist() for c in prompt_codes]
        prompt_pieces = [bpe.encode(ids) for ids in prompt_semantic]
        first_pieces = None
        if token_healing:
            prompt_pieces, first_pieces = heal_prompts(prompt_pieces, self.piece_bases)
        frames_of = self.piece_frames.tolist()
        prompt_frames = [sum(frames_of[p] for p in pieces) for pieces in prompt_pieces]  # healed: fewer
        bound = target_frames - min(prompt_frames) + 1  # new ids at most: one frame per piece, then <eos>
        if decoding["num_beams"] > 1 and limit is not None and 1 + max(map(len, prompt_pieces)) + bound > limit:
            raise ValueError(f"--num-beams needs the whole continuation in one generate call, and these prompts may "
                             f"need up to {1 + max(map(len, prompt_pieces)) + bound} positions (a piece covers at "
                             f"least one frame) but the LM has {limit}: beam search cannot carry its beams across a "
                             "slide of the context; use sampling or --greedy, or a shorter --seconds.")
        decode = dict(num_inference_steps=num_inference_steps, seed=seed)
        if sampler is not None:
            decode["sampler"] = sampler
        show = progress and decoding["num_beams"] == 1
        bar = progress_bar(total=bound, desc="continue", unit="step", quiet=not show)
        streamer = GenerationProgress(bar) if show else None
        torch.manual_seed(seed)
        bodies, slides = generate_pieces(
            self.lm, layout, self.piece_frames, prompt_pieces, target_frames, None if limit is None else int(limit),
            decoding, stride_frames=stride_frames, allow_early_eos=allow_early_eos, min_frames=min_frames,
            device=self.device, streamer=streamer, first_pieces=first_pieces)
        bar.close()
        semantic = []
        for prompt, body in zip(prompt_semantic, bodies):
            ids = bpe.decode(body) if body else []  # the prompt's ids first (healing restates its last piece's)
            if ids[: len(prompt)] != prompt:
                raise RuntimeError("the generated pieces do not start with the prompt's semantic ids; please report "
                                   "this (it is a bug of the continuation, not of your input).")
            semantic.append(torch.tensor(ids[:target_frames], dtype=prompt_codes[0].dtype)[None])
        codes = self._complete_acoustic(semantic, prompt_codes)
        ids = _right_pad([[layout.bos_token_id, *body, layout.eos_token_id] for body in bodies], layout.pad_token_id)
        streamed = slides > 0 or any(self.tokenizer.processor.streams_decode(config, c.shape[1]) for c in codes)
        return {"target_frames": target_frames, "target_samples": target_samples, "prompt_codes": prompt_codes,
                "prompt_samples": prompt_samples, "decode": decode, "slides": slides, "ids": ids, "codes": codes,
                "streamed": streamed}

    def _complete_acoustic(self, semantic: Sequence[torch.Tensor], prompt_codes: Sequence[torch.Tensor]
                           ) -> List[torch.Tensor]:
        """Semantic-only codes `[1, F]` (each starting with its prompt's semantic ids) -> full codes `[2, F]`: the
        prompt's own codes, then the stage's acoustic ids for the new frames (one batched stage call)."""
        new = [row[0, prompt.shape[1]:] for row, prompt in zip(semantic, prompt_codes)]
        rows = [i for i, ids in enumerate(new) if ids.numel()]
        predicted = (self.acoustic_stage.predict_acoustic([new[i] for i in rows], prompt=[prompt_codes[i] for i in rows])
                     if rows else [])
        completed = [prompt.clone() for prompt in prompt_codes]  # a row that wrote no new frame keeps its prompt
        for i, codes in zip(rows, predicted):
            completed[i] = torch.cat([prompt_codes[i], codes.to(prompt_codes[i].dtype)], dim=1)
        return completed

    @staticmethod
    def _refuse_long_form(pattern: str, seconds: float, positions: int, limit: int, prompt_positions: int,
                          prompt_frames: Sequence[int], prompt_samples: Sequence[int], config: Any) -> None:
        """The error for a request past the LM's context that cannot slide (beam search, or not interleaved),
        with the longest `--seconds` that fits in one `generate` call."""
        fits = longest_fitting_seconds(pattern, prompt_positions, prompt_frames, max(prompt_samples), config, limit)
        advice = (f"--seconds {fits:.2f} is the longest that fits with these prompts" if fits is not None else
                  "the prompts alone leave no room for a continuation; use shorter prompts")
        why = ("beam search cannot carry its beams across a slide of the context (long-form continuation); use "
               "sampling or --greedy for longer audio" if pattern == "interleaved" else
               f"long-form continuation (sliding the context) needs the interleaved pattern; {pattern} writes "
               "every acoustic id after all semantic ids, so no window of it can be continued")
        raise ValueError(f"--seconds {seconds} needs {positions} positions but the LM has {limit}: {advice} (or use "
                         f"an LM with a longer context). Why not more: {why}.")

    def audio_pieces(self, result: Dict[str, Any], row: int,
                     prompt_reconstruction: Optional[torch.Tensor] = None) -> Iterator[torch.Tensor]:
        """Row `row` of a `generate_continuation` result as consecutive waveform pieces (16 kHz): a streamed
        decode (`processor.decode_stream`, `windows_per_chunk` decode windows at a time, so memory does not grow
        with the length) with the prompt's own reconstruction spliced in front, as `continue_audio` does. The
        pieces joined equal the batch decode up to float32 rounding (same seed per row: `seed + row`)."""
        if prompt_reconstruction is None:
            decode, seed = row_decode_settings(result["decode"], row)
            prompt_reconstruction = self.reconstruct([result["prompt_codes"][row]], [result["prompt_samples"][row]],
                                                     seed=None if seed is None else [seed], **decode)[0]
        pieces, total = stream_decode_row(self.tokenizer, result, row, self.windows_per_chunk)
        return splice_pieces(prompt_reconstruction, pieces, self.tokenizer.model.config.sampling_rate, total)

    def reconstruct(self, codes: Sequence[torch.Tensor], num_samples: Sequence[int], **decode: Any) -> List[torch.Tensor]:
        """The codec's reconstruction of each prompt alone, cut to the prompt's length (what `roundtrip` gives)."""
        return self.tokenizer.processor.decode_codes(self.tokenizer.model, codes, num_samples=torch.tensor(num_samples),
                                                     **decode)


# ---------------------------------------------------------------------------------------------- command line
def add_continue_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `semanticodec-hf continue` and `python lm/generate.py` (one definition for both)."""
    parser.add_argument("prompts", nargs="+", metavar="PROMPT",
                        help="prompt audio file(s); the last argument is OUTPUT (with --text, a single argument is "
                             "OUTPUT: audio from the text alone)")
    parser.add_argument("--lm", required=True, help="LM folder written by lm/train.py (OUTPUT/final); an audio LM or "
                        "a text+audio LM (trained with model.keep_text_vocab: true)")
    parser.add_argument("--text", action="append", default=None, metavar="TEXT",
                        help="text+audio LMs only: text written before the audio span, as the corpus put a clip's "
                             "text (for an LM trained with data.text_position: before); once for every prompt, or "
                             "once per prompt in order; with no prompt file, one --text and the audio is made from "
                             "it alone")
    parser.add_argument("--codec", help="converted SemantiCodec folder or Hub id (default: the one the LM records)")
    parser.add_argument("--tiny", action="store_true",
                        help="a RANDOM tiny codec (64 semantic / 128 acoustic ids, 100 tokens/s: the layout of "
                             "recipes/lm_tiny_cpu.yaml's synthetic corpus and of tokenize_dataset.py --tiny); its output "
                             "is noise: smoke tests only")
    parser.add_argument("--seconds", type=float, required=True, help="total output length in seconds (prompt included)")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 1)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest ids only")
    parser.add_argument("--top-p", type=float, default=None, help="sample from the smallest set of ids with this "
                        "much probability (nucleus sampling)")
    parser.add_argument("--greedy", action="store_true",
                        help="always take the likeliest allowed id (no sampling: the same output for every --seed)")
    parser.add_argument("--num-beams", type=int, default=1, metavar="N",
                        help="beam search with N beams (deterministic; every beam stays decodable by the codec)")
    parser.add_argument("--repetition-penalty", type=float, default=None, metavar="P",
                        help="divide the scores of ids already in the sequence by P (> 1 discourages repeats; "
                             "transformers' repetition_penalty)")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=None, metavar="N",
                        help="never repeat an n-gram of N semantic ids (the semantic stream only; acoustic ids are "
                             "free to repeat); audio-only LMs")
    parser.add_argument("--min-seconds", type=float, default=None, metavar="S",
                        help="let the LM end a clip with <eos> once it lasts S seconds (prompt included), never "
                             "before; implies --allow-early-eos from that length on")
    parser.add_argument("--extend-stride", type=float, default=None, metavar="SECONDS",
                        help="long-form continuation (a --seconds past the LM's context): each time the context is "
                             "full, drop this much of the oldest audio from the LM's window and continue from the "
                             "rest (default: a quarter of the context; more = fewer KV-cache rebuilds, less memory "
                             "kept); must be smaller than the context. A text+audio LM's windows after the first "
                             "hold audio only: its --text is read before the first slide")
    parser.add_argument("--seed", type=int, default=0, help="seed of LM sampling and of the codec's decoder")
    parser.add_argument("--allow-early-eos", action="store_true", help="stop a clip early when the LM writes <eos>")
    parser.add_argument("--acoustic-lm", metavar="PATH",
                        help="for an LM on semantic_only ids or on acoustic-BPE pieces of them: the acoustic stage LM "
                             "(lm/acoustic_stage.py) that adds the acoustic ids the codec decoder needs (audio-only "
                             "LMs)")
    parser.add_argument("--no-token-healing", action="store_const", const=True, default=None,
                        help="for an LM on acoustic-BPE pieces: keep the prompt's last piece as encoded (by default "
                             "it is taken back and the LM's first piece must start with its semantic ids, as a "
                             "prompt cut out of a clip often ends inside a merge the LM saw whole)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bars (generation steps, decoding) on stderr; errors still print")
    parser.add_argument("--steps", type=int, default=None,
                        help="diffusion steps of the codec decoder (default 50; checked before generation starts)")
    parser.add_argument("--sampler", default=None, choices=list(_samplers()),
                        help="codec decoder sampler: ddim (default, the original) or a faster solver such as dpmsolver++")
    parser.add_argument("--device", default="cpu")
    add_threads_option(parser)


def register_continue_command(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add `continue` to the `semanticodec-hf` command line (entry point `semanticodec_hf.commands` in setup.py:
    the codec's command line finds it there and never imports this toolkit itself)."""
    parser = add_command("continue", "continue an audio prompt with an audio language model (lm toolkit)",
                         "Continue an audio prompt with an audio language model trained on SemantiCodec tokens, or, "
                         "with a text+audio LM (model.keep_text_vocab: true), after a text (--text) too or instead.")
    add_continue_arguments(parser)
    parser.set_defaults(func=run_continue)


def _samplers() -> Sequence[str]:
    from semanticodec_hf import SemantiCodecModel  # the model module pulls diffusers: only when a parser is built

    return SemantiCodecModel.SAMPLERS


def _read_prompts(paths: Sequence[str]):
    """The prompt files (the package's one audio reader) and their common sampling rate."""
    prompts, rates = [], set()
    for path in paths:
        try:
            audio, rate = read_audio(path)
        except ValueError as error:
            raise ValueError(f"cannot read prompt {path}: {error}") from None
        prompts.append(audio)
        rates.add(rate)
    if len(rates) != 1:
        raise ValueError(f"prompts have different sample rates {sorted(rates)}; resample them to one rate.")
    return prompts, rates.pop()


# Options a text+audio LM cannot take (JointAudioContinuation has no such step): refused by name, never ignored.
JOINT_REFUSED_OPTIONS = (
    ("acoustic_lm", "--acoustic-lm", "it has no acoustic stage (it writes interleaved ids, acoustic ones included)"),
    ("no_repeat_ngram_size", "--no-repeat-ngram-size",
     "its n-gram rule is not implemented for joint ids (use --repetition-penalty)"),
    ("no_token_healing", "--no-token-healing", "it writes single audio ids, not acoustic-BPE pieces: nothing to heal"),
)


def _refuse_joint_options(args: argparse.Namespace) -> None:
    """Refuse, before anything is loaded, the options a text+audio LM's engine does not have."""
    given = [(flag, why) for name, flag, why in JOINT_REFUSED_OPTIONS if getattr(args, name, None) is not None]
    if len(given) == 1:
        flag, why = given[0]
        raise ValueError(f"{flag} does not apply to a text+audio LM ({args.lm}): {why}; drop it.")
    if given:
        raise ValueError(f"{', '.join(flag for flag, _ in given)} do not apply to a text+audio LM ({args.lm}): "
                         f"{'; '.join(f'{flag}: {why}' for flag, why in given)}; drop them.")


def _joint_texts(texts: Optional[List[str]], inputs: Sequence[str]) -> Optional[List[str]]:
    """The text before each prompt's audio span (None: no --text): one --text for every prompt, or one per prompt
    in order; with no prompt file, exactly one (one clip is written)."""
    if texts is None:
        return None
    if not inputs:
        if len(texts) != 1:
            raise ValueError(f"with no prompt file, continue writes one clip from one --text, but --text was given "
                             f"{len(texts)} times; run it once per text.")
        return list(texts)
    if len(texts) == 1:
        return list(texts) * len(inputs)
    if len(texts) != len(inputs):
        raise ValueError(f"--text was given {len(texts)} times for {len(inputs)} prompt files; give it once (the "
                         "same text before every prompt) or once per prompt, in order.")
    return list(texts)


def _continue_joint(args: argparse.Namespace, prompts: Optional[List[np.ndarray]], rate: Optional[int],
                    texts: Optional[List[str]], tiny: Any) -> Tuple[Any, Dict[str, Any]]:
    """A text+audio LM's engine and its `generate_continuation` result (no audio yet: the caller decodes it, or
    writes a streamed result's `audio_pieces` as they come, as for audio-only LMs)."""
    from semanticodec_hf.lm.joint_generation import JointAudioContinuation  # it imports this module

    engine = JointAudioContinuation.from_pretrained(args.lm, args.codec, device=args.device, codec_tokenizer=tiny)
    if rate is None:  # text only: no prompt to resample
        rate = engine.tokenizer.audio_tokenizer.sampling_rate
    result = engine.generate_continuation(
        prompts, rate, args.seconds, texts=texts, seed=args.seed, num_inference_steps=args.steps,
        sampler=args.sampler, min_seconds=args.min_seconds, allow_early_eos=args.allow_early_eos,
        progress=not args.quiet, greedy=args.greedy, num_beams=args.num_beams, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
        extend_stride=args.extend_stride)
    return engine, result


def _continue_targets(inputs: Sequence[str], output: str) -> List[Path]:
    """The wav each clip becomes (one file for one clip, one prompt or a text alone; else a folder of one wav per
    prompt, named after it), refused before any work when a write would destroy something: an output that is a
    prompt file, two prompts with one name, or, for a text alone, an OUTPUT that exists (the single positional
    argument is OUTPUT then, and a forgotten OUTPUT would turn the meant prompt into it)."""
    if not inputs:
        if stat_kind(Path(output)) is not None:
            raise ValueError(f"with --text and a single path, that path is OUTPUT, and {output} exists: to continue "
                             f"it as a prompt, give an OUTPUT after it; to replace it, delete it first.")
        return [Path(output)]
    if len(inputs) == 1:
        targets = [Path(output)]
    else:
        if stat_kind(Path(output)) == "file":
            raise ValueError(f"several prompts need an output folder, but {output} is a file; name a folder.")
        targets = [Path(output) / (Path(p).stem + ".wav") for p in inputs]
    named = {}
    for prompt, target in zip(inputs, targets):
        if target in named:
            raise ValueError(f"prompts {named[target]} and {prompt} would both be written to {target}; rename one.")
        named[target] = prompt
    try:
        refuse_overwriting([Path(p) for p in inputs], [("output", target) for target in targets])
    except CliError as error:
        raise ValueError(str(error)) from None
    return targets


def run_continue(args: argparse.Namespace) -> int:
    """Read prompts, continue them in one batch, write OUTPUT (a file for one prompt, else a folder of wavs).

    A text+audio LM folder (`is_joint_folder`) goes through `JointAudioContinuation`: `--text` before the audio
    span, audio prompts, or both; with `--text` and no prompt file, OUTPUT is the only positional argument.
    Returns 0, or 2 with a one-line message for anything the user can fix (no partial output is left)."""
    use_threads(getattr(args, "threads", None))
    *inputs, output = args.prompts
    texts = getattr(args, "text", None)
    try:
        joint = is_joint_folder(args.lm)
        if texts is not None and not joint:
            raise ValueError(f"--text needs a text+audio LM (trained with model.keep_text_vocab: true); {args.lm} "
                             "is an audio-only LM, which reads no text: drop --text.")
        if not inputs and texts is None:
            hint = " (or --text TEXT and OUTPUT: this is a text+audio LM)" if joint else ""
            raise ValueError(f"give at least one prompt file and an OUTPUT path{hint}.")
        if args.tiny and args.codec:
            raise ValueError("give --codec PATH or --tiny (a random codec for smoke tests), not both.")
        if joint:
            _refuse_joint_options(args)
            texts = _joint_texts(texts, inputs)
        targets = _continue_targets(inputs, output)
        prompts, rate = _read_prompts(inputs) if inputs else (None, None)
        tiny = tiny_codec_tokenizer() if args.tiny else None
        if tiny is not None:
            tiny.model.to(args.device)
        if joint:
            engine, result = _continue_joint(args, prompts, rate, texts, tiny)
            codec_rate = engine.tokenizer.audio_tokenizer.sampling_rate  # the audio's rate (16 kHz)
        else:
            engine = AudioContinuation.from_pretrained(args.lm, args.codec, device=args.device, codec_tokenizer=tiny,
                                                       acoustic_lm=args.acoustic_lm)
            result = engine.generate_continuation(
                prompts, rate, args.seconds, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                seed=args.seed, allow_early_eos=args.allow_early_eos, num_inference_steps=args.steps,
                sampler=args.sampler, greedy=args.greedy, num_beams=args.num_beams,
                repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
                min_seconds=args.min_seconds, extend_stride=args.extend_stride, progress=not args.quiet,
                token_healing=not args.no_token_healing,
            )
            codec_rate = engine.tokenizer.sampling_rate  # the audio's rate (16 kHz)
        streamed = result["streamed"]
        if not streamed:
            audio = engine.decode_result(result, progress=not args.quiet)["audio"]
    except PromptError as error:
        print(f"continue: error: {inputs[error.index]}: {error.message}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:
        print(f"continue: error: {error}", file=sys.stderr)
        return 2
    for row, target in enumerate(targets):
        try:  # a full disk or an unwritable folder is the user's to fix: one line, exit 2 (no partial file)
            target.parent.mkdir(parents=True, exist_ok=True)
            if streamed:  # long-form: decoded and written piece by piece, never held whole
                pieces = progress_bar(engine.audio_pieces(result, row), desc=f"decode {target.name}", unit="piece",
                                      quiet=args.quiet)
                written = _write_pieces(target, pieces, codec_rate)
                print(f"{target}: {written / codec_rate:.2f} s ({result['slides']} slides, streamed)")
                continue
            samples = audio[row].numpy()
            # atomic (a reader never sees half a file) and with the usual file mode, as the codec commands write
            atomic_write(target, lambda temporary: sf.write(str(temporary), samples, codec_rate, subtype="PCM_16"))
        except OSError as error:
            print(f"continue: error: cannot write {target}: {error}", file=sys.stderr)
            return 2
        print(f"{target}: {samples.shape[-1] / codec_rate:.2f} s")
    return 0


def _write_pieces(target: Path, pieces: Iterable[torch.Tensor], sampling_rate: int) -> int:
    """Write waveform pieces to one 16-bit wav as they come, atomically (the codec commands' `_stream_to_file`
    way: a reader never sees half a file); returns the samples written."""
    written = [0]

    def write(temporary: Path) -> None:
        with sf.SoundFile(str(temporary), "w", samplerate=sampling_rate, channels=1, subtype="PCM_16") as out:
            for piece in pieces:
                samples = piece.float().cpu().numpy()
                out.write(samples)
                written[0] += samples.shape[0]

    atomic_write(target, write)
    return written[0]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_continue_arguments(parser)
    return run_continue(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

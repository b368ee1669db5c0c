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

Decoding: sampling by default (`--temperature`, `--top-k`, `--top-p`), or `--greedy`, or beam search
(`--num-beams N`); the pattern constraint holds for every beam. `--repetition-penalty`, `--no-repeat-ngram-size`
(semantic ids only) and `--min-seconds` (with it the LM may end a clip with `<eos>` once it is that long) apply
to all of them.
"""

from __future__ import annotations

import argparse
import math
import numbers
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # a script run: drop lm/ from sys.path so its config.py, data.py, ... shadow nothing
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import soundfile as sf
import torch
from transformers import AutoModelForCausalLM, LogitsProcessorList

from semanticodec_hf.atomic_files import atomic_write
from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout, codes_to_ids
from semanticodec_hf.cpu_threads import add_threads_option, use_threads
from semanticodec_hf.lm.pattern_logits import PatternLogitsProcessor, SemanticNoRepeatNGramLogitsProcessor
from semanticodec_hf.processing_semanticodec import AudioItemError, read_audio
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


def check_decode_settings(codec: Any, num_inference_steps: Optional[int], sampler: Optional[str]) -> None:
    """Refuse decoder settings the codec would refuse, before minutes of LM generation are spent
    (`SemantiCodecModel.check_decode_settings`, in the command line's words). `None` means the codec's default."""
    try:
        codec.check_decode_settings(num_inference_steps, sampler)
    except ValueError as error:
        message = str(error).replace("num_inference_steps=", "--steps ").replace("num_inference_steps", "--steps")
        raise ValueError(message) from None


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
    ) -> Dict[str, Any]:
        """Continue each prompt to `seconds` of audio in total; returns `audio` (16 kHz tensors), `ids`, `codes`.

        Sampling (`temperature`, default 1, `top_k`, `top_p`) unless `greedy` or `num_beams` > 1 (beam search);
        `repetition_penalty` is transformers' (all ids); `no_repeat_ngram_size` bans repeated n-grams of the
        semantic stream only; `min_seconds` lets a clip end with `<eos>` once it is that long (total, prompt
        included, as `seconds`), never before: it implies `allow_early_eos` from that length on."""
        tok, layout, pattern = self.tokenizer, self.tokenizer.layout, self.tokenizer.pattern
        if pattern == "semantic_only":
            raise ValueError("An LM on semantic_only ids cannot make audio: the codec decoder needs acoustic ids too.")
        if not (isinstance(seconds, numbers.Real) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"--seconds must be a positive number of seconds, got {seconds!r}.")
        decoding = decoding_arguments(greedy, num_beams, temperature, top_k, top_p, repetition_penalty)
        if no_repeat_ngram_size is not None and (not _is_int(no_repeat_ngram_size) or no_repeat_ngram_size < 0):
            raise ValueError(f"--no-repeat-ngram-size must be a positive integer (0: no rule), got "
                             f"{no_repeat_ngram_size!r}.")
        extra_processors = ([SemanticNoRepeatNGramLogitsProcessor(layout, int(no_repeat_ngram_size))]
                            if no_repeat_ngram_size else [])
        check_decode_settings(tok.model, num_inference_steps, sampler)  # before any generation
        config = tok.model.config
        min_frames = min_frames_for(min_seconds, seconds, config)
        rate, minimum = config.sampling_rate, config.min_num_samples  # 16 kHz; one 0.16 s patch
        target_samples = int(round(seconds * rate))
        # The prompt's length at 16 kHz, as the feature extractor resamples it (last axis = time).
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
        try:
            prompt_codes = tok.encode_audio(list(prompts), sampling_rate)
        except AudioItemError as error:
            raise PromptError(error.index, error.message) from None
        target_frames = config.frame_budget(target_samples)
        rows = [prompt_ids(c, layout, pattern) for c in prompt_codes]
        batch = tok.pad(rows, padding_side="left")
        prompt_frames = [int(c.shape[1]) for c in prompt_codes]
        needed = max(new_tokens_needed(pattern, frames, target_frames) for frames in prompt_frames)
        limit = getattr(self.lm.config, "max_position_embeddings", None) or getattr(self.lm.config, "n_positions", None)
        if limit is not None and batch["input_ids"].shape[1] + needed > limit:
            fits = longest_fitting_seconds(pattern, batch["input_ids"].shape[1], prompt_frames, max(prompt_samples),
                                           config, limit)
            advice = (f"--seconds {fits:.2f} is the longest that fits with these prompts" if fits is not None else
                      "the prompts alone leave no room for a continuation; use shorter prompts")
            raise ValueError(
                f"--seconds {seconds} needs {batch['input_ids'].shape[1] + needed} positions but the LM has {limit}: "
                f"{advice} (or use an LM with a longer context)."
            )
        beams = decoding["num_beams"]  # generate repeats each row `beams` times (repeat_interleave): so do we
        processor = PatternLogitsProcessor(
            layout, pattern, target_frames=[target_frames] * (len(rows) * beams),
            allow_early_eos=allow_early_eos or min_frames is not None,
            forced_acoustic=([c[1].tolist() for c in prompt_codes for _ in range(beams)]
                             if pattern == "semantic_then_acoustic" else None),
            min_frames=None if min_frames is None else [min_frames] * (len(rows) * beams),
        )
        torch.manual_seed(seed)
        with torch.no_grad():
            sequences = self.lm.generate(
                input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device),
                max_new_tokens=needed, logits_processor=LogitsProcessorList([processor, *extra_processors]),
                bos_token_id=layout.bos_token_id, eos_token_id=layout.eos_token_id, pad_token_id=layout.pad_token_id,
                **decoding,
            ).cpu()
        codes = tok.decode_ids(sequences)
        decode = dict(num_inference_steps=num_inference_steps, seed=seed)
        if sampler is not None:
            decode["sampler"] = sampler
        full = tok.ids_to_audio(sequences, **decode)
        prompt_recon = self.reconstruct(prompt_codes, prompt_samples, **decode)
        audio = []
        for i, wave in enumerate(full):
            samples = min(target_samples, config.output_num_samples(codes[i].shape[1]))
            audio.append(splice(prompt_recon[i], wave[:samples], rate))
        return {"audio": audio, "ids": sequences, "codes": codes, "prompt_reconstruction": prompt_recon,
                "target_frames": target_frames}

    def reconstruct(self, codes: Sequence[torch.Tensor], num_samples: Sequence[int], **decode: Any) -> List[torch.Tensor]:
        """The codec's reconstruction of each prompt alone, cut to the prompt's length (what `roundtrip` gives)."""
        return self.tokenizer.processor.decode_codes(self.tokenizer.model, codes, num_samples=torch.tensor(num_samples),
                                                     **decode)


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
                             "free to repeat)")
    parser.add_argument("--min-seconds", type=float, default=None, metavar="S",
                        help="let the LM end a clip with <eos> once it lasts S seconds (prompt included), never "
                             "before; implies --allow-early-eos from that length on")
    parser.add_argument("--seed", type=int, default=0, help="seed of LM sampling and of the codec's decoder")
    parser.add_argument("--allow-early-eos", action="store_true", help="stop a clip early when the LM writes <eos>")
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
                         "Continue an audio prompt with an audio language model trained on SemantiCodec tokens.")
    add_continue_arguments(parser)
    parser.set_defaults(func=run_continue)


def _samplers() -> Sequence[str]:
    from semanticodec_hf import SemantiCodecModel  # the model module pulls diffusers: only when a parser is built

    return SemantiCodecModel.SAMPLERS


def tiny_codec_tokenizer():
    """The random tiny codec behind `--tiny` (seed 0: the one `tokenize_dataset.py --tiny` uses), loudly warned."""
    print("WARNING: --tiny uses a small RANDOMLY INITIALISED codec. Its output is noise; use it only to check that "
          "the pipeline runs (e.g. with an LM from recipes/lm_tiny_cpu.yaml).", file=sys.stderr)
    return SemantiCodecAudioTokenizer.tiny(seed=0)


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


def run_continue(args: argparse.Namespace) -> int:
    """Read prompts, continue them in one batch, write OUTPUT (a file for one prompt, else a folder of wavs).

    Returns 0, or 2 with a one-line message for anything the user can fix (no partial output is left)."""
    use_threads(getattr(args, "threads", None))
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
            sampler=args.sampler, greedy=args.greedy, num_beams=args.num_beams,
            repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
            min_seconds=args.min_seconds,
        )
    except PromptError as error:
        print(f"continue: error: {inputs[error.index]}: {error.message}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:
        print(f"continue: error: {error}", file=sys.stderr)
        return 2
    targets = [Path(output)] if len(inputs) == 1 else [Path(output) / (Path(p).stem + ".wav") for p in inputs]
    codec_rate = engine.tokenizer.sampling_rate  # the rate of result["audio"] (16 kHz)
    for target, wave in zip(targets, result["audio"]):
        target.parent.mkdir(parents=True, exist_ok=True)
        samples = wave.numpy()
        # atomic (a reader never sees half a file) and with the usual file mode, as the codec commands write
        atomic_write(target, lambda temporary: sf.write(str(temporary), samples, codec_rate, subtype="PCM_16"))
        print(f"{target}: {wave.shape[-1] / codec_rate:.2f} s")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_continue_arguments(parser)
    return run_continue(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

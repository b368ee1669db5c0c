#!/usr/bin/env python
"""Continue audio with an audio LM: prompt audio -> codes -> ids -> `generate` -> codes -> codec decode -> waveform.

    python lm/generate.py prompt.wav out.wav --lm runs/lm-tiny-cpu/final --codec ./semanticodec-100tps-8192 --seconds 8
    semanticodec-hf continue prompt.wav out.wav --lm PATH --codec PATH --seconds 8     # the same, from the CLI

No text is involved. `PatternLogitsProcessor` constrains sampling so that every sequence the LM writes is
decodable by the codec (the right stream at every position, `<eos>` only after a whole frame); the output starts
with exactly the prompt's reconstruction and then the LM's continuation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # `python lm/generate.py`: make `lm` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
        vocab = layout.vocab_size
        self._semantic = torch.zeros(vocab, dtype=torch.bool)
        self._semantic[: layout.acoustic_offset] = True
        self._acoustic = torch.zeros(vocab, dtype=torch.bool)
        self._acoustic[layout.acoustic_offset: layout.special_offset] = True

    def _row_state(self, ids: np.ndarray):
        layout = self.layout
        starts = np.flatnonzero((ids == layout.bos_token_id) | (ids == layout.sep_token_id))
        body = ids[starts[-1] + 1:] if starts.size else ids[(ids != layout.pad_token_id).argmax():]
        finished = bool(np.any(body == layout.eos_token_id))
        semantic = int(np.sum(body < layout.acoustic_offset))
        acoustic = int(np.sum((body >= layout.acoustic_offset) & (body < layout.special_offset)))
        return finished, semantic, acoustic

    def allowed(self, row: int, ids: np.ndarray) -> torch.Tensor:
        """Boolean mask over the vocabulary of the ids row `row` may write next."""
        layout = self.layout
        mask = torch.zeros(layout.vocab_size, dtype=torch.bool)
        finished, n_sem, n_ac = self._row_state(ids)
        if finished:
            mask[[layout.pad_token_id, layout.eos_token_id]] = True
            return mask
        target = None if self.target_frames is None else self.target_frames[row]
        if self.pattern == "interleaved":
            if n_sem > n_ac:
                return self._acoustic.clone()
            frames = n_sem
            more = target is None or frames < target
        elif self.pattern == "semantic_only":
            frames, more = n_sem, target is None or n_sem < target
        else:  # semantic_then_acoustic: target is known
            if n_ac == 0 and n_sem < target:
                return self._semantic.clone()
            if n_ac < n_sem:
                forced = None if self.forced_acoustic is None else self.forced_acoustic[row]
                if forced is not None and n_ac < len(forced):
                    mask[layout.acoustic_offset + forced[n_ac]] = True
                    return mask
                return self._acoustic.clone()
            frames, more = n_sem, False
        if more:
            mask |= self._semantic
        if frames >= 1 and (not more or self.allow_early_eos or target is None):
            mask[layout.eos_token_id] = True
        return mask

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids = input_ids.detach().cpu().numpy()
        masks = torch.stack([self.allowed(row, ids[row]) for row in range(ids.shape[0])]).to(scores.device)
        return scores.masked_fill(~masks[:, : scores.shape[-1]], float("-inf"))


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

        from semanticodec_hf.feature_extraction_semanticodec import SAMPLING_RATE, reference_frame_count

        tok, layout, pattern = self.tokenizer, self.tokenizer.layout, self.tokenizer.pattern
        if pattern == "semantic_only":
            raise ValueError("An LM on semantic_only ids cannot make audio: the codec decoder needs acoustic ids too.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use a small value for near-greedy sampling), got {temperature}.")
        token_rate = tok.model.config.token_rate
        target_samples = int(round(seconds * SAMPLING_RATE))
        prompt_codes = tok.encode_audio(list(prompts), sampling_rate)
        # The prompt's length at 16 kHz, as the feature extractor resamples it (last axis = time).
        prompt_samples = [int(round(np.shape(p)[-1] * SAMPLING_RATE / sampling_rate)) for p in prompts]
        short = [i for i, n in enumerate(prompt_samples) if n >= target_samples]
        if short:
            raise ValueError(
                f"--seconds {seconds} is the total length and must exceed the prompt; prompt(s) {short} are already "
                f"{max(prompt_samples[i] for i in short) / SAMPLING_RATE:.2f} s long."
            )
        target_frames = reference_frame_count(target_samples, token_rate)
        rows = [prompt_ids(c, layout, pattern) for c in prompt_codes]
        batch = tok.pad(rows, padding_side="left")
        needed = max(new_tokens_needed(pattern, int(c.shape[1]), target_frames) for c in prompt_codes)
        limit = getattr(self.lm.config, "max_position_embeddings", None) or getattr(self.lm.config, "n_positions", None)
        if limit is not None and batch["input_ids"].shape[1] + needed > limit:
            raise ValueError(
                f"{seconds} s needs {batch['input_ids'].shape[1] + needed} positions but the LM has {limit}; ask for "
                "fewer seconds or use an LM with a longer context."
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
    parser.add_argument("--seconds", type=float, required=True, help="total output length in seconds (prompt included)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of LM sampling and of the codec's decoder")
    parser.add_argument("--allow-early-eos", action="store_true", help="stop a clip early when the LM writes <eos>")
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps of the codec decoder (default 50)")
    parser.add_argument("--sampler", default=None, help="codec decoder sampler: ddim (default) or dpmsolver++")
    parser.add_argument("--device", default="cpu")


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
        prompts, rate = _read_prompts(inputs)
        engine = AudioContinuation.from_pretrained(args.lm, args.codec, device=args.device)
        result = engine.continue_audio(
            prompts, rate, args.seconds, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            seed=args.seed, allow_early_eos=args.allow_early_eos, num_inference_steps=args.steps,
            sampler=args.sampler,
        )
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

#!/usr/bin/env python
"""Train SemantiCodec's acoustic branch and diffusion UNet jointly on your own audio (accelerate).

    python recipes/train_codec.py --config recipes/codec_tiny_cpu.yaml            # minutes on a CPU (random tiny codec)
    accelerate launch --multi_gpu --num_processes 8 recipes/train_codec.py --config recipes/codec_full.yaml

Objective (see `semanticodec_hf.codec_training`): v-prediction MSE on VAE latents of the 64-bin log-mel of each
10.24 s segment + commitment of the acoustic VQ (EMA codebook); AudioMAE, the semantic codebook, the VAE and the
vocoder are frozen; the conditioning is replaced by the unconditional one with probability
`uncond_probability` so classifier-free guidance works. An EMA copy of the UNet is kept.

Every step is a pure function of (seed, step): segment choice, crops, timesteps, noise and conditioning dropout
come from generators seeded with both, so running the same command after a kill resumes from the newest
checkpoint and ends with the same weights as an uninterrupted run. Validation (every `eval_every` steps) reports
the diffusion loss at fixed noise and fixed timesteps, and on real reconstructions (DDIM, `val_steps` steps) the
log-mel L1 plus `semanticodec_hf.metrics`' mel distance, multi-resolution STFT distance and SI-SDR, and logs
target / reconstructed mel images to tensorboard. Outputs: `OUTPUT/final` (live weights, what inference uses,
like the original) and `OUTPUT/final_ema` (the UNet's EMA weights), both `from_pretrained` folders.

`model.init` is required: a converted codec folder (fine-tuned; with `model.from_scratch: true` the parts the
paper trains are re-initialised and only the frozen parts are kept), or `tiny` for a random tiny codec.
Clips shorter than one AudioMAE patch (0.16 s) are zero-padded like every segment; empty files are skipped with
a warning naming them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from transformers import get_constant_schedule_with_warmup

from semanticodec_hf import SemantiCodecConfig, SemantiCodecFeatureExtractor, SemantiCodecModel
from semanticodec_hf.codec_timing import SAMPLING_RATE, WINDOW_FRAMES, WINDOW_SAMPLES, padded_min_samples
from semanticodec_hf.codec_training import (
    PlacedEMAModel,
    SemantiCodecTrainingModule,
    reinitialize_trained_parts,
    trainable_parameters,
)
from semanticodec_hf.cpu_threads import add_threads_option, use_threads
from semanticodec_hf.datasets_utils import load_audio
from semanticodec_hf.metrics import mel_distance, multi_resolution_stft_distance, si_sdr
from semanticodec_hf.progress import progress_bar
from semanticodec_hf.recipe_loading import build_recipe, read_recipe
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer
from semanticodec_hf.training_utils import make_accelerator, save_checkpoint, start_run
from semanticodec_hf.vae_mel import vae_log_mel

SEGMENT_SAMPLES = WINDOW_SAMPLES  # 163840: 10.24 s at 16 kHz, one encoder window of WINDOW_FRAMES (1024) mel frames
# 2561: just over one AudioMAE patch (0.16 s, 2560 samples) at 16 kHz: what the front end accepts after resampling
MIN_CLIP_SAMPLES = padded_min_samples(SAMPLING_RATE)
# Validation scores every clip at these DDPM timesteps (centres of the schedule's quarters) with fixed noise, so
# the diffusion loss does not hinge on one random timestep per clip.
VALIDATION_TIMESTEPS = (125, 375, 625, 875)


@dataclass
class CodecModelSection:
    init: Optional[str] = None  # required: a converted codec folder, or "tiny" (random, tests/demos)
    from_scratch: bool = False  # converted init only: re-initialise the trained parts, keep the frozen ones
    token_rate: Optional[int] = None  # tiny only (default 100)
    semantic_vocab_size: Optional[int] = None  # tiny only (default 64)


@dataclass
class CodecDataSection:
    audio_dir: Optional[str] = None  # required
    extensions: List[str] = field(default_factory=lambda: ["wav", "flac", "ogg"])
    val_clips: int = 2


@dataclass
class CodecTrainSection:
    output_dir: str = "runs/codec"
    seed: int = 0
    max_steps: int = 100
    batch_size: int = 2  # 10.24 s segments per optimizer step, over all processes
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    commitment_weight: float = 1.0
    vq_decay: float = 0.9
    uncond_probability: float = 0.1
    ema_decay: float = 0.9999
    eval_every: int = 50
    save_every: int = 50
    log_every: int = 10
    keep_checkpoints: int = 2
    val_steps: int = 5
    mixed_precision: str = "auto"
    log_with: List[str] = field(default_factory=lambda: ["tensorboard"])


@dataclass
class CodecRecipe:
    model: CodecModelSection = field(default_factory=CodecModelSection)
    data: CodecDataSection = field(default_factory=CodecDataSection)
    train: CodecTrainSection = field(default_factory=CodecTrainSection)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def load_recipe(path: str, overrides: List[str]) -> CodecRecipe:
    """Read a YAML recipe with `--set` overrides (`semanticodec_hf.recipe_loading`: unknown keys and wrong types
    are errors) and check what the codec trainer needs."""
    data = read_recipe(path, overrides, example="recipes/codec_tiny_cpu.yaml")
    recipe = build_recipe(CodecRecipe, data, "a codec recipe")
    check_model_section(recipe.model, path)
    if not recipe.data.audio_dir:
        raise ValueError(f"{path}: data.audio_dir is missing; set it to the folder of training audio "
                         "(or pass --set data.audio_dir=DIR).")
    for name in ("max_steps", "batch_size", "eval_every", "save_every", "log_every", "keep_checkpoints", "val_steps"):
        if getattr(recipe.train, name) < 1:
            raise ValueError(f"train.{name} must be >= 1, got {getattr(recipe.train, name)}.")
    return recipe


def check_model_section(model: CodecModelSection, path: str = "the recipe") -> None:
    """Refuse a model section that would silently train something else than meant (e.g. a forgotten init)."""
    if not model.init:
        raise ValueError(
            f"{path}: model.init is missing. Set it to a converted codec folder (`semanticodec-hf convert "
            "--token-rate R --semantic-vocab-size V --output DIR`) to fine-tune it (add model.from_scratch: true to "
            "retrain its trained parts from scratch), or to 'tiny' for the RANDOM tiny codec of tests and demos.")
    if model.init == "tiny":
        if model.from_scratch:
            raise ValueError(f"{path}: model.from_scratch applies to a converted codec in model.init; the tiny "
                             "codec is random already (remove from_scratch or point init at a converted folder).")
        return
    given = [name for name in ("token_rate", "semantic_vocab_size") if getattr(model, name) is not None]
    if given:
        raise ValueError(f"{path}: model.{given[0]} only configures init: tiny; a converted codec ({model.init}) "
                         "brings its own token rate and vocabulary in its config.json. Remove "
                         + " and ".join(f"model.{name}" for name in given) + ".")


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Segment:
    """One 10.24 s training segment: encoder fbank window, VAE-domain mel, the samples, and how many are audio."""

    window: torch.Tensor  # [1024, 128]
    mel: torch.Tensor  # [1024, 64]
    samples: torch.Tensor  # [SEGMENT_SAMPLES], zero-padded
    valid: int  # samples of the clip in it (the rest is padding)


class SegmentSource:
    """Clips held at 16 kHz mono; `segment(clip, offset)` crops 10.24 s (zero-padded when shorter) and returns the
    encoder's fbank window and the VAE-domain mel of exactly the same samples.

    Every segment is zero-padded to 10.24 s anyway, so a clip shorter than one AudioMAE patch (0.16 s, the front
    end's minimum) is padded at load time instead of aborting the run (`padded` names them); an empty file has
    nothing to learn from and is skipped (`skipped`). `paths` lists the clips kept, in order.
    """

    def __init__(self, paths: List[str], feature_extractor):
        self.feature_extractor = feature_extractor
        self.clips: List[torch.Tensor] = []
        self.lengths: List[int] = []  # 16 kHz samples of each clip before any padding
        self.paths: List[str] = []
        self.padded: List[str] = []
        self.skipped: List[str] = []
        for row, path in enumerate(paths):
            audio, rate = load_audio(path, row=row)
            if audio.shape[-1] == 0:
                self.skipped.append(path)
                continue
            minimum, length = math.ceil(MIN_CLIP_SAMPLES * rate / SAMPLING_RATE), audio.shape[-1]
            if audio.shape[-1] < minimum:
                width = [(0, 0)] * (audio.ndim - 1) + [(0, minimum - audio.shape[-1])]
                audio = np.pad(audio, width)
                self.padded.append(path)
            try:
                self.clips.append(feature_extractor.to_mono_16k(audio, rate))
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
            self.lengths.append(min(self.clips[-1].shape[0], round(length * SAMPLING_RATE / rate)))
            self.paths.append(path)

    def __len__(self) -> int:
        return len(self.clips)

    def segment(self, clip: int, offset_fraction: float) -> Segment:
        wave = self.clips[clip]
        start = int(offset_fraction * max(0, wave.shape[0] - SEGMENT_SAMPLES))
        segment = torch.zeros(SEGMENT_SAMPLES)
        piece = wave[start:start + SEGMENT_SAMPLES]
        segment[: piece.shape[0]] = piece
        window = self.feature_extractor(segment, sampling_rate=SAMPLING_RATE)["input_features"][0, :WINDOW_FRAMES]
        mel = vae_log_mel(segment)[:WINDOW_FRAMES]
        return Segment(window, mel, segment, max(0, min(piece.shape[0], self.lengths[clip] - start)))

    def segments(self, clips: List[int], offsets: List[float]) -> List[Segment]:
        return [self.segment(c, o) for c, o in zip(clips, offsets)]

    def batch(self, clips: List[int], offsets: List[float]):
        """`(windows [B, 1024, 128], mels [B, 1024, 64])` of the given crops."""
        parts = self.segments(clips, offsets)
        return torch.stack([p.window for p in parts]), torch.stack([p.mel for p in parts])


def report_clip_problems(source: SegmentSource, print_fn=print) -> None:
    """Name the clips the source padded or skipped (first ten of each, with the count)."""
    for paths, what in ((source.skipped, "skipped (empty, nothing to learn from)"),
                        (source.padded, f"zero-padded (shorter than {MIN_CLIP_SAMPLES / SAMPLING_RATE:.2f} s)")):
        if paths:
            shown = ", ".join(paths[:10]) + (f", ... ({len(paths) - 10} more)" if len(paths) > 10 else "")
            print_fn(f"warning: {len(paths)} audio file(s) {what}: {shown}", file=sys.stderr)


def split_clips(num_clips: int, val_clips: int, seed: int):
    """`(validation clip indices, training clip indices)`: a seeded permutation, the first `val_clips` validate."""
    order = np.random.default_rng(seed).permutation(num_clips).tolist()
    return order[:val_clips], order[val_clips:]


def step_plan(step: int, seed: int, batch_size: int, num_clips: int):
    """The global batch of a step: which clips and where to crop them (pure function of seed and step)."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, num_clips, batch_size).tolist(), rng.random(batch_size).tolist()


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003) + step) * 131 + rank)


# ---------------------------------------------------------------------------------------------- codec
def build_codec(section: CodecModelSection, seed: int = 0):
    """The codec to train and its feature extractor, as `model` asks (see `check_model_section`)."""
    check_model_section(section)
    if section.init == "tiny":
        print("*** model.init=tiny: a RANDOM tiny codec (frozen parts random too); for tests and demos only.",
              file=sys.stderr)
        tokenizer = SemantiCodecAudioTokenizer.tiny(
            seed=0, token_rate=section.token_rate or 100, semantic_vocab_size=section.semantic_vocab_size or 64)
        return tokenizer.model, tokenizer.feature_extractor
    if not (Path(section.init) / "config.json").is_file():
        raise FileNotFoundError(f"model.init={section.init!r} is neither 'tiny' nor a converted codec folder "
                                "(no config.json there); convert one with `semanticodec-hf convert`.")
    SemantiCodecConfig.from_pretrained(section.init)
    codec = SemantiCodecModel.from_pretrained(section.init)
    if section.from_scratch:
        names = reinitialize_trained_parts(codec, seed)
        print(f"model.from_scratch: re-initialised {len(names)} tensors (acoustic LSTM, output projection, acoustic "
              f"codebook, UNet); AudioMAE, semantic codebook, VAE and vocoder kept from {section.init}",
              file=sys.stderr)
    return codec, SemantiCodecFeatureExtractor.from_pretrained(section.init)


def mel_image(mel: torch.Tensor) -> np.ndarray:
    """`[frames, 64]` log-mel -> `[64, frames]` grey image in [0, 1], low frequencies at the bottom."""
    image = mel.t().flip(0).float()
    return ((image - image.min()) / (image.max() - image.min()).clamp(min=1e-6)).numpy()


@torch.no_grad()
def validation_diffusion_loss(module, windows: torch.Tensor, mels: torch.Tensor, seed: int) -> float:
    """Mean diffusion loss of a batch over `VALIDATION_TIMESTEPS`, each with the same seeded noise (eval mode:
    no conditioning dropout, no codebook update)."""
    # The draws of `module(...)` with fixed timesteps, in its order (conditioning, latents, noise), made once:
    # only the UNet call depends on the timestep.
    generator = torch.Generator().manual_seed(seed + 12345)
    conditioning, _, _ = module.conditioning(windows, generator)
    clean = module.latents(mels, generator)
    noise = torch.randn(clean.shape, generator=generator).to(clean)
    losses = []
    for timestep in VALIDATION_TIMESTEPS:
        timesteps = torch.full((windows.shape[0],), timestep, dtype=torch.long, device=windows.device)
        losses.append(float(module.diffusion_loss(conditioning, clean, noise, timesteps)))
    return float(np.mean(losses))


def reconstruction_scores(segments: List[Segment], audio: torch.Tensor) -> Dict[str, float]:
    """`semanticodec_hf.metrics` on each validation clip's own samples (padding excluded), averaged over the clips a
    metric applies to (SI-SDR of a silent reference is undefined: that clip is left out, NaN if none is left); a
    NaN output of a diverged model stays NaN, so divergence shows."""
    metrics = {"val/mel_distance": mel_distance, "val/stft_distance": multi_resolution_stft_distance,
               "val/si_sdr": si_sdr}
    values: Dict[str, List[float]] = {name: [] for name in metrics}
    for segment, estimate in zip(segments, audio):
        reference, estimate = segment.samples[: segment.valid].double(), estimate[: segment.valid].double()
        if not bool(torch.isfinite(estimate).all()):  # a diverged model: every score NaN (the metrics refuse it)
            for scores in values.values():
                scores.append(float("nan"))
            continue
        for name, metric in metrics.items():
            try:
                values[name].append(metric(reference, estimate, SAMPLING_RATE))
            except ValueError:
                continue
    return {name: float(np.mean(scores)) if scores else float("nan") for name, scores in values.items()}


@torch.no_grad()
def validate(accelerator, trainer, source: SegmentSource, val_clips: List[int], cfg: CodecTrainSection, step: int):
    """Diffusion loss at fixed noise and timesteps, and reconstruction quality (log-mel L1, mel distance,
    multi-resolution STFT distance, SI-SDR) on the validation clips (main process); mel images to tensorboard."""
    module = accelerator.unwrap_model(trainer)
    codec = module.codec
    was_training = module.training
    module.eval()
    segments = source.segments(val_clips, [0.0] * len(val_clips))
    windows, mels = torch.stack([s.window for s in segments]), torch.stack([s.mel for s in segments])
    diffusion = validation_diffusion_loss(module, windows.to(accelerator.device), mels.to(accelerator.device),
                                          cfg.seed)
    codes = codec.encode(windows.to(accelerator.device)).audio_codes
    audio = codec.decode(codes, num_inference_steps=cfg.val_steps, seed=cfg.seed).audio_values[:, 0]
    audio = audio[:, :SEGMENT_SAMPLES].float().cpu()
    reconstruction = vae_log_mel(audio)[:, :WINDOW_FRAMES]
    mel_l1 = float((reconstruction - mels).abs().mean())
    module.train(was_training)
    images = {f"val/mel_clip{i}": np.concatenate([mel_image(mels[i]), mel_image(reconstruction[i])], axis=0)
              for i in range(len(val_clips))}
    try:
        tracker = accelerator.get_tracker("tensorboard")
        if hasattr(tracker, "log_images"):
            tracker.log_images(images, step=step, dataformats="HW")
    except (ValueError, KeyError, AttributeError):  # no tensorboard tracker in this run
        pass
    return {"val/diffusion_loss": diffusion, "val/mel_l1": mel_l1, **reconstruction_scores(segments, audio)}


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML recipe (see recipes/codec_tiny_cpu.yaml)")
    parser.add_argument("--output-dir", help="overrides train.output_dir")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--resume", default="auto", help="'auto' (newest checkpoint, if any), 'no', or a path")
    add_threads_option(parser)  # per process: with several accelerate processes on one CPU, give each a share
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None, callbacks: Sequence[Callable[[int], Any]] = ()) -> Dict[str, Any]:
    """The command line; `callbacks` are passed to `train`."""
    args = parse_args(argv)
    use_threads(args.threads)
    overrides = list(args.overrides) + ([f"train.output_dir={args.output_dir}"] if args.output_dir else [])
    return train(load_recipe(args.config, overrides), args.resume, callbacks)


def train(recipe: CodecRecipe, resume: str = "auto", callbacks: Sequence[Callable[[int], Any]] = ()) -> Dict[str, Any]:
    """Run (or resume) the recipe; returns a summary dict (also written to OUTPUT/summary.json).

    Each of `callbacks` is called as `callback(step)` on every process once a step is complete: after its
    update, logging, validation and checkpoint (a checkpoint of that step, if one was due, is on disk)."""
    cfg, output = recipe.train, Path(recipe.train.output_dir)
    accelerator = make_accelerator(cfg.mixed_precision, cfg.log_with, output / "logs")
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % world:
        raise ValueError(f"train.batch_size ({cfg.batch_size}) must be a multiple of the {world} processes.")
    per_process = cfg.batch_size // world

    audio_dir = Path(recipe.data.audio_dir)
    wanted = {"." + e.lower().lstrip(".") for e in recipe.data.extensions}
    paths = sorted(str(p) for p in audio_dir.rglob("*") if p.is_file() and p.suffix.lower() in wanted) \
        if audio_dir.is_dir() else []
    torch.manual_seed(cfg.seed)
    codec, feature_extractor = build_codec(recipe.model, cfg.seed)
    source = SegmentSource(paths, feature_extractor)
    if accelerator.is_main_process:
        report_clip_problems(source)
    if len(source) <= recipe.data.val_clips:
        raise ValueError(f"data.audio_dir={audio_dir} has {len(source)} usable audio files ({len(paths)} found with "
                         f"extensions {sorted(wanted)}); need more than data.val_clips={recipe.data.val_clips}.")
    val_clips, train_clips = split_clips(len(source), recipe.data.val_clips, cfg.seed)

    trainer = SemantiCodecTrainingModule(codec, cfg.commitment_weight, cfg.vq_decay, cfg.uncond_probability)
    trainer.train()
    parameters = [p for p in trainer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=cfg.warmup_steps)
    trainer, optimizer = accelerator.prepare(trainer, optimizer)
    # Built after `prepare` from the placed UNet, and kept on its device on resume too (see PlacedEMAModel).
    ema = PlacedEMAModel(accelerator.unwrap_model(trainer).codec.decoder.unet.parameters(), accelerator.device,
                         decay=cfg.ema_decay)
    # checkpointed as JSON + safetensors by save_checkpoint, not register_for_checkpointing (which pickles them)
    objects = {"scheduler": scheduler, "ema": ema}

    start_step, log = start_run(accelerator, output, resume, "semanticodec-training", recipe.to_dict(),
                                objects=objects)
    counts = trainable_parameters(accelerator.unwrap_model(trainer))
    accelerator.print(f"training {sum(counts.values()) / 1e6:.2f}M parameters ({', '.join(counts)}); "
                      f"{len(train_clips)} train / {len(val_clips)} validation clips; {world} process(es)")

    if start_step == 0 and accelerator.is_main_process:  # the baseline every later validation is compared with
        log(validate(accelerator, trainer, source, val_clips, cfg, 0), 0)
    accelerator.wait_for_everyone()
    started, last = time.perf_counter(), {}
    bar = progress_bar(total=cfg.max_steps, initial=start_step, desc="train codec", unit="step",
                       quiet=not accelerator.is_local_main_process)
    for step in range(start_step + 1, cfg.max_steps + 1):
        clips, offsets = step_plan(step, cfg.seed, cfg.batch_size, len(train_clips))
        mine = slice(rank * per_process, (rank + 1) * per_process)
        windows, mels = source.batch([train_clips[c] for c in clips[mine]], offsets[mine])
        with accelerator.autocast():
            losses = trainer(windows.to(accelerator.device), mels.to(accelerator.device),
                             step_generator(cfg.seed, step, rank))
        accelerator.backward(losses.loss)
        accelerator.clip_grad_norm_(parameters, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(trainer).codec.decoder.unet.parameters())
        values = {key: float(accelerator.reduce(value.detach().float().to(accelerator.device), "mean"))
                  for key, value in (("loss", losses.loss), ("diffusion", losses.diffusion),
                                     ("commitment", losses.commitment), ("codebook_usage", losses.codebook_usage))}
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.4f}")
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            last = {f"train/{k}": v for k, v in values.items()}
            last["train/learning_rate"] = scheduler.get_last_lr()[0]
            last["train/seconds_per_step"] = (time.perf_counter() - started) / (step - start_step)
            log(last, step)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            if accelerator.is_main_process:
                log(validate(accelerator, trainer, source, val_clips, cfg, step), step)
            accelerator.wait_for_everyone()
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            save_checkpoint(accelerator, output, step, {"recipe": recipe.to_dict()}, cfg.keep_checkpoints, objects)
        for callback in callbacks:
            callback(step)
    bar.close()
    accelerator.wait_for_everyone()
    summary = {"steps": cfg.max_steps, "resumed_from": start_step or None, "final": str(output / "final"), **last}
    if accelerator.is_main_process:
        codec = accelerator.unwrap_model(trainer).codec
        codec.save_pretrained(output / "final")
        feature_extractor.save_pretrained(output / "final")
        ema.copy_to(codec.decoder.unet.parameters())  # after the live export: the EMA UNet goes to its own folder
        codec.save_pretrained(output / "final_ema")
        feature_extractor.save_pretrained(output / "final_ema")
        (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main()

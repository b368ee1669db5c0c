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
the diffusion loss at fixed noise and the log-mel L1 of real reconstructions (DDIM, `val_steps` steps), and
logs target / reconstructed mel images to tensorboard. Outputs: `OUTPUT/final` (live weights, what inference
uses, like the original) and `OUTPUT/final_ema` (the UNet's EMA weights), both `from_pretrained` folders.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

SEGMENT_SAMPLES = 163840  # 10.24 s at 16 kHz: one encoder window, 1024 mel frames


@dataclass
class CodecModelSection:
    init: str = "tiny"  # "tiny" (random, tests/demos) or a converted codec folder to fine-tune
    token_rate: int = 100  # tiny only
    semantic_vocab_size: int = 64  # tiny only


@dataclass
class CodecDataSection:
    audio_dir: str = "clips"
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
    import yaml

    from lm.config import apply_overrides

    data = apply_overrides(yaml.safe_load(Path(path).read_text()) or {}, overrides)
    sections = {"model": CodecModelSection, "data": CodecDataSection, "train": CodecTrainSection}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ValueError(f"Unknown recipe section(s) {unknown}; a codec recipe has model, data and train.")
    built = {}
    for name, cls in sections.items():
        values = dict(data.get(name) or {})
        known = {f.name for f in dataclasses.fields(cls)}
        if set(values) - known:
            raise ValueError(f"Unknown key(s) {sorted(set(values) - known)} in section {name!r}; known: {sorted(known)}.")
        built[name] = cls(**values)
    recipe = CodecRecipe(**built)
    for name in ("max_steps", "batch_size", "eval_every", "save_every", "log_every", "keep_checkpoints", "val_steps"):
        if getattr(recipe.train, name) < 1:
            raise ValueError(f"train.{name} must be >= 1, got {getattr(recipe.train, name)}.")
    return recipe


# ---------------------------------------------------------------------------------------------- data
class SegmentSource:
    """Clips held at 16 kHz mono; `segment(clip, rng)` crops 10.24 s at random (zero-padded when shorter) and
    returns the encoder's fbank window and the VAE-domain mel of exactly the same samples."""

    def __init__(self, paths: List[str], feature_extractor):
        from semanticodec_hf.datasets_utils import load_audio

        self.feature_extractor = feature_extractor
        self.clips = []
        for row, path in enumerate(paths):
            audio, rate = load_audio(path, row=row)
            self.clips.append(feature_extractor.to_mono_16k(audio, rate))

    def __len__(self) -> int:
        return len(self.clips)

    def segment(self, clip: int, offset_fraction: float):
        from semanticodec_hf.vae_mel import vae_log_mel

        wave = self.clips[clip]
        start = int(offset_fraction * max(0, wave.shape[0] - SEGMENT_SAMPLES))
        segment = torch.zeros(SEGMENT_SAMPLES)
        piece = wave[start:start + SEGMENT_SAMPLES]
        segment[: piece.shape[0]] = piece
        window = self.feature_extractor(segment, sampling_rate=16000)["input_features"][0, :1024]
        mel = vae_log_mel(segment)[:1024]
        return window, mel

    def batch(self, clips: List[int], offsets: List[float]):
        pairs = [self.segment(c, o) for c, o in zip(clips, offsets)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def step_plan(step: int, seed: int, batch_size: int, num_clips: int):
    """The global batch of a step: which clips and where to crop them (pure function of seed and step)."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, num_clips, batch_size).tolist(), rng.random(batch_size).tolist()


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003) + step) * 131 + rank)


# ---------------------------------------------------------------------------------------------- codec
def build_codec(section: CodecModelSection, output: Path):
    from semanticodec_hf import SemantiCodecConfig, SemantiCodecFeatureExtractor, SemantiCodecModel

    if section.init == "tiny":
        print("*** model.init=tiny: a RANDOM tiny codec (frozen parts random too); for tests and demos only.",
              file=sys.stderr)
        from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

        tokenizer = SemantiCodecAudioTokenizer.tiny(seed=0, token_rate=section.token_rate,
                                                    semantic_vocab_size=section.semantic_vocab_size)
        return tokenizer.model, tokenizer.feature_extractor
    if not (Path(section.init) / "config.json").is_file():
        raise FileNotFoundError(f"model.init={section.init!r} is neither 'tiny' nor a converted codec folder.")
    SemantiCodecConfig.from_pretrained(section.init)
    return SemantiCodecModel.from_pretrained(section.init), SemantiCodecFeatureExtractor.from_pretrained(section.init)


def mel_image(mel: torch.Tensor) -> np.ndarray:
    """`[frames, 64]` log-mel -> `[64, frames]` grey image in [0, 1], low frequencies at the bottom."""
    image = mel.t().flip(0).float()
    return ((image - image.min()) / (image.max() - image.min()).clamp(min=1e-6)).numpy()


@torch.no_grad()
def validate(accelerator, trainer, source: SegmentSource, val_clips: List[int], cfg: CodecTrainSection, step: int):
    """Diffusion loss at fixed noise and reconstruction log-mel L1 on the validation clips (main process)."""
    from semanticodec_hf.vae_mel import vae_log_mel

    module = accelerator.unwrap_model(trainer)
    codec = module.codec
    was_training = module.training
    module.eval()
    windows, mels = source.batch(val_clips, [0.0] * len(val_clips))
    losses = module(windows.to(accelerator.device), mels.to(accelerator.device),
                    torch.Generator().manual_seed(cfg.seed + 12345))
    codes = codec.encode(windows.to(accelerator.device)).audio_codes
    audio = codec.decode(codes, num_inference_steps=cfg.val_steps, seed=cfg.seed).audio_values[:, 0]
    reconstruction = vae_log_mel(audio[:, :SEGMENT_SAMPLES].cpu())[:, :1024]
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
    return {"val/diffusion_loss": float(losses.diffusion), "val/mel_l1": mel_l1}


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML recipe (see recipes/codec_tiny_cpu.yaml)")
    parser.add_argument("--output-dir", help="overrides train.output_dir")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--resume", default="auto", help="'auto' (newest checkpoint, if any), 'no', or a path")
    parser.add_argument("--crash-after-step", type=int, help=argparse.SUPPRESS)  # tests: die like a killed job
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    overrides = list(args.overrides) + ([f"train.output_dir={args.output_dir}"] if args.output_dir else [])
    return train(load_recipe(args.config, overrides), args.resume, args.crash_after_step)


def train(recipe: CodecRecipe, resume: str = "auto", crash_after_step: Optional[int] = None) -> Dict[str, Any]:
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm
    from transformers import get_constant_schedule_with_warmup

    from semanticodec_hf.codec_training import SemantiCodecTrainingModule, trainable_parameters
    from semanticodec_hf.training_utils import make_accelerator, save_checkpoint, start_run

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
    if len(paths) <= recipe.data.val_clips:
        raise ValueError(f"data.audio_dir={audio_dir} has {len(paths)} audio files; need more than "
                         f"data.val_clips={recipe.data.val_clips}.")
    torch.manual_seed(cfg.seed)
    codec, feature_extractor = build_codec(recipe.model, output)
    source = SegmentSource(paths, feature_extractor)
    order = np.random.default_rng(cfg.seed).permutation(len(source)).tolist()
    val_clips, train_clips = order[: recipe.data.val_clips], order[recipe.data.val_clips:]

    trainer = SemantiCodecTrainingModule(codec, cfg.commitment_weight, cfg.vq_decay, cfg.uncond_probability)
    trainer.train()
    parameters = [p for p in trainer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=cfg.warmup_steps)
    ema = EMAModel(codec.decoder.unet.parameters(), decay=cfg.ema_decay)
    trainer, optimizer = accelerator.prepare(trainer, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_for_checkpointing(ema)

    start_step, log = start_run(accelerator, output, resume, "semanticodec-training", recipe.to_dict())
    counts = trainable_parameters(accelerator.unwrap_model(trainer))
    accelerator.print(f"training {sum(counts.values()) / 1e6:.2f}M parameters ({', '.join(counts)}); "
                      f"{len(train_clips)} train / {len(val_clips)} validation clips; {world} process(es)")

    if start_step == 0 and accelerator.is_main_process:  # the baseline every later validation is compared with
        log(validate(accelerator, trainer, source, val_clips, cfg, 0), 0)
    accelerator.wait_for_everyone()
    started, last = time.perf_counter(), {}
    bar = tqdm(total=cfg.max_steps, initial=start_step, desc="train codec", unit="step",
               disable=not accelerator.is_local_main_process, file=sys.stderr)
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
            save_checkpoint(accelerator, output, step, {"recipe": recipe.to_dict()}, cfg.keep_checkpoints)
        if crash_after_step is not None and step == crash_after_step:
            accelerator.wait_for_everyone()
            os._exit(137)
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
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()

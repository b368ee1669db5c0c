#!/usr/bin/env python
"""Does `torch.compile` (inductor) speed up the codec's networks? Eager against compiled, measured in one run.

Stages, each run the way the codec runs it (`SemantiCodecDecoder` / `SemantiCodecEncoder` methods, so with the
channels-last convolutions and, for eager UNet calls, the cached cross-attention keys/values):

- `unet`: one UNet call with both guidance halves (`decoder.predict_v` on 2 x `--windows` latents), i.e. one
  DDIM step of `--windows` windows. Eager runs inside `cache_cross_attention_context`, as the sampler does.
  The compiled UNet runs diffusers' default attention (`--unet-attention plain`, one graph): the cached processor
  looks tensors up by storage pointer, which Dynamo cannot trace, so with it (`--unet-attention cached`) the
  UNet breaks into ~30 graphs, one per cross-attention layer.
- `vae`: one VAE decode (`decoder.latents_to_mel`), `vae.decoder` compiled.
- `vocoder`: one HiFi-GAN call (`decoder.mel_to_waveform`), the vocoder compiled.
- `audiomae`: AudioMAE on `--audiomae-windows` windows (`encoder.audiomae_features`), then the whole encoder
  (`model.encoder(windows, quantizer)`, LSTM on the ATen kernel for both sides) with the compiled AudioMAE
  against the eager one: the semantic and acoustic ids must be identical.

Each network is compiled in place (`nn.Module.compile`); eager calls go through
`torch.compiler.set_stance("force_eager")`. Per stage: one eager warm-up call (its output is the reference),
the first compiled call (its time minus a compiled call's is the compile cost), one more compiled warm-up call,
then `--repeats` eager and compiled calls alternating (the fastest of each side is kept, so a slow spell of a
shared machine hits both). Inductor writes to a fresh cache folder (removed at the end), so the compile cost is
the cold one; `--warm-cache` uses inductor's usual cache instead.

One parseable line per stage and a markdown table at the end:

    COMPILE stage=unet eager_s=... compiled_s=... speedup=... compile_s=... break_even_calls=... rel_l2=...
        max_rel=... first_call_s=... mode=default graphs=1 graph_breaks=0

`speedup` = eager_s / compiled_s; `break_even_calls` = compile_s / (eager_s - compiled_s) calls ("never" when
compiled is not faster); `rel_l2` = ||compiled - eager|| / ||eager||; `max_rel` = max |compiled - eager| /
max |eager|. A stage whose compilation raises prints `COMPILE stage=... error=REASON` (the reason runs to the
end of the line). When the default mode gains at least 10 % on a stage, `--autotune auto` (the default) also
tries `mode="max-autotune-no-cudagraphs"` on it (printed with `mode=max-autotune-no-cudagraphs`).

examples:
  python benchmarks/compile_experiments.py --stages vocoder,vae --repeats 2   # full size, random weights (minutes)
  python benchmarks/compile_experiments.py --stages unet --threads 1 --repeats 3
  python benchmarks/compile_experiments.py --quick --stages vocoder --repeats 1     # tiny model: checks it runs
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from semanticodec_hf import SemantiCodecConfig, SemantiCodecFeatureExtractor, SemantiCodecModel
from semanticodec_hf.cpu_info import cpu_model_name
from semanticodec_hf.cpu_threads import add_threads_option, use_threads
from semanticodec_hf.unet_context_cache import cache_cross_attention_context

STAGES = ("unet", "vae", "vocoder", "audiomae")
AUTOTUNE_MODE = "max-autotune-no-cudagraphs"
AUTOTUNE_IF_SPEEDUP = 1.10


def build_model(quick: bool, token_rate: int) -> SemantiCodecModel:
    """The tiny random model (`--quick`), else the full-size variant with random weights spread like the tiny
    model's (so that ids vary with the audio and the decoder's outputs are not ~0)."""
    if quick:
        return SemantiCodecModel.tiny(token_rate=token_rate).eval()
    return SemantiCodecModel.random_with_signal(SemantiCodecConfig.from_variant(token_rate, 8192), seed=0)


def test_audio(config: SemantiCodecConfig, windows: int) -> np.ndarray:
    """`windows` different 10.24 s clips one after another: noise, a chirp, tones and noise bursts."""
    rng = np.random.default_rng(0)
    time_axis = np.arange(config.window_samples) / 16000.0
    clips = []
    for index in range(windows):
        kind = index % 4
        if kind == 0:
            clip = 0.1 * rng.standard_normal(time_axis.size)
        elif kind == 1:
            clip = 0.3 * np.sin(2 * np.pi * (100 + 300 * time_axis) * time_axis)
        elif kind == 2:
            clip = sum(0.1 * np.sin(2 * np.pi * f * time_axis) for f in (220, 440, 880 + 40 * index))
        else:
            clip = 0.2 * rng.standard_normal(time_axis.size) * (np.sin(2 * np.pi * 2 * time_axis) > 0)
        clips.append(clip)
    return np.concatenate(clips).astype(np.float32)[:-1]


class Stage:
    """One network: the module compiled in place, the call timed, the context the eager / compiled calls run in."""

    def __init__(self, name: str, network: nn.Module, run: Callable[[], torch.Tensor],
                 eager_context: Callable = nullcontext, compiled_context: Callable = nullcontext,
                 unit: str = "", check: Optional[Callable[[], Dict[str, str]]] = None):
        self.name, self.network, self.run, self.unit, self.check = name, network, run, unit, check
        self.eager_context, self.compiled_context = eager_context, compiled_context


def make_stages(model: SemantiCodecModel, names: List[str], windows: int, audiomae_windows: int,
                unet_attention: str) -> Dict[str, Callable[[], Stage]]:
    """Builders of the requested stages (inputs are made when a stage starts, so a failing one costs nothing)."""
    config, encoder, quantizer, decoder = model.config, model.encoder, model.quantizer, model.decoder
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(windows, *decoder.latent_shape, generator=generator)
    cache: Dict[str, torch.Tensor] = {}

    def unet() -> Stage:
        frames = config.frames_per_window
        semantic = torch.randint(0, config.semantic_vocab_size, (windows, frames), generator=generator)
        acoustic = torch.randint(0, config.acoustic_codebook_size, (windows, frames), generator=generator)
        with torch.inference_mode():
            conditioning = quantizer.codes_to_conditioning(semantic, acoustic)
        context = torch.cat([torch.zeros_like(conditioning), conditioning])  # unconditional half first, as sampled
        doubled = torch.cat([latents, latents])
        timestep = torch.full((2 * windows,), 500)
        cached = lambda: cache_cross_attention_context(decoder.unet)  # noqa: E731  (one sampling run's cache)
        return Stage("unet", decoder.unet, lambda: decoder.predict_v(doubled, timestep, context),
                     eager_context=cached, compiled_context=cached if unet_attention == "cached" else nullcontext,
                     unit=f"one guided step of {windows} window(s)")

    def mel() -> torch.Tensor:
        if "mel" not in cache:
            with torch.inference_mode():
                cache["mel"] = decoder.latents_to_mel(latents)
        return cache["mel"]

    def vae() -> Stage:
        return Stage("vae", decoder.vae.decoder, lambda: decoder.latents_to_mel(latents),
                     unit=f"{windows} window(s)")

    def vocoder() -> Stage:
        spectrogram = mel()
        return Stage("vocoder", decoder.vocoder, lambda: decoder.mel_to_waveform(spectrogram),
                     unit=f"{windows} window(s)")

    def audiomae() -> Stage:
        extractor = SemantiCodecFeatureExtractor()
        audio = test_audio(config, audiomae_windows)
        features = extractor(audio, sampling_rate=16000)["input_features"]
        features = features.reshape(audiomae_windows, config.window_frames, -1)

        def ids_check() -> Dict[str, str]:
            """Whole encoder (ATen LSTM kernel on both sides) with the eager, then the compiled AudioMAE."""
            previous = encoder.lstm_kernel
            encoder.lstm_kernel = "aten"
            try:
                with torch.inference_mode():
                    with torch.compiler.set_stance("force_eager"):
                        eager = encoder(features, quantizer)
                    compiled = encoder(features, quantizer)
            finally:
                encoder.lstm_kernel = previous
            result = {}
            for kind in ("semantic", "acoustic"):
                a, b = getattr(eager, f"{kind}_ids"), getattr(compiled, f"{kind}_ids")
                result[f"{kind}_ids_equal"] = f"{int((a == b).sum())}/{a.numel()}"
            return result

        return Stage("audiomae", encoder.audiomae, lambda: encoder.audiomae_features(features),
                     unit=f"{audiomae_windows} window(s)", check=ids_check)

    builders = {"unet": unet, "vae": vae, "vocoder": vocoder, "audiomae": audiomae}
    return {name: builders[name] for name in names}


def differences(reference: torch.Tensor, output: torch.Tensor) -> Dict[str, float]:
    reference, output = reference.double(), output.double()
    scale = float(reference.norm())
    peak = float(reference.abs().max())
    return {"rel_l2": float((output - reference).norm()) / scale if scale else float("nan"),
            "max_rel": float((output - reference).abs().max()) / peak if peak else float("nan")}


def timed(run: Callable[[], torch.Tensor]) -> tuple:
    started = time.perf_counter()
    output = run()
    return time.perf_counter() - started, output


def measure(stage: Stage, mode: str, repeats: int) -> Dict[str, object]:
    """Eager reference, compile (first call), then `repeats` eager / compiled calls alternating."""
    from torch._dynamo.utils import counters

    network = stage.network
    torch._dynamo.reset()
    counters.clear()
    with torch.inference_mode():
        with torch.compiler.set_stance("force_eager"), stage.eager_context():
            _, reference = timed(stage.run)  # warm-up (first-call allocations, oneDNN primitives)
        network.compile(mode=None if mode == "default" else mode)
        try:
            with stage.compiled_context():
                first_call, output = timed(stage.run)
                timed(stage.run)  # a second call can still pay for set-up
            eager_times, compiled_times = [], []
            for _ in range(repeats):
                with torch.compiler.set_stance("force_eager"), stage.eager_context():
                    eager_times.append(timed(stage.run)[0])
                with stage.compiled_context():
                    seconds, output = timed(stage.run)
                    compiled_times.append(seconds)
            extra = stage.check() if stage.check is not None else {}
        finally:
            network._compiled_call_impl = None  # back to eager (the attribute `nn.Module.compile` sets)
    eager_s, compiled_s = min(eager_times), min(compiled_times)
    compile_s = max(first_call - compiled_s, 0.0)
    saving = eager_s - compiled_s
    row = {"stage": stage.name, "mode": mode, "eager_s": eager_s, "compiled_s": compiled_s,
           "speedup": eager_s / compiled_s, "compile_s": compile_s, "first_call_s": first_call,
           "break_even_calls": math.ceil(compile_s / saving) if saving > 0 else "never",
           "graphs": int(counters["stats"].get("unique_graphs", 0)),
           "graph_breaks": int(sum(counters["graph_break"].values())), "unit": stage.unit}
    row.update(differences(reference, output))
    row.update(extra)
    return row


def stage_line(row: Dict[str, object]) -> str:
    if "error" in row:
        return f"COMPILE stage={row['stage']} mode={row['mode']} error={row['error']}"
    fields = [f"stage={row['stage']}"]
    for key in ("eager_s", "compiled_s", "speedup", "compile_s"):
        fields.append(f"{key}={row[key]:.6g}")
    fields.append(f"break_even_calls={row['break_even_calls']}")
    for key in ("rel_l2", "max_rel"):
        fields.append(f"{key}={row[key]:.3g}")
    fields.append(f"first_call_s={row['first_call_s']:.6g}")
    fields += [f"mode={row['mode']}", f"graphs={row['graphs']}", f"graph_breaks={row['graph_breaks']}"]
    fields += [f"{key}={row[key]}" for key in ("semantic_ids_equal", "acoustic_ids_equal") if key in row]
    return "COMPILE " + " ".join(fields)


def table(rows: List[Dict[str, object]]) -> str:
    lines = ["| stage (one call) | mode | eager s | compiled s | speed-up | compile s | break-even calls | "
             "rel L2 | max rel | graphs | ids equal |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['stage']} | {row['mode']} | error: {row['error']} | | | | | | | | |")
            continue
        ids = ", ".join(f"{k.split('_')[0]} {row[k]}" for k in ("semantic_ids_equal", "acoustic_ids_equal")
                        if k in row)
        lines.append(f"| {row['stage']} ({row['unit']}) | {row['mode']} | {row['eager_s']:.3f} | "
                     f"{row['compiled_s']:.3f} | {row['speedup']:.2f}x | {row['compile_s']:.1f} | "
                     f"{row['break_even_calls']} | {row['rel_l2']:.1e} | {row['max_rel']:.1e} | {row['graphs']} | "
                     f"{ids} |")
    return "\n".join(lines)


def short_reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}"


def main(argv: Optional[List[str]] = None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny random model (a smoke test)")
    parser.add_argument("--token-rate", type=int, choices=[25, 50, 100], default=100)
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated, from {','.join(STAGES)} (default: all, in that order)")
    parser.add_argument("--repeats", type=int, default=3, help="timed eager/compiled pairs (fastest of each kept)")
    parser.add_argument("--windows", type=int, default=1, help="10.24 s windows per decoder call")
    parser.add_argument("--audiomae-windows", type=int, default=4,
                        help="windows (different clips) per AudioMAE call; the ids are compared on them")
    parser.add_argument("--unet-attention", choices=["plain", "cached"], default="plain",
                        help="attention of the compiled UNet: diffusers' default (one graph) or the sampler's "
                             "cached cross-attention keys/values (graph breaks); eager always uses the cache")
    parser.add_argument("--autotune", choices=["auto", "never", "always"], default="auto",
                        help=f"also try mode={AUTOTUNE_MODE}: auto = where the default gains "
                             f">= {100 * (AUTOTUNE_IF_SPEEDUP - 1):.0f} %%")
    parser.add_argument("--warm-cache", action="store_true",
                        help="use inductor's usual cache folder (default: a fresh one, i.e. the cold compile cost)")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.stages.split(",") if name.strip()]
    unknown = sorted(set(names) - set(STAGES))
    if unknown or not names:
        parser.error(f"unknown stage(s) {unknown}; choose from {','.join(STAGES)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    threads = use_threads(args.threads)
    cache_dir = None
    if not args.warm_cache:
        # `timeout` sends SIGTERM: exit through the `finally` below so that the fresh cache folder is removed
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        cache_dir = tempfile.mkdtemp(prefix="compile_experiments_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    try:
        model = build_model(args.quick, args.token_rate)
        print(f"{cpu_model_name()}, {threads} threads, torch {torch.__version__}, "
              f"{'tiny' if args.quick else 'full'} {args.token_rate} tokens/s, random weights; "
              f"{'warm' if args.warm_cache else 'cold'} inductor cache", flush=True)
        builders = make_stages(model, names, args.windows, args.audiomae_windows, args.unet_attention)
        rows: List[Dict[str, object]] = []
        for name in names:
            modes = ["default"] + ([AUTOTUNE_MODE] if args.autotune == "always" else [])
            index = 0
            while index < len(modes):
                mode = modes[index]
                index += 1
                try:
                    row = measure(builders[name](), mode, args.repeats)
                except Exception as error:  # a failed compilation is a result, not a crash
                    row = {"stage": name, "mode": mode, "error": short_reason(error)}
                rows.append(row)
                print(stage_line(row), flush=True)
                if (mode == "default" and args.autotune == "auto" and "error" not in row
                        and row["speedup"] >= AUTOTUNE_IF_SPEEDUP):
                    modes.append(AUTOTUNE_MODE)
        print()
        print(table(rows))
        return rows
    finally:
        if cache_dir is not None:
            shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

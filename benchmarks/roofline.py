#!/usr/bin/env python
"""Each stage of the codec against this machine's limit: FLOPs, time, achieved GFLOP/s and the fraction of the
matching peak, measured in one run with the thread count in use.

Peaks: float32 and bfloat16 GEMM (`torch.mm` at a large size), a representative 3x3 2-D convolution, and the
BiLSTM's per-step GEMM shape (the recurrence multiplies a `[windows, input + hidden]` block by the gate
weights at every step). Stages (one 10.24 s window unless `--windows`): fbank, AudioMAE, pooling + semantic
nearest centroid, BiLSTM, output projection + acoustic VQ, one UNet call (both guidance halves), one VAE decode,
one vocoder call, and a whole window decode at DDIM `--steps` (50, the original's default).

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, plus hand counts where it sees nothing: the LSTM
(8 x hidden x (input + hidden) per step, layer and direction) and the fbank's real FFT (2.5 n log2 n per
frame). Element-wise work (activations, norms, softmax) is not counted anywhere, so a stage dominated by it
shows a low fraction: the table says so. A whole decode's FLOPs are the sum of its parts.

One parseable line per stage and a markdown table (for the README) at the end:

    ROOFLINE stage=unet gflop=... seconds=... gflops=... peak=fp32_gemm peak_gflops=... fraction=...

examples:
  python benchmarks/roofline.py                      # full-size 100 tokens/s variant, random weights (minutes)
  python benchmarks/roofline.py --steps 10           # a shorter whole decode
  python benchmarks/roofline.py --quick              # the tiny model and small peaks: checks that it runs
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from semanticodec_hf import SemantiCodecConfig, SemantiCodecFeatureExtractor, SemantiCodecModel
from semanticodec_hf.cpu_info import cpu_model_name
from semanticodec_hf.cpu_threads import add_threads_option, use_threads
from semanticodec_hf.lstm_kernels import lstm_kernel, resolve_kernel


DEVICE = torch.device("cpu")  # set by --device


def synchronize() -> None:
    """Wait for queued GPU work before a timer is read (no-op on a CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def best_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Fastest of `repeats` timed calls after `warmup` untimed ones (first-call set-up is not the stage's cost)."""
    with torch.inference_mode():
        for _ in range(warmup):
            run()
        times = []
        for _ in range(repeats):
            synchronize()
            started = time.perf_counter()
            run()
            synchronize()
            times.append(time.perf_counter() - started)
    return min(times)


def counted_flops(run: Callable[[], object]) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        run()
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------- peaks
def measure_peaks(quick: bool, repeats: int, lstm_rows: int, lstm_in: int, lstm_hidden: int) -> Dict[str, float]:
    """GFLOP/s of the reference kernels the stages are compared with."""
    size = 512 if quick else 2048
    generator = torch.Generator().manual_seed(0)
    peaks = {}
    for name, dtype in (("fp32_gemm", torch.float32), ("bf16_gemm", torch.bfloat16)):
        a = torch.randn(size, size, generator=generator).to(DEVICE, dtype)
        b = torch.randn(size, size, generator=generator).to(DEVICE, dtype)
        peaks[name] = 2 * size**3 / best_seconds(lambda: torch.mm(a, b), repeats) / 1e9
    channels, side = (32, 32) if quick else (128, 64)
    image = torch.randn(2, channels, side, side, generator=generator).to(DEVICE).contiguous(
        memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(DEVICE, memory_format=torch.channels_last).eval()
    peaks["conv2d"] = counted_flops(lambda: conv(image)) / best_seconds(lambda: conv(image), repeats) / 1e9
    # the recurrence: each step multiplies the previous hidden state [windows, H] by W_hh [H, 4H], one after the
    # other (the input projection of all steps is one large GEMM and is held to the fp32 GEMM peak instead)
    h = torch.randn(lstm_rows, lstm_hidden, generator=generator).to(DEVICE)
    w = torch.randn(lstm_hidden, 4 * lstm_hidden, generator=generator).to(DEVICE)
    steps = 64

    def recurrence() -> None:
        for _ in range(steps):
            torch.mm(h, w)

    peaks["lstm_recurrence"] = steps * 2 * h.shape[0] * h.shape[1] * w.shape[1] / best_seconds(recurrence, repeats) / 1e9
    return peaks


# ---------------------------------------------------------------------------------------------- stages
def lstm_hand_flops(lstm: torch.nn.LSTM, rows: int, steps: int) -> Dict[str, int]:
    """FLOPs of the gate GEMMs (2 per multiply-add), split into the input projection (4 gates x hidden x input
    per row and step: one large GEMM over all steps) and the recurrence (4 x hidden x hidden per row and step,
    sequential). Counted by hand: the counter sees none of a fused LSTM kernel and only part of ATen's."""
    directions = 2 if lstm.bidirectional else 1
    projection = recurrence = 0
    for layer in range(lstm.num_layers):
        width = lstm.input_size if layer == 0 else directions * lstm.hidden_size
        projection += directions * steps * rows * 2 * 4 * lstm.hidden_size * width
        recurrence += directions * steps * rows * 2 * 4 * lstm.hidden_size * lstm.hidden_size
    return {"projection": projection, "recurrence": recurrence}


def fft_hand_flops(frames: int, n_fft: int = 512) -> int:
    """A real FFT of n points is about 2.5 n log2 n FLOPs (half a complex FFT's 5 n log2 n)."""
    return int(frames * 2.5 * n_fft * math.log2(n_fft))


def measure_stages(model: SemantiCodecModel, windows: int, steps: int, repeats: int,
                   decoder_peak: str = "fp32_gemm", decoder_conv_peak: str = "conv2d") -> List[Dict[str, object]]:
    config = model.config
    extractor = SemantiCodecFeatureExtractor()
    generator = torch.Generator().manual_seed(0)
    audio = (0.1 * torch.randn(windows * config.window_samples - 1, generator=generator)).numpy()
    encoder, quantizer, decoder = model.encoder, model.quantizer, model.decoder
    rows: List[Dict[str, object]] = []

    def stage(name: str, run: Callable[[], object], peak: str, extra_flops: int = 0, note: str = "",
              flops: Optional[int] = None) -> None:
        """Time `run`; its FLOPs are counted (plus `extra_flops`) unless given as `flops`."""
        flops = counted_flops(run) + extra_flops if flops is None else flops
        seconds = best_seconds(run, repeats)
        rows.append({"stage": name, "flops": flops, "seconds": seconds, "peak": peak, "note": note})

    fbank_frames = windows * config.window_frames
    stage("fbank", lambda: extractor(audio, sampling_rate=16000, device=DEVICE), "fp32_gemm",
          fft_hand_flops(fbank_frames), "FFT + mel GEMM over short frames: memory-bound")
    features = extractor(audio, sampling_rate=16000)["input_features"].reshape(windows, config.window_frames, -1)
    features = features.to(DEVICE)
    stage("audiomae", lambda: encoder.audiomae_features(features), "fp32_gemm")
    with torch.inference_mode():
        hidden = encoder.audiomae_features(features)
        frames = encoder.pool(hidden)
        semantic = quantizer.semantic.embed(quantizer.semantic(frames))
        lstm_input = torch.cat([frames, semantic], dim=-1)
        kernel = resolve_kernel(encoder.lstm_kernel, encoder.lstm, lstm_input) if DEVICE.type == "cpu" else "cudnn"
    stage("pool_semantic", lambda: quantizer.semantic(encoder.pool(hidden)), "fp32_gemm",
          note="one GEMM + argmin over the centroids")

    def run_lstm() -> torch.Tensor:
        if DEVICE.type != "cpu":  # cuDNN: no kernel choice
            return encoder.lstm(lstm_input)[0]
        with lstm_kernel(kernel):
            return encoder.lstm(lstm_input)[0]

    lstm_flops = lstm_hand_flops(encoder.lstm, windows, lstm_input.shape[1])
    stage("bilstm", run_lstm, "lstm", flops=sum(lstm_flops.values()),
          note=f"{kernel} kernel; bound: projection at the GEMM peak + recurrence at the per-step GEMM rate")
    rows[-1]["lstm_flops"] = lstm_flops
    with torch.inference_mode():
        lstm_output = run_lstm()
    stage("acoustic_vq", lambda: quantizer.acoustic(encoder.output_linear(lstm_output)), "fp32_gemm")

    with torch.inference_mode():
        acoustic = quantizer.acoustic(encoder.output_linear(lstm_output))
        conditioning = quantizer.codes_to_conditioning(quantizer.semantic(frames), acoustic)
    latents = torch.randn(windows, *decoder.latent_shape, generator=generator).to(DEVICE)
    doubled_latents = torch.cat([latents, latents])
    context = torch.cat([torch.zeros_like(conditioning), conditioning])
    timestep = torch.full((2 * windows,), 500, device=DEVICE)
    stage("unet", lambda: decoder.predict_v(doubled_latents, timestep, context), decoder_peak,
          note="both guidance halves in one batch")
    stage("vae_decode", lambda: decoder.latents_to_mel(latents), decoder_conv_peak)
    with torch.inference_mode():
        mel = decoder.latents_to_mel(latents)
    stage("vocoder", lambda: decoder.mel_to_waveform(mel), decoder_conv_peak, note="1-D convolutions run as 2-D")

    parts = {row["stage"]: row for row in rows}
    codes = torch.stack([quantizer.semantic(frames), acoustic], dim=1).reshape(windows, 2, -1)
    decode_flops = steps * parts["unet"]["flops"] + parts["vae_decode"]["flops"] + parts["vocoder"]["flops"]
    synchronize()
    started = time.perf_counter()
    model.decode(codes, num_inference_steps=steps, seed=0)
    synchronize()
    rows.append({"stage": f"decode_ddim{steps}", "flops": decode_flops, "seconds": time.perf_counter() - started,
                 "peak": decoder_peak, "note": "FLOPs: the sum of its UNet, VAE and vocoder calls"})
    return rows


def main(argv: Optional[List[str]] = None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model and small peaks (a smoke test)")
    parser.add_argument("--token-rate", type=int, choices=[25, 50, 100], default=100)
    parser.add_argument("--windows", type=int, default=1, help="10.24 s windows per stage call")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps of the whole decode")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per stage (the fastest is kept)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--decoder-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="precision of the UNet, VAE and vocoder (their peaks: fp32 or bf16 GEMM)")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    threads = use_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.manual_seed(0)
    if args.quick:
        model = SemantiCodecModel.tiny(token_rate=args.token_rate).eval()
        args.steps, args.repeats = min(args.steps, 2), 1
    else:
        model = SemantiCodecModel(SemantiCodecConfig.from_variant(args.token_rate, 8192)).eval()
    model = model.to(DEVICE)
    if args.decoder_dtype != "float32":
        model.set_decoder_dtype(args.decoder_dtype)
    lstm = model.encoder.lstm
    peaks = measure_peaks(args.quick, args.repeats, args.windows, lstm.input_size, lstm.hidden_size)
    # a bfloat16/float16 decoder is compared with the bf16 GEMM peak (its convolutions too: no bf16 conv peak here)
    low = args.decoder_dtype != "float32"
    rows = measure_stages(model, args.windows, args.steps, args.repeats, "bf16_gemm" if low else "fp32_gemm",
                          "bf16_gemm" if low else "conv2d")
    # the LSTM's bound mixes two kernels: the time both parts would take at their peaks gives its effective peak
    split = next(row["lstm_flops"] for row in rows if row["stage"] == "bilstm")
    bound = split["projection"] / peaks["fp32_gemm"] + split["recurrence"] / peaks["lstm_recurrence"]
    peaks["lstm"] = sum(split.values()) / bound
    size = "tiny" if args.quick else "full"
    machine = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"{cpu_model_name()}, {threads} threads"
    print(f"{machine}, torch {torch.__version__}, {size} {args.token_rate} tokens/s, {args.windows} window(s), "
          f"decoder {args.decoder_dtype}")
    for name, value in peaks.items():
        print(f"ROOFLINE_PEAK name={name} gflops={value:.6g}")
    print("\n| stage | GFLOP | s | GFLOP/s | peak (GFLOP/s) | fraction | note |\n|---|---|---|---|---|---|---|")
    lines = []
    for row in rows:
        achieved = row["flops"] / row["seconds"] / 1e9
        fraction = achieved / peaks[row["peak"]]
        row.update(gflops=achieved, fraction=fraction, peak_gflops=peaks[row["peak"]])
        print(f"| {row['stage']} | {row['flops'] / 1e9:.2f} | {row['seconds']:.3f} | {achieved:.1f} | "
              f"{row['peak']} ({peaks[row['peak']]:.0f}) | {100 * fraction:.0f} % | {row['note']} |")
        lines.append(f"ROOFLINE stage={row['stage']} gflop={row['flops'] / 1e9:.6g} seconds={row['seconds']:.6g} "
                     f"gflops={achieved:.6g} peak={row['peak']} peak_gflops={peaks[row['peak']]:.6g} "
                     f"fraction={fraction:.6g}")
    print()
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

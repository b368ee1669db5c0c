#!/usr/bin/env python
"""Encode and decode speed of the codec on this machine, as ratios measured side by side in one run.

For each token rate: encode and decode real-time factors (seconds of audio per second of compute) at batch 1
and batch 16 (clips of one 10.24 s window), their ratio, and decode time per window for each sampler / step
count. `--size full` builds the published architecture with random weights (speed does not depend on the
values; slow: a 50-step DDIM window takes minutes on 2 CPU cores); `--size tiny` (default) measures the
pipeline around a small random model. One parseable line per token rate:

    CODEC_SPEED size=tiny token_rate=100 enc_b1_x=... enc_b16_x=... enc_ratio=... dec_b1_x=... dec_b16_x=... dec_ratio=...
    CODEC_SAMPLERS size=tiny token_rate=100 ddim50_s=... ddim10_s=... dpmsolver++10_s=... ddim50_bfloat16_s=...
        ... fastest_speedup=...

Decode times per sampler are given for each `--decoder-dtypes` precision (float32, the original's, and the
opt-in bfloat16 networks, fast on CPUs with AMX and on recent GPUs).

examples:
  python benchmarks/codec_speed.py                                   # tiny, all token rates, quick
  python benchmarks/codec_speed.py --size full --token-rates 100 --clips 4 --batch 4 --decode-steps 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenize_throughput import synthetic_clips  # noqa: E402

SR = 16000
WINDOW_SECONDS = 10.0  # one decoder window per clip (10.24 s would round up to two)


def build(size: str, token_rate: int):
    from semanticodec_hf import SemantiCodecConfig, SemantiCodecFeatureExtractor, SemantiCodecModel

    torch.manual_seed(0)
    if size == "tiny":
        return SemantiCodecModel.tiny(token_rate=token_rate), SemantiCodecFeatureExtractor()
    config = SemantiCodecConfig.from_variant(token_rate=token_rate, semantic_vocab_size=8192)
    return SemantiCodecModel(config).eval(), SemantiCodecFeatureExtractor()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer read afterwards includes it (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encode_rate(model, extractor, clips, batch: int) -> float:
    """Seconds of audio per second, front end included, `batch` clips per call (all windows in one pass)."""
    device = model.device
    started = time.perf_counter()
    for start in range(0, len(clips), batch):
        features = extractor(clips[start:start + batch], sampling_rate=SR)
        with torch.inference_mode():
            model.encode(features["input_features"].to(device),
                         input_features_mask=features["input_features_mask"].to(device),
                         num_samples=features["num_samples"])
    synchronize(device)
    return len(clips) * WINDOW_SECONDS / (time.perf_counter() - started)


def decode_rate(model, codes, batch: int, steps: int, sampler: str = "ddim") -> float:
    started = time.perf_counter()
    for start in range(0, codes.shape[0], batch):
        model.decode(codes[start:start + batch], num_inference_steps=steps, sampler=sampler, seed=0)
    synchronize(model.device)
    return codes.shape[0] * WINDOW_SECONDS / (time.perf_counter() - started)


def main(argv: List[str] = None) -> Dict[int, Dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--token-rates", type=int, nargs="+", default=[100, 50, 25])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16, help="the batched measurement (compared with batch 1)")
    parser.add_argument("--decode-steps", type=int, default=10, help="DDIM steps for the batch-1/batch-N decode")
    parser.add_argument("--samplers", nargs="+", default=["ddim:50", "ddim:10", "dpmsolver++:10"],
                        help="sampler:steps pairs timed on one window")
    parser.add_argument("--encode-only", action="store_true", help="skip the decode measurements")
    parser.add_argument("--decoder-dtypes", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16", "float16"],
                        help="decoder precisions timed per sampler (float32 is the original's; bfloat16 is opt-in)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--lstm-kernel", default="auto", choices=["auto", "aten", "onednn"],
                        help="the encoder's CPU LSTM kernel (default: measured per machine and batch)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from semanticodec_hf.cpu_info import describe_cpu

    device = torch.device(args.device)
    print(f"CPU: {describe_cpu()}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"{args.size} models, {args.threads} torch threads, {args.clips} clips x {WINDOW_SECONDS} s; "
          f"batch 1 vs batch {args.batch}")
    results = {}
    for token_rate in args.token_rates:
        model, extractor = build(args.size, token_rate)
        model = model.to(device)
        clips = synthetic_clips(args.clips, WINDOW_SECONDS, SR)
        model.encoder.lstm_kernel = args.lstm_kernel
        encode_rate(model, extractor, clips[:1], 1)  # warm-up (and the "auto" kernel choice for each batch size)
        encode_rate(model, extractor, clips[:args.batch], args.batch)
        enc1 = encode_rate(model, extractor, clips, 1)
        kernel1 = model.encoder.last_lstm_kernel
        enc_n = encode_rate(model, extractor, clips, args.batch)
        kernels = f"lstm_b1={kernel1} lstm_b{args.batch}={model.encoder.last_lstm_kernel}"
        print(f"token rate {token_rate}: LSTM kernel {kernel1} at batch 1, {model.encoder.last_lstm_kernel} at "
              f"batch {args.batch} (requested {args.lstm_kernel})")
        if args.encode_only:
            print(f"token rate {token_rate}: encode {enc1:.3f}x / {enc_n:.3f}x real time (batch 1 / {args.batch}, "
                  f"ratio {enc_n / enc1:.2f})")
            print(f"CODEC_SPEED size={args.size} token_rate={token_rate} enc_b1_x={enc1:.3f} "
                  f"enc_b{args.batch}_x={enc_n:.3f} enc_ratio={enc_n / enc1:.2f} {kernels}")
            results[token_rate] = {"enc_b1_x": enc1, "enc_bN_x": enc_n}
            continue
        features = extractor(clips, sampling_rate=SR)
        with torch.inference_mode():
            codes = model.encode(features["input_features"].to(device), num_samples=features["num_samples"]).audio_codes
        dec1 = decode_rate(model, codes, 1, args.decode_steps)
        dec_n = decode_rate(model, codes, args.batch, args.decode_steps)
        row = {"enc_b1_x": enc1, "enc_bN_x": enc_n, "dec_b1_x": dec1, "dec_bN_x": dec_n}
        print(f"token rate {token_rate}: encode {enc1:.2f}x / {enc_n:.2f}x real time (batch 1 / {args.batch}, "
              f"ratio {enc_n / enc1:.2f}); decode ({args.decode_steps} DDIM steps) {dec1:.3f}x / {dec_n:.3f}x "
              f"(ratio {dec_n / dec1:.2f})")
        print(f"CODEC_SPEED size={args.size} token_rate={token_rate} enc_b1_x={enc1:.3f} enc_b{args.batch}_x={enc_n:.3f} "
              f"enc_ratio={enc_n / enc1:.2f} dec_b1_x={dec1:.4f} dec_b{args.batch}_x={dec_n:.4f} "
              f"dec_ratio={dec_n / dec1:.2f} {kernels}")
        timings = {}
        # float32 first whatever the order given: converting to bfloat16 is lossy and in place
        for dtype in sorted(set(args.decoder_dtypes), key=lambda name: name != "float32"):
            model.set_decoder_dtype(dtype)
            suffix = "" if dtype == "float32" else f"@{dtype}"
            for spec in args.samplers:
                sampler, steps = spec.split(":")
                timings[spec + suffix] = WINDOW_SECONDS / decode_rate(model, codes[:1], 1, int(steps), sampler)
        reference = timings.get("ddim:50")
        fastest = min(timings.values())
        print("  seconds per window: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
        print(f"CODEC_SAMPLERS size={args.size} token_rate={token_rate} "
              + " ".join(f"{k.replace(':', '').replace('@', '_')}_s={v:.3f}" for k, v in timings.items())
              + (f" fastest_speedup={reference / fastest:.2f}" if reference else ""))
        if device.type == "cuda":
            print(f"CODEC_GPU_MEMORY token_rate={token_rate} peak_allocated_gib="
                  f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}")
        results[token_rate] = {**row, **{f"{k}_s": v for k, v in timings.items()}}
    return results


if __name__ == "__main__":
    main()

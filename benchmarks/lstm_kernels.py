#!/usr/bin/env python
"""The encoder's BiLSTM on this CPU: oneDNN's fused kernel (PyTorch's default) vs ATen's recurrence vs the
"auto" choice our encoder makes (semanticodec_hf.lstm_kernels), measured side by side in one run.

For each batch size (10.24 s windows per call) of the full-size LSTM of a token rate (random weights; speed does
not depend on their values): seconds per window of the LSTM alone with each kernel, the kernel "auto" picked
and what its calibration cost (once per machine and batch bucket, then cached), and the ratio auto / default
that the issue's target bounds (<= 1.25). `--encoder` also times the whole full-size encoder per window with each
kernel. One parseable line per batch:

    LSTM_KERNELS token_rate=100 batch=1 aten_s=... onednn_s=... auto=onednn auto_s=... auto_vs_default=...
        calibration_s=... [encoder_aten_s=... encoder_onednn_s=...]

examples:
  python benchmarks/lstm_kernels.py                          # 100 tokens/s, batches 1 4 16
  python benchmarks/lstm_kernels.py --token-rate 25 --batches 1 4 --encoder
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

from semanticodec_hf import SemantiCodecConfig
from semanticodec_hf.cpu_info import describe_cpu
from semanticodec_hf.lstm_kernels import KERNELS, LstmKernelChooser, lstm_kernel, resolve_kernel
from semanticodec_hf.modeling_semanticodec_encoder import SemantiCodecEncoder
from semanticodec_hf.modeling_semanticodec_quantizer import SemantiCodecQuantizer


def timed(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: List[str] = None) -> Dict[int, Dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token-rate", type=int, default=100, choices=[25, 50, 100])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=2, help="keep the fastest of N timings per kernel")
    parser.add_argument("--encoder", action="store_true", help="also time the whole encoder per window")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"CPU: {describe_cpu()}", flush=True)

    config = SemantiCodecConfig.from_variant(args.token_rate, 8192)
    torch.manual_seed(0)
    encoder, quantizer = SemantiCodecEncoder(config).eval(), SemantiCodecQuantizer(config)
    with torch.no_grad():
        quantizer.semantic.centroids.normal_()
        quantizer.acoustic.codebook.normal_()
    lstm, steps = encoder.lstm, config.frames_per_window
    print(f"full-size {args.token_rate} tokens/s BiLSTM: {lstm.num_layers} layers, {lstm.hidden_size} units, "
          f"{steps} steps per window", flush=True)
    results = {}
    with torch.inference_mode(), tempfile.TemporaryDirectory() as cache:
        for batch in args.batches:
            x = torch.randn(batch, steps, lstm.input_size)
            row: Dict[str, float] = {}
            for kernel in KERNELS:
                with lstm_kernel(kernel):
                    lstm(x[:, :8])  # warm-up: primitive creation
                    row[f"{kernel}_s"] = timed(lambda: lstm(x), args.repeats) / batch
            chooser = LstmKernelChooser(Path(cache) / "lstm_kernels.json")  # empty: "auto" measures now
            started = time.perf_counter()
            choice = resolve_kernel("auto", lstm, x, chooser)
            calibration = time.perf_counter() - started
            auto_s = row[f"{choice}_s"]
            line = (f"LSTM_KERNELS token_rate={args.token_rate} batch={batch} aten_s={row['aten_s']:.3f} "
                    f"onednn_s={row['onednn_s']:.3f} auto={choice} auto_s={auto_s:.3f} "
                    f"auto_vs_default={auto_s / row['onednn_s']:.2f} calibration_s={calibration:.2f}")
            if args.encoder:
                windows = torch.randn(batch, config.window_frames, config.num_mel_bins)
                for kernel in KERNELS:
                    encoder.lstm_kernel = kernel
                    encoder(windows[:1], quantizer)
                    row[f"encoder_{kernel}_s"] = timed(lambda: encoder(windows, quantizer), args.repeats) / batch
                    line += f" encoder_{kernel}_s={row[f'encoder_{kernel}_s']:.3f}"
            print(f"batch {batch}: seconds per window, LSTM alone: ATen {row['aten_s']:.3f}, oneDNN "
                  f"{row['onednn_s']:.3f}; auto picked {choice} ({auto_s / row['onednn_s']:.2f}x the default; "
                  f"its one-off calibration took {calibration:.2f} s)", flush=True)
            print(line, flush=True)
            results[batch] = dict(row, auto=choice, calibration_s=calibration)
    return results


if __name__ == "__main__":
    main()

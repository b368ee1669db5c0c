#!/usr/bin/env python
"""Throughput of audio -> LM ids (feature extraction + codec encode + pattern) on this machine.

Reports hours of audio tokenized per hour of compute for batch size 1 and batch size 16, and their ratio.
Default: the RANDOM tiny codec (measures the pipeline, not the real encoder's cost); `--model PATH` for a real
one. The last line is a parseable summary:

    SUMMARY model=tiny threads=1 clip_seconds=10.0 bs1_x=... bs16_x=... speedup=...

examples:
  python benchmarks/tokenize_throughput.py
  python benchmarks/tokenize_throughput.py --model ./semanticodec-100tps-8192 --clips 32 --threads 2
"""

from __future__ import annotations

import argparse
import time
from typing import List, Optional

import numpy as np


def synthetic_clips(count: int, seconds: float, sampling_rate: int, seed: int = 0) -> List[np.ndarray]:
    """Speech-like clips: a gliding tone with a 4 Hz envelope plus a little noise (content does not matter)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    clips = []
    for _ in range(count):
        f0 = rng.uniform(100, 300)
        tone = np.sin(2 * np.pi * (f0 * t + 40 * np.sin(2 * np.pi * 0.5 * t)))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6.3))
        clips.append((0.3 * tone * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return clips


def measure(tokenizer, clips: List[np.ndarray], sampling_rate: int, batch_size: int) -> float:
    """Seconds of audio per second of wall time, tokenizing `clips` in batches of `batch_size`."""
    tokenizer(clips[:batch_size], sampling_rate=sampling_rate)  # warm-up (allocations, kernels)
    started = time.perf_counter()
    for start in range(0, len(clips), batch_size):
        tokenizer(clips[start : start + batch_size], sampling_rate=sampling_rate)
    elapsed = time.perf_counter() - started
    return sum(c.size for c in clips) / sampling_rate / elapsed


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="tokenizer or converted codec folder / Hub id (default: RANDOM tiny codec)")
    parser.add_argument("--clips", type=int, default=32, help="clips per measurement (multiple of 16 is fairest)")
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="length of each clip (one 10.24 s window)")
    parser.add_argument("--sampling-rate", type=int, default=16000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch

    from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

    torch.set_num_threads(args.threads)
    if args.model:
        tokenizer = SemantiCodecAudioTokenizer.from_pretrained(args.model, device=args.device)
        name = args.model
    else:
        tokenizer = SemantiCodecAudioTokenizer.tiny()
        tokenizer.model.to(args.device)
        name = "tiny"
        print("model: RANDOM tiny codec (pipeline cost only; pass --model PATH for the real encoder)")
    config = tokenizer.model.config
    print(f"codec: {config.variant_name}, device {args.device}, {args.threads} torch thread(s), "
          f"{args.clips} clips x {args.clip_seconds} s at {args.sampling_rate} Hz")
    clips = synthetic_clips(args.clips, args.clip_seconds, args.sampling_rate)
    results = {}
    for batch_size in (1, 16):
        results[batch_size] = measure(tokenizer, clips, args.sampling_rate, batch_size)
        print(f"batch size {batch_size:>2}: {results[batch_size]:.1f} h of audio per compute hour "
              f"({results[batch_size]:.1f}x real time)")
    speedup = results[16] / results[1]
    print(f"batch 16 / batch 1: {speedup:.2f}x")
    print(f"SUMMARY model={name} threads={args.threads} clip_seconds={args.clip_seconds} "
          f"bs1_x={results[1]:.2f} bs16_x={results[16]:.2f} speedup={speedup:.2f}")
    return {"model": name, "bs1": results[1], "bs16": results[16], "speedup": speedup}


if __name__ == "__main__":
    main()

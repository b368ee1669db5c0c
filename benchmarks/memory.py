#!/usr/bin/env python
"""Peak memory of encoding and decoding long audio: RSS above the loaded model, per duration and direction.

Each measurement runs in a fresh process (so peaks do not mix): load the codec, note the RSS, then encode N
minutes of synthetic audio (at once, or streamed in fbank blocks: `encode-stream`) or decode their codes (at once,
or streamed in window chunks: `stream`), and report the peak RSS minus the loaded RSS.
`--size tiny` (default) uses a small random model (the pipeline's own buffers: features, codes, latents,
waveforms); `--size full` the published architecture with random weights (decoding an hour at full size takes
hours on a CPU). One parseable line per measurement:

    MEMORY size=tiny token_rate=100 direction=encode minutes=10 peak_above_model_gb=...

examples:
  python benchmarks/memory.py --minutes 10 60 --steps 1
  python benchmarks/memory.py --size full --minutes 10 --directions encode
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from typing import List


def rss_gb() -> float:
    """Current resident set size from /proc (Linux), in GB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 1e9


def _swap(pair):
    num_samples, blocks = pair
    return blocks, num_samples


def child(size: str, token_rate: int, direction: str, minutes: float, steps: int) -> None:
    import numpy as np
    import torch

    from semanticodec_hf import SemantiCodecConfig, SemantiCodecFeatureExtractor, SemantiCodecModel

    torch.manual_seed(0)
    if size == "tiny":
        model = SemantiCodecModel.tiny(token_rate=token_rate)
    else:
        model = SemantiCodecModel(SemantiCodecConfig.from_variant(token_rate=token_rate, semantic_vocab_size=8192))
    config, extractor = model.config, SemantiCodecFeatureExtractor()
    model.eval()
    rate = config.sampling_rate
    samples = int(minutes * 60 * rate)
    rng = np.random.default_rng(0)
    codes = None
    if direction in ("decode", "stream"):  # codes made up front (their size is negligible), then measure decoding alone
        frames = int(samples / rate * config.frame_rate)
        codes = torch.stack([torch.from_numpy(rng.integers(0, config.semantic_vocab_size, frames)),
                             torch.from_numpy(rng.integers(0, config.acoustic_codebook_size, frames))])[None]
    loaded = rss_gb()
    with torch.inference_mode():
        if direction == "encode":
            audio = 0.1 * rng.standard_normal(samples, dtype=np.float32)
            features = extractor(audio, sampling_rate=rate)
            model.encode(features["input_features"], input_features_mask=features["input_features_mask"],
                         num_samples=features["num_samples"])
        elif direction == "encode-stream":  # what the CLI does for long files: fbank blocks consumed as they come
            audio = 0.1 * rng.standard_normal(samples, dtype=np.float32)
            model.encode_stream(*_swap(extractor.iter_features(audio, sampling_rate=rate)))
        elif direction == "decode":
            model.decode(codes, num_inference_steps=steps, seed=0)
        else:  # what the CLI does for long files: window chunks decoded and handed on (here: dropped)
            for _ in model.decode_stream(codes[0], num_inference_steps=steps, seed=0, windows_per_chunk=4):
                pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB
    print(json.dumps({"loaded_gb": loaded, "peak_gb": peak}))


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--token-rate", type=int, default=100)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    parser.add_argument("--directions", nargs="+", default=["encode", "decode"], choices=["encode", "encode-stream", "decode", "stream"])
    parser.add_argument("--steps", type=int, default=1, help="DDIM steps when decoding (memory does not depend on it)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        size, rate, direction, minutes, steps = args.child
        child(size, int(rate), direction, float(minutes), int(steps))
        return
    for direction in args.directions:
        for minutes in args.minutes:
            run = subprocess.run([sys.executable, __file__, "--child", args.size, str(args.token_rate), direction,
                                  str(minutes), str(args.steps)], capture_output=True, text=True)
            if run.returncode != 0:
                print(f"{direction} {minutes} min failed:\n{run.stderr[-2000:]}")
                continue
            numbers = json.loads(run.stdout.strip().splitlines()[-1])
            above = numbers["peak_gb"] - numbers["loaded_gb"]
            print(f"{direction:13s} {minutes:5.0f} min: model loaded {numbers['loaded_gb']:.2f} GB, peak "
                  f"{numbers['peak_gb']:.2f} GB, {above:.2f} GB above the model")
            print(f"MEMORY size={args.size} token_rate={args.token_rate} direction={direction} minutes={minutes:g} "
                  f"peak_above_model_gb={above:.3f}")


if __name__ == "__main__":
    main()

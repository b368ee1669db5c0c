#!/usr/bin/env python
"""What sharing the CPU costs: the same `semanticodec-hf roundtrip --tiny` job alone, then two copies at once with
every thread each (the default), then two copies at once with `--threads` giving each its share of the cores.

Each job is a fresh process (as a user runs them), timed from start to exit, so model loading, the encoder's
one-off LSTM kernel calibration and the first oneDNN kernel set-ups are included. The last line is parseable:

    SUMMARY cpus=2 alone_s=... together_default_s=... together_shared_s=... slowdown_default=... slowdown_shared=...

(slowdown = the slower of the two concurrent jobs / the job alone).

examples:
  python benchmarks/shared_cpu.py
  python benchmarks/shared_cpu.py --seconds 5 --steps 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import soundfile as sf

from semanticodec_hf.cpu_threads import available_cpus


def run_together(commands: List[List[str]], env: dict) -> List[float]:
    """Start every command at once; the wall seconds of each, from the common start to its exit."""
    started = time.perf_counter()
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for command in commands]
    seconds = []
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a job failed ({process.returncode}):\n{err.decode()[-2000:]}")
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the test clip")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of the decode")
    args = parser.parse_args(argv)
    cpus = available_cpus()
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.wav"
        t = np.arange(int(args.seconds * 16000)) / 16000
        sf.write(str(clip), (0.3 * np.sin(2 * np.pi * 220 * t * (1 + t))).astype(np.float32), 16000)

        def job(name: str, *extra: str) -> List[str]:
            return [sys.executable, "-m", "semanticodec_hf.cli", "roundtrip", str(clip), str(Path(folder) / name),
                    "--tiny", "--quiet", "--steps", str(args.steps), *extra]

        run_together([job("warm.wav")], env)  # first start: imports and the LSTM kernel cache, not timed
        alone = run_together([job("alone.wav")], env)[0]
        default = max(run_together([job("a.wav"), job("b.wav")], env))
        share = str(max(1, cpus // 2))
        shared = max(run_together([job("c.wav", "--threads", share), job("d.wav", "--threads", share)], env))
    print(f"{cpus} CPUs; one job alone: {alone:.1f} s")
    print(f"two jobs at once, every thread each: {default:.1f} s ({default / alone:.2f}x the job alone)")
    print(f"two jobs at once, --threads {share} each: {shared:.1f} s ({shared / alone:.2f}x the job alone)")
    print(f"SUMMARY cpus={cpus} alone_s={alone:.2f} together_default_s={default:.2f} together_shared_s={shared:.2f} "
          f"slowdown_default={default / alone:.2f} slowdown_shared={shared / alone:.2f}")


if __name__ == "__main__":
    main()

"""How many CPU threads a job uses: the `--threads N` option of every command and recipe.

PyTorch starts as many OpenMP threads as the machine has cores, whatever else runs there. When two such jobs
share the cores, their threads wait for each other at every parallel region (OpenMP workers spin while they
wait), so a job that takes half a minute alone can take several minutes next to another. Giving each job its
share of the cores (`--threads`) avoids that; the default is `OMP_NUM_THREADS` when it is set (the usual way
to pin a job's threads), else every CPU this process may use.
Torch-free at import: the command line builds its parser without torch.
"""

from __future__ import annotations

import argparse
import os
from typing import Callable, Optional


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what `taskset`, cgroups cpusets and batch schedulers
    leave it), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity call on macOS and Windows
        return os.cpu_count() or 1


def default_threads() -> int:
    """`OMP_NUM_THREADS` when it holds a positive integer, else `available_cpus()`."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else available_cpus()


def positive_int_argument(what: str) -> Callable[[str], int]:
    """An argparse `type` for a whole number >= 1, whose errors name `what` it counts: "expected a positive
    {what}, got 'x'". Lives here, below `cli_options`, so that `--threads` and the command line's counts
    (`--batch-size`, `--steps`) share one parser and the recipes' `--threads` stays free of the command line."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {value}")
        return value

    parse.__name__ = f"positive {what}"  # what argparse would name in its own messages
    return parse


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """`--threads N` (default: `default_threads()`); pass the parsed value to `use_threads`."""
    parser.add_argument(
        "--threads", type=positive_int_argument("number of threads"), default=None, metavar="N",
        help=f"CPU threads for torch (default: OMP_NUM_THREADS if set, else the CPUs this process may use; "
             f"{default_threads()} here). When several jobs share a machine, give each its share of the cores: "
             "oversubscribed threads spin against each other and everything runs many times slower",
    )


def use_threads(threads: Optional[int] = None) -> int:
    """Make torch use `threads` CPU threads (None: `default_threads()`) for its operators and, where it can still
    be set, for inter-op work; returns the count."""
    import torch

    count = int(threads or default_threads())
    if count < 1:
        raise ValueError(f"threads must be at least 1, got {threads}.")
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(count)
    except RuntimeError:  # settable once per process, before any inter-op work: later calls are refused
        pass
    return count

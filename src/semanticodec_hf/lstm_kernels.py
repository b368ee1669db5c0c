"""Which CPU kernel runs the encoder's BiLSTM, chosen by measuring both on the running machine.

On a CPU PyTorch runs `nn.LSTM` through oneDNN's fused RNN primitive ("onednn", its default) unless oneDNN is
switched off, when ATen's own recurrence runs instead ("aten": one GEMM per step and direction). The maths is
the same and the ids are identical on the parity fixtures either way; the speed is not, and no rule from the
machines measured so far covers the rest: which kernel wins differs between CPUs and batch sizes
(`benchmarks/lstm_kernels.py`; the README's table "The encoder's LSTM kernel, per machine"). So the choice is
measured: a few recurrence steps of each kernel on the real input, once per machine and batch-size bucket,
remembered in a small JSON file keyed by CPU model, thread count, PyTorch version and LSTM shape.

Override with `model.encoder.lstm_kernel = "aten" | "onednn"` (default "auto"), or for a whole process with
the environment variable SEMANTICODEC_LSTM_KERNEL (used while the attribute is "auto"). The cache lives in
$SEMANTICODEC_HF_CACHE, else $XDG_CACHE_HOME/semanticodec_hf, else ~/.cache/semanticodec_hf; delete it to
measure again (e.g. after moving a disk image to other hardware with the same CPU name).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import torch
from torch import nn

from .cpu_info import cpu_model_name

logger = logging.getLogger(__name__)

KERNELS = ("aten", "onednn")
CHOICES = ("auto",) + KERNELS
LSTM_KERNEL_ENV = "SEMANTICODEC_LSTM_KERNEL"
CACHE_FILE_NAME = "lstm_kernels.json"
# Steps of the recurrence timed per kernel: enough for the per-step cost to dominate the fixed cost of a call,
# few enough that the calibration (a 4-step warm-up and two timed runs per kernel, ~100 steps in all) costs a
# fraction of one 10 s window's 128-512 steps per layer, once per machine and batch bucket.
CALIBRATION_STEPS = 24
WARM_UP_STEPS = 4
# ATen must win by this margin to replace PyTorch's default: a tie on a noisy machine keeps the default.
ATEN_MARGIN = 0.95


@contextlib.contextmanager
def lstm_kernel(kernel: str) -> Iterator[None]:
    """Run the LSTM calls inside on `kernel`: "aten" switches oneDNN off (only its `enabled` flag, restored on
    exit even after an error); "onednn" leaves PyTorch's dispatch as the caller set it."""
    if kernel not in KERNELS:
        raise ValueError(f"LSTM kernel must be one of {KERNELS}, got {kernel!r}.")
    if kernel == "onednn":
        yield
        return
    # Not `torch.backends.mkldnn.flags()`: it would also reset (and warn about) the TF32 flags.
    was_enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(was_enabled)


def batch_bucket(batch: int) -> int:
    """Windows per call rounded up to a power of two (capped at 64): the key a measured choice is reused for."""
    bucket = 1
    while bucket < batch and bucket < 64:
        bucket *= 2
    return bucket


def cache_path() -> Path:
    root = os.environ.get("SEMANTICODEC_HF_CACHE")
    if root:
        return Path(root) / CACHE_FILE_NAME
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "semanticodec_hf" / CACHE_FILE_NAME


def _time_call(run: Callable[[], object], kernel: str) -> float:
    with lstm_kernel(kernel):
        started = time.perf_counter()
        run()
        return time.perf_counter() - started


def measure_kernels(lstm: nn.LSTM, sample: torch.Tensor, repeats: int = 2) -> Dict[str, float]:
    """Fastest of `repeats` timings of `lstm(sample)` per kernel, after one short untimed warm-up call each
    (primitive creation, first-touch allocations); the kernels alternate so that a drift in load hits both."""
    def run() -> object:
        return lstm(sample)

    def warm_up() -> object:
        return lstm(sample[:, :WARM_UP_STEPS])

    best = {kernel: float("inf") for kernel in KERNELS}
    with torch.inference_mode():
        for kernel in KERNELS:
            _time_call(warm_up, kernel)
        for _ in range(repeats):
            for kernel in KERNELS:
                best[kernel] = min(best[kernel], _time_call(run, kernel))
    return best


class LstmKernelChooser:
    """Measured kernel choices per (machine, LSTM shape, batch bucket), in memory and in a JSON file."""

    def __init__(self, path: Optional[Path] = None):
        self._path = path
        self._choices: Optional[Dict[str, str]] = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path if self._path is not None else cache_path()

    @staticmethod
    def key(lstm: nn.LSTM, batch: int) -> str:
        shape = f"lstm{lstm.input_size}x{lstm.hidden_size}x{lstm.num_layers}{'bi' if lstm.bidirectional else ''}"
        return "|".join([cpu_model_name(), f"{torch.get_num_threads()}threads", f"torch{torch.__version__}",
                         shape, f"batch{batch_bucket(batch)}"])

    def _load(self) -> Dict[str, str]:
        if self._choices is None:
            try:
                data = json.loads(self.path.read_text())
                self._choices = {k: v for k, v in data.items() if v in KERNELS} if isinstance(data, dict) else {}
            except (OSError, ValueError):  # no cache yet, unreadable or corrupt: measure again
                self._choices = {}
        return self._choices

    def _save(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".lstm_kernels.", suffix=".tmp",
                                             delete=False) as handle:
                json.dump(self._choices, handle, indent=1, sort_keys=True)
            os.replace(handle.name, path)
        except OSError as error:  # a read-only home: the choice still holds for this process
            logger.info("could not save the LSTM kernel choice to %s: %s", path, error)

    def choose(self, lstm: nn.LSTM, lstm_input: torch.Tensor) -> str:
        """The kernel for this LSTM and batch: cached, or measured now on the first steps of `lstm_input`."""
        key = self.key(lstm, lstm_input.shape[0])
        with self._lock:
            choices = self._load()
            if key in choices:
                return choices[key]
            sample = lstm_input[:, :CALIBRATION_STEPS].contiguous()
            times = measure_kernels(lstm, sample)
            choice = "aten" if times["aten"] < ATEN_MARGIN * times["onednn"] else "onednn"
            logger.info("LSTM kernel for %s: %s (aten %.3f s, onednn %.3f s for %d steps)", key, choice,
                        times["aten"], times["onednn"], sample.shape[1])
            choices[key] = choice
            self._save()
            return choice

    def forget(self) -> None:
        """Drop the in-memory choices (the file is read again on the next choice)."""
        with self._lock:
            self._choices = None


DEFAULT_CHOOSER = LstmKernelChooser()


def resolve_kernel(requested: str, lstm: nn.LSTM, lstm_input: torch.Tensor,
                   chooser: LstmKernelChooser = DEFAULT_CHOOSER) -> str:
    """The kernel to run: `requested` unless "auto", then SEMANTICODEC_LSTM_KERNEL unless unset or "auto", then
    the measured choice. Bad values raise a ValueError naming where they came from."""
    if requested not in CHOICES:
        raise ValueError(f"lstm_kernel must be one of {CHOICES}, got {requested!r}.")
    if requested != "auto":
        return requested
    from_env = os.environ.get(LSTM_KERNEL_ENV, "auto").strip().lower() or "auto"
    if from_env not in CHOICES:
        raise ValueError(f"{LSTM_KERNEL_ENV}={os.environ[LSTM_KERNEL_ENV]!r} is not one of {CHOICES}.")
    if from_env != "auto":
        return from_env
    return chooser.choose(lstm, lstm_input)


__all__ = [
    "KERNELS",
    "CHOICES",
    "LSTM_KERNEL_ENV",
    "LstmKernelChooser",
    "DEFAULT_CHOOSER",
    "batch_bucket",
    "cache_path",
    "lstm_kernel",
    "measure_kernels",
    "resolve_kernel",
]

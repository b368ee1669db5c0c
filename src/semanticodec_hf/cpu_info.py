"""What the running CPU is and can do: the facts kernel choices and warnings depend on.

PyTorch only reports a coarse capability ("AVX2", "AVX512"), which does not tell an AMX Sapphire Rapids from an
AVX-512 Skylake or say whether bfloat16 arithmetic is native, so Linux's /proc/cpuinfo is read (once).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import FrozenSet, Optional

import torch

# CPU flags that give native bfloat16 dot products (Intel AMX, AVX512-BF16 on Cooper Lake / Zen4 and later).
NATIVE_BFLOAT16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _first_field(name: str) -> Optional[str]:
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_model_name() -> str:
    """E.g. 'AMD EPYC 7B13 64-Core Processor'; the platform's processor string where /proc/cpuinfo is absent."""
    return _first_field("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> Optional[FrozenSet[str]]:
    """The CPU's feature flags, or None where they cannot be read (not Linux)."""
    flags = _first_field("flags")
    return frozenset(flags.split()) if flags is not None else None


def has_native_bfloat16() -> Optional[bool]:
    """True/False on x86 Linux (AMX or AVX512-BF16 present); None where it cannot be told."""
    flags = cpu_flags()
    if flags is None:
        return None
    return bool(flags & NATIVE_BFLOAT16_FLAGS)


def describe_cpu() -> str:
    """One line for benchmark output: model, PyTorch's vector capability, native bfloat16, threads."""
    native = has_native_bfloat16()
    bf16 = "unknown" if native is None else ("yes" if native else "no")
    return (f"{cpu_model_name()} | torch capability {torch.backends.cpu.get_cpu_capability()} | "
            f"native bfloat16 {bf16} | {torch.get_num_threads()} threads")


__all__ = ["cpu_model_name", "cpu_flags", "has_native_bfloat16", "describe_cpu", "NATIVE_BFLOAT16_FLAGS"]

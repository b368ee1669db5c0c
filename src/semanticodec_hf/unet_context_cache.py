"""Cross-attention keys and values of a constant conditioning, computed once per sampling call.

The conditioning does not change across the diffusion steps, yet a UNet call projects it to keys and values in
every cross-attention layer at every step. For the published decoder that is ~12.5 GFLOP per window per call,
about a quarter of a guided DDIM step on a CPU. Within `cache_cross_attention_context(unet)` each cross-attention
`to_k` / `to_v` remembers its output for the tensor it last saw and returns it when given the same tensor
again: the same Linear applied to the same values, so the result is bit-identical to recomputing it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Tuple

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

_MISSING = object()
# One entry per batch chunk of the conditioning; more than this means the inputs are not repeating.
MAX_ENTRIES_PER_PROJECTION = 64


def _memoised(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """`forward` with results remembered per input tensor (same storage, offset, shape, strides, dtype).

    The entry keeps its input alive, so no other tensor can take that memory while the cache exists; the cache
    lives for one sampling call, over conditioning the sampler built itself and never modifies.
    """
    memo: Dict[Tuple, Tuple[torch.Tensor, torch.Tensor]] = {}

    def cached_forward(hidden_states: torch.Tensor) -> torch.Tensor:
        key = (hidden_states.data_ptr(), hidden_states.storage_offset(), tuple(hidden_states.shape),
               hidden_states.stride(), hidden_states.dtype, hidden_states.device)
        entry = memo.get(key)
        if entry is None:
            if len(memo) >= MAX_ENTRIES_PER_PROJECTION:  # inputs that never repeat must not pile up
                memo.pop(next(iter(memo)))
            entry = memo[key] = (hidden_states, forward(hidden_states))
        return entry[1]

    return cached_forward


@contextmanager
def cache_cross_attention_context(unet: nn.Module) -> Iterator[int]:
    """Memoise the context projections of every cross-attention layer of `unet` until the block exits.

    Yields the number of projections patched. Self-attention layers are left alone (their input changes every
    step). Instance-level `forward` overrides (e.g. accelerate hooks) are wrapped and restored as they were.
    """
    patched: List[Tuple[nn.Module, object]] = []
    try:
        for module in unet.modules():
            if isinstance(module, Attention) and module.is_cross_attention:
                for projection in (module.to_k, module.to_v):
                    patched.append((projection, projection.__dict__.get("forward", _MISSING)))
                    projection.forward = _memoised(projection.forward)
        yield len(patched)
    finally:
        for projection, previous in reversed(patched):
            if previous is _MISSING:
                del projection.forward
            else:
                projection.forward = previous

"""Diffusion conditioning of SemantiCodec: frame features + sinusoidal position code.

Shared by the encoder (which builds the tensor while encoding) and the decoder (which rebuilds it from
codes). Kept free of model weights so both sides produce bit-identical tensors from the same features.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

PADDING_VALUE = -1.0


def sinusoidal_positional_encoding(
    max_len: int, dim: int, device: Optional[torch.device] = None
) -> torch.Tensor:
    """Transformer sin/cos table `[max_len, dim]`, float32, sin at even and cos at odd channels.

    Computed on CPU in float32 exactly like the original (frequencies `exp(2i * -(ln 10000 / dim))`),
    then moved, so the table has the same bits on every device.
    """
    if dim % 2:
        raise ValueError(f"positional encoding dim must be even, got {dim}.")
    # int64 arange times a Python float: the product is taken in float32, as in the original.
    frequencies = torch.exp(torch.arange(0, dim, 2) * (-(math.log(10000.0) / dim)))
    angles = torch.arange(max_len).unsqueeze(1) * frequencies  # [max_len, dim/2]
    table = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(max_len, dim)
    return table.to(device) if device is not None else table


def pad_features(features: torch.Tensor, frames_per_window: int) -> torch.Tensor:
    """Pad `[N, n, F]` along time to `[N, frames_per_window, F]` with rows of -1.0 (not masked later)."""
    batch, frames, width = features.shape
    if frames > frames_per_window:
        raise ValueError(f"got {frames} frames for a window of {frames_per_window}.")
    if frames == frames_per_window:
        return features
    padding = features.new_full((batch, frames_per_window - frames, width), PADDING_VALUE)
    return torch.cat([features, padding], dim=1)


def append_positional_encoding(features: torch.Tensor, positional_encoding: torch.Tensor) -> torch.Tensor:
    """`[N, W, F]` ++ the first W rows of the table, repeated over N -> `[N, W, F + P]`."""
    batch, frames, _ = features.shape
    if positional_encoding.shape[0] < frames:
        raise ValueError(f"positional encoding has {positional_encoding.shape[0]} rows, need {frames}.")
    table = positional_encoding[:frames].to(device=features.device, dtype=features.dtype)
    return torch.cat([features, table.unsqueeze(0).expand(batch, -1, -1)], dim=-1)


def build_conditioning(
    features: torch.Tensor, frames_per_window: int, positional_encoding: torch.Tensor
) -> torch.Tensor:
    """Conditional context `[N, W, 2D + P]` from frame features `[N, n, 2D]` (n <= W).

    `features` are `[acoustic ++ semantic]` per frame; rows n..W-1 become -1.0 (the original attends to
    them, its cross-attention mask is all ones), then the position code is appended.
    """
    return append_positional_encoding(pad_features(features, frames_per_window), positional_encoding)


def unconditional_conditioning(conditioning: torch.Tensor, feature_width: int) -> torch.Tensor:
    """Classifier-free-guidance context: `0 * features` (so -1 padding rows become -0.0) ++ the same code."""
    features, code = conditioning[..., :feature_width], conditioning[..., feature_width:]
    return torch.cat([features * 0.0, code], dim=-1)


__all__ = [
    "PADDING_VALUE",
    "sinusoidal_positional_encoding",
    "pad_features",
    "append_positional_encoding",
    "build_conditioning",
    "unconditional_conditioning",
]

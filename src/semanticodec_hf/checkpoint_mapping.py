"""Key mapping from the official checkpoints (`encoder.ckpt`, `decoder.ckpt`, centroid `.npy`) to
`SemantiCodecModel`'s state dict. Written once here; the converter and the parity tests both use it.

Every original key is either mapped or matched by an explicit, commented drop rule; anything
else is an error that names the keys.
"""

from __future__ import annotations

from typing import Dict

import torch


# ------------------------------------------------------------------------------------------ encoder
def map_encoder_state_dict(original: Dict[str, torch.Tensor], semantic_centroids: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Original `encoder.ckpt` keys (+ the centroid array) -> model keys under `encoder.`."""
    raise NotImplementedError


# ------------------------------------------------------------------------------------------ decoder
def map_decoder_state_dict(original: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Original `decoder.ckpt` keys -> model keys under `decoder.`."""
    raise NotImplementedError

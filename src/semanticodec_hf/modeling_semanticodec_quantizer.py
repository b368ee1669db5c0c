"""Quantizer of SemantiCodec: the two codebooks between the encoder's networks and the decoder.

`SemantiCodecQuantizer` holds the semantic k-means centroids and the acoustic VQ codebook (saved buffers) and the
sinusoidal position code (computed from the config, not saved). The encoder assigns ids with it
(`SemantiCodecEncoder.forward(windows, quantizer)`); the decoder side turns ids back into the diffusion
conditioning with `codes_to_features` / `codes_to_conditioning`, without touching the encoder.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .conditioning import append_positional_encoding, build_conditioning, sinusoidal_positional_encoding
from .configuration_semanticodec import SemantiCodecConfig


class SemanticQuantizer(nn.Module):
    """Nearest k-means centroid (squared L2, ties to the lowest index); the centroids are a saved buffer."""

    def __init__(self, vocab_size: int, feature_dim: int):
        super().__init__()
        self.register_buffer("centroids", torch.zeros(vocab_size, feature_dim), persistent=True)

    def forward(self, features: torch.Tensor) -> torch.LongTensor:
        """`[..., D]` -> ids `[...]`, with the original's float order: (|x|^2 + |c|^2) - 2<x, c>."""
        squared_x = features.pow(2).sum(dim=-1, keepdim=True).reshape(-1, 1)  # summed in the caller's layout
        flat = features.reshape(-1, features.shape[-1])
        squared_c = self.centroids.pow(2).sum(dim=-1, keepdim=True).t()
        distances = squared_x + squared_c - 2 * torch.mm(flat, self.centroids.t())
        return distances.argmin(dim=-1).reshape(features.shape[:-1])

    def embed(self, ids: torch.LongTensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.centroids)


class AcousticQuantizer(nn.Module):
    """Euclidean VQ lookup of the acoustic residual (the original's vector-quantize-pytorch eval path).

    The assignment is argmax of `-sqrt(clamp(d2, 1e-8))` rather than argmin of `d2`: the sqrt can merge
    two distinct squared distances, and the original then picks the lower index.
    """

    def __init__(self, codebook_size: int, feature_dim: int):
        super().__init__()
        self.register_buffer("codebook", torch.zeros(codebook_size, feature_dim), persistent=True)

    def forward(self, features: torch.Tensor) -> torch.LongTensor:
        flat = features.reshape(1, -1, features.shape[-1])
        codebook = self.codebook.unsqueeze(0)
        squared_x = flat.pow(2).sum(dim=-1).unsqueeze(-1)
        squared_c = codebook.pow(2).sum(dim=-1).unsqueeze(-2)
        cross = torch.einsum("bid,bjd->bij", flat, codebook) * -2
        distances = (squared_x + squared_c + cross).clamp(min=1e-8).sqrt()
        return (-distances).argmax(dim=-1).reshape(features.shape[:-1])

    def embed(self, ids: torch.LongTensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.codebook)


class SemantiCodecQuantizer(nn.Module):
    """The codebooks of SemantiCodec and the way from ids to the decoder's conditioning.

    `semantic` assigns pooled AudioMAE frames to k-means centroids, `acoustic` the LSTM residual to VQ codewords;
    a frame's conditioning is `[acoustic codeword ++ semantic centroid]` plus the sinusoidal position code.
    State-dict keys: `semantic.centroids` `[V, D]`, `acoustic.codebook` `[8192, D]` (`positional_encoding` is
    computed from the config, not saved).
    """

    def __init__(self, config: SemantiCodecConfig):
        super().__init__()
        self.config = config
        self.semantic = SemanticQuantizer(config.semantic_vocab_size, config.feature_dim)
        self.acoustic = AcousticQuantizer(config.acoustic_codebook_size, config.feature_dim)
        self.register_buffer("positional_encoding", self._compute_positional_encoding(), persistent=False)

    def _compute_positional_encoding(self, device: Optional[torch.device] = None) -> torch.Tensor:
        return sinusoidal_positional_encoding(
            self.config.positional_encoding_max_len, self.config.positional_encoding_dim, device=device
        )

    def reset_computed_buffers(self) -> None:
        """Recompute the position table (not saved; left empty by meta-device or `from_pretrained` loading)."""
        self.positional_encoding = self._compute_positional_encoding(self.semantic.centroids.device)

    def codes_to_features(self, semantic_ids: torch.LongTensor, acoustic_ids: torch.LongTensor) -> torch.Tensor:
        """Ids `[N, n]` -> `[acoustic codeword ++ semantic centroid]` `[N, n, 2D]` (acoustic first)."""
        return torch.cat([self.acoustic.embed(acoustic_ids), self.semantic.embed(semantic_ids)], dim=-1)

    def add_positional_encoding(self, features: torch.Tensor) -> torch.Tensor:
        """Window features `[N, W, 2D]` -> conditioning `[N, W, 2D + P]` (the position code appended)."""
        return append_positional_encoding(features, self.positional_encoding)

    def codes_to_conditioning(self, semantic_ids: torch.LongTensor, acoustic_ids: torch.LongTensor) -> torch.Tensor:
        """Ids of up to one window `[N, n]` (n <= frames_per_window) -> the decoder's conditioning `[N, W, 2D + P]`:
        the features, rows n.. filled with -1.0 as in the original, then the position code."""
        return build_conditioning(
            self.codes_to_features(semantic_ids, acoustic_ids), self.config.frames_per_window, self.positional_encoding
        )


__all__ = ["SemantiCodecQuantizer", "SemanticQuantizer", "AcousticQuantizer"]

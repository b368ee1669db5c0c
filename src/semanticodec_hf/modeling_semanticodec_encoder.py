"""Encoder half of SemantiCodec: normalised fbank windows -> (semantic id, acoustic id) per frame.

One 10.24 s window (1024 fbank frames x 128 mel bins) goes through the AudioMAE ViT, whose patch features
are pooled into W frames; each frame gets a semantic id (nearest k-means centroid) and an acoustic id
(VQ of what a bidirectional LSTM extracts from [feature ++ centroid]). Windows are independent, so any
number of them run as one batch. The codebooks are not here: they belong to `SemantiCodecQuantizer`
(`modeling_semanticodec_quantizer`), which `SemantiCodecEncoder.forward` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from .conditioning import PADDING_VALUE
from .configuration_semanticodec import SemantiCodecConfig
from .lstm_kernels import lstm_kernel, resolve_kernel
from .modeling_semanticodec_quantizer import SemantiCodecQuantizer

# Silence threshold of the original padding detection: unbiased std over the mel bins of one frame.
SILENCE_STD_THRESHOLD = 1e-7


# ------------------------------------------------------------------------------------------- AudioMAE
class AudioMAEAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm layout, keys `qkv`, `proj`)."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=True)
        self.proj = nn.Linear(hidden_size, hidden_size, bias=True)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, heads, tokens, head_dim]
        # Fused attention: the original's softmax(q k^T * scale) v without materialising [N, 12, 513, 513]
        # scores; AudioMAE output stays within 4e-6 of the original's on the parity fixtures, ids identical.
        context = nn.functional.scaled_dot_product_attention(query, key, value, scale=self.scale)
        return self.proj(context.transpose(1, 2).reshape(batch, tokens, width))


class AudioMAEMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.act = nn.GELU()  # exact (erf) GELU
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class AudioMAEBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x)); no dropout or layer scale."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=eps)
        self.attn = AudioMAEAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=eps)
        self.mlp = AudioMAEMLP(hidden_size, intermediate_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.norm1(hidden_states))
        return hidden_states + self.mlp(self.norm2(hidden_states))


class AudioMAEPatchEmbed(nn.Module):
    """Non-overlapping 16x16 patches of the [time, mel] image -> tokens in order 8*time_patch + mel_patch."""

    def __init__(self, patch_size: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(1, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class AudioMAEEncoder(nn.Module):
    """AudioSet AudioMAE ViT-B/16, encoder half only, never masked.

    Own module rather than `transformers.ViTMAEModel`: that class always shuffles tokens unless given a
    batch-sized `noise`, and its parameter names changed between transformers 4 and 5 (saved checkpoints
    would depend on them); these keys equal the original's `audiomae.model.*` minus the prefix.
    Output: the mean of the final LayerNorm applied to the hidden states after `output_layers`
    (blocks 9, 10, 11 for the published models), not the last layer alone.
    """

    def __init__(self, config: SemantiCodecConfig):
        super().__init__()
        hidden = config.audiomae_hidden_size
        grid_t, grid_f = config.patch_grid
        self.output_layers = tuple(config.audiomae_output_layers)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        # Fixed sin-cos table of the original, loaded from the checkpoint (frozen, but a parameter there too).
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_t * grid_f + 1, hidden), requires_grad=False)
        self.patch_embed = AudioMAEPatchEmbed(config.patch_size, hidden)
        self.blocks = nn.ModuleList(
            AudioMAEBlock(hidden, config.audiomae_num_heads, config.audiomae_intermediate_size,
                          config.audiomae_layer_norm_eps)
            for _ in range(config.audiomae_num_layers)
        )
        self.norm = nn.LayerNorm(hidden, eps=config.audiomae_layer_norm_eps)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """`[N, frames, mel]` -> `[N, 1 + patches, hidden]` (row 0 = cls token)."""
        tokens = self.patch_embed(windows.unsqueeze(1)) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        hidden_states = torch.cat([cls, tokens], dim=1)
        outputs = []
        for index, block in enumerate(self.blocks[: max(self.output_layers) + 1]):  # later blocks are unused
            hidden_states = block(hidden_states)
            if index in self.output_layers:
                outputs.append(self.norm(hidden_states))
        return torch.stack(outputs, dim=0).mean(dim=0)


def pool_patches(patches: torch.Tensor, patch_grid: Sequence[int], pooling: Sequence[int]) -> torch.Tensor:
    """Patch tokens `[N, T*F, C]` (cls removed) -> frames `[N, W, pt*pf*C]`, time-major over groups.

    Frame `j = (F/pf) * s + g` concatenates patches `(pt*s + a, pf*g + b)` in order a-major, b-minor,
    e.g. (1, 2) pooling gives `[G[h, 2g] ++ G[h, 2g+1]]`, (2, 2) `[G[2s,2g], G[2s,2g+1], G[2s+1,2g], G[2s+1,2g+1]]`.
    """
    (grid_t, grid_f), (pool_t, pool_f) = patch_grid, pooling
    batch, _, channels = patches.shape
    if pool_t == pool_f == 1:
        return patches
    grid = patches.reshape(batch, grid_t // pool_t, pool_t, grid_f // pool_f, pool_f, channels)
    frames = (grid_t // pool_t) * (grid_f // pool_f)
    pooled = grid.permute(0, 1, 3, 2, 4, 5).reshape(batch, frames, pool_t * pool_f * channels)
    # Same values, but laid out channel-major like the original's tensor: the semantic quantizer sums
    # squares over the channels of this view, and a different memory order changes that sum's last bits.
    return pooled.transpose(1, 2).contiguous().transpose(1, 2)


# --------------------------------------------------------------------------------------------- padding
def padding_cut(windows: torch.Tensor) -> torch.LongTensor:
    """Per window `[N, frames, mel]`: frames kept before trailing silence/padding, `[N]` in 0..frames.

    A frame is silent when the unbiased std over its mel bins is <= 1e-7; the cut is one past the last
    non-silent frame (0 if all are silent). Silence in the middle does not matter.
    """
    non_silent = windows.std(dim=-1) > SILENCE_STD_THRESHOLD
    positions = torch.arange(1, windows.shape[1] + 1, device=windows.device)
    return (non_silent * positions).amax(dim=-1)


def frames_kept(cut: torch.LongTensor, window_frames: int, frames_per_window: int) -> torch.LongTensor:
    """First marked-out frame per window: `ceil(W * cut / window_frames)` (exact integer form)."""
    return (cut * frames_per_window + window_frames - 1) // window_frames


def mark_out_padding(features: torch.Tensor, kept: torch.LongTensor) -> torch.Tensor:
    """Rows `kept[i]..` of item i become exactly -1.0 (the original overwrites, it does not mask)."""
    positions = torch.arange(features.shape[1], device=features.device)
    padded = positions.unsqueeze(0) >= kept.to(features.device).unsqueeze(1)
    return features.masked_fill(padded.unsqueeze(-1), PADDING_VALUE)


# --------------------------------------------------------------------------------------------- encoder
@dataclass
class SemantiCodecEncoderWindowOutput:
    """Codes of N windows: `semantic_ids`, `acoustic_ids` `[N, W]` (int64) and, on request, the encoder's
    diffusion `conditioning` `[N, W, 2D + P]` (-1 rows after the padding cut, position code appended)."""

    semantic_ids: torch.LongTensor
    acoustic_ids: torch.LongTensor
    conditioning: Optional[torch.Tensor] = None


class SemantiCodecEncoder(nn.Module):
    """AudioMAE -> pooling -> semantic VQ; [feature ++ centroid] -> BiLSTM -> linear -> acoustic VQ.

    The networks only: both VQ steps use the `SemantiCodecQuantizer` passed to `forward` (the model's
    `quantizer`), which owns the codebooks and the position code. State-dict keys: `audiomae.*`, `lstm.*`,
    `output_linear.weight`.
    """

    def __init__(self, config: SemantiCodecConfig):
        super().__init__()
        self.config = config
        dim = config.feature_dim
        self.audiomae = AudioMAEEncoder(config)
        self.lstm = nn.LSTM(2 * dim, 2 * dim, num_layers=config.lstm_num_layers, bias=True,
                            batch_first=True, bidirectional=True)
        self.output_linear = nn.Linear(4 * dim, dim, bias=False)
        # CPU kernel of the BiLSTM: "auto" (measured, see `lstm_kernels`), "aten" or "onednn". Not saved.
        self.lstm_kernel = "auto"
        self.last_lstm_kernel: Optional[str] = None  # the kernel the last CPU call ran on (benchmarks report it)

    # ----------------------------------------------------------------------------------------- stages
    def audiomae_features(self, windows: torch.Tensor) -> torch.Tensor:
        """`[N, 1024, 128]` normalised fbank windows -> AudioMAE output `[N, 513, 768]` (cls row first)."""
        self._check_windows(windows)
        return self.audiomae(windows)

    def pool(self, audiomae_output: torch.Tensor) -> torch.Tensor:
        """AudioMAE output `[N, 513, 768]` -> frame features `[N, W, D]` (cls dropped, time-major)."""
        return pool_patches(audiomae_output[:, 1:], self.config.patch_grid, self.config.pooling)

    def _check_windows(self, windows: torch.Tensor) -> None:
        expected = (self.config.window_frames, self.config.num_mel_bins)
        if windows.ndim != 3 or tuple(windows.shape[1:]) != expected:
            raise ValueError(
                f"expected fbank windows of shape (N, {expected[0]}, {expected[1]}), got {tuple(windows.shape)}."
            )

    # ---------------------------------------------------------------------------------------- forward
    def _run_lstm(self, lstm_input: torch.Tensor) -> torch.Tensor:
        """The BiLSTM over `[N, frames, 2D]`. On a CPU it runs on the kernel `lstm_kernel` names ("auto": the
        faster of oneDNN's fused LSTM and ATen's GEMM-per-step recurrence, measured once per machine and batch
        size, see `lstm_kernels`); same maths, ids identical on the parity fixtures with either."""
        if lstm_input.device.type != "cpu":
            return self.lstm(lstm_input)[0]
        kernel = resolve_kernel(self.lstm_kernel, self.lstm, lstm_input)
        self.last_lstm_kernel = kernel
        with lstm_kernel(kernel):
            return self.lstm(lstm_input)[0]

    def forward(
        self, windows: torch.Tensor, quantizer: SemantiCodecQuantizer, return_conditioning: bool = False
    ) -> SemantiCodecEncoderWindowOutput:
        """Encode N independent windows `[N, 1024, 128]` at once (the LSTM restarts for every window), with the
        codebooks of `quantizer` (the model's `SemantiCodecQuantizer`)."""
        self._check_windows(windows)
        config = self.config
        kept = frames_kept(padding_cut(windows), config.window_frames, config.frames_per_window)

        frames = self.pool(self.audiomae(windows))
        semantic_ids = quantizer.semantic(frames)  # on unmarked features, padding rows included
        semantic = quantizer.semantic.embed(semantic_ids)

        lstm_input = mark_out_padding(torch.cat([frames, semantic], dim=-1), kept)
        residual = self.output_linear(self._run_lstm(lstm_input))
        acoustic_ids = quantizer.acoustic(residual)

        conditioning = None
        if return_conditioning:
            features = quantizer.codes_to_features(semantic_ids, acoustic_ids)  # [acoustic ++ semantic]
            conditioning = quantizer.add_positional_encoding(mark_out_padding(features, kept))
        return SemantiCodecEncoderWindowOutput(semantic_ids, acoustic_ids, conditioning)


__all__ = [
    "SemantiCodecEncoder",
    "SemantiCodecEncoderWindowOutput",
    "AudioMAEEncoder",
    "pool_patches",
    "padding_cut",
    "frames_kept",
    "mark_out_padding",
]

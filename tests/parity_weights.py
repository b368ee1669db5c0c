"""Deterministic pseudo-random weights in the ORIGINAL checkpoint layout (shared/parity/WEIGHTS.md).

The parity fixtures were produced by the original implementation with exactly these weights, so
loading them through the package's own key mapping and matching the fixtures proves both the
model maths and the mapping. Manifests (key, shape, dtype, kind) are copied to tests/fixtures.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures"
CODEBOOK_STD = 0.05
CENTROID_STD = 0.05
SCALE_FACTOR = 0.75
FEATURE_DIM = {100: 768, 50: 1536, 25: 3072}
_TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}


def load_manifest(part: str, token_rate: int) -> list:
    """Entries {key, shape, dtype, kind} of `encoder` or `decoder` for a token rate."""
    with gzip.open(FIXTURES / "manifests" / f"{part}_tokenrate_{token_rate}.json.gz", "rt") as f:
        return json.load(f)


def _generator(key: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))


def sincos_pos_embed(width: int, grid_rows: int = 8, grid_cols: int = 64) -> torch.Tensor:
    """The original AudioMAE's fixed 2-D sin-cos table [1, 1 + rows*cols, width], row 0 (cls) zero.

    Built like the reference (float64 numpy, then float32), including its 8 x 64 grid order.
    """
    quarter = width // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    grid_w, grid_h = np.meshgrid(np.arange(grid_cols, dtype=np.float32), np.arange(grid_rows, dtype=np.float32))
    # Reference: grid = meshgrid(grid_w, grid_h) with w first; emb_h from grid[0], emb_w from grid[1].
    def one_axis(pos: np.ndarray) -> np.ndarray:
        out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_axis(grid_w), one_axis(grid_h)], axis=1)
    emb = np.concatenate([np.zeros([1, width]), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


def recipe_tensor(key: str, shape: Iterable[int], dtype: str) -> torch.Tensor:
    """Value of one original-layout tensor by the WEIGHTS.md rules (pos_embed excluded)."""
    shape = tuple(shape)
    torch_dtype = _TORCH_DTYPES[dtype]
    if key.endswith("_codebook.embed") or key.endswith("_codebook.embed_avg"):
        base = key[: -len("_avg")] if key.endswith("_avg") else key
        return torch.randn(shape, generator=_generator(base)) * CODEBOOK_STD
    if key.endswith("num_batches_tracked") or key.endswith("running_mean"):
        return torch.zeros(shape, dtype=torch_dtype)
    if key.endswith("running_var") or key.endswith("initted") or key.endswith("cluster_size"):
        return torch.ones(shape, dtype=torch_dtype)
    if not torch_dtype.is_floating_point:
        return torch.zeros(shape, dtype=torch_dtype)
    g = _generator(key)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=g) * fan_in**-0.5
    if len(shape) == 1 and key.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    return 0.02 * torch.randn(shape, generator=g)


def build_encoder_state_dict(token_rate: int, device: Optional[str] = "cpu") -> Dict[str, torch.Tensor]:
    """The original `encoder.ckpt` state dict for a token rate, with the parity recipe's values."""
    state = {}
    for entry in load_manifest("encoder", token_rate):
        key = entry["key"]
        if key == "audiomae.model.pos_embed":
            state[key] = sincos_pos_embed(768)
        elif key == "audiomae.model.decoder_pos_embed":
            state[key] = sincos_pos_embed(512)
        else:
            state[key] = recipe_tensor(key, entry["shape"], entry["dtype"])
    return state


def original_schedule_buffers(num_steps: int = 1000, beta_start: float = 0.0015, beta_end: float = 0.0195) -> dict:
    """The diffusion buffers the original registers from its config (float64 maths, float32 storage)."""
    betas = np.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas, axis=0)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    values = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}


def build_decoder_state_dict(token_rate: int, include_ema: bool = True) -> Dict[str, torch.Tensor]:
    """The original `decoder.ckpt` state dict: recipe parameters, computed buffers, scale_factor 0.75.

    EMA buffers do not influence any output; they get recipe values (shape-correct) when included.
    """
    buffers = original_schedule_buffers()
    state = {}
    for entry in load_manifest("decoder", token_rate):
        key = entry["key"]
        if entry["kind"] == "parameter":
            state[key] = recipe_tensor(key, entry["shape"], entry["dtype"])
        elif key == "scale_factor":
            state[key] = torch.tensor(SCALE_FACTOR)
        elif key in buffers:
            state[key] = buffers[key]
        elif key.startswith("model_ema."):
            if include_ema:
                state[key] = recipe_tensor(key, entry["shape"], entry["dtype"])
        else:
            raise KeyError(f"unexpected decoder buffer {key} in the manifest")
    return state


def build_semantic_centroids(vocab: int, token_rate: int) -> np.ndarray:
    """The semantic k-means codebook `.npy` content [vocab, feature_dim] of the recipe."""
    g = torch.Generator().manual_seed(zlib.crc32(b"semantic_codebook"))
    return (torch.randn(vocab, FEATURE_DIM[token_rate], generator=g) * CENTROID_STD).numpy()

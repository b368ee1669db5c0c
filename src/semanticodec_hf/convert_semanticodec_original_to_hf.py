"""Convert the official SemantiCodec checkpoints to a `save_pretrained` folder.

The official release (Hub repo `haoheliu/SemantiCodec`) has, per token rate R in {25, 50, 100},
`semanticodec_tokenrate_{R}/encoder.ckpt` and `decoder.ckpt`, and at the repo root the semantic
k-means codebooks `codebook_idx/combine_{W}_audioset_dominate/codebook_{V/2}_0.npy` (W = 512 R / 100
frames per window; the file number is half the vocabulary). Commands for every published variant:

    semanticodec-hf convert --token-rate 100 --semantic-vocab-size 32768 --output semanticodec-100tps-32768
    semanticodec-hf convert --token-rate 100 --semantic-vocab-size 16384 --output semanticodec-100tps-16384
    semanticodec-hf convert --token-rate 100 --semantic-vocab-size 8192  --output semanticodec-100tps-8192
    semanticodec-hf convert --token-rate 100 --semantic-vocab-size 4096  --output semanticodec-100tps-4096
    semanticodec-hf convert --token-rate 50  --semantic-vocab-size 32768 --output semanticodec-50tps-32768
    ... (50 x 16384 / 8192 / 4096, and 25 x 32768 / 16384 / 8192 / 4096 likewise)

Add `--checkpoint-dir DIR` to read the files from a local copy of the Hub repo (or a folder holding
`encoder.ckpt`, `decoder.ckpt` and the `.npy` directly) instead of downloading them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from .checkpoint_mapping import map_decoder_state_dict, map_encoder_state_dict
from .configuration_semanticodec import (
    PUBLISHED_SEMANTIC_VOCAB_SIZES,
    PUBLISHED_TOKEN_RATES,
    SemantiCodecConfig,
)
from .feature_extraction_semanticodec import SemantiCodecFeatureExtractor
from .model_cards import render_model_card
from .modeling_semanticodec import SemantiCodecModel
from .processing_semanticodec import SemantiCodecProcessor
from .progress import progress_bar

HUB_REPO_ID = "haoheliu/SemantiCodec"
_FEATURE_DIM_TO_TOKEN_RATE = {768: 100, 1536: 50, 3072: 25}


@dataclass
class OriginalFiles:
    """Paths of one variant's official files."""

    encoder: Path
    decoder: Path
    semantic_codebook: Path


def codebook_relative_path(token_rate: int, semantic_vocab_size: int) -> str:
    """Where the original keeps the centroid file of a variant (relative to the Hub repo root)."""
    return SemantiCodecConfig.from_variant(token_rate, semantic_vocab_size).semantic_codebook_file


def _check_variant(token_rate: int, semantic_vocab_size: int) -> None:
    if token_rate not in PUBLISHED_TOKEN_RATES:
        raise ValueError(f"--token-rate {token_rate} is not published; choose one of {PUBLISHED_TOKEN_RATES}.")
    if semantic_vocab_size not in PUBLISHED_SEMANTIC_VOCAB_SIZES:
        raise ValueError(
            f"--semantic-vocab-size {semantic_vocab_size} is not published; choose one of "
            f"{PUBLISHED_SEMANTIC_VOCAB_SIZES}."
        )


def locate_local_files(checkpoint_dir: Union[str, Path], token_rate: int, semantic_vocab_size: int) -> OriginalFiles:
    """Find a variant's files in a local copy of the Hub repo (or a flat folder). Raises naming what is missing."""
    _check_variant(token_rate, semantic_vocab_size)
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint folder {root} does not exist.")
    subfolder = root / f"semanticodec_tokenrate_{token_rate}"
    codebook = codebook_relative_path(token_rate, semantic_vocab_size)

    def first_existing(candidates):
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        return None

    found = {
        "encoder.ckpt": first_existing([subfolder / "encoder.ckpt", root / "encoder.ckpt"]),
        "decoder.ckpt": first_existing([subfolder / "decoder.ckpt", root / "decoder.ckpt"]),
        codebook: first_existing([root / codebook, subfolder / codebook, root / Path(codebook).name]),
    }
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"{root} lacks {missing} for token_rate={token_rate}, semantic_vocab_size={semantic_vocab_size}. "
            f"Expected the Hub layout (semanticodec_tokenrate_{token_rate}/encoder.ckpt, .../decoder.ckpt, {codebook}) "
            "or the three files side by side."
        )
    return OriginalFiles(found["encoder.ckpt"], found["decoder.ckpt"], found[codebook])


def download_files(
    token_rate: int, semantic_vocab_size: int, cache_dir: Optional[str] = None, revision: Optional[str] = None
) -> OriginalFiles:
    """Download a variant's files from the Hub repo `haoheliu/SemantiCodec` (cached by huggingface_hub)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    _check_variant(token_rate, semantic_vocab_size)
    kwargs = dict(repo_id=HUB_REPO_ID, cache_dir=cache_dir, revision=revision)
    try:
        encoder = hf_hub_download(filename=f"semanticodec_tokenrate_{token_rate}/encoder.ckpt", **kwargs)
        decoder = hf_hub_download(filename=f"semanticodec_tokenrate_{token_rate}/decoder.ckpt", **kwargs)
        codebook = codebook_relative_path(token_rate, semantic_vocab_size)
        try:  # the original downloads codebooks from the repo root; also accept a copy under the rate folder
            codebook_path = hf_hub_download(filename=codebook, **kwargs)
        except EntryNotFoundError:
            codebook_path = hf_hub_download(filename=f"semanticodec_tokenrate_{token_rate}/{codebook}", **kwargs)
    except Exception as error:  # network errors come in many types; say what to do in every case
        raise RuntimeError(
            f"Could not download the official SemantiCodec files from the Hub ({type(error).__name__}: {error}). "
            "Without network access, download them elsewhere and pass --checkpoint-dir."
        ) from error
    return OriginalFiles(Path(encoder), Path(decoder), Path(codebook_path))


def load_original_checkpoint(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """A plain state dict from an official `.ckpt`, memory-mapped (no copy of the weights in RAM)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}); the file is truncated "
            "or corrupt. Download it again."
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(state).__name__}).")
    return state


def load_semantic_codebook(path: Union[str, Path]) -> np.ndarray:
    """The k-means centroids `[vocab, feature_dim]` (float32) from an official `.npy`."""
    path = Path(path)
    try:
        centroids = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:
        raise ValueError(f"{path} is not a readable .npy array ({type(error).__name__}: {error}).") from error
    if centroids.ndim != 2 or centroids.dtype != np.float32:
        raise ValueError(f"{path} must hold a float32 [vocab, feature_dim] array, got {centroids.shape} {centroids.dtype}.")
    return centroids


def _encoder_token_rate(encoder_state_dict: Dict[str, torch.Tensor]) -> Optional[int]:
    weight = encoder_state_dict.get("encoder_output_linear.weight")
    return None if weight is None else _FEATURE_DIM_TO_TOKEN_RATE.get(int(weight.shape[0]))


def convert_original_checkpoint(
    encoder_state_dict: Dict[str, torch.Tensor],
    decoder_state_dict: Dict[str, torch.Tensor],
    semantic_codebook: Union[np.ndarray, torch.Tensor],
    token_rate: int,
    semantic_vocab_size: int,
    **config_kwargs,
) -> SemantiCodecModel:
    """Official state dicts + centroid array -> `SemantiCodecModel` (strict: every key accounted for).

    The model is built on the meta device and takes the given tensors without copying them, so memory
    stays near one copy of the weights (plus the one `save_pretrained` writes).
    """
    _check_variant(token_rate, semantic_vocab_size)
    found_rate = _encoder_token_rate(encoder_state_dict)
    if found_rate is not None and found_rate != token_rate:
        raise ValueError(
            f"encoder.ckpt is a {found_rate} tokens/s checkpoint (encoder_output_linear.weight "
            f"{list(encoder_state_dict['encoder_output_linear.weight'].shape)}) but token_rate={token_rate} was "
            f"asked; use --token-rate {found_rate} or the semanticodec_tokenrate_{token_rate} files."
        )
    # an owned, writable copy: the centroids become a model buffer (the .npy may be a read-only memory map)
    centroids = torch.tensor(np.asarray(semantic_codebook)) if isinstance(semantic_codebook, np.ndarray) else semantic_codebook
    if centroids.ndim != 2 or centroids.shape[0] != semantic_vocab_size:
        raise ValueError(
            f"semantic codebook has shape {tuple(centroids.shape)}, but semantic_vocab_size={semantic_vocab_size} "
            f"needs {semantic_vocab_size} rows; is it the file for another vocabulary "
            f"({codebook_relative_path(token_rate, semantic_vocab_size)})?"
        )
    if "scale_factor" not in decoder_state_dict:
        raise ValueError("decoder.ckpt has no `scale_factor`; it is not an official SemantiCodec decoder checkpoint.")
    config = SemantiCodecConfig.from_variant(
        token_rate, semantic_vocab_size, scale_factor=float(decoder_state_dict["scale_factor"]), **config_kwargs
    )
    state = map_encoder_state_dict(encoder_state_dict, centroids, config=config)
    state.update(map_decoder_state_dict(decoder_state_dict, config=config))
    with torch.device("meta"):
        model = SemantiCodecModel(config)
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():  # computed (non-persistent) buffers are still on meta: build them for real
        if hasattr(module, "reset_computed_buffers"):
            module.reset_computed_buffers()  # built on the device of the loaded weights
    return model.eval()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_to_folder(
    output_dir: Union[str, Path],
    token_rate: int,
    semantic_vocab_size: int,
    checkpoint_dir: Optional[Union[str, Path]] = None,
    cache_dir: Optional[str] = None,
    revision: Optional[str] = None,
    push_to_hub: Optional[str] = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Read (or download) a variant's official files and write a complete `from_pretrained` folder; with
    `progress`, a bar on stderr names each step (reading ~GB checkpoints and hashing them takes a while).

    The folder is written to a temporary sibling and renamed at the end, so a failure leaves nothing
    half-written at `output_dir`.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} exists and is not empty; pass --overwrite to replace it.")
    steps = ["locate files" if checkpoint_dir is not None else "download", "read encoder.ckpt", "read decoder.ckpt",
             "read codebook", "map weights", "checksums", "write folder"] + (["upload"] if push_to_hub else [])
    with progress_bar(total=len(steps), desc="convert", unit="step", quiet=not progress) as bar:
        def step(value: Any) -> Any:
            """Mark the step just finished and name the next one on the bar."""
            bar.update(1)
            if bar.n < len(steps):
                bar.set_postfix_str(steps[int(bar.n)])
            return value

        bar.set_postfix_str(steps[0])
        files = step(
            locate_local_files(checkpoint_dir, token_rate, semantic_vocab_size)
            if checkpoint_dir is not None
            else download_files(token_rate, semantic_vocab_size, cache_dir=cache_dir, revision=revision)
        )
        encoder = step(load_original_checkpoint(files.encoder))
        decoder = step(load_original_checkpoint(files.decoder))
        codebook = step(load_semantic_codebook(files.semantic_codebook))
        model = step(convert_original_checkpoint(encoder, decoder, codebook, token_rate, semantic_vocab_size))
        model.config.original_checkpoint_sha256 = step({
            "encoder.ckpt": _sha256(files.encoder),
            "decoder.ckpt": _sha256(files.decoder),
            Path(files.semantic_codebook).name: _sha256(files.semantic_codebook),
        })
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
        try:
            model.save_pretrained(staging, max_shard_size="2GB")
            # The processor writes processor_config.json and the feature extractor's preprocessor_config.json; with
            # the model's config.json they carry `auto_map` and the model code, for `trust_remote_code=True` loading.
            SemantiCodecProcessor.from_codec(model, SemantiCodecFeatureExtractor()).save_pretrained(staging)
            (staging / "README.md").write_text(render_model_card(model.config), encoding="utf-8")
            if output_dir.exists():
                shutil.rmtree(output_dir)
            os.replace(staging, output_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        step(None)
        if push_to_hub:  # upload the finished folder as it is (weights, configs and model card together)
            from huggingface_hub import HfApi

            api = HfApi()
            api.create_repo(push_to_hub, exist_ok=True)
            api.upload_folder(folder_path=str(output_dir), repo_id=push_to_hub)
            step(None)
    return output_dir

"""Code files of the command line: `.npy` (the bare `(2, frames)` int64 array) and `.pt` (a dict with the codes,
the variant, `num_samples` and `original_sampling_rate`), written by `encode` and read by `decode`; `.sct` files
are read through `sct_format`. Every read is checked (shape, ids, variant, bounded fields) before decoding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, Tuple

from .cli_audio_io import write_failure
from .cli_jobs import CliError

CODE_SUFFIXES = (".npy", ".pt")
PT_FORMAT_TAG = "semanticodec-codes-v1"


def save_codes(path: Path, codes, num_samples: int, original_rate: int, config) -> None:
    """`.npy`: the bare (2, frames) int64 array; `.pt`: a dict with the codes and what decoding needs."""
    import numpy as np
    import torch

    from .atomic_files import atomic_write

    if path.suffix == ".npy":
        def write(temporary: Path) -> None:
            with open(temporary, "wb") as handle:
                np.save(handle, np.ascontiguousarray(codes, dtype=np.int64))
    elif path.suffix == ".pt":
        payload = {
            "format": PT_FORMAT_TAG,
            "audio_codes": torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64)),
            "num_samples": int(num_samples),
            "original_sampling_rate": int(original_rate),
            "token_rate": int(config.token_rate),
            "semantic_vocab_size": int(config.semantic_vocab_size),
            "acoustic_codebook_size": int(config.acoustic_codebook_size),
        }

        def write(temporary: Path) -> None:
            torch.save(payload, temporary)
    else:
        raise CliError(f"cannot save codes to {path}: use a .npy or .pt file name.")
    try:
        atomic_write(path, write)
    except OSError as error:
        raise write_failure(path, error) from error



@dataclass
class CodeItem:
    """Codes read from a file and what is known about the audio they came from."""

    codes: Any  # int64 numpy (2, F)
    num_samples: Optional[int]  # 16 kHz input length (None: unknown, keep the original's length)
    original_sampling_rate: Optional[int]


def _check_codes_for(config, codes, source: Path):
    from .sct_format import SctFormatError, check_codes

    try:
        return check_codes(codes, config.semantic_vocab_size, config.acoustic_codebook_size)
    except SctFormatError as error:
        raise CliError(f"{source}: {error}") from error


def _variant_mismatch(config, found: Tuple[int, int, int], source: Path) -> None:
    from .sct_format import SctFormatError, check_variant

    variant = SimpleNamespace(token_rate=found[0], semantic_vocab_size=found[1], acoustic_codebook_size=found[2])
    try:
        check_variant(variant, config, str(source))
    except SctFormatError as error:
        raise CliError(str(error)) from error


def read_sct_item(path: Path, config) -> CodeItem:
    from .sct_format import SCT_TOKEN_RATES, SctFormatError, check_variant, read_sct

    try:  # the model's own token rate is accepted too (a custom model's files), then must match it
        header, codes = read_sct(path, token_rates={*SCT_TOKEN_RATES, config.token_rate})
        check_variant(header, config, str(path))
    except SctFormatError as error:
        raise CliError(str(error)) from error
    return CodeItem(codes, header.num_samples, header.original_sampling_rate)


def read_code_item(path: Path, config) -> CodeItem:
    """Codes from `.npy` ((2, F) ints) or `.pt` (our dict, or a bare (2, F) tensor); `.sct` works too."""
    import numpy as np
    import torch

    from .sct_format import SctFormatError, check_code_fields

    if path.suffix == ".sct":
        return read_sct_item(path, config)
    if not path.is_file():
        raise CliError(f"input file {path} does not exist.")
    num_samples = original_rate = None
    try:
        if path.suffix == ".npy":
            codes = np.load(path, allow_pickle=False)
        elif path.suffix == ".pt":
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(loaded, dict):
                if "audio_codes" not in loaded:
                    raise CliError(f"{path} holds a dict without 'audio_codes' (keys {sorted(loaded)}).")
                if "token_rate" in loaded:
                    _variant_mismatch(config, (int(loaded["token_rate"]), int(loaded["semantic_vocab_size"]),
                                               int(loaded["acoustic_codebook_size"])), path)
                codes = loaded["audio_codes"]
                num_samples = loaded.get("num_samples")
                original_rate = loaded.get("original_sampling_rate")
            else:
                codes = loaded
            if not torch.is_tensor(codes):
                raise CliError(f"{path} holds a {type(codes).__name__}, not a codes tensor of shape (2, frames).")
            codes = codes.numpy()
        else:
            raise CliError(f"{path}: codes must be .npy, .pt or .sct files.")
    except CliError:
        raise
    except Exception as error:
        raise CliError(f"cannot read codes from {path} ({type(error).__name__}: {error}); is the file corrupt?") from error
    codes = _check_codes_for(config, codes, path)
    try:  # bounded as a .sct header is: 2**64 samples or a 16 MHz rate must not reach the decoder
        num_samples, original_rate = check_code_fields(codes.shape[1], num_samples, original_rate, config.token_rate,
                                                       str(path))
    except SctFormatError as error:
        raise CliError(str(error)) from error
    return CodeItem(codes, num_samples, original_rate)



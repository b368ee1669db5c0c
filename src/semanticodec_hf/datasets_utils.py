"""Tokenize audio datasets with `datasets.Dataset.map`, cheaply and reproducibly.

`SemantiCodecTokenizeFunction` is a small picklable object: it holds only strings and flags. The codec is
loaded lazily, once per process, into a module-level cache, so `num_proc` workers never receive a pickled
model and `datasets` never hashes weights. Its `fingerprint` is derived from what decides the output (codec
path or id, codec config, revision, pattern, layout, options); pass `new_fingerprint=fn.new_fingerprint(ds)`.

Audio values may be decoded dicts (`{"array", "sampling_rate"}`), file paths, or undecoded dicts
(`{"bytes", "path"}`, what `Audio(decode=False)` gives): files and bytes are read with soundfile, because
`datasets.Audio` decoding needs torchcodec.

    fn = SemantiCodecTokenizeFunction("path/to/codec", pattern="interleaved")
    ds = ds.cast_column("audio", Audio(decode=False))
    ds = ds.map(fn, batched=True, batch_size=16, num_proc=2, remove_columns=["audio"],
                features=fn.output_features(ds.features, remove=["audio"]), new_fingerprint=fn.new_fingerprint(ds))
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .processing_semanticodec import read_audio
from .tokenization_semanticodec import (
    AUDIO_TOKENIZER_FORMAT_VERSION,
    AudioItemError,
    PATTERNS,
    SHORT_AUDIO_RULES,
    SemantiCodecAudioTokenizer,
    read_audio_tokenizer_settings,
    saved_layout,
)

# (codec location, revision, pattern, options, device) -> tokenizer; one per process (workers fill their own).
_TOKENIZER_CACHE: Dict[Tuple, SemantiCodecAudioTokenizer] = {}
_IMPORT_PID = os.getpid()
_THREADS_SET_IN_PID: Optional[int] = None

OUTPUT_COLUMNS = ("input_ids", "num_frames", "duration")
METADATA_COLUMNS = ("path", "sampling_rate", "variant")


def _canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def _sha(data: Any, length: int = 32) -> str:
    return hashlib.sha256(_canonical_json(data).encode()).hexdigest()[:length]


def load_audio(value: Any, row: Optional[int] = None, root: Optional[str] = None) -> Tuple[np.ndarray, int]:
    """One audio cell -> (float32 `[channels, samples]` or `[samples]`, sampling rate).

    Accepts `{"array", "sampling_rate"}`, a path (relative paths are taken from `root` when given),
    `{"bytes", "path"}` or a decoder object with `get_all_samples()` (torchcodec, when installed). The reading is
    `processing_semanticodec.read_audio`'s; its errors are prefixed with the row.
    """
    try:
        return read_audio(value, root=root, allow_empty=True)  # callers skip or pad empty clips themselves
    except ValueError as error:
        where = f"row {row}" if row is not None else "value"
        raise ValueError(f"Could not read audio {where} of the dataset: {error}") from error


def codec_identity(settings: Dict[str, Any]) -> Dict[str, Any]:
    """Identity of a codec/tokenizer (from `read_audio_tokenizer_settings`): hashes of its small JSON files and
    where the codec lives. Never reads weights."""
    return {
        "tokenizer_config": _sha(settings["tokenizer_config"]),
        "codec_config": _sha(settings["codec_config"]),
        "codec": str(settings["codec_name_or_path"]),
        "codec_revision": settings["codec_revision"],
    }


def _location(name_or_path: Union[str, os.PathLike]) -> str:
    """Local folders by absolute path (so `./m` and `/abs/m` agree), Hub ids as given."""
    path = Path(name_or_path)
    return str(path.resolve()) if path.is_dir() else str(name_or_path)


class SemantiCodecTokenizeFunction:
    r"""
    Batched `datasets.map` function: an audio column -> `input_ids`, `num_frames`, `duration` (and
    `audio_codes` with `return_audio_codes=True`).

    Args:
        model_name_or_path: a folder saved by `SemantiCodecAudioTokenizer.save_pretrained`, a converted codec
            folder, or a Hub id of either.
        revision: Hub revision (part of the fingerprint).
        pattern: `interleaved` / `semantic_then_acoustic` / `semantic_only`; None keeps the saved one.
        audio_column: the column to read.
        add_special_tokens: wrap each clip in `<bos> ... <eos>`; None keeps the saved setting.
        return_audio_codes: also output `audio_codes` `[2][frames]`.
        short_audio: `"raise"` on clips under 0.16 s, or `"pad"` them with zeros.
        resampler: feature-extractor resampler override (`"reference"` or `"soxr"`).
        device: where the codec runs in each process (not part of the fingerprint: outputs do not depend on it).
        max_windows_per_batch: bound on 10.24 s windows per codec call (not part of the fingerprint).
        return_metadata: also output `path` (as stored in the column; None for arrays), `sampling_rate` (of the
            source) and `variant` (the codec variant name).
        audio_root: folder that relative paths in the column are taken from.
        num_threads: `torch.set_num_threads` for the process that imported this module; forked `num_proc` workers
            always use 1 thread (an OpenMP pool does not survive fork: more threads hang there).
    """

    def __init__(
        self,
        model_name_or_path: Union[str, os.PathLike],
        revision: Optional[str] = None,
        pattern: Optional[str] = None,
        audio_column: str = "audio",
        add_special_tokens: Optional[bool] = None,
        return_audio_codes: bool = False,
        short_audio: str = "raise",
        resampler: Optional[str] = None,
        device: str = "cpu",
        max_windows_per_batch: int = 32,
        num_threads: Optional[int] = None,
        return_metadata: bool = False,
        audio_root: Optional[Union[str, os.PathLike]] = None,
    ):
        if pattern is not None and pattern not in PATTERNS:
            raise ValueError(f"Unknown pattern {pattern!r}; choose one of {list(PATTERNS)}.")
        if short_audio not in SHORT_AUDIO_RULES:
            raise ValueError(f"short_audio must be one of {list(SHORT_AUDIO_RULES)}, got {short_audio!r}.")
        self.model_name_or_path = _location(model_name_or_path)
        self.revision = revision
        self.audio_column = audio_column
        self.return_audio_codes = bool(return_audio_codes)
        self.short_audio = short_audio
        self.resampler = resampler
        self.device = str(device)
        self.max_windows_per_batch = int(max_windows_per_batch)
        self.num_threads = num_threads
        self.return_metadata = bool(return_metadata)
        self.audio_root = str(Path(audio_root).resolve()) if audio_root is not None else None
        # Resolve the saved settings now (small JSON reads) so the fingerprint states the effective values.
        settings = read_audio_tokenizer_settings(self.model_name_or_path, revision)
        saved = settings["tokenizer_config"] or {}
        self.pattern = pattern or saved.get("pattern", "interleaved")
        if add_special_tokens is None:
            add_special_tokens = saved.get("add_special_tokens", True)
        self.add_special_tokens = bool(add_special_tokens)
        self.layout = saved_layout(settings).to_dict()
        codec_config = settings["codec_config"] or {}
        self.variant = saved.get("variant") or _variant_name(codec_config)
        self._identity = {
            "function": f"{type(self).__module__}.{type(self).__qualname__}",
            "format_version": AUDIO_TOKENIZER_FORMAT_VERSION,
            "codec": self.model_name_or_path,
            "revision": revision,
            "configs": codec_identity(settings),
            "pattern": self.pattern,
            "layout": self.layout,
            "add_special_tokens": self.add_special_tokens,
            "audio_column": audio_column,
            "return_audio_codes": self.return_audio_codes,
            "short_audio": short_audio,
            "resampler": resampler,
            "return_metadata": self.return_metadata,
            "audio_root": self.audio_root,
        }

    # ------------------------------------------------------------------------------------ fingerprints
    @property
    def fingerprint(self) -> str:
        """Stable hash of everything that decides the output (32 hex chars)."""
        return _sha(self._identity)

    def new_fingerprint(self, dataset: Any) -> str:
        """Fingerprint for `dataset.map(self, new_fingerprint=...)`: this function's applied to that dataset."""
        return _sha([getattr(dataset, "_fingerprint", None), self.fingerprint])

    def _cache_key(self) -> Tuple:
        return (self.model_name_or_path, self.revision, self.pattern, self.add_special_tokens, self.short_audio,
                self.resampler, self.device, self.max_windows_per_batch)

    def _prepare_process(self) -> None:
        """Set torch's thread count once per process, before its first op.

        A worker forked (`num_proc>1` forks on Linux) after the parent ran torch ops with several OpenMP threads
        hangs at its first parallel op, so forked workers default to 1 thread (K workers use K cores).
        """
        global _THREADS_SET_IN_PID
        pid = os.getpid()
        if _THREADS_SET_IN_PID == pid:
            return
        import torch

        if pid != _IMPORT_PID:
            torch.set_num_threads(1)
        elif self.num_threads is not None:
            torch.set_num_threads(int(self.num_threads))
        _THREADS_SET_IN_PID = pid

    def load_tokenizer(self) -> SemantiCodecAudioTokenizer:
        """The process's tokenizer for these settings (loaded on first use, then reused)."""
        self._prepare_process()
        key = self._cache_key()
        tokenizer = _TOKENIZER_CACHE.get(key)
        if tokenizer is None:
            tokenizer = SemantiCodecAudioTokenizer.from_pretrained(
                self.model_name_or_path,
                revision=self.revision,
                pattern=self.pattern,
                device=self.device,
                add_special_tokens=self.add_special_tokens,
                short_audio=self.short_audio,
                max_windows_per_batch=self.max_windows_per_batch,
            )
            if self.resampler is not None:
                tokenizer.feature_extractor.resampler = self.resampler
            _TOKENIZER_CACHE[key] = tokenizer
        return tokenizer

    # ------------------------------------------------------------------------------------ map
    def __call__(self, batch: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
        if self.audio_column not in batch:
            raise ValueError(
                f"Column {self.audio_column!r} not in the batch (columns: {sorted(batch)}); set audio_column=. "
                "This function needs `batched=True`."
            )
        values = batch[self.audio_column]
        if isinstance(values, dict) or not isinstance(values, (list, tuple)):
            raise ValueError("SemantiCodecTokenizeFunction needs `batched=True` in `map`.")
        outputs: Dict[str, List[Any]] = {name: [] for name in OUTPUT_COLUMNS}
        if self.return_audio_codes:
            outputs["audio_codes"] = []
        if self.return_metadata:
            outputs.update({name: [] for name in METADATA_COLUMNS})
        if not values:
            return outputs
        audio, rates = zip(*(load_audio(value, row, self.audio_root) for row, value in enumerate(values)))
        tokenizer = self.load_tokenizer()
        try:
            encoded = tokenizer(list(audio), sampling_rate=list(rates), return_audio_codes=self.return_audio_codes)
        except AudioItemError as error:
            where = _path_of(values[error.index]) or f"row {error.index} of this batch"
            raise ValueError(f"Audio {where}: {error.message}") from None
        outputs["input_ids"] = encoded["input_ids"]
        outputs["num_frames"] = encoded["num_frames"]
        outputs["duration"] = [item.shape[-1] / rate for item, rate in zip(audio, rates)]
        if self.return_audio_codes:
            outputs["audio_codes"] = [codes.tolist() for codes in encoded["audio_codes"]]
        if self.return_metadata:
            outputs["path"] = [_path_of(value) for value in values]
            outputs["sampling_rate"] = list(rates)
            outputs["variant"] = [self.variant] * len(values)
        return outputs

    def output_features(self, input_features: Optional[Any] = None, remove: Sequence[str] = ()) -> Any:
        """`datasets.Features` of the mapped dataset: the kept input columns plus compact output types
        (int32 ids: every published vocabulary fits)."""
        from datasets import Features, List as ListFeature, Value

        features = {name: feature for name, feature in (input_features or {}).items() if name not in remove}
        features["input_ids"] = ListFeature(Value("int32"))
        features["num_frames"] = Value("int32")
        features["duration"] = Value("float64")
        if self.return_audio_codes:
            features["audio_codes"] = ListFeature(ListFeature(Value("int32")))
        if self.return_metadata:
            features.update(path=Value("string"), sampling_rate=Value("int32"), variant=Value("string"))
        return Features(features)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.model_name_or_path!r}, pattern={self.pattern!r}, "
            f"variant={self.variant!r}, fingerprint={self.fingerprint!r})"
        )


def _path_of(value: Any) -> Optional[str]:
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    if isinstance(value, dict) and value.get("path") is not None:
        return str(value["path"])
    return None


def _variant_name(codec_config: Dict[str, Any]) -> str:
    if not codec_config:
        return "unknown"
    return f"semanticodec_tokenrate_{codec_config.get('token_rate')}_vocab_{codec_config.get('semantic_vocab_size')}"


def clear_tokenizer_cache() -> None:
    """Forget the loaded codecs of this process (frees their memory)."""
    _TOKENIZER_CACHE.clear()


__all__ = [
    "SemantiCodecTokenizeFunction",
    "load_audio",
    "codec_identity",
    "clear_tokenizer_cache",
    "OUTPUT_COLUMNS",
    "METADATA_COLUMNS",
]

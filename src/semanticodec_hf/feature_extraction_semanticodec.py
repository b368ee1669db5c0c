"""Feature extractor for SemantiCodec: raw audio -> normalised Kaldi fbank windows for the encoder.

Each item is processed exactly as the original `SemantiCodec.load_audio` does for one file
(resample, keep channel 0, pad to whole 10.24 s windows, remove the mean, fbank, normalise), so a
batch gives every item the same features it would get alone. Items with fewer windows than the
longest are padded with whole windows, flagged by `input_features_mask`.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Sequence, Tuple

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging

from .codec_timing import (
    PATCH_SIZE,
    SAMPLING_RATE,
    WINDOW_FRAMES,
    WINDOW_SAMPLES,
    num_windows,
    padded_min_samples,
    patch_samples,
    window_samples,
)
from .codec_timing import reference_frame_count as _reference_frame_count
from .kaldi_fbank import FBANK_MEAN, FBANK_STD, NUM_MEL_BINS, extract_fbank, iter_normalised_fbank
from .resampling import RESAMPLERS, resample

logger = logging.get_logger(__name__)

MAX_CHANNELS = 16  # above this, a 2-D item with few columns is taken to be channels-last

# Integer PCM -> float in [-1, 1]: (offset, scale), value = (x - offset) / scale (as WAV readers do).
_PCM_SCALES = {
    torch.int16: (0, 32768.0),
    torch.int32: (0, 2.0**31),
    torch.int8: (0, 128.0),
    torch.uint8: (128, 128.0),
}
_NUMPY_PCM = (np.int16, np.int32, np.int8, np.uint8)
MONO_RULES = ("first", "mean")


def reference_frame_count(num_samples: int, token_rate: int) -> int:
    """Frames (semantic + acoustic id pairs) the reference keeps for `num_samples` at 16 kHz, before the cap at
    whole windows: the published geometry's `SemantiCodecConfig.frame_budget` (see `codec_timing`).

    Reproduces the original float arithmetic on purpose (e.g. 1.00 s -> 57 frames at 100 tokens/s,
    10.24 s -> 520): the duration is "rounded up" to 0.16 s with a float modulo, which sometimes adds
    a whole patch and sometimes one extra frame. Token counts must match the reference's.
    """
    return _reference_frame_count(num_samples, token_rate)


def reference_num_windows(num_samples: int) -> int:
    """10.24 s encoder windows for `num_samples` at 16 kHz: `N // 163840 + 1` (`SemantiCodecConfig.num_windows`).

    The reference always pads at least one sample, so an exact multiple of 10.24 s gains a whole
    empty window (it changes the last window's ids, so it is reproduced).
    """
    return num_windows(num_samples, WINDOW_SAMPLES)


def _check_sampling_rate(sampling_rate: Any) -> int:
    if sampling_rate is None:
        raise ValueError(
            "`sampling_rate` is required: pass the rate of `raw_audio` in Hz, e.g. "
            f"`feature_extractor(audio, sampling_rate=44100)`. The model works at {SAMPLING_RATE} Hz; "
            "audio at any other rate is resampled."
        )
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"`sampling_rate` must be a positive integer number of Hz, got {sampling_rate!r}.")
    if not float(sampling_rate).is_integer() or sampling_rate <= 0:
        raise ValueError(f"`sampling_rate` must be a positive integer number of Hz, got {sampling_rate!r}.")
    return int(sampling_rate)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool)


def _split_batch(raw_audio: Any) -> list:
    """A list/tuple of arrays is a batch; an array, a tensor or a list of numbers is one item."""
    if isinstance(raw_audio, (np.ndarray, torch.Tensor)):
        if raw_audio.ndim == 3:
            raise ValueError(
                f"Got a 3-D input of shape {tuple(raw_audio.shape)}. Pass a batch as a list of items, each "
                "[samples] or [channels, samples], so that every item keeps its own length."
            )
        return [raw_audio]
    if isinstance(raw_audio, (list, tuple)):
        if len(raw_audio) == 0:
            raise ValueError("`raw_audio` is empty: pass at least one audio item.")
        if all(_is_number(x) for x in raw_audio):
            return [np.asarray(raw_audio, dtype=np.float32)]
        return list(raw_audio)
    if _is_number(raw_audio):
        return [np.asarray(raw_audio)]  # rejected as 0-D with a clear message
    raise ValueError(
        f"`raw_audio` must be a numpy array, a torch tensor, or a list of them; got {type(raw_audio).__name__}."
    )


def _ambiguous_scale(where: str, dtype: Any) -> str:
    return (
        f"{where} has dtype {dtype}, whose scale is ambiguous; convert it to float in [-1, 1] or to "
        "int8/uint8/int16/int32 PCM."
    )


def _to_float_channels(item: Any, index: int) -> torch.Tensor:
    """One item as float32 `[channels, samples]`, integer PCM scaled to [-1, 1], validated."""
    where = f"Audio item {index}"
    if isinstance(item, (list, tuple)):
        item = np.asarray(item)
    if isinstance(item, np.ndarray):
        if item.dtype.kind not in "iuf":
            raise ValueError(
                f"{where} has dtype {item.dtype}; expected float samples in [-1, 1] or int8/uint8/int16/int32 PCM."
            )
        if item.dtype.kind in "iu" and item.dtype.type not in _NUMPY_PCM:
            raise ValueError(_ambiguous_scale(where, item.dtype))
        if not item.dtype.isnative:
            item = item.astype(item.dtype.newbyteorder("="))
        item = torch.from_numpy(item if item.flags.c_contiguous else item.copy())  # keeps 0-D items 0-D
    elif isinstance(item, torch.Tensor):
        item = item.detach()
    else:
        raise ValueError(f"{where} must be a numpy array or a torch tensor, got {type(item).__name__}.")

    if item.is_complex() or item.dtype == torch.bool:
        raise ValueError(
            f"{where} has dtype {item.dtype}; expected float samples in [-1, 1] or int8/uint8/int16/int32 PCM."
        )
    if item.dim() == 0 or item.dim() > 2:
        raise ValueError(
            f"{where} has {item.dim()} dimensions (shape {tuple(item.shape)}); expected [samples] or "
            "[channels, samples]."
        )
    if item.dim() == 1:
        item = item.unsqueeze(0)
    channels, samples = item.shape
    if channels > MAX_CHANNELS and samples <= MAX_CHANNELS:
        raise ValueError(
            f"{where} has shape {tuple(item.shape)}, which looks like [samples, channels]; audio must be "
            "channels-first: pass `audio.T` (numpy) or `audio.transpose(0, 1)` (torch)."
        )
    if item.numel() == 0:
        raise ValueError(f"{where} is empty (shape {tuple(item.shape)}).")

    if torch.is_floating_point(item):
        item = item.to(torch.float32)
    elif item.dtype in _PCM_SCALES:
        offset, scale = _PCM_SCALES[item.dtype]
        item = (item.to(torch.float32) - offset) / scale if offset else item.to(torch.float32) / scale
    else:
        raise ValueError(_ambiguous_scale(where, item.dtype))

    finite = torch.isfinite(item)
    if not bool(finite.all()):
        bad = (~finite).nonzero()
        channel, sample = (int(v) for v in bad[0])
        raise ValueError(
            f"{where} contains {bad.shape[0]} NaN/Inf values (first at channel {channel}, sample {sample}); "
            "clean the audio first, e.g. with `np.nan_to_num`."
        )
    return item


def batch_features(items: Sequence[Any], padding_value: float = 0.0) -> Dict[str, torch.Tensor]:
    """Feature dicts of single items (the extractor's `return_tensors="pt"` output for one item each) -> one batch:
    `input_features` `[B, frames_max, bins]` padded with `padding_value`, `input_features_mask` padded with 0,
    `num_samples` `[B]`. The one feature batching of the package (the tokenizer and the command line use it)."""
    longest = max(int(item["input_features"].shape[1]) for item in items)
    bins = int(items[0]["input_features"].shape[-1])
    features = torch.full((len(items), longest, bins), float(padding_value))
    mask = torch.zeros(len(items), longest, dtype=torch.long)
    for row, item in enumerate(items):
        frames = int(item["input_features"].shape[1])
        features[row, :frames] = item["input_features"][0]
        mask[row, :frames] = item["input_features_mask"][0]
    num_samples = torch.cat([torch.as_tensor(item["num_samples"]).reshape(-1) for item in items])
    return {"input_features": features, "input_features_mask": mask, "num_samples": num_samples}


class SemantiCodecFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns raw audio into the normalised 128-bin Kaldi fbank that the SemantiCodec encoder reads, in
    whole 10.24 s windows of 1024 frames, reproducing the original front end exactly.

    Args:
        feature_size (`int`, defaults to 128): mel bins (fixed by the pretrained AudioMAE).
        sampling_rate (`int`, defaults to 16000): rate the features are computed at.
        padding_value (`float`, defaults to 0.0): value of the frames of batch-padding windows.
        fbank_mean, fbank_std (`float`): normalisation `(fbank - mean) / (2 * std)` (AudioSet statistics).
        window_frames (`int`, defaults to 1024): fbank frames per encoder window.
        resampler (`str`, defaults to `"reference"`): `"reference"` reproduces the original's
            torchaudio-style windowed-sinc resampler exactly; `"soxr"` is faster but changes the
            features slightly for non-16 kHz input.
        mono (`str`, defaults to `"first"`): `"first"` keeps channel 0 after resampling, as the
            reference does; `"mean"` averages the channels instead.
    """

    model_input_names = ["input_features", "input_features_mask", "num_samples"]

    def __init__(
        self,
        feature_size: int = NUM_MEL_BINS,
        sampling_rate: int = SAMPLING_RATE,
        padding_value: float = 0.0,
        fbank_mean: float = FBANK_MEAN,
        fbank_std: float = FBANK_STD,
        window_frames: int = WINDOW_FRAMES,
        resampler: str = "reference",
        mono: str = "first",
        **kwargs,
    ):
        if feature_size != NUM_MEL_BINS or sampling_rate != SAMPLING_RATE or window_frames != WINDOW_FRAMES:
            raise ValueError(
                f"SemantiCodec's front end is fixed at feature_size={NUM_MEL_BINS}, "
                f"sampling_rate={SAMPLING_RATE}, window_frames={WINDOW_FRAMES}; "
                f"got {feature_size}, {sampling_rate}, {window_frames}."
            )
        if resampler not in RESAMPLERS:
            raise ValueError(f"`resampler` must be one of {sorted(RESAMPLERS)}, got {resampler!r}.")
        if mono not in MONO_RULES:
            raise ValueError(f"`mono` must be one of {list(MONO_RULES)}, got {mono!r}.")
        kwargs.setdefault("return_attention_mask", True)
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.fbank_mean = float(fbank_mean)
        self.fbank_std = float(fbank_std)
        self.window_frames = int(window_frames)
        self.resampler = resampler
        self.mono = mono

    # Lengths follow from the saved `sampling_rate` and `window_frames` through the same `codec_timing` functions
    # as `SemantiCodecConfig`'s properties of the same names (the extractor has no config).
    @property
    def window_samples(self) -> int:
        """Samples per encoder window (163840, 10.24 s): every item is zero-padded to whole windows."""
        return window_samples(self.window_frames, self.sampling_rate)

    @property
    def min_num_samples(self) -> int:
        """The shortest item accepted, in samples after resampling: one AudioMAE time patch (2560, 0.16 s)."""
        return patch_samples(PATCH_SIZE, self.sampling_rate)

    def padded_min_samples(self, sampling_rate: int) -> int:
        """Length at `sampling_rate` that a too-short clip must be zero-padded to for this extractor to accept it:
        one patch plus a margin sample for the resampler's rounding (2561 at 16 kHz)."""
        return padded_min_samples(sampling_rate, self.sampling_rate, PATCH_SIZE)

    def num_windows(self, num_samples: int) -> int:
        """Windows of an item of `num_samples` (after resampling): `N // window_samples + 1`, as the original pads
        at least one sample."""
        return num_windows(num_samples, self.window_samples)

    def _prepare_waveform(self, item: Any, index: int, sampling_rate: int, device: torch.device) -> torch.Tensor:
        """Validated mono 16 kHz float32 signal `[N]` of one item (resample all channels, then mono)."""
        channels = _to_float_channels(item, index).to(device)
        if sampling_rate != self.sampling_rate:
            channels = resample(channels, sampling_rate, self.sampling_rate, method=self.resampler)
        waveform = channels[0] if self.mono == "first" else channels.mean(dim=0)
        minimum = self.min_num_samples
        if waveform.shape[-1] < minimum:
            raise ValueError(
                f"Audio item {index} lasts {waveform.shape[-1] / self.sampling_rate:.4f} s at {self.sampling_rate} Hz "
                f"({waveform.shape[-1]} samples); SemantiCodec needs at least one {minimum / self.sampling_rate} s "
                f"AudioMAE patch ({minimum} samples at {self.sampling_rate} Hz). Pad it with zeros if needed."
            )
        if not bool(waveform.any()):
            logger.warning(
                f"Audio item {index} is digital silence (all zeros after the mono rule); it is encoded as is."
            )
        return waveform

    def to_mono_16k(self, audio: Any, sampling_rate: int) -> torch.Tensor:
        """One item -> the validated mono 16 kHz float32 signal `[N]` this extractor computes features from
        (same mono rule and resampler); training recipes use it for targets aligned with the features."""
        return self._prepare_waveform(audio, 0, _check_sampling_rate(sampling_rate), torch.device("cpu"))

    def iter_features(self, audio: Any, sampling_rate: int) -> Tuple[int, Iterator[torch.Tensor]]:
        """One long item -> `(num_samples, blocks)`: its `input_features` as `[1, frames, 128]` blocks of 16 windows
        (2.7 min), each computed when the iterator reaches it, for `SemantiCodecModel.encode_stream`.

        Concatenated, the blocks equal `self(audio)["input_features"]` bit for bit. Memory: the 16 kHz signal
        (the original subtracts the mean of the whole signal, so all of it is read first) plus one block, instead
        of every fbank frame of the file.
        """
        waveform = self.to_mono_16k(audio, sampling_rate)
        num_samples = int(waveform.shape[-1])
        padded = self._pad_to_windows(waveform)
        del waveform
        return num_samples, iter_normalised_fbank(padded, mean=self.fbank_mean, std=self.fbank_std)

    def _pad_to_windows(self, waveform: torch.Tensor) -> torch.Tensor:
        """`[N]` -> `[1, windows * window_samples]`, zero-padded to whole windows (`num_windows`), as the original."""
        padded = torch.zeros(1, self.num_windows(int(waveform.shape[-1])) * self.window_samples,
                             device=waveform.device)
        padded[0, : waveform.shape[-1]] = waveform
        return padded

    def __call__(
        self,
        raw_audio: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
        sampling_rate: int | None = None,
        return_tensors: str | None = "pt",
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            raw_audio: one item or a list of items of any lengths. An item is `[samples]` or
                `[channels, samples]` (channels first), float in [-1, 1] or int8/uint8/int16/int32 PCM.
            sampling_rate (`int`): rate of `raw_audio` in Hz (required; resampled to 16 kHz if different).
            return_tensors (`str`, defaults to `"pt"`): `"pt"` for torch tensors, `"np"` or `None` for numpy.
            device: where the resampling and fbank run (results are returned on the CPU).

        Returns:
            [`BatchFeature`] with `input_features` float32 `[B, 1024 * max_windows, 128]`,
            `input_features_mask` int64 `[B, 1024 * max_windows]` (1 on each item's own windows,
            including their in-window zero padding, 0 on batch padding) and `num_samples` int64 `[B]`
            (16 kHz length before any padding; the token count follows from it via
            `reference_frame_count`).
        """
        if kwargs:
            logger.warning(f"Ignoring unsupported arguments of {type(self).__name__}: {sorted(kwargs)}.")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"`return_tensors` must be 'pt', 'np' or None, got {return_tensors!r}.")
        sampling_rate = _check_sampling_rate(sampling_rate)
        device = torch.device(device)

        waveforms = [
            self._prepare_waveform(item, index, sampling_rate, device)
            for index, item in enumerate(_split_batch(raw_audio))
        ]
        # Each item gets its own fbank call: MKL may pick other kernels for other batch sizes (notably with
        # MKL_CBWR=COMPATIBLE), so computing items alone is what guarantees batch == alone bit for bit.
        items = []
        for waveform in waveforms:
            fbank = extract_fbank(self._pad_to_windows(waveform), mean=self.fbank_mean, std=self.fbank_std).cpu()
            items.append({
                "input_features": fbank,
                "input_features_mask": torch.ones(fbank.shape[:2], dtype=torch.int64),
                "num_samples": torch.tensor([waveform.shape[-1]], dtype=torch.int64),
            })
        data = batch_features(items, self.padding_value)
        if return_tensors != "pt":
            data = {key: value.numpy() for key, value in data.items()}
        return BatchFeature(data=data, tensor_type=return_tensors)


# `save_pretrained` copies this file (and its relative imports) into the folder for `trust_remote_code=True`.
SemantiCodecFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

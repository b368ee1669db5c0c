"""Time arithmetic of SemantiCodec in one place: samples <-> fbank frames <-> codec frames <-> windows.

Every length rule of the codec follows from a few numbers of the published model: 16 kHz audio, one Kaldi fbank
frame every 10 ms, 1024 fbank frames per window (10.24 s), AudioMAE patches of 16 fbank frames (0.16 s, the
shortest input) and 8 patches across the mel bins. `SemantiCodecConfig` exposes the derived lengths as
properties (`window_samples`, `patch_samples`, `decode_overlap_samples`, `num_frames(...)`, ...); code without a
config at hand (the feature extractor, which saves only `sampling_rate` and `window_frames`; the `.sct` reader,
which must not import torch) calls the same functions here with its own values, so no module keeps a copy of a
literal that could drift from the others.

The `reference_*` functions reproduce the original code's float arithmetic on purpose: token counts and output
lengths must equal the original's, including its rounding quirks. Everything else is exact integer arithmetic.

Pure Python that imports nothing of this package: `save_pretrained` copies it next to the configuration, feature
extractor and model files (which import it relatively) for `trust_remote_code=True`.
"""

from __future__ import annotations

import math

# The published model's geometry: the defaults of `SemantiCodecConfig` and the fixed AudioMAE front end.
SAMPLING_RATE = 16000  # Hz
FBANK_FRAMES_PER_SECOND = 100  # Kaldi fbank frame shift: 10 ms
WINDOW_FRAMES = 1024  # fbank frames per encoder / decoder window
PATCH_SIZE = 16  # fbank frames (and mel bins) per AudioMAE patch
MEL_PATCHES = 8  # AudioMAE patches across the 128 mel bins: frames per time patch at `REFERENCE_TOKEN_RATE`
REFERENCE_TOKEN_RATE = 100  # tokens/s of unpooled patches; the original's stack factor is K = 100 / token_rate
DECODE_WINDOW_OVERLAP = 0.0625  # fraction of a decode window shared with the next one (the original's 1/16)


def fbank_hop_samples(sampling_rate: int = SAMPLING_RATE) -> int:
    """Samples between consecutive fbank frames (160 at 16 kHz): the unit every other length is a multiple of."""
    return int(sampling_rate) // FBANK_FRAMES_PER_SECOND


def window_samples(window_frames: int = WINDOW_FRAMES, sampling_rate: int = SAMPLING_RATE) -> int:
    """Samples per encoder window (163840: 10.24 s); inputs are zero-padded to whole windows."""
    return int(window_frames) * fbank_hop_samples(sampling_rate)


def patch_samples(patch_size: int = PATCH_SIZE, sampling_rate: int = SAMPLING_RATE) -> int:
    """Samples per AudioMAE time patch (2560: 0.16 s). The feature extractor refuses shorter inputs: the
    original's token budget rounds up to whole patches, and a clip under one patch has no whole patch."""
    return int(patch_size) * fbank_hop_samples(sampling_rate)


def padded_min_samples(input_rate: int, sampling_rate: int = SAMPLING_RATE, patch_size: int = PATCH_SIZE) -> int:
    """Length at `input_rate` that a too-short clip is zero-padded to: one patch plus a margin sample, so that the
    clip still holds a whole patch after resampling to `sampling_rate` rounds its length (2561 at 16 kHz)."""
    patch_seconds = patch_samples(patch_size, sampling_rate) / sampling_rate
    return math.ceil(patch_seconds * input_rate) + 1


def stack_factor(token_rate: float) -> float:
    """The original's K = 100 / token_rate (1 / 2 / 4), a float as in its arithmetic."""
    if token_rate <= 0:
        raise ValueError(f"`token_rate` must be positive, got {token_rate}.")
    return REFERENCE_TOKEN_RATE / token_rate


def num_windows(num_samples: int, samples_per_window: int) -> int:
    """Encoder windows for `num_samples`: `N // window_samples + 1`.

    The original always pads at least one sample, so an exact multiple of 10.24 s gains a whole empty window
    (it changes the last window's ids, so it is reproduced)."""
    return int(num_samples) // int(samples_per_window) + 1


def reference_frame_count(
    num_samples: int,
    token_rate: float,
    sampling_rate: int = SAMPLING_RATE,
    patch_size: int = PATCH_SIZE,
    mel_patches: int = MEL_PATCHES,
) -> int:
    """The original's token budget: frames (semantic + acoustic id pairs) for `num_samples`, before the encoder's
    cap at whole windows (see `SemantiCodecConfig.num_frames`).

    Reproduces the original float arithmetic on purpose (1.00 s -> 57 frames at 100 tokens/s, 10.24 s -> 520): the
    duration is "rounded up" to a 0.16 s patch with a float modulo, which adds a whole patch at exact multiples and
    sometimes one extra frame. Token counts must match the original's.
    """
    k = stack_factor(token_rate)
    patch_seconds = patch_samples(patch_size, sampling_rate) / sampling_rate
    duration = num_samples / sampling_rate
    duration = duration + (patch_seconds - duration % patch_seconds)
    return math.ceil(mel_patches * duration / patch_seconds / k)


def reference_output_samples(
    num_frames: int,
    token_rate: float,
    sampling_rate: int = SAMPLING_RATE,
    patch_size: int = PATCH_SIZE,
    mel_patches: int = MEL_PATCHES,
) -> int:
    """Samples the original's decode keeps for `num_frames` frames: `int(((T / 8) * 16 * 0.01 * K) * 16000)`
    (time patches x fbank frames per patch x 10 ms x sampling rate), evaluated left to right in double and
    truncated, as the original does."""
    k = stack_factor(token_rate)
    fbank_seconds = 1 / FBANK_FRAMES_PER_SECOND
    return int(((num_frames / mel_patches) * patch_size * fbank_seconds * k) * sampling_rate)


def decode_overlap_frames(frames_per_window: int, overlap_ratio: float = DECODE_WINDOW_OVERLAP) -> int:
    """Frames a decode window shares with the next: `int(W * overlap_ratio)` (32 of 512 in the original)."""
    return int(frames_per_window * overlap_ratio)


def decode_overlap_samples(frames_per_window: int, overlap_ratio: float, samples_per_window: int) -> int:
    """Samples of the cross-fade between consecutive decoded windows: the overlap frames' share of a window,
    `int(W * overlap_ratio) * window_samples // W` (10240, 0.64 s, for every published variant).

    Windows start every `W - overlap` frames, so the cross-fade must span exactly the overlapping frames' audio;
    derived from the same overlap as the window split, it stays aligned whatever `decode_window_overlap` is. (A
    decoded window is 32 samples longer than `window_samples`, so later windows land 32 samples late each, as
    in the original.)"""
    return decode_overlap_frames(frames_per_window, overlap_ratio) * int(samples_per_window) // int(frames_per_window)


# The published model's derived lengths, for code that has no config (tests, recipes, the `.sct` header bounds).
FBANK_HOP_SAMPLES = fbank_hop_samples()  # 160
WINDOW_SAMPLES = window_samples()  # 163840
WINDOW_SECONDS = WINDOW_SAMPLES / SAMPLING_RATE  # 10.24
PATCH_SAMPLES = patch_samples()  # 2560
PATCH_SECONDS = PATCH_SAMPLES / SAMPLING_RATE  # 0.16
MIN_NUM_SAMPLES = PATCH_SAMPLES  # the shortest 16 kHz input the feature extractor accepts
# The same for every published token rate: 32 / 16 / 8 overlap frames of 320 / 640 / 1280 samples.
DECODE_OVERLAP_SAMPLES = decode_overlap_samples(
    (WINDOW_FRAMES // PATCH_SIZE) * MEL_PATCHES, DECODE_WINDOW_OVERLAP, WINDOW_SAMPLES
)  # 10240


__all__ = [
    "SAMPLING_RATE",
    "FBANK_FRAMES_PER_SECOND",
    "WINDOW_FRAMES",
    "PATCH_SIZE",
    "MEL_PATCHES",
    "REFERENCE_TOKEN_RATE",
    "DECODE_WINDOW_OVERLAP",
    "FBANK_HOP_SAMPLES",
    "WINDOW_SAMPLES",
    "WINDOW_SECONDS",
    "PATCH_SAMPLES",
    "PATCH_SECONDS",
    "MIN_NUM_SAMPLES",
    "DECODE_OVERLAP_SAMPLES",
    "fbank_hop_samples",
    "window_samples",
    "patch_samples",
    "padded_min_samples",
    "stack_factor",
    "num_windows",
    "reference_frame_count",
    "reference_output_samples",
    "decode_overlap_frames",
    "decode_overlap_samples",
]

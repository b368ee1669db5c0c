"""Long-audio decoding of SemantiCodec: the original's overlapping decode windows, linear cross-fade and trim.

The numbers follow the original bit for bit (spec section 13), including its drift: a decoded window is
163872 samples (160 x 1024 + 32) while windows start every `W - overlap` frames, so each later window lands
32 samples later than its codes' time, and the 10240-sample cross-fade includes those 32 samples.

The window split and the cross-fade must use the same overlap: the codec takes both from its config
(`decode_windows(num_frames, config)` and `config.decode_overlap_samples`); the lengths come from `codec_timing`.
"""

from __future__ import annotations

from typing import Any, List, Tuple

import torch

from .codec_timing import DECODE_OVERLAP_SAMPLES, DECODE_WINDOW_OVERLAP, SAMPLING_RATE, decode_overlap_frames
from .codec_timing import reference_output_samples as _reference_output_samples

# The published model's settings (`SemantiCodecConfig` defaults), for callers without a config.
DEFAULT_OVERLAP_RATIO = DECODE_WINDOW_OVERLAP
DEFAULT_OVERLAP_SAMPLES = DECODE_OVERLAP_SAMPLES  # 10240: the 0.64 s cross-fade of the original


def split_into_windows(
    num_frames: int, frames_per_window: int, overlap_ratio: float = DEFAULT_OVERLAP_RATIO
) -> List[Tuple[int, int]]:
    """Frame ranges `[start, end)` of the original's decode windows.

    Windows of `W` frames start every `W - int(W * overlap_ratio)` frames while a full window still leaves
    frames after it; the remainder (1..W frames) is the last window. T == W gives one window, T == W + 1 a
    second window of `overlap + 1` frames. Zero frames give no window.
    """
    if num_frames < 0 or frames_per_window < 1:
        raise ValueError(f"need num_frames >= 0 and frames_per_window >= 1, got {num_frames}, {frames_per_window}.")
    overlap = decode_overlap_frames(frames_per_window, overlap_ratio)
    if not 0 <= overlap < frames_per_window:
        raise ValueError(
            f"overlap_ratio={overlap_ratio} gives {overlap} overlap frames for {frames_per_window}-frame windows."
        )
    windows, start = [], 0
    while start + frames_per_window < num_frames:
        windows.append((start, start + frames_per_window))
        start += frames_per_window - overlap
    if num_frames - start > 0:
        windows.append((start, num_frames))
    return windows


def decode_windows(num_frames: int, config: Any) -> List[Tuple[int, int]]:
    """`split_into_windows` with a `SemantiCodecConfig`'s window length and `decode_window_overlap`: the windows
    `decode` and `decode_stream` run, which `config.decode_overlap_samples` cross-fades."""
    return split_into_windows(num_frames, config.frames_per_window, config.decode_window_overlap)


def linear_ramp(num: int, start: float, stop: float, device=None) -> torch.Tensor:
    """`numpy.linspace(start, stop, num)` bit for bit, in float64 (torch.linspace rounds differently)."""
    if num == 1:
        return torch.full((1,), float(start), dtype=torch.float64, device=device)
    step = (stop - start) / (num - 1)
    ramp = torch.arange(num, dtype=torch.float64, device=device) * step + start
    ramp[-1] = stop
    return ramp


class StreamingOverlapAdd:
    """The original's cross-fade, one window at a time: `push(window)` returns the samples that are final
    (everything but the last `overlap_samples`, which the next window fades into), `finish()` the rest.

    The arithmetic is the original's: the running output's last `overlap_samples` times `linspace(1, 0)`, the
    next window's first ones times `linspace(0, 1)` (float64 ramps, each product rounded back to the waveform
    dtype), summed, then the rest of the window appended.
    """

    def __init__(self, overlap_samples: int):
        self.overlap = int(overlap_samples)
        self.tail: torch.Tensor = None
        self._ramps = None

    def push(self, window: torch.Tensor) -> torch.Tensor:
        if window.ndim != 1 or window.shape[0] == 0:
            raise ValueError(f"a window must be a non-empty 1-D waveform, got {list(window.shape)}.")
        if self.overlap <= 0:
            return window.clone()
        if self.overlap > window.shape[0]:
            raise ValueError(f"overlap_samples={self.overlap} exceeds the window length {window.shape[0]}.")
        if self.tail is None:
            joined = window
        else:
            if self._ramps is None:
                self._ramps = (linear_ramp(self.overlap, 1.0, 0.0, window.device),
                               linear_ramp(self.overlap, 0.0, 1.0, window.device))
            fade_out, fade_in = self._ramps
            faded = (self.tail.double() * fade_out).to(window.dtype) + (window[: self.overlap].double() * fade_in).to(
                window.dtype)
            joined = torch.cat([faded, window[self.overlap:]])
        self.tail = joined[-self.overlap:].clone()
        return joined[: -self.overlap].clone()

    def finish(self) -> torch.Tensor:
        tail, self.tail = self.tail, None
        return tail if tail is not None else torch.zeros(0)


def overlap_add(windows: torch.Tensor, overlap_samples: int) -> torch.Tensor:
    """Join waveforms `[n, L]` (one per decode window) into `[L + (n - 1) (L - overlap)]` with the original's
    linear cross-fade (see `StreamingOverlapAdd`, which does the same one window at a time). The codec passes
    `config.decode_overlap_samples`, the audio of the frames its windows share."""
    if windows.ndim != 2 or windows.shape[0] == 0:
        raise ValueError(f"windows must be [n >= 1, samples], got {list(windows.shape)}.")
    if windows.shape[0] == 1 or overlap_samples <= 0:
        return windows.reshape(-1).clone()
    joiner = StreamingOverlapAdd(overlap_samples)
    return torch.cat([joiner.push(window) for window in windows] + [joiner.finish()])


def reference_output_samples(num_frames: int, token_rate: int, sampling_rate: int = SAMPLING_RATE) -> int:
    """Samples the original keeps for `num_frames` frames: `int(((T / 8) * 16 * 0.01 * K) * 16000)`, evaluated
    left to right in double and truncated (K = 100 / token_rate); `SemantiCodecConfig.output_num_samples`."""
    return _reference_output_samples(num_frames, token_rate, sampling_rate)


__all__ = [
    "StreamingOverlapAdd",
    "DEFAULT_OVERLAP_RATIO",
    "DEFAULT_OVERLAP_SAMPLES",
    "decode_windows",
    "split_into_windows",
    "linear_ramp",
    "overlap_add",
    "reference_output_samples",
]

"""Resampling to the codec rate.

`resample_reference` re-derives torchaudio's default `functional.resample` (windowed sinc with a
Hann window, 6 zero crossings, roll-off 0.99), which the original SemantiCodec front end uses. It is
written here because torchaudio is not a dependency; the float32 arithmetic follows the same order
of operations so the kernel and the output length agree with torchaudio. `resample_soxr` is a
faster, higher-quality alternative that is NOT numerically equal to the reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
# Output steps per convolution call. One call over a whole signal materialises ~14 floats per input sample
# (5 GB for an hour at 48 kHz); longer signals are convolved in blocks of this many steps, which gives the
# same output values. Shorter signals take the unchanged single-call path.
RESAMPLE_BLOCK_STEPS = 1 << 20
# The reference kernel has one row per output phase: (new / gcd) x (2 * width + orig / gcd) taps. Rates that share
# no large factor with 16 kHz (e.g. 7919 Hz: 127M taps, 44101 Hz: 700M) would need gigabytes and hours of compute,
# in the original too; above this many taps the reference resampler refuses with a way out.
MAX_KERNEL_TAPS = 1 << 24


def _check_rates(orig_freq: int, new_freq: int) -> tuple[int, int]:
    for name, value in (("orig_freq", orig_freq), ("new_freq", new_freq)):
        if isinstance(value, bool) or not float(value).is_integer() or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer number of Hz, got {value!r}.")
    return int(orig_freq), int(new_freq)


def sinc_hann_kernel(
    orig_freq: int,
    new_freq: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, int]:
    """Polyphase kernel `[n, 1, 2 * width + o]` and `width`, with `o/n` the reduced rate ratio.

    Row `j` produces output phase `j`: it samples a Hann-windowed sinc, low-passed at
    `0.99 * min(o, n)`, at the input offsets seen by that phase. Computed in `dtype` (the waveform
    dtype), like the reference, so the rounding of the taps is the same.
    """
    orig_freq, new_freq = _check_rates(orig_freq, new_freq)
    gcd = math.gcd(orig_freq, new_freq)
    o, n = orig_freq // gcd, new_freq // gcd
    base = min(o, n) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * o / base)
    if n * (2 * width + o) > MAX_KERNEL_TAPS:
        raise ValueError(
            f"Resampling {orig_freq} Hz -> {new_freq} Hz with the reference (torchaudio-exact) resampler needs a "
            f"{n} x {2 * width + o} kernel ({n * (2 * width + o) / 1e6:.0f}M taps), because the two rates share only "
            f"the factor {gcd}. Use the soxr resampler instead (`resampler=\"soxr\"` in the feature extractor, "
            "`--resampler soxr` on the command line), or resample the file to a common rate such as 16000 Hz first."
        )

    taps = torch.arange(-width, width + o, dtype=dtype, device=device)[None, None] / o
    phases = torch.arange(0, -n, -1, dtype=dtype, device=device)[:, None, None] / n
    t = (phases + taps) * base
    t = t.clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones((), dtype=dtype, device=device), t.sin() / t)
    return sinc * (window * (base / o)), width


def reference_output_length(num_samples: int, orig_freq: int, new_freq: int) -> int:
    """Output length of the reference: `ceil(n * N / o)`, with the quotient rounded to float32 first.

    The reference takes the ceiling of a float32 tensor built from the Python quotient, so above
    ~2**22 output samples (about 4.4 minutes at 16 kHz) the length can be one sample shorter than
    the exact ceiling. Reproduced so token counts agree on long files.
    """
    orig_freq, new_freq = _check_rates(orig_freq, new_freq)
    gcd = math.gcd(orig_freq, new_freq)
    o, n = orig_freq // gcd, new_freq // gcd
    return int(math.ceil(np.float32(n * num_samples / o)))


def resample_reference(waveform: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Resample `waveform [..., N]` (floating point) along the last axis, like the reference.

    All leading dims are treated as independent signals and processed in one convolution.
    Returns the input unchanged when the rates are equal.
    """
    orig_freq, new_freq = _check_rates(orig_freq, new_freq)
    if not torch.is_floating_point(waveform):
        raise ValueError(f"`waveform` must be a floating-point tensor, got {waveform.dtype}.")
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(orig_freq, new_freq)
    o = orig_freq // gcd
    kernel, width = sinc_hann_kernel(orig_freq, new_freq, dtype=waveform.dtype, device=waveform.device)

    shape = waveform.shape
    flat = waveform.reshape(-1, 1, shape[-1])
    flat = F.pad(flat, (width, width + o))
    steps = (flat.shape[-1] - kernel.shape[-1]) // o + 1
    if steps <= RESAMPLE_BLOCK_STEPS:
        phases = F.conv1d(flat, kernel, stride=o)  # [signals, n, steps]
    else:  # step j reads padded samples [j * o, j * o + kernel width)
        phases = torch.cat(
            [
                F.conv1d(flat[..., j * o : (min(j + RESAMPLE_BLOCK_STEPS, steps) - 1) * o + kernel.shape[-1]],
                         kernel, stride=o)
                for j in range(0, steps, RESAMPLE_BLOCK_STEPS)
            ],
            dim=-1,
        )
    out = phases.transpose(1, 2).reshape(flat.shape[0], -1)  # interleave the n phases
    out = out[:, : reference_output_length(shape[-1], orig_freq, new_freq)]
    return out.reshape(*shape[:-1], out.shape[-1])


def resample_soxr(waveform: torch.Tensor, orig_freq: int, new_freq: int, quality: str = "HQ") -> torch.Tensor:
    """Resample `waveform [..., N]` with libsoxr (numpy, CPU). Not bit-compatible with the reference.

    Output length is libsoxr's (can differ from `reference_output_length` by one sample).
    """
    import soxr

    orig_freq, new_freq = _check_rates(orig_freq, new_freq)
    if orig_freq == new_freq:
        return waveform
    shape = waveform.shape
    signals = waveform.detach().reshape(-1, shape[-1]).to("cpu", torch.float32).numpy()
    out = soxr.resample(np.ascontiguousarray(signals.T), orig_freq, new_freq, quality=quality)
    out = torch.from_numpy(np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, signals.shape[0]).T))
    return out.reshape(*shape[:-1], out.shape[-1]).to(device=waveform.device, dtype=waveform.dtype)


RESAMPLERS = {"reference": resample_reference, "soxr": resample_soxr}


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int, method: str = "reference") -> torch.Tensor:
    """Dispatch to `resample_reference` ("reference", exact) or `resample_soxr` ("soxr")."""
    if method not in RESAMPLERS:
        raise ValueError(f"Unknown resampler {method!r}; choose one of {sorted(RESAMPLERS)}.")
    return RESAMPLERS[method](waveform, orig_freq, new_freq)

"""Kaldi-style log-mel filterbank of the SemantiCodec / AudioMAE front end, batched, in torch.

Re-derives the configuration the original code passes to `torchaudio.compliance.kaldi.fbank`
(16 kHz, 25 ms Hann frames every 10 ms, 512-point FFT, 128 mel bins from 20 Hz to Nyquist, no
dither, log floor at float32 eps) without torchaudio. Every step is float32, in the reference's
order of operations, with the same torch kernels, so on the same machine the features agree with
the reference to a few float32 ulps.

Across machines they do not, and neither does the reference: mel bins whose energy sits near the
float32 noise floor of the FFT (raw log-energy about -15, common with tonal audio) move by up to
~6e-4 (normalised) between MKL's AVX-512 and SSE4.2 FFT code paths. `MKL_CBWR=COMPATIBLE`, set
before the first MKL call, makes x86 machines agree.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from .codec_timing import FBANK_HOP_SAMPLES, SAMPLING_RATE, WINDOW_FRAMES, WINDOW_SAMPLES

FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = FBANK_HOP_SAMPLES  # 10 ms
FFT_LENGTH = 512  # frame length rounded up to a power of two
NUM_MEL_BINS = 128
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
FBANK_MEAN = -4.2677393  # AudioSet statistics used by AudioMAE
FBANK_STD = 4.5689974
# Signals longer than this many fbank frames (16 windows, ~2.7 min) are processed in blocks of it: the frame
# matrix, FFT and power spectrum cost ~50 bytes per input sample, i.e. ~3 GB for an hour. Frames are
# independent, so blocks give the same frames (up to the last float32 bit: MKL picks FFT/GEMM kernels by problem
# size); shorter signals take the unchanged single-call path.
FBANK_BLOCK_FRAMES = 16 * WINDOW_FRAMES


def _mel(freq):
    """Kaldi mel scale `1127 ln(1 + f / 700)` (works on Python floats and tensors)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


def kaldi_mel_banks(
    num_mel_bins: int = NUM_MEL_BINS,
    fft_length: int = FFT_LENGTH,
    sampling_rate: int = SAMPLING_RATE,
    low_freq: float = LOW_FREQ,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Triangular mel filters `[num_mel_bins, fft_length // 2 + 1]` (float32), Kaldi layout.

    Triangles are linear in mel; edges equally spaced in mel from `low_freq` to `high_freq`
    (`<= 0` means offset from Nyquist). The Nyquist FFT bin always gets weight 0, as in Kaldi.
    """
    nyquist = 0.5 * sampling_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)

    index = torch.arange(num_mel_bins).unsqueeze(1)  # int64, promoted to float32 below like the reference
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    fft_mel = _mel((sampling_rate / fft_length) * torch.arange(fft_length / 2)).unsqueeze(0)

    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))  # Nyquist bin


def kaldi_fbank(waveforms: torch.Tensor) -> torch.Tensor:
    """Log-mel fbank `[B, M, 128]` of 16 kHz float signals `[B, P]` (or `[P]` -> `[1, M, 128]`).

    `M = 1 + (P - 400) // 160` ("snip edges": only frames fully inside the signal). Rows are
    independent, so a batch gives the same values as computing each row alone.
    """
    if waveforms.dim() == 1:
        waveforms = waveforms.unsqueeze(0)
    if waveforms.dim() != 2:
        raise ValueError(f"`waveforms` must be [batch, samples], got shape {tuple(waveforms.shape)}.")
    if waveforms.shape[-1] < FRAME_LENGTH:
        raise ValueError(f"Need at least {FRAME_LENGTH} samples for one fbank frame, got {waveforms.shape[-1]}.")
    waveforms = waveforms.to(torch.float32)
    device = waveforms.device
    eps = torch.tensor(torch.finfo(torch.float32).eps, device=device)

    frames = waveforms.unfold(-1, FRAME_LENGTH, FRAME_SHIFT)  # [B, M, 400], a view
    frames = frames - frames.mean(dim=-1, keepdim=True)  # remove each frame's DC offset
    previous = F.pad(frames, (1, 0), mode="replicate")[..., :-1]  # x[max(j - 1, 0)]
    frames = frames - PREEMPHASIS * previous
    window = torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float32, device=device)
    frames = F.pad(frames * window, (0, FFT_LENGTH - FRAME_LENGTH))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # [B, M, 257]

    banks = kaldi_mel_banks().to(device)
    energies = torch.matmul(power, banks.T)
    return torch.maximum(energies, eps).log()


def _check_padded(waveforms: torch.Tensor) -> torch.Tensor:
    if waveforms.dim() == 1:
        waveforms = waveforms.unsqueeze(0)
    length = waveforms.shape[-1]
    if length == 0 or length % WINDOW_SAMPLES:
        raise ValueError(f"Signals must be padded to a positive multiple of {WINDOW_SAMPLES} samples, got {length}.")
    return waveforms.to(torch.float32)


def signal_means(waveforms: torch.Tensor) -> torch.Tensor:
    """`[B, 1]` means of padded signals `[B, L]`: one full float32 reduction per row, the reference's
    `waveform.mean()`, kept per row so the value does not depend on how many rows are batched together."""
    waveforms = _check_padded(waveforms)
    return torch.stack([row.mean() for row in waveforms]).unsqueeze(-1)


def iter_normalised_fbank(
    waveforms: torch.Tensor,
    means: Optional[torch.Tensor] = None,
    mean: float = FBANK_MEAN,
    std: float = FBANK_STD,
) -> Iterator[torch.Tensor]:
    """`extract_fbank` piece by piece: yields `[B, frames, 128]` blocks of `FBANK_BLOCK_FRAMES` frames (16
    windows; the last block shorter) whose concatenation is `extract_fbank(waveforms)` exactly, computing only
    one block's frames at a time. `means`: the rows' `signal_means` (computed here when omitted)."""
    waveforms = _check_padded(waveforms)
    if means is None:
        means = signal_means(waveforms)
    length = waveforms.shape[-1]
    frames = 1 + (length - FRAME_LENGTH) // FRAME_SHIFT
    target = WINDOW_FRAMES * (length // WINDOW_SAMPLES)
    for start in range(0, target, FBANK_BLOCK_FRAMES):
        stop = min(start + FBANK_BLOCK_FRAMES, target)
        if frames <= FBANK_BLOCK_FRAMES:  # the unchanged single-call path of short signals
            block = kaldi_fbank(waveforms - means)
        else:
            last = min(stop, frames)
            block = kaldi_fbank(waveforms[:, start * FRAME_SHIFT : (last - 1) * FRAME_SHIFT + FRAME_LENGTH] - means)
        block = F.pad(block, (0, 0, 0, stop - start - block.shape[1]))  # all-zero log-mel frames past the end
        yield (block - mean) / (std * 2)


def extract_fbank(
    waveforms: torch.Tensor,
    mean: float = FBANK_MEAN,
    std: float = FBANK_STD,
) -> torch.Tensor:
    """Normalised encoder input `[B, 1024 * n_win, 128]` from signals already padded to `163840 * n_win`.

    Per row, like the reference: subtract the signal's mean (padding included, so padding becomes
    `-mean`), fbank, append all-zero log-mel frames up to `1024 * n_win`, then `(f - mean) / (2 * std)`.
    """
    return torch.cat(list(iter_normalised_fbank(waveforms, mean=mean, std=std)), dim=1)

"""The 64-bin log-magnitude mel of the VAE / vocoder domain: what the decoder outputs and what codec training
targets (the original's Tacotron-style STFT, never run at inference).

16 kHz, n_fft 1024, hop 160, periodic Hann 1024, reflect padding of 512 samples on both sides, magnitude (not
power), Slaney-scale Slaney-normalised mel filters 0-8000 Hz (librosa's defaults, built here with transformers'
`mel_filter_bank`), natural log with a 1e-5 floor. A 10.24 s window gives 1025 frames; models use the first 1024.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from transformers.audio_utils import mel_filter_bank

VAE_MEL_SAMPLING_RATE = 16000
VAE_MEL_N_FFT = 1024
VAE_MEL_HOP = 160
VAE_MEL_BINS = 64
VAE_MEL_FMAX = 8000.0
VAE_MEL_FLOOR = 1e-5


@lru_cache(maxsize=None)
def vae_mel_filters() -> torch.Tensor:
    """`[513, 64]` filters, float32 (librosa `filters.mel(sr=16000, n_fft=1024, n_mels=64, fmax=8000)`, transposed)."""
    filters = mel_filter_bank(
        num_frequency_bins=VAE_MEL_N_FFT // 2 + 1, num_mel_filters=VAE_MEL_BINS, min_frequency=0.0,
        max_frequency=VAE_MEL_FMAX, sampling_rate=VAE_MEL_SAMPLING_RATE, norm="slaney", mel_scale="slaney",
    )
    return torch.from_numpy(filters).float()


def vae_log_mel(waveform: torch.Tensor) -> torch.Tensor:
    """16 kHz waveforms `[..., samples]` -> log-mel `[..., frames, 64]` with `frames = samples // 160 + 1`."""
    if waveform.shape[-1] < VAE_MEL_N_FFT // 2 + 1:
        raise ValueError(f"need at least {VAE_MEL_N_FFT // 2 + 1} samples for reflect padding, got {waveform.shape[-1]}.")
    leading = waveform.shape[:-1]
    signal = waveform.reshape(-1, waveform.shape[-1]).float().clamp(-1.0, 1.0)
    signal = torch.nn.functional.pad(signal.unsqueeze(1), (VAE_MEL_N_FFT // 2, VAE_MEL_N_FFT // 2), mode="reflect")
    spectrum = torch.stft(
        signal.squeeze(1), n_fft=VAE_MEL_N_FFT, hop_length=VAE_MEL_HOP, win_length=VAE_MEL_N_FFT,
        window=torch.hann_window(VAE_MEL_N_FFT, periodic=True, dtype=torch.float32, device=signal.device),
        center=False, return_complex=True,
    )
    magnitude = spectrum.abs()  # [B, 513, frames]
    mel = torch.matmul(magnitude.transpose(1, 2), vae_mel_filters().to(signal.device))
    return torch.log(mel.clamp(min=VAE_MEL_FLOOR)).reshape(*leading, -1, VAE_MEL_BINS)


__all__ = ["vae_log_mel", "vae_mel_filters", "VAE_MEL_BINS", "VAE_MEL_HOP"]

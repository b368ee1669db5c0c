"""Front end pieces: reference resampler, Kaldi fbank, token budget and window count."""

import math

import numpy as np
import pytest
import torch

from semanticodec_hf.feature_extraction_semanticodec import reference_frame_count, reference_num_windows
from semanticodec_hf.kaldi_fbank import (
    FRAME_LENGTH,
    FRAME_SHIFT,
    WINDOW_SAMPLES,
    extract_fbank,
    kaldi_fbank,
    kaldi_mel_banks,
)
from semanticodec_hf.resampling import (
    reference_output_length,
    resample,
    resample_reference,
    resample_soxr,
    sinc_hann_kernel,
)


# ----------------------------------------------------------------------------- resampling
def _slow_resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Spec 2.1 written as plain float64 loops: output m = phase j of step q, taps i around q*o."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    base = min(o, n) * 0.99
    width = math.ceil(6 * o / base)
    out = np.zeros(math.ceil(n * len(x) / o))
    for m in range(len(out)):
        q, j = divmod(m, n)
        for i in range(-width, width + o):
            t = min(6.0, max(-6.0, (-j / n + i / o) * base))
            sinc = 1.0 if t == 0 else math.sin(math.pi * t) / (math.pi * t)
            tap = sinc * math.cos(t * math.pi / 12) ** 2 * base / o
            if 0 <= q * o + i < len(x):
                out[m] += tap * x[q * o + i]
    return out


@pytest.mark.parametrize("orig,new,length", [(3, 2, 40), (2, 3, 30), (48000, 16000, 120), (8000, 16000, 50)])
def test_resample_matches_slow_formula(orig, new, length):
    x = np.random.default_rng(orig + new).uniform(-1, 1, length).astype(np.float32)
    fast = resample_reference(torch.from_numpy(x), orig, new).double().numpy()
    slow = _slow_resample(x.astype(np.float64), orig, new)
    assert fast.shape == slow.shape
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-6)


def test_resample_44100_matches_slow_formula():
    # o = 441: the float32 kernel (as in the reference) rounds t = i/o - j/n, so taps differ from
    # the float64 formula by ~1e-7 relative, summed over 475 taps -> a few 1e-6.
    x = np.random.default_rng(1).uniform(-1, 1, 200).astype(np.float32)
    fast = resample_reference(torch.from_numpy(x), 44100, 16000).double().numpy()
    np.testing.assert_allclose(fast, _slow_resample(x.astype(np.float64), 44100, 16000), rtol=0, atol=1e-5)


def test_resample_identity_when_rates_equal():
    x = torch.randn(2, 1000)
    assert resample_reference(x, 16000, 16000) is x
    assert resample_soxr(x, 16000, 16000) is x


@pytest.mark.parametrize("orig,new", [(44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000), (16000, 24000)])
@pytest.mark.parametrize("length", [1, 2, 441, 1000, 12345])
def test_resample_output_length(orig, new, length):
    g = math.gcd(orig, new)
    expected = math.ceil((new // g) * length / (orig // g))
    assert resample_reference(torch.zeros(length), orig, new).shape == (expected,)
    assert reference_output_length(length, orig, new) == expected


def test_output_length_rounds_quotient_to_float32_like_reference():
    # Above 2**23 output samples float32 has no fractional bits, so a quotient k + f rounds to k and
    # the reference keeps k samples instead of k + 1 (rare; reproduced for token-count parity).
    hits = [
        n
        for n in range(int(2**23 * 441 / 160), int(2**23 * 441 / 160) + 500)
        if reference_output_length(n, 44100, 16000) != math.ceil(160 * n / 441)
    ]
    assert hits, "expected some lengths where float32 rounding shortens the output"
    assert all(reference_output_length(n, 44100, 16000) == math.ceil(160 * n / 441) - 1 for n in hits)


@pytest.mark.parametrize("orig", [44100, 48000, 8000])
def test_resampled_sine_stays_clean(orig):
    seconds = 0.5
    x = np.sin(2 * np.pi * 1000 * np.arange(int(orig * seconds)) / orig).astype(np.float32)
    y = resample_reference(torch.from_numpy(x), orig, 16000).numpy()
    analytic = np.sin(2 * np.pi * 1000 * np.arange(len(y)) / 16000)
    inner = slice(100, -100)  # away from the zero-padded edges
    noise = y[inner] - analytic[inner]
    snr_db = 10 * np.log10(np.sum(analytic[inner] ** 2) / np.sum(noise**2))
    assert snr_db > 60, snr_db  # measured 68 dB (down) / 77 dB (up): the filter's passband ripple


def test_resample_soxr_is_close_but_separate():
    x = np.sin(2 * np.pi * 1000 * np.arange(44100) / 44100).astype(np.float32)
    y = resample(torch.from_numpy(x), 44100, 16000, method="soxr").numpy()
    analytic = np.sin(2 * np.pi * 1000 * np.arange(len(y)) / 16000)
    assert abs(len(y) - 16000) <= 1
    np.testing.assert_allclose(y[100:-100], analytic[100:-100], atol=1e-3)
    with pytest.raises(ValueError, match="Unknown resampler"):
        resample(torch.from_numpy(x), 44100, 16000, method="linear")


def test_resample_is_linear_and_batched_over_leading_dims():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1500, generator=g), torch.randn(1500, generator=g)
    mixed = resample_reference(0.3 * a - 2.0 * b, 44100, 16000)
    separate = 0.3 * resample_reference(a, 44100, 16000) - 2.0 * resample_reference(b, 44100, 16000)
    torch.testing.assert_close(mixed, separate, rtol=0, atol=1e-5)
    stacked = resample_reference(torch.stack([a, b]).reshape(2, 1, 1500), 44100, 16000)
    assert stacked.shape == (2, 1, 545)
    # rows are independent; equal up to float rounding (MKL may use other kernels per batch size)
    torch.testing.assert_close(stacked[1, 0], resample_reference(b, 44100, 16000), rtol=0, atol=1e-6)


@pytest.mark.parametrize("orig,new", [(44100, 16000), (8000, 16000), (3, 2)])
def test_kernel_symmetry_and_unit_gain(orig, new):
    kernel, width = sinc_hann_kernel(orig, new, dtype=torch.float64)
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    kernel = kernel[:, 0]
    assert kernel.shape == (n, 2 * width + o)
    # Phase 0 is centred on tap i = 0 (index width); phase n - j mirrors phase j about i = o / 2.
    torch.testing.assert_close(kernel[0, : 2 * width + 1], kernel[0, : 2 * width + 1].flip(0), rtol=0, atol=1e-12)
    for j in range(1, n):
        torch.testing.assert_close(kernel[n - j, 1:], kernel[j, 1:].flip(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(kernel.sum(1), torch.ones(n, dtype=torch.float64), rtol=0, atol=2e-2)
    # The float32 kernel (the reference's) only adds rounding of t = i/o - j/n (|t| <= 6).
    kernel32, _ = sinc_hann_kernel(orig, new)
    torch.testing.assert_close(kernel32[:, 0].double(), kernel, rtol=0, atol=5e-6)


@pytest.mark.parametrize("bad", [0, -16000, 22050.5])
def test_resample_rejects_bad_rates(bad):
    with pytest.raises(ValueError, match="positive integer"):
        resample_reference(torch.zeros(100), bad, 16000)


# ----------------------------------------------------------------------------- fbank
def test_mel_banks_layout():
    banks = kaldi_mel_banks()
    assert banks.shape == (128, 257) and banks.dtype == torch.float32
    assert torch.all(banks[:, -1] == 0)  # Nyquist bin unused
    assert torch.all(banks >= 0) and banks.max() <= 1
    assert torch.all(banks[:, 0] == 0)  # 0 Hz is below the 20 Hz lower edge
    # Kaldi quirk kept: mel bin 3 (63-92 Hz) lies between the FFT bins at 62.5 and 93.75 Hz, so it is
    # empty and its log-energy is always log(eps).
    empty = (banks.sum(dim=1) == 0).nonzero().flatten().tolist()
    assert empty == [3]
    peaks = banks.argmax(dim=1)[banks.sum(dim=1) > 0]
    assert torch.all(peaks[1:] >= peaks[:-1])  # centres increase with the bin index


def test_fbank_frame_count_and_batch_rows_independent():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16000, generator=g)
    out = kaldi_fbank(x)
    assert out.shape == (3, 1 + (16000 - FRAME_LENGTH) // FRAME_SHIFT, 128)
    # rows are independent; equal up to float rounding (MKL may use other kernels per batch size, which is
    # why the feature extractor computes each item alone for its bit-exact batch == alone guarantee)
    for row in range(3):
        torch.testing.assert_close(out[row], kaldi_fbank(x[row])[0], rtol=0, atol=1e-5)


def test_fbank_of_a_sine_peaks_at_its_mel_bin():
    t = torch.arange(16000) / 16000
    out = kaldi_fbank(torch.sin(2 * math.pi * 1000 * t))[0]
    peak_bin = int(kaldi_mel_banks()[:, 32].argmax())  # FFT bin 32 = 1000 Hz
    assert torch.all(out.argmax(dim=1) == peak_bin)


def test_extract_fbank_constants_for_padding_and_silence():
    silent = extract_fbank(torch.zeros(1, WINDOW_SAMPLES))[0]
    assert silent.shape == (1024, 128)
    torch.testing.assert_close(silent[:-2], torch.full((1022, 128), -1.2775938), rtol=0, atol=1e-6)
    torch.testing.assert_close(silent[-2:], torch.full((2, 128), 0.46703236), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="multiple of 163840"):
        extract_fbank(torch.zeros(1, 1000))


# ----------------------------------------------------------------------------- token budget
@pytest.mark.parametrize(
    "num_samples,frames",
    [
        (2560, (16, 8, 4)),
        (5120, (24, 12, 6)),
        (16000, (57, 29, 15)),
        (160000, (504, 252, 126)),
        (163839, (512, 256, 128)),
        (163840, (520, 260, 130)),
        (192800, (608, 304, 152)),
        (256000, (800, 400, 200)),
    ],
)
def test_reference_frame_count_spec_table(num_samples, frames):
    assert tuple(reference_frame_count(num_samples, rate) for rate in (100, 50, 25)) == frames


def test_fixture_token_counts():
    # fixture tr100: 12 s -> 600 frames; fixture tr50: 25 s -> 628 frames (see their `tokens`).
    assert reference_frame_count(192000, 100) == 600
    assert reference_frame_count(400000, 50) == 628


@pytest.mark.parametrize(
    "num_samples,windows", [(2560, 1), (163839, 1), (163840, 2), (163841, 2), (327679, 2), (327680, 3)]
)
def test_reference_num_windows(num_samples, windows):
    assert reference_num_windows(num_samples) == windows

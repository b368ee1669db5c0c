"""Hardening of the library entry points beyond the per-module error tests: long inputs run in bounded memory
with unchanged results, rates the reference resampler cannot afford are refused with the way out, and the model
refuses non-finite features, bad batch sizes and step counts instead of producing garbage."""

import numpy as np
import pytest
import torch

from semanticodec_hf import SemantiCodecFeatureExtractor
from semanticodec_hf import kaldi_fbank, modeling_semanticodec, resampling


def test_long_inputs_are_processed_blockwise_with_identical_features(monkeypatch):
    """Hours of audio take the block path (bounded memory); it must give exactly the single-call features."""
    rng = np.random.default_rng(0)
    audio = (0.2 * rng.standard_normal((2, int(23.3 * 44100)))).astype(np.float32)
    fe = SemantiCodecFeatureExtractor()
    whole = fe(audio, sampling_rate=44100)["input_features"]
    calls = []
    original = kaldi_fbank.kaldi_fbank

    def spy(waveforms):
        calls.append(waveforms.shape[-1])
        return original(waveforms)

    monkeypatch.setattr(kaldi_fbank, "FBANK_BLOCK_FRAMES", 700)
    monkeypatch.setattr(kaldi_fbank, "kaldi_fbank", spy)
    monkeypatch.setattr(resampling, "RESAMPLE_BLOCK_STEPS", 1001)
    blocked = fe(audio, sampling_rate=44100)["input_features"]
    assert len(calls) == 5 and max(calls) == 699 * 160 + 400  # 3 windows = 3070 frames in blocks of 700
    # The resampler blocks are bit-exact; MKL (with MKL_CBWR=COMPATIBLE) picks FFT/GEMM kernels by problem size,
    # so fbank blocks may differ from one whole-signal call in the last float32 bit, never more.
    torch.testing.assert_close(blocked, whole, rtol=0, atol=2.5e-7)


def test_reference_resampler_refuses_rates_it_cannot_afford_and_soxr_handles_them():
    audio = np.zeros(7919, np.float32)
    audio[::50] = 0.5
    with pytest.raises(ValueError, match=r"7919 Hz -> 16000 Hz.*M taps.*resampler=\"soxr\""):
        SemantiCodecFeatureExtractor()(audio, sampling_rate=7919)
    out = SemantiCodecFeatureExtractor(resampler="soxr")(audio, sampling_rate=7919)
    assert abs(int(out["num_samples"][0]) - 16000) <= 1


def test_silent_and_full_scale_audio_round_trip_finite(tiny, one_thread):
    fe = SemantiCodecFeatureExtractor()
    items = [np.zeros(4000, np.float32), np.ones(5000, np.float32), np.full(4000, -32768, np.int16)]
    inputs = fe(items, sampling_rate=16000)
    out = tiny(**inputs, num_inference_steps=2, seed=0)
    assert out.audio_values_lengths.tolist() == [4000, 5000, 4000]
    assert bool(torch.isfinite(out.audio_values).all())
    for wave, length in zip(out.audio_values[:, 0], out.audio_values_lengths):
        assert wave[:length].pow(2).mean().sqrt() > 1e-2  # a real waveform, not a finite near-zero
        assert not wave[length:].any()  # padding past the item's length stays zero
    codes = out.audio_codes
    assert not torch.equal(codes[0, :, :10], codes[1, :, :10]), "silence and full scale must not share codes"


def test_encode_refuses_non_finite_features_and_bad_batch_sizes(tiny):
    features = torch.zeros(1, 1024, 128)
    features[0, 5, 7] = float("nan")
    with pytest.raises(ValueError, match="1 NaN/Inf values"):
        tiny.encode(features)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="max_batch_size must be a positive"):
            tiny.encode(torch.zeros(1, 1024, 128), max_batch_size=bad)


def test_decode_refuses_bad_step_counts(tiny):
    codes = torch.zeros(1, 2, 10, dtype=torch.long)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="num_inference_steps must be a positive integer"):
            tiny.decode(codes, num_inference_steps=bad)


def test_many_windows_go_through_the_encoder_in_bounded_chunks(tiny, monkeypatch):
    """Without max_batch_size an hour (352 windows) must not go through AudioMAE in one call."""
    features = torch.randn(1, 3 * 1024, 128)
    expected = tiny.encode(features).audio_codes
    assert all(len(torch.unique(row)) > 3 for row in expected[0]), "ids must vary for the comparison to mean anything"
    sizes = []
    original = tiny.encoder.forward

    def spy(windows, **kwargs):
        sizes.append(windows.shape[0])
        return original(windows, **kwargs)

    monkeypatch.setattr(modeling_semanticodec, "DEFAULT_MAX_WINDOWS_PER_CALL", 2)
    monkeypatch.setattr(tiny.encoder, "forward", spy)
    assert torch.equal(tiny.encode(features).audio_codes, expected)
    assert sizes == [2, 1]

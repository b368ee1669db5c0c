"""SemantiCodecFeatureExtractor: parity with the reference fbank, batching, input handling, errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.testing_utils import CaptureLogger

from semanticodec_hf import feature_extraction_semanticodec as fe_module
from semanticodec_hf.feature_extraction_semanticodec import SemantiCodecFeatureExtractor, reference_frame_count
from semanticodec_hf.resampling import resample_reference

FIXTURES = Path(__file__).parent / "fixtures"
PARITY_FILES = {"tr100_s0": "fixture_tr100_v8192_s0_encoder.npz", "tr50_s1": "fixture_tr50_v4096_s1_encoder.npz"}

@pytest.fixture(scope="module")
def fe():
    return SemantiCodecFeatureExtractor()


def _noise(seconds: float, seed: int, channels: int | None = None, rate: int = 16000) -> np.ndarray:
    shape = (int(seconds * rate),) if channels is None else (channels, int(seconds * rate))
    return (0.3 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def test_fbank_parity_with_reference_fixtures(fe):
    """Needs MKL_CBWR=COMPATIBLE (set in conftest.py) on CPUs whose MKL FFT rounds unlike the reference's."""
    for name, path in PARITY_FILES.items():
        data = np.load(FIXTURES / path)
        out = fe(data["waveform"], sampling_rate=16000)["input_features"]
        ref = torch.from_numpy(data["fbank"])
        assert out.shape == ref.shape, name
        assert (out - ref).abs().max().item() <= 1e-4, name


def test_outputs_of_a_fixture_waveform(fe):
    data = np.load(FIXTURES / PARITY_FILES["tr100_s0"])
    out = fe(data["waveform"], sampling_rate=16000)
    assert set(out.keys()) == set(fe.model_input_names)
    assert out["input_features"].shape == data["fbank"].shape and out["input_features"].dtype == torch.float32
    assert out["input_features_mask"].dtype == torch.int64 and torch.all(out["input_features_mask"] == 1)
    assert out["num_samples"].tolist() == [192000]
    assert reference_frame_count(int(out["num_samples"][0]), 100) == data["tokens"].shape[1]


def test_batch_equals_items_alone_bit_exactly(fe):
    lengths = [192000, 2560, 163840, 400000, 163839, 176007]  # windows 2, 1, 2, 3, 1, 2
    items = [_noise(n / 16000, seed) for seed, n in enumerate(lengths)]
    batch = fe(items, sampling_rate=16000)
    assert batch["input_features"].shape == (6, 3072, 128)
    assert batch["num_samples"].tolist() == lengths
    for i, item in enumerate(items):
        alone = fe(item, sampling_rate=16000)["input_features"][0]
        frames = alone.shape[0]
        assert frames == 1024 * (lengths[i] // 163840 + 1)
        assert torch.equal(batch["input_features"][i, :frames], alone)
        assert torch.all(batch["input_features"][i, frames:] == fe.padding_value)
        assert batch["input_features_mask"][i].tolist() == [1] * frames + [0] * (3072 - frames)


def test_padding_value_fills_batch_padding():
    fe = SemantiCodecFeatureExtractor(padding_value=-3.0)
    out = fe([_noise(1, 0), _noise(11, 1)], sampling_rate=16000)["input_features"]
    assert torch.all(out[0, 1024:] == -3.0) and not torch.any(out[1] == -3.0)


def test_inputs_numpy_torch_list_and_float64_agree(fe):
    x = _noise(1, 0)
    ref = fe(x, sampling_rate=16000)["input_features"]
    strided = np.stack([x, x], axis=1)[:, 0]
    variants = (torch.from_numpy(x), x.astype(np.float64), x.astype(">f4"), x[None], x.tolist(), [x], strided)
    for variant in variants:
        assert torch.equal(fe(variant, sampling_rate=16000)["input_features"], ref)
    as_np = fe(x, sampling_rate=16000, return_tensors="np")
    assert isinstance(as_np["input_features"], np.ndarray) and np.array_equal(as_np["input_features"], ref.numpy())


@pytest.mark.parametrize(
    "dtype,to_int,scale",
    [
        (np.int16, lambda x: np.round(x * 32767), lambda q: q / 32768),
        (np.int32, lambda x: np.round(x * 2**30), lambda q: q / 2**31),
        (np.int8, lambda x: np.round(x * 127), lambda q: q / 128),
        (np.uint8, lambda x: np.round(x * 127) + 128, lambda q: (q - 128) / 128),
    ],
)
def test_integer_pcm_is_scaled(fe, dtype, to_int, scale):
    x = np.clip(_noise(1, 3), -1, 1)
    pcm = to_int(x).astype(dtype)
    expected = fe(scale(pcm.astype(np.float64)).astype(np.float32), sampling_rate=16000)["input_features"]
    for variant in (pcm, torch.from_numpy(pcm)):
        assert torch.equal(fe(variant, sampling_rate=16000)["input_features"], expected)


def test_multichannel_mono_rules():
    x = _noise(2, 4, channels=8)
    first = SemantiCodecFeatureExtractor()(x, sampling_rate=16000)["input_features"]
    assert torch.equal(first, SemantiCodecFeatureExtractor()(x[0], sampling_rate=16000)["input_features"])
    mean = SemantiCodecFeatureExtractor(mono="mean")(x, sampling_rate=16000)["input_features"]
    expected = SemantiCodecFeatureExtractor()(torch.from_numpy(x).mean(0), sampling_rate=16000)["input_features"]
    assert torch.equal(mean, expected)


def test_resampling_then_channel_zero(fe):
    x = _noise(1.5, 5, channels=2, rate=44100)
    out = fe(x, sampling_rate=44100)
    at_16k = resample_reference(torch.from_numpy(x), 44100, 16000)[0]
    assert out["num_samples"].tolist() == [24000]  # ceil(160 * 66150 / 441)
    assert torch.equal(out["input_features"], fe(at_16k, sampling_rate=16000)["input_features"])
    soxr = SemantiCodecFeatureExtractor(resampler="soxr")(x, sampling_rate=44100)
    assert abs(int(soxr["num_samples"][0]) - 24000) <= 1
    assert not torch.equal(soxr["input_features"], out["input_features"])


def test_short_rate_input_long_enough_after_resampling(fe):
    # 1280 samples at 8 kHz are exactly one 0.16 s patch at 16 kHz.
    assert fe(_noise(0.16, 6, rate=8000), sampling_rate=8000)["num_samples"].tolist() == [2560]


def test_silence_is_valid_but_warned(fe):
    with CaptureLogger(fe_module.logger) as captured:
        out = fe(np.zeros(16000, dtype=np.float32), sampling_rate=16000)["input_features"][0]
    assert "digital silence" in captured.out
    torch.testing.assert_close(out[:1022], torch.full((1022, 128), -1.2775938), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[1022:], torch.full((2, 128), 0.46703236), rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "audio,rate,message",
    [
        (np.zeros(16000), None, "sampling_rate` is required.*16000"),
        (np.zeros(16000), -16000, "positive integer"),
        (np.zeros(16000), 22050.5, "positive integer"),
        (np.zeros(16000), "16000", "positive integer"),
        ([], 16000, "empty"),
        (np.zeros(0, dtype=np.float32), 16000, "empty"),
        (np.zeros((2, 0), dtype=np.float32), 16000, "empty"),
        (np.zeros(2000, dtype=np.float32), 16000, "at least one 0.16 s"),
        (np.zeros(1000, dtype=np.float32), 8000, "at least one 0.16 s"),
        (np.float32(0.5), 16000, "0 dimensions"),
        (np.zeros((1, 2, 16000), dtype=np.float32), 16000, "list of items"),
        ([np.zeros((1, 2, 16000), dtype=np.float32)], 16000, "3 dimensions"),
        (np.zeros((48000, 2), dtype=np.float32), 16000, r"\[samples, channels\].*transpose"),
        (np.zeros(16000, dtype=np.complex64), 16000, "complex64"),
        (np.zeros(16000, dtype=bool), 16000, "bool"),
        (np.array([object()] * 4000), 16000, "object"),
        (torch.zeros(16000, dtype=torch.bool), 16000, "bool"),
        (np.zeros(16000, dtype=np.int64), 16000, "ambiguous"),
        (np.zeros(16000, dtype=np.uint16), 16000, "ambiguous"),
        (torch.zeros(16000, dtype=torch.int64), 16000, "ambiguous"),
        ("audio.wav", 16000, "numpy array"),
    ],
)
def test_errors(fe, audio, rate, message):
    with pytest.raises(ValueError, match=message):
        fe(audio, sampling_rate=rate)


def test_nan_and_inf_are_reported_with_count_and_position(fe):
    x = _noise(1, 7, channels=2)
    x[1, 100] = np.nan
    x[0, 5000] = np.inf
    with pytest.raises(ValueError, match=r"item 1 contains 2 NaN/Inf values \(first at channel 0, sample 5000\)"):
        fe([_noise(1, 8), x], sampling_rate=16000)


def test_config_validation():
    with pytest.raises(ValueError, match="resampler"):
        SemantiCodecFeatureExtractor(resampler="linear")
    with pytest.raises(ValueError, match="mono"):
        SemantiCodecFeatureExtractor(mono="left")
    with pytest.raises(ValueError, match="fixed"):
        SemantiCodecFeatureExtractor(sampling_rate=24000)


def test_save_and_load_round_trip(tmp_path):
    fe = SemantiCodecFeatureExtractor(resampler="soxr", mono="mean", padding_value=-1.0)
    fe.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = SemantiCodecFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == fe.to_dict()
    assert (loaded.resampler, loaded.mono, loaded.padding_value) == ("soxr", "mean", -1.0)
    x = _noise(1, 9, channels=2, rate=22050)
    assert torch.equal(loaded(x, sampling_rate=22050)["input_features"], fe(x, sampling_rate=22050)["input_features"])

"""Streaming encode: fbank blocks and windows consumed as they come give exactly the one-shot features and codes."""

import numpy as np
import pytest
import soundfile as sf
import torch

from semanticodec_hf import SemantiCodecFeatureExtractor, SemantiCodecModel
from semanticodec_hf.kaldi_fbank import FBANK_BLOCK_FRAMES, WINDOW_SAMPLES, extract_fbank, iter_normalised_fbank

pytestmark = pytest.mark.usefixtures("one_thread")

# 17 windows: more than one 16-window fbank block, so block seams are crossed.
LONG_SAMPLES = 16 * WINDOW_SAMPLES + 40000


def _signal(samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * (150 + 40 * np.sin(t)) * t) + 0.02 * rng.standard_normal(samples)
            + 0.01).astype(np.float32)  # a DC offset, so the whole-signal mean matters


@pytest.mark.parametrize("windows", [1, 16, 17, 33])
def test_fbank_blocks_concatenate_to_extract_fbank(windows):
    signal = torch.from_numpy(_signal(windows * WINDOW_SAMPLES, seed=windows)).unsqueeze(0)
    blocks = list(iter_normalised_fbank(signal))
    assert all(block.shape[1] == FBANK_BLOCK_FRAMES for block in blocks[:-1])
    assert torch.equal(torch.cat(blocks, dim=1), extract_fbank(signal))


def test_iter_features_equals_the_extractor():
    extractor = SemantiCodecFeatureExtractor()
    audio = _signal(LONG_SAMPLES)
    num_samples, blocks = extractor.iter_features(audio, sampling_rate=16000)
    one_shot = extractor(audio, sampling_rate=16000)
    assert num_samples == int(one_shot["num_samples"][0]) == LONG_SAMPLES
    assert torch.equal(torch.cat(list(blocks), dim=1), one_shot["input_features"])


@pytest.mark.parametrize("max_batch_size", [None, 5])
def test_encode_stream_equals_encode(tiny, max_batch_size):
    extractor = SemantiCodecFeatureExtractor()
    audio = _signal(LONG_SAMPLES, seed=3)
    expected = tiny.encode(**extractor(audio, sampling_rate=16000), max_batch_size=max_batch_size)
    num_samples, blocks = extractor.iter_features(audio, sampling_rate=16000)
    streamed = tiny.encode_stream(blocks, num_samples, max_batch_size=max_batch_size)
    assert len(torch.unique(expected.audio_codes[0, 1])) > 3, "ids must vary for the comparison to mean anything"
    assert torch.equal(streamed.audio_codes, expected.audio_codes)
    assert torch.equal(streamed.audio_codes_lengths, expected.audio_codes_lengths)
    assert torch.equal(streamed.audio_codes_mask, expected.audio_codes_mask)


def test_encode_stream_keeps_the_original_token_budget_on_an_exact_window_multiple(tiny):
    """An exact multiple of 10.24 s gains an empty window in the original; streaming must keep that."""
    extractor = SemantiCodecFeatureExtractor()
    audio = _signal(2 * WINDOW_SAMPLES, seed=5)
    expected = tiny.encode(**extractor(audio, sampling_rate=16000))
    num_samples, blocks = extractor.iter_features(audio, sampling_rate=16000)
    streamed = tiny.encode_stream(blocks, num_samples)
    assert torch.equal(streamed.audio_codes, expected.audio_codes)


def test_encode_stream_rejects_mismatched_inputs(tiny):
    extractor = SemantiCodecFeatureExtractor()
    num_samples, blocks = extractor.iter_features(_signal(WINDOW_SAMPLES // 2), sampling_rate=16000)
    with pytest.raises(ValueError, match="needs 3 windows"):
        tiny.encode_stream(blocks, 2 * WINDOW_SAMPLES + 5)
    with pytest.raises(ValueError, match="one item"):
        tiny.encode_stream([torch.zeros(2, 1024, 128)], 1000)
    with pytest.raises(ValueError, match="NaN"):
        tiny.encode_stream([torch.full((1, 1024, 128), float("nan"))], 1000)
    with pytest.raises(ValueError, match="max_batch_size"):
        tiny.encode_stream([torch.zeros(1, 1024, 128)], 1000, max_batch_size=0)


def test_cli_encodes_long_files_by_streaming(tiny, tmp_path, monkeypatch):
    """Files longer than STREAM_ENCODE_WINDOWS go through encode_stream and give the same codes."""
    from semanticodec_hf import cli, processing_semanticodec

    audio = _signal(3 * WINDOW_SAMPLES, seed=7)
    sf.write(tmp_path / "long.wav", audio, 16000, subtype="FLOAT")
    calls = []
    original = SemantiCodecModel.encode_stream

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SemantiCodecModel, "encode_stream", spy)
    monkeypatch.setattr(processing_semanticodec, "STREAM_ENCODE_WINDOWS", 2)
    assert cli.main(["encode", str(tmp_path / "long.wav"), str(tmp_path / "streamed.npy"), "--tiny"]) == 0
    assert calls == [1]
    monkeypatch.setattr(processing_semanticodec, "STREAM_ENCODE_WINDOWS", 100)
    assert cli.main(["encode", str(tmp_path / "long.wav"), str(tmp_path / "whole.npy"), "--tiny"]) == 0
    assert calls == [1]
    whole = np.load(tmp_path / "whole.npy")
    assert all(len(np.unique(row)) > 3 for row in whole), "ids must vary for the comparison to mean anything"
    assert np.array_equal(np.load(tmp_path / "streamed.npy"), whole)

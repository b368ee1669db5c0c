"""Streaming decode: window chunks in bounded memory equal the one-shot decode; the CLI streams long files."""

import numpy as np
import pytest
import soundfile as sf
import torch

from semanticodec_hf import SemantiCodecConfig, SemantiCodecModel
from semanticodec_hf.cli import STREAM_DECODE_WINDOWS
from semanticodec_hf.cli import main as cli_main
from semanticodec_hf.long_audio import StreamingOverlapAdd, overlap_add

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)  # the CLI's --tiny model
    return SemantiCodecModel(SemantiCodecConfig.tiny()).eval()


def _codes(frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, 64, (frames,), generator=g), torch.randint(0, 128, (frames,), generator=g)])


def test_streaming_overlap_add_equals_the_one_shot_cross_fade():
    windows = torch.randn(4, 3000, dtype=torch.float32)
    joiner = StreamingOverlapAdd(700)
    pieces = [joiner.push(w) for w in windows] + [joiner.finish()]
    assert torch.equal(torch.cat(pieces), overlap_add(windows, 700))
    assert all(p.shape[0] == 2300 for p in pieces[1:-1])  # each window releases all but the faded tail
    with pytest.raises(ValueError, match="exceeds the window length"):
        StreamingOverlapAdd(5000).push(windows[0])


def test_decode_stream_equals_decode(tiny):
    codes = _codes(3 * 512 + 77)  # 4 decode windows, the last one partial
    full = tiny.decode(codes[None], num_inference_steps=2, seed=3, num_samples=[700000])
    expected = full.audio_values[0, 0, : int(full.audio_values_lengths[0])]
    one_chunk = torch.cat(list(tiny.decode_stream(codes, num_samples=700000, num_inference_steps=2, seed=3,
                                                  windows_per_chunk=8)))
    assert torch.equal(one_chunk, expected)  # same windows in one UNet batch: bit for bit
    pieces = list(tiny.decode_stream(codes, num_samples=700000, num_inference_steps=2, seed=3, windows_per_chunk=1))
    assert len(pieces) >= 4
    torch.testing.assert_close(torch.cat(pieces), expected, rtol=0, atol=1e-6)  # other batches: float32 rounding
    with pytest.raises(ValueError, match="one item"):
        next(tiny.decode_stream(torch.stack([codes, codes]), num_inference_steps=2))
    with pytest.raises(ValueError, match="out of range"):
        next(tiny.decode_stream(codes + 1000, num_inference_steps=2))


def test_cli_streams_long_files_and_matches_the_batch_decode(tiny, tmp_path, capsys):
    frames = (STREAM_DECODE_WINDOWS + 1) * 480 + 100  # more decode windows than the streaming threshold
    codes = _codes(frames, seed=1)
    np.save(tmp_path / "long.npy", codes.numpy())
    out = tmp_path / "long.wav"
    assert cli_main(["decode", str(tmp_path / "long.npy"), str(out), "--tiny", "--steps", "1", "--seed", "5"]) == 0
    assert "streamed" in capsys.readouterr().out
    audio, rate = sf.read(str(out), dtype="float32")
    expected = tiny.decode(codes[None], num_inference_steps=1, seed=[5]).audio_values[0, 0].numpy()
    assert rate == 16000 and audio.shape == expected.shape
    assert np.abs(audio - np.clip(expected, -1, 1)).max() <= 1.01 / 32768  # PCM_16 of the same waveform
    assert not list(tmp_path.glob(".*partial*"))  # the atomic write left no temporary file

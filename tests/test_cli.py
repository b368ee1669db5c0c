"""The `semanticodec-hf roundtrip` main job: a wav in, its codes and reconstruction out; clear failures."""

import numpy as np
import pytest
import soundfile as sf

from semanticodec_hf.cli import main as cli_main


@pytest.fixture
def stereo_wav(tmp_path):
    rate = 22050
    t = np.arange(int(1.3 * rate)) / rate
    audio = np.stack([0.4 * np.sin(2 * np.pi * 330 * t), 0.2 * np.sin(2 * np.pi * 500 * t)], axis=1)
    path = tmp_path / "in.wav"
    sf.write(path, audio, rate, subtype="PCM_16")
    return path


def test_roundtrip_tiny_writes_codes_and_audio(stereo_wav, tmp_path, capsys):
    out = tmp_path / "out.wav"
    assert cli_main(["roundtrip", str(stereo_wav), str(out), "--tiny", "--steps", "2"]) == 0
    captured = capsys.readouterr()
    assert "RANDOMLY INITIALISED" in captured.err
    codes = np.load(tmp_path / "out.codes.npy")
    # 1.3 s -> d = 1.44 s -> 8 * 1.44 / 0.16 = 72 frames at 100 tokens/s (the original's budget)
    assert codes.shape == (2, 72) and codes.dtype == np.int64
    audio, rate = sf.read(out)
    assert rate == 16000 and len(audio) == int(72 * 0.02 * 16000)
    assert "100 tokens/s" in captured.out and "frames" in captured.out


def test_roundtrip_without_model_points_to_conversion(stereo_wav, tmp_path, capsys):
    out = tmp_path / "out.wav"
    assert cli_main(["roundtrip", str(stereo_wav), str(out), "--model", str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().err
    assert "semanticodec-hf convert" in err
    assert not out.exists()


def test_roundtrip_needs_a_model_or_tiny(stereo_wav, tmp_path, capsys):
    assert cli_main(["roundtrip", str(stereo_wav), str(tmp_path / "o.wav")]) == 2
    assert "--model" in capsys.readouterr().err


def test_roundtrip_reports_corrupt_audio(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00not really a wav")
    assert cli_main(["roundtrip", str(bad), str(tmp_path / "o.wav"), "--tiny"]) == 2
    assert "corrupt or unsupported" in capsys.readouterr().err


def test_roundtrip_reports_too_short_audio(tmp_path, capsys):
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(100, np.float32), 16000)
    assert cli_main(["roundtrip", str(short), str(tmp_path / "o.wav"), "--tiny"]) == 2
    assert "0.16" in capsys.readouterr().err

"""Codec metrics against hand-computed values on synthetic signals, and the evaluation recipe."""

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from semanticodec_hf.metrics import (
    CodecMetrics,
    mel_distance,
    multi_resolution_stft_distance,
    pesq_wb,
    si_sdr,
    stoi,
    write_report,
)

REPO = Path(__file__).resolve().parent.parent
SR = 16000


def _noise(seconds=2.0, seed=0):
    return 0.1 * np.random.default_rng(seed).standard_normal(int(SR * seconds))


def _speech_like(seconds=3.0):
    """Voiced harmonics with a syllable-rate envelope and pauses: enough structure for PESQ and STOI."""
    t = np.arange(int(SR * seconds)) / SR
    pitch = 120 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 2
    return 0.2 * voiced * envelope + 0.002 * np.random.default_rng(1).standard_normal(t.size)


def test_identical_signals_score_perfectly():
    reference = _speech_like()
    assert mel_distance(reference, reference, SR) == 0.0
    assert multi_resolution_stft_distance(reference, reference) == 0.0
    assert si_sdr(reference, reference) == math.inf
    assert pesq_wb(reference, reference, SR) == pytest.approx(4.644, abs=0.01)  # the P.862.2 ceiling
    assert stoi(reference, reference, SR) == pytest.approx(1.0, abs=1e-6)


def test_known_gain():
    reference = _noise()
    half = 0.5 * reference
    # magnitude mels are linear in amplitude: |log10 0.5| in every (unfloored) bin
    assert mel_distance(reference, half, SR) == pytest.approx(math.log10(2), abs=1e-9)
    # spectral convergence 0.5 plus |ln 0.5| per resolution
    assert multi_resolution_stft_distance(reference, half) == pytest.approx(0.5 + math.log(2), abs=1e-9)
    assert si_sdr(reference, half) == math.inf  # scale-invariant


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_known_noise_level(snr_db):
    reference = _noise(seconds=4.0, seed=2)
    noise = np.random.default_rng(3).standard_normal(reference.size)
    noise *= np.linalg.norm(reference) / np.linalg.norm(noise) / 10 ** (snr_db / 20)
    assert si_sdr(reference, reference + noise) == pytest.approx(snr_db, abs=0.3)


def test_known_delay_hurts_waveform_metrics_not_spectral_ones():
    reference = _noise(seconds=2.0, seed=4)
    delayed = np.concatenate([np.zeros(16), reference[:-16]])  # 1 ms
    assert si_sdr(reference, delayed) < -10  # white noise decorrelates after one sample
    assert mel_distance(reference, delayed, SR) < 0.05  # the spectrogram barely moves
    assert multi_resolution_stft_distance(reference, delayed) < 0.35


def test_lengths_are_cut_to_the_shorter_and_bad_input_is_refused():
    reference = _noise()
    assert si_sdr(reference, reference[:-100]) == math.inf
    with pytest.raises(ValueError, match="empty"):
        si_sdr(reference, [])
    with pytest.raises(ValueError, match="NaN or Inf"):
        mel_distance(reference, np.full(100, np.nan), SR)
    with pytest.raises(ValueError, match="one mono waveform"):
        si_sdr(np.stack([reference, reference]), reference)
    with pytest.raises(ValueError, match="silent"):
        si_sdr(np.zeros(1000), reference[:1000])


def test_compute_gives_per_clip_and_per_domain_means(tmp_path):
    speech, noise = _speech_like(), _noise()
    results = CodecMetrics().compute(
        predictions=[speech, 0.5 * noise, noise], references=[speech, noise, noise], sample_rate=SR,
        domains=["speech", "sound", "sound"], speech=[True, False, False], names=["a", "b", "c"])
    assert [row["clip"] for row in results["per_clip"]] == ["a", "b", "c"]
    assert results["per_clip"][1]["pesq_wb"] is None  # no PESQ on non-speech
    assert results["per_domain"]["sound"]["mel_distance"] == pytest.approx(math.log10(2) / 2, abs=1e-9)
    assert results["per_domain"]["speech"]["pesq_wb"] == pytest.approx(4.644, abs=0.01)
    assert results["overall"]["si_sdr"] is None  # every clip is an exact (scaled) copy: inf is not averaged
    with pytest.raises(ValueError, match="Clip 'x'"):
        CodecMetrics().compute(predictions=[[]], references=[noise], sample_rate=SR, names=["x"])
    written = write_report({"sys": results}, tmp_path, bitrates={"sys": 1400.0}, tokens_per_second={"sys": 100.0})
    table = Path(written["markdown"]).read_text()
    assert "| sys | speech | 1 | 1400.0000 | 100.0000 |" in table
    rows = list(csv.DictReader(open(written["csv"])))
    assert len(rows) == 3 and rows[1]["pesq_wb"] == ""
    assert Path(written["plot"]).stat().st_size > 1000


def _evaluate_recipe():
    sys.path.insert(0, str(REPO / "recipes"))
    try:
        import evaluate_codec
    finally:
        sys.path.remove(str(REPO / "recipes"))
    return evaluate_codec


def test_recipe_scores_another_codecs_folder(tmp_path):
    references, estimates = tmp_path / "ref", tmp_path / "est"
    for folder in (references / "speech", references / "sound", estimates / "speech", estimates / "sound"):
        folder.mkdir(parents=True)
    sf.write(str(references / "speech" / "s.wav"), _speech_like().astype(np.float32), SR)
    sf.write(str(estimates / "speech" / "s.flac"), _speech_like().astype(np.float32), SR)
    sf.write(str(references / "sound" / "n.wav"), _noise().astype(np.float32), SR)
    sf.write(str(estimates / "sound" / "n.wav"), (0.5 * _noise()).astype(np.float32), SR)
    out = _evaluate_recipe().main(["--reference-dir", str(references), "--estimate", f"other={estimates}@800",
                                   "--domain-from-subfolder", "--output", str(tmp_path / "report")])
    result = out["results"]["other"]
    assert result["per_domain"]["sound"]["mel_distance"] == pytest.approx(math.log10(2), abs=1e-3)
    assert result["per_domain"]["speech"]["pesq_wb"] > 4.5
    assert {"markdown", "csv", "plot"} <= set(out["written"])
    (estimates / "sound" / "n.wav").unlink()
    with pytest.raises(SystemExit, match="no reconstruction of sound/n.wav"):
        _evaluate_recipe().main(["--reference-dir", str(references), "--estimate", f"other={estimates}",
                                 "--output", str(tmp_path / "r2")])


def test_recipe_reconstructs_with_semanticodec(tmp_path):
    references = tmp_path / "ref"
    references.mkdir()
    sf.write(str(references / "a.wav"), _noise(seconds=1.0).astype(np.float32), SR)
    out = _evaluate_recipe().main(["--reference-dir", str(references), "--tiny", "--steps", "5", "--all-speech",
                                   "--output", str(tmp_path / "report"), "--save-reconstructions",
                                   str(tmp_path / "rec")])
    result = out["results"]["semanticodec-tiny"]
    assert result["overall"]["clips"] == 1 and result["per_clip"][0]["stoi"] is not None
    assert sf.info(str(tmp_path / "rec" / "a.wav")).frames == SR  # the input's length
    # the tiny codec: 50 frames/s x (log2 64 + log2 128) bits = 650 bit/s, 100 tokens/s
    assert "| semanticodec-tiny | all | 1 | 650.0000 | 100.0000 |" in Path(out["written"]["markdown"]).read_text()

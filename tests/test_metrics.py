"""Codec metrics against hand-computed values on synthetic signals, and the evaluation recipe."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from semanticodec_hf.metrics import (
    CodecMetrics,
    MetricNotApplicable,
    mel_distance,
    multi_resolution_stft_distance,
    pesq_wb,
    si_sdr,
    stoi,
    write_report,
)
from recipe_modules import import_recipe

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
    assert multi_resolution_stft_distance(reference, reference, SR) == 0.0
    assert si_sdr(reference, reference) > 100  # finite (about 120 dB), so it can be averaged
    assert pesq_wb(reference, reference, SR) == pytest.approx(4.644, abs=0.01)  # the P.862.2 ceiling
    assert stoi(reference, reference, SR) == pytest.approx(1.0, abs=1e-6)


def test_pesq_resamples_other_rates():
    reference = _speech_like()
    at_48k = soxr.resample(reference, SR, 48000)
    assert pesq_wb(at_48k, at_48k, 48000) == pytest.approx(4.644, abs=0.01)


def test_known_gain():
    reference = _noise()
    half = 0.5 * reference
    # Power mels scale with amplitude squared: every bin (none near the 1e-5 clamp) differs by log10(0.5 ** 2).
    expected = abs(math.log10(0.5**2))
    assert expected == pytest.approx(0.60206, abs=1e-5)
    assert mel_distance(reference, half, SR) == pytest.approx(expected, abs=1e-9)
    # STFT magnitudes are linear in amplitude: spectral convergence 0.5 plus |ln 0.5| at every resolution
    assert multi_resolution_stft_distance(reference, half) == pytest.approx(0.5 + math.log(2), abs=1e-9)
    # SI-SDR is scale-invariant: a gain on a noisy estimate leaves it unchanged
    noisy = reference + 0.3 * _noise(seed=9)
    assert si_sdr(reference, 0.5 * noisy) == pytest.approx(si_sdr(reference, noisy), abs=1e-9)
    assert si_sdr(reference, 3.0 * noisy) == pytest.approx(si_sdr(reference, noisy), abs=1e-9)
    assert si_sdr(reference, half) > 100


def test_mel_clamp_bounds_the_distance_to_silence():
    reference = _noise()
    # every reference bin is far above the 1e-5 floor, every silent bin sits on it
    from semanticodec_hf.metrics import MEL_FLOOR

    distance = mel_distance(reference, np.zeros_like(reference), SR)
    assert distance > abs(math.log10(MEL_FLOOR)) - 1  # dominated by log10(mel) - log10(1e-5) > 0 everywhere
    assert si_sdr(reference, np.zeros_like(reference)) < -100


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_known_noise_level(snr_db):
    reference = _noise(seconds=4.0, seed=2)
    noise = np.random.default_rng(3).standard_normal(reference.size)
    noise *= np.linalg.norm(reference) / np.linalg.norm(noise) / 10 ** (snr_db / 20)
    assert si_sdr(reference, reference + noise) == pytest.approx(snr_db, abs=0.5)


def _correlation(a, b):
    """Pearson correlation of two equal-length signals, from its definition."""
    a, b = a - a.mean(), b - b.mean()
    return float(np.dot(a, b) / math.sqrt(np.dot(a, a) * np.dot(b, b)))


def test_delay_gives_the_hand_computed_si_sdr():
    """For zero-mean signals SI-SDR = 10 log10(rho^2 / (1 - rho^2)), rho their correlation: the projection onto
    the reference keeps rho^2 of the estimate's energy and leaves 1 - rho^2 as distortion."""
    speech = _speech_like()
    delayed = np.concatenate([np.zeros(16), speech[:-16]])  # 1 ms
    rho = _correlation(speech, delayed)
    assert rho == pytest.approx(np.corrcoef(speech, delayed)[0, 1], abs=1e-12)
    expected = 10 * math.log10(rho**2 / (1 - rho**2))
    assert expected == pytest.approx(-7.7373, abs=1e-4)
    assert si_sdr(speech, delayed) == pytest.approx(expected, abs=1e-9)
    # A first-order autoregressive noise x[n] = phi x[n-1] + w[n] has lag-1 correlation phi, so a one-sample delay
    # scores 10 log10(phi^2 / (1 - phi^2)) = 6.30 dB at phi = 0.9, up to the sampling error of rho (~1e-3 here).
    phi, rng = 0.9, np.random.default_rng(5)
    white = rng.standard_normal(4 * SR)
    ar = np.empty_like(white)
    ar[0] = white[0]
    for n in range(1, ar.size):
        ar[n] = phi * ar[n - 1] + white[n]
    ar *= 0.1 / ar.std()
    one_late = np.concatenate([[0.0], ar[:-1]])
    assert si_sdr(ar, one_late) == pytest.approx(10 * math.log10(phi**2 / (1 - phi**2)), abs=0.05)
    rho = _correlation(ar, one_late)
    assert si_sdr(ar, one_late) == pytest.approx(10 * math.log10(rho**2 / (1 - rho**2)), abs=1e-9)


def test_known_delay_hurts_waveform_metrics_not_spectral_ones():
    reference = _speech_like()
    aligned = si_sdr(reference, reference)
    delayed = np.concatenate([np.zeros(16), reference[:-16]])  # 1 ms
    assert si_sdr(reference, delayed) < aligned - 50
    assert si_sdr(reference, delayed) < 10
    noise = _noise(seconds=2.0, seed=4)
    assert si_sdr(noise, np.concatenate([np.zeros(16), noise[:-16]])) < -10  # white noise decorrelates at once
    assert mel_distance(noise, np.concatenate([np.zeros(16), noise[:-16]]), SR) < 0.05  # the spectrogram barely moves


def test_lengths_are_trimmed_to_the_shorter():
    reference = _noise()  # 2 s
    assert si_sdr(reference, reference[:-100]) > 100
    assert si_sdr(reference[:-100], reference) > 100
    assert mel_distance(reference, np.concatenate([reference, np.ones(500)]), SR) == 0.0
    # up to 0.1 s (1600 samples at 16 kHz) of codec padding or trimming is accepted
    assert mel_distance(reference, np.concatenate([reference, np.zeros(1600)]), SR) == 0.0
    assert si_sdr(reference, reference[:-1600], SR) > 100


def test_a_truncated_reconstruction_is_refused_not_scored_as_perfect():
    reference = _noise()  # 2 s
    half = reference[: reference.size // 2]
    for metric in (mel_distance, multi_resolution_stft_distance, si_sdr, stoi):
        with pytest.raises(ValueError, match=r"16000 samples \(1.000 s\) but the reference 32000 samples"):
            metric(reference, half, SR)
    with pytest.raises(ValueError, match="differ by more than max"):
        si_sdr(reference, reference[:-1601], SR)  # just over 0.1 s
    with pytest.raises(ValueError, match="differ by more than 1 % of the reference"):
        si_sdr(reference, half)  # no sample rate: the relative rule alone
    # long clips: 1 % of the reference (0.3 s of 30 s) is accepted, a little more is not
    long = _noise(seconds=30.0)
    assert si_sdr(long, long[:-int(0.3 * SR)], SR) > 100
    with pytest.raises(ValueError, match="differ by more than"):
        si_sdr(long, long[:-int(0.31 * SR)], SR)
    # asked for explicitly, the overlap is scored
    assert si_sdr(reference, half, SR, max_length_difference=1.0) > 100
    assert mel_distance(reference, half, SR, max_length_difference=float("inf")) == 0.0
    with pytest.raises(ValueError, match="Clip 'cut'.*differ by more than"):
        CodecMetrics().compute(references=[reference], estimates=[half], sample_rate=SR, names=["cut"])
    rows = CodecMetrics().compute(references=[reference, reference], estimates=[half, reference[:-800]],
                                  sample_rate=SR, names=["cut", "ok"], max_length_difference=1.0)["per_clip"]
    assert rows[0]["length_ratio"] == 0.5 and rows[0]["length_difference_s"] == -1.0
    assert rows[1]["length_ratio"] == pytest.approx(1 - 800 / 32000) and rows[1]["length_difference_s"] == -0.05


def test_clips_too_short_for_pesq_or_stoi_keep_their_other_scores(tmp_path):
    speech = _speech_like()
    short = _noise(seconds=0.2)  # marked speech below; under PESQ's 0.25 s and STOI's 30 frames
    with pytest.raises(MetricNotApplicable, match="0.25 s"):
        pesq_wb(short, short, SR)
    with pytest.raises(MetricNotApplicable, match="STOI needs about 0.4 s"):
        stoi(short, short, SR)
    results = CodecMetrics().compute(references=[speech, short], estimates=[speech, 0.5 * short], sample_rate=SR,
                                     domains=["speech", "speech"], names=["long", "short"])
    long_row, short_row = results["per_clip"]
    assert short_row["pesq_wb"] is None and short_row["stoi"] is None
    assert "pesq_wb not scored" in short_row["note"] and "stoi not scored" in short_row["note"]
    assert short_row["mel_distance"] == pytest.approx(abs(math.log10(0.25)), abs=1e-9)  # the others are kept
    assert short_row["si_sdr"] > 100
    assert long_row["note"] is None and long_row["pesq_wb"] > 4.5
    assert results["per_domain"]["speech"]["pesq_wb"] == long_row["pesq_wb"]  # the mean skips the unscored clip
    written = write_report(results, tmp_path)
    assert "1 clip(s) with metrics not scored" in Path(written["markdown"]).read_text()
    rows = list(csv.DictReader(open(written["csv"])))
    assert rows[1]["pesq_wb"] == "" and "0.25 s" in rows[1]["note"] and rows[0]["note"] == ""
    assert float(rows[1]["length_ratio"]) == 1.0 and float(rows[1]["length_difference_s"]) == 0.0


def test_the_plot_has_one_series_per_system(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    plotted = []
    original = Axes.plot

    def recording(self, *args, **kwargs):
        plotted.append((kwargs.get("label"), list(args[0]), kwargs.get("linestyle")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording)
    noise = _noise()
    result = CodecMetrics().compute(references=[noise], estimates=[noise], sample_rate=SR)
    bitrates = {"a": 650.0, "b": 1400.0, "c": 1000.0}
    write_report({"a": result, "b": result, "c": result}, tmp_path, bitrates)
    # three metrics apply to non-speech (PESQ/STOI are None): one single-point series per system and metric
    assert len(plotted) == 3 * 3
    assert all(x == [bitrates[label]] for label, x, _ in plotted)
    assert sorted(label for label, _, _ in plotted) == sorted(["a", "b", "c"] * 3)
    assert all(style == "none" for *_, style in plotted)  # markers only: different systems are never joined


def test_bad_input_is_refused():
    reference = _noise()
    with pytest.raises(ValueError, match="empty"):
        si_sdr(reference, [])
    with pytest.raises(ValueError, match="empty"):
        mel_distance(np.array([]), reference, SR)
    with pytest.raises(ValueError, match="NaN or Inf"):
        mel_distance(reference, np.full(100, np.nan), SR)
    with pytest.raises(ValueError, match="NaN or Inf"):
        stoi(np.concatenate([reference, [np.inf]]), reference, SR)
    with pytest.raises(ValueError, match="one mono waveform"):
        si_sdr(np.stack([reference, reference]), reference)
    with pytest.raises(ValueError, match="silent"):
        si_sdr(np.zeros(1000), reference[:1000])
    with pytest.raises(ValueError, match="16000 Hz but the estimate at 44100 Hz"):
        mel_distance(reference, reference, SR, estimate_sample_rate=44100)
    for metric in (si_sdr, multi_resolution_stft_distance, pesq_wb, stoi):
        with pytest.raises(ValueError, match="resample"):
            metric(reference, reference, SR, estimate_sample_rate=8000)
    with pytest.raises(ValueError, match="positive whole number"):
        mel_distance(reference, reference, -16000)
    with pytest.raises(ValueError, match="0.25 s"):
        pesq_wb(reference[:1000], reference[:1000], SR)
    with pytest.raises(ValueError, match="sample rate"):
        CodecMetrics().compute(references=[reference], estimates=[reference], sample_rate=None)
    with pytest.raises(ValueError, match="1 estimates for 2 references"):
        CodecMetrics().compute(references=[reference, reference], estimates=[reference], sample_rate=SR)


def test_compute_gives_per_clip_and_per_domain_means(tmp_path):
    speech, noise = _speech_like(), _noise()
    results = CodecMetrics().compute(
        [speech, noise, noise], [speech, 0.5 * noise, noise], SR,  # references, estimates, sample_rate
        domains=["speech", "sound", "sound"], speech=[True, False, False], names=["a", "b", "c"])
    assert [row["clip"] for row in results["per_clip"]] == ["a", "b", "c"]
    assert results["per_clip"][1]["pesq_wb"] is None and results["per_clip"][1]["stoi"] is None  # not speech
    assert results["per_domain"]["sound"]["mel_distance"] == pytest.approx(abs(math.log10(0.25)) / 2, abs=1e-9)
    assert results["per_domain"]["sound"]["pesq_wb"] is None
    assert results["per_domain"]["speech"]["pesq_wb"] == pytest.approx(4.644, abs=0.01)
    assert results["overall"]["clips"] == 3 and results["overall"]["si_sdr"] > 100
    # the evaluate-style alias, and speech inferred from the domain name when `speech` is left out
    alias = CodecMetrics().compute(predictions=[speech, 0.5 * noise, noise], references=[speech, noise, noise],
                                   sample_rate=SR, domains=["speech", "sound", "sound"], names=["a", "b", "c"])
    assert alias == results
    with pytest.raises(ValueError, match="Clip 'x'"):
        CodecMetrics().compute(predictions=[[]], references=[noise], sample_rate=SR, names=["x"])
    with pytest.raises(ValueError, match="not both"):
        CodecMetrics().compute(references=[noise], estimates=[noise], predictions=[noise], sample_rate=SR)

    written = write_report({"sys": results}, tmp_path, {"sys": 1400.0}, tokens_per_second={"sys": 100.0})
    table = Path(written["markdown"]).read_text()
    assert table.startswith("| system | domain | clips | bitrate_bps |")
    assert "| sys | speech | 1 | 1400.0000 | 100.0000 |" in table and "| sys | ALL | 3 |" in table
    rows = list(csv.DictReader(open(written["csv"])))
    assert len(rows) == 3 and rows[1]["pesq_wb"] == "" and float(rows[0]["pesq_wb"]) > 4.5
    assert Path(written["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # one result without a bitrate: system "codec", no plot
    single = write_report(results, tmp_path / "single")
    assert "plot" not in single and not (tmp_path / "single" / "metrics.png").exists()
    assert "| codec | sound | 2 | n/a | n/a |" in Path(single["markdown"]).read_text()  # unknown, not zero
    assert "plot" in write_report(results, tmp_path / "single_rate", bitrate=650)
    with pytest.raises(ValueError, match="one number but there are 2 systems"):
        write_report({"a": results, "b": results}, tmp_path / "bad", bitrate=650)


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    results = CodecMetrics().compute(references=[_noise()], estimates=[_noise()], sample_rate=SR)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match="pip install matplotlib"):
        write_report(results, tmp_path, bitrate=1000)


def _evaluate_recipe():
    return import_recipe("evaluate_codec")


def _two_folders(tmp_path):
    references, estimates = tmp_path / "ref", tmp_path / "est"
    for folder in (references / "speech", references / "sound", estimates / "speech", estimates / "sound"):
        folder.mkdir(parents=True)
    sf.write(str(references / "speech" / "s.wav"), _speech_like().astype(np.float32), SR)
    sf.write(str(estimates / "speech" / "s.flac"), _speech_like().astype(np.float32), SR)  # any audio extension
    at_22k = soxr.resample(0.5 * _speech_like(), SR, 22050)  # read back at 16 kHz by the recipe
    sf.write(str(references / "sound" / "n.wav"), _speech_like().astype(np.float32), SR)
    sf.write(str(estimates / "sound" / "n.wav"), at_22k.astype(np.float32), 22050)
    return references, estimates


def test_recipe_mode_b_scores_another_codecs_folder(tmp_path, capsys):
    references, estimates = _two_folders(tmp_path)
    out = _evaluate_recipe().main(["--reference-dir", str(references), "--estimate-dir", str(estimates),
                                   "--estimate-name", "other", "--bitrate", "800", "--domain-from-subfolder",
                                   "--speech-domains", "speech", "--output", str(tmp_path / "report")])
    result = out["results"]["other"]
    # 0.5 gain on power mels, up to the 16k/22.05k round trip of soxr
    assert result["per_domain"]["sound"]["mel_distance"] == pytest.approx(abs(math.log10(0.25)), abs=0.02)
    assert result["per_domain"]["sound"]["si_sdr"] > 40  # scale-invariant; the resampling round trip is clean
    assert result["per_domain"]["sound"]["pesq_wb"] is None
    assert result["per_domain"]["speech"]["pesq_wb"] > 4.5 and result["per_domain"]["speech"]["stoi"] > 0.99
    assert set(out["written"]) == {"markdown", "csv", "plot"}
    assert all(Path(path).stat().st_size > 0 for path in out["written"].values())
    printed = capsys.readouterr().out
    assert "| other | speech | 1 | 800.0000 |" in printed  # the table is printed

    # the NAME=DIR@BITRATE form scores several folders in one report
    out = _evaluate_recipe().main(["--reference-dir", str(references), "--estimate", f"a={estimates}@800",
                                   "--estimate", f"b={estimates}@1600", "--output", str(tmp_path / "r2")])
    assert set(out["results"]) == {"a", "b"} and out["results"]["a"]["overall"]["pesq_wb"] is None  # no domains

    (estimates / "sound" / "n.wav").unlink()
    with pytest.raises(SystemExit, match="no reconstruction of sound/n.wav"):
        _evaluate_recipe().main(["--reference-dir", str(references), "--estimate-dir", str(estimates),
                                 "--output", str(tmp_path / "r3")])
    sf.write(str(estimates / "sound" / "n.wav"), np.zeros((0,), dtype=np.float32), SR)  # an empty output
    with pytest.raises(SystemExit, match="Clip 'sound/n.wav'.*empty"):
        _evaluate_recipe().main(["--reference-dir", str(references), "--estimate-dir", str(estimates),
                                 "--output", str(tmp_path / "r4")])


def test_recipe_command_line(tmp_path):
    script = REPO / "recipes" / "evaluate_codec.py"
    shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--estimate-dir" in shown.stdout and "examples:" in shown.stdout
    refused = subprocess.run([sys.executable, str(script), "--audio-dir", str(tmp_path), "--output", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--estimate-dir" in refused.stderr


def test_recipe_reconstructs_with_semanticodec(tmp_path):
    references = tmp_path / "ref"
    references.mkdir()
    sf.write(str(references / "a.wav"), _noise(seconds=1.0).astype(np.float32), SR)
    sf.write(str(references / "b.wav"), _noise(seconds=0.05).astype(np.float32), SR)  # under SemantiCodec's 0.16 s
    out = _evaluate_recipe().main(["--audio-dir", str(references), "--tiny", "--steps", "5", "--all-speech",
                                   "--output", str(tmp_path / "report"), "--save-reconstructions",
                                   str(tmp_path / "rec")])
    result = out["results"]["semanticodec-tiny"]
    assert result["overall"]["clips"] == 2 and result["per_clip"][0]["stoi"] is not None
    assert sf.info(str(tmp_path / "rec" / "a.wav")).frames == SR  # the input's length
    # the 0.05 s clip: coded zero-padded to 0.16 s, cut back, scored without PESQ/STOI (too short), with a note
    short = result["per_clip"][1]
    assert sf.info(str(tmp_path / "rec" / "b.wav")).frames == 800 and short["length_ratio"] == 1.0
    assert short["pesq_wb"] is None and short["stoi"] is None and "0.25 s" in short["note"]
    assert math.isfinite(short["mel_distance"]) and math.isfinite(short["si_sdr"])
    # the tiny codec: 50 frames/s x (log2 64 + log2 128) bits = 650 bit/s, 100 tokens/s
    assert "| semanticodec-tiny | all | 2 | 650.0000 | 100.0000 |" in Path(out["written"]["markdown"]).read_text()

def test_recipe_matches_estimate_names_literally(tmp_path, capsys):
    """Names are compared as strings (a glob would read `take[1]` as a character class), one estimate per clip,
    stray estimates reported, a missing folder called a missing folder."""
    references, estimates = tmp_path / "ref", tmp_path / "est"
    references.mkdir()
    estimates.mkdir()
    noise = _noise(seconds=1.0).astype(np.float32)
    sf.write(str(references / "take[1].wav"), noise, SR)
    sf.write(str(estimates / "take[1].flac"), noise, SR)
    sf.write(str(estimates / "extra.wav"), noise, SR)
    evaluate = _evaluate_recipe()
    out = evaluate.main(["--reference-dir", str(references), "--estimate", f"x={estimates}@800@40",
                         "--estimate", f"y={estimates}", "--output", str(tmp_path / "r")])
    assert out["results"]["x"]["per_clip"][0]["clip"] == "take[1].wav"
    assert out["results"]["x"]["overall"]["si_sdr"] > 60  # the same noise through 16-bit WAV and 16-bit FLAC
    table = Path(out["written"]["markdown"]).read_text()
    assert "| x | all | 1 | 800.0000 | 40.0000 |" in table  # NAME=DIR@BITRATE@TOKENS_PER_SECOND
    assert "| y | all | 1 | n/a | n/a |" in table
    err = capsys.readouterr().err
    assert "warning: x: 1 file(s) in" in err and "match no reference and are not scored: extra.wav" in err
    sf.write(str(estimates / "take[1].wav"), noise, SR)  # a second candidate for the same clip
    with pytest.raises(SystemExit, match=r"several reconstructions of take\[1\].wav.*take\[1\]\.(flac|wav) and "):
        evaluate.main(["--reference-dir", str(references), "--estimate-dir", str(estimates),
                       "--output", str(tmp_path / "r2")])
    with pytest.raises(SystemExit, match="estimate folder .*nowhere does not exist"):
        evaluate.main(["--reference-dir", str(references), "--estimate-dir", str(tmp_path / "nowhere"),
                       "--output", str(tmp_path / "r3")])
    with pytest.raises(SystemExit, match="is not a number"):
        evaluate.main(["--reference-dir", str(references), "--estimate", f"z={estimates}@800@fast",
                       "--output", str(tmp_path / "r4")])


def test_recipe_reports_stray_estimates(tmp_path, capsys):
    references, estimates = _two_folders(tmp_path)
    for i in range(7):
        sf.write(str(estimates / "sound" / f"stray{i}.wav"), _noise(seconds=0.5).astype(np.float32), SR)
    _evaluate_recipe().main(["--reference-dir", str(references), "--estimate-dir", str(estimates),
                             "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert "7 file(s) in" in err and "match no reference and are not scored: sound/stray0.wav" in err
    assert "sound/stray6.wav" not in err  # examples, not the whole list


def _reference_dataset(tmp_path):
    """Rows holding a file path and encoded bytes, with domains; and the matching estimate folder."""
    datasets = pytest.importorskip("datasets")
    speech, noise = _speech_like(seconds=2.0), _noise(seconds=1.5)
    sf.write(str(tmp_path / "s.wav"), speech.astype(np.float32), SR, subtype="FLOAT")
    encoded = tmp_path / "n.flac"
    at_22k = soxr.resample(noise, SR, 22050)
    sf.write(str(encoded), at_22k.astype(np.float32), 22050)
    table = datasets.Dataset.from_dict({
        "audio": [{"path": str(tmp_path / "s.wav"), "bytes": None}, {"path": "n.flac", "bytes": encoded.read_bytes()}],
        "domain": ["speech", "sound"],
    })
    estimates = tmp_path / "est"
    estimates.mkdir()
    sf.write(str(estimates / "s.wav"), speech.astype(np.float32), SR, subtype="FLOAT")
    sf.write(str(estimates / "n.wav"), (0.5 * noise).astype(np.float32), SR, subtype="FLOAT")
    return datasets, table, estimates, speech, noise


def test_recipe_scores_a_dataset_saved_to_disk(tmp_path):
    datasets, table, estimates, speech, noise = _reference_dataset(tmp_path)
    table.save_to_disk(str(tmp_path / "ds"))
    out = _evaluate_recipe().main(["--dataset", str(tmp_path / "ds"), "--audio-column", "audio", "--domain-column",
                                   "domain", "--estimate-dir", str(estimates), "--output", str(tmp_path / "r")])
    result = out["results"]["est"]
    assert [row["clip"] for row in result["per_clip"]] == ["s.wav", "n.flac"]  # the files' names
    assert result["per_domain"]["speech"]["pesq_wb"] > 4.5  # the domain column decides what is speech
    assert result["per_domain"]["sound"]["pesq_wb"] is None
    # the bytes (a 22.05 kHz FLAC) were decoded with soundfile and resampled to 16 kHz
    assert result["per_domain"]["sound"]["mel_distance"] == pytest.approx(abs(math.log10(0.25)), abs=0.02)

    # an `Audio` column (whose own decoding needs torchcodec) and {array, sampling_rate} cells
    arrays = datasets.Dataset.from_dict({"sound": [{"array": noise, "sampling_rate": SR}], "id": ["n"]})
    arrays.save_to_disk(str(tmp_path / "arrays"))
    files = datasets.Dataset.from_dict({"audio": [str(tmp_path / "s.wav")]}).cast_column("audio", datasets.Audio())
    files.save_to_disk(str(tmp_path / "audio_feature"))
    out = _evaluate_recipe().main(["--dataset", str(tmp_path / "arrays"), "--audio-column", "sound",
                                   "--name-column", "id", "--estimate-dir", str(estimates),
                                   "--output", str(tmp_path / "r2")])
    assert out["results"]["est"]["per_clip"][0]["clip"] == "n"
    assert out["results"]["est"]["overall"]["mel_distance"] == pytest.approx(abs(math.log10(0.25)), abs=1e-6)
    out = _evaluate_recipe().main(["--dataset", str(tmp_path / "audio_feature"), "--estimate-dir", str(estimates),
                                   "--all-speech", "--output", str(tmp_path / "r3")])
    assert out["results"]["est"]["overall"]["pesq_wb"] > 4.5
    with pytest.raises(SystemExit, match="--audio-column 'wave' is not a column .*'audio'"):
        _evaluate_recipe().main(["--dataset", str(tmp_path / "ds"), "--audio-column", "wave", "--estimate-dir",
                                 str(estimates), "--output", str(tmp_path / "r4")])


def test_recipe_loads_a_hub_dataset_by_name(tmp_path, monkeypatch):
    datasets, table, estimates, _, _ = _reference_dataset(tmp_path)
    calls = []

    def fake_load_dataset(name, split=None, **kwargs):  # the Hub is unreachable here
        calls.append((name, split))
        return datasets.DatasetDict({"test": table, "train": table.select([0])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(SystemExit, match=r"has splits \['test', 'train'\]; choose one with --split"):
        _evaluate_recipe().main(["--dataset", "someone/eval-set", "--estimate-dir", str(estimates),
                                 "--output", str(tmp_path / "r")])
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split=None, **kw: calls.append((name, split)) or table)
    out = _evaluate_recipe().main(["--dataset", "someone/eval-set", "--split", "test", "--domain-column", "domain",
                                   "--estimate-dir", str(estimates), "--output", str(tmp_path / "r2")])
    assert calls[-1] == ("someone/eval-set", "test")
    assert out["results"]["est"]["overall"]["clips"] == 2


def test_dotted_clip_names_keep_their_dots_when_matched(tmp_path):
    """Only an audio extension is stripped: dataset names such as `utt.001` stay two distinct clips."""
    evaluate = _evaluate_recipe()
    for name in ("utt.001.wav", "utt.002.flac", "other.wav"):
        sf.write(str(tmp_path / name), _noise(seconds=0.2).astype(np.float32), SR)
    clips = [evaluate.Clip(name, np.zeros(10), "all") for name in ("utt.001", "utt.002", "other.wav")]
    evaluate.check_unique_stems(clips, "wav,flac")
    found = evaluate.match_estimates(clips, evaluate.EstimateSpec("x", tmp_path, None, None), "wav,flac")
    assert {name: path.name for name, path in found.items()} == {
        "utt.001": "utt.001.wav", "utt.002": "utt.002.flac", "other.wav": "other.wav"}

"""The `evaluate` metric shipped in semanticodec_hf/evaluation/: loadable by path, the same numbers as CodecMetrics,
clear errors, and what the evaluation recipe scores with."""

import math
import shutil
import sys
from pathlib import Path

import evaluate
import numpy as np
import pytest
import soundfile as sf

from semanticodec_hf import metrics as metrics_module
from semanticodec_hf.metrics import CODEC_METRIC_DIR, METRIC_NAMES, CodecMetrics, load_codec_metric
from recipe_modules import import_recipe

SR = 16000
SCRIPT = CODEC_METRIC_DIR / "semanticodec_codec_metrics.py"


def _noise(seconds, seed):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(SR * seconds))).astype(np.float32)


def _speech_like(seconds=3.0, pitch_hz=120.0, seed=1):
    """Voiced harmonics with a syllable-rate envelope and pauses: enough structure for PESQ and STOI."""
    t = np.arange(int(SR * seconds)) / SR
    pitch = pitch_hz * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 2
    return (0.2 * voiced * envelope + 0.002 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


def _pairs():
    """Six distinct (reference, reconstruction) pairs, float32: gains, delays, added noise, a low-pass, codec-like
    padding and trimming, so every metric takes several different values."""
    speech, other_speech, noise = _speech_like(), _speech_like(2.5, pitch_hz=180.0, seed=4), _noise(2.0, 2)
    rng = np.random.default_rng(7)
    smoothed = np.convolve(other_speech, np.ones(8) / 8, mode="same").astype(np.float32)  # a crude low-pass
    references = [speech, speech, other_speech, noise, noise, other_speech]
    predictions = [
        (speech + 0.02 * rng.standard_normal(speech.size)).astype(np.float32),
        np.concatenate([np.zeros(40, np.float32), speech[:-40]]),  # 2.5 ms late
        np.concatenate([smoothed, np.zeros(320, np.float32)]),  # 20 ms of padding
        0.5 * noise,
        (0.8 * noise + 0.05 * rng.standard_normal(noise.size)).astype(np.float32)[:-800],  # 50 ms short
        (0.3 * other_speech + 0.01 * rng.standard_normal(other_speech.size)).astype(np.float32),
    ]
    return references, predictions


@pytest.fixture(scope="module")
def metric():
    return load_codec_metric(keep_in_memory=True)


def _assert_close(actual, expected, rel=1e-12):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        if value is None or isinstance(value, str):
            assert actual[key] == value, key
        else:
            assert actual[key] == pytest.approx(value, rel=rel, abs=1e-12), key


def test_the_evaluate_metric_gives_codec_metrics_numbers(metric):
    references, predictions = _pairs()
    domains = ["speech", "speech", "speech", "sound", "sound", "speech"]
    names = [f"clip{i}" for i in range(len(references))]
    expected = CodecMetrics().compute(references=references, estimates=predictions, sample_rate=SR,
                                      domains=domains, names=names)
    rows = expected["per_clip"]
    for name in ("mel_distance", "stft_distance", "si_sdr"):  # the check has signal: six different values each
        assert len({round(row[name], 6) for row in rows}) == len(rows), name
    assert len({round(row["pesq_wb"], 4) for row in rows if row["pesq_wb"] is not None}) == 4
    assert all(row["note"] is None for row in rows)

    got = metric.compute(predictions=predictions, references=references, sampling_rate=SR, domains=domains,
                         names=names)
    _assert_close(got, expected["overall"])
    assert set(got) == {"clips", *METRIC_NAMES} and got["clips"] == 6.0
    assert all(isinstance(value, float) for value in got.values())  # speech clips: PESQ and STOI means too

    detailed = metric.compute(predictions=predictions, references=references, sampling_rate=SR, domains=domains,
                              names=names, detailed=True)
    assert set(detailed) == {"per_clip", "per_domain", "overall"} and list(detailed["per_domain"]) == ["speech",
                                                                                                      "sound"]
    for actual, wanted in zip(detailed["per_clip"], rows):
        _assert_close(actual, wanted)
    for domain, means in expected["per_domain"].items():
        _assert_close(detailed["per_domain"][domain], means)

    # without domains nor speech no clip gets PESQ/STOI (CodecMetrics' default); speech=True scores all of them
    plain = metric.compute(predictions=predictions, references=references, sampling_rate=SR)
    _assert_close(plain, CodecMetrics().compute(references=references, estimates=predictions, sample_rate=SR)
                  ["overall"])
    assert plain["pesq_wb"] is None and plain["stoi"] is None
    every = metric.compute(predictions=predictions[:2], references=references[:2], sampling_rate=SR, speech=True)
    _assert_close(every, CodecMetrics().compute(references=references[:2], estimates=predictions[:2],
                                                sample_rate=SR, speech=[True, True])["overall"])


def test_inputs_are_stored_as_float32(metric):
    """evaluate writes the inputs to an Arrow table of float32: float64 audio scores as its float32 rounding (the
    same numbers as CodecMetrics on float32 audio), about 1e-9 away from CodecMetrics on the float64 audio."""
    rng = np.random.default_rng(11)
    references = [0.1 * rng.standard_normal(2 * SR), 0.2 * rng.standard_normal(SR)]
    predictions = [0.8 * r + 0.05 * rng.standard_normal(r.size) for r in references]
    got = metric.compute(predictions=predictions, references=references, sampling_rate=SR)
    rounded = CodecMetrics().compute(references=[r.astype(np.float32) for r in references],
                                     estimates=[p.astype(np.float32) for p in predictions], sample_rate=SR)
    _assert_close(got, rounded["overall"])
    exact = CodecMetrics().compute(references=references, estimates=predictions, sample_rate=SR)["overall"]
    _assert_close(got, exact, rel=1e-6)
    assert got["stft_distance"] != exact["stft_distance"]


def test_batches_accumulate_like_one_call(metric):
    references, predictions = _pairs()
    for start in range(0, 6, 2):
        metric.add_batch(predictions=predictions[start:start + 2], references=references[start:start + 2])
    _assert_close(metric.compute(sampling_rate=SR, speech=[True, True, True, False, False, True]),
                  CodecMetrics().compute(references=references, estimates=predictions, sample_rate=SR,
                                         speech=[True, True, True, False, False, True])["overall"])


def test_the_helper_and_evaluate_load_by_path(tmp_path):
    assert CODEC_METRIC_DIR.is_dir() and SCRIPT.is_file()
    assert (CODEC_METRIC_DIR / "__init__.py").is_file() and (CODEC_METRIC_DIR.parent / "__init__.py").is_file()
    from semanticodec_hf.evaluation import load_codec_metric as reexported

    assert reexported is load_codec_metric
    reference = _noise(1.0, 3)
    expected = CodecMetrics().compute(references=[reference], estimates=[0.5 * reference], sample_rate=SR)
    # the folder (the folder's name = the script's name), the script itself, and a copy outside the package:
    # the loader copies the script into its own cache, so it must import nothing relative to its folder
    outside = tmp_path / "semanticodec_codec_metrics"
    outside.mkdir()
    shutil.copy(SCRIPT, outside / SCRIPT.name)
    for loaded in (load_codec_metric(), evaluate.load(str(CODEC_METRIC_DIR)), evaluate.load(str(SCRIPT)),
                   evaluate.load(str(outside))):
        assert isinstance(loaded, evaluate.EvaluationModule) and loaded.name == "semanticodec_codec_metrics"
        _assert_close(loaded.compute(predictions=[0.5 * reference], references=[reference], sampling_rate=SR),
                      expected["overall"])
    from evaluate.loading import get_imports

    assert {(kind, name) for kind, name, *_ in get_imports(str(SCRIPT))} == {
        ("library", "datasets"), ("library", "evaluate"), ("library", "semanticodec_hf")}
    description = load_codec_metric().inputs_description
    assert "sampling_rate" in description and 'pip install "semanticodec-hf[eval]"' in load_codec_metric().description


def test_the_metric_folders_are_packages_of_the_wheel():
    from setuptools import find_packages

    src = Path(metrics_module.__file__).resolve().parent.parent
    assert {"semanticodec_hf.evaluation", "semanticodec_hf.evaluation.semanticodec_codec_metrics"} <= set(
        find_packages(str(src)))


@pytest.mark.parametrize("missing, display", [("pesq", "PESQ"), ("pystoi", "STOI")])
def test_a_missing_optional_package_names_the_extra(metric, monkeypatch, missing, display):
    monkeypatch.setitem(sys.modules, missing, None)  # import <missing> -> ImportError
    speech = _speech_like()
    extra = r'pip install "semanticodec-hf\[eval\]"'
    with pytest.raises(ImportError, match=f"{display} needs the optional `{missing}` package: {extra}"):
        metric.compute(predictions=[speech], references=[speech], sampling_rate=SR, speech=True)
    with pytest.raises(ImportError, match=extra):  # one source of the message: CodecMetrics and the functions
        CodecMetrics().compute(references=[speech], estimates=[speech], sample_rate=SR, domains=["speech"])
    function = metrics_module.pesq_wb if missing == "pesq" else metrics_module.stoi
    with pytest.raises(ImportError, match=extra):
        function(speech, speech, SR)
    # the other metrics need neither package
    assert metric.compute(predictions=[speech], references=[speech], sampling_rate=SR)["mel_distance"] == 0.0


def test_bad_input_is_a_clear_error(metric):
    reference = _noise(2.0, 5)
    with pytest.raises(ValueError, match=r"Mismatch in the number of predictions \(1\) and references \(2\)"):
        metric.compute(predictions=[reference], references=[reference, reference], sampling_rate=SR)
    with pytest.raises(ValueError, match=r"Clip 'cut'.*16000 samples \(1.000 s\) but the reference 32000 samples"):
        metric.compute(predictions=[reference[:SR]], references=[reference], sampling_rate=SR, names=["cut"])
    scored = metric.compute(predictions=[reference[:SR]], references=[reference], sampling_rate=SR,
                            max_length_difference=1.0)  # asked for explicitly, the overlap is scored
    assert scored["si_sdr"] > 100
    with pytest.raises(ValueError, match=r"needs sampling_rate= \(in Hz\)"):
        metric.compute(predictions=[reference], references=[reference])
    with pytest.raises(ValueError, match="give it in Hz, not kHz"):
        metric.compute(predictions=[reference], references=[reference], sampling_rate=16)
    with pytest.raises(ValueError, match="positive whole number"):
        metric.compute(predictions=[reference], references=[reference], sampling_rate=-16000)
    with pytest.raises(ValueError, match="positive whole number"):
        metric.compute(predictions=[reference], references=[reference], sampling_rate=16000.5)
    with pytest.raises(ValueError, match="16000 Hz but the estimate at 44100 Hz.*resample"):
        metric.compute(predictions=[reference], references=[reference], sampling_rate=SR,
                       predictions_sampling_rate=44100)
    with pytest.raises(ValueError, match="disagree"):
        metric.compute(predictions=[reference], references=[reference], sampling_rate=SR, sample_rate=8000)
    alias = metric.compute(predictions=[reference], references=[reference], sample_rate=SR)
    assert alias["mel_distance"] == 0.0
    with pytest.raises(ValueError, match="Clip 'x'.*empty"):
        metric.compute(predictions=[np.zeros(0, np.float32)], references=[reference], sampling_rate=SR,
                       names=["x"])
    with pytest.raises(ValueError, match="NaN or Inf"):
        metric.compute(predictions=[np.full(SR, np.nan, np.float32)], references=[reference[:SR]],
                       sampling_rate=SR)
    with pytest.raises(ValueError, match="don't match the expected format"):  # stereo: evaluate's own check
        metric.compute(predictions=[np.stack([reference, reference])], references=[reference], sampling_rate=SR)
    with pytest.raises(ValueError, match="one entry per clip"):
        metric.compute(predictions=[reference], references=[reference], sampling_rate=SR, domains=["a", "b"])


def test_the_recipe_scores_with_the_evaluate_metric(tmp_path, monkeypatch):
    references, estimates = tmp_path / "ref", tmp_path / "est"
    references.mkdir()
    estimates.mkdir()
    clean, noise = _speech_like(), _noise(1.0, 8)
    sf.write(str(references / "a.wav"), clean, SR)
    sf.write(str(estimates / "a.wav"), 0.5 * clean, SR)
    sf.write(str(references / "b.wav"), noise, SR)
    sf.write(str(estimates / "b.wav"), (noise + 0.05 * _noise(1.0, 9)).astype(np.float32), SR)
    loaded = []

    def recording(**kwargs):
        loaded.append(load_codec_metric(**kwargs))
        return loaded[-1]

    monkeypatch.setattr(metrics_module, "load_codec_metric", recording)
    out = import_recipe("evaluate_codec").main(["--reference-dir", str(references), "--estimate", f"x={estimates}",
                                                "--all-speech", "--output", str(tmp_path / "report")])
    assert len(loaded) == 1 and loaded[0].name == "semanticodec_codec_metrics"
    result = out["results"]["x"]
    read = [sf.read(str(folder / name), dtype="float32")[0] for folder in (references, estimates)
            for name in ("a.wav", "b.wav")]
    expected = CodecMetrics().compute(references=read[:2], estimates=read[2:], sample_rate=SR, speech=True,
                                      names=["a.wav", "b.wav"])
    for actual, wanted in zip(result["per_clip"], expected["per_clip"]):
        _assert_close(actual, {**wanted, "domain": "all"})
    _assert_close(result["overall"], expected["overall"])
    assert math.isfinite(result["overall"]["pesq_wb"])

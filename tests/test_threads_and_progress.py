"""Long jobs show their progress on stderr (off with --quiet) and use the CPU threads they are given
(`--threads`, default OMP_NUM_THREADS or the CPUs the process may use)."""

import argparse
import importlib
import os
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from semanticodec_hf import SemantiCodecProcessor
from semanticodec_hf.cli import main as cli_main
from semanticodec_hf.cpu_threads import available_cpus, default_threads, positive_int_argument, use_threads

from recipe_modules import import_recipe


@pytest.fixture
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_default_threads_follow_omp_num_threads_then_the_affinity_mask(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    for unusable in ("", "0", "two"):
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        assert default_threads() == available_cpus()
    if hasattr(os, "sched_getaffinity"):
        assert available_cpus() == len(os.sched_getaffinity(0))
    assert use_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert use_threads() == available_cpus() == torch.get_num_threads()


def _tone(path, seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate)
    return path


def _threads_seen_by_the_encoder(monkeypatch):
    seen = []
    original = SemantiCodecProcessor.encode_prepared

    def recording(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SemantiCodecProcessor, "encode_prepared", recording)
    return seen


def test_the_threads_option_is_honoured_inside_a_command(tmp_path, monkeypatch, restore_threads):
    wav = _tone(tmp_path / "a.wav")
    seen = _threads_seen_by_the_encoder(monkeypatch)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert cli_main(["encode", str(wav), str(tmp_path / "a.npy"), "--tiny", "--quiet", "--threads", "1"]) == 0
    assert seen == [1]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the default follows OMP_NUM_THREADS
    torch.set_num_threads(2)
    assert cli_main(["encode", str(wav), str(tmp_path / "b.npy"), "--tiny", "--quiet"]) == 0
    assert seen == [1, 1]


@pytest.mark.parametrize("bad, shown", [("0", "0"), ("-2", "-2"), ("many", "'many'")])
def test_a_bad_thread_count_is_a_usage_error(tmp_path, capsys, bad, shown):
    assert cli_main(["encode", "x.wav", str(tmp_path / "x.npy"), "--tiny", "--threads", bad]) == 2
    assert f"--threads: expected a positive number of threads, got {shown}" in capsys.readouterr().err


def test_one_positive_int_parser_serves_threads_and_the_command_lines_counts():
    """`positive_int_argument` is the one parser of whole numbers >= 1 (`--threads`, `--batch-size`, `--steps`);
    its errors name what is counted."""
    parse = positive_int_argument("integer")
    assert parse("3") == 3
    for bad, shown in (("0", "0"), ("-1", "-1"), ("2.5", "'2.5'"), ("", "''")):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"expected a positive integer, got {shown}")):
            parse(bad)


def test_every_command_that_runs_torch_has_the_threads_option(capsys):
    for command in ("compress", "decompress", "encode", "decode", "roundtrip", "convert", "continue", "decode-semantic"):
        assert cli_main([command, "--help"]) == 0
        assert "--threads N" in capsys.readouterr().out, command
    for recipe in ("evaluate_codec", "build_semantic_codebook", "train_codec", "tokenize_dataset", "evaluate_lm"):
        with pytest.raises(SystemExit) as done:
            import_recipe(recipe).main(["--help"])
        assert done.value.code == 0
        assert "--threads N" in capsys.readouterr().out, recipe
    for script in ("train", "generate"):  # the LM toolkit's own command lines
        with pytest.raises(SystemExit) as done:
            importlib.import_module(f"semanticodec_hf.lm.{script}").main(["--help"])
        assert done.value.code == 0
        assert "--threads N" in capsys.readouterr().out, script


def _references_and_estimates(tmp_path, count=3):
    references, estimates = tmp_path / "ref", tmp_path / "est"
    references.mkdir()
    estimates.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        clip = (0.1 * rng.standard_normal(16000)).astype(np.float32)
        sf.write(str(references / f"c{index}.wav"), clip, 16000)
        sf.write(str(estimates / f"c{index}.wav"), 0.5 * clip, 16000)
    return references, estimates


def test_codec_evaluation_shows_clips_times_systems_with_the_current_system(tmp_path, capsys):
    references, estimates = _references_and_estimates(tmp_path)
    evaluate = import_recipe("evaluate_codec")
    common = ["--reference-dir", str(references), "--estimate", f"alpha={estimates}", "--estimate",
              f"beta={estimates}", "--threads", "1"]
    evaluate.main(common + ["--output", str(tmp_path / "r1")])
    err = capsys.readouterr().err
    assert "score" in err and "6/6" in err and "beta" in err, err[-600:]  # 3 clips x 2 systems, names the system
    evaluate.main(common + ["--output", str(tmp_path / "r2"), "--quiet"])
    captured = capsys.readouterr()
    assert "score" not in captured.err and "written:" not in captured.err
    assert "| alpha |" in captured.out  # the report itself still prints

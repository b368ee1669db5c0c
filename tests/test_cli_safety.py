"""Command-line safety (issue 16, item 4): an output never replaces an input, output problems are found before
any work and reported in one line, temporary names fit any legal output name, SIGTERM cleans up like Ctrl-C,
what SIGKILL leaves is removed by the next run (only our files, only when nobody writes them), globs keep only
input files, `--subtype` is checked up front, and `info` does not import torch."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
import soundfile as sf

from semanticodec_hf import SemantiCodecConfig
from semanticodec_hf import atomic_files
from semanticodec_hf import cli_audio_io, cli_codec_commands, cli_jobs
from semanticodec_hf.atomic_files import atomic_write, is_temporary_name, remove_stale_temporaries
from semanticodec_hf.cli import main as cli_main
from semanticodec_hf.sct_format import write_sct

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(__file__).resolve().parents[1] / "src"
RUN_CLI = "import sys; from semanticodec_hf.cli import main; sys.exit(main(sys.argv[1:]))"
TINY = SemantiCodecConfig.tiny()  # the variant of the CLI's --tiny model
VARIANT = dict(token_rate=TINY.token_rate, semantic_vocab_size=TINY.semantic_vocab_size,
               acoustic_codebook_size=TINY.acoustic_codebook_size)


def tone(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), rate, subtype="PCM_16")
    return path


def random_codes(frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, TINY.semantic_vocab_size, frames),
                     rng.integers(0, TINY.acoustic_codebook_size, frames)])


def sct_file(path: Path, frames: int, seed: int = 0) -> Path:
    frames_per_second = TINY.token_rate // 2  # two tokens (semantic, acoustic) per frame
    write_sct(path, random_codes(frames, seed), num_samples=frames * 16000 // frames_per_second, **VARIANT)
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model means work has started: every refusal tested with this must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded: the check did not happen before the work")

    monkeypatch.setattr(cli_codec_commands, "load_codec", refuse)


def fails(argv: List[str], capsys, *needles: str, code: int = 2) -> str:
    assert cli_main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def subprocess_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


# --------------------------------------------------------------------------------- 1. outputs are never inputs
def test_roundtrip_refuses_any_output_that_is_an_input_or_another_output(tmp_path, capsys, no_model, monkeypatch):
    good = tone(tmp_path / "good.wav")
    before = good.read_bytes()
    (tmp_path / "sub").mkdir()
    os.symlink(good, tmp_path / "link.wav")
    os.link(good, tmp_path / "hard.wav")
    monkeypatch.chdir(tmp_path)
    for output, extra, needle in [
        ("good.wav", [], "the output good.wav is the input file"),
        ("sub/../good.wav", [], "is the input file"),  # another spelling
        (str(good), [], "is the input file"),  # absolute vs relative
        ("link.wav", [], "is the input file"),  # a symlink to it
        ("hard.wav", [], "is the input file"),  # a hard link to it
        ("o.wav", ["--codes", "good.wav"], "the codes file good.wav is the input file"),
        ("o.wav", ["--codes", "./o.wav"], "the codes file o.wav and the output o.wav are the same file"),
    ]:
        err = fails(["roundtrip", "good.wav", output, "--tiny", *extra], capsys, needle, "Choose")
        assert len(err.strip().splitlines()) == 1
    assert good.read_bytes() == before and not (tmp_path / "o.wav").exists()


def test_folder_runs_refuse_an_output_that_is_any_input(tmp_path, capsys, no_model):
    src = tmp_path / "src"
    sct_file(src / "a.sct", 20)
    sct_file(src / "b.sct", 20, seed=1)
    (tmp_path / "out").mkdir()
    os.symlink(src / "b.sct", tmp_path / "out" / "a.wav")  # out/a.wav would replace the input b.sct
    fails(["decompress", str(src), str(tmp_path / "out"), "--tiny"], capsys, "out/a.wav is the input file",
          "b.sct")
    assert (src / "b.sct").stat().st_size > 40
    sct = sct_file(tmp_path / "x.sct", 20)
    os.link(sct, tmp_path / "x_hard.wav")
    fails(["decompress", str(sct), str(tmp_path / "x_hard.wav"), "--tiny"], capsys, "is the input file")


# ------------------------------------------------------------------------------------- 2. write problems
def test_unwritable_outputs_are_refused_before_any_work(tmp_path, capsys, no_model):
    good = tone(tmp_path / "good.wav")
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    too_long = tmp_path / ("x" * (limit - 3) + ".sct")  # limit + 1 bytes
    fails(["compress", str(good), str(too_long), "--tiny"], capsys, f"is {limit + 1} bytes, more than the {limit}",
          "choose a shorter name", "nothing was run")
    # roundtrip: a legal output name whose default codes name (.codes.npy) would be too long names the codes file
    output = tmp_path / ("y" * (limit - 4) + ".wav")
    fails(["roundtrip", str(good), str(output), "--tiny"], capsys, "cannot write the codes file", "more than the")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    fails(["roundtrip", str(good), str(blocker / "deeper" / "o.wav"), "--tiny"], capsys,
          f"{blocker} is a file, not a folder", "choose another output location")
    (tmp_path / "folder.wav").mkdir()
    fails(["roundtrip", str(good), str(tmp_path / "folder.wav"), "--tiny"], capsys, "is an existing folder")
    sct = sct_file(tmp_path / "c.sct", 20)
    fails(["decompress", str(sct), str(blocker / "c.wav"), "--tiny"], capsys, "is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "c.sct", "folder.wav", "good.wav"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_a_folder_without_write_permission_is_refused_before_any_work(tmp_path, capsys, no_model):
    good = tone(tmp_path / "good.wav")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        fails(["compress", str(good), str(locked / "o.sct"), "--tiny"], capsys, "no permission to create files in")
    finally:
        locked.chmod(0o755)


def test_the_longest_legal_names_can_be_written(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    for suffix in (".sct", ".wav", ".codes.npy"):
        target = tmp_path / ("n" * (limit - len(suffix)) + suffix)
        assert len(os.fsencode(target.name)) == limit
        atomic_write(target, lambda temporary: temporary.write_bytes(b"ok"))
        assert target.read_bytes() == b"ok"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert cli_main(["compress", str(tone(tmp_path / "in.wav")), str(tmp_path / ("s" * (limit - 4) + ".sct")),
                     "--tiny", "--quiet"]) == 0


def test_temporary_names_are_short_and_ours(tmp_path):
    seen = []
    atomic_write(tmp_path / ("x" * 250 + ".flac"), lambda temporary: seen.append(temporary.name))
    (name,) = seen
    assert len(name) <= 40 and name.endswith(".partial.flac") and is_temporary_name(name)
    for foreign in (".song.abcd1234.partial.wav", "semanticodec-hf-abcd1234.partial.wav", ".semanticodec-hf-x.wav",
                    ".semanticodec-hf-abcd1234.partial.wav.bak"):
        assert not is_temporary_name(foreign), foreign


def test_write_errors_after_the_work_are_one_line_and_spare_the_other_files(tmp_path, capsys, monkeypatch):
    codes = tmp_path / "codes"
    codes.mkdir()
    for seed, name in enumerate("abc"):
        np.save(codes / f"{name}.npy", random_codes(30, seed=seed))
    real = atomic_files.atomic_write

    def refusing(path, write):
        if Path(path).name == "b.wav":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, write)

    monkeypatch.setattr(atomic_files, "atomic_write", refusing)
    err = fails(["decode", str(codes), str(tmp_path / "out"), "--tiny", "--quiet", "--steps", "1"], capsys,
                "b.wav: Permission denied; no permission to write there", "1 of 3 files failed")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav", "c.wav"]
    assert "Traceback" not in err

    # roundtrip: the codes write failing after the work is one line, exit 2, and nothing is left behind
    def too_long(path, write):
        raise OSError(errno.ENAMETOOLONG, "File name too long", str(path))

    monkeypatch.setattr(atomic_files, "atomic_write", too_long)
    good = tone(tmp_path / "good.wav")
    fails(["roundtrip", str(good), str(tmp_path / "r.wav"), "--tiny", "--quiet", "--steps", "1"], capsys,
          "cannot write", "r.codes.npy: File name too long; the name is too long")
    # ... and the audio write failing removes the codes already written: no half result
    monkeypatch.setattr(atomic_files, "atomic_write", real)

    def disk_full(path, *args):
        raise cli_audio_io.write_failure(path, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(cli_codec_commands, "write_audio", disk_full)
    fails(["roundtrip", str(good), str(tmp_path / "r.wav"), "--tiny", "--quiet", "--steps", "1"], capsys,
          "r.wav: No space left on device; the disk is full")
    assert not (tmp_path / "r.wav").exists() and not (tmp_path / "r.codes.npy").exists()


# ------------------------------------------------------------------------------ 3. SIGTERM, SIGKILL, leftovers
def _start_streamed_decompress(tmp_path: Path) -> "tuple[subprocess.Popen, Path, Path]":
    """A `decompress` long enough to stream (its temporary is open for many seconds); waits for the temporary."""
    frames = 96 * TINY.frames_per_window  # streamed; runs for minutes, is stopped as soon as it writes
    sct = sct_file(tmp_path / "long.sct", frames)
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, "decompress", str(sct), str(out / "long.wav"), "--tiny", "--quiet",
         "--steps", "1", "--batch-size", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if any(is_temporary_name(p.name) for p in out.iterdir()):
            return process, out, sct
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"the streamed decode never created its temporary: {process.communicate()}")


def test_sigterm_during_a_streamed_decompress_removes_the_temporary_and_exits_143(tmp_path):
    process, out, _ = _start_streamed_decompress(tmp_path)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 143, err
    assert "terminated (SIGTERM); no partial output was left" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_what_sigkill_leaves_is_removed_by_the_next_run_and_only_that(tmp_path, capsys):
    process, out, _ = _start_streamed_decompress(tmp_path)
    process.kill()
    process.communicate(timeout=60)
    (leftover,) = [p for p in out.iterdir() if is_temporary_name(p.name)]
    assert leftover.stat().st_mode & 0o777 == 0o600
    foreign = [out / ".long.abcd1234.partial.wav", out / "keep.partial.wav", out / ".semanticodec-hf-notes.txt"]
    for path in foreign:
        path.write_bytes(b"not ours")
    live = out / ".semanticodec-hf-live1234.partial.wav"  # ours, but a running writer holds its lock
    live.write_bytes(b"being written")
    with open(live, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert cli_main(["compress", str(tone(tmp_path / "next.wav")), str(out / "next.sct"), "--tiny"]) == 0
        assert f"removed {leftover}" in capsys.readouterr().err
        assert live.exists()
    assert not leftover.exists()
    assert all(path.exists() for path in foreign)
    assert (out / "next.sct").exists()
    assert remove_stale_temporaries(out) == [live]  # unlocked now: a leftover like any other


def test_stale_temporaries_without_locks_are_judged_by_age(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic_files, "fcntl", None)  # a platform or filesystem without flock
    fresh = tmp_path / ".semanticodec-hf-fresh123.partial.wav"
    old = tmp_path / ".semanticodec-hf-old12345.partial.sct"
    for path in (fresh, old):
        path.write_bytes(b"x")
    past = time.time() - atomic_files.STALE_AFTER_SECONDS - 60
    os.utime(old, (past, past))
    assert remove_stale_temporaries(tmp_path) == [old]
    assert fresh.exists()


# ------------------------------------------------------------------------------ 4. globs and --subtype
def test_glob_inputs_keep_only_input_files_and_say_how_many_were_skipped(tmp_path, capsys):
    folder = tmp_path / "mixed"
    sct_file(folder / "a.sct", 10)
    sct_file(folder / "b.sct", 10, seed=1)
    (folder / "notes.txt").write_text("not a .sct file")
    (folder / "c.wav").write_bytes(b"RIFF")
    assert cli_main(["info", str(folder / "*"), "--json"]) == 0
    captured = capsys.readouterr()
    assert [Path(r["file"]).name for r in json.loads(captured.out)] == ["a.sct", "b.sct"]
    assert "matches 2 files that are not input files (.sct); skipped." in captured.err
    fails(["info", str(folder / "*.txt")], capsys, "matches 1 file, but none is an input file (.sct)")
    jobs = cli_jobs.resolve_jobs([str(folder / "*")], str(tmp_path / "out"), cli_jobs.audio_suffixes(), ".sct")
    assert [job.source.name for job in jobs] == ["c.wav"]


def test_subtype_is_checked_against_the_output_format_before_any_work(tmp_path, capsys, no_model):
    good = tone(tmp_path / "good.wav")
    sct = sct_file(tmp_path / "c.sct", 20)
    np.save(tmp_path / "c.npy", random_codes(20))
    fails(["roundtrip", str(good), str(tmp_path / "o.wav"), "--tiny", "--subtype", "BOGUS"], capsys,
          "--subtype BOGUS is not a soundfile subtype", "PCM_24")
    fails(["roundtrip", str(good), str(tmp_path / "o.ogg"), "--tiny"], capsys,
          "--subtype PCM_16 cannot be written to .ogg files", "VORBIS")
    fails(["decompress", str(sct), str(tmp_path / "o.flac"), "--tiny", "--subtype", "FLOAT"], capsys,
          "--subtype FLOAT cannot be written to .flac files")
    fails(["decode", str(tmp_path / "c.npy"), str(tmp_path / "o.wav"), "--tiny", "--subtype", "VORBIS"], capsys,
          "--subtype VORBIS cannot be written to .wav files")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy", "c.sct", "good.wav"]  # no orphan codes


# ------------------------------------------------------------------------------------ 5. a light `info`
def test_info_reads_headers_without_importing_torch(tmp_path):
    sct = sct_file(tmp_path / "a.sct", 50)
    probe = ("import json, sys; from semanticodec_hf.cli import main; code = main(['info', sys.argv[1]]); "
             "heavy = ('torch', 'transformers', 'diffusers', 'semanticodec_hf.lm'); "
             "print(json.dumps(sorted(m for m in heavy if m in sys.modules)));"
             " sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", probe, str(sct)], capture_output=True, text=True,
                            env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "checksum ok" in lines[0] and json.loads(lines[-1]) == []


def test_info_lists_a_file_named_twice_once(tmp_path, capsys):
    from semanticodec_hf.cli import main as cli_main

    sct = sct_file(tmp_path / "a.sct", 50)
    capsys.readouterr()
    assert cli_main(["info", str(sct), str(tmp_path / "." / "a.sct"), str(tmp_path / "*.sct"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_frames"] > 0  # one record (a list would mean several files)
    assert "skipped 2 inputs named again" in captured.err


def test_the_lazy_package_still_registers_the_auto_classes_and_exports_its_classes():
    probe = ("import semanticodec_hf, sys; assert 'torch' not in sys.modules; "
             "from transformers import AutoConfig; print(type(AutoConfig.for_model('semanticodec')).__name__); "
             "from semanticodec_hf import SemantiCodecModel, SemantiCodecFeatureExtractor, CodecMetrics; "
             "print(SemantiCodecModel.__name__)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=subprocess_env(),
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SemantiCodecConfig", "SemantiCodecModel"]

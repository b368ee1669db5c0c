"""The command line's job resolution (`semanticodec_hf.cli_jobs`, issue 16): which files INPUT... names, which
output each becomes, and what is refused before any work. Only file names and the file system matter here, so
the inputs are empty files with audio names (no codec, no audio decoding); the whole file runs in about a second.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Sequence

import pytest
import soundfile

from semanticodec_hf import cli_jobs
from semanticodec_hf.cli_jobs import (
    CliError,
    Job,
    audio_suffixes,
    expand,
    file_keys,
    groups,
    is_input_file,
    plural,
    refuse_overwriting,
    resolve_jobs,
    stat_kind,
)

AUDIO = (".flac", ".wav")  # the input suffixes of most tests; `audio_suffixes()` is tested on its own


def touch(path: Path) -> Path:
    """An empty file at `path` (folders created): only its name matters to job resolution."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def pairs(found: Sequence) -> List[tuple]:
    """`expand`'s (file, relative) pairs as strings relative to nothing: easy to compare."""
    return [(str(source), str(relative)) for source, relative in found]


def targets(jobs: Sequence[Job]) -> List[tuple]:
    return [(str(job.source), str(job.target)) for job in jobs]


def refused(match: str):
    """`pytest.raises(CliError)` whose message must contain `match` literally."""
    return pytest.raises(CliError, match=re.escape(match))


# ---------------------------------------------------------------------------------------------- audio_suffixes
def test_audio_suffixes_are_soundfiles_readable_formats_sorted_lowercase_with_aliases():
    """Every format soundfile reads here, as a sorted tuple of lower-case `.suffix`es, plus `.aif` and
    `.oga`/`.opus`; never `.raw` (headerless: unreadable without its layout)."""
    suffixes = audio_suffixes()
    assert isinstance(suffixes, tuple) and list(suffixes) == sorted(set(suffixes))
    formats = set(soundfile.available_formats())
    assert {f".{name.lower()}" for name in formats - {"RAW"}} <= set(suffixes)
    assert {".wav", ".flac", ".ogg", ".aif", ".aiff", ".oga", ".opus"} <= set(suffixes)
    assert ".raw" not in suffixes and ".WAV" not in suffixes


def test_audio_suffixes_follow_what_this_soundfile_build_offers(monkeypatch):
    """The aliases come only with their format: without AIFF no `.aif`, without OGG no `.oga`/`.opus`."""
    monkeypatch.setattr(soundfile, "available_formats", lambda: {"WAV": "Microsoft", "RAW": "headerless"})
    assert audio_suffixes() == (".wav",)
    monkeypatch.setattr(soundfile, "available_formats",
                        lambda: {"OGG": "Ogg", "AIFF": "Apple", "RAW": "headerless", "FLAC": "Free"})
    assert audio_suffixes() == (".aif", ".aiff", ".flac", ".oga", ".ogg", ".opus")


# ----------------------------------------------------------------------------------------------- stat_kind
def test_stat_kind_tells_folders_files_and_missing_paths_apart(tmp_path):
    """"dir" for a folder, "file" for anything else that exists (a dangling symlink too: writing through it
    would still land somewhere), None for a missing path."""
    folder = tmp_path / "folder"
    folder.mkdir()
    assert stat_kind(folder) == "dir"
    assert stat_kind(touch(tmp_path / "a.wav")) == "file"
    os.symlink(tmp_path / "nowhere.wav", tmp_path / "dangling.wav")
    assert stat_kind(tmp_path / "dangling.wav") == "file"
    assert stat_kind(tmp_path / "missing.wav") is None


def test_stat_kind_never_raises_on_impossible_paths(tmp_path, monkeypatch):
    """A name too long, a file used as a folder, a NUL byte, or a file system call that fails: None, not an
    exception (the callers turn None into a clear message)."""
    touch(tmp_path / "a.wav")
    assert stat_kind(tmp_path / ("x" * 5000)) is None
    assert stat_kind(tmp_path / "a.wav" / "child.wav") is None
    assert stat_kind(Path("nul\0byte.wav")) is None

    def failing(path):
        raise OSError("stat failed")

    monkeypatch.setattr(cli_jobs.os.path, "isdir", failing)
    assert stat_kind(tmp_path) is None


# ------------------------------------------------------------------------------------------ same-file checks
def test_file_keys_of_one_file_intersect_however_it_is_spelled(tmp_path, monkeypatch):
    """Relative, `..`-laden, symlinked and hard-linked spellings of one file share a key; other files do not."""
    a = touch(tmp_path / "a.wav")
    b = touch(tmp_path / "b.wav")
    os.symlink(a, tmp_path / "symlink.wav")
    os.link(a, tmp_path / "hardlink.wav")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for spelling in (Path("a.wav"), Path("./a.wav"), Path("sub/../a.wav"), Path("symlink.wav"),
                     Path("hardlink.wav"), a):
        assert file_keys(spelling) & file_keys(a), spelling
    assert not file_keys(b) & file_keys(a)


def test_file_keys_name_missing_files_by_path_alone(tmp_path):
    """A file not yet written is identified by where it would be: one key, shared by its other spellings."""
    missing = tmp_path / "new.sct"
    assert len(file_keys(missing)) == 1
    assert file_keys(missing) == file_keys(tmp_path / "sub" / ".." / "new.sct")
    assert not file_keys(missing) & file_keys(tmp_path / "other.sct")
    assert len(file_keys(touch(tmp_path / "made.sct"))) == 2  # path and inode


def test_file_keys_of_a_hard_link_match_by_inode_not_by_path(tmp_path):
    """Two hard links share nothing but the inode; that is what makes them one file."""
    a = touch(tmp_path / "a.wav")
    os.link(a, tmp_path / "hardlink.wav")
    shared = file_keys(a) & file_keys(tmp_path / "hardlink.wav")
    assert len(shared) == 1
    assert os.stat(a).st_ino in next(iter(shared))


def test_file_keys_survive_a_symlink_loop(tmp_path):
    """A symlink loop cannot be resolved; it is still identified (by its absolute path), not an error."""
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    keys = file_keys(tmp_path / "loop_a")
    assert keys == file_keys(tmp_path / "." / "loop_a")
    assert not keys & file_keys(tmp_path / "loop_b")
    with refused("the output"):
        refuse_overwriting([tmp_path / "loop_a"], [("output", tmp_path / "loop_a")])


def test_refuse_overwriting_accepts_distinct_outputs(tmp_path):
    """Outputs that are neither an input nor each other pass (existing or not)."""
    source = touch(tmp_path / "in.wav")
    existing = touch(tmp_path / "old.wav")
    refuse_overwriting([source], [("output", existing), ("codes file", tmp_path / "new.codes.npy"),
                                  ("third", tmp_path / "third.npy")])


def test_refuse_overwriting_refuses_an_output_that_is_an_input(tmp_path, monkeypatch):
    """An output that is the input, spelled relatively or through a symlink or a hard link, is refused, naming
    both and what kind of output it was."""
    source = touch(tmp_path / "in.wav")
    os.symlink(source, tmp_path / "link.wav")
    os.link(source, tmp_path / "hard.wav")
    other = touch(tmp_path / "other.wav")
    monkeypatch.chdir(tmp_path)
    for spelling in (Path("in.wav"), Path("./in.wav"), Path("link.wav"), Path("hard.wav")):
        with refused(f"the codes file {spelling} is the input file {source}; writing it would destroy the input. "
                     "Choose another codes file name."):
            refuse_overwriting([other, source], [("output", tmp_path / "fine.wav"), ("codes file", spelling)])


def test_refuse_overwriting_refuses_two_outputs_that_are_one_file(tmp_path):
    """Two outputs that are one file are refused (the second would replace the first), naming both."""
    source = touch(tmp_path / "in.wav")
    out = tmp_path / "out.wav"
    with refused(f"the codes file {tmp_path}/sub/../out.wav and the output {out} are the same file; one would "
                 "overwrite the other. Choose different names."):
        refuse_overwriting([source], [("output", out), ("codes file", tmp_path / "sub" / ".." / "out.wav")])
    with refused("are the same file"):
        refuse_overwriting([source], [("output", tmp_path / "a.wav"), ("codes file", tmp_path / "b.npy"),
                                      ("third", tmp_path / "a.wav")])


# ------------------------------------------------------------------------------------------- is_input_file
def test_is_input_file_wants_a_visible_file_with_an_input_suffix_in_any_case(tmp_path):
    """Input files: regular, not hidden (our temporaries are hidden), suffix in the list whatever its case."""
    assert is_input_file(touch(tmp_path / "a.wav"), AUDIO)
    assert is_input_file(touch(tmp_path / "LOUD.WAV"), AUDIO)
    assert is_input_file(touch(tmp_path / "Mixed.Flac"), AUDIO)
    assert not is_input_file(touch(tmp_path / "notes.txt"), AUDIO)
    assert not is_input_file(touch(tmp_path / ".hidden.wav"), AUDIO)
    assert not is_input_file(touch(tmp_path / ".hidden.txt"), AUDIO)
    (tmp_path / "folder.wav").mkdir()
    assert not is_input_file(tmp_path / "folder.wav", AUDIO)
    assert not is_input_file(tmp_path / "missing.wav", AUDIO)


# ------------------------------------------------------------------------------------------------- expand
def test_expand_a_file_is_that_file_whatever_its_suffix(tmp_path):
    """A file named explicitly is taken as it is (its reader reports a wrong format), relative name = its name."""
    touch(tmp_path / "a.wav")
    touch(tmp_path / "notes.txt")
    assert pairs(expand(str(tmp_path / "a.wav"), AUDIO)) == [(str(tmp_path / "a.wav"), "a.wav")]
    assert pairs(expand(str(tmp_path / "notes.txt"), AUDIO)) == [(str(tmp_path / "notes.txt"), "notes.txt")]


def test_expand_a_folder_walks_it_recursively_keeping_sub_paths(tmp_path):
    """A folder yields its input files at any depth, sorted, each with its path below the folder; other files,
    hidden files and folders with audio names are silently left out (no note)."""
    root = tmp_path / "root"
    for name in ("b.wav", "a.flac", "sub/c.WAV", "sub/deeper/d.wav", "sub/notes.txt", ".hidden.wav",
                 "sub/.tmp-x.wav", "folder.wav/e.wav"):
        touch(root / name)
    notes: List[str] = []
    found = expand(str(root), AUDIO, notes)
    assert pairs(found) == [(str(root / rel), rel) for rel in
                            ("a.flac", "b.wav", "folder.wav/e.wav", "sub/c.WAV", "sub/deeper/d.wav")]
    assert notes == []


def test_expand_refuses_a_folder_without_input_files(tmp_path):
    """A folder with no input file is an error that lists the suffixes looked for."""
    touch(tmp_path / "empty" / "notes.txt")
    touch(tmp_path / "empty" / ".hidden.wav")
    with refused(f"folder {tmp_path / 'empty'} holds no input files (.flac, .wav)."):
        expand(str(tmp_path / "empty"), AUDIO)


def test_expand_a_glob_keeps_input_files_and_notes_how_many_others_it_skipped(tmp_path):
    """A glob keeps the input files it matches, sorted, each named by its file name; the files it matched that
    are not input files are counted in a note (folders it matched are not files and not counted)."""
    for name in ("b.wav", "a.WAV", "notes.txt", "cover.jpg", "c.flac"):
        touch(tmp_path / name)
    (tmp_path / "folder.wav").mkdir()
    notes: List[str] = []
    found = expand(str(tmp_path / "*"), AUDIO, notes)
    assert pairs(found) == [(str(tmp_path / n), n) for n in ("a.WAV", "b.wav", "c.flac")]
    assert notes == [f"the pattern {str(tmp_path / '*')!r} matches 2 files that are not input files "
                     "(.flac, .wav); skipped."]


def test_expand_a_glob_of_input_files_only_adds_no_note(tmp_path):
    """No note when every matched file is an input file, and none asked for when notes is not passed."""
    touch(tmp_path / "a.wav")
    touch(tmp_path / "b.txt")
    notes: List[str] = []
    assert pairs(expand(str(tmp_path / "*.wav"), AUDIO, notes)) == [(str(tmp_path / "a.wav"), "a.wav")]
    assert notes == []
    assert pairs(expand(str(tmp_path / "*"), AUDIO)) == [(str(tmp_path / "a.wav"), "a.wav")]


def test_expand_double_star_globs_recurse_and_flatten_names(tmp_path):
    """`**` matches any depth (the folder itself included); glob results keep only their file names."""
    for name in ("a.wav", "s/b.wav", "s/t/c.flac", "s/t/skip.txt"):
        touch(tmp_path / name)
    found = expand(str(tmp_path / "**" / "*.*"), AUDIO)
    assert pairs(found) == [(str(tmp_path / rel), Path(rel).name) for rel in ("a.wav", "s/b.wav", "s/t/c.flac")]
    assert pairs(expand(str(tmp_path / "s" / "**" / "c.flac"), AUDIO)) == [(str(tmp_path / "s/t/c.flac"), "c.flac")]


def test_expand_glob_characters_question_mark_and_brackets(tmp_path):
    """`?` and `[...]` are glob characters too, not parts of a missing file name."""
    for name in ("a1.wav", "a2.wav", "b1.wav"):
        touch(tmp_path / name)
    assert [r for _, r in pairs(expand(str(tmp_path / "a?.wav"), AUDIO))] == ["a1.wav", "a2.wav"]
    assert [r for _, r in pairs(expand(str(tmp_path / "[ab]1.wav"), AUDIO))] == ["a1.wav", "b1.wav"]


def test_expand_a_glob_that_matches_nothing_or_only_other_files_is_an_error(tmp_path):
    """A glob matching no file, or only files that are not inputs (hidden ones included), says which."""
    touch(tmp_path / "notes.txt")
    touch(tmp_path / ".hidden.wav")
    touch(tmp_path / ".hidden.txt")
    (tmp_path / "folder.wav").mkdir()
    with refused(f"the pattern {str(tmp_path / '*.mp3')!r} matches no files."):
        expand(str(tmp_path / "*.mp3"), AUDIO)
    with refused(f"the pattern {str(tmp_path / 'folder*')!r} matches no files."):
        expand(str(tmp_path / "folder*"), AUDIO)
    with refused(f"the pattern {str(tmp_path / '*.txt')!r} matches 1 file, but none is an input file "
                 "(.flac, .wav)."):
        expand(str(tmp_path / "*.txt"), AUDIO)
    with refused("matches 2 files, but none is an input file"):
        expand(str(tmp_path / ".*"), AUDIO)


def test_expand_a_missing_name_without_glob_characters_does_not_exist(tmp_path):
    """A name that is neither a file, a folder nor a pattern: 'does not exist' (not 'matches no files')."""
    with refused(f"input {tmp_path / 'missing.wav'} does not exist."):
        expand(str(tmp_path / "missing.wav"), AUDIO)


# ------------------------------------------------------------------------------------------- resolve_jobs
def test_one_file_becomes_the_output_named(tmp_path):
    """One input file and an output that is not a folder: exactly that output, its suffix as given."""
    source = touch(tmp_path / "a.wav")
    assert targets(resolve_jobs([str(source)], str(tmp_path / "x.bin"), AUDIO, ".sct")) == [
        (str(source), str(tmp_path / "x.bin"))]
    touch(tmp_path / "old.sct")
    assert targets(resolve_jobs([str(source)], str(tmp_path / "old.sct"), AUDIO, ".sct")) == [
        (str(source), str(tmp_path / "old.sct"))]


def test_one_file_into_a_folder_keeps_its_name_with_the_output_suffix(tmp_path):
    """One input file and an existing folder, or a name ending in a slash: OUTPUT/<name><out_suffix>."""
    source = touch(tmp_path / "a.b.wav")
    (tmp_path / "existing").mkdir()
    assert targets(resolve_jobs([str(source)], str(tmp_path / "existing"), AUDIO, ".sct")) == [
        (str(source), str(tmp_path / "existing" / "a.b.sct"))]
    assert targets(resolve_jobs([str(source)], str(tmp_path / "new") + "/", AUDIO, ".sct")) == [
        (str(source), str(tmp_path / "new" / "a.b.sct"))]


def test_a_trailing_forward_slash_means_a_folder_where_the_separator_is_a_backslash(tmp_path, monkeypatch):
    """On Windows (`os.sep` is a backslash) both `out/` and `out\\` name a folder."""
    source = touch(tmp_path / "a.wav")
    monkeypatch.setattr(cli_jobs.os, "sep", "\\")
    assert targets(resolve_jobs([str(source)], str(tmp_path / "new") + "/", AUDIO, ".sct")) == [
        (str(source), str(tmp_path / "new" / "a.sct"))]


def test_one_file_onto_itself_is_refused(tmp_path, monkeypatch):
    """The single output may not be the input, whether spelled the same, relatively, or via a symlink or a
    hard link."""
    source = touch(tmp_path / "a.wav")
    os.symlink(source, tmp_path / "link.wav")
    os.link(source, tmp_path / "hard.wav")
    monkeypatch.chdir(tmp_path)
    for spelling in (str(source), "a.wav", "./a.wav", "link.wav", "hard.wav"):
        with refused(f"the output {Path(spelling)} is the input file {source}; writing it would destroy the "
                     "input. Choose another output name."):
            resolve_jobs([str(source)], spelling, AUDIO, ".wav")


def test_one_file_into_its_own_folder_with_its_own_suffix_is_refused(tmp_path):
    """`x/a.sct` into folder `x` with `.sct` outputs would overwrite the input."""
    source = touch(tmp_path / "a.sct")
    with refused(f"the output {source} is the input file {source}; writing it would destroy the input. "
                 "Choose another output folder."):
        resolve_jobs([str(source)], str(tmp_path), (".sct",), ".sct")


def test_several_files_go_into_a_folder_in_the_order_given(tmp_path):
    """Several inputs: one job per file, in the order named, each OUTPUT/<name><out_suffix>, the folder
    named with or without a trailing slash, existing or not."""
    b = touch(tmp_path / "in" / "b.wav")
    a = touch(tmp_path / "in" / "a.flac")
    expected = [(str(b), str(tmp_path / "out" / "b.sct")), (str(a), str(tmp_path / "out" / "a.sct"))]
    assert targets(resolve_jobs([str(b), str(a)], str(tmp_path / "out"), AUDIO, ".sct")) == expected
    assert targets(resolve_jobs([str(b), str(a)], str(tmp_path / "out") + "/", AUDIO, ".sct")) == expected
    (tmp_path / "out").mkdir()
    assert targets(resolve_jobs([str(b), str(a)], str(tmp_path / "out"), AUDIO, ".sct")) == expected


def test_a_folder_input_keeps_sub_folder_paths_in_the_output_folder(tmp_path):
    """A folder's files land at the same relative paths in OUTPUT, with the output suffix; same stems in
    different sub-folders do not clash."""
    root = tmp_path / "clips"
    for name in ("x/a.wav", "y/a.wav", "top.flac", "y/readme.txt"):
        touch(root / name)
    jobs = resolve_jobs([str(root)], str(tmp_path / "out"), AUDIO, ".npy")
    assert targets(jobs) == [(str(root / rel), str(tmp_path / "out" / out)) for rel, out in
                             (("top.flac", "top.npy"), ("x/a.wav", "x/a.npy"), ("y/a.wav", "y/a.npy"))]


def test_a_glob_input_passes_its_note_on(tmp_path):
    """The skipped-files note of a glob reaches the caller's notes through resolve_jobs."""
    touch(tmp_path / "in" / "a.wav")
    touch(tmp_path / "in" / "b.txt")
    notes: List[str] = []
    jobs = resolve_jobs([str(tmp_path / "in" / "*")], str(tmp_path / "out"), AUDIO, ".sct", notes)
    assert targets(jobs) == [(str(tmp_path / "in" / "a.wav"), str(tmp_path / "out" / "a.sct"))]
    assert notes == [f"the pattern {str(tmp_path / 'in' / '*')!r} matches 1 file that is not an input file "
                     "(.flac, .wav); skipped."]


def test_the_same_name_reached_twice_is_one_job_and_a_note(tmp_path, monkeypatch):
    """A name reached twice (named twice however spelled, by name and by a glob, through a symlinked folder) is
    processed once, under its first mention; the files after it are still processed, and one note names the
    repeats with the input each repeats."""
    a = touch(tmp_path / "in" / "a.wav")
    b = touch(tmp_path / "in" / "b.wav")
    os.symlink(tmp_path / "in", tmp_path / "linked_folder")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    notes: List[str] = []
    jobs = resolve_jobs([str(a), "in/a.wav", "./in/../in/a.wav", str(tmp_path / "in" / "*.wav"),
                         "linked_folder/a.wav", str(b)], str(out), AUDIO, ".sct", notes)
    assert targets(jobs) == [(str(a), str(out / "a.sct")), (str(b), str(out / "b.sct"))]
    assert [job.copies for job in jobs] == [(), ()]
    assert notes == [f"skipped 5 inputs named again (the same file under the same name, however spelled): in/a.wav "
                     f"(= {a}), in/../in/a.wav (= {a}), {a} and 2 more."]


def test_the_same_file_twice_by_one_spelling_is_noted_in_the_singular(tmp_path):
    a = touch(tmp_path / "a.wav")
    notes: List[str] = []
    jobs = resolve_jobs([str(a), str(a)], str(tmp_path / "out"), AUDIO, ".sct", notes)
    assert targets(jobs) == [(str(a), str(tmp_path / "out" / "a.sct"))]
    assert notes == [f"skipped 1 input named again (the same file under the same name, however spelled): {a}."]


@pytest.mark.parametrize("link", [os.link, os.symlink], ids=["hard link", "symlink"])
def test_another_name_of_a_file_gets_its_output_as_a_copy(tmp_path, link):
    """A hard link or a symlink under another name is the same file: it is processed once, and the output its
    name asks for is a copy of the first (`Job.copies`), so the output tree misses no name; a note says so."""
    a = touch(tmp_path / "in" / "a.wav")
    link(a, tmp_path / "in" / "alias.wav")
    b = touch(tmp_path / "in" / "b.wav")
    out = tmp_path / "out"
    notes: List[str] = []
    jobs = resolve_jobs([str(tmp_path / "in")], str(out), AUDIO, ".sct", notes)
    assert targets(jobs) == [(str(a), str(out / "a.sct")), (str(b), str(out / "b.sct"))]
    assert [job.copies for job in jobs] == [(out / "alias.sct",), ()]
    assert jobs[0].targets == (out / "a.sct", out / "alias.sct")
    assert notes == [f"copied the outputs of 1 other name of files processed once (hard links or symlinks) instead "
                     f"of processing them again: {tmp_path / 'in' / 'alias.wav'} (= {a})."]


def test_other_names_of_a_file_that_would_write_one_output_write_it_once(tmp_path):
    """Hard links in two folders with one file name, flattened by a glob onto one output: that output serves
    both names, so the second is skipped (noted), not refused as a clash; passing the folder keeps both."""
    x = touch(tmp_path / "in" / "x" / "same.wav")
    (tmp_path / "in" / "y").mkdir()
    os.link(x, tmp_path / "in" / "y" / "same.wav")
    out = tmp_path / "out"
    notes: List[str] = []
    jobs = resolve_jobs([str(tmp_path / "in" / "**" / "*.wav")], str(out), AUDIO, ".sct", notes)
    assert targets(jobs) == [(str(x), str(out / "same.sct"))] and jobs[0].copies == ()
    assert notes == [f"skipped 1 input whose output another name of the same file (a link) already writes: "
                     f"{tmp_path / 'in' / 'y' / 'same.wav'} (= {x})."]
    jobs = resolve_jobs([str(tmp_path / "in")], str(out), AUDIO, ".sct")
    assert targets(jobs) == [(str(x), str(out / "x" / "same.sct"))]
    assert jobs[0].copies == (out / "y" / "same.sct",)


def test_a_folder_and_an_overlapping_glob_process_each_file_once(tmp_path):
    """A folder and a glob over part of it reach the same names (with different relative paths): each file is
    processed once, under the folder's relative path, and no flattened second output appears."""
    root = tmp_path / "clips"
    a = touch(root / "a.wav")
    c = touch(root / "sub" / "c.wav")
    out = tmp_path / "out"
    notes: List[str] = []
    jobs = resolve_jobs([str(root), str(root / "**" / "*.wav")], str(out), AUDIO, ".sct", notes)
    assert targets(jobs) == [(str(a), str(out / "a.sct")), (str(c), str(out / "sub" / "c.sct"))]
    assert [job.copies for job in jobs] == [(), ()]
    assert len(notes) == 1 and notes[0].startswith("skipped 2 inputs named again")


def test_a_copy_is_refused_like_any_output(tmp_path):
    """A copy's output is checked like a target: it may not be written by another file too, nor be an input."""
    a = touch(tmp_path / "in" / "a.wav")
    os.link(a, tmp_path / "in" / "b.wav")
    other = touch(tmp_path / "other" / "b.flac")
    out = tmp_path / "out"
    with refused(f"{tmp_path / 'in' / 'b.wav'} and {other} would both be written to {out / 'b.sct'}"):
        resolve_jobs([str(a), str(tmp_path / "in" / "b.wav"), str(other)], str(out), AUDIO, ".sct")
    d = touch(tmp_path / "d.flac")
    os.symlink(d, tmp_path / "e.flac")
    touch(tmp_path / "e.wav")
    with refused(f"the output {tmp_path / 'e.wav'} is the input file {tmp_path / 'e.wav'}"):
        resolve_jobs([str(d), str(tmp_path / "e.flac"), str(tmp_path / "e.wav")], str(tmp_path), AUDIO, ".wav")


def test_two_inputs_that_would_write_one_output_are_refused(tmp_path):
    """Same stem, different suffix or folder (globs and single files flatten names): refused, naming both."""
    touch(tmp_path / "a.wav")
    touch(tmp_path / "a.flac")
    out = tmp_path / "out"
    with refused(f"{tmp_path / 'a.flac'} and {tmp_path / 'a.wav'} would both be written to {out / 'a.sct'}; "
                 "rename one, or pass their folder instead (folders keep sub-folder paths)."):
        resolve_jobs([str(tmp_path / "a.*")], str(out), AUDIO, ".sct")
    touch(tmp_path / "x" / "same.wav")
    touch(tmp_path / "y" / "same.wav")
    with refused(f"{tmp_path / 'x' / 'same.wav'} and {tmp_path / 'y' / 'same.wav'} would both be written"):
        resolve_jobs([str(tmp_path / "x" / "same.wav"), str(tmp_path / "y" / "same.wav")], str(out), AUDIO, ".sct")


def test_an_output_in_the_folder_that_is_another_input_is_refused(tmp_path):
    """In folder mode, an output that is any of the inputs (here `a.flac` -> `a.wav`, itself an input) is
    refused before anything runs, naming the input it would destroy."""
    touch(tmp_path / "a.flac")
    touch(tmp_path / "a.wav")
    with refused(f"the output {tmp_path / 'a.wav'} is the input file {tmp_path / 'a.wav'}; writing it would "
                 "destroy the input. Choose another output folder."):
        resolve_jobs([str(tmp_path / "a.flac"), str(tmp_path / "a.wav")], str(tmp_path), AUDIO, ".wav")


def test_an_output_that_is_a_hard_link_to_an_input_is_refused(tmp_path):
    """A hard link in the output folder to an input is that input; the message names the input's spelling."""
    source = touch(tmp_path / "in" / "a.wav")
    (tmp_path / "out").mkdir()
    os.link(source, tmp_path / "out" / "a.sct")
    with refused(f"the output {tmp_path / 'out' / 'a.sct'} is the input file {source}"):
        resolve_jobs([str(tmp_path / "in")], str(tmp_path / "out"), AUDIO, ".sct")


def test_a_symlinked_folder_output_onto_the_input_folder_is_refused(tmp_path):
    """An output folder that is a symlink to the input folder is the input folder."""
    root = tmp_path / "clips"
    touch(root / "a.sct")
    os.symlink(root, tmp_path / "alias")
    with refused(f"the output {tmp_path / 'alias' / 'a.sct'} is the input file {root / 'a.sct'}"):
        resolve_jobs([str(root)], str(tmp_path / "alias"), (".sct",), ".sct")


def test_several_inputs_into_an_existing_file_are_refused(tmp_path):
    """Several inputs (or a folder or a glob) need an output folder; an existing file there is refused."""
    a = touch(tmp_path / "a.wav")
    b = touch(tmp_path / "b.wav")
    existing = touch(tmp_path / "out.sct")
    message = (f"several inputs need an output folder, but {existing} is a file; name a folder (it is created if "
               "missing).")
    with refused(message):
        resolve_jobs([str(a), str(b)], str(existing), AUDIO, ".sct")
    with refused(message):
        resolve_jobs([str(tmp_path / "*.wav")], str(existing), AUDIO, ".sct")
    touch(tmp_path / "in" / "c.wav")
    with refused(message):
        resolve_jobs([str(tmp_path / "in")], str(existing), AUDIO, ".sct")


def test_a_missing_input_is_reported_before_the_output_is_judged(tmp_path):
    """Every input is checked first: a missing one is reported as missing even when the output is wrong too."""
    a = touch(tmp_path / "a.wav")
    existing = touch(tmp_path / "out.sct")
    with refused(f"input {tmp_path / 'missing.wav'} does not exist."):
        resolve_jobs([str(a), str(tmp_path / "missing.wav")], str(existing), AUDIO, ".sct")
    with refused(f"input {tmp_path / 'missing.wav'} does not exist."):
        resolve_jobs([str(tmp_path / "missing.wav")], str(tmp_path / "out.wav"), AUDIO, ".sct")
    with refused("matches no files"):
        resolve_jobs([str(tmp_path / "*.mp3")], str(tmp_path / "out"), AUDIO, ".sct")


def test_resolve_jobs_with_the_real_audio_suffixes(tmp_path):
    """With `audio_suffixes()` a mixed folder keeps its audio files, upper-case suffixes included."""
    for name in ("a.wav", "b.OGG", "c.mp3", "d.opus", "e.txt", "f.sct", "g.npy"):
        touch(tmp_path / "in" / name)
    jobs = resolve_jobs([str(tmp_path / "in")], str(tmp_path / "out"), audio_suffixes(), ".sct")
    assert [job.target.name for job in jobs] == ["a.sct", "b.sct", "c.sct", "d.sct"]


# ------------------------------------------------------------------------------------------------- groups
@pytest.mark.parametrize("count, size, sizes", [
    (0, 3, []), (1, 3, [1]), (3, 3, [3]), (7, 3, [3, 3, 1]), (7, 1, [1] * 7), (5, 8, [5]), (6, 2, [2, 2, 2]),
])
def test_groups_are_consecutive_batches_of_the_batch_size(count, size, sizes):
    """`--batch-size` batches: consecutive, in order, every job once, all full but a shorter last one."""
    jobs = [Job(Path(f"in{i}.wav"), Path(f"out{i}.sct")) for i in range(count)]
    batches = list(groups(jobs, size))
    assert [len(batch) for batch in batches] == sizes
    assert [job for batch in batches for job in batch] == jobs


# ------------------------------------------------------------------------------------------------- plural
@pytest.mark.parametrize("count, expected", [(0, "0 files"), (1, "1 file"), (2, "2 files"), (11, "11 files")])
def test_plural_makes_the_noun_agree_with_the_count(count, expected):
    assert plural(count, "file") == expected


def test_plural_takes_an_irregular_plural():
    assert plural(1, "file that is", "files that are") == "1 file that is"
    assert plural(3, "file that is", "files that are") == "3 files that are"

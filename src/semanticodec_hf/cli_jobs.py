"""Job resolution of the `semanticodec-hf` command line: which input files a command's INPUT... names, which output
file each one becomes, and the refusals that come before any work (a missing input, a pattern that matches
nothing, two inputs that would write one output, an output that is an input however spelled). A file reached
twice is processed once (`resolve_jobs`).

Pure file-name and file-system logic, so it imports neither torch nor the codec (soundfile only when asked for the
audio suffixes): `semanticodec-hf info` stays light, and the behaviour is tested on temporary files alone
(tests/test_cli_jobs.py). `cli` imports everything here; `CliError` lives here because this is the bottom of the
command line's import graph.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

GLOB_CHARACTERS = set("*?[")


class CliError(Exception):
    """An error the user can fix; printed without a traceback, exit code 2."""


@dataclass
class Job:
    """One input file and the output it becomes; `copies` are more outputs of that same file, asked for under
    other names of it (hard links, symlinks): written as copies of `target` rather than by processing it again."""

    source: Path
    target: Path
    copies: Tuple[Path, ...] = ()

    @property
    def targets(self) -> Tuple[Path, ...]:
        """Every output of this job: `target`, then its copies."""
        return (self.target, *self.copies)


def plural(count: int, noun: str, nouns: Optional[str] = None) -> str:
    """`count` with `noun` agreeing ("1 file", "2 files", "0 files"): the command line's counted messages.
    `nouns` is the plural where adding "s" is wrong."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def audio_suffixes() -> Tuple[str, ...]:
    """File name endings soundfile can read here (`.wav`, `.flac`, `.ogg`, `.mp3`, ...)."""
    import soundfile as sf

    formats = set(sf.available_formats()) - {"RAW"}  # headerless: unreadable without being told its layout
    suffixes = {f".{name.lower()}" for name in formats}
    if "AIFF" in formats:
        suffixes.add(".aif")
    if "OGG" in formats:
        suffixes |= {".oga", ".opus"}
    return tuple(sorted(suffixes))


def stat_kind(path: Path) -> Optional[str]:
    """What `path` is: "dir", "file" (anything else that exists) or None (missing, or not even a valid path: a
    name too long, a file used as a folder, ...). Unlike `Path.is_dir`, never raises."""
    try:
        return "dir" if os.path.isdir(path) else ("file" if os.path.lexists(path) else None)
    except (OSError, ValueError):
        return None


def file_keys(path: Path) -> Set[Tuple[Any, ...]]:
    """What identifies the file `path` names: its resolved path (symlinks, `..` and relative spellings undone)
    and, if it exists, its device and inode (hard links, case-insensitive spellings). Two paths name the same
    file when their keys intersect."""
    try:
        resolved = str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        resolved = os.path.abspath(path)
    keys: Set[Tuple[Any, ...]] = {("path", os.path.normcase(resolved))}
    try:
        status = os.stat(path)
        keys.add(("inode", status.st_dev, status.st_ino))
    except (OSError, ValueError):
        pass
    return keys


def refuse_overwriting(inputs: Sequence[Path], outputs: Sequence[Tuple[str, Path]]) -> None:
    """Before any work: no output may be an input, and no two outputs may be one file (the later write would
    silently replace the earlier one)."""
    input_keys = [(source, file_keys(source)) for source in inputs]
    seen: List[Tuple[str, Path, Set[Tuple[Any, ...]]]] = []
    for what, path in outputs:
        keys = file_keys(path)
        for source, source_keys in input_keys:
            if keys & source_keys:
                raise CliError(f"the {what} {path} is the input file {source}; writing it would destroy the input. "
                               f"Choose another {what} name.")
        for other_what, other, other_keys in seen:
            if keys & other_keys:
                raise CliError(f"the {what} {path} and the {other_what} {other} are the same file; one would "
                               "overwrite the other. Choose different names.")
        seen.append((what, path, keys))


def is_input_file(path: Path, suffixes: Tuple[str, ...]) -> bool:
    """What folders and globs pick up: files with an input suffix, not hidden (our temporaries are hidden)."""
    return path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith(".")


def expand(pattern: str, suffixes: Tuple[str, ...], notes: Optional[List[str]] = None) -> List[Tuple[Path, Path]]:
    """(file, path relative to what the user named) for a file, a folder (recursive) or a glob pattern.

    Folders and globs keep only input files (`is_input_file`); how many other files a glob matched is added
    to `notes`, since the user named them (a folder's other files are silently not inputs).
    """
    path = Path(pattern)
    if stat_kind(path) == "dir":
        files = sorted(p for p in path.rglob("*") if is_input_file(p, suffixes))
        if not files:
            raise CliError(f"folder {path} holds no input files ({', '.join(suffixes)}).")
        return [(p, p.relative_to(path)) for p in files]
    if stat_kind(path) is not None:
        return [(path, Path(path.name))]
    if GLOB_CHARACTERS & set(pattern):
        matched = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matched:
            raise CliError(f"the pattern {pattern!r} matches no files.")
        files = [p for p in matched if is_input_file(p, suffixes)]
        if not files:
            raise CliError(f"the pattern {pattern!r} matches {plural(len(matched), 'file')}, but none is an input "
                           f"file ({', '.join(suffixes)}).")
        if len(files) < len(matched) and notes is not None:
            others = plural(len(matched) - len(files), "file that is not an input file",
                            "files that are not input files")
            notes.append(f"the pattern {pattern!r} matches {others} ({', '.join(suffixes)}); skipped.")
        return [(p, Path(p.name)) for p in files]
    raise CliError(f"input {pattern} does not exist.")


def entry_key(path: Path) -> Tuple[str, str]:
    """Which directory entry `path` names: its folder resolved (symlinked folders, `..`, relative spellings) and
    its own name as given. Two spellings of one entry are one input named twice; two entries of one file (a hard
    link, a symlink under another name) are two names the user may each expect an output for."""
    try:
        folder = str(path.absolute().parent.resolve())
    except (OSError, RuntimeError):  # a symlink loop on the way
        folder = os.path.abspath(path.parent)
    return os.path.normcase(folder), os.path.normcase(path.name)


def first_mentions(paths: Sequence[Path]) -> Tuple[List[int], List[Tuple[Path, Path]]]:
    """The indices of `paths` that name a directory entry (`entry_key`) for the first time, and each later
    mention paired with the first one it repeats: one input named twice is processed (or listed) once."""
    first: Dict[Tuple[str, str], Path] = {}
    kept: List[int] = []
    repeats: List[Tuple[Path, Path]] = []
    for index, path in enumerate(paths):
        entry = entry_key(path)
        if entry in first:
            repeats.append((path, first[entry]))
        else:
            first[entry] = path
            kept.append(index)
    return kept, repeats


def named_again_note(repeats: Sequence[Tuple[Path, Path]]) -> str:
    """The note for the inputs `first_mentions` dropped."""
    return (f"skipped {plural(len(repeats), 'input')} named again (the same file under the same name, however "
            f"spelled): {_listed(repeats)}.")


def _listed(duplicates: Sequence[Tuple[Path, Path]], limit: int = 3) -> str:
    """The first `limit` (duplicate, the input it repeats) pairs, then how many more: a note stays one line."""
    shown = ", ".join(str(path) if path == kept else f"{path} (= {kept})" for path, kept in duplicates[:limit])
    return shown + (f" and {len(duplicates) - limit} more" if len(duplicates) > limit else "")


def resolve_jobs(inputs: Sequence[str], output: str, suffixes: Tuple[str, ...], out_suffix: str,
                 notes: Optional[List[str]] = None) -> List[Job]:
    """Pair inputs with outputs: one file -> OUTPUT as given; several, a folder or a glob -> files in folder OUTPUT.

    Names in the output folder keep each file's path below the folder it was found in, with `out_suffix`;
    two inputs that would write the same output, and an output that is one of the inputs (however spelled,
    symlinked or hard-linked), are refused before anything runs.

    Each file is processed once, however often it is reached (same device and inode, or same resolved path):
    - the same name reached twice (`a.wav ./a.wav`, a folder and a glob over it, a symlinked folder) is one
      input: the later mentions are skipped, with a note naming them;
    - other names of the same file (a hard link, a symlink under another name, e.g. the Hugging Face cache's
      links to one blob) each still get their output, since an output tree that mirrors the inputs must not
      miss a name: the file is processed once and its other outputs are copies (`Job.copies`), the bytes
      processing it again would give. Where those names would write one output, that output serves them all;
      this too is noted.
    """
    single = len(inputs) == 1 and stat_kind(Path(inputs[0])) == "file"
    out = Path(output)
    if single and stat_kind(out) != "dir" and not output.endswith(("/", os.sep)):
        source = Path(inputs[0])
        refuse_overwriting([source], [("output", out)])
        return [Job(source, out)]
    pairs: List[Tuple[Path, Path]] = []
    for pattern in inputs:  # first, so that a missing input is reported as such
        pairs.extend(expand(pattern, suffixes, notes))
    if stat_kind(out) == "file":
        raise CliError(
            f"several inputs need an output folder, but {out} is a file; name a folder (it is created if missing)."
        )
    input_keys: Dict[Tuple[Any, ...], Path] = {}
    for source, _relative in pairs:
        for key in file_keys(source):
            input_keys.setdefault(key, source)
    jobs: List[Job] = []
    job_of_file: Dict[Tuple[Any, ...], int] = {}  # file key -> index in jobs
    job_of_target: Dict[Path, Tuple[int, Path]] = {}  # output -> (index in jobs, the input that asked for it)
    kept, named_twice = first_mentions([source for source, _relative in pairs])
    # (input, the input it repeats): another name whose output is already planned (skipped), another name with an
    # output of its own (written as a copy)
    one_output: List[Tuple[Path, Path]] = []
    copied: List[Tuple[Path, Path]] = []
    for source, relative in (pairs[index] for index in kept):
        keys = file_keys(source)
        index = next((job_of_file[key] for key in keys if key in job_of_file), None)
        target = out / relative.with_suffix(out_suffix)
        if target in job_of_target:
            writer, asked_by = job_of_target[target]
            if writer == index:
                one_output.append((source, jobs[index].source))
                continue
            raise CliError(
                f"{asked_by} and {source} would both be written to {target}; rename one, or pass their folder "
                "instead (folders keep sub-folder paths)."
            )
        clash = next((input_keys[key] for key in file_keys(target) if key in input_keys), None)
        if clash is not None:
            raise CliError(f"the output {target} is the input file {clash}; writing it would destroy the input. "
                           "Choose another output folder.")
        if index is None:
            index = len(jobs)
            jobs.append(Job(source, target))
            for key in keys:
                job_of_file[key] = index
        else:
            jobs[index].copies += (target,)
            copied.append((source, jobs[index].source))
        job_of_target[target] = (index, source)
    if notes is not None:
        if named_twice:
            notes.append(named_again_note(named_twice))
        if one_output:
            notes.append(f"skipped {plural(len(one_output), 'input')} whose output another name of the same file "
                         f"(a link) already writes: {_listed(one_output)}.")
        if copied:
            notes.append(f"copied the outputs of {plural(len(copied), 'other name')} of files processed once (hard "
                         f"links or symlinks) instead of processing them again: {_listed(copied)}.")
    return jobs


def groups(jobs: List[Job], size: int) -> Iterator[List[Job]]:
    """`jobs` in consecutive batches of `size` (the last one shorter), in order: the CLI's `--batch-size`."""
    for start in range(0, len(jobs), size):
        yield jobs[start : start + size]

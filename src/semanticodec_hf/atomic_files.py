"""Atomic output files: written under a short temporary name in the same folder, renamed into place when complete.

Only the standard library is imported here, so `semanticodec-hf info` and other light paths stay light.

Temporary names are `.semanticodec-hf-XXXXXXXX.partial` plus the output's suffix (e.g. `.wav`, which soundfile
needs to pick the format): 37 characters at most whatever the output is called, so every output name the
filesystem allows can be written, and a pattern specific enough that only files we created are ever removed.

While a temporary file is being written its writer holds an exclusive `flock` on it. A process that dies without
cleaning up (SIGKILL, power loss) loses that lock with it, so `remove_stale_temporaries` can tell a leftover from a
file that a concurrent run is still writing: it removes only our temporaries that nobody holds locked. Age alone
could not tell them apart (a streamed decode keeps one temporary for as long as it runs), and waiting for an age
threshold would leave the leftover of a killed run in place for that long. On filesystems without `flock`
(some network or FUSE mounts) and on Windows, only temporaries untouched for `STALE_AFTER_SECONDS` are removed.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

try:
    import fcntl
except ImportError:  # Windows: no flock; stale files are recognised by age only
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, os.PathLike]

TEMPORARY_PREFIX = ".semanticodec-hf-"
TEMPORARY_SUFFIX = ".partial"
# mkstemp's random part is 8 characters of [a-z0-9_]; the kept suffix is a short alphanumeric extension.
_TEMPORARY_NAME = re.compile(r"\.semanticodec-hf-[a-z0-9_]{8}\.partial(\.[A-Za-z0-9]{1,10})?")
_KEPT_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
STALE_AFTER_SECONDS = 24 * 3600  # where locks are unavailable: a temporary untouched this long is a leftover
_LOCK_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.EBADF, errno.ENOSYS}


def is_temporary_name(name: str) -> bool:
    """Whether `name` is one of our temporary file names (and so ours to clean up)."""
    return _TEMPORARY_NAME.fullmatch(name) is not None


def temporary_suffix(path: PathLike) -> str:
    """The suffix a temporary for `path` ends with: `.partial` plus the output's short extension, if any."""
    suffix = Path(path).suffix
    return TEMPORARY_SUFFIX + (suffix if _KEPT_SUFFIX.fullmatch(suffix) else "")


def _same_inode(descriptor: int, path: str) -> bool:
    try:
        current = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    opened = os.fstat(descriptor)
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def _locked_temporary(folder: Path, suffix: str) -> Tuple[Optional[int], str]:
    """Create our temporary in `folder` and lock it; (descriptor to keep open while writing, or None, name).

    A cleaner may lock and remove a fresh file in the instant between its creation and our lock; the name is
    then no longer our file, so we start again with a new one.
    """
    for _attempt in range(100):
        descriptor, name = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix=suffix)
        if fcntl is None:
            os.close(descriptor)  # Windows cannot rename a file that is still open
            return None, name
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in _LOCK_UNSUPPORTED:  # a cleaner holds it and is removing it: take another name
                os.close(descriptor)
                continue
            return descriptor, name  # no locks on this filesystem: cleaners fall back to the age rule
        if _same_inode(descriptor, name):
            return descriptor, name
        os.close(descriptor)
    raise OSError(errno.EAGAIN, f"could not create a temporary file in {folder}")


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Run `write(temporary_path)` on a locked temporary sibling, then rename it to `path`.

    A reader never sees a half-written file, and a failure, Ctrl-C or SIGTERM (handled by the command line as an
    exception) leaves nothing behind; what SIGKILL leaves is removed by `remove_stale_temporaries`. The temporary
    keeps the output's suffix, so writers that pick the format from it (soundfile) work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = _locked_temporary(path.parent, temporary_suffix(path))
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    finally:
        if descriptor is not None:
            os.close(descriptor)  # releases the lock, after the rename: the name is never unlocked and ours
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _is_stale(descriptor: int, status: os.stat_result) -> bool:
    """Nobody is writing it: unlocked (we now hold the lock), or, without locks, untouched for a long time."""
    if fcntl is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as error:
            if error.errno not in _LOCK_UNSUPPORTED:
                return False  # locked: a running process is writing it
    return time.time() - status.st_mtime > STALE_AFTER_SECONDS


def remove_stale_temporaries(folder: PathLike) -> List[Path]:
    """Remove the temporaries of our naming in `folder` that no running process is writing; returns them.

    Only names matching our pattern are considered, never other programs' files; a file that cannot be opened
    (another user's) or that is locked is left alone.
    """
    removed: List[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not is_temporary_name(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            descriptor = os.open(entry.path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            status = os.fstat(descriptor)
            if _is_stale(descriptor, status) and _same_inode(descriptor, entry.path):
                if fcntl is None:
                    os.close(descriptor)  # Windows cannot remove an open file
                    descriptor = -1
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            if descriptor >= 0:
                os.close(descriptor)
    return removed


__all__ = [
    "STALE_AFTER_SECONDS",
    "TEMPORARY_PREFIX",
    "atomic_write",
    "is_temporary_name",
    "remove_stale_temporaries",
    "temporary_suffix",
]

"""Audio files for the command line: read one input (with the CLI's one-line errors), check an audio output's
format before any work, write audio atomically, and turn filesystem errors into one actionable line."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

from .cli_jobs import CliError


def check_audio_output(path: Path, subtype: Optional[str]) -> None:
    """Refuse, before any work, an audio output whose format or `--subtype` soundfile cannot write (otherwise the
    error would come after encoding and decoding, leaving the codes of `roundtrip` behind)."""
    import soundfile as sf

    audio_format = path.suffix[1:].upper()
    if audio_format not in sf.available_formats():
        raise CliError(
            f"cannot write audio to {path}: soundfile does not know the format {path.suffix or '(no suffix)'!r}; "
            "use .wav or .flac."
        )
    if subtype is None:
        return
    valid = [name for name in sf.available_subtypes(audio_format) if sf.check_format(audio_format, name)]
    if subtype.upper() not in sf.available_subtypes():
        raise CliError(f"--subtype {subtype} is not a soundfile subtype; for {path.suffix} files use one of "
                       f"{', '.join(valid)}.")
    if not sf.check_format(audio_format, subtype.upper()):
        raise CliError(f"--subtype {subtype} cannot be written to {path.suffix} files ({path}); use one of "
                       f"{', '.join(valid)}, or another output format.")


def read_audio(path: Path, max_duration: float):
    """Channels-first float32 audio and its rate (`processing_semanticodec.read_audio`); refuses a file longer than
    `max_duration` (--max-duration; 0 = no limit) before reading its samples."""
    from .processing_semanticodec import read_audio as read_any_audio

    try:
        return read_any_audio(path, max_seconds=max_duration or None, limit_name="--max-duration")
    except ValueError as error:
        raise CliError(str(error)) from error


def write_audio(path: Path, wave, sampling_rate: int, subtype: Optional[str]) -> None:
    """Write atomically; integer formats would wrap around outside [-1, 1], so samples are clipped first."""
    import numpy as np
    import soundfile as sf

    from .atomic_files import atomic_write

    wave = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    try:
        atomic_write(path, lambda temporary: sf.write(str(temporary), wave, sampling_rate, subtype=subtype))
    except OSError as error:
        raise write_failure(path, error) from error
    except (sf.LibsndfileError, ValueError, TypeError) as error:
        raise CliError(f"cannot write {path} (subtype {subtype or 'default'}): {error}") from error



# ------------------------------------------------------------------------------- output safety
# (no output may be an input or another output: `cli_jobs.refuse_overwriting`, `cli_jobs.resolve_jobs`)
WRITE_HINTS = {
    errno.EACCES: "no permission to write there; choose another output location or change the folder's permissions",
    errno.EPERM: "the operation is not permitted there; choose another output location",
    errno.EROFS: "the filesystem is read-only; choose another output location",
    errno.ENOSPC: "the disk is full; free some space or choose another output location",
    errno.EDQUOT: "the disk quota is exhausted; free some space or choose another output location",
    errno.ENAMETOOLONG: "the name is too long for this filesystem; choose a shorter output name",
    errno.ENOTDIR: "a file stands where the output path needs a folder; choose another output location",
    errno.EEXIST: "a file stands where the output path needs a folder; choose another output location",
    errno.EISDIR: "a folder has the output's name; choose another output name",
}


def write_failure(path: Path, error: OSError) -> CliError:
    """One line for a filesystem error while writing `path`: which file, what went wrong, what to do."""
    hint = WRITE_HINTS.get(error.errno, "check the output location")
    return CliError(f"cannot write {path}: {error.strerror or error}; {hint}.")


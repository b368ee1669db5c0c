"""What every codec command shares: messages (`log`, `note`), output checks before any work (`prepare_outputs`),
device and model loading (`load_codec`), and the job runner (`jobs_for`, `run_jobs`) over `cli_jobs`' jobs.
Torch-free at import (the `info` command must start fast)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .cli_jobs import CliError, Job, groups, plural, resolve_jobs, stat_kind


def log(args: argparse.Namespace, message: str) -> None:
    """A summary line on stdout that does not break progress bars (silenced by --quiet)."""
    if getattr(args, "quiet", False):
        return
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stdout)



def _name_max(folder: Path) -> int:
    """Longest file name (bytes) the filesystem of `folder` allows; 255 where it cannot be asked."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no limit reported
        return 255


def _shorten(name: str, keep: int = 40) -> str:
    return name if len(name) <= keep else name[: keep - 3] + "..."


def _output_problem(path: Path) -> Optional[str]:
    """Why `path` cannot be written, found without writing anything: the nearest existing folder on its way must
    be a writable folder, and every name still to be created must fit the filesystem's limit. None if fine."""
    absolute = Path(os.path.abspath(path))
    to_create = [absolute.name]
    ancestor = absolute.parent
    while stat_kind(ancestor) is None and ancestor != ancestor.parent:
        to_create.append(ancestor.name)
        ancestor = ancestor.parent
    if stat_kind(ancestor) != "dir":
        return f"{ancestor} is a file, not a folder; choose another output location"
    limit = _name_max(ancestor)
    for name in to_create:
        size = len(os.fsencode(name))
        if size > limit:
            return (f"the name {_shorten(name)!r} is {size} bytes, more than the {limit} this filesystem allows; "
                    "choose a shorter name")
    if stat_kind(path) == "dir":
        return f"{path} is an existing folder; name a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return (f"no permission to create files in {ancestor}; choose another output folder or change its "
                "permissions")
    return None


def prepare_outputs(args: argparse.Namespace, outputs: Sequence[Tuple[str, Path]]) -> None:
    """Before any work: refuse outputs that cannot be written (the first named, the others counted), and remove
    the temporary files that killed runs of ours left in the output folders (`remove_stale_temporaries`)."""
    from .atomic_files import remove_stale_temporaries

    problems = [(what, path, problem) for what, path in outputs if (problem := _output_problem(path)) is not None]
    if problems:
        what, path, problem = problems[0]
        others = len(problems) - 1
        more = f" (and {plural(others, 'more output')} with problems)" if others else ""
        raise CliError(f"cannot write the {what} {path}: {problem}{more}; nothing was run.")
    folders = {path.parent for _what, path in outputs}
    for folder in sorted(folders):
        if stat_kind(folder) == "dir":
            for stale in remove_stale_temporaries(folder):
                note(args, f"removed {stale}, a temporary file left by an interrupted run")



def note(args: argparse.Namespace, message: str) -> None:
    """A warning-like line on stderr (silenced by --quiet)."""
    if not getattr(args, "quiet", False):
        print(f"semanticodec-hf {args.command}: note: {message}", file=sys.stderr)


def _device(name: str):
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise CliError(f"--device {name!r} is not a torch device ({error}); use cpu, cuda or cuda:N.") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {name} asks for CUDA, but torch sees no CUDA GPU here; use --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CliError(f"--device {name} asks for Apple MPS, which is not available here; use --device cpu.")
    return device


def set_decoder_dtype(codec, args: argparse.Namespace):
    """The codec with its decoder switched to --decoder-dtype (a CliError for a precision this device lacks)."""
    try:
        return codec.set_decoder_dtype(args.decoder_dtype)
    except ValueError as error:
        raise CliError(f"--decoder-dtype {args.decoder_dtype}: {error}") from error


def load_codec(model: Optional[str], tiny: bool, device: str = "cpu"):
    """The codec and its feature extractor; never falls back to random weights unless --tiny is given."""
    from .feature_extraction_semanticodec import SemantiCodecFeatureExtractor
    from .modeling_semanticodec import SemantiCodecModel

    device = _device(str(device))
    if tiny:
        print(
            "WARNING: --tiny builds a small RANDOMLY INITIALISED model. Its output is noise; use it only to "
            "check that the pipeline runs.",
            file=sys.stderr,
        )
        return SemantiCodecModel.tiny(seed=0).to(device).eval(), SemantiCodecFeatureExtractor()
    if not model:
        raise CliError("pass --model PATH_OR_HUB_ID (a converted model folder), or --tiny for a smoke test.")
    from transformers import AutoFeatureExtractor, AutoModel

    from . import register_auto_classes

    register_auto_classes()
    try:
        codec = AutoModel.from_pretrained(model)
    except Exception as error:
        local = Path(model).exists()
        raise CliError(
            f"could not load the model {model!r} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            + ("It is a local path but not a converted SemantiCodec folder. " if local else
               "It is not a local folder and the Hub could not serve it (no network?). ")
            + "Convert the official checkpoints first, e.g. `semanticodec-hf convert --token-rate 100 "
            "--semantic-vocab-size 8192 --output semanticodec-100tps-8192`, then pass --model semanticodec-100tps-8192."
        ) from error
    if not isinstance(codec, SemantiCodecModel):
        raise CliError(f"{model!r} is a {type(codec).__name__}, not a SemantiCodec model.")
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(model)
    except Exception:
        feature_extractor = SemantiCodecFeatureExtractor()
    return codec.to(device).eval(), feature_extractor



# ------------------------------------------------------------------------------------- inputs -> outputs
# (which files, which outputs, what is refused: `cli_jobs`)
def jobs_for(args: argparse.Namespace, suffixes: Tuple[str, ...], out_suffix: str) -> List[Job]:
    """`resolve_jobs` for a command's INPUT... OUTPUT, its notes (skipped glob matches) printed."""
    notes: List[str] = []
    jobs = resolve_jobs(args.inputs, args.output, suffixes, out_suffix, notes)
    for message in notes:
        note(args, message)
    return jobs


@dataclass
class Outcome:
    """Per-command tally: failures are reported as they happen and decide the exit code at the end."""

    done: int = 0
    failed: List[Tuple[Path, str]] = field(default_factory=list)


def run_jobs(
    args: argparse.Namespace,
    jobs: List[Job],
    process_group: Callable[[List[Job], Outcome, Any], None],
) -> int:
    """Run `process_group` over groups of `--batch-size` files with a file progress bar; exit code 2 on failures."""
    from .progress import progress_bar

    outcome = Outcome()
    show_files = not args.quiet and len(jobs) > 1
    with progress_bar(total=len(jobs), desc=args.command, unit="file", quiet=not show_files) as bar:
        for group in groups(jobs, args.batch_size):
            process_group(group, outcome, bar)
    if len(jobs) == 1 and outcome.failed:
        raise CliError(outcome.failed[0][1])
    if outcome.failed:
        for _source, message in outcome.failed:
            print(f"semanticodec-hf {args.command}: error: {message}", file=sys.stderr)
        raise CliError(f"{len(outcome.failed)} of {plural(len(jobs), 'file')} failed (listed above); "
                       f"{plural(outcome.done, 'output')} written.")
    return 0


class Reported(CliError):
    """Errors were already printed; exit 2 without another line."""


def fail(outcome: Outcome, bar: Any, job: Job, error: Exception) -> None:
    outcome.failed.append((job.source, str(error)))
    bar.update(1)


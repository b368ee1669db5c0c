"""What the accelerate training loops (audio LM, codec) share: checkpoint discovery, resume, trackers, precision.

A checkpoint is `OUTPUT/checkpoints/step_XXXXXXXX/` written by `accelerator.save_state` plus `trainer_state.json`,
written last: a folder without it was interrupted mid-write and is ignored.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

CHECKPOINT_PREFIX = "step_"
TRAINER_STATE = "trainer_state.json"


def checkpoints(output: Path) -> List[Tuple[int, Path]]:
    """Complete checkpoints (those with a trainer state), oldest first."""
    found = []
    for path in (Path(output) / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*"):
        if (path / TRAINER_STATE).is_file() and path.name[len(CHECKPOINT_PREFIX):].isdigit():
            found.append((int(path.name[len(CHECKPOINT_PREFIX):]), path))
    return sorted(found)


def resolve_resume(output: Path, resume: str) -> Optional[Path]:
    """`auto`: the newest complete checkpoint (None for a fresh run); `no`: None; else a checkpoint path."""
    if resume == "no":
        return None
    if resume == "auto":
        found = checkpoints(output)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {TRAINER_STATE}).")
    return path


def save_checkpoint(accelerator, output: Path, step: int, state: Dict[str, Any], keep: int) -> Path:
    """`save_state` on every process, then the trainer state (main process), then drop all but `keep` newest."""
    path = Path(output) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:08d}"
    accelerator.save_state(str(path))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (path / TRAINER_STATE).write_text(json.dumps({"step": step, **state}, indent=2) + "\n")
        for _, old in checkpoints(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def load_checkpoint(accelerator, checkpoint: Path) -> int:
    """Restore everything `save_state` wrote; returns the step the checkpoint was taken at."""
    accelerator.load_state(str(checkpoint))
    return int(json.loads((Path(checkpoint) / TRAINER_STATE).read_text())["step"])


def mixed_precision(choice: str) -> str:
    """`auto` -> bf16 where the GPU has it, else full precision; other values pass through."""
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def usable_trackers(names: List[str]) -> List[str]:
    """The requested accelerate trackers that are installed (a missing tensorboard is a warning, not a crash)."""
    from accelerate.utils import is_tensorboard_available

    usable = []
    for name in names:
        if name == "tensorboard" and not is_tensorboard_available():
            print("warning: tensorboard is not installed (pip install tensorboard); not logging to it",
                  file=sys.stderr)
            continue
        usable.append(name)
    return usable


def flat_hparams(config: Dict[str, Any]) -> Dict[str, Any]:
    """A nested config as `section/key` scalars (what tensorboard's hparams accept)."""
    flat: Dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}{key}/", item)
        else:
            flat[prefix.rstrip("/")] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", config)
    return flat


def make_accelerator(mixed: str, trackers: List[str], project_dir: Path):
    """An Accelerator that runs N gloo CPU processes under torchrun on machines without an accelerator."""
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.accelerator.is_available(), mixed_precision=mixed_precision(mixed),
                       log_with=usable_trackers(trackers) or None, project_dir=str(project_dir))


class MetricsLog:
    """`OUTPUT/metrics.jsonl` (main process) next to the accelerate trackers; a resumed run first drops what a
    killed run logged after its last checkpoint, so the file reads as one uninterrupted run."""

    def __init__(self, accelerator, output: Path, start_step: int):
        self.accelerator, self.path = accelerator, Path(output) / "metrics.jsonl"
        if accelerator.is_main_process:
            Path(output).mkdir(parents=True, exist_ok=True)
            kept = []
            if self.path.is_file() and start_step:
                kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= start_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def __call__(self, values: Dict[str, Any], step: int) -> None:
        self.accelerator.log(values, step=step)
        if self.accelerator.is_main_process:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": step, **values}) + "\n")


def start_run(accelerator, output: Path, resume: str, project: str, config: Dict[str, Any]):
    """Resume from a checkpoint if asked (`auto`: the newest), open the metrics log and the trackers.

    Returns `(start_step, log)`; call after `prepare` and `register_for_checkpointing`.
    """
    start_step = 0
    checkpoint = resolve_resume(output, resume)
    if checkpoint is not None:
        start_step = load_checkpoint(accelerator, checkpoint)
        accelerator.print(f"resumed from {checkpoint} at step {start_step}")
    log = MetricsLog(accelerator, output, start_step)
    accelerator.init_trackers(project, config=flat_hparams(config))
    return start_step, log

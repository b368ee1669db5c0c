"""What the accelerate training loops (audio LM, codec) share: checkpoint discovery, resume, trackers, precision.

A checkpoint is `OUTPUT/checkpoints/step_XXXXXXXX/` written by `accelerator.save_state` plus `trainer_state.json`,
written last: a folder without it was interrupted mid-write and is ignored.

Resuming never unpickles anything, because a checkpoint folder may come from someone else and unpickling runs
code. accelerate 1.15 loads the model from safetensors and the optimizer, scaler and RNG states with
`torch.load(weights_only=True)`, but the objects given to `register_for_checkpointing` with full pickle
(`weights_only=False`). So the trainers do not register their scheduler and EMA with accelerate: they pass them
to `start_run` / `save_checkpoint` as `objects`, whose state dicts are saved here in `custom_state.pt` and loaded
with the same restricted loader (tensors, numbers, strings and containers; no code). A folder holding
accelerate's `custom_checkpoint_N.pkl` (from an older semanticodec-hf) is refused, and so is one whose RNG states cannot be restored without pickle (accelerate
would skip them silently and the resume would not be exact). The trainer state holds the step and,
under `recipe`, the recipe dict the run was started with (the `config` given to `start_run`): resuming under a
different recipe would silently continue another run, so `start_run` refuses it (see `recipe_differences`).
"""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

CHECKPOINT_PREFIX = "step_"
TRAINER_STATE = "trainer_state.json"
CUSTOM_STATE = "custom_state.pt"  # the `objects`' state dicts, read back with torch.load(weights_only=True)
_PICKLED_CUSTOM = re.compile(r"^custom_checkpoint_\d+\.pkl$")  # what accelerate's register_for_checkpointing writes
RECIPE_KEY = "recipe"  # trainer-state key of the recipe dict (what both trainers pass to save_checkpoint)
# Recipe keys (dotted; a section prefix covers its sub-keys) that may change between a checkpoint and its resume:
# they decide where things go and how often they are reported, not which weights come out. Both trainers' names
# (lm/config.py TrainRecipe/DataRecipe, recipes/train_codec.py CodecTrainSection). Everything else, max_steps
# included (the cosine schedule is built from it), changes the trajectory and is refused on resume.
RESUME_NEUTRAL_KEYS = (
    "train.output_dir",
    "train.log_every",
    "train.eval_every",
    "train.save_every",
    "train.keep_checkpoints",
    "train.log_with",
    "train.num_workers",  # lm: DataLoader workers prepare the same batches (tests/test_lm_train.py)
    "data.max_eval_blocks",  # lm: how many eval blocks are scored
    "train.val_steps",  # codec: DDIM steps of validation reconstructions (validation draws its own noise)
)


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


def save_checkpoint(accelerator, output: Path, step: int, state: Dict[str, Any], keep: int,
                    objects: Optional[Dict[str, Any]] = None) -> Path:
    """`save_state` on every process, then the `objects`' states and the trainer state (main process), then drop
    all but `keep` newest.

    `state` should hold `{"recipe": config}` with the dict given to `start_run`, so a resume can be checked.
    `objects`: name -> object with `state_dict()` (scheduler, EMA), the same dict as given to `start_run`."""
    _refuse_registered_objects(accelerator)
    path = Path(output) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:08d}"
    accelerator.save_state(str(path))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_custom_states(objects or {}, path)
        (path / TRAINER_STATE).write_text(json.dumps({"step": step, **state}, indent=2) + "\n")
        for _, old in checkpoints(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def _refuse_registered_objects(accelerator) -> None:
    """Objects registered with accelerate are pickled on save and unpickled on resume: refuse them up front."""
    if getattr(accelerator, "_custom_objects", None):
        raise ValueError(
            "Objects were registered with accelerator.register_for_checkpointing; accelerate pickles them and a "
            "resume would have to unpickle them. Pass them as `objects` to start_run and save_checkpoint instead."
        )


def _first_line(error: BaseException) -> str:
    """The gist of a load error: torch's "Unsupported global: GLOBAL x.y" line when there is one (the rest of its
    message suggests `weights_only=False`, the very thing refused here), else its first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    gist = next((line.split("WeightsUnpickler error: ")[-1].split(" was not an allowed global")[0]
                 for line in lines if "Unsupported global" in line), lines[0] if lines else "")
    return f"{type(error).__name__}: {gist}"


def load_checkpoint(accelerator, checkpoint: Path, objects: Optional[Dict[str, Any]] = None) -> int:
    """Restore everything `save_checkpoint` wrote, without unpickling anything (see the module docstring);
    returns the step the checkpoint was taken at."""
    checkpoint = Path(checkpoint)
    _refuse_pickled_custom_states(checkpoint)
    try:
        accelerator.load_state(str(checkpoint))
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"Cannot resume {checkpoint}: one of its optimizer/scheduler/scaler files holds Python objects that only "
            f"full pickle can load ({_first_line(error)}). Resuming never unpickles, because that runs code "
            "from the folder; the folder was not written by this trainer or was tampered with. Resume from a "
            "checkpoint this trainer wrote, or start over (--resume no)."
        ) from error
    _check_random_states(accelerator, checkpoint)
    load_custom_states(objects or {}, checkpoint)
    return int(json.loads((checkpoint / TRAINER_STATE).read_text())["step"])


def _refuse_pickled_custom_states(checkpoint: Path) -> None:
    """accelerate loads `custom_checkpoint_N.pkl` with full pickle: refuse such a folder before it is touched."""
    pickled = sorted(p.name for p in checkpoint.iterdir() if _PICKLED_CUSTOM.match(p.name))
    if pickled:
        raise ValueError(
            f"Cannot resume {checkpoint}: it holds {', '.join(pickled)}, scheduler/EMA states that only load with "
            "pickle (written by accelerate's register_for_checkpointing, as semanticodec-hf did before it stored "
            f"them in {CUSTOM_STATE}). Unpickling runs code from the folder, so it is refused. "
            "Resume it with the semanticodec-hf that wrote it if you trust it, or start over (--resume no)."
        )


def _check_random_states(accelerator, checkpoint: Path) -> None:
    """accelerate restores the RNG states with `weights_only=True` but skips them silently when that fails, and
    the resume is then no longer exact: check that they loaded (CPU torch, numpy and Python generators)."""
    from accelerate.utils import load  # torch.load(weights_only=True) with numpy's RNG types allowed

    path = checkpoint / f"random_states_{accelerator.process_index}.pkl"
    try:
        states = load(path)
        restored = (torch.equal(torch.get_rng_state(), states["torch_manual_seed"])
                    and random.getstate() == states["random_state"]
                    and _same_numpy_state(np.random.get_state(), states["numpy_random_seed"]))
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, RuntimeError, ValueError) as error:
        raise ValueError(
            f"Cannot resume {checkpoint}: its random states ({path.name}) do not load without pickle "
            f"({_first_line(error)}); the resumed run would not "
            "repeat the original. Resume from a checkpoint this trainer wrote, or start over (--resume no)."
        ) from error
    if not restored:
        raise ValueError(f"Cannot resume {checkpoint}: accelerate did not restore the random states in {path.name}; "
                         "the resumed run would not repeat the original.")


def _same_numpy_state(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b))


# ------------------------------------------------------------------------------ custom states without pickle
def save_custom_states(objects: Dict[str, Any], folder: Path) -> None:
    """Each object's `state_dict()` into `folder/custom_state.pt` (read back by `load_custom_states`)."""
    torch.save({name: obj.state_dict() for name, obj in objects.items()}, Path(folder) / CUSTOM_STATE)


def load_custom_states(objects: Dict[str, Any], folder: Path) -> None:
    """Restore each object from `save_custom_states`' file with `weights_only=True`, which loads tensors, numbers,
    strings and containers and refuses anything else, so a planted file cannot run code."""
    if not objects:
        return
    path = Path(folder) / CUSTOM_STATE
    if not path.is_file():
        raise ValueError(f"Cannot resume {folder}: it has no {CUSTOM_STATE} with the states of {', '.join(objects)}; "
                         "it was not written by this trainer. Start over (--resume no).")
    try:
        states = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"Cannot resume {folder}: its {CUSTOM_STATE} holds Python objects that only full pickle can load "
            f"({_first_line(error)}); unpickling runs code from the folder, so it is refused. Resume from a "
            "checkpoint this trainer wrote, or start over (--resume no)."
        ) from error
    missing = [name for name in objects if not isinstance(states, dict) or name not in states]
    if missing:
        raise ValueError(f"Cannot resume {folder}: {CUSTOM_STATE} lacks the states of {', '.join(missing)}; it was not "
                         "written by this trainer (or by one with other objects).")
    for name, obj in objects.items():
        obj.load_state_dict(states[name])


_ABSENT = object()


def _as_json(value: Any) -> Any:
    """The value as it reads back from trainer_state.json (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


def _is_neutral(key: str, neutral: Sequence[str]) -> bool:
    return any(key == name or key.startswith(name + ".") for name in neutral)


def recipe_differences(
    old: Dict[str, Any], new: Dict[str, Any], neutral: Sequence[str] = RESUME_NEUTRAL_KEYS
) -> List[Tuple[str, Any, Any]]:
    """`(dotted key, old value, new value)` for every recipe setting that differs, except the `neutral` ones.

    A key present on one side only counts as a difference (its value there is reported as `<absent>`)."""
    found: List[Tuple[str, Any, Any]] = []

    def walk(key: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for name in list(a) + [n for n in b if n not in a]:
                walk(f"{key}.{name}" if key else str(name), a.get(name, _ABSENT), b.get(name, _ABSENT))
        elif a != b and not _is_neutral(key, neutral):
            found.append((key, a, b))

    walk("", _as_json(old), _as_json(new))
    return found


def _shown(value: Any) -> str:
    return "<absent>" if value is _ABSENT else json.dumps(value)


def check_resume_recipe(checkpoint: Path, config: Dict[str, Any], neutral: Sequence[str] = RESUME_NEUTRAL_KEYS) -> None:
    """Refuse to resume `checkpoint` under a recipe that changes the training trajectory.

    Raises `ValueError` listing each differing key with its old and new value. A checkpoint written before
    recipes were stored (no `recipe` in its trainer state) is resumed unchecked, with a warning."""
    state = json.loads((Path(checkpoint) / TRAINER_STATE).read_text())
    stored = state.get(RECIPE_KEY)
    if stored is None:
        print(f"warning: {checkpoint} does not record the recipe it was trained with (an older checkpoint); resuming "
              "without checking that the recipe is unchanged.", file=sys.stderr)
        return
    changed = recipe_differences(stored, config, neutral)
    if changed:
        listed = "; ".join(f"{key}: {_shown(a)} -> {_shown(b)}" for key, a, b in changed)
        raise ValueError(
            f"Cannot resume {checkpoint}: the recipe differs from the one it was trained with ({listed}). Resuming "
            "would continue that run with other settings, not train this recipe. Undo the change to resume, start "
            "over in this folder with --resume no (its checkpoints and metrics are moved aside, not deleted), or give a new output folder "
            "(--output-dir)."
        )


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


def set_previous_run_aside(output: Path) -> Optional[Path]:
    """Move a previous run's `checkpoints/` and `metrics.jsonl` to `previous-runs/<UTC time>/` so that a run
    started over in the same folder neither mixes with them nor destroys them; returns where they went."""
    output = Path(output)
    moving = [path for path in (output / "checkpoints", output / "metrics.jsonl") if path.exists()]
    if not moving:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = output / "previous-runs" / stamp
    suffix = 1
    while target.exists():
        target, suffix = output / "previous-runs" / f"{stamp}-{suffix}", suffix + 1
    target.mkdir(parents=True)
    for path in moving:
        shutil.move(str(path), str(target / path.name))
    print(f"--resume no: the previous run's {' and '.join(p.name for p in moving)} moved to {target} "
          "(delete it when you no longer need it)", file=sys.stderr)
    return target


def start_run(accelerator, output: Path, resume: str, project: str, config: Dict[str, Any],
              neutral: Sequence[str] = RESUME_NEUTRAL_KEYS, objects: Optional[Dict[str, Any]] = None):
    """Resume from a checkpoint if asked (`auto`: the newest), open the metrics log and the trackers.

    A resume is refused (`ValueError`) when `config` differs from the recipe stored in the checkpoint outside
    the `neutral` keys. `resume="no"` starts over: the folder's old checkpoints and metrics log are moved aside
    first (`set_previous_run_aside`), otherwise the new run's first checkpoints would be pruned as the oldest and
    `auto` would later pick the old run's.
    `objects`: name -> object with `state_dict`/`load_state_dict` (scheduler, EMA) restored with the checkpoint;
    pass the same dict to `save_checkpoint`. Do not use `accelerator.register_for_checkpointing`: accelerate
    unpickles those (see the module docstring).
    Returns `(start_step, log)`; call after `prepare`.
    """
    _refuse_registered_objects(accelerator)
    start_step = 0
    checkpoint = resolve_resume(output, resume)
    if checkpoint is not None:
        check_resume_recipe(checkpoint, config, neutral)
        start_step = load_checkpoint(accelerator, checkpoint, objects)
        accelerator.print(f"resumed from {checkpoint} at step {start_step}")
    elif resume == "no":
        if accelerator.is_main_process:
            set_previous_run_aside(output)
        accelerator.wait_for_everyone()
    log = MetricsLog(accelerator, output, start_step)
    accelerator.init_trackers(project, config=flat_hparams(config))
    return start_step, log

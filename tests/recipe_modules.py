"""Import a script of `recipes/` as a module (the recipes are scripts, not a package), and run a trainer in a
process that is killed after a given step (for the resume tests)."""

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import List

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

# A fresh interpreter that imports a trainer, registers a step callback that ends the process with os._exit(137)
# once the given step is complete (no clean-up, no final save: as if the job had been killed) and runs its
# command line. argv: step, then the trainer's own arguments.
_KILLED_RUN = """
import os, sys
sys.path.insert(0, {recipes!r})
from {module} import main

STEP = int(sys.argv[1])


def die_after_step(step):
    if step == STEP:
        os._exit(137)


main(sys.argv[2:], callbacks=[die_after_step])
"""


def import_recipe(name: str) -> ModuleType:
    """`recipes/<name>.py` as a module, with `recipes/` on the import path only while it is imported."""
    sys.path.insert(0, str(RECIPES))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(RECIPES))


def run_killed_after_step(module: str, step: int, args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    """`module.main(args)` (`semanticodec_hf.lm.train`, or a recipe such as `train_codec`) in a fresh process
    that dies with exit status 137 right after `step` (its checkpoint, if one was due, is written); one thread."""
    code = _KILLED_RUN.format(recipes=str(RECIPES), module=module)
    return subprocess.run([sys.executable, "-c", code, str(step), *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=cwd)

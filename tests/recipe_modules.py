"""Import a script of `recipes/` as a module (the recipes are scripts, not a package), and run a trainer in a
process that is killed after a given step (for the resume tests)."""

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import List, Optional, Sequence

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


def train_tiny_joint_lm(root: Path, positions: Optional[int] = None, settings: Sequence[str] = ()) -> Path:
    """The final folder of a 2-step run of recipes/lm_joint_tiny_cpu.yaml (the random tiny codec's layout, so
    `--tiny` decodes it) from `make_tiny_text_lm`'s random text LM, in `root`: no network, seconds, one torch
    thread. `positions`: the text LM's context cut to that many positions (its position table re-drawn) and the
    blocks with it, so that a second of audio already fills the context; `settings`: more `--set` values."""
    import torch
    from transformers import AutoModelForCausalLM

    from semanticodec_hf.lm.train import main as train_main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        text_lm = import_recipe("make_tiny_text_lm").make_tiny_text_lm(root / "text")
        extra = list(settings)
        if positions is not None:
            AutoModelForCausalLM.from_pretrained(text_lm, n_positions=positions, ignore_mismatched_sizes=True
                                                 ).save_pretrained(text_lm)
            extra.append(f"data.block_size={positions}")
        train_main(["--config", str(RECIPES / "lm_joint_tiny_cpu.yaml"), "--output-dir", str(root / "run"),
                    "--set", f"model.init_from={text_lm}", "train.max_steps=2", "train.eval_every=2",
                    "train.save_every=2", "train.warmup_steps=1", "train.global_batch_size=2",
                    "data.synthetic.num_clips=16", "train.log_with=[]", *extra])
    finally:
        torch.set_num_threads(threads)
    return root / "run" / "final"


def run_killed_after_step(module: str, step: int, args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    """`module.main(args)` (`semanticodec_hf.lm.train`, or a recipe such as `train_codec`) in a fresh process
    that dies with exit status 137 right after `step` (its checkpoint, if one was due, is written); one thread."""
    code = _KILLED_RUN.format(recipes=str(RECIPES), module=module)
    return subprocess.run([sys.executable, "-c", code, str(step), *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=cwd)

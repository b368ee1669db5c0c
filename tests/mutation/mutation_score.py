"""Mutation score of the modules whose logic the fast tests must pin down (issue 16), measured with mutmut.

    pip install "mutmut==3.8.1"
    python tests/mutation/mutation_score.py                 # all five targets, about 15-25 min on 2 cores
    python tests/mutation/mutation_score.py --target lm_data --show-survivors

The repository's tracked and untracked-but-not-ignored files are copied to a scratch folder (mutmut writes a
`mutants/` tree and needs a `[mutmut]` config; neither belongs in the work tree), with lm/ moved to
src/semanticodec_hf/lm, where the package installs it (mutmut names a module after its path and the tests import
`semanticodec_hf.lm`). mutmut runs there with each target's fast tests only, and a table of kill rates per target
is printed. A mutant counts as detected when a test fails (killed) or hangs (timeout: an infinite loop the tests
exposed). Mutants listed in `equivalent_mutants.txt` (beside this file, one `name  # why it cannot change
behaviour` per line) are left out of the rate; a listed name that is no longer a survivor, or that matches no
target at all, is reported so the list cannot rot silently.
Exit status 1 when a target is below --threshold (default 90 %).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[2]
EQUIVALENT_FILE = Path(__file__).with_name("equivalent_mutants.txt")
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}


@dataclass(frozen=True)
class Target:
    """One module (or part of one) to mutate, and the fast tests that must catch its mutants."""

    source: str  # path of the file mutmut mutates
    mutant_glob: str  # mutmut mutant-name pattern(s) selecting the functions under test, comma-separated
    tests: Sequence[str] = field(default_factory=tuple)


TARGETS: Dict[str, Target] = {
    "sct_format": Target(
        "src/semanticodec_hf/sct_format.py", "semanticodec_hf.sct_format.*",
        ("tests/test_sct_format.py",),
    ),
    "audio_token_layout": Target(
        "src/semanticodec_hf/audio_token_layout.py", "semanticodec_hf.audio_token_layout.*",
        ("tests/test_audio_token_layout.py",),
    ),
    "long_audio": Target(
        "src/semanticodec_hf/long_audio.py", "semanticodec_hf.long_audio.*",
        ("tests/test_long_audio.py",),
    ),
    "lm_data": Target(  # lm/data.py, at its installed place in the scratch copy (see `copy_repository`)
        "src/semanticodec_hf/lm/data.py", "semanticodec_hf.lm.data.*",
        ("tests/test_lm_data.py",),
    ),
    "cli_jobs": Target(
        "src/semanticodec_hf/cli_jobs.py", "semanticodec_hf.cli_jobs.*",
        ("tests/test_cli_jobs.py",),
    ),
}


def read_equivalent() -> Dict[str, str]:
    """`name -> reason` from equivalent_mutants.txt; a line without a reason is an error (say why, or kill it)."""
    listed: Dict[str, str] = {}
    if not EQUIVALENT_FILE.exists():
        return listed
    for number, line in enumerate(EQUIVALENT_FILE.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, reason = line.partition("#")
        if not reason.strip():
            raise SystemExit(f"{EQUIVALENT_FILE.name}:{number}: {name.strip()} needs '# why it is equivalent'.")
        listed[name.strip()] = reason.strip()
    return listed


def copy_repository(destination: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    # setup.py installs the top-level lm/ folder as `semanticodec_hf.lm`; mutmut only knows path-named modules,
    # so the copy gets the installed layout (and no top-level `lm` the tests could import by mistake).
    shutil.move(str(destination / "lm"), str(destination / "src" / "semanticodec_hf" / "lm"))


def write_config(workdir: Path, targets: Sequence[Target]) -> None:
    lines = ["[mutmut]", "source_paths =", "    src/semanticodec_hf", "only_mutate ="]
    lines += [f"    {t.source}" for t in targets]
    lines += ["also_copy =", "    recipes", "pytest_add_cli_args_test_selection ="]
    lines += [f"    {test}" for t in targets for test in t.tests]
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider"]
    # Workers forked from a process whose torch already ran multi-threaded ops deadlock in OpenMP (every mutant
    # of such a test then reads as a timeout): fork them from a clean server instead.
    lines += ["process_isolation = forkserver"]
    (workdir / "setup.cfg").write_text("\n".join(lines) + "\n")


def mutant_results(workdir: Path) -> Dict[str, str]:
    output = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=workdir,
                            check=True, capture_output=True, text=True).stdout
    return dict(re.findall(r"^\s+(\S+): (.+)$", output, flags=re.M))


def selected(name: str, target: Target) -> bool:
    patterns = target.mutant_glob.split(",")
    return any(re.fullmatch(re.escape(p).replace(r"\*", ".*"), name) for p in patterns)


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="default: all")
    parser.add_argument("--threshold", type=float, default=90.0, help="minimum kill rate in percent (default 90)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, help="scratch folder to reuse (default: a new temporary one)")
    parser.add_argument("--show-survivors", action="store_true", help="print each survivor's diff")
    args = parser.parse_args(argv)

    names = args.target or sorted(TARGETS)
    targets = [TARGETS[n] for n in names]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="semanticodec-mutation-"))
    if args.workdir is not None and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    copy_repository(workdir)
    write_config(workdir, targets)
    patterns = [p for t in targets for p in t.mutant_glob.split(",")]
    # SEMANTICODEC_HF_AUTOLOAD=0: the installed startup hook (semanticodec_hf.pth) would import the real package
    # before mutmut puts mutants/src first on sys.path, and no mutant would ever run.
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", SEMANTICODEC_HF_AUTOLOAD="0")
    run = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *patterns],
                         cwd=workdir, env=env, stdout=subprocess.DEVNULL)
    if run.returncode != 0:
        print(f"mutmut run failed (exit {run.returncode}); see {workdir}", file=sys.stderr)
        return 2

    results = mutant_results(workdir)
    equivalent = read_equivalent()
    for m in sorted(m for m in equivalent if not any(selected(m, t) for t in TARGETS.values())):
        print(f"  note: {m} is listed as equivalent but matches no target (renamed module?)", file=sys.stderr)
    failed = False
    print("| target | mutants | killed | timeout | equivalent | survived | kill rate |")
    print("|---|---|---|---|---|---|---|")
    survivors: List[str] = []
    for name, target in zip(names, targets):
        mine = {m: s for m, s in results.items() if selected(m, target)}
        killed = sum(s == "killed" or s in DETECTED - {"timeout"} for s in mine.values())
        timeouts = sum(s == "timeout" for s in mine.values())
        alive = [m for m, s in mine.items() if s not in DETECTED]
        excused = [m for m in alive if m in equivalent]
        left = [m for m in alive if m not in equivalent]
        judged = len(mine) - len(excused)
        rate = 100.0 * (killed + timeouts) / judged if judged else 100.0
        failed |= rate < args.threshold
        print(f"| {name} | {len(mine)} | {killed} | {timeouts} | {len(excused)} | {len(left)} | {rate:.1f} % |")
        survivors += left
        stale = [m for m in equivalent if selected(m, target) and m not in alive]
        for m in stale:
            print(f"  note: {m} is listed as equivalent but is {mine.get(m, 'not a mutant any more')}",
                  file=sys.stderr)
    for name in survivors:
        print(f"survived: {name}")
        if args.show_survivors:
            subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=workdir)
    print(f"(mutmut tree: {workdir})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

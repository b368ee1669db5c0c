"""Do the declared lower bounds work, and does an install keep a user's own in-range versions?

    python tests/compat/lower_bounds.py                # everything below (~100 s with a warm pip cache)
    python tests/compat/lower_bounds.py --dry-run-only # steps 1-3 only: the install proof, no tests
    python tests/compat/lower_bounds.py --keep         # keep the throwaway venv and print its path

Not part of the pytest run (pytest collects tests/test_*.py only): it builds a venv and downloads wheels.

1. Creates a throwaway venv in a temporary folder (with this interpreter) and installs, in one pip call:
   torch at the version pinned in constraints.txt (a CPU wheel; only that one is installable here), the LOWER
   bounds that setup.py declares for the pure-Python Hugging Face libraries (FLOOR_LIBRARIES, each `==` its `>=`
   version, read from setup.py's install_requires, not written here), the other install_requires as declared
   (ranges: pip takes the newest that fits), and the test tools (pytest from the `dev` extra, the `eval` extra).
2. Checks with `pip freeze` that each library got exactly its floor.
3. Proves that installing the package beside that stack changes none of it: `pip install --dry-run --report`
   of `-e .` (no constraints file) must not list any package the venv already holds; it prints what pip would
   install (only semanticodec-hf itself when all is well). Then it installs the package the way a user would
   (`pip install -e .`; `--no-deps` instead if the dry-run failed, so that the tests still run on the floors),
   checks `pip freeze` again and runs `pip check`.
4. Runs a fast subset of the existing tests in that venv (TESTS: config and model save/load, encode, decode with
   2 steps, the audio tokenizer, datasets.map, 3 LM training steps with an accelerate resume, the codec trainer's
   EMA resume, the evaluate metric, the CLI round trip) and prints the versions used and pass/fail.

Exit status 0 only when every step passed. When a floor fails, raise it in setup.py (or lower one that is newer
than needed) and run this again; record the result in the README ("Installing beside your own stack").
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]

# The pure-Python libraries whose declared floors are installed (their versions come from setup.py).
FLOOR_LIBRARIES = ("transformers", "diffusers", "datasets", "accelerate", "huggingface_hub", "evaluate")

TESTS = (
    "tests/test_configuration.py::test_round_trip_keeps_every_hyper_parameter",
    "tests/test_feature_extraction.py::test_save_and_load_round_trip",
    "tests/test_modeling.py::test_auto_classes_resolve_and_round_trip",  # save/load with the Auto classes, encode
    "tests/test_modeling.py::test_decode_batch_equals_items_alone_with_seeds",  # decode, 2 DDIM steps
    "tests/test_tokenization.py::test_audio_call_shapes_and_rates",
    "tests/test_tokenization.py::test_ids_to_audio",
    "tests/test_tokenization.py::test_save_and_load_round_trip",
    "tests/test_lm_data.py::test_block_builder_works_in_datasets_map",
    "tests/test_datasets_integration.py::test_map_over_arrays_paths_and_bytes_equals_each_clip_alone",
    "tests/test_lm_train.py::test_a_checkpoint_without_a_stored_recipe_still_resumes_with_a_warning",  # 3 steps
    "tests/test_lm_train.py::test_killed_and_resumed_run_ends_with_the_same_weights",
    "tests/test_train_codec.py::test_unet_ema_stays_on_the_training_device_also_after_a_resume",
    "tests/test_evaluate_metric.py::test_the_evaluate_metric_gives_codec_metrics_numbers",
    "tests/test_evaluate_metric.py::test_the_helper_and_evaluate_load_by_path",
    "tests/test_cli.py::test_roundtrip_tiny_writes_codes_and_audio",
    "tests/test_processor.py::test_save_and_load_round_trip_with_auto_processor",  # ProcessorMixin, AutoProcessor
    # trust_remote_code in a process without the package: transformers' dynamic-module loading at its floor
    "tests/test_remote_code.py::test_trust_remote_code_without_the_package_gives_the_same_codes_and_waveform",
)

# Printed in the summary besides torch and the floors.
ALSO_SHOWN = ("numpy", "tokenizers", "safetensors", "pyarrow", "fsspec", "soundfile", "soxr", "pytest")


# ------------------------------------------------------------------------------------------- setup.py and pins
def setup_arguments(setup_py: Path = REPO / "setup.py") -> dict:
    """The literal keyword arguments of the `setup(...)` call in setup.py (read with ast; setup() never runs)."""
    tree = ast.parse(setup_py.read_text(encoding="utf-8"), filename=str(setup_py))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "setup":
            found = {}
            for keyword in node.keywords:
                try:
                    found[keyword.arg] = ast.literal_eval(keyword.value)
                except ValueError:  # not a literal (package_dir built from names, cmdclass ...)
                    continue
            return found
    raise ValueError(f"no setup(...) call in {setup_py}")


def install_requires(setup_py: Path = REPO / "setup.py") -> list[Requirement]:
    return [Requirement(line) for line in setup_arguments(setup_py)["install_requires"]]


def extras_require(setup_py: Path = REPO / "setup.py") -> dict[str, list[Requirement]]:
    return {extra: [Requirement(line) for line in lines]
            for extra, lines in setup_arguments(setup_py).get("extras_require", {}).items()}


def lower_bound(requirement: Requirement) -> str:
    """The version of the requirement's `>=` specifier."""
    floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    if len(floors) != 1:
        raise ValueError(f"{requirement} has no single >= lower bound")
    return floors[0]


def constraint_pins(path: Path = REPO / "constraints.txt") -> dict[str, str]:
    """constraints.txt as {canonical name: pinned version}."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            if spec.operator != "==":
                raise ValueError(f"constraints.txt: {line} is not pinned with ==")
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


# ---------------------------------------------------------------------------------------------------- the venv
class Venv:
    def __init__(self, folder: Path, log: Path):
        self.folder, self.log = folder, log
        self.python = folder / "bin" / "python"
        # Nothing of the caller's environment may leak in (its venv, PYTHONPATH, a pip target).
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_TARGET", "PIP_PREFIX")}
        self.env["PATH"] = f"{folder / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"

    def run(self, *args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(self.python), *args], cwd=REPO, env=self.env, text=True, capture_output=capture)
        if capture:
            with self.log.open("a", encoding="utf-8") as log:
                log.write(f"$ python {' '.join(args)}\n{result.stdout}\n{result.stderr}\n")
        if check and result.returncode != 0:
            tail = ((result.stdout or "") + (result.stderr or ""))[-4000:]
            raise SystemExit(f"FAILED: python {' '.join(args)} (exit {result.returncode})\n{tail}")
        return result

    def pip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("-m", "pip", "--disable-pip-version-check", *args, check=check)

    def freeze(self) -> dict[str, str]:
        rows = json.loads(self.pip("list", "--format=json").stdout)
        return {canonicalize_name(row["name"]): row["version"] for row in rows}


def _same_version(installed: str, wanted: str) -> bool:
    return Version(Version(installed).public) == Version(wanted)


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run-only", action="store_true", help="stop after the install proof (no tests)")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway venv")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    requirements = install_requires()
    by_name = {canonicalize_name(r.name): r for r in requirements}
    floors = {canonicalize_name(name): lower_bound(by_name[canonicalize_name(name)]) for name in FLOOR_LIBRARIES}
    torch_pin = constraint_pins()["torch"]
    if not by_name["torch"].specifier.contains(torch_pin, prereleases=True):
        raise SystemExit(f"torch {torch_pin} (constraints.txt) is outside setup.py's {by_name['torch']}")
    rest = [str(r) for name, r in by_name.items() if name not in floors and name != "torch"]
    extras = extras_require()
    tools = [str(r) for r in extras["dev"] if canonicalize_name(r.name) == "pytest"] + [str(r) for r in extras["eval"]]
    wanted = {"torch": torch_pin, **floors}

    folder = Path(tempfile.mkdtemp(prefix="semanticodec-lower-bounds-"))
    venv = Venv(folder / "venv", folder / "pip.log")
    failures: list[str] = []
    try:
        t = _step(f"1. throwaway venv in {folder}, torch {torch_pin} and the declared floors")
        subprocess.run([sys.executable, "-m", "venv", str(venv.folder)], check=True)
        specs = [f"torch=={torch_pin}", *(f"{name}=={version}" for name, version in floors.items()), *rest, *tools]
        print("pip install " + " ".join(specs), flush=True)
        venv.pip("install", *specs)
        print(f"({time.perf_counter() - t:.0f} s)")

        _step("2. pip freeze: each library at its floor")
        before = venv.freeze()
        wrong = []
        for name, version in wanted.items():
            got = before.get(name)
            ok = got is not None and _same_version(got, version)
            print(f"  {name:16s} wanted {version:10s} installed {got}  {'ok' if ok else 'WRONG'}")
            if not ok:
                wrong.append(name)
                failures.append(f"{name} installed {got}, not its floor {version}")

        t = _step("3. pip install --dry-run --report -e . beside that stack (no constraints file)")
        report_path = folder / "report.json"
        venv.pip("install", "--dry-run", "--report", str(report_path), "-e", str(REPO))
        report = json.loads(report_path.read_text())
        would = [(item["metadata"]["name"], item["metadata"]["version"]) for item in report["install"]]
        print("  pip would install: " + (", ".join(f"{n} {v}" for n, v in would) or "nothing"))
        touched = [(n, v) for n, v in would if canonicalize_name(n) in before]
        for name, version in touched:
            failures.append(f"the install would change {name} {before[canonicalize_name(name)]} -> {version}")
            print(f"  WOULD CHANGE {name}: {before[canonicalize_name(name)]} -> {version}")
        if not touched:
            print("  ok: no installed package would be changed")
        venv.pip("install", *(("--no-deps",) if touched else ()), "-e", str(REPO))
        after = venv.freeze()
        changed = {n: (before.get(n), v) for n, v in after.items()
                   if n != "semanticodec-hf" and before.get(n) != v}
        if changed:
            failures.append(f"pip install -e . changed {changed}")
        print(f"  pip install -e . done; freeze unchanged apart from semanticodec-hf: {not changed}")
        check = venv.pip("check", check=False)
        print("  pip check: " + check.stdout.strip().replace("\n", "\n    "))
        if check.returncode != 0:
            failures.append("pip check found conflicts")
        print(f"({time.perf_counter() - t:.0f} s)")

        tests_ok = None
        if not args.dry_run_only:
            t = _step(f"4. {len(TESTS)} tests on the floors")
            result = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS, check=False, capture=False)
            tests_ok = result.returncode == 0
            if not tests_ok:
                failures.append(f"pytest exit {result.returncode}")
            print(f"({time.perf_counter() - t:.0f} s)")

        print("\n== versions used")
        print(f"  python {platform.python_version()}")
        for name in (*wanted, *ALSO_SHOWN):
            print(f"  {name:16s} {after.get(canonicalize_name(name))}")
        print("\n== result")
        print(f"  floors installed: {'pass' if not wrong else 'FAIL'}")
        print(f"  dry-run beside the floors changes nothing: {'pass' if not touched else 'FAIL'}")
        print(f"  tests: {'skipped' if tests_ok is None else 'pass' if tests_ok else 'FAIL'}")
        print(f"  total {time.perf_counter() - started:.0f} s")
        for failure in failures:
            print(f"  FAILED: {failure}")
        print("PASSED" if not failures else "FAILED")
        return 0 if not failures else 1
    finally:
        if args.keep:
            print(f"kept: {venv.folder} (pip log: {venv.log})")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

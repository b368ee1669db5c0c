"""Packaging: setup.py declares ranges (never `==`), constraints.txt pins a known-good set inside them, and CI
installs exactly as the README's first command does, with `-c constraints.txt`. setup() never runs here:
setup.py is read with ast (the same reader tests/compat/lower_bounds.py uses for the lower bounds)."""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
MAIN_LIBRARIES = ("torch", "transformers", "diffusers", "accelerate", "datasets", "huggingface_hub", "evaluate")


def _load_script():
    spec = importlib.util.spec_from_file_location("lower_bounds_script", REPO / "tests" / "compat" / "lower_bounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lower_bounds = _load_script()
REQUIRES = lower_bounds.install_requires()
EXTRAS = lower_bounds.extras_require()
DIRECT = REQUIRES + [r for requirements in EXTRAS.values() for r in requirements]
PINS = lower_bounds.constraint_pins()


def _ids(requirements):
    return [str(r) for r in requirements]


@pytest.mark.parametrize("requirement", DIRECT, ids=_ids(DIRECT))
def test_no_exact_pin_and_a_lower_bound(requirement):
    assert not [s for s in requirement.specifier if s.operator in ("==", "===")], f"{requirement} is pinned"
    assert Version(lower_bounds.lower_bound(requirement))  # one >= floor


@pytest.mark.parametrize("name", MAIN_LIBRARIES)
def test_main_libraries_are_capped_at_the_next_major(name):
    (requirement,) = [r for r in REQUIRES if canonicalize_name(r.name) == canonicalize_name(name)]
    caps = [Version(s.version) for s in requirement.specifier if s.operator == "<"]
    assert len(caps) == 1, f"{requirement} has no < upper bound"
    known_good = Version(PINS[canonicalize_name(name)])  # today's version, in constraints.txt
    assert caps[0].release in ((known_good.major + 1,), (known_good.major + 1, 0)), (
        f"{requirement}: the cap should be the next major after {known_good}")


def test_the_script_floors_name_declared_requirements():
    declared = {canonicalize_name(r.name) for r in REQUIRES}
    assert {canonicalize_name(n) for n in lower_bounds.FLOOR_LIBRARIES} <= declared


@pytest.mark.parametrize("requirement", DIRECT, ids=_ids(DIRECT))
def test_every_direct_requirement_is_pinned_inside_its_range(requirement):
    pin = PINS.get(canonicalize_name(requirement.name))
    assert pin is not None, f"{requirement.name} is not pinned in constraints.txt"
    assert requirement.specifier.contains(pin, prereleases=True), f"constraints.txt: {pin} is outside {requirement}"


def test_constraints_file_has_one_pin_per_package():
    names = [canonicalize_name(re.split(r"[=<>!~ ]", line, maxsplit=1)[0])
             for line in (REPO / "constraints.txt").read_text().splitlines() if line.strip() and line[0] != "#"]
    assert len(names) == len(set(names)) == len(PINS)
    assert "semanticodec-hf" not in PINS


def _pip_install_words(command: str) -> list:
    """The words of the `pip install ...` in a shell line (after the last `&&`), without -q."""
    words = shlex.split(command.split("&&")[-1])
    assert words[:2] == ["pip", "install"], command
    return [w for w in words if w != "-q"]


def test_ci_installs_like_the_readme_with_the_constraints():
    readme = (REPO / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start"):]
    first_command = re.search(r"```bash\n(.*)\n", quick_start).group(1)
    ci_line = next(line for line in (REPO / ".ci" / "run").read_text().splitlines() if "pip install" in line)
    readme_words, ci_words = _pip_install_words(first_command), _pip_install_words(ci_line)
    assert readme_words == ci_words
    assert "-c constraints.txt" in " ".join(readme_words)
    assert first_command.startswith("python3 -m venv .venv && . .venv/bin/activate && ")

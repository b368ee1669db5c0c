"""The audio-LM toolkit (the top-level lm/ folder) installs and imports as `semanticodec_hf.lm`, never as `lm`.

Imports are checked in fresh interpreters started outside the repository (its root would make the lm/ folder
importable as `lm` through the current directory), so they see what an installed user sees."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LM = REPO / "lm"
LM_MODULES = sorted(p.stem for p in LM.glob("*.py") if p.stem != "__init__")
PUBLIC = ["AcousticStage", "AudioContinuation", "AudioLMDataCollator", "BlockBuilder", "ForcedSemanticLogitsProcessor",
          "LMRecipe", "PatternLogitsProcessor",
          "SemanticNoRepeatNGramLogitsProcessor", "auto_bleu", "distinct_n", "generate_continuations", "heldout_loss",
          "likelihood_probe_audio", "likelihood_probe_ids", "load_lm", "load_recipe", "pack_sequences",
          "split_sequences", "unigram_entropy", "write_lm_report"]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)  # only the installed package: no checkout folder on the path
    return env


def _python(code: str, cwd: Path, *args: str) -> dict:
    """Run `code` in a fresh interpreter in `cwd`; it prints one JSON object as its last line."""
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_toolkit_is_semanticodec_hf_lm_and_there_is_no_top_level_lm(tmp_path):
    code = (
        "import importlib.util, json, sys\n"
        "import semanticodec_hf\n"
        "eager = 'semanticodec_hf.lm' in sys.modules\n"
        "import semanticodec_hf.lm as lm\n"
        "from semanticodec_hf.lm import " + ", ".join(PUBLIC) + "\n"
        "print(json.dumps({'eager': eager, 'file': lm.__file__, 'all': sorted(lm.__all__),\n"
        "    'attribute': semanticodec_hf.lm is lm, 'top_level_lm': importlib.util.find_spec('lm') is not None,\n"
        "    'imported': sorted(m for m in sys.modules if m == 'lm' or m.startswith('lm.')),\n"
        "    'cli': 'semanticodec_hf.cli' in sys.modules}))\n"
    )
    seen = _python(code, tmp_path)
    assert not seen["eager"], "importing semanticodec_hf must not import the LM toolkit"
    assert Path(seen["file"]) == LM / "__init__.py"
    assert seen["all"] == sorted(PUBLIC) and seen["attribute"]
    assert not seen["top_level_lm"] and seen["imported"] == []
    assert not seen["cli"], "the LM toolkit must not import semanticodec_hf.cli"


@pytest.mark.parametrize("first, second", [("semanticodec_hf.cli", "semanticodec_hf.lm"),
                                           ("semanticodec_hf.lm", "semanticodec_hf.cli")])
def test_cli_and_lm_import_in_either_order_and_the_cli_finds_the_lm_lazily(tmp_path, first, second):
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({first!r})\n"
        "after_first = sorted(m for m in ('semanticodec_hf.cli', 'semanticodec_hf.lm') if m in sys.modules)\n"
        f"importlib.import_module({second!r})\n"
        "from semanticodec_hf.cli import build_parser\n"
        "commands = build_parser()._subparsers._group_actions[0].choices\n"
        "print(json.dumps({'after_first': after_first, 'continue': 'continue' in commands,\n"
        "    'top_level_lm': 'lm' in sys.modules}))\n"
    )
    seen = _python(code, tmp_path)
    assert seen["after_first"] == [first], "cli must import the LM only inside the command that needs it"
    assert seen["continue"] and not seen["top_level_lm"]


def _imports(path: Path):
    """(line, module) of every absolute import in a Python file; `from a import b` gives a and a.b."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def test_no_file_imports_a_top_level_lm_or_an_lm_module_by_its_bare_name():
    """`lm` is not installed; the modules of lm/ (config, data, ...) would shadow same-named top-level modules
    if anything imported them by their bare names. The LM never imports the CLI (that would be a cycle)."""
    files = [p for folder in ("lm", "src", "recipes", "benchmarks", "tests") for p in (REPO / folder).rglob("*.py")]
    bad = [f"{p.relative_to(REPO)}:{line}: import {name}" for p in files for line, name in _imports(p)
           if name.split(".")[0] == "lm" or (p.parent == LM and name.split(".")[0] in LM_MODULES)]
    assert bad == []
    cycle = [f"{p.name}:{line}: import {name}" for p in LM.glob("*.py") for line, name in _imports(p)
             if name == "semanticodec_hf.cli" or name.startswith("semanticodec_hf.cli.")]
    assert cycle == []


def test_the_codec_package_never_imports_the_lm_toolkit():
    """The dependency goes one way, LM -> codec: no module of src/semanticodec_hf imports `semanticodec_hf.lm`
    (absolutely or as `.lm`, at the top or inside a function); `continue` reaches the CLI by its entry point."""
    package = REPO / "src" / "semanticodec_hf"
    found = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 1 and path.parent == package:
                    module = f"semanticodec_hf.{module}" if module else "semanticodec_hf"
                names = [module] + [f"{module}.{alias.name}" for alias in node.names]
            found += [f"{path.name}:{node.lineno}" for name in names
                      if name == "semanticodec_hf.lm" or name.startswith("semanticodec_hf.lm.")]
    assert found == []
    setup = (REPO / "setup.py").read_text()
    assert '"continue=semanticodec_hf.lm.generate:register_continue_command"' in setup
    assert '"decode-semantic=semanticodec_hf.lm.acoustic_stage:register_decode_semantic_command"' in setup


@pytest.mark.parametrize("script", ["train.py", "generate.py"])
def test_the_scripts_run_from_the_repo_root_and_from_anywhere_else(tmp_path, script):
    for command, cwd in [([sys.executable, f"lm/{script}", "--help"], REPO),
                         ([sys.executable, str(LM / script), "--help"], tmp_path)]:
        result = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (cwd, result.stderr[-3000:])
        assert result.stdout.startswith(f"usage: {script}"), result.stdout[:300]


@pytest.mark.parametrize("script", ["train.py", "generate.py"])
def test_a_script_run_drops_lm_from_the_import_path(tmp_path, script):
    """As `python lm/<script>` does, the script starts with lm/ first on sys.path; it removes it, so its siblings
    are only importable as `semanticodec_hf.lm.*`."""
    code = (
        "import json, runpy, sys\n"
        "names, code = sys.argv[3:], None\n"
        "sys.path.insert(0, sys.argv[1]); sys.argv = [sys.argv[2], '--help']\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    code = stop.code\n"
        "import importlib.util, os\n"
        "lm_dir = os.path.dirname(sys.argv[0])\n"
        "from_lm = lambda origin: bool(origin) and os.path.dirname(origin) == lm_dir\n"
        "print(json.dumps({'code': code, 'lm_on_path': lm_dir in sys.path, 'bare': sorted(\n"
        "    [m for m in names if from_lm(getattr(importlib.util.find_spec(m), 'origin', None))]\n"
        "    + [n for n, m in list(sys.modules.items())  # the script itself runs as __main__ (and __mp_main__)\n"
        "       if not n.startswith(('__main__', '__mp_main__', 'semanticodec_hf.'))\n"
        "       and from_lm(getattr(m, '__file__', None))])}))\n"
    )
    seen = _python(code, tmp_path, str(LM), str(LM / script), *LM_MODULES)
    assert seen == {"code": 0, "lm_on_path": False, "bare": []}

"""`benchmarks/compile_experiments.py --quick` runs end to end on the tiny model and prints its parseable line
(the timings are the machine's: only their presence and consistency are checked). Compiling even the tiny
vocoder with inductor takes 35-65 s (C++ compilation) on a 2-core machine, more when it is shared, hence `slow`."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NUMBER = r"([\d.e+-]+|nan|inf)"


@pytest.mark.slow
def test_quick_compile_experiment_prints_the_vocoder_line():
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "compile_experiments.py"), "--quick", "--stages", "vocoder",
         "--repeats", "1", "--threads", "1", "--autotune", "never"],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    lines = re.findall(
        rf"^COMPILE stage=(\w+) eager_s={NUMBER} compiled_s={NUMBER} speedup={NUMBER} compile_s={NUMBER} "
        rf"break_even_calls=(\d+|never) rel_l2={NUMBER} max_rel={NUMBER} first_call_s={NUMBER} mode=default "
        rf"graphs=(\d+) graph_breaks=(\d+)$",
        out, flags=re.M,
    )
    assert len(lines) == 1, out[-3000:]
    stage, eager, compiled, speedup, compile_s, break_even, rel_l2, max_rel, first_call, graphs, breaks = lines[0]
    assert stage == "vocoder"
    assert float(eager) > 0 and float(compiled) > 0 and float(first_call) >= float(compile_s) >= 0
    assert abs(float(speedup) - float(eager) / float(compiled)) <= 1e-4 * float(speedup)
    if float(compiled) < float(eager):
        assert break_even != "never"
    elif float(compiled) > float(eager):
        assert break_even == "never"
    # the compiled vocoder computes the same function: float32 rounding differences only
    assert float(rel_l2) < 1e-4 and float(max_rel) < 1e-4
    assert int(graphs) >= 1
    assert "| stage (one call) | mode | eager s | compiled s |" in out


def test_compile_experiments_rejects_an_unknown_stage():
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "compile_experiments.py"), "--quick", "--stages", "lstm"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 2 and "unknown stage" in result.stderr


def test_stage_line_and_table_format_a_measured_row_and_an_error():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import compile_experiments as experiments
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    row = {"stage": "vae", "mode": "default", "eager_s": 2.0, "compiled_s": 1.5, "speedup": 2.0 / 1.5,
           "compile_s": 30.0, "first_call_s": 31.5, "break_even_calls": 60, "graphs": 1, "graph_breaks": 0,
           "unit": "1 window(s)", "rel_l2": 1e-7, "max_rel": 2e-7}
    line = experiments.stage_line(row)
    assert line.startswith("COMPILE stage=vae eager_s=2 compiled_s=1.5 speedup=1.33333 compile_s=30 "
                           "break_even_calls=60 rel_l2=1e-07 max_rel=2e-07 ")
    failed = {"stage": "unet", "mode": "default", "error": "RuntimeError: no compiler"}
    assert experiments.stage_line(failed) == "COMPILE stage=unet mode=default error=RuntimeError: no compiler"
    text = experiments.table([row, failed])
    assert "| vae (1 window(s)) | default | 2.000 | 1.500 | 1.33x | 30.0 | 60 |" in text
    assert "error: RuntimeError: no compiler" in text

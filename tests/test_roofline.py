"""`benchmarks/roofline.py --quick` runs end to end and prints one parseable line per peak and per stage (the
numbers themselves are the machine's: only their presence and consistency are checked)."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ["fbank", "audiomae", "pool_semantic", "bilstm", "acoustic_vq", "unet", "vae_decode", "vocoder",
          "decode_ddim2"]


def test_quick_roofline_prints_every_stage_against_a_peak():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "roofline.py"), "--quick", "--threads", "1"],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    number = r"([\d.e+-]+)"
    peaks = dict(re.findall(rf"^ROOFLINE_PEAK name=(\w+) gflops={number}$", out, flags=re.M))
    assert set(peaks) == {"fp32_gemm", "bf16_gemm", "conv2d", "lstm_recurrence", "lstm"} and all(float(v) > 0 for v in peaks.values())
    lines = re.findall(rf"^ROOFLINE stage=(\w+) gflop={number} seconds={number} gflops={number} peak=(\w+) "
                       rf"peak_gflops={number} fraction={number}$", out, flags=re.M)
    assert [line[0] for line in lines] == STAGES
    for stage, gflop, seconds, gflops, peak, peak_gflops, fraction in lines:
        assert float(gflop) > 0 and float(seconds) > 0, stage
        # six significant digits printed: the three numbers of a line agree to that rounding
        assert abs(float(gflops) - float(gflop) / float(seconds)) <= 1e-4 * float(gflops), stage
        assert peak_gflops == peaks[peak]
        assert abs(float(fraction) - float(gflops) / float(peak_gflops)) <= 1e-4 * float(fraction), stage
    assert "| stage | GFLOP | s | GFLOP/s |" in out and "1 threads" in out


def test_the_gpu_suite_is_valid_bash_and_its_scripts_take_its_options():
    """The GPU suite cannot run here; what can be checked without a GPU is: it parses, and every option it passes
    exists in the scripts it calls (a smoke run on a CPU: `GPU_SUITE_DEVICE=cpu GPU_SUITE_QUICK=1`)."""
    suite = REPO / "benchmarks" / "gpu_suite.sh"
    assert subprocess.run(["bash", "-n", str(suite)], capture_output=True).returncode == 0
    text = suite.read_text()
    for script, options in [("codec_speed.py", ["--device", "--size", "--token-rates", "--clips", "--batch",
                                                "--decode-steps", "--samplers", "--decoder-dtypes"]),
                            ("roofline.py", ["--device", "--quick", "--windows", "--decoder-dtype"]),
                            ("lm_throughput.py", ["--config", "--warmup-steps", "--steps", "--new-tokens"])]:
        assert script in text
        shown = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--help"], capture_output=True,
                               text=True, timeout=300, cwd=REPO)
        assert shown.returncode == 0, shown.stderr[-2000:]
        for option in options:
            assert option in text and option in shown.stdout, (script, option)

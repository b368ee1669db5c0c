"""Shared pytest setup: fixtures folder, the parity weight recipe, and the `slow` marker."""

import os
import sys
from pathlib import Path

# The parity fixtures were made on an AMD CPU where MKL takes its SSE4.2 path; on AVX-512 Intel CPUs MKL's FFT
# and GEMM round differently (up to 1e-3 on near-silent fbank bins). MKL_CBWR=COMPATIBLE selects the same
# reproducible code path on every x86 CPU. It must be set before MKL's first call, i.e. before torch computes.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
# Spinning OpenMP workers starve each other (and forked dataset workers) on a 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # makes tests/parity_weights.py importable from every test module

torch.set_num_threads(2)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes; run with -m slow")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return TESTS / "fixtures"

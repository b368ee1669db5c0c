"""Shared pytest setup: fixtures folder, the parity weight recipe, and the `slow` marker."""

import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # makes tests/parity_weights.py importable from every test module

torch.set_num_threads(2)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes; run with -m slow")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return TESTS / "fixtures"

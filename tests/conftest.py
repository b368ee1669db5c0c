"""Shared pytest setup: fixtures folder, the parity weight recipe, the stored decode noise, and the `slow` marker."""

import json
import os
import sys
import tempfile
from pathlib import Path

# The parity fixtures were made on an AMD CPU where MKL takes its SSE4.2 path; on AVX-512 Intel CPUs MKL's FFT
# and GEMM round differently (up to 1e-3 on near-silent fbank bins). MKL_CBWR=COMPATIBLE selects the same
# reproducible code path on every x86 CPU. It must be set before MKL's first call, i.e. before torch computes.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
# Spinning OpenMP workers starve each other (and forked dataset workers) on a 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Measured LSTM kernel choices (semanticodec_hf.lstm_kernels) of the tests' small models go to one folder of
# their own (created on first use, shared by test processes: writes are atomic), never to the user's cache.
os.environ["SEMANTICODEC_HF_CACHE"] = os.path.join(tempfile.gettempdir(), "semanticodec-hf-test-cache")
# Code that transformers (trust_remote_code) and evaluate copy out of folders is imported from here, not from the
# user's ~/.cache/huggingface/modules (read by both libraries when they are imported, hence before them).
os.environ["HF_MODULES_CACHE"] = os.path.join(tempfile.gettempdir(), "semanticodec-hf-test-modules")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # makes tests/parity_weights.py importable from every test module

torch.set_num_threads(2)



@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return TESTS / "fixtures"


@pytest.fixture(scope="session")
def stored_decode_noise(fixtures_dir: Path) -> torch.Tensor:
    """Every `torch.randn` draw of the original's decode of fixture_tr100_v8192_s0, shaped for the `noise=`
    argument of `decode` / `sample_latents`: [windows, 1 + DDIM steps, 8, 256, 16] (x_T first, windows in order,
    as the fixture's json states)."""
    meta = json.loads((fixtures_dir / "fixture_tr100_v8192_s0.json").read_text())
    draws = meta["ddim_steps"] + 1  # eta > 0: x_T, then one draw per step
    windows, leftover = divmod(meta["decode_noise_draws"], draws)
    assert leftover == 0 and meta["ddim_eta"] > 0, meta
    stored = np.load(fixtures_dir / "fixture_tr100_v8192_s0_decoder.npz")
    return torch.stack([
        torch.cat([torch.from_numpy(stored[f"decode_noise_{w * draws + k:03d}"]) for k in range(draws)])
        for w in range(windows)
    ])


SESSION_THREADS = torch.get_num_threads()
SESSION_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")


def _set_omp_num_threads(value):
    """Set or remove OMP_NUM_THREADS in the *current* `os.environ`: `datasets.Dataset.map(num_proc=...)` replaces
    `os.environ` by a copy, so a `monkeypatch.setenv` made before it would be undone on the old mapping only."""
    if value is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = value


@pytest.fixture(autouse=True)
def _session_thread_settings():
    """Every test starts with the session's torch threads and OMP_NUM_THREADS, whatever the one before it ran
    (the commands set torch's threads from `--threads`, and the fbank of the parity fixtures is only exact with the
    session's thread count)."""
    yield
    if torch.get_num_threads() != SESSION_THREADS:
        torch.set_num_threads(SESSION_THREADS)
    if os.environ.get("OMP_NUM_THREADS") != SESSION_OMP_NUM_THREADS:
        _set_omp_num_threads(SESSION_OMP_NUM_THREADS)


@pytest.fixture
def one_thread():
    """One torch thread: the tiny codec runs many small ops, which 2 OpenMP threads on a loaded 2-core box
    slow down by up to ~100x. OMP_NUM_THREADS=1 too: the commands and recipes a test runs in-process set their
    default thread count from it (`cpu_threads.default_threads`)."""
    previous, previous_env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    _set_omp_num_threads("1")
    yield
    torch.set_num_threads(previous)
    _set_omp_num_threads(previous_env)


# ---------------------------------------------------------------------------------------------- tiny codecs
# The small RANDOM codec of tests and demos (`SemantiCodecModel.tiny`), built once per test module (module scope,
# as tests may change a model's settings), from a seed: the same seed gives the same weights. The package is
# imported inside the fixtures, so collecting tests that need no model stays light.
@pytest.fixture(scope="module")
def tiny_codec_factory():
    """`make(seed=0, token_rate=100, semantic_vocab_size=64)` -> the tiny `SemantiCodecModel`, built on first
    request and shared by the module's tests after that."""
    from semanticodec_hf import SemantiCodecModel

    built = {}

    def make(seed: int = 0, token_rate: int = 100, semantic_vocab_size: int = 64):
        key = (seed, token_rate, semantic_vocab_size)
        if key not in built:
            built[key] = SemantiCodecModel.tiny(seed=seed, token_rate=token_rate,
                                                semantic_vocab_size=semantic_vocab_size)
        return built[key]

    return make


@pytest.fixture(scope="module")
def tiny(tiny_codec_factory):
    """The tiny codec with seed 0 at 100 tokens/s (what the CLI's `--tiny` builds)."""
    return tiny_codec_factory(seed=0)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    """`SemantiCodecAudioTokenizer.tiny(seed=0)`: the tiny codec with its feature extractor and LM id layout
    (its own model, not the `tiny` fixture's)."""
    from semanticodec_hf import SemantiCodecAudioTokenizer

    return SemantiCodecAudioTokenizer.tiny(seed=0)


@pytest.fixture(scope="module")
def tiny_decoder():
    """The tiny config's decoder alone with PyTorch's default init (outputs of order 1), seeded with 0."""
    from semanticodec_hf import SemantiCodecConfig
    from semanticodec_hf.modeling_semanticodec_decoder import SemantiCodecDecoder

    torch.manual_seed(0)
    return SemantiCodecDecoder(SemantiCodecConfig.tiny()).eval()

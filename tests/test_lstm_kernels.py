"""The CPU LSTM kernel choice: measured once per machine and batch bucket, cached in a file, overridable, and
never leaving PyTorch's global oneDNN switch changed."""

import json

import pytest
import torch

from semanticodec_hf import lstm_kernels
from semanticodec_hf.lstm_kernels import (
    LSTM_KERNEL_ENV,
    LstmKernelChooser,
    batch_bucket,
    lstm_kernel,
    measure_kernels,
    resolve_kernel,
)


@pytest.fixture
def small_lstm():
    torch.manual_seed(0)
    return torch.nn.LSTM(8, 8, num_layers=2, batch_first=True, bidirectional=True).eval()


def _fake_timings(monkeypatch, aten: float, onednn: float):
    calls = []

    def fake(lstm, sample, repeats=2):
        calls.append(tuple(sample.shape))
        return {"aten": aten, "onednn": onednn}

    monkeypatch.setattr(lstm_kernels, "measure_kernels", fake)
    return calls


def test_batch_buckets_are_powers_of_two_capped_at_64():
    assert [batch_bucket(b) for b in (1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 64, 65, 1000)] == \
        [1, 2, 4, 4, 8, 8, 16, 16, 32, 64, 64, 64, 64]


def test_aten_context_switches_onednn_off_and_restores_it_even_on_error():
    assert torch.backends.mkldnn.enabled
    with lstm_kernel("aten"):
        assert not torch.backends.mkldnn.enabled
    with pytest.raises(RuntimeError, match="inside"):
        with lstm_kernel("aten"):
            raise RuntimeError("inside")
    assert torch.backends.mkldnn.enabled
    with lstm_kernel("onednn"):
        assert torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False  # the caller's own choice is respected by "onednn" and restored
    try:
        with lstm_kernel("onednn"):
            assert not torch.backends.mkldnn.enabled
        with lstm_kernel("aten"):
            pass
        assert not torch.backends.mkldnn.enabled
    finally:
        torch.backends.mkldnn.enabled = True
    with pytest.raises(ValueError, match="must be one of"):
        with lstm_kernel("mkl"):
            pass


def test_both_kernels_compute_the_same_lstm(small_lstm):
    x = torch.randn(3, 20, 8)
    with torch.inference_mode():
        with lstm_kernel("aten"):
            aten = small_lstm(x)[0]
        with lstm_kernel("onednn"):
            onednn = small_lstm(x)[0]
    torch.testing.assert_close(aten, onednn, rtol=1e-5, atol=1e-6)
    times = measure_kernels(small_lstm, x)
    assert set(times) == {"aten", "onednn"} and all(0 < t < 10 for t in times.values())


def test_the_faster_kernel_is_chosen_with_a_margin_for_the_default(tmp_path, monkeypatch, small_lstm):
    x = torch.randn(1, 200, 8)
    _fake_timings(monkeypatch, aten=0.5, onednn=1.0)
    assert LstmKernelChooser(tmp_path / "a.json").choose(small_lstm, x) == "aten"
    _fake_timings(monkeypatch, aten=1.0, onednn=0.5)
    assert LstmKernelChooser(tmp_path / "b.json").choose(small_lstm, x) == "onednn"
    _fake_timings(monkeypatch, aten=0.97, onednn=1.0)  # within the noise margin: PyTorch's default stays
    assert LstmKernelChooser(tmp_path / "c.json").choose(small_lstm, x) == "onednn"


def test_a_choice_is_measured_once_per_bucket_on_the_first_steps_and_remembered_on_disk(tmp_path, monkeypatch,
                                                                                       small_lstm):
    path = tmp_path / "cache" / "lstm_kernels.json"
    calls = _fake_timings(monkeypatch, aten=0.1, onednn=1.0)
    chooser = LstmKernelChooser(path)
    assert chooser.choose(small_lstm, torch.randn(3, 500, 8)) == "aten"
    assert calls == [(3, lstm_kernels.CALIBRATION_STEPS, 8)]  # a short slice, at the batch at hand
    assert chooser.choose(small_lstm, torch.randn(4, 500, 8)) == "aten" and len(calls) == 1  # same bucket
    chooser.choose(small_lstm, torch.randn(5, 500, 8))
    assert len(calls) == 2  # bucket 8 is measured on its own
    stored = json.loads(path.read_text())
    assert len(stored) == 2 and all("threads" in key and "batch" in key for key in stored)
    assert any(lstm_kernels.cpu_model_name() in key for key in stored)

    _fake_timings(monkeypatch, aten=1.0, onednn=0.1)
    fresh = LstmKernelChooser(path)  # a new process: the file answers, nothing is measured
    assert fresh.choose(small_lstm, torch.randn(2, 9, 8)) == "onednn"  # bucket 2: not stored yet, measured
    assert fresh.choose(small_lstm, torch.randn(4, 9, 8)) == "aten"  # bucket 4: from the file


def test_corrupt_or_unwritable_caches_only_cost_a_measurement(tmp_path, monkeypatch, small_lstm):
    calls = _fake_timings(monkeypatch, aten=0.1, onednn=1.0)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    assert LstmKernelChooser(corrupt).choose(small_lstm, torch.randn(1, 9, 8)) == "aten"
    assert json.loads(corrupt.read_text())  # rewritten whole
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    chooser = LstmKernelChooser(blocked / "lstm_kernels.json")
    assert chooser.choose(small_lstm, torch.randn(1, 9, 8)) == "aten"
    assert chooser.choose(small_lstm, torch.randn(1, 9, 8)) == "aten"  # kept in memory
    assert len(calls) == 2


def test_overrides_and_their_errors(tmp_path, monkeypatch, small_lstm):
    calls = _fake_timings(monkeypatch, aten=0.1, onednn=1.0)
    chooser = LstmKernelChooser(tmp_path / "k.json")
    x = torch.randn(1, 9, 8)
    monkeypatch.delenv(LSTM_KERNEL_ENV, raising=False)
    assert resolve_kernel("onednn", small_lstm, x, chooser) == "onednn" and not calls
    monkeypatch.setenv(LSTM_KERNEL_ENV, "ONEDNN")
    assert resolve_kernel("auto", small_lstm, x, chooser) == "onednn" and not calls
    assert resolve_kernel("aten", small_lstm, x, chooser) == "aten"  # the model attribute wins over the variable
    monkeypatch.setenv(LSTM_KERNEL_ENV, "auto")
    assert resolve_kernel("auto", small_lstm, x, chooser) == "aten" and len(calls) == 1
    monkeypatch.setenv(LSTM_KERNEL_ENV, "fast")
    with pytest.raises(ValueError, match=f"{LSTM_KERNEL_ENV}='fast'"):
        resolve_kernel("auto", small_lstm, x, chooser)
    with pytest.raises(ValueError, match="lstm_kernel must be one of"):
        resolve_kernel("cudnn", small_lstm, x, chooser)


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMANTICODEC_HF_CACHE", str(tmp_path / "mine"))
    assert lstm_kernels.cache_path() == tmp_path / "mine" / "lstm_kernels.json"
    monkeypatch.delenv("SEMANTICODEC_HF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert lstm_kernels.cache_path() == tmp_path / "xdg" / "semanticodec_hf" / "lstm_kernels.json"

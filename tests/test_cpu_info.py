"""CPU facts read from /proc/cpuinfo: the model name that keys the LSTM kernel cache and the bfloat16 check."""

import pytest

from semanticodec_hf import cpu_info

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma
"""
SAPPHIRE_RAPIDS = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f amx_tile amx_bf16\n"
COOPER_LAKE = "model name\t: Intel(R) Xeon(R) Platinum 8380H\nflags\t\t: avx2 avx512f avx512_bf16\n"


@pytest.mark.parametrize("text, model, native", [
    (ZEN3, "AMD EPYC 7B13", False),
    (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8480+", True),
    (COOPER_LAKE, "Intel(R) Xeon(R) Platinum 8380H", True),
])
def test_model_name_and_native_bfloat16_from_cpuinfo(monkeypatch, text, model, native):
    monkeypatch.setattr(cpu_info, "_cpuinfo", lambda: text)
    assert cpu_info.cpu_model_name() == model
    assert cpu_info.has_native_bfloat16() is native
    assert model in cpu_info.describe_cpu() and ("native bfloat16 yes" in cpu_info.describe_cpu()) == native


def test_without_cpuinfo_nothing_is_claimed(monkeypatch):
    monkeypatch.setattr(cpu_info, "_cpuinfo", lambda: "")
    assert cpu_info.cpu_flags() is None and cpu_info.has_native_bfloat16() is None
    assert cpu_info.cpu_model_name()  # the platform's own description, never empty
    assert "native bfloat16 unknown" in cpu_info.describe_cpu()

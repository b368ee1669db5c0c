"""Seeded outputs pinned before the application-layer refactor: codes, LM ids and waveforms of tiny models on
fixed audio must not move when code is reorganised (the parity tests bound the distance to the original; this
bounds the distance to ourselves, far tighter).

Codes and ids must be equal; waveforms equal up to 1e-6 of their peak (float32 rounding of another CPU's
kernels; on the machine that wrote the file, an Intel Xeon, they are bit-identical, and so they are on an AMD
EPYC Zen 4 since the solvers' schedule roots are rounded once: `solver_schedulers.py`). Any change of behaviour
moves a waveform by orders of magnitude more.

Regenerate only for an intended change of the numbers, and say why in the commit:

    python tests/test_pinned_outputs.py --write
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "COMPATIBLE")  # as conftest.py does, for the script modes below

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from semanticodec_hf import SemantiCodecFeatureExtractor, SemantiCodecModel, SemantiCodecProcessor

PINNED = Path(__file__).parent / "fixtures" / "pinned_outputs.npz"
WAVE_STRIDE = 4  # every 4th sample is stored: the file stays small and every window is still covered


def hostile_audio() -> tuple:
    """13 s of stereo int16 at 22.05 kHz (resampling, channel choice, integer PCM, two encoder windows)."""
    rate = 22050
    t = np.arange(int(13 * rate)) / rate
    left = 0.5 * np.sin(2 * np.pi * (150 + 90 * t) * t) + 0.2 * np.sin(2 * np.pi * 1800 * t) * (t % 1.0 < 0.4)
    right = 0.3 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, right]) * 20000
    return stereo.astype(np.int16), rate


def compute_outputs() -> dict:
    """Everything that is pinned, computed with the current code."""
    torch.set_num_threads(2)
    audio, rate = hostile_audio()
    extractor = SemantiCodecFeatureExtractor()
    inputs = extractor(audio, sampling_rate=rate, return_tensors="pt")
    out = {}
    with torch.no_grad():
        for token_rate, seed in ((100, 0), (25, 1)):
            model = SemantiCodecModel.tiny(seed=seed, token_rate=token_rate)
            model.encoder.lstm_kernel = "aten"  # not the per-machine measured choice: the kernels round differently
            encoded = model.encode(**inputs)
            key = f"tr{token_rate}"
            out[f"{key}_codes"] = encoded.audio_codes.numpy()
            processor = SemantiCodecProcessor.from_codec(model, extractor)
            out[f"{key}_ids"] = np.asarray(processor.codes_to_ids(encoded.audio_codes, encoded.audio_codes_lengths)[0])
            ddim = model.decode(encoded.audio_codes, encoded.audio_codes_lengths, seed=7, num_inference_steps=4,
                                num_samples=inputs["num_samples"])
            out[f"{key}_ddim"] = ddim.audio_values[0, 0, ::WAVE_STRIDE].numpy()
            if token_rate == 100:
                solver = model.decode(encoded.audio_codes, encoded.audio_codes_lengths, seed=7, num_inference_steps=4,
                                      sampler="dpmsolver++")
                out[f"{key}_dpmsolver"] = solver.audio_values[0, 0, ::WAVE_STRIDE].numpy()
                pieces = model.decode_stream(encoded.audio_codes[0], num_samples=int(inputs["num_samples"][0]),
                                             windows_per_chunk=1, num_inference_steps=4, seed=7)
                out[f"{key}_stream"] = torch.cat(list(pieces))[::WAVE_STRIDE].numpy()
    return out


@pytest.fixture(scope="module")
def current() -> dict:
    return compute_outputs()


@pytest.fixture(scope="module")
def pinned() -> dict:
    return dict(np.load(PINNED))


def test_the_pinned_set_is_complete_and_carries_signal(pinned, current):
    assert sorted(pinned) == sorted(current)
    for token_rate in (100, 25):
        codes = pinned[f"tr{token_rate}_codes"]
        assert len(np.unique(codes[0, 0])) > 5 and len(np.unique(codes[0, 1])) > 5  # codes vary with the audio
    for key in ("tr100_ddim", "tr100_dpmsolver", "tr100_stream", "tr25_ddim"):
        assert np.abs(pinned[key]).max() > 1e-2  # audible, so the equality below means something
    assert not np.allclose(pinned["tr100_ddim"][: pinned["tr25_ddim"].size], pinned["tr25_ddim"], atol=1e-3)


@pytest.mark.parametrize("key", ["tr100_codes", "tr100_ids", "tr25_codes", "tr25_ids"])
def test_codes_and_ids_are_unchanged(pinned, current, key):
    assert current[key].shape == pinned[key].shape
    assert np.array_equal(current[key], pinned[key])


@pytest.mark.parametrize("key", ["tr100_ddim", "tr100_dpmsolver", "tr100_stream", "tr25_ddim"])
def test_seeded_waveforms_are_unchanged(pinned, current, key):
    assert current[key].shape == pinned[key].shape
    peak = float(np.abs(pinned[key]).max())
    np.testing.assert_allclose(current[key], pinned[key], rtol=0, atol=1e-6 * peak)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        PINNED.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(PINNED, **compute_outputs())
        print(f"wrote {PINNED} ({PINNED.stat().st_size / 1e3:.0f} kB)")
    elif sys.argv[1:] == ["--compare-exactly"]:  # the refactor's own check on the machine that wrote the file
        got, want = compute_outputs(), dict(np.load(PINNED))
        for name in sorted(want):
            diff = float(np.abs(got[name].astype(np.float64) - want[name]).max()) if got[name].shape == want[
                name].shape else float("inf")
            print(f"{name:18s} max |diff| = {diff:.3g}{'' if diff == 0 else '   <-- not bit-identical'}")
    else:
        sys.exit("usage: python tests/test_pinned_outputs.py --write | --compare-exactly")

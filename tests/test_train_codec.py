"""Codec training: the VAE-domain mel, the EMA VQ, and the recipe (loss falls, kill-and-resume is exact)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file

from semanticodec_hf.codec_training import EMAVectorQuantizerTrainer
from semanticodec_hf.vae_mel import vae_log_mel, vae_mel_filters

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def test_vae_mel_geometry_floor_and_pitch():
    t = torch.arange(163840) / 16000
    mel = vae_log_mel(0.5 * torch.sin(2 * math.pi * 1000 * t))
    assert mel.shape == (1025, 64)  # 10.24 s -> 1025 frames (models use the first 1024)
    assert torch.equal(vae_log_mel(torch.zeros(16000)), torch.full((101, 64), math.log(1e-5)))
    # the 1 kHz tone lands in the filter whose peak is nearest 1 kHz
    peak_bins = vae_mel_filters().argmax(dim=0) * 16000 / 1024
    assert int(mel[500].argmax()) == int((peak_bins - 1000).abs().argmin())
    # out-of-range samples are clipped to [-1, 1] first, as in the original
    assert torch.equal(vae_log_mel(3 * torch.sin(2 * math.pi * 440 * t[:16000])),
                       vae_log_mel(torch.sin(2 * math.pi * 440 * t[:16000]).mul(3).clamp(-1, 1)))


def test_vae_mel_equals_a_direct_numpy_stft():
    """Independent check of the STFT half: framing, periodic Hann, reflect padding, magnitude, natural log."""
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(4000)).astype(np.float32)  # inside [-1, 1]: no clipping
    padded = np.pad(wave, 512, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)  # periodic Hann
    frames = np.stack([padded[i * 160:i * 160 + 1024] * window for i in range(4000 // 160 + 1)])
    magnitude = np.abs(np.fft.rfft(frames, axis=-1))
    expected = np.log(np.maximum(magnitude @ vae_mel_filters().numpy().astype(np.float64), 1e-5))
    np.testing.assert_allclose(vae_log_mel(torch.from_numpy(wave)).numpy(), expected, atol=2e-4)


def test_ema_vq_is_straight_through_and_moves_codes_to_their_vectors():
    quantizer = torch.nn.Module()
    quantizer.register_buffer("codebook", torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    vq = EMAVectorQuantizerTrainer(quantizer, decay=0.5)
    residual = torch.tensor([[[1.0, 1.0], [9.0, 9.0], [1.0, 1.0]]], requires_grad=True)
    valid = torch.tensor([[True, True, False]])
    quantized, ids, commitment = vq(residual, valid)
    assert ids.tolist() == [[0, 1, 0]]
    torch.testing.assert_close(quantized, torch.tensor([[[0.0, 0.0], [10.0, 10.0], [0.0, 0.0]]]))
    assert float(commitment.detach()) == pytest.approx(1.0)  # mean squared distance of the two valid rows
    quantized.sum().backward()
    torch.testing.assert_close(residual.grad, torch.ones_like(residual))  # straight-through
    # EMA: codes moved half-way (decay 0.5) towards their (valid) vectors; the invalid row did not count
    assert float(quantizer.codebook[0, 0]) == pytest.approx(0.5, abs=1e-4)
    assert float(quantizer.codebook[1, 0]) == pytest.approx(9.5, abs=1e-4)
    vq.eval()
    vq(residual.detach(), valid)
    assert float(quantizer.codebook[0, 0]) == pytest.approx(0.5, abs=1e-4)  # no update outside training


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codec_corpus")
    rng = np.random.default_rng(0)
    for i in range(4):
        t = np.arange(16000 * (3 + i)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(str(folder / f"clip{i}.wav"), wave.astype(np.float32), 16000)
    return folder


def _recipe(tmp_path, corpus):
    recipe = yaml.safe_load((REPO / "recipes" / "codec_tiny_cpu.yaml").read_text())
    recipe["data"]["audio_dir"] = str(corpus)
    recipe["train"].update(max_steps=8, eval_every=4, save_every=4, log_every=1, learning_rate=2e-3, log_with=[])
    path = tmp_path / "codec.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_codec_training_loss_falls_and_resume_is_exact(tmp_path, corpus):
    sys.path.insert(0, str(REPO / "recipes"))
    try:
        import train_codec
    finally:
        sys.path.remove(str(REPO / "recipes"))
    config = _recipe(tmp_path, corpus)
    summary = train_codec.main(["--config", str(config), "--output-dir", str(tmp_path / "straight")])
    assert summary["steps"] == 8
    metrics = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    validation = {m["step"]: m["val/diffusion_loss"] for m in metrics if "val/diffusion_loss" in m}
    assert sorted(validation) == [0, 4, 8]
    assert validation[8] < validation[0] - 0.02, validation  # same clip, same noise: the model learnt
    # a process killed after step 6 (newest checkpoint: step 4) and the same command run again
    crashed = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "train_codec.py"), "--config", str(config), "--output-dir",
         str(tmp_path / "killed"), "--crash-after-step", "6"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
    )
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    resumed = train_codec.main(["--config", str(config), "--output-dir", str(tmp_path / "killed")])
    assert resumed["resumed_from"] == 4
    for folder in ("final", "final_ema"):
        straight = load_file(str(tmp_path / "straight" / folder / "model.safetensors"))
        again = load_file(str(tmp_path / "killed" / folder / "model.safetensors"))
        assert straight.keys() == again.keys()
        different = [name for name in straight if not torch.equal(straight[name], again[name])]
        assert not different, different[:5]
    # the trained codec loads and runs as any converted one
    from semanticodec_hf import SemantiCodecModel

    model = SemantiCodecModel.from_pretrained(tmp_path / "straight" / "final")
    codes = model.encode(torch.zeros(1, 1024, 128)).audio_codes
    assert codes.shape[:2] == (1, 2)


def test_validation_logs_mel_images_to_tensorboard(tmp_path, corpus):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sys.path.insert(0, str(REPO / "recipes"))
    try:
        import train_codec
    finally:
        sys.path.remove(str(REPO / "recipes"))
    config = _recipe(tmp_path, corpus)
    train_codec.main(["--config", str(config), "--output-dir", str(tmp_path / "tb"), "--set", "train.max_steps=1",
                      "train.log_with=[tensorboard]"])
    tags = set()
    for events in (tmp_path / "tb" / "logs").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["images"]) | set(accumulator.Tags()["scalars"])
    assert {"val/mel_clip0", "val/mel_l1", "val/diffusion_loss", "train/loss"} <= tags

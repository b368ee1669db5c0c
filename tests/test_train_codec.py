"""Codec training: the VAE-domain mel, the EMA VQ, and the recipe (loss falls, kill-and-resume is exact)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file

from semanticodec_hf.codec_training import EMAVectorQuantizerTrainer
from semanticodec_hf.vae_mel import vae_log_mel, vae_mel_filters
from recipe_modules import import_recipe, run_killed_after_step

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


def _slaney_mel(hz):
    """Slaney's Auditory Toolbox mel scale: linear (200/3 Hz per mel) to 1 kHz, then logarithmic (27 mels per
    factor 6.4)."""
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(hz < 1000, hz * 3 / 200, 15 + 27 * np.log(np.maximum(hz, 1e-10) / 1000) / np.log(6.4))


def _slaney_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel < 15, mel * 200 / 3, 1000 * np.exp((mel - 15) * np.log(6.4) / 27))


def test_vae_mel_filters_equal_a_from_scratch_slaney_filterbank():
    """Independent check of the filter half (spec 12: librosa's defaults): 66 points evenly spaced on the Slaney
    mel scale from 0 to 8 kHz, triangles over the 513 FFT bin frequencies, each scaled to unit area
    (2 / bandwidth in Hz, Slaney normalisation)."""
    bins = np.arange(513) * 16000 / 1024
    edges = _slaney_hz(np.linspace(_slaney_mel(0.0), _slaney_mel(8000.0), 64 + 2))
    assert edges[0] == 0.0 and edges[-1] == pytest.approx(8000.0)
    expected = np.zeros((513, 64))
    for m in range(64):
        rising = (bins - edges[m]) / (edges[m + 1] - edges[m])
        falling = (edges[m + 2] - bins) / (edges[m + 2] - edges[m + 1])
        expected[:, m] = np.maximum(0.0, np.minimum(rising, falling)) * 2.0 / (edges[m + 2] - edges[m])
    filters = vae_mel_filters().numpy().astype(np.float64)
    assert filters.shape == (513, 64)
    np.testing.assert_allclose(filters, expected, rtol=1e-5, atol=1e-9)
    # the first filter rises from 0 Hz and the last ends at 8 kHz: nothing above 8 kHz is kept
    assert filters[0, 0] == 0.0 and not filters[bins >= 8000].any()


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


def _train_codec():
    return import_recipe("train_codec")


def _recipe(tmp_path, corpus, **train):
    recipe = yaml.safe_load((REPO / "recipes" / "codec_tiny_cpu.yaml").read_text())
    recipe["data"]["audio_dir"] = str(corpus)
    recipe["train"].update(max_steps=8, eval_every=4, save_every=4, log_every=1, learning_rate=2e-3, log_with=[])
    recipe["train"].update(train)
    path = tmp_path / "codec.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def steady_corpus(tmp_path_factory):
    """Four 4 s takes of the same two-tone sound (other phases and noise): the held-out clip is like the others."""
    folder = tmp_path_factory.mktemp("steady_corpus")
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 4) / 16000
    for i in range(4):
        wave = 0.3 * np.sin(2 * np.pi * 300 * t + i) + 0.2 * np.sin(2 * np.pi * 700 * t) \
            + 0.05 * rng.standard_normal(t.size)
        sf.write(str(folder / f"take{i}.wav"), wave.astype(np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def learnable_codec(tmp_path_factory, steady_corpus):
    """The tiny codec as a converted folder, with the two properties of a trained first stage that make latents
    learnable: a nearly deterministic VAE posterior (logvar -30 through `quant_conv`: std 3e-7, where the random
    tiny VAE's posterior noise of std ~1 swamps its means of std ~0.02) and `scale_factor` = 1 / std of the
    corpus' latents (the original's `scale_by_std`), so latents have unit variance as in the real codec."""
    from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

    tokenizer = SemantiCodecAudioTokenizer.tiny(seed=0)
    codec, channels = tokenizer.model, tokenizer.model.config.latent_channels
    source = _train_codec().SegmentSource(sorted(str(p) for p in steady_corpus.glob("*.wav")),
                                          tokenizer.feature_extractor)
    _, mels = source.batch(list(range(len(source))), [0.0] * len(source))
    with torch.no_grad():
        codec.decoder.vae.quant_conv.weight[channels:] = 0.0
        codec.decoder.vae.quant_conv.bias[channels:] = -30.0
        posterior = codec.decoder.vae.encode(mels.unsqueeze(1)).latent_dist
        assert float(posterior.std.max()) < 1e-6
        scale = 1.0 / float(posterior.mean.flatten().std())
    codec.decoder.scale_factor.fill_(scale)
    codec.config.scale_factor = scale
    folder = tmp_path_factory.mktemp("learnable_codec")
    codec.save_pretrained(folder)
    tokenizer.feature_extractor.save_pretrained(folder)
    return folder


def _validation_loss(train_codec, codec_folder, corpus, seed, zero_predictor=False):
    """The recipe's validation diffusion loss recomputed from a saved codec on the recipe's validation clip; with
    `zero_predictor` the UNet's output is replaced by zeros (same clip, latents, noise and timesteps)."""
    from semanticodec_hf import SemantiCodecFeatureExtractor, SemantiCodecModel
    from semanticodec_hf.codec_training import SemantiCodecTrainingModule

    codec = SemantiCodecModel.from_pretrained(codec_folder)
    if zero_predictor:
        codec.decoder.predict_v = lambda latents, *args, **kwargs: torch.zeros_like(latents)
    source = train_codec.SegmentSource(sorted(str(p) for p in corpus.glob("*.wav")),
                                       SemantiCodecFeatureExtractor.from_pretrained(codec_folder))
    val_clips, _ = train_codec.split_clips(len(source), 1, seed)
    windows, mels = source.batch(val_clips, [0.0])
    module = SemantiCodecTrainingModule(codec).eval()
    return train_codec.validation_diffusion_loss(module, windows, mels, seed)


def test_codec_training_learns_and_resume_is_exact(tmp_path, steady_corpus, learnable_codec):
    train_codec = _train_codec()
    config = _recipe(tmp_path, steady_corpus, max_steps=10, eval_every=10, save_every=5)
    recipe = yaml.safe_load(config.read_text())
    recipe["model"] = {"init": str(learnable_codec)}
    config.write_text(yaml.safe_dump(recipe))
    summary = train_codec.main(["--config", str(config), "--output-dir", str(tmp_path / "straight")])
    assert summary["steps"] == 10
    metrics = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    validation = {m["step"]: m["val/diffusion_loss"] for m in metrics if "val/diffusion_loss" in m}
    assert sorted(validation) == [0, 10]
    # Learning, not noise: below what predicting v = 0 scores on the same clip, latents, noise and timesteps
    # (~1 here; with unit-variance latents no guess proportional to x_t does better: E[v x_t] = a s (1 - var) = 0).
    baseline = _validation_loss(train_codec, learnable_codec, steady_corpus, seed=0, zero_predictor=True)
    # (the recomputation matches what the run logged: the baseline is on the same inputs)
    assert validation[10] == pytest.approx(
        _validation_loss(train_codec, tmp_path / "straight" / "final", steady_corpus, 0), rel=1e-5)
    assert validation[0] > 0.95 * baseline  # the random UNet knows nothing
    assert validation[10] < 0.8 * baseline, (validation, baseline)  # measured 0.63-0.66 x over seeds 0-3
    # a process killed after step 6 (newest checkpoint: step 5) and the same command run again
    crashed = run_killed_after_step("train_codec", 6,
                                    ["--config", str(config), "--output-dir", str(tmp_path / "killed")], tmp_path)
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    resumed = train_codec.main(["--config", str(config), "--output-dir", str(tmp_path / "killed")])
    assert resumed["resumed_from"] == 5
    for folder in ("final", "final_ema"):
        straight = load_file(str(tmp_path / "straight" / folder / "model.safetensors"))
        again = load_file(str(tmp_path / "killed" / folder / "model.safetensors"))
        assert straight.keys() == again.keys()
        different = [name for name in straight if not torch.equal(straight[name], again[name])]
        assert not different, different[:5]
    ema = load_file(str(tmp_path / "straight" / "final_ema" / "model.safetensors"))
    live = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    assert any(not torch.equal(ema[n], live[n]) for n in live if n.startswith("decoder.unet."))  # a real EMA
    # the trained codec loads and runs as any converted one
    from semanticodec_hf import SemantiCodecModel

    model = SemantiCodecModel.from_pretrained(tmp_path / "straight" / "final")
    codes = model.encode(torch.zeros(1, 1024, 128)).audio_codes
    assert codes.shape[:2] == (1, 2)


def test_validation_logs_mel_images_to_tensorboard(tmp_path, corpus):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_codec = _train_codec()
    config = _recipe(tmp_path, corpus)
    train_codec.main(["--config", str(config), "--output-dir", str(tmp_path / "tb"), "--set", "train.max_steps=1",
                      "train.log_with=[tensorboard]"])
    tags = set()
    for events in (tmp_path / "tb" / "logs").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["images"]) | set(accumulator.Tags()["scalars"])
    assert {"val/mel_clip0", "val/mel_l1", "val/diffusion_loss", "train/loss"} <= tags
    # the metrics module's scores of the validation reconstructions, in tensorboard and metrics.jsonl
    scores = {"val/mel_distance", "val/stft_distance", "val/si_sdr"}
    assert scores <= tags
    logged = [json.loads(line) for line in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    for row in (r for r in logged if "val/mel_l1" in r):
        assert scores <= set(row) and all(math.isfinite(row[name]) for name in scores)
        assert row["val/mel_distance"] > 0 and row["val/stft_distance"] > 0  # a random codec is no copy


def test_unet_ema_stays_on_the_training_device_also_after_a_resume():
    """The GPU crash, reproduced on the meta device: diffusers' EMAModel keeps its copies where the parameters
    were built (CPU), and accelerate's load_state restores them on the CPU; PlacedEMAModel keeps them placed."""
    from diffusers.training_utils import EMAModel

    from semanticodec_hf.codec_training import PlacedEMAModel

    built_on_cpu = torch.nn.Linear(3, 2)
    elsewhere = torch.nn.Linear(3, 2).to("meta")  # stands in for the prepared model on a GPU
    with pytest.raises(RuntimeError, match="device"):
        EMAModel(built_on_cpu.parameters(), decay=0.5).step(elsewhere.parameters())  # the bug, without the fix
    ema = PlacedEMAModel(built_on_cpu.parameters(), "meta", decay=0.5)
    assert {p.device.type for p in ema.shadow_params} == {"meta"}
    ema.step(elsewhere.parameters())
    saved = PlacedEMAModel(torch.nn.Linear(3, 2).parameters(), "cpu", decay=0.5)
    saved.step(torch.nn.Linear(3, 2).parameters())
    ema.load_state_dict(saved.state_dict())  # what accelerate's load_state passes: CPU tensors
    assert {p.device.type for p in ema.shadow_params} == {"meta"} and ema.optimization_step == 1
    ema.step(elsewhere.parameters())
    # on one device the state round-trips exactly (what exact resume relies on)
    again = PlacedEMAModel(torch.nn.Linear(3, 2).parameters(), "cpu", decay=0.5)
    again.load_state_dict(saved.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.shadow_params, saved.shadow_params))


def _write_recipe(tmp_path, model=None, data=None):
    recipe = {"model": model if model is not None else {"init": "tiny"},
              "data": data if data is not None else {"audio_dir": str(tmp_path)}, "train": {"max_steps": 1}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_forgotten_or_misplaced_model_settings_are_refused(tmp_path):
    load_recipe = _train_codec().load_recipe
    with pytest.raises(ValueError, match="model.init is missing.*'tiny'"):
        load_recipe(_write_recipe(tmp_path, model={}), [])
    with pytest.raises(ValueError, match="model.init is missing"):
        load_recipe(_write_recipe(tmp_path, model={"token_rate": 50}), [])
    with pytest.raises(ValueError, match="data.audio_dir is missing"):
        load_recipe(_write_recipe(tmp_path, data={}), [])
    with pytest.raises(ValueError, match="from_scratch applies to a converted codec"):
        load_recipe(_write_recipe(tmp_path, model={"init": "tiny", "from_scratch": True}), [])
    with pytest.raises(ValueError, match="model.token_rate only configures init: tiny"):
        load_recipe(_write_recipe(tmp_path, model={"init": str(tmp_path), "token_rate": 50}), [])
    recipe = load_recipe(_write_recipe(tmp_path, model={"init": "tiny", "token_rate": 50}), [])
    assert recipe.model.init == "tiny" and recipe.model.token_rate == 50
    # the shipped configs say what they train
    for name in ("codec_tiny_cpu.yaml", "codec_full.yaml"):
        assert load_recipe(str(REPO / "recipes" / name), []).model.init


def test_from_scratch_reinitialises_exactly_the_trained_parts(tmp_path):
    """model.from_scratch: fresh LSTM, output projection, acoustic codebook and UNet; AudioMAE, semantic codebook,
    VAE and vocoder exactly as loaded."""
    from semanticodec_hf import SemantiCodecModel
    from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

    SemantiCodecAudioTokenizer.tiny(seed=0).save_pretrained(tmp_path / "converted")
    train_codec = _train_codec()
    section = train_codec.CodecModelSection(init=str(tmp_path / "converted"), from_scratch=True)
    rng_before = torch.random.get_rng_state()
    codec, _ = train_codec.build_codec(section, seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # seeded on its own generator state
    loaded = SemantiCodecModel.from_pretrained(tmp_path / "converted").state_dict()
    rebuilt = codec.state_dict()
    assert rebuilt.keys() == loaded.keys()
    trained = ("encoder.lstm.", "encoder.output_linear.", "quantizer.acoustic.codebook", "decoder.unet.")
    changed = {name for name in loaded if not torch.equal(loaded[name], rebuilt[name])}
    frozen = [name for name in loaded if not name.startswith(trained)]
    assert frozen and not changed & set(frozen)  # every frozen tensor as loaded
    weights = [name for name in loaded if name.startswith(trained) and loaded[name].ndim >= 2]
    assert {"quantizer.acoustic.codebook", "decoder.unet.conv_out.weight"} <= set(weights)
    assert set(weights) <= changed  # every trained weight matrix / kernel / codebook re-initialised
    assert any(name.startswith("encoder.audiomae.") for name in frozen)
    for part in ("quantizer.semantic.", "decoder.vae.", "decoder.vocoder."):
        assert any(name.startswith(part) for name in frozen), part
    # the initialisations of the original: torch's LSTM default U(-1/sqrt(H), 1/sqrt(H)), a kaiming-uniform
    # codebook over its [1, V, D] layout, zero output convolutions in the UNet (LDM's zero_module)
    hidden = codec.encoder.lstm.hidden_size
    lstm = rebuilt["encoder.lstm.weight_ih_l0"]
    assert float(lstm.abs().max()) <= 1 / math.sqrt(hidden) and float(lstm.abs().max()) > 0.9 / math.sqrt(hidden)
    codebook = rebuilt["quantizer.acoustic.codebook"]
    bound = math.sqrt(6.0 / codebook.numel())  # gain sqrt(2) * sqrt(3 / fan_in), fan_in = V * D
    assert 0.9 * bound < float(codebook.abs().max()) <= bound
    assert not rebuilt["decoder.unet.conv_out.weight"].any()
    assert not rebuilt["decoder.unet.down_blocks.0.resnets.0.conv2.weight"].any()
    # the same seed gives the same start
    again, _ = train_codec.build_codec(section, seed=0)
    assert all(torch.equal(value, again.state_dict()[name]) for name, value in rebuilt.items())


def test_short_and_empty_clips_do_not_abort_a_run(tmp_path, capsys):
    """A clip under one AudioMAE patch (0.16 s) is zero-padded like every segment; an empty file is skipped; both
    are named in a warning."""
    from semanticodec_hf import SemantiCodecFeatureExtractor
    from semanticodec_hf.vae_mel import vae_log_mel

    rng = np.random.default_rng(0)
    short = (0.1 * rng.standard_normal(800)).astype(np.float32)  # 0.05 s
    sf.write(str(tmp_path / "short.wav"), short, 16000)
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, dtype=np.float32), 16000)
    sf.write(str(tmp_path / "long.wav"), (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    train_codec = _train_codec()
    extractor = SemantiCodecFeatureExtractor()
    paths = [str(tmp_path / f"{name}.wav") for name in ("empty", "long", "short")]
    source = train_codec.SegmentSource(paths, extractor)
    assert len(source) == 2 and source.paths == paths[1:]
    assert source.skipped == paths[:1] and source.padded == paths[2:]
    train_codec.report_clip_problems(source)
    printed = capsys.readouterr().err
    assert f"1 audio file(s) skipped (empty, nothing to learn from): {paths[0]}" in printed
    assert f"1 audio file(s) zero-padded (shorter than 0.16 s): {paths[2]}" in printed
    segment = source.segment(1, 0.5)
    expected = torch.zeros(train_codec.SEGMENT_SAMPLES)
    expected[:800] = torch.from_numpy(sf.read(str(tmp_path / "short.wav"), dtype="float32")[0])  # as stored
    torch.testing.assert_close(segment.samples, expected)
    assert segment.valid == 800  # the clip's own samples, not the padding
    torch.testing.assert_close(segment.window, extractor(expected, sampling_rate=16000)["input_features"][0, :1024])
    torch.testing.assert_close(segment.mel, vae_log_mel(expected)[:1024])
    # unreadable audio still stops the run, naming the file
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match="broken.wav"):
        train_codec.SegmentSource([str(tmp_path / "broken.wav")], extractor)


def test_validation_scores_leave_out_what_a_metric_cannot_score_but_show_divergence():
    train_codec = _train_codec()
    rng = np.random.default_rng(0)
    samples = torch.from_numpy(0.1 * rng.standard_normal(16000))
    empty = torch.zeros(1024, 128), torch.zeros(1024, 64)
    speech = train_codec.Segment(*empty, samples, 16000)
    silent = train_codec.Segment(*empty, torch.zeros(16000, dtype=torch.float64), 16000)
    estimate = samples + 0.01 * torch.from_numpy(rng.standard_normal(16000))
    scores = train_codec.reconstruction_scores([speech, silent], torch.stack([estimate, estimate]))
    alone = train_codec.reconstruction_scores([speech], estimate[None])
    assert scores["val/si_sdr"] == pytest.approx(alone["val/si_sdr"])  # the silent reference is left out of SI-SDR
    assert math.isfinite(scores["val/mel_distance"]) and scores["val/mel_distance"] != alone["val/mel_distance"]
    diverged = train_codec.reconstruction_scores([speech], torch.full((1, 16000), float("nan")))
    assert all(math.isnan(value) for value in diverged.values())


def test_validation_loss_equals_the_training_module_at_each_fixed_timestep(learnable_codec, steady_corpus):
    """Validation computes conditioning, latents and noise once for its four timesteps: it must score exactly
    what the training module's own forward does with the same seed at each of them."""
    from semanticodec_hf import SemantiCodecFeatureExtractor, SemantiCodecModel
    from semanticodec_hf.codec_training import SemantiCodecTrainingModule

    train_codec = _train_codec()
    source = train_codec.SegmentSource(sorted(str(p) for p in steady_corpus.glob("*.wav")),
                                       SemantiCodecFeatureExtractor.from_pretrained(learnable_codec))
    windows, mels = source.batch([0, 1], [0.0, 0.0])
    module = SemantiCodecTrainingModule(SemantiCodecModel.from_pretrained(learnable_codec)).eval()
    with torch.no_grad():
        shared = train_codec.validation_diffusion_loss(module, windows, mels, seed=3)
        each = [float(module(windows, mels, torch.Generator().manual_seed(3 + 12345),
                             torch.full((windows.shape[0],), t, dtype=torch.long)).diffusion)
                for t in train_codec.VALIDATION_TIMESTEPS]
    assert shared == pytest.approx(float(np.mean(each)), rel=1e-6)
    assert len(set(each)) == len(each)  # the timesteps really differ (the check is not vacuous)

"""SemantiCodecModel as a transformers model: sizes of the 12 variants, Auto classes, save/load,
batching that never changes an item's result, and clear errors on bad codes."""

import gzip
import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioTokenization

import semanticodec_hf  # noqa: F401  (registers the Auto classes)
from semanticodec_hf import (
    PUBLISHED_SEMANTIC_VOCAB_SIZES,
    PUBLISHED_TOKEN_RATES,
    SemantiCodecConfig,
    SemantiCodecFeatureExtractor,
    SemantiCodecModel,
)
from parity_weights import FIXTURES
from semanticodec_hf.conditioning import build_conditioning
from semanticodec_hf.long_audio import DEFAULT_OVERLAP_SAMPLES, linear_ramp, reference_output_samples, split_into_windows


def _used_original_parameters(token_rate: int) -> int:
    """Parameters of the official checkpoints that inference uses: everything but the unused MAE decoder
    (`audiomae.model.decoder_*`, `mask_token`) and the frozen, unused `logvar`."""
    total = 0
    for part in ("encoder", "decoder"):
        with gzip.open(FIXTURES / "manifests" / f"{part}_tokenrate_{token_rate}.json.gz", "rt") as f:
            for entry in json.load(f):
                key = entry["key"]
                unused = key.startswith(("audiomae.model.decoder", "audiomae.model.mask_token")) or key == "logvar"
                if entry["kind"] == "parameter" and not unused:
                    total += math.prod(entry["shape"])
    return total


@pytest.mark.parametrize("token_rate", PUBLISHED_TOKEN_RATES)
@pytest.mark.parametrize("vocab", PUBLISHED_SEMANTIC_VOCAB_SIZES)
def test_every_variant_has_the_published_size(token_rate, vocab):
    config = SemantiCodecConfig.from_variant(token_rate, vocab)
    with torch.device("meta"):
        model = SemantiCodecModel(config)
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters == _used_original_parameters(token_rate)
    assert model.quantizer.semantic.centroids.shape == (vocab, config.feature_dim)
    assert model.quantizer.acoustic.codebook.shape == (8192, config.feature_dim)


# ------------------------------------------------------------------------------------------ tiny model
def _audio(seconds: float, seed: int, sampling_rate: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    tone = 0.3 * np.sin(2 * np.pi * (200 + 300 * seed) * t * (1 + 0.2 * t))
    return (tone + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def _rms(wave: torch.Tensor) -> float:
    return float(wave.pow(2).mean().sqrt())


def _peak_relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_tiny_model_carries_signal(tiny):
    """Every test that compares the tiny model's codes or audio relies on these: ids that vary with the input,
    audible output (a 0.1-amplitude input decodes well above 1e-3 RMS, PCM_16 is not all zeros), and output
    that depends on the codes and on the seed. Seeded weights, global RNG left alone."""
    model, feature_extractor = tiny, SemantiCodecFeatureExtractor()
    t = np.arange(48000) / 16000
    quiet = (0.1 * np.sin(2 * np.pi * 440 * t * (1 + 0.3 * t))).astype(np.float32)
    codes = model.encode(**feature_extractor(quiet, sampling_rate=16000)).audio_codes
    other = model.encode(**feature_extractor(_audio(3.0, 2), sampling_rate=16000)).audio_codes
    assert len(torch.unique(codes[0, 0])) > 3 and len(torch.unique(codes[0, 1])) > 3
    assert (codes != other).float().mean() > 0.5, "different audio must give mostly different ids"

    wave = model.decode(codes, seed=0, num_inference_steps=2).audio_values[0, 0]
    assert _rms(wave) > 1e-2 and 0.05 < float(wave.abs().max()) < 1.0
    assert (np.round(wave.numpy() * 32767) != 0).mean() > 0.9, "PCM_16 of the output must not be silence"
    other_seed = model.decode(codes, seed=1, num_inference_steps=2).audio_values[0, 0]
    assert _peak_relative_difference(other_seed, wave) > 0.1
    other_codes = model.decode(other, seed=0, num_inference_steps=2).audio_values[0, 0]
    assert _peak_relative_difference(other_codes, wave) > 0.1
    zeros = model.decode(torch.zeros_like(codes), seed=0, num_inference_steps=2).audio_values[0, 0]
    assert _peak_relative_difference(zeros, wave) > 0.1

    state = torch.random.get_rng_state()
    again, reseeded = SemantiCodecModel.tiny(seed=0), SemantiCodecModel.tiny(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    assert not torch.equal(reseeded.quantizer.semantic.centroids, model.quantizer.semantic.centroids)


def test_random_with_signal_is_the_tiny_recipe_for_any_config():
    """The public constructor the full-size benchmarks use: spread codebooks (a plain model's are all zero, so
    every id would be 0), seeded, and `tiny` is it on the tiny config."""
    config = SemantiCodecConfig.tiny(token_rate=25, semantic_vocab_size=32)
    plain, spread = SemantiCodecModel(config), SemantiCodecModel.random_with_signal(config, seed=3)
    assert not plain.quantizer.semantic.centroids.any() and not plain.quantizer.acoustic.codebook.any()
    assert spread.quantizer.semantic.centroids.std() > 0.1 and not spread.training
    tiny = SemantiCodecModel.tiny(seed=3, token_rate=25, semantic_vocab_size=32)
    for key, value in spread.state_dict().items():
        assert torch.equal(tiny.state_dict()[key], value), key


def test_auto_classes_resolve_and_round_trip(tiny, tmp_path):
    model, feature_extractor = tiny, SemantiCodecFeatureExtractor()
    model.save_pretrained(tmp_path)
    feature_extractor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), SemantiCodecConfig)
    assert isinstance(AutoFeatureExtractor.from_pretrained(tmp_path), SemantiCodecFeatureExtractor)
    for auto in (AutoModel, AutoModelForAudioTokenization):
        loaded = auto.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, SemantiCodecModel)
        original_state, loaded_state = model.state_dict(), loaded.state_dict()
        assert original_state.keys() == loaded_state.keys()
        for key, value in original_state.items():
            assert torch.equal(value, loaded_state[key]), key
        # values computed from the config (not saved) must be rebuilt, not left empty
        for (name, a), (_, b) in zip(model.named_buffers(), loaded.named_buffers()):
            assert torch.equal(a, b), name
    inputs = feature_extractor(_audio(3.0, 1), sampling_rate=16000)
    assert torch.equal(model.encode(**inputs).audio_codes, loaded.encode(**inputs).audio_codes)


def test_batch_of_different_lengths_equals_each_item_alone(tiny):
    model, feature_extractor = tiny, SemantiCodecFeatureExtractor()
    clips = [_audio(3.0, 1), _audio(12.05, 2), _audio(0.5, 3)]
    batch = model.encode(**feature_extractor(clips, sampling_rate=16000))
    assert len(torch.unique(batch.audio_codes[1, 0, : batch.audio_codes_lengths[1]])) > 3, "ids must vary"
    for index, clip in enumerate(clips):
        alone = model.encode(**feature_extractor(clip, sampling_rate=16000))
        n = int(alone.audio_codes_lengths[0])
        assert int(batch.audio_codes_lengths[index]) == n
        assert torch.equal(batch.audio_codes[index, :, :n], alone.audio_codes[0])
        assert batch.audio_codes_mask[index].sum() == n
        assert (batch.audio_codes[index, :, n:] == 0).all()


def test_both_cpu_lstm_kernels_give_the_same_ids_and_restore_the_global_switch(tiny, monkeypatch):
    """The encoder's LSTM runs on oneDNN's fused kernel or ATen's recurrence (whichever `lstm_kernels` measures
    faster): the ids must not depend on it, and `torch.backends.mkldnn.enabled` is left as the caller had it,
    even when the LSTM raises."""
    model, feature_extractor = tiny, SemantiCodecFeatureExtractor()
    inputs = feature_extractor([_audio(12.05, 4), _audio(3.0, 5)], sampling_rate=16000)
    assert torch.backends.mkldnn.enabled
    ids = {}
    for kernel in ("aten", "onednn", "auto"):
        model.encoder.lstm_kernel = kernel
        ids[kernel] = model.encode(**inputs).audio_codes
        assert torch.backends.mkldnn.enabled
    assert len(torch.unique(ids["aten"][0, 1])) > 3, "ids must vary for the comparison to mean anything"
    assert torch.equal(ids["aten"], ids["onednn"]) and torch.equal(ids["aten"], ids["auto"])

    model.encoder.lstm_kernel = "aten"
    seen = []

    def failing_lstm(*args, **kwargs):
        seen.append(torch.backends.mkldnn.enabled)
        raise RuntimeError("boom")

    monkeypatch.setattr(model.encoder.lstm, "forward", failing_lstm)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            model.encode(**inputs)
    finally:
        model.encoder.lstm_kernel = "auto"
    assert seen == [False] and torch.backends.mkldnn.enabled


def test_frame_counts_follow_the_original_token_budget(tiny):
    model, feature_extractor = tiny, SemantiCodecFeatureExtractor()
    # seconds -> frames at 100 tokens/s (spec table: 1.00 s -> 57 frames, 10.24 s -> 520, 12.05 s -> 608)
    for seconds, frames in [(1.0, 57), (10.24, 520), (12.05, 608)]:
        out = model.encode(**feature_extractor(np.full(int(round(seconds * 16000)), 0.1, np.float32) +
                                               _audio(seconds, 0)[: int(round(seconds * 16000))],
                                               sampling_rate=16000))
        assert out.audio_codes.shape == (1, 2, frames)


def test_decode_batch_equals_items_alone_with_seeds(tiny):
    model = tiny
    generator = torch.Generator().manual_seed(5)
    codes = torch.stack([
        torch.randint(0, 64, (700,), generator=generator),
        torch.randint(0, 128, (700,), generator=generator),
    ])[None].repeat(2, 1, 1)
    lengths = torch.tensor([700, 120])
    kwargs = dict(num_inference_steps=2)
    batch = model.decode(codes, audio_codes_lengths=lengths, seed=[11, 12], **kwargs)
    first = model.decode(codes[:1], seed=[11], **kwargs)
    second = model.decode(codes[1:, :, :120], seed=[12], **kwargs)
    assert batch.audio_values_lengths.tolist() == [first.audio_values.shape[-1], second.audio_values.shape[-1]]
    for reference in (first, second):
        assert reference.audio_values.abs().max() > 1e-2, "decoded audio too small for the comparison to mean anything"
    # batched GEMMs may sum in another order than the single-item ones: float32 rounding, nothing more
    torch.testing.assert_close(batch.audio_values[0, :, : batch.audio_values_lengths[0]], first.audio_values[0],
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(batch.audio_values[1, :, : batch.audio_values_lengths[1]], second.audio_values[0],
                               rtol=0, atol=1e-5)
    different_seed = model.decode(codes[:1], seed=[99], **kwargs)
    assert (different_seed.audio_values - first.audio_values).abs().max() > 1e-3, "the seed must matter"
    again = model.decode(codes[:1], seed=[11], **kwargs)
    assert torch.equal(again.audio_values, first.audio_values)


def test_long_input_keeps_its_length_and_cross_fades_every_seam(tiny):
    """4 decode windows: the output has the original's length, and at every seam it runs from the previous
    window's own waveform into the next one's through the linear fade (no jump, gap or doubled audio)."""
    model = tiny
    frames_per_window = model.config.frames_per_window
    num_frames = 3 * frames_per_window + 100
    generator = torch.Generator().manual_seed(3)
    codes = torch.stack([torch.randint(0, 64, (num_frames,), generator=generator),
                         torch.randint(0, 128, (num_frames,), generator=generator)])[None]
    output = model.decode(codes, seed=[21], num_inference_steps=2).audio_values[0, 0]
    windows = split_into_windows(num_frames, frames_per_window, model.config.decode_window_overlap)
    assert len(windows) == 4
    assert output.shape[-1] == reference_output_samples(num_frames, model.config.token_rate)
    assert abs(output.shape[-1] - num_frames / model.config.frame_rate * 16000) <= 2560  # within one 0.16 s patch

    with torch.inference_mode():  # every window decoded on its own, with the same noise stream
        conditioning = torch.cat([
            build_conditioning(model.quantizer.codes_to_features(codes[:, 0, a:b], codes[:, 1, a:b]),
                               frames_per_window, model.quantizer.positional_encoding)
            for a, b in windows
        ])
        latents = model.decoder.sample_latents(conditioning, num_inference_steps=2,
                                               generator=torch.Generator().manual_seed(21))
        waves = model.decoder.mel_to_waveform(model.decoder.latents_to_mel(latents))
    length, overlap = waves.shape[-1], DEFAULT_OVERLAP_SAMPLES
    hop = length - overlap
    fade_in = linear_ramp(overlap, 0.0, 1.0)
    torch.testing.assert_close(output[:hop], waves[0, :hop], rtol=0, atol=1e-6)
    for k in range(1, len(windows)):
        seam = k * hop  # where window k starts and window k-1's last `overlap` samples lie
        expected = (waves[k - 1, hop:].double() * (1 - fade_in) + waves[k, :overlap].double() * fade_in).float()
        torch.testing.assert_close(output[seam: seam + overlap], expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(output[seam], waves[k - 1, hop], rtol=0, atol=1e-6)  # fade starts at window k-1
        after = output[seam + overlap: seam + hop]
        torch.testing.assert_close(after, waves[k, overlap: overlap + after.shape[-1]], rtol=0, atol=1e-6)


@pytest.mark.parametrize("token_rate", PUBLISHED_TOKEN_RATES)
def test_forward_reconstructs_the_inputs_length(token_rate):
    model = SemantiCodecModel.tiny(token_rate=token_rate)
    feature_extractor = SemantiCodecFeatureExtractor()
    clips = [_audio(3.3, 1), _audio(1.1, 2)]
    inputs = feature_extractor(clips, sampling_rate=16000)
    output = model(**inputs, seed=0, num_inference_steps=1)
    assert output.audio_values_lengths.tolist() == [len(c) for c in clips]
    assert output.audio_values.shape == (2, 1, len(clips[0]))
    assert torch.isfinite(output.audio_values).all()
    untrimmed = model.decode(output.audio_codes, audio_codes_lengths=output.audio_codes_lengths, seed=0,
                             num_inference_steps=1)  # the original's length: rounded up to the token budget
    assert (untrimmed.audio_values_lengths >= output.audio_values_lengths).all()
    with pytest.raises(ValueError, match="one positive length per item"):
        model.decode(output.audio_codes, num_samples=[100], num_inference_steps=1)


def test_decode_rejects_bad_codes(tiny):
    model = tiny
    good = torch.zeros(1, 2, 60, dtype=torch.long)
    bad = good.clone()
    bad[0, 0, 7] = 64  # semantic vocab of the tiny model is 64
    with pytest.raises(ValueError, match=r"semantic id 64 at item 0, frame 7"):
        model.decode(bad)
    bad = good.clone()
    bad[0, 1, 3] = -1
    with pytest.raises(ValueError, match=r"acoustic id -1 at item 0, frame 3"):
        model.decode(bad)
    with pytest.raises(ValueError, match=r"shape \(batch, 2, frames\)"):
        model.decode(torch.zeros(1, 3, 60, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        model.decode(good.float())
    with pytest.raises(ValueError, match="no frames"):
        model.decode(torch.zeros(1, 2, 0, dtype=torch.long))


def test_encode_rejects_malformed_features(tiny):
    model = tiny
    with pytest.raises(ValueError, match="multiple of 1024"):
        model.encode(torch.zeros(1, 1000, 128))
    with pytest.raises(ValueError, match=r"\(batch, frames, 128\)"):
        model.encode(torch.zeros(1, 1024, 64))
    with pytest.raises(ValueError, match="float tensor"):
        model.encode(torch.zeros(1, 1024, 128, dtype=torch.long))

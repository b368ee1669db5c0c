"""SemantiCodecConfig: the 12 published variants, derived rates, validation and round trips."""

import json

import pytest

from semanticodec_hf import PUBLISHED_SEMANTIC_VOCAB_SIZES, PUBLISHED_TOKEN_RATES, SemantiCodecConfig

# Published bitrates (kbps, rounded as the original README prints them) by (token rate, vocab).
PUBLISHED_KBPS = {
    (100, 32768): 1.40, (50, 32768): 0.70, (25, 32768): 0.35,
    (100, 16384): 1.35, (50, 16384): 0.68, (25, 16384): 0.34,
    (100, 8192): 1.30, (50, 8192): 0.65, (25, 8192): 0.33,
    (100, 4096): 1.25, (50, 4096): 0.63, (25, 4096): 0.31,
}
# Per token rate: feature width, LSTM depth, frames per 10.24 s window, UNet context width (spec section 1).
GEOMETRY = {100: (768, 4, 512, 1728), 50: (1536, 3, 256, 3264), 25: (3072, 2, 128, 6336)}


@pytest.mark.parametrize("token_rate", PUBLISHED_TOKEN_RATES)
@pytest.mark.parametrize("vocab", PUBLISHED_SEMANTIC_VOCAB_SIZES)
def test_published_variant_geometry_and_bitrate(token_rate, vocab):
    config = SemantiCodecConfig.from_variant(token_rate=token_rate, semantic_vocab_size=vocab)
    feature_dim, lstm_layers, frames, context = GEOMETRY[token_rate]
    assert (config.feature_dim, config.lstm_num_layers, config.frames_per_window, config.conditioning_dim) == (
        feature_dim, lstm_layers, frames, context)
    assert config.tokens_per_second == pytest.approx(token_rate)
    assert config.frame_rate == pytest.approx(token_rate / 2)
    # the README rounds to two decimals (0.625 -> 0.63), so agree within half a unit of the last digit
    assert config.bitrate / 1000 == pytest.approx(PUBLISHED_KBPS[(token_rate, vocab)], abs=0.005 + 1e-9)
    assert config.unet_config["cross_attention_dim"] == [[None, context]] * 4
    assert config.semantic_codebook_file == (
        f"codebook_idx/combine_{frames}_audioset_dominate/codebook_{vocab // 2}_0.npy")


def test_rates_are_derived_not_stored(tmp_path):
    config = SemantiCodecConfig.from_variant(50, 16384)
    config.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    for derived in ("bitrate", "tokens_per_second", "frame_rate", "feature_dim", "frames_per_window"):
        assert derived not in stored
    assert stored["model_type"] == "semanticodec"


def test_round_trip_keeps_every_hyper_parameter(tmp_path):
    config = SemantiCodecConfig.from_variant(25, 32768, num_inference_steps=20, guidance_scale=1.5)
    config.save_pretrained(tmp_path)
    loaded = SemantiCodecConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.bitrate == config.bitrate == 350.0


def test_a_config_json_with_the_removed_lstm_hidden_size_still_loads(tmp_path):
    """`lstm_hidden_size` (2 x feature_dim, used by nothing) was dropped from the config; a config.json that
    names it, written by hand or by other tools, loads as before: the key is kept as a plain attribute."""
    config = SemantiCodecConfig.tiny()
    config.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert "lstm_hidden_size" not in stored
    stored["lstm_hidden_size"] = 2 * config.feature_dim
    (tmp_path / "config.json").write_text(json.dumps(stored))
    loaded = SemantiCodecConfig.from_pretrained(tmp_path)
    assert loaded.lstm_hidden_size == 2 * config.feature_dim
    assert {k: v for k, v in loaded.to_dict().items() if k != "lstm_hidden_size"} == config.to_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(token_rate=75, semantic_vocab_size=8192), "token_rate=75"),
        (dict(token_rate=100, semantic_vocab_size=1000), "semantic_vocab_size=1000"),
    ],
)
def test_from_variant_rejects_unpublished_variants(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SemantiCodecConfig.from_variant(**kwargs)


def test_inconsistent_hyper_parameters_are_rejected():
    unet = SemantiCodecConfig.from_variant(100, 8192).unet_config
    with pytest.raises(ValueError, match="cross_attention_dim"):
        SemantiCodecConfig(token_rate=50, unet_config=unet)
    with pytest.raises(ValueError, match="audiomae_output_layers"):
        SemantiCodecConfig(audiomae_output_layers=[12])
    with pytest.raises(ValueError, match="pooling"):
        SemantiCodecConfig(pooling=[3, 1])


def test_tiny_config_keeps_window_geometry():
    config = SemantiCodecConfig.tiny(token_rate=25)
    assert config.frames_per_window == 128
    assert config.window_samples == 163840
    assert config.conditioning_dim == config.unet_config["cross_attention_dim"][0][1]


@pytest.mark.parametrize("token_rate", PUBLISHED_TOKEN_RATES)
def test_time_arithmetic_is_derived_from_the_geometry(token_rate):
    """Lengths in samples, frames and windows come from the config (never stored, so never out of step)."""
    config = SemantiCodecConfig.from_variant(token_rate=token_rate)
    assert (config.fbank_hop_samples, config.window_samples, config.patch_samples, config.min_num_samples) == (
        160, 163840, 2560, 2560)
    assert (config.window_seconds, config.patch_seconds) == (10.24, 0.16)
    assert config.hop_length == 32000 // token_rate and config.stack_factor == 100 / token_rate
    assert (config.decode_overlap_frames, config.decode_overlap_samples) == (config.frames_per_window // 16, 10240)
    assert [config.num_windows(n) for n in (2560, 163839, 163840, 327680)] == [1, 1, 2, 3]
    # the token budget rounds up to whole 0.16 s patches (a whole extra patch at exact multiples); the encoder
    # keeps at most its windows' frames
    assert config.frame_budget(163840) == 520 * token_rate // 100
    assert config.num_frames(163840) == config.frame_budget(163840)
    assert config.num_frames(16000) == config.frame_budget(16000) == {100: 57, 50: 29, 25: 15}[token_rate]
    assert config.output_num_samples(config.frames_per_window) == 163840
    for key in ("window_samples", "patch_samples", "decode_overlap_samples", "hop_length", "fbank_hop_samples"):
        assert key not in config.to_dict()


def test_the_encoder_keeps_at_most_its_windows_frames():
    """Where the budget's float arithmetic spills one frame past the last window (from 1144321 samples, just
    under 7 windows), the encoder keeps only its windows' frames."""
    config = SemantiCodecConfig()
    assert config.num_windows(1144321) == 7 and config.frame_budget(1144321) == 3585
    assert config.num_frames(1144321) == 7 * 512
    assert config.num_frames(1144320) == config.frame_budget(1144320) == 3576  # no cap one sample earlier


def test_time_arithmetic_follows_a_custom_overlap_and_window():
    config = SemantiCodecConfig.tiny(decode_window_overlap=0.125)
    assert (config.decode_overlap_frames, config.decode_overlap_samples) == (64, 20480)
    assert SemantiCodecConfig.tiny(decode_window_overlap=0.1).decode_overlap_samples == 51 * 320  # 51 whole frames
    assert SemantiCodecConfig.tiny(decode_window_overlap=0.0).decode_overlap_samples == 0

"""Encoder parity: the original's weights (parity recipe) through `map_encoder_state_dict` reproduce the
original's AudioMAE output, ids and conditioning on both fixtures; batching, mapping errors, sizes.

Tolerances are those of shared/parity/README.md (float tensors 1e-4 max abs, ids identical).
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch

from parity_weights import FIXTURES, build_encoder_state_dict, build_semantic_centroids, load_manifest
from semanticodec_hf.checkpoint_mapping import map_encoder_state_dict
from semanticodec_hf.conditioning import (
    build_conditioning,
    sinusoidal_positional_encoding,
    unconditional_conditioning,
)
from semanticodec_hf.configuration_semanticodec import SemantiCodecConfig
from semanticodec_hf.modeling_semanticodec_encoder import (
    SemantiCodecEncoder,
    frames_kept,
    padding_cut,
    pool_patches,
)
from semanticodec_hf.modeling_semanticodec_quantizer import SemantiCodecQuantizer

FLOAT_TOLERANCE = 1e-4
# (token rate, vocab, fixture, windows also encoded alone). Every window alone is one more LSTM pass over
# 0.6-2.4 GB of weights, so the 50 tokens/s case re-encodes window 0 only (the tiny test covers padding).
CASES = {
    "tr100_v8192": (100, 8192, "fixture_tr100_v8192_s0", (0, 1)),
    "tr50_v4096": (50, 4096, "fixture_tr50_v4096_s1", (0,)),
}
_META_DTYPES = {"float32": torch.float32, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}


def _split(mapped: dict) -> tuple:
    """Mapped model keys -> (encoder state dict, quantizer state dict), prefixes removed."""
    parts = ({}, {})
    for key, value in mapped.items():
        prefix, _, name = key.partition(".")
        assert prefix in ("encoder", "quantizer"), key
        parts[prefix == "quantizer"][name] = value
    return parts


def _build(config: SemantiCodecConfig) -> tuple:
    return SemantiCodecEncoder(config), SemantiCodecQuantizer(config)


def _load(encoder: SemantiCodecEncoder, quantizer: SemantiCodecQuantizer, mapped: dict) -> None:
    for module, state in zip((encoder, quantizer), _split(mapped)):
        result = module.load_state_dict(state, strict=True, assign=True)
        assert not result.missing_keys and not result.unexpected_keys


def _meta_original(token_rate: int) -> dict:
    """The original encoder.ckpt layout as meta tensors (shape checks without memory)."""
    return {e["key"]: torch.empty(e["shape"], dtype=_META_DTYPES[e["dtype"]], device="meta")
            for e in load_manifest("encoder", token_rate)}


def _load_parity_encoder(token_rate: int, vocab: int) -> tuple:
    """The encoder and the quantizer of a model holding the parity recipe's weights."""
    config = SemantiCodecConfig.from_variant(token_rate, vocab)
    original = build_encoder_state_dict(token_rate)
    mapped = map_encoder_state_dict(original, build_semantic_centroids(vocab, token_rate), config=config)
    del original  # the mapped views keep only the tensors the encoder uses
    with torch.device("meta"):
        encoder, quantizer = _build(config)
    _load(encoder, quantizer, mapped)
    quantizer.reset_computed_buffers()
    return encoder.eval(), quantizer.eval()


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    """One encoder per token rate, run once: all windows batched, plus some windows alone. The two runs use the
    two CPU LSTM kernels (batched: ATen's recurrence, alone: oneDNN's fused LSTM), so every id test below checks
    that either kernel gives the original's ids (`lstm_kernels` may pick either on a user's machine)."""
    token_rate, vocab, name, alone = CASES[request.param]
    encoder, quantizer = _load_parity_encoder(token_rate, vocab)
    reference = dict(np.load(FIXTURES / f"{name}_encoder.npz"))
    windows = torch.from_numpy(reference["fbank"]).reshape(-1, 1024, 128)
    with torch.inference_mode():
        audiomae0 = encoder.audiomae_features(windows[:1])
        encoder.lstm_kernel = "aten"
        batched = encoder(windows, quantizer, return_conditioning=True)
        encoder.lstm_kernel = "onednn"
        singles = {i: encoder(windows[i: i + 1], quantizer, return_conditioning=True) for i in alone}
    yield dict(encoder=encoder, quantizer=quantizer, reference=reference, windows=windows, audiomae0=audiomae0,
               batched=batched, singles=singles, name=request.param)
    del encoder, quantizer
    gc.collect()


def test_audiomae_window0(case):
    error = (case["audiomae0"] - torch.from_numpy(case["reference"]["audiomae_window0"])).abs().max().item()
    print(f"{case['name']} AudioMAE window 0 max abs error {error:.3g}")
    assert error <= FLOAT_TOLERANCE


def test_ids_window0(case):
    expected = torch.from_numpy(case["reference"]["tokens_window0"])[0]
    for output in (case["singles"][0], case["batched"]):
        assert torch.equal(output.semantic_ids[0], expected[:, 0])
        assert torch.equal(output.acoustic_ids[0], expected[:, 1])


def test_all_windows_ids_trimmed(case):
    expected = torch.from_numpy(case["reference"]["tokens"])
    out = case["batched"]
    tokens = torch.stack([out.semantic_ids.reshape(-1), out.acoustic_ids.reshape(-1)], dim=-1)[None]
    assert tokens.dtype == torch.long
    assert torch.equal(tokens[:, : expected.shape[1]], expected)


def test_conditioning_window0(case):
    expected = torch.from_numpy(case["reference"]["cond_window0"])
    config = case["encoder"].config
    for output in (case["singles"][0], case["batched"]):
        conditioning = output.conditioning[:1]
        assert conditioning.shape == expected.shape == (1, config.frames_per_window, config.conditioning_dim)
        error = (conditioning - expected).abs().max().item()
        print(f"{case['name']} conditioning window 0 max abs error {error:.3g}")
        assert error <= FLOAT_TOLERANCE
        # the feature part is made of stored codewords/centroids only: bit-exact
        width = 2 * config.feature_dim
        assert torch.equal(conditioning[..., :width], expected[..., :width])


def test_batch_equals_one_window_at_a_time(case):
    batched = case["batched"]
    for index, single in case["singles"].items():
        assert torch.equal(single.semantic_ids[0], batched.semantic_ids[index])
        assert torch.equal(single.acoustic_ids[0], batched.acoustic_ids[index])
        assert torch.equal(single.conditioning[0], batched.conditioning[index])


def test_last_window_padding_is_marked(case):
    """The fixtures end with 1.5 s of zeros: rows after ceil(W * cut / 1024) are -1 in the conditioning."""
    config = case["encoder"].config
    last = case["windows"][-1:]
    kept = int(frames_kept(padding_cut(last), config.window_frames, config.frames_per_window))
    assert 0 < kept < config.frames_per_window
    features = case["batched"].conditioning[-1, :, : 2 * config.feature_dim]
    assert (features[kept:] == -1.0).all() and not (features[:kept] == -1.0).all(dim=-1).any()


def test_decoder_conditioning_from_codes_matches_encoder(case):
    """codes -> [acoustic ++ semantic] + PE rebuilds the encoder's conditioning where nothing was cut."""
    quantizer, out = case["quantizer"], case["batched"]
    config = quantizer.config
    features = quantizer.codes_to_features(out.semantic_ids[:1], out.acoustic_ids[:1])
    rebuilt = build_conditioning(features, config.frames_per_window, quantizer.positional_encoding)
    assert torch.equal(rebuilt, out.conditioning[:1])
    assert torch.equal(quantizer.codes_to_conditioning(out.semantic_ids[:1], out.acoustic_ids[:1]), rebuilt)
    short = build_conditioning(features[:, :10], config.frames_per_window, quantizer.positional_encoding)
    assert torch.equal(quantizer.codes_to_conditioning(out.semantic_ids[:1, :10], out.acoustic_ids[:1, :10]), short)
    assert torch.equal(short[:, :10], rebuilt[:, :10]) and (short[:, 10:, : 2 * config.feature_dim] == -1).all()
    unconditional = unconditional_conditioning(short, 2 * config.feature_dim)
    padding = unconditional[:, 10:, : 2 * config.feature_dim]
    assert (padding == 0).all() and torch.signbit(padding).all()  # 0 * -1 = -0.0, as in the original
    assert torch.equal(unconditional[..., 2 * config.feature_dim:], short[..., 2 * config.feature_dim:])


# ------------------------------------------------------------------------------------------ mapping
def test_mapping_accepts_both_initted_layouts():
    config = SemantiCodecConfig.from_variant(100, 4096)
    centroids = torch.empty(4096, 768, device="meta")
    for initted in (torch.ones((), dtype=torch.bool, device="meta"), torch.ones(1, device="meta")):
        original = _meta_original(100)
        original["quantizer._codebook.initted"] = initted
        mapped = map_encoder_state_dict(original, centroids, config=config)
        assert "quantizer.acoustic.codebook" in mapped and mapped["quantizer.acoustic.codebook"].shape == (8192, 768)


def test_mapping_returns_views_and_infers_variant():
    original = {key: torch.zeros(value.shape, dtype=value.dtype) if key == "quantizer._codebook.embed" else value
                for key, value in _meta_original(100).items()}
    centroids = np.zeros((4096, 768), np.float32)
    mapped = map_encoder_state_dict(original, centroids)  # variant inferred from the centroid width
    assert mapped["quantizer.acoustic.codebook"].data_ptr() == original["quantizer._codebook.embed"].data_ptr()
    assert mapped["quantizer.semantic.centroids"].numpy().ctypes.data == centroids.ctypes.data
    dropped = ("mask_token", "decoder_", "initted", "cluster_size", "embed_avg")
    assert not [key for key in mapped if any(word in key for word in dropped)]


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda s: s.__setitem__("audiomae.model.head.weight", torch.empty(3, device="meta")), "audiomae.model.head.weight"),
        (lambda s: s.__setitem__("quantizer._codebook.embed_extra", torch.empty(3, device="meta")), "quantizer._codebook.embed_extra"),
        (lambda s: s.pop("audiomae.model.blocks.11.mlp.fc2.bias"), "audiomae.model.blocks.11.mlp.fc2.bias"),
        (lambda s: s.pop("encoder.bias_hh_l2_reverse"), "encoder.bias_hh_l2_reverse"),
        (lambda s: s.pop("quantizer._codebook.embed"), "quantizer._codebook.embed"),
        (lambda s: s.__setitem__("encoder.weight_ih_l1", torch.empty(6144, 1536, device="meta")), "encoder.weight_ih_l1"),
        (lambda s: s.__setitem__("quantizer._codebook.embed", torch.empty(1, 4096, 768, device="meta")),
         "quantizer._codebook.embed"),
        (lambda s: s.__setitem__("quantizer._codebook.initted", torch.empty(2, device="meta")), "initted"),
        (lambda s: s.__setitem__("encoder.weight_ih_l4", torch.empty(6144, 3072, device="meta")), "encoder.weight_ih_l4"),
    ],
    ids=["unknown-audiomae", "unknown-vq", "missing-block", "missing-lstm", "missing-codebook", "shape-lstm",
         "shape-codebook", "shape-initted", "extra-lstm-layer"],
)
def test_mapping_errors_name_the_key(edit, named):
    config = SemantiCodecConfig.from_variant(100, 4096)
    original = _meta_original(100)
    edit(original)
    with pytest.raises(ValueError) as error:
        map_encoder_state_dict(original, torch.empty(4096, 768, device="meta"), config=config)
    assert named in str(error.value)


def test_mapping_checks_the_centroids():
    config = SemantiCodecConfig.from_variant(100, 4096)
    with pytest.raises(ValueError, match="semantic_centroids"):
        map_encoder_state_dict(_meta_original(100), torch.empty(8192, 768, device="meta"), config=config)
    with pytest.raises(ValueError, match="semantic_centroids"):
        map_encoder_state_dict(_meta_original(100), torch.empty(4096, 1536, device="meta"), config=config)
    with pytest.raises(ValueError, match="width 1000"):
        map_encoder_state_dict(_meta_original(100), torch.empty(4096, 1000, device="meta"))


# -------------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("token_rate", [100, 50, 25])
def test_parameter_counts_equal_the_used_parts_of_the_original(token_rate):
    """Built on the meta device (the 25 tokens/s LSTM alone has 1.5 B parameters)."""
    vocab = 4096
    config = SemantiCodecConfig.from_variant(token_rate, vocab)
    with torch.device("meta"):
        encoder, quantizer = _build(config)
    manifest = {e["key"]: math.prod(e["shape"]) for e in load_manifest("encoder", token_rate)}
    state = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
             **{f"quantizer.{k}": v for k, v in quantizer.state_dict().items()}}

    def original(prefix: str) -> int:
        return sum(n for key, n in manifest.items() if key.startswith(prefix))

    def ours(prefix: str) -> int:
        return sum(t.numel() for key, t in state.items() if key.startswith(prefix))

    audiomae_used = original("audiomae.model.") - original("audiomae.model.decoder_") - original("audiomae.model.mask_token")
    assert ours("encoder.audiomae.") == audiomae_used == 85_648_128
    assert ours("encoder.lstm.") == original("encoder.") == {100: 207_716_352, 50: 604_127_232,
                                                              25: 1_510_146_048}[token_rate]
    assert ours("encoder.output_linear.") == original("encoder_output_linear.") == 4 * config.feature_dim**2
    assert ours("quantizer.acoustic.") == manifest["quantizer._codebook.embed"] == 8192 * config.feature_dim
    assert ours("quantizer.semantic.") == vocab * config.feature_dim
    parameters = sum(p.numel() for p in encoder.parameters())
    assert parameters == audiomae_used + original("encoder.") + original("encoder_output_linear.")
    assert not list(quantizer.parameters()) and not dict(encoder.named_buffers())  # the codebooks are buffers
    assert set(dict(quantizer.named_buffers())) == {"semantic.centroids", "acoustic.codebook", "positional_encoding"}
    assert "positional_encoding" not in quantizer.state_dict()  # computed, never saved
    # the whole official layout maps and loads strictly
    mapped = map_encoder_state_dict(_meta_original(token_rate), torch.empty(vocab, config.feature_dim, device="meta"),
                                    config=config)
    _load(encoder, quantizer, mapped)


# ------------------------------------------------------------------------------- small, exact units
def test_pooling_token_order_matches_spec_index_map():
    """Label each patch (h, w) and check the frame layout of spec 4.1 for the three poolings."""
    grid = torch.stack(torch.meshgrid(torch.arange(64.0), torch.arange(8.0), indexing="ij"), dim=-1)  # [64, 8, 2]
    patches = grid.reshape(1, 512, 2)
    assert torch.equal(pool_patches(patches, (64, 8), (1, 1))[0, 9], torch.tensor([1.0, 1.0]))
    r50 = pool_patches(patches, (64, 8), (1, 2))[0]
    assert r50.shape == (256, 4)
    assert torch.equal(r50[1], torch.tensor([0.0, 2, 0, 3])) and torch.equal(r50[4], torch.tensor([1.0, 0, 1, 1]))
    assert torch.equal(r50[255], torch.tensor([63.0, 6, 63, 7]))
    r25 = pool_patches(patches, (64, 8), (2, 2))[0]
    assert r25.shape == (128, 8)
    assert torch.equal(r25[1], torch.tensor([0.0, 2, 0, 3, 1, 2, 1, 3]))
    assert torch.equal(r25[4], torch.tensor([2.0, 0, 2, 1, 3, 0, 3, 1]))
    assert torch.equal(r25[127], torch.tensor([62.0, 6, 62, 7, 63, 6, 63, 7]))


def test_padding_cut_rules():
    windows = torch.randn(5, 1024, 128)
    windows[1, 1000:] = 0.4677  # trailing constant frames (zero-padded fbank value)
    windows[2] = -1.2776  # all silent
    windows[3, 100:200] = 0.0  # silence in the middle only: ignored
    windows[4, 1023] = 0.0  # last frame silent
    cut = padding_cut(windows)
    assert cut.tolist() == [1024, 1000, 0, 1024, 1023]
    assert frames_kept(cut, 1024, 512).tolist() == [512, 500, 0, 512, 512]  # ceil(512 * 1023 / 1024) = 512
    assert frames_kept(torch.tensor([1, 4, 5]), 1024, 128).tolist() == [1, 1, 1]


def test_positional_encoding_formula():
    table = sinusoidal_positional_encoding(512, 192)
    assert table.shape == (512, 192) and table.dtype == torch.float32
    position = torch.arange(512, dtype=torch.float64)[:, None]
    frequency = torch.exp(torch.arange(0, 192, 2, dtype=torch.float64) * -(math.log(10000.0) / 192))
    assert torch.allclose(table[:, 0::2].double(), torch.sin(position * frequency), atol=1e-4)
    assert torch.allclose(table[:, 1::2].double(), torch.cos(position * frequency), atol=1e-4)
    assert torch.equal(table[0, 0::2], torch.zeros(96)) and torch.equal(table[0, 1::2], torch.ones(96))


@pytest.mark.parametrize("token_rate", [100, 50, 25])
def test_tiny_encoder_batches_exactly(token_rate):
    """Random tiny weights, windows with different padding: every item gets its own result in a batch."""
    torch.manual_seed(token_rate)
    config = SemantiCodecConfig.tiny(token_rate=token_rate)
    encoder, quantizer = (module.eval() for module in _build(config))
    with torch.no_grad():
        for buffer in (quantizer.semantic.centroids, quantizer.acoustic.codebook):
            buffer.normal_(0, 0.5)
        encoder.audiomae.pos_embed.normal_(0, 0.5)
    windows = torch.randn(4, 1024, 128)
    windows[1, 700:] = 0.4677
    windows[2] = -1.2776
    windows[3, 1023] = 0.0
    with torch.inference_mode():
        batched = encoder(windows, quantizer, return_conditioning=True)
        assert encoder(windows, quantizer).conditioning is None
        for index in range(4):
            single = encoder(windows[index: index + 1], quantizer, return_conditioning=True)
            assert torch.equal(single.semantic_ids[0], batched.semantic_ids[index])
            assert torch.equal(single.acoustic_ids[0], batched.acoustic_ids[index])
            assert torch.equal(single.conditioning[0], batched.conditioning[index])
    frames = config.frames_per_window
    assert batched.semantic_ids.shape == batched.acoustic_ids.shape == (4, frames)
    assert batched.conditioning.shape == (4, frames, config.conditioning_dim)
    kept = frames_kept(padding_cut(windows), 1024, frames).tolist()
    assert kept == [frames, math.ceil(frames * 700 / 1024), 0, frames]
    features = batched.conditioning[..., : 2 * config.feature_dim]
    for index, k in enumerate(kept):
        assert (features[index, k:] == -1).all()
    with pytest.raises(ValueError, match="fbank windows"):
        encoder(torch.zeros(1, 1000, 128), quantizer)

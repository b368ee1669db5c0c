"""The converter: official-layout files on disk -> CLI -> AutoModel, matching the parity fixtures (the
public `decode` included); the Hub path with the download patched; strict key accounting for every variant;
bad files."""

import contextlib
import gzip
import io
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoModel, AutoProcessor

import semanticodec_hf  # noqa: F401
from semanticodec_hf import SemantiCodecModel, SemantiCodecProcessor
from semanticodec_hf.checkpoint_mapping import map_decoder_state_dict, map_encoder_state_dict
from semanticodec_hf.cli import main as cli_main
from semanticodec_hf.configuration_semanticodec import SemantiCodecConfig
from semanticodec_hf.convert_semanticodec_original_to_hf import convert_original_checkpoint

import parity_weights
from parity_weights import FIXTURES

VOCAB = 8192  # the 100 tokens/s parity fixture's vocabulary
CODEBOOK = "codebook_idx/combine_512_audioset_dominate/codebook_4096_0.npy"


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory) -> Path:
    """A local copy of the Hub repo layout for the 100 tokens/s variants, with the parity recipe's weights."""
    root = tmp_path_factory.mktemp("SemantiCodec")
    (root / "semanticodec_tokenrate_100").mkdir()
    torch.save(parity_weights.build_encoder_state_dict(100), root / "semanticodec_tokenrate_100" / "encoder.ckpt")
    torch.save(parity_weights.build_decoder_state_dict(100), root / "semanticodec_tokenrate_100" / "decoder.ckpt")
    (root / CODEBOOK).parent.mkdir(parents=True)
    np.save(root / CODEBOOK, parity_weights.build_semantic_centroids(VOCAB, 100))
    return root


CONVERSION_STDERR = {}  # what the `converted` fixture's conversion printed on stderr (its progress bar)


@pytest.fixture(scope="module")
def converted(official_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "semanticodec-100tps-8192"
    with contextlib.redirect_stderr(io.StringIO()) as stderr:  # tqdm looks up sys.stderr when the bar is made
        code = cli_main(["convert", "--token-rate", "100", "--semantic-vocab-size", str(VOCAB),
                         "--checkpoint-dir", str(official_folder), "--output", str(out)])
    CONVERSION_STDERR["text"] = stderr.getvalue()
    assert code == 0
    return out


def test_conversion_shows_each_step_on_stderr(converted):
    """(`--quiet` hiding it: test_hub_download_path_serves_the_same_files.)"""
    shown = CONVERSION_STDERR["text"]
    assert "convert" in shown and "7/7" in shown, shown[-500:]
    for step in ("read encoder.ckpt", "read decoder.ckpt", "map weights", "checksums", "write folder"):
        assert step in shown, step


@pytest.fixture(scope="module")
def converted_model(converted) -> SemantiCodecModel:
    """The converted folder loaded once with the Auto classes, for every test that runs the model."""
    model = AutoModel.from_pretrained(converted).eval()
    assert isinstance(model, SemantiCodecModel)
    return model


def test_converted_folder_carries_the_processor_and_the_code_for_trust_remote_code(converted):
    """Every converted folder loads with AutoProcessor and, through `auto_map` and the copied code, with
    `trust_remote_code=True` where semanticodec_hf is not installed (that path is run in test_remote_code.py)."""
    config = json.loads((converted / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForAudioTokenization"}
    processor_config = json.loads((converted / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_semanticodec.SemantiCodecProcessor"}
    assert (processor_config["semantic_vocab_size"], processor_config["acoustic_vocab_size"]) == (VOCAB, 8192)
    preprocessor = json.loads((converted / "preprocessor_config.json").read_text())
    assert "AutoFeatureExtractor" in preprocessor["auto_map"]
    for module in ("configuration", "modeling", "feature_extraction", "processing"):
        assert (converted / f"{module}_semanticodec.py").is_file()
    processor = AutoProcessor.from_pretrained(converted)
    assert isinstance(processor, SemantiCodecProcessor) and processor.vocab_size == VOCAB + 8192 + 4


def test_cli_conversion_loads_with_auto_classes_and_matches_parity(converted, converted_model):
    assert (converted / "model.safetensors").exists() or (converted / "model.safetensors.index.json").exists()
    card = (converted / "README.md").read_text()
    assert "library_name: transformers" in card and "1300 bit/s" in card
    config = json.loads((converted / "config.json").read_text())
    assert config["scale_factor"] == 0.75
    assert set(config["original_checkpoint_sha256"]) == {"encoder.ckpt", "decoder.ckpt", "codebook_4096_0.npy"}

    model = converted_model
    feature_extractor = AutoFeatureExtractor.from_pretrained(converted)
    reference = np.load(FIXTURES / "fixture_tr100_v8192_s0_encoder.npz")
    inputs = feature_extractor(reference["waveform"], sampling_rate=16000)
    encoded = model.encode(**inputs, return_conditioning=True)
    expected = torch.from_numpy(reference["tokens"])[0].T  # (2, frames)
    assert torch.equal(encoded.audio_codes[0], expected)
    conditioning = encoded.conditioning[0, :512]
    assert (conditioning - torch.from_numpy(reference["cond_window0"][0])).abs().max() <= 1e-4

    decoder_reference = np.load(FIXTURES / "fixture_tr100_v8192_s0_decoder.npz")
    with torch.no_grad():
        v = model.decoder.predict_v(
            torch.from_numpy(decoder_reference["unet_x_t"]),
            torch.from_numpy(decoder_reference["unet_t"]),
            torch.from_numpy(reference["cond_window0"]),
        )
    ref_out = torch.from_numpy(decoder_reference["unet_out"])
    assert (v - ref_out).abs().max() <= 1e-4 * ref_out.abs().max()


def test_public_decode_of_the_converted_model_matches_the_originals_waveform(
    converted_model: SemantiCodecModel, stored_decode_noise: torch.Tensor
) -> None:
    """`decode` as users call it (windowing, conditioning from the codes, per-window noise order, cross-fade,
    trim) on converter output, against the original's `decode(tokens)`: the stage tests in
    test_decoder_parity.py build those steps by hand, so only this proves the public path and the converted
    decoder end to end. Bound of shared/parity/README.md (full decode: max abs <= 1e-3 x max|ref|)."""
    meta = json.loads((FIXTURES / "fixture_tr100_v8192_s0.json").read_text())
    assert (meta["ddim_steps"], meta["cfg_scale"], meta["ddim_eta"]) == (5, 2.0, 1.0)
    tokens = torch.from_numpy(np.load(FIXTURES / "fixture_tr100_v8192_s0_encoder.npz")["tokens"])  # [1, frames, 2]
    expected = torch.from_numpy(np.load(FIXTURES / "fixture_tr100_v8192_s0_decoder.npz")["decode_waveform"])
    decoded = converted_model.decode(
        tokens.transpose(1, 2),  # (batch, 2, frames): row 0 semantic, row 1 acoustic
        noise=stored_decode_noise,
        num_inference_steps=meta["ddim_steps"],
        guidance_scale=meta["cfg_scale"],
        eta=meta["ddim_eta"],
    )
    assert decoded.audio_values.shape == expected.shape == (1, 1, 192000)  # the original's length, exactly
    assert decoded.audio_values_lengths.tolist() == [expected.shape[-1]]
    error = (decoded.audio_values - expected).abs().max().item()
    bound = 1e-3 * expected.abs().max().item()
    assert error <= bound, f"max |decode - original| = {error:.3g} > {bound:.3g} (1e-3 x max|ref|)"


def test_hub_download_path_serves_the_same_files(official_folder, converted, tmp_path, capsys):
    requested = []

    def fake_download(repo_id, filename, **kwargs):
        requested.append((repo_id, filename))
        return str(official_folder / filename)

    out = tmp_path / "from-hub"
    with mock.patch("huggingface_hub.hf_hub_download", side_effect=fake_download):
        assert cli_main(["convert", "--token-rate", "100", "--semantic-vocab-size", str(VOCAB),
                         "--output", str(out), "--quiet"]) == 0
    assert "convert" not in capsys.readouterr().err  # --quiet: no progress bar
    assert requested == [
        ("haoheliu/SemantiCodec", "semanticodec_tokenrate_100/encoder.ckpt"),
        ("haoheliu/SemantiCodec", "semanticodec_tokenrate_100/decoder.ckpt"),
        ("haoheliu/SemantiCodec", CODEBOOK),
    ]
    assert json.loads((out / "config.json").read_text())["original_checkpoint_sha256"] == json.loads(
        (converted / "config.json").read_text())["original_checkpoint_sha256"]


def _meta_state(part: str, token_rate: int) -> dict:
    with gzip.open(FIXTURES / "manifests" / f"{part}_tokenrate_{token_rate}.json.gz", "rt") as f:
        manifest = json.load(f)
    dtypes = {"float32": torch.float32, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}
    return {e["key"]: torch.empty(e["shape"], dtype=dtypes[e["dtype"]], device="meta") for e in manifest}


@pytest.mark.parametrize("token_rate", [25, 50, 100])
def test_every_variant_manifest_maps_with_no_unmapped_key(token_rate):
    """Key/shape accounting for the full official layouts, on meta tensors (no memory)."""
    config = SemantiCodecConfig.from_variant(token_rate, 16384)
    encoder_state = _meta_state("encoder", token_rate)
    # the official 2024 checkpoints store `initted` as a [1] float (vector-quantize-pytorch 1.14)
    encoder_state["quantizer._codebook.initted"] = torch.empty(1, device="meta")
    centroids = torch.empty(16384, config.feature_dim, device="meta")
    state = map_encoder_state_dict(encoder_state, centroids, config=config)
    state.update(map_decoder_state_dict(_meta_state("decoder", token_rate), config=config))
    with torch.device("meta"):
        model = SemantiCodecModel(config)
    result = model.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_wrong_variant_is_named():
    encoder_state = _meta_state("encoder", 100)
    decoder_state = _meta_state("decoder", 100)
    centroids = np.zeros((8192, 768), np.float32)
    with pytest.raises(ValueError, match=r"100 tokens/s checkpoint .* token_rate=50"):
        convert_original_checkpoint(encoder_state, decoder_state, centroids, token_rate=50, semantic_vocab_size=8192)
    with pytest.raises(ValueError, match=r"semantic codebook has shape \(8192, 768\).*16384"):
        convert_original_checkpoint(encoder_state, decoder_state, centroids, token_rate=100, semantic_vocab_size=16384)


def test_unknown_and_missing_keys_are_named():
    config = SemantiCodecConfig.from_variant(100, 4096)
    state = _meta_state("encoder", 100)
    state["audiomae.model.extra_head.weight"] = torch.empty(3, device="meta")
    del state["encoder.weight_hh_l3_reverse"]
    with pytest.raises(ValueError) as error:
        map_encoder_state_dict(state, torch.empty(4096, 768, device="meta"), config=config)
    assert "audiomae.model.extra_head.weight" in str(error.value)
    assert "encoder.weight_hh_l3_reverse" in str(error.value)
    decoder_state = _meta_state("decoder", 100)
    decoder_state["model.diffusion_model.out.2.weight"] = torch.empty(4, 64, 3, 3, device="meta")
    with pytest.raises(ValueError, match=r"model.diffusion_model.out.2.weight"):
        map_decoder_state_dict(decoder_state, config=config)


def _convert_cli(folder: Path, out: Path, *extra: str) -> int:
    return cli_main(["convert", "--token-rate", "100", "--semantic-vocab-size", str(VOCAB),
                     "--checkpoint-dir", str(folder), "--output", str(out), "--quiet", *extra])


def _assert_nothing_written(out: Path):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial")]


def test_missing_file_is_reported_and_nothing_written(official_folder, tmp_path, capsys):
    broken = tmp_path / "official"
    (broken / "semanticodec_tokenrate_100").mkdir(parents=True)
    (broken / "semanticodec_tokenrate_100" / "encoder.ckpt").symlink_to(
        official_folder / "semanticodec_tokenrate_100" / "encoder.ckpt")
    out = tmp_path / "out"
    assert _convert_cli(broken, out) == 2
    message = capsys.readouterr().err
    assert "decoder.ckpt" in message and CODEBOOK in message
    _assert_nothing_written(out)


def test_truncated_checkpoint_is_reported_and_nothing_written(official_folder, tmp_path, capsys):
    broken = tmp_path / "official"
    (broken / "semanticodec_tokenrate_100").mkdir(parents=True)
    source = official_folder / "semanticodec_tokenrate_100"
    (broken / "semanticodec_tokenrate_100" / "encoder.ckpt").symlink_to(source / "encoder.ckpt")
    with open(source / "decoder.ckpt", "rb") as f:
        (broken / "semanticodec_tokenrate_100" / "decoder.ckpt").write_bytes(f.read(4096))
    (broken / CODEBOOK).parent.mkdir(parents=True)
    (broken / CODEBOOK).symlink_to(official_folder / CODEBOOK)
    out = tmp_path / "out"
    assert _convert_cli(broken, out) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    _assert_nothing_written(out)


def test_codebook_of_wrong_size_is_reported(official_folder, tmp_path, capsys):
    broken = tmp_path / "official"
    (broken / "semanticodec_tokenrate_100").mkdir(parents=True)
    for name in ("encoder.ckpt", "decoder.ckpt"):
        (broken / "semanticodec_tokenrate_100" / name).symlink_to(
            official_folder / "semanticodec_tokenrate_100" / name)
    (broken / CODEBOOK).parent.mkdir(parents=True)
    np.save(broken / CODEBOOK, np.zeros((4096, 768), np.float32))
    out = tmp_path / "out"
    assert _convert_cli(broken, out) == 2
    assert "semantic codebook has shape (4096, 768)" in capsys.readouterr().err
    _assert_nothing_written(out)


def test_existing_output_is_not_overwritten_without_flag(converted, official_folder, capsys):
    assert _convert_cli(official_folder, converted) == 2
    assert "--overwrite" in capsys.readouterr().err

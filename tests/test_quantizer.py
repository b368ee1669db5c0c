"""The quantizer beside the encoder and the decoder: where the codebooks live, that decoding needs no encoder, and
that folders saved when the codebooks were still inside the encoder (old state-dict keys) load unchanged."""

import logging
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel
from transformers.utils import logging as hf_logging

import semanticodec_hf  # noqa: F401  (registers the Auto classes)
from semanticodec_hf import SemantiCodecFeatureExtractor, SemantiCodecModel
from semanticodec_hf.modeling_semanticodec import RENAMED_STATE_DICT_KEYS
from semanticodec_hf.modeling_semanticodec_quantizer import SemantiCodecQuantizer

OLD_KEYS = {new: old for old, new in RENAMED_STATE_DICT_KEYS.items()}


@pytest.fixture(scope="module")
def tiny():
    model = SemantiCodecModel.tiny(seed=0)
    model.encoder.lstm_kernel = "aten"  # the same kernel for every encode below
    t = np.arange(3 * 16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 300 * t * (1 + 0.2 * t))).astype(np.float32)
    inputs = SemantiCodecFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        codes = model.encode(**inputs).audio_codes
    assert len(torch.unique(codes[0, 0])) > 3 and len(torch.unique(codes[0, 1])) > 3, "ids must vary"
    return model, inputs, codes


def test_the_codebooks_live_in_the_quantizer(tiny):
    model, _, _ = tiny
    assert isinstance(model.quantizer, SemantiCodecQuantizer)
    keys = set(model.state_dict())
    assert {"quantizer.semantic.centroids", "quantizer.acoustic.codebook"} <= keys
    assert not [key for key in keys if key.startswith("quantizer.") and "centroids" not in key and "codebook" not in key]
    assert not [key for key in keys if "quantizer" in key and not key.startswith("quantizer.")]
    assert not hasattr(model.encoder, "positional_encoding") and not hasattr(model.encoder, "codes_to_features")
    config = model.config
    assert model.quantizer.positional_encoding.shape == (config.positional_encoding_max_len,
                                                         config.positional_encoding_dim)


def test_decoding_does_not_touch_the_encoder(tiny):
    model, _, codes = tiny
    kwargs = dict(seed=5, num_inference_steps=2)
    expected = model.decode(codes, **kwargs).audio_values
    streamed = torch.cat(list(model.decode_stream(codes[0], windows_per_chunk=1, **kwargs)))
    encoder = model.encoder
    try:
        model.encoder = torch.nn.Module()  # no attribute of the encoder is left to reach
        assert torch.equal(model.decode(codes, **kwargs).audio_values, expected)
        assert torch.equal(torch.cat(list(model.decode_stream(codes[0], windows_per_chunk=1, **kwargs))), streamed)
    finally:
        model.encoder = encoder


def _with_old_keys(folder, target):
    """A copy of a saved folder whose weights carry the keys from before the quantizer existed."""
    shutil.copytree(folder, target)
    weights = load_file(target / "model.safetensors")
    renamed = {OLD_KEYS.get(key, key): value for key, value in weights.items()}
    assert set(OLD_KEYS.values()) <= set(renamed) and not set(OLD_KEYS) & set(renamed)
    save_file(renamed, target / "model.safetensors", metadata={"format": "pt"})
    return target


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_folder_with_the_old_keys_loads_identically(tiny, tmp_path):
    model, inputs, codes = tiny
    model.save_pretrained(tmp_path / "new")
    old = _with_old_keys(tmp_path / "new", tmp_path / "old")

    records, transformers_logger = _Records(), hf_logging.get_logger("transformers")
    transformers_logger.addHandler(records)
    try:
        loaded, info = SemantiCodecModel.from_pretrained(old, output_loading_info=True)
        auto_loaded = AutoModel.from_pretrained(old)
    finally:
        transformers_logger.removeHandler(records)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not [m for m in records.messages if "LOAD REPORT" in m or "MISSING" in m or "UNEXPECTED" in m], \
        records.messages
    for candidate in (loaded, auto_loaded):
        state = candidate.state_dict()
        assert state.keys() == model.state_dict().keys()
        for key, value in model.state_dict().items():
            assert torch.equal(state[key], value), key
        for (name, a), (_, b) in zip(model.named_buffers(), candidate.named_buffers()):
            assert torch.equal(a, b), name  # the position code is rebuilt too
        candidate.eval().encoder.lstm_kernel = "aten"
        with torch.no_grad():
            assert torch.equal(candidate.encode(**inputs).audio_codes, codes)

    # re-saving writes the new keys (transformers would otherwise undo the renaming it used on load)
    loaded.save_pretrained(tmp_path / "resaved")
    resaved = load_file(tmp_path / "resaved" / "model.safetensors")
    assert set(RENAMED_STATE_DICT_KEYS.values()) <= set(resaved) and not set(RENAMED_STATE_DICT_KEYS) & set(resaved)


def test_load_state_dict_accepts_the_old_keys(tiny):
    """Plain `load_state_dict` (e.g. resuming a training checkpoint written before the rename), also nested."""
    model, _, _ = tiny
    old_state = {OLD_KEYS.get(key, key): value for key, value in model.state_dict().items()}
    fresh = SemantiCodecModel.tiny(seed=1)
    result = fresh.load_state_dict(old_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(fresh.quantizer.semantic.centroids, model.quantizer.semantic.centroids)
    assert torch.equal(fresh.quantizer.acoustic.codebook, model.quantizer.acoustic.codebook)
    assert set(OLD_KEYS.values()) <= set(old_state)  # the caller's dict is left as it was

    wrapper = torch.nn.Module()
    wrapper.codec = SemantiCodecModel.tiny(seed=2)
    wrapper.load_state_dict({f"codec.{key}": value for key, value in old_state.items()}, strict=True)
    assert torch.equal(wrapper.codec.quantizer.acoustic.codebook, model.quantizer.acoustic.codebook)

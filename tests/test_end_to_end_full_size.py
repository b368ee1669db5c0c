"""Full-size end to end (slow): the published architecture of every token rate, with the parity weight recipe
loaded through the converter, encodes a clip and decodes it to a waveform of the input's length.

The per-stage parity tests prove each stage against the original; this proves the stages compose at full size
for all three token rates (25 and 50 tokens/s decoders are not covered by a fixture).
"""

import gc

import numpy as np
import pytest
import torch

from parity_weights import build_decoder_state_dict, build_encoder_state_dict, build_semantic_centroids
from semanticodec_hf import PUBLISHED_TOKEN_RATES, SemantiCodecFeatureExtractor
from semanticodec_hf.convert_semanticodec_original_to_hf import convert_original_checkpoint
from semanticodec_hf.long_audio import reference_output_samples

pytestmark = pytest.mark.slow


def _clip(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.mark.parametrize("token_rate", PUBLISHED_TOKEN_RATES)
def test_full_size_encode_decode_has_the_inputs_length(token_rate):
    vocab = 4096
    model = convert_original_checkpoint(
        build_encoder_state_dict(token_rate), build_decoder_state_dict(token_rate),
        build_semantic_centroids(vocab, token_rate), token_rate, vocab,
    )
    clip = _clip(4.5)
    inputs = SemantiCodecFeatureExtractor()(clip, sampling_rate=16000)
    encoded = model.encode(**inputs)
    frames = int(encoded.audio_codes_lengths[0])
    assert frames == encoded.audio_codes.shape[-1] > 0
    assert 0 <= int(encoded.audio_codes[0, 0].min()) and int(encoded.audio_codes[0, 0].max()) < vocab
    assert int(encoded.audio_codes[0, 1].max()) < model.config.acoustic_codebook_size
    decoded = model.decode(encoded.audio_codes, audio_codes_lengths=encoded.audio_codes_lengths, seed=0,
                           num_inference_steps=5, num_samples=inputs["num_samples"])
    assert decoded.audio_values.shape == (1, 1, len(clip))
    assert torch.isfinite(decoded.audio_values).all() and decoded.audio_values.abs().max() > 0
    assert reference_output_samples(frames, token_rate) >= len(clip)
    del model
    gc.collect()

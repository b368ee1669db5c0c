"""SemantiCodecProcessor: audio -> model inputs, codes <-> LM ids, save/load and AutoProcessor."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from semanticodec_hf.processing_semanticodec import AudioItemError

from semanticodec_hf import (
    SemantiCodecAudioTokenizer,
    SemantiCodecFeatureExtractor,
    SemantiCodecModel,
    SemantiCodecProcessor,
)


@pytest.fixture(scope="module")
def model(tiny_codec_factory) -> SemantiCodecModel:
    return tiny_codec_factory(seed=5)


@pytest.fixture(scope="module")
def processor(model) -> SemantiCodecProcessor:
    return SemantiCodecProcessor.from_codec(model)


def chirp(seconds: float, start_hz: float) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.4 * np.sin(2 * np.pi * start_hz * t * (1 + 2 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def encoded(model, processor):
    clips = [chirp(2.0, 200.0), chirp(1.1, 700.0)]
    inputs = processor(clips, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return model.encode(**inputs)


def test_from_codec_takes_the_layout_of_the_codec(model, processor):
    assert (processor.semantic_vocab_size, processor.acoustic_vocab_size) == (
        model.config.semantic_vocab_size, model.config.acoustic_codebook_size)
    assert processor.vocab_size == 64 + 128 + 4
    assert [processor.bos_token_id, processor.eos_token_id, processor.pad_token_id, processor.sep_token_id] == [
        192, 193, 194, 195]
    assert processor.model_input_names == ["input_features", "input_features_mask", "num_samples"]
    assert "semantic_vocab_size=64" in repr(processor)


def test_call_gives_the_feature_extractors_inputs(processor):
    audio = chirp(1.5, 300.0)
    got = processor(audio, sampling_rate=22050, return_tensors="pt")
    expected = SemantiCodecFeatureExtractor()(audio, sampling_rate=22050, return_tensors="pt")
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key])
    with pytest.raises(ValueError, match="needs `audio`"):
        processor(sampling_rate=16000)


def test_codes_to_ids_and_back_is_exact_for_a_batch_of_different_lengths(processor, encoded):
    codes, lengths = encoded.audio_codes, encoded.audio_codes_lengths
    assert lengths[0] > lengths[1] and len(torch.unique(codes[0, 0, : lengths[0]])) > 3  # real signal
    ids = processor.codes_to_ids(codes, lengths)
    assert [len(row) for row in ids] == [2 * int(n) + 2 for n in lengths]  # interleaved + bos/eos
    assert ids == SemantiCodecAudioTokenizer(layout=processor.layout).codes_to_ids(codes, lengths)
    back = processor.ids_to_codes(ids)
    assert torch.equal(back["audio_codes_lengths"], lengths)
    for row, n in enumerate(lengths.tolist()):
        assert torch.equal(back["audio_codes"][row, :, :n], codes[row, :, :n])
        assert not back["audio_codes"][row, :, n:].any()  # zero past the length

    padded = processor.pad(ids, padding_side="left")  # LM-style left padding with a mask
    again = processor.ids_to_codes(padded["input_ids"], attention_mask=padded["attention_mask"])
    assert torch.equal(again["audio_codes"], back["audio_codes"])

    one = processor.ids_to_codes(ids[1])  # one sequence -> a batch of one
    assert one["audio_codes"].shape == (1, 2, int(lengths[1]))


def test_decoding_the_processors_codes_equals_decoding_the_codec_codes(model, processor, encoded):
    codes, lengths = encoded.audio_codes, encoded.audio_codes_lengths
    with torch.no_grad():
        direct = model.decode(codes, audio_codes_lengths=lengths, seed=1, num_inference_steps=2)
        via_ids = model.decode(**processor.ids_to_codes(processor.codes_to_ids(codes, lengths)), seed=1,
                               num_inference_steps=2)
    assert direct.audio_values.abs().max() > 1e-3
    assert torch.equal(direct.audio_values_lengths, via_ids.audio_values_lengths)
    torch.testing.assert_close(via_ids.audio_values, direct.audio_values, rtol=1e-5, atol=1e-7)


def test_patterns_and_bad_ids(model, encoded):
    semantic = SemantiCodecProcessor.from_codec(model, pattern="semantic_only", add_special_tokens=False)
    ids = semantic.codes_to_ids(encoded.audio_codes, encoded.audio_codes_lengths)
    assert len(ids[0]) == int(encoded.audio_codes_lengths[0])
    assert semantic.ids_to_codes(ids)["audio_codes"].shape[1] == 1
    with pytest.raises(ValueError, match="pattern"):
        SemantiCodecProcessor.from_codec(model, pattern="zigzag")
    processor = SemantiCodecProcessor.from_codec(model)
    ids = processor.codes_to_ids(encoded.audio_codes[0], add_special_tokens=False)
    ids[3] = 5  # a semantic id where an acoustic one belongs
    with pytest.raises(ValueError, match="Position 3 holds semantic id 5"):
        processor.ids_to_codes(ids)
    with pytest.raises(ValueError, match=r"Sequence\(s\) \[0\] hold no audio ids"):
        processor.ids_to_codes([])
    with pytest.raises(ValueError, match=r"Sequence\(s\) \[1\] hold no audio ids"):
        processor.ids_to_codes([processor.codes_to_ids(encoded.audio_codes[0]),
                                 [processor.bos_token_id, processor.eos_token_id]])


def test_save_and_load_round_trip_with_auto_processor(model, tmp_path):
    processor = SemantiCodecProcessor.from_codec(model, SemantiCodecFeatureExtractor(resampler="soxr"),
                                                 pattern="semantic_then_acoustic", add_special_tokens=False)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "SemantiCodecProcessor" and saved["pattern"] == "semantic_then_acoustic"
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["resampler"] == "soxr"
    for loaded in (SemantiCodecProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert isinstance(loaded, SemantiCodecProcessor)
        assert (loaded.pattern, loaded.add_special_tokens, loaded.vocab_size) == (
            "semantic_then_acoustic", False, processor.vocab_size)
        assert loaded.feature_extractor.resampler == "soxr"


# ------------------------------------------------------------------------------------ the audio front door
def test_encode_audio_batches_by_length_and_gives_each_clip_its_codes_alone(model, processor):
    clips = [chirp(2.0, 200.0), chirp(12.0, 500.0), chirp(0.7, 900.0)]  # 1, 2 and 1 windows
    together = processor.encode_audio(model, clips, [16000, 16000, 16000], max_windows_per_batch=2)
    alone = [processor.encode_audio(model, clip, 16000)[0] for clip in clips]
    for got, expected, clip in zip(together, alone, clips):
        assert torch.equal(got.codes, expected.codes)
        assert got.num_samples == len(clip)
        assert got.codes.shape == (2, model.config.num_frames(len(clip)))
    assert not torch.equal(together[0].codes[:, :8], together[2].codes[:, :8])  # codes follow the audio
    # the same codes as the model called directly on the feature extractor's inputs
    inputs = processor(clips[0], sampling_rate=16000)
    with torch.no_grad():
        direct = model.encode(**inputs)
    assert torch.equal(together[0].codes, direct.audio_codes[0, :, : int(direct.audio_codes_lengths[0])])


def test_encode_audio_names_the_bad_item_and_pads_short_clips_on_request(model, processor):
    clips = [chirp(1.0, 300.0), chirp(0.05, 300.0)]
    with pytest.raises(AudioItemError, match=r"Audio item 1: .*at least one 0.16 s") as caught:
        processor.encode_audio(model, clips, 16000)
    assert caught.value.index == 1
    short = processor.encode_audio(model, clips, 16000, short_audio="pad")[1]
    assert short.num_samples == model.config.min_num_samples + 1
    padded = np.pad(clips[1], (0, short.num_samples - len(clips[1])))
    assert torch.equal(short.codes, processor.encode_audio(model, padded, 16000)[0].codes)
    with pytest.raises(ValueError, match="short_audio must be one of"):
        processor.encode_audio(model, clips, 16000, short_audio="trim")
    with pytest.raises(ValueError, match="2 sampling rates for 1 audio"):
        processor.encode_audio(model, [clips[0]], [16000, 16000])


def test_prepare_audio_streams_long_clips_with_the_same_codes(model, processor, monkeypatch):
    from semanticodec_hf import processing_semanticodec

    clip = chirp(11.0, 250.0)
    batched = processor.prepare_audio(clip, 16000)
    assert "input_features" in batched
    monkeypatch.setattr(processing_semanticodec, "STREAM_ENCODE_WINDOWS", 1)
    streamed = processor.prepare_audio(clip, 16000)
    assert set(streamed) == {"stream"}
    assert "input_features" in processor.prepare_audio(clip, 16000, stream=False)
    (a, n_a), (b, n_b) = processor.encode_prepared(model, [batched, streamed])
    assert torch.equal(a, b) and n_a == n_b == len(clip)


def test_decode_codes_and_decode_stream_agree_and_follow_the_seed(model, processor):
    encoded = processor.encode_audio(model, [chirp(1.0, 300.0), chirp(0.5, 600.0)], 16000)
    codes = [clip.codes for clip in encoded]
    waves = processor.decode_codes(model, codes, num_samples=[clip.num_samples for clip in encoded], seed=3,
                                   num_inference_steps=4)
    assert [len(w) for w in waves] == [clip.num_samples for clip in encoded]
    again = processor.decode_codes(model, codes[:1], num_samples=[encoded[0].num_samples], seed=3,
                                   num_inference_steps=4)[0]
    assert waves[0].abs().max() > 1e-2, "decoded audio too small for the comparisons to mean anything"
    # batch == alone up to the float32 rounding of batched GEMMs (as test_modeling's decode batch test)
    torch.testing.assert_close(again, waves[0], rtol=0, atol=1e-5)
    other_seed = processor.decode_codes(model, codes[:1], num_samples=[encoded[0].num_samples], seed=4,
                                        num_inference_steps=4)[0]
    assert (other_seed - waves[0]).abs().max() > 1e-3 * waves[0].abs().max()
    pieces = list(processor.decode_stream(model, codes[0].numpy(), num_samples=encoded[0].num_samples, seed=3,
                                          num_inference_steps=4))
    streamed = torch.cat(pieces)
    assert len(pieces) >= 1 and streamed.shape == waves[0].shape
    torch.testing.assert_close(streamed, waves[0], rtol=0, atol=1e-5)


def test_streams_decode_follows_the_number_of_decode_windows(model, processor):
    from semanticodec_hf.long_audio import decode_windows
    from semanticodec_hf.processing_semanticodec import STREAM_DECODE_WINDOWS

    config = model.config
    frames = next(f for f in range(1, 100000, 7) if len(decode_windows(f, config)) > STREAM_DECODE_WINDOWS)
    assert processor.streams_decode(config, frames)
    assert not processor.streams_decode(config, frames - 7)
    assert not processor.streams_decode(config, config.frames_per_window)

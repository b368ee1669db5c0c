"""SemantiCodecAudioTokenizer: flat vocabulary layout, lossless patterns, clear errors, audio in/out, save/load."""

import json

import numpy as np
import pytest
import torch

from semanticodec_hf.configuration_semanticodec import PUBLISHED_SEMANTIC_VOCAB_SIZES
from semanticodec_hf.tokenization_semanticodec import (
    AUDIO_TOKENIZER_CONFIG_NAME,
    PATTERNS,
    SemantiCodecAudioTokenizer,
    SemantiCodecVocabularyLayout,
    codes_to_ids,
    ids_to_codes,
)

ACOUSTIC = 8192


pytestmark = pytest.mark.usefixtures("one_thread")


def ids_only(pattern: str, semantic: int = 4096, acoustic: int = ACOUSTIC) -> SemantiCodecAudioTokenizer:
    return SemantiCodecAudioTokenizer(layout=SemantiCodecVocabularyLayout(semantic, acoustic), pattern=pattern)


def random_codes(rng, frames: int, semantic: int, acoustic: int = ACOUSTIC) -> torch.Tensor:
    rows = [rng.integers(0, semantic, frames), rng.integers(0, acoustic, frames)]
    return torch.from_numpy(np.stack(rows))


def chirp(seconds: float, sampling_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    return (0.5 * np.sin(2 * np.pi * (150 + 200 * t) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


# ------------------------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("semantic", PUBLISHED_SEMANTIC_VOCAB_SIZES)
def test_layout_offsets(semantic):
    layout = SemantiCodecVocabularyLayout(semantic, ACOUSTIC)
    assert (layout.semantic_offset, layout.acoustic_offset, layout.special_offset) == (0, semantic, semantic + ACOUSTIC)
    specials = [layout.bos_token_id, layout.eos_token_id, layout.pad_token_id, layout.sep_token_id]
    assert specials == [semantic + ACOUSTIC + i for i in range(4)]
    assert layout.vocab_size == semantic + ACOUSTIC + 4
    assert SemantiCodecVocabularyLayout.from_dict(json.loads(json.dumps(layout.to_dict()))) == layout


def test_layout_rejects_inconsistent_dict():
    data = SemantiCodecVocabularyLayout(4096, ACOUSTIC).to_dict()
    data["pad_token_id"] = 0
    with pytest.raises(ValueError, match="pad_token_id"):
        SemantiCodecVocabularyLayout.from_dict(data)
    with pytest.raises(ValueError, match="positive"):
        SemantiCodecVocabularyLayout(0, ACOUSTIC)


# ------------------------------------------------------------------------------------------------ patterns
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("semantic", PUBLISHED_SEMANTIC_VOCAB_SIZES)
def test_round_trip_every_pattern_and_vocab(pattern, semantic):
    rng = np.random.default_rng(semantic)
    tokenizer = ids_only(pattern, semantic)
    for frames in (0, 1, 2, 7, 500):
        codes = random_codes(rng, frames, semantic)
        if frames:  # the largest id of each stream sits right below the next range
            codes[:, 0] = torch.tensor([semantic - 1, ACOUSTIC - 1])
        for special in (True, False):
            ids = tokenizer.codes_to_ids(codes, add_special_tokens=special)
            assert len(ids) == frames * tokenizer.ids_per_frame + 2 * special
            assert all(0 <= i < tokenizer.vocab_size for i in ids)
            back = tokenizer.decode_ids(ids)
            expected = codes[:1] if pattern == "semantic_only" else codes
            assert back.dtype == torch.long and torch.equal(back, expected)
            if pattern != "semantic_only":
                assert tokenizer.codes_to_ids(back, add_special_tokens=special) == ids


def test_pattern_layouts_are_as_documented():
    layout = SemantiCodecVocabularyLayout(10, 20)
    codes = np.array([[1, 2, 3], [4, 5, 6]])
    assert codes_to_ids(codes, layout, "interleaved").tolist() == [1, 14, 2, 15, 3, 16]
    assert codes_to_ids(codes, layout, "semantic_then_acoustic").tolist() == [1, 2, 3, 14, 15, 16]
    assert codes_to_ids(codes, layout, "semantic_only").tolist() == [1, 2, 3]
    assert ids_to_codes([1, 14, 2, 15], layout, "interleaved").tolist() == [[1, 2], [4, 5]]


def test_batched_codes_and_padded_ids_round_trip():
    rng = np.random.default_rng(0)
    tokenizer = ids_only("interleaved", 8192)
    codes = random_codes(rng, 9, 8192)[None].repeat(3, 1, 1)
    lengths = [9, 4, 1]
    ids = tokenizer.codes_to_ids(codes, audio_codes_lengths=lengths)
    assert [len(row) for row in ids] == [2 * n + 2 for n in lengths]
    for side in ("right", "left"):
        padded = tokenizer.pad(ids, padding_side=side)
        back = tokenizer.decode_ids(padded["input_ids"], padded["attention_mask"])
        assert all(torch.equal(b, codes[i, :, :n]) for i, (b, n) in enumerate(zip(back, lengths)))
        # the pad id alone (no mask) is stripped too
        back = tokenizer.decode_ids(padded["input_ids"])
        assert all(torch.equal(b, codes[i, :, :n]) for i, (b, n) in enumerate(zip(back, lengths)))


def test_join_and_split_clips():
    tokenizer = ids_only("interleaved", 4096)
    clips = [tokenizer.codes_to_ids(torch.tensor([[i, i + 1], [i, 7]])) for i in range(3)]
    joined = tokenizer.join_clips(clips)
    assert joined.count(tokenizer.sep_token_id) == 2 and joined[0] == tokenizer.bos_token_id
    assert tokenizer.split_clips(joined) == [c[1:-1] for c in clips]
    with pytest.raises(ValueError, match="<sep>.*position 5.*split_clips"):
        tokenizer.decode_ids(joined)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "pattern, ids, message",
    [
        ("interleaved", [1, 4097, 4098, 4099],
         r"Position 2 holds acoustic id 4098 \(acoustic code 2\).*even offset 2.*frame 1.*semantic id"),
        ("interleaved", [1, 2], r"Position 1 holds semantic id 2.*odd offset 1.*acoustic id in \[4096, 12288\)"),
        ("interleaved", [1, 4096, 3], r"even number of audio ids.*got 3"),
        ("interleaved", [1, 4096, -5, 4097], r"Id -5 at position 2 is outside the vocabulary \[0, 12292\)"),
        ("interleaved", [1, 4096, 12292, 4097], r"Id 12292 at position 2 is outside"),
        ("semantic_then_acoustic", [1, 2, 4100, 3], r"Position 3 holds semantic id 3.*second half"),
        ("semantic_then_acoustic", [4100, 2], r"Position 0 holds acoustic id 4100.*first half"),
        ("semantic_only", [1, 2, 4200], r"Position 2 holds acoustic id 4200.*semantic_only"),
        ("interleaved", [12288, 1, 12288, 4097, 12289], r"<bos> \(id 12288\) at position 2 sits among audio ids"),
    ],
)
def test_decode_ids_errors_name_position_and_value(pattern, ids, message):
    with pytest.raises(ValueError, match=message):
        ids_only(pattern).decode_ids(ids)


def test_decode_ids_positions_count_from_the_unpadded_input():
    tokenizer = ids_only("interleaved")
    pad, bos = tokenizer.pad_token_id, tokenizer.bos_token_id
    with pytest.raises(ValueError, match="Position 5 holds semantic id 3.*frame 1"):
        tokenizer.decode_ids([pad, bos, 1, 4096, 2, 3])
    with pytest.raises(ValueError, match=r"Sequence 1: Position 2 holds semantic id 9"):
        tokenizer.decode_ids([[bos, 1, 4096], [bos, 1, 9, 4096, 5]])
    with pytest.raises(ValueError, match="hole"):
        tokenizer.decode_ids([1, 4096, 2, 4097], attention_mask=[1, 0, 1, 1])
    with pytest.raises(ValueError, match="integer"):
        tokenizer.decode_ids(np.array([1.0, 4096.0]))
    with pytest.raises(ValueError, match="Unknown pattern"):
        ids_only("delay")


def test_codes_out_of_range_are_rejected():
    tokenizer = ids_only("interleaved", 4096)
    with pytest.raises(ValueError, match="acoustic code 8192 at frame 1"):
        tokenizer.codes_to_ids(torch.tensor([[0, 1], [0, 8192]]))
    with pytest.raises(ValueError, match=r"shape \(2, frames\)"):
        tokenizer.codes_to_ids(torch.zeros(3, 4, dtype=torch.long))


# ------------------------------------------------------------------------------------------------ audio
def test_audio_ids_match_model_encode_and_batching(tiny_tokenizer):
    clips = [chirp(3.0, 16000), chirp(0.5, 16000), np.zeros(16000, np.float32), chirp(11.0, 16000)]
    batch = tiny_tokenizer(clips, sampling_rate=16000, return_audio_codes=True)
    for clip, ids, codes, frames in zip(clips, batch["input_ids"], batch["audio_codes"], batch["num_frames"]):
        alone = tiny_tokenizer(clip, sampling_rate=16000)
        assert alone["input_ids"] == ids and alone["num_frames"] == frames
        features = tiny_tokenizer.feature_extractor(clip, sampling_rate=16000)
        out = tiny_tokenizer.model.encode(**features)
        reference = out.audio_codes[0, :, : int(out.audio_codes_lengths[0])]
        assert torch.equal(codes, reference)
        body = codes_to_ids(reference, tiny_tokenizer.layout, "interleaved").tolist()
        assert ids == [tiny_tokenizer.bos_token_id, *body, tiny_tokenizer.eos_token_id]
        assert torch.equal(tiny_tokenizer.decode_ids(ids), codes)
    assert len(set(batch["input_ids"][0][1:-1:2])) > 3, "ids should vary (informative tiny codebooks)"
    batch["audio_codes"][0][0, 0] = 0  # ordinary tensors, not inference-mode ones


def test_audio_call_shapes_and_rates(tiny_tokenizer):
    clip = chirp(2.0, 44100)
    single = tiny_tokenizer(clip, sampling_rate=44100)
    assert isinstance(single["input_ids"], list) and isinstance(single["input_ids"][0], int)
    pt = tiny_tokenizer([clip, clip[:30000]], sampling_rate=[44100, 44100], return_tensors="pt", padding_side="left")
    assert pt["input_ids"].shape[0] == 2 and pt["attention_mask"][1, 0] == 0
    assert pt["input_ids"][0].tolist() == single["input_ids"]
    with pytest.raises(ValueError, match="sampling_rate"):
        tiny_tokenizer(clip)
    with pytest.raises(ValueError, match="Audio item 1.*0.16 s") as short:
        tiny_tokenizer([clip, clip[:100]], sampling_rate=44100)
    assert "item 0" not in str(short.value), "the failing item is named once, by its place in the batch"
    padded = SemantiCodecAudioTokenizer(tiny_tokenizer.model, short_audio="pad")(clip[:100], sampling_rate=44100)
    assert padded["num_frames"] > 0


@pytest.mark.parametrize("token_rate, per_step, seconds", [(100, 8, 0.16), (50, 4, 0.16), (25, 4, 0.32)])
def test_time_structure_is_exposed(token_rate, per_step, seconds):
    tokenizer = SemantiCodecAudioTokenizer.tiny(token_rate=token_rate)
    assert tokenizer.frames_per_time_step == per_step
    assert tokenizer.time_step_seconds == pytest.approx(seconds)
    assert tokenizer.ids_per_second == pytest.approx(token_rate)


def test_ids_to_audio(tiny_tokenizer):
    ids = tiny_tokenizer([chirp(1.0, 16000), chirp(0.4, 16000)], sampling_rate=16000)["input_ids"]
    waves = tiny_tokenizer.ids_to_audio(ids, num_inference_steps=2, seed=0)
    assert len(waves) == 2 and waves[0].ndim == 1 and waves[0].shape[0] > waves[1].shape[0] > 0
    assert all(wave.pow(2).mean().sqrt() > 1e-2 for wave in waves), "the tiny codec must be audible"
    single = tiny_tokenizer.ids_to_audio(ids[1], num_inference_steps=2, seed=1)
    torch.testing.assert_close(single, waves[1], rtol=1e-4, atol=1e-6)  # batch-size rounding in the UNet
    other_seed = tiny_tokenizer.ids_to_audio(ids[1], num_inference_steps=2, seed=0)  # item i of a batch uses seed + i
    assert (other_seed - waves[1]).abs().max() > 0.1 * waves[1].abs().max()
    with pytest.raises(ValueError, match="semantic_only ids cannot be turned into audio"):
        SemantiCodecAudioTokenizer(tiny_tokenizer.model, pattern="semantic_only").ids_to_audio(ids[0][::2])


# ------------------------------------------------------------------------------------------------ save / load
def test_save_and_load_round_trip(tiny_tokenizer, tmp_path):
    tokenizer = SemantiCodecAudioTokenizer(tiny_tokenizer.model, tiny_tokenizer.feature_extractor,
                                           pattern="semantic_then_acoustic")
    tokenizer.save_pretrained(tmp_path / "tok")
    saved = json.loads((tmp_path / "tok" / AUDIO_TOKENIZER_CONFIG_NAME).read_text())
    assert saved["layout"]["vocab_size"] == tokenizer.vocab_size and saved["codec"] == {"location": "this_folder"}
    assert saved["frames_per_time_step"] == 8
    loaded = SemantiCodecAudioTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.pattern == "semantic_then_acoustic" and loaded.layout == tokenizer.layout
    clip = chirp(1.5, 16000)
    assert loaded(clip, sampling_rate=16000)["input_ids"] == tokenizer(clip, sampling_rate=16000)["input_ids"]

    # A reference to the codec instead of a copy; a plain codec folder; ids-only loading.
    codec_reference = str(tmp_path / "tok")
    referring = SemantiCodecAudioTokenizer(tiny_tokenizer.model, codec_name_or_path=codec_reference,
                                           pattern="semantic_only")
    referring.save_pretrained(tmp_path / "ref", save_codec=False)
    assert not (tmp_path / "ref" / "model.safetensors").exists()
    by_reference = SemantiCodecAudioTokenizer.from_pretrained(tmp_path / "ref")
    assert by_reference.pattern == "semantic_only" and by_reference.model is not None
    tiny_tokenizer.model.save_pretrained(tmp_path / "codec")
    tiny_tokenizer.feature_extractor.save_pretrained(tmp_path / "codec")
    plain = SemantiCodecAudioTokenizer.from_pretrained(tmp_path / "codec")
    assert plain.pattern == "interleaved" and plain.layout == tokenizer.layout
    light = SemantiCodecAudioTokenizer.from_pretrained(tmp_path / "tok", load_codec=False)
    assert light.model is None and light.layout == tokenizer.layout
    with pytest.raises(ValueError, match="needs the codec"):
        light(clip, sampling_rate=16000)
    with pytest.raises(ValueError, match="neither"):
        SemantiCodecAudioTokenizer.from_pretrained(tmp_path)

"""audio_token_layout on its own, ids only (no codec): the flat vocabulary, the three patterns, the error messages
that name what is wrong and where, and the stripping of special tokens.

The tokenizer-level tests (batches, padding masks, clips, audio) live in test_tokenization.py; these pin the
module's functions directly, at the boundaries of every id range.
"""

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from semanticodec_hf.audio_token_layout import (
    PATTERNS,
    SemantiCodecVocabularyLayout,
    as_int_array,
    is_batch_of_ids,
    codes_to_ids,
    ids_to_codes,
    strip_special_tokens,
)

# Small, unequal stream sizes so that every range boundary is a distinct, readable number:
# semantic [0, 10), acoustic [10, 30), <bos> 30, <eos> 31, <pad> 32, <sep> 33, vocab_size 34.
LAYOUT = SemantiCodecVocabularyLayout(10, 20)
BOS, EOS, PAD, SEP = 30, 31, 32, 33


def raises(message: str):
    """`pytest.raises(ValueError)` whose message must contain `message` verbatim (not as a regex)."""
    return pytest.raises(ValueError, match=re.escape(message))


# ------------------------------------------------------------------------------------------------ layout
def test_layout_ranges_are_as_documented():
    """Semantic ids first, acoustic ids shifted by S, then <bos>/<eos>/<pad>/<sep>; to_dict spells all of it out."""
    assert LAYOUT.to_dict() == {
        "semantic_vocab_size": 10,
        "acoustic_vocab_size": 20,
        "semantic_offset": 0,
        "acoustic_offset": 10,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
        "sep_token_id": SEP,
        "vocab_size": 34,
    }
    assert (LAYOUT.special_offset, LAYOUT.num_special_tokens) == (30, 4)


def test_layout_accepts_positive_ints_only():
    """Sizes must be positive ints (numpy ints are converted); bools, floats, strings and zero are rejected."""
    smallest = SemantiCodecVocabularyLayout(1, 1)
    assert (smallest.vocab_size, smallest.bos_token_id) == (6, 2)
    converted = SemantiCodecVocabularyLayout(np.int64(10), np.int32(20))
    assert converted == LAYOUT
    assert type(converted.semantic_vocab_size) is int and type(converted.acoustic_vocab_size) is int
    for bad in (0, -3, True, 2.0, "10", None):
        with raises(f"semantic_vocab_size must be a positive int, got {bad!r}."):
            SemantiCodecVocabularyLayout(bad, 20)
        with raises(f"acoustic_vocab_size must be a positive int, got {bad!r}."):
            SemantiCodecVocabularyLayout(10, bad)


def test_layout_from_config_reads_both_stream_sizes():
    """from_config takes the semantic vocabulary and the acoustic codebook size of a codec config."""
    config = SimpleNamespace(semantic_vocab_size=np.int64(10), acoustic_codebook_size=20, codebook_size=999)
    assert SemantiCodecVocabularyLayout.from_config(config) == LAYOUT


def test_layout_from_dict_checks_what_it_is_given():
    """from_dict needs both sizes, ignores keys it does not know, and rejects derived values that disagree."""
    assert SemantiCodecVocabularyLayout.from_dict({"semantic_vocab_size": 10, "acoustic_vocab_size": 20}) == LAYOUT
    assert SemantiCodecVocabularyLayout.from_dict({**LAYOUT.to_dict(), "comment": "v1"}) == LAYOUT
    with raises("Vocabulary layout is missing 'acoustic_vocab_size'; got keys ['semantic_vocab_size']."):
        SemantiCodecVocabularyLayout.from_dict({"semantic_vocab_size": 10})
    with raises("missing 'semantic_vocab_size'"):
        SemantiCodecVocabularyLayout.from_dict({"acoustic_vocab_size": 20})
    edited = {**LAYOUT.to_dict(), "bos_token_id": 0, "vocab_size": 35}
    with raises("Vocabulary layout is inconsistent (stored value, value implied by the two stream sizes): "
                "{'bos_token_id': (0, 30), 'vocab_size': (35, 34)}. This version of the layout puts semantic ids "
                "first, then acoustic ids, then bos/eos/pad/sep."):
        SemantiCodecVocabularyLayout.from_dict(edited)


@pytest.mark.parametrize(
    "token_id, name",
    [
        (-1, "id -1 (outside the vocabulary [0, 34))"),
        (0, "semantic id 0"),
        (9, "semantic id 9"),
        (10, "acoustic id 10 (acoustic code 0)"),
        (29, "acoustic id 29 (acoustic code 19)"),
        (30, "special token <bos> (id 30)"),
        (33, "special token <sep> (id 33)"),
        (34, "id 34 (outside the vocabulary [0, 34))"),
    ],
)
def test_describe_names_each_range_at_its_boundaries(token_id, name):
    """describe() puts the first and last id of every range in that range, and anything else outside."""
    assert LAYOUT.describe(np.int64(token_id)) == name


# ------------------------------------------------------------------------------------------------ input checks
def test_is_batch_of_ids_tells_one_sequence_from_a_batch():
    """1-D arrays/tensors and flat lists are one sequence; 2-D ones and lists of sequences are a batch."""
    for one in ([], [1, 2], (1, 2), [np.int64(1)], np.arange(3), torch.arange(3)):
        assert is_batch_of_ids(one) is False, one
    for batch in ([[1, 2]], ((1,), (2,)), [np.arange(2)], np.zeros((1, 3), dtype=int), torch.zeros(2, 3)):
        assert is_batch_of_ids(batch) is True, batch
    for bad in (np.array(3), torch.zeros(1, 2, 3)):
        with raises(f"ids must be 1-D (one sequence) or 2-D (a batch), got shape {tuple(bad.shape)}."):
            is_batch_of_ids(bad)
    with raises("got str"):
        is_batch_of_ids("1 2")


def test_as_int_array_flattens_to_int64_and_rejects_non_integers():
    """Ids of any integer dtype come back as a flat int64 array; float ids are an error naming the argument."""
    for ids in (
        [[3, 4], [5, 6]], np.array([3, 4, 5, 6], dtype=np.uint8), torch.tensor([3, 4, 5, 6], dtype=torch.int32),
    ):
        array = as_int_array(ids, "ids")
        assert array.dtype == np.int64 and array.tolist() == [3, 4, 5, 6]
    assert as_int_array([], "ids").dtype == np.int64  # empty: no dtype to check
    with raises("attention_mask must hold integer ids, got dtype float64."):
        as_int_array([1.0, 0.0], "attention_mask")
    # a float tensor that requires grad (logits passed by mistake) gets the same clear error, not numpy's
    with raises("ids must hold integer ids, got dtype float32."):
        as_int_array(torch.ones(3, requires_grad=True), "ids")


# ------------------------------------------------------------------------------------------------ codes -> ids
def test_codes_to_ids_orders_each_pattern_as_documented():
    """interleaved s0 a0 s1 a1 ..., semantic_then_acoustic s... a..., semantic_only s...; acoustic ids shifted by S."""
    codes = np.array([[0, 9, 4], [0, 19, 7]])
    assert codes_to_ids(codes, LAYOUT, "interleaved").tolist() == [0, 10, 9, 29, 4, 17]
    assert codes_to_ids(codes, LAYOUT, "semantic_then_acoustic").tolist() == [0, 9, 4, 10, 29, 17]
    assert codes_to_ids(codes, LAYOUT, "semantic_only").tolist() == [0, 9, 4]
    with raises("Unknown pattern 'delay'; choose one of ['interleaved', 'semantic_then_acoustic', 'semantic_only']."):
        codes_to_ids(codes, LAYOUT, "delay")


@pytest.mark.parametrize("pattern", PATTERNS)
def test_codes_to_ids_returns_int64_whatever_the_input_dtype(pattern):
    """Small unsigned codes do not wrap when shifted into the acoustic range (the result is always int64)."""
    layout = SemantiCodecVocabularyLayout(300, 20)
    for codes in (np.array([[5, 250], [9, 0]], dtype=np.uint8), torch.tensor([[5, 250], [9, 0]], dtype=torch.int16)):
        ids = codes_to_ids(codes, layout, pattern)
        assert ids.dtype == np.int64
        assert sorted(ids.tolist()) == ([5, 250] if pattern == "semantic_only" else [5, 250, 300, 309])
        rows = 1 if pattern == "semantic_only" else 2
        assert ids_to_codes(ids, layout, pattern).tolist() == np.asarray(codes)[:rows].tolist()


@pytest.mark.parametrize(
    "codes, message",
    [
        ([[1, 2, 3]], "got int64 (1, 3)"),
        ([[1, 2, 3], [1, 2, 3], [1, 2, 3]], "got int64 (3, 3)"),
        ([1, 2], "got int64 (2,)"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], "got float64 (2, 3)"),
    ],
)
def test_codes_to_ids_wants_integer_codes_of_shape_2_by_frames(codes, message):
    """Anything but an integer [2, F] array is rejected with its dtype and shape."""
    with raises(f"codes must be an integer array of shape (2, frames) (row 0 semantic, row 1 acoustic), {message}."):
        codes_to_ids(np.array(codes), LAYOUT, "interleaved")


def test_codes_to_ids_rejects_float_tensors_that_require_grad_clearly():
    """A float tensor (even one requiring grad) gets the dtype/shape error, not a numpy conversion error."""
    with raises("codes must be an integer array"):
        codes_to_ids(torch.zeros(2, 3, requires_grad=True), LAYOUT, "interleaved")


@pytest.mark.parametrize(
    "codes, message",
    [
        ([[0, -1, 3, -2], [0, 0, 0, 0]], "semantic code -1 at frame 1 is outside [0, 10) (2 such codes); "),
        ([[0, 1, 10, 2], [0, 0, 0, 0]], "semantic code 10 at frame 2 is outside [0, 10) (1 such codes); "),
        ([[0, 1, 2, 3], [19, 0, 0, 20]], "acoustic code 20 at frame 3 is outside [0, 20) (1 such codes); "),
        ([[0, 1, 2, 3], [0, -4, 0, 0]], "acoustic code -4 at frame 1 is outside [0, 20) (1 such codes); "),
    ],
)
def test_codes_to_ids_rejects_codes_outside_their_stream(codes, message):
    """A code outside its stream's range is named with its value, frame and stream (semantic checked first)."""
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        codes_to_ids(np.array(codes), LAYOUT, "interleaved")


# ------------------------------------------------------------------------------------------------ ids -> codes
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("frames", [0, 1, 2, 3, 6])
def test_ids_to_codes_inverts_codes_to_ids(pattern, frames):
    """Every pattern is lossless, including the first and last code of both streams and an empty clip."""
    rng = np.random.default_rng(frames)
    codes = np.stack([rng.integers(0, 10, frames), rng.integers(0, 20, frames)])
    if frames >= 2:
        codes[:, 0], codes[:, -1] = (0, 0), (9, 19)
    ids = codes_to_ids(codes, LAYOUT, pattern)
    back = ids_to_codes(ids, LAYOUT, pattern)
    expected = codes[:1] if pattern == "semantic_only" else codes
    assert back.dtype == np.int64 and back.shape == expected.shape and np.array_equal(back, expected)
    assert np.array_equal(ids_to_codes(torch.from_numpy(ids), LAYOUT, pattern), expected)
    assert np.array_equal(ids_to_codes(ids.tolist(), LAYOUT, pattern), expected)


def test_ids_to_codes_semantic_only_takes_any_length():
    """semantic_only has one id per frame, so odd lengths are fine there (and only there)."""
    assert ids_to_codes([4, 0, 9], LAYOUT, "semantic_only").tolist() == [[4, 0, 9]]
    for pattern in ("interleaved", "semantic_then_acoustic"):
        with raises(f"The {pattern} pattern needs an even number of audio ids (one semantic and one acoustic id per "
                    "frame), got 3 (positions 0..2); the sequence is truncated or has an extra id."):
            ids_to_codes([4, 10, 9], LAYOUT, pattern)
    with raises("got 5 (positions 7..11)"):
        ids_to_codes([4, 10, 9, 11, 2], LAYOUT, "interleaved", position_offset=7)


def test_ids_to_codes_rejects_ids_outside_the_vocabulary():
    """Ids below 0 or >= vocab_size are named with their value and position (counted from position_offset)."""
    with pytest.raises(ValueError, match="^" + re.escape("Id 34 at position 2 is outside the vocabulary [0, 34).")):
        ids_to_codes([1, 10, 34, 11, -1, 12], LAYOUT, "interleaved")
    with raises("Id -1 at position 4 is outside"):
        ids_to_codes([1, 10, 2, 11, -1, 12], LAYOUT, "interleaved")
    with raises("Id -1 at position 7 is outside"):
        ids_to_codes([1, 10, 2, 11, -1, 12], LAYOUT, "interleaved", position_offset=3)


@pytest.mark.parametrize("special", [BOS, EOS, PAD, SEP])
def test_ids_to_codes_rejects_special_tokens_among_audio_ids(special):
    """Any special token inside the audio ids is an error that names it, its position and the way out."""
    name = LAYOUT.describe(special)
    with pytest.raises(ValueError, match="^" + re.escape(
        f"{name} at position 1 sits among audio ids; only a leading <bos>, a trailing <eos> and <pad> at either "
        "end are allowed. Split multi-clip sequences with `split_clips` first."
    )):
        ids_to_codes([1, special, 2, 11], LAYOUT, "interleaved")
    with raises(f"{name} at position 3 sits among"):
        ids_to_codes([1, special], LAYOUT, "semantic_only", position_offset=2)


@pytest.mark.parametrize(
    "pattern, ids, offset, message",
    [
        ("interleaved", [1, 10, 12, 2, 3, 13], 0,
         "Position 2 holds acoustic id 12 (acoustic code 2), but it is the even offset 2 in the audio ids (frame 1) "
         "of an interleaved sequence, which must hold a semantic id in [0, 10) (2 misplaced ids in total)."),
        ("interleaved", [1, 10, 2, 3], 5,
         "Position 8 holds semantic id 3, but it is the odd offset 3 in the audio ids (frame 1) of an interleaved "
         "sequence, which must hold an acoustic id in [10, 30) (1 misplaced ids in total)."),
        ("semantic_then_acoustic", [1, 2, 3, 10, 4, 11], 2,
         "Position 6 holds semantic id 4, but it is the offset 4 in the second half of a semantic_then_acoustic "
         "sequence of 6 audio ids, which must hold an acoustic id in [10, 30) (1 misplaced ids in total)."),
        ("semantic_then_acoustic", [1, 2, 3, 4, 10, 11], 0,  # the first id of the second half
         "Position 3 holds semantic id 4, but it is the offset 3 in the second half of a semantic_then_acoustic "
         "sequence of 6 audio ids, which must hold an acoustic id in [10, 30) (1 misplaced ids in total)."),
        ("semantic_then_acoustic", [1, 2, 10, 10, 11, 12], 0,
         "Position 2 holds acoustic id 10 (acoustic code 0), but it is the offset 2 in the first half of a "
         "semantic_then_acoustic sequence of 6 audio ids, which must hold a semantic id in [0, 10) "
         "(1 misplaced ids in total)."),
        ("semantic_only", [1, 29, 2], 4,
         "Position 5 holds acoustic id 29 (acoustic code 19), but it is the offset 1 of a semantic_only sequence, "
         "which must hold a semantic id in [0, 10) (1 misplaced ids in total)."),
    ],
)
def test_ids_to_codes_names_the_first_misplaced_id(pattern, ids, offset, message):
    """An id of the wrong stream is reported with its absolute position, where it sits in the pattern, and what
    belongs there; the acoustic range starts exactly at acoustic_offset."""
    with raises(message):
        ids_to_codes(ids, LAYOUT, pattern, position_offset=offset)


def test_ids_to_codes_counts_positions_from_zero_by_default():
    """Without position_offset, positions are indices into the ids given."""
    with raises("Position 3 holds semantic id 3, but it is the odd offset 3"):
        ids_to_codes([1, 10, 2, 3], LAYOUT, "interleaved")
    with raises("Unknown pattern 'semantic'"):
        ids_to_codes([1], LAYOUT, "semantic")
    with raises("ids must hold integer ids, got dtype float64."):
        ids_to_codes([1.0, 10.0], LAYOUT, "interleaved")


# ------------------------------------------------------------------------------------------------ special tokens
@pytest.mark.parametrize(
    "ids, body, start",
    [
        ([], [], 0),
        ([PAD, PAD, PAD], [], 3),
        ([BOS, EOS], [], 1),
        ([BOS], [], 1),
        ([EOS], [], 0),
        ([1, 10], [1, 10], 0),
        ([PAD, PAD, BOS, 1, 10, EOS, PAD, PAD], [1, 10], 3),
        ([PAD, 1, 10, PAD, PAD, PAD], [1, 10], 1),
        ([BOS, BOS, 1, EOS, EOS], [BOS, 1, EOS], 1),  # only one of each is stripped
        ([EOS, 1, BOS], [EOS, 1, BOS], 0),  # each only at its own end
        ([1, PAD, 10], [1, PAD, 10], 0),  # <pad> only at the ends
        ([BOS, PAD, 1, PAD, EOS], [PAD, 1, PAD], 1),  # <pad> is stripped before <bos>/<eos>, not after
        ([SEP, 1, SEP], [SEP, 1, SEP], 0),
    ],
)
def test_strip_special_tokens(ids, body, start):
    """Drops <pad> at both ends, then one leading <bos> and one trailing <eos>; returns the body and its start."""
    got, got_start = strip_special_tokens(np.array(ids, dtype=np.int32), LAYOUT)
    assert got.tolist() == body and got_start == start
    assert got.dtype == np.int64


def test_strip_special_tokens_flattens_a_single_row():
    """A [1, N] row (one sequence of a batch) is stripped like the flat sequence."""
    got, start = strip_special_tokens([[PAD, BOS, 1, 10, EOS]], LAYOUT)
    assert got.tolist() == [1, 10] and start == 2

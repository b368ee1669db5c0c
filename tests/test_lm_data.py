"""The LM data path: pair-safe blocks, padding and loss masking, batch order, recipes."""

import re

import numpy as np
import pytest
import torch

from semanticodec_hf.lm.config import load_recipe, recipe_from_dict
from semanticodec_hf.lm.data import (
    IGNORE_INDEX,
    AudioLMDataCollator,
    BlockBuilder,
    GlobalBatchOrder,
    pack_sequences,
    split_sequences,
    splits_a_frame,
    synthetic_corpus,
)
from semanticodec_hf.audio_token_layout import PATTERNS, SemantiCodecVocabularyLayout
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

LAYOUT = SemantiCodecVocabularyLayout(64, 128)  # semantic [0, 64), acoustic [64, 192), <bos> 192, <eos> 193, <pad> 194
BOS, EOS, PAD = LAYOUT.bos_token_id, LAYOUT.eos_token_id, LAYOUT.pad_token_id


def _random_clips(rng, count, pattern="interleaved"):
    return [
        synthetic_corpus(LAYOUT, pattern, 1, int(rng.integers(1, 40)), seed=int(rng.integers(1 << 30)), noise=0.5)[0]
        for _ in range(count)
    ]


def _assert_pairs_whole(block):
    """In an interleaved block every acoustic id directly follows a semantic id, and vice versa."""
    for position, token in enumerate(block):
        is_acoustic = LAYOUT.acoustic_offset <= token < LAYOUT.special_offset
        after_semantic = position > 0 and block[position - 1] < LAYOUT.acoustic_offset
        assert is_acoustic == after_semantic, (position, block)


@pytest.mark.parametrize("builder", [pack_sequences, split_sequences])
def test_blocks_never_split_a_frame_and_lose_nothing(builder):
    rng = np.random.default_rng(0)
    for trial in range(60):
        clips = _random_clips(rng, int(rng.integers(1, 8)))
        block_size = int(rng.integers(2, 30))
        blocks = builder(clips, block_size, LAYOUT)
        assert all(1 <= len(b) <= block_size for b in blocks)
        for block in blocks:
            _assert_pairs_whole(block)
        assert sum(blocks, []) == sum(clips, [])  # the same ids in the same order: nothing dropped
        if builder is pack_sequences:
            # packed blocks are full up to the pair rule (at most one id short), except the last
            assert all(len(b) >= block_size - 1 for b in blocks[:-1])


def test_odd_block_size_cut_falls_back_one_id():
    clip = [LAYOUT.bos_token_id, 1, 64 + 1, 2, 64 + 2, LAYOUT.eos_token_id]
    assert pack_sequences([clip], 4, LAYOUT) == [[LAYOUT.bos_token_id, 1, 65], [2, 66, LAYOUT.eos_token_id]]
    with pytest.raises(ValueError, match="at least 2 ids"):
        pack_sequences([clip], 1, LAYOUT)


def test_block_builder_works_in_datasets_map():
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(1)
    clips = _random_clips(rng, 12)
    dataset = datasets.Dataset.from_dict({"input_ids": clips, "duration": [1.0] * 12})
    blocks = dataset.map(BlockBuilder(LAYOUT, 16), batched=True, batch_size=5, remove_columns=dataset.column_names)
    assert sum(blocks["input_ids"], []) == sum(clips, [])
    for block in blocks["input_ids"]:
        assert len(block) <= 16
        _assert_pairs_whole(block)
    with pytest.raises(KeyError, match="ids"):
        BlockBuilder(LAYOUT, 16, column="ids")({"input_ids": clips})


def test_collator_pads_to_block_size_and_masks_padding_in_the_loss():
    collate = AudioLMDataCollator(LAYOUT, 8)
    short = [LAYOUT.bos_token_id, 3, 67]
    full = [5, 69, 6, 70, 7, 71, 8, 72]
    batch = collate([{"input_ids": short}, {"input_ids": full}])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"][0].tolist() == short + [LAYOUT.pad_token_id] * 5
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert batch["labels"][0].tolist() == short + [IGNORE_INDEX] * 5
    assert torch.equal(batch["labels"][1], batch["input_ids"][1])
    # too long: cut at the last frame boundary that fits, never mid-pair
    long = [1, 65, 2, 66, 3, 67, 4, 68, 5, 69]
    assert AudioLMDataCollator(LAYOUT, 7)([long])["input_ids"][0].tolist() == [1, 65, 2, 66, 3, 67, LAYOUT.pad_token_id]
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_global_batch_order_is_a_seeded_permutation_per_epoch():
    order = GlobalBatchOrder(10, 3, seed=7)
    assert order.batches_per_epoch == 3
    epoch0 = sum((order(k) for k in range(3)), [])
    epoch1 = sum((order(k) for k in range(3, 6)), [])
    assert len(set(epoch0)) == 9 and len(set(epoch1)) == 9
    assert epoch0 != epoch1
    assert GlobalBatchOrder(10, 3, seed=7)(4) == order(4)  # a pure function of (seed, k): resumable
    assert GlobalBatchOrder(10, 3, seed=8)(0) != order(0)
    with pytest.raises(ValueError, match="fewer than one global micro-batch"):
        GlobalBatchOrder(2, 3, seed=0)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_synthetic_corpus_is_decodable_in_every_pattern(pattern):
    tokenizer = SemantiCodecAudioTokenizer(layout=LAYOUT, pattern=pattern)
    for clip in synthetic_corpus(LAYOUT, pattern, 4, 10, seed=3):
        codes = tokenizer.decode_ids(clip)
        assert codes.shape[-1] == 10
        if pattern != "semantic_only":
            assert tokenizer.codes_to_ids(codes) == clip


def test_recipe_validation_and_overrides(tmp_path):
    base = {"data": {"synthetic": {}}, "train": {"max_steps": 3}}
    assert recipe_from_dict(base).train.max_steps == 3
    with pytest.raises(ValueError, match="Unknown key"):
        recipe_from_dict({"data": {"synthetic": {}}, "train": {"max_step": 3}})
    with pytest.raises(ValueError, match="exactly one of"):
        recipe_from_dict({"data": {}})
    with pytest.raises(ValueError, match="multiple of"):
        recipe_from_dict({"data": {"synthetic": {}}, "train": {"global_batch_size": 6, "gradient_accumulation_steps": 4}})
    with pytest.raises(ValueError, match="architecture"):
        recipe_from_dict({"data": {"synthetic": {}}, "model": {"architecture": "rnn"}})
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  synthetic: {}\ntrain:\n  max_steps: 3\n")
    recipe = load_recipe(path, ["train.max_steps=9", "model.architecture=llama", "data.block_size=64"])
    assert (recipe.train.max_steps, recipe.model.architecture, recipe.data.block_size) == (9, "llama", 64)
    with pytest.raises(ValueError, match="section.key=value"):
        load_recipe(path, ["train.max_steps"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_shipped_recipes_load():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "recipes"
    tiny = load_recipe(root / "lm_tiny_cpu.yaml")
    big = load_recipe(root / "lm_realistic_gpu.yaml")
    assert tiny.data.synthetic is not None and big.data.tokenized_dir is not None


def test_apply_bpe_is_lossless_and_keeps_special_tokens():
    pytest.importorskip("sentencepiece")
    from semanticodec_hf.lm.data import apply_bpe, bpe_layout
    from semanticodec_hf.acoustic_bpe import AcousticBPE

    clips = synthetic_corpus(LAYOUT, "semantic_only", 6, 30, seed=5)
    bpe = AcousticBPE.train([c[1:-1] for c in clips], num_base_ids=64, vocab_size=90)
    target = bpe_layout(bpe, LAYOUT)
    pieces = apply_bpe(clips, bpe, LAYOUT)
    for clip, encoded in zip(clips, pieces):
        assert encoded[0] == target.bos_token_id and encoded[-1] == target.eos_token_id
        assert bpe.decode(encoded[1:-1]) == clip[1:-1]
    assert sum(map(len, pieces)) < sum(map(len, clips))  # repeated motifs compress
    with pytest.raises(ValueError, match="semantic_only"):
        apply_bpe(synthetic_corpus(LAYOUT, "interleaved", 1, 4), bpe, LAYOUT)


# ------------------------------------------------------------------------------------------------ edge cases
@pytest.mark.parametrize(
    "ids, cut, splits",
    [
        ([1, 65], 1, True),  # s | a of one frame
        ([1, 64], 1, True),  # the acoustic range starts at acoustic_offset (acoustic code 0) ...
        ([1, 191], 1, True),  # ... and ends right below the special tokens
        ([65, 1], 1, False),  # between two frames
        ([1, 2], 1, False),  # semantic | semantic (semantic_only, first half of semantic_then_acoustic)
        ([64, 65], 1, False),  # acoustic | acoustic (second half of semantic_then_acoustic)
        ([1, BOS], 1, False),  # a cut before a special token never splits a frame
        ([1, EOS], 1, False),
        ([65, 1], 0, False),  # before the first id / after the last one: nothing to split
        ([1, 65, 2], 3, False),
    ],
)
def test_splits_a_frame_only_between_a_semantic_id_and_the_acoustic_id_after_it(ids, cut, splits):
    """The pair rule itself, at every range boundary and at both ends of the sequence."""
    assert splits_a_frame(ids, cut, LAYOUT) is splits


def test_block_builder_packs_by_default_and_can_keep_clips_apart():
    """Packing (the default) concatenates the batch's clips before cutting; packing=False cuts each clip alone."""
    clips = [[BOS, 1, 65, EOS], [BOS, 2, 66, 3, 67, EOS]]
    packed = [[BOS, 1, 65, EOS, BOS, 2, 66], [3, 67, EOS]]  # the cut at 8 would split (3, 67): one id earlier
    assert BlockBuilder(LAYOUT, 8)({"input_ids": clips}) == {"input_ids": packed}
    assert BlockBuilder(LAYOUT, 8, packing=True)({"input_ids": clips}) == {"input_ids": packed}
    assert BlockBuilder(LAYOUT, 8, packing=False, column="ids")({"ids": clips}) == {"input_ids": clips}


def test_collator_output_types_and_edge_cases():
    """Plain id lists are accepted as well as dicts, every output is a LongTensor, an empty block is all padding
    (masked out of the loss), and an empty batch is an error."""
    batch = AudioLMDataCollator(LAYOUT, 4)([[1, 65], []])
    assert all(batch[key].dtype == torch.long for key in ("input_ids", "attention_mask", "labels"))
    assert batch["input_ids"].tolist() == [[1, 65, PAD, PAD], [PAD] * 4]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [0] * 4]
    assert batch["labels"].tolist() == [[1, 65, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX] * 4]
    with pytest.raises(ValueError, match=r"^Cannot collate an empty batch\.$"):
        AudioLMDataCollator(LAYOUT, 4)([])


def test_global_batch_order_allows_exactly_one_batch_per_epoch():
    """A training set of exactly one global micro-batch is enough: every step sees all of it, reshuffled."""
    order = GlobalBatchOrder(3, 3, seed=0)
    assert order.batches_per_epoch == 1
    assert all(sorted(order(k)) == [0, 1, 2] for k in range(4))


def _smallest_period(values):
    return next(p for p in range(1, len(values) + 1) if values[p:] == values[:-p])


def test_synthetic_corpus_is_seeded():
    """The corpus is a pure function of its seed."""
    corpus = synthetic_corpus(LAYOUT, "interleaved", 3, 12, seed=4)
    assert synthetic_corpus(LAYOUT, "interleaved", 3, 12, seed=4) == corpus
    assert synthetic_corpus(LAYOUT, "interleaved", 3, 12, seed=5) != corpus
    with pytest.raises(ValueError, match=re.escape(f"Unknown pattern 'delay'; choose one of {list(PATTERNS)}.")):
        synthetic_corpus(LAYOUT, "delay", 1, 4)


def test_synthetic_clips_repeat_short_motifs_over_the_whole_semantic_vocabulary():
    """Without noise (the default) each clip's semantic stream repeats one random motif of 3 to 6 ids (motifs of
    every such length occur), and over a corpus every semantic id, 0 and S-1 included, is used."""
    clips = synthetic_corpus(LAYOUT, "semantic_only", 40, 30, seed=1)
    assert all(clip[0] == BOS and clip[-1] == EOS and len(clip) == 32 for clip in clips)
    assert {_smallest_period(clip[1:-1]) for clip in clips} == {3, 4, 5, 6}
    small = SemantiCodecVocabularyLayout(4, 8)
    clips = synthetic_corpus(small, "semantic_only", 20, 12, seed=1)
    assert set(sum((clip[1:-1] for clip in clips), [])) == {0, 1, 2, 3}


def test_synthetic_noise_replaces_ids_by_independent_uniform_draws():
    """noise=1 replaces every semantic id by its own uniform draw: no clip keeps a motif, every id value occurs."""
    layout = SemantiCodecVocabularyLayout(4, 8)
    clips = synthetic_corpus(layout, "semantic_only", 10, 30, seed=1, noise=1.0)
    assert all(_smallest_period(clip[1:-1]) > 6 for clip in clips)
    assert all(set(clip[1:-1]) == {0, 1, 2, 3} for clip in clips)


@pytest.fixture(scope="module")
def bpe():
    pytest.importorskip("sentencepiece")
    from semanticodec_hf.acoustic_bpe import AcousticBPE

    clips = synthetic_corpus(LAYOUT, "semantic_only", 6, 30, seed=5)
    return AcousticBPE.train([c[1:-1] for c in clips], num_base_ids=64, vocab_size=90)


def test_apply_bpe_keeps_exactly_the_special_tokens_the_clip_has(bpe):
    """<bos>/<eos> are carried over only where the clip has them; <pad> at either end is dropped, never turned
    into <bos>/<eos>."""
    from semanticodec_hf.lm.data import apply_bpe, bpe_layout

    target = bpe_layout(bpe, LAYOUT)
    body = [1, 2, 3, 1, 2, 3]
    pieces = bpe.encode(body)
    clips = [
        [BOS, *body, EOS],
        body,
        [BOS, *body],
        [*body, EOS],
        [BOS, *body, PAD],
        [PAD, *body, EOS],
        [PAD, BOS, *body, EOS, PAD],
        [BOS, EOS],
        [],
    ]
    bos, eos = [target.bos_token_id], [target.eos_token_id]
    assert apply_bpe(clips, bpe, LAYOUT) == [
        bos + pieces + eos, pieces, bos + pieces, pieces + eos, bos + pieces, pieces + eos, bos + pieces + eos,
        bos + eos, [],
    ]


@pytest.mark.parametrize("bad", [LAYOUT.acoustic_offset, -1])
def test_apply_bpe_rejects_clips_with_non_semantic_ids(bpe, bad):
    """Any id outside the semantic range (even acoustic code 0) is an error naming the clip and the fix."""
    from semanticodec_hf.lm.data import apply_bpe

    with pytest.raises(ValueError, match="^" + re.escape(
        "Clip 1 holds non-semantic ids; acoustic BPE needs a semantic_only corpus (tokenize with --pattern "
        "semantic_only).") + "$"):
        apply_bpe([[BOS, 1, 2, EOS], [BOS, 1, bad, 2, EOS]], bpe, LAYOUT)

"""The LM data path: pair-safe blocks, padding and loss masking, batch order, recipes."""

import numpy as np
import pytest
import torch

from lm.config import load_recipe, recipe_from_dict
from lm.data import (
    IGNORE_INDEX,
    AudioLMDataCollator,
    BlockBuilder,
    GlobalBatchOrder,
    pack_sequences,
    split_sequences,
    synthetic_corpus,
)
from semanticodec_hf.audio_token_layout import PATTERNS, SemantiCodecVocabularyLayout
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

LAYOUT = SemantiCodecVocabularyLayout(64, 128)


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
    from lm.data import apply_bpe, bpe_layout
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

"""Id sequences -> fixed-size LM blocks: pair-safe cutting, packing, padding with loss masking, batch order.

The one rule every cut obeys: never between the semantic and the acoustic id of one frame. In the interleaved
pattern a frame is the pair `(s, a)`; a block that ended after `s` would teach the model a frame without its
acoustic half and start the next block on an acoustic id.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from semanticodec_hf.audio_token_layout import PATTERNS, SemantiCodecVocabularyLayout, codes_to_ids, strip_special_tokens

from .config import ACOUSTIC_RULES, SyntheticCorpus

IGNORE_INDEX = -100  # label value that torch's cross-entropy (and transformers' losses) skip


def splits_a_frame(ids: Sequence[int], cut: int, layout: SemantiCodecVocabularyLayout) -> bool:
    """True when cutting `ids` before position `cut` separates a semantic id from the acoustic id after it."""
    if cut <= 0 or cut >= len(ids):
        return False
    return int(ids[cut - 1]) < layout.acoustic_offset and layout.acoustic_offset <= int(ids[cut]) < layout.special_offset


def pair_safe_cut(ids: Sequence[int], limit: int, layout: SemantiCodecVocabularyLayout) -> int:
    """The largest cut <= `limit` that keeps every frame pair whole (at most one position earlier)."""
    if limit < 2:
        raise ValueError(f"A block must hold at least 2 ids (one frame pair), got a limit of {limit}.")
    cut = min(limit, len(ids))
    return cut - 1 if splits_a_frame(ids, cut, layout) else cut


def cut_into_blocks(ids: Sequence[int], block_size: int, layout: SemantiCodecVocabularyLayout) -> List[List[int]]:
    """One id sequence -> consecutive pieces of at most `block_size` ids, cut only between frames."""
    ids = list(ids)
    blocks, start = [], 0
    while start < len(ids):
        cut = start + pair_safe_cut(ids[start:start + block_size + 1], block_size, layout)
        blocks.append(ids[start:cut])
        start = cut
    return blocks


def pack_sequences(
    sequences: Iterable[Sequence[int]], block_size: int, layout: SemantiCodecVocabularyLayout
) -> List[List[int]]:
    """Concatenate clips (each already `<bos> ... <eos>`) into one stream and cut it into blocks.

    Every block but the last is full up to the pair rule (it may be one id short, then padded); nothing is
    dropped. Attention runs across clip boundaries inside a block, as in GPT-style packing; the `<bos>`/`<eos>`
    between clips tell the model where one ends.
    """
    stream: List[int] = []
    for sequence in sequences:
        stream.extend(int(i) for i in sequence)
    return cut_into_blocks(stream, block_size, layout)


def split_sequences(
    sequences: Iterable[Sequence[int]], block_size: int, layout: SemantiCodecVocabularyLayout
) -> List[List[int]]:
    """No packing: each clip alone, split into blocks of at most `block_size` (to be padded)."""
    blocks: List[List[int]] = []
    for sequence in sequences:
        blocks.extend(cut_into_blocks(sequence, block_size, layout))
    return blocks


class BlockBuilder:
    """`datasets.map(batched=True)` function: a column of clip ids -> a column `input_ids` of blocks.

    Packing happens within each map batch (a batch's leftover becomes one short, padded block), so results do
    not depend on `num_proc`. Use `remove_columns=dataset.column_names`: the number of rows changes.
    """

    def __init__(self, layout: SemantiCodecVocabularyLayout, block_size: int, packing: bool = True,
                 column: str = "input_ids"):
        self.layout, self.block_size, self.packing, self.column = layout, int(block_size), bool(packing), column

    def __call__(self, batch: Dict[str, List[Any]]) -> Dict[str, List[List[int]]]:
        if self.column not in batch:
            raise KeyError(f"Column {self.column!r} not found; the batch has {sorted(batch)}.")
        build = pack_sequences if self.packing else split_sequences
        return {"input_ids": build(batch[self.column], self.block_size, self.layout)}


class AudioLMDataCollator:
    """Blocks -> `input_ids`, `attention_mask`, `labels` padded to `block_size` with padding masked out of the loss.

    Padding always goes to the full `block_size` (not the batch's longest), so every batch has one shape: the
    same global batch split over 1 or N processes computes the same thing. A block longer than `block_size` is
    truncated at the last frame boundary that fits (pass blocks from `BlockBuilder` to lose nothing).
    """

    def __init__(self, layout: SemantiCodecVocabularyLayout, block_size: int):
        self.layout, self.block_size = layout, int(block_size)

    def __call__(self, examples: Sequence[Any]) -> Dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("Cannot collate an empty batch.")
        input_ids = torch.full((len(examples), self.block_size), self.layout.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), self.block_size), dtype=torch.long)
        for row, example in enumerate(examples):
            ids = example["input_ids"] if isinstance(example, dict) else example
            ids = [int(i) for i in ids]
            ids = ids[: pair_safe_cut(ids, self.block_size, self.layout)]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class GlobalBatchOrder:
    """Which examples form the k-th global micro-batch: a fresh seeded permutation per epoch, last partial batch
    dropped. Pure function of (seed, k), so a resumed run continues with exactly the batches it would have seen.
    """

    def __init__(self, num_examples: int, micro_batch_size: int, seed: int):
        if micro_batch_size > num_examples:
            raise ValueError(
                f"The training set has {num_examples} blocks, fewer than one global micro-batch of "
                f"{micro_batch_size}; use more data, a smaller block_size or a smaller global_batch_size."
            )
        self.num_examples, self.micro_batch_size, self.seed = num_examples, micro_batch_size, seed
        self.batches_per_epoch = num_examples // micro_batch_size
        self._cached_epoch: Optional[int] = None
        self._permutation: Optional[np.ndarray] = None

    def _epoch_permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._cached_epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            self._cached_epoch = epoch
        return self._permutation

    def __call__(self, k: int) -> List[int]:
        epoch, index = divmod(k, self.batches_per_epoch)
        start = index * self.micro_batch_size
        return self._epoch_permutation(epoch)[start:start + self.micro_batch_size].tolist()


# ------------------------------------------------------------------------------------------------ synthetic
def synthetic_acoustic(semantic: np.ndarray, acoustic_vocab_size: int, acoustic_rule: str = "frame_index",
                       semantic_vocab_size: Optional[int] = None) -> np.ndarray:
    """The acoustic codes a synthetic clip has for its semantic codes `[F]`, by `acoustic_rule`:

    - `frame_index`: `a_t = (7 s_t + t mod 3) mod A` (the original corpus; a function of the frame alone);
    - `previous_semantic`: `a_t = (s_t + S * (s_{t-1} mod 2)) mod A`, with `s_{-1} = 0` and S the semantic
      vocabulary size: the current id plus one bit of the previous one. A semantic->acoustic stage must read the
      semantic context to get it right (the best map from `s_t` alone is right about half the time), yet a tiny
      LM learns it in a minute on a CPU (a rule such as `(7 s_t + s_{t-1}) mod A` is modular arithmetic over all
      S x S pairs, far slower to learn).
    """
    if acoustic_rule not in ACOUSTIC_RULES:
        raise ValueError(f"Unknown acoustic_rule {acoustic_rule!r}; choose one of {list(ACOUSTIC_RULES)}.")
    semantic = np.asarray(semantic, dtype=np.int64)
    if acoustic_rule == "frame_index":
        return (semantic * 7 + np.arange(semantic.size) % 3) % acoustic_vocab_size
    if semantic_vocab_size is None:
        raise ValueError("acoustic_rule 'previous_semantic' needs semantic_vocab_size (the S of the rule).")
    previous = np.concatenate([[0], semantic[:-1]]).astype(np.int64)
    return (semantic + semantic_vocab_size * (previous % 2)) % acoustic_vocab_size


def synthetic_corpus(
    layout: SemantiCodecVocabularyLayout, pattern: str, num_clips: int, frames: int, seed: int = 0,
    noise: float = 0.0, acoustic_rule: str = "frame_index",
) -> List[List[int]]:
    """Learnable `<bos> ... <eos>` id sequences in a pattern, with no codec (tests, demos, benchmarks).

    Each clip repeats a short random motif of semantic ids (a stand-in for phones or notes; `noise` replaces a
    fraction by random ids) and each acoustic id is a fixed function of the semantic stream (`acoustic_rule`,
    see `synthetic_acoustic`; by default of its semantic id and the frame index), so a model can learn both
    streams; the loss of a model that learnt nothing is ln(vocab). The default rule gives the corpus of every
    earlier version (same seed, same ids).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"Unknown pattern {pattern!r}; choose one of {list(PATTERNS)}.")
    if acoustic_rule not in ACOUSTIC_RULES:
        raise ValueError(f"Unknown acoustic_rule {acoustic_rule!r}; choose one of {list(ACOUSTIC_RULES)}.")
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(num_clips):
        motif = rng.integers(0, layout.semantic_vocab_size, size=int(rng.integers(3, 7)))
        semantic = np.resize(motif, frames)
        if noise > 0:
            noisy = rng.random(frames) < noise
            semantic[noisy] = rng.integers(0, layout.semantic_vocab_size, size=int(noisy.sum()))
        acoustic = synthetic_acoustic(semantic, layout.acoustic_vocab_size, acoustic_rule, layout.semantic_vocab_size)
        body = codes_to_ids(np.stack([semantic, acoustic]), layout, pattern)
        clips.append([layout.bos_token_id, *body.tolist(), layout.eos_token_id])
    return clips


def synthetic_corpus_from_spec(spec: SyntheticCorpus, seed: int = 0) -> List[List[int]]:
    """The corpus a recipe's `data.synthetic` section describes, every field of it applied (layout, pattern,
    sizes, `noise`, `acoustic_rule`), so that a trainer that calls this needs no change when a field is added."""
    layout = SemantiCodecVocabularyLayout(spec.semantic_vocab_size, spec.acoustic_vocab_size)
    return synthetic_corpus(layout, spec.pattern, spec.num_clips, spec.frames, seed=seed, noise=spec.noise,
                            acoustic_rule=spec.acoustic_rule)


# ------------------------------------------------------------------------------------------------ acoustic BPE
def bpe_layout(bpe: Any, layout: SemantiCodecVocabularyLayout) -> SemantiCodecVocabularyLayout:
    """The LM vocabulary when the semantic stream is replaced by BPE pieces: pieces take the semantic range."""
    return SemantiCodecVocabularyLayout(bpe.vocab_size, layout.acoustic_vocab_size)


def apply_bpe(clips: Iterable[Sequence[int]], bpe: Any, layout: SemantiCodecVocabularyLayout) -> List[List[int]]:
    """semantic_only clips `<bos> s... <eos>` -> `<bos> pieces... <eos>` in `bpe_layout` ids (lossless:
    `bpe.decode` gives the semantic ids back)."""
    target = bpe_layout(bpe, layout)
    out = []
    for index, clip in enumerate(clips):
        ids = np.asarray(clip, dtype=np.int64)
        body, start = strip_special_tokens(ids, layout)
        if body.size and (body.max() >= layout.acoustic_offset or body.min() < 0):
            raise ValueError(
                f"Clip {index} holds non-semantic ids; acoustic BPE needs a semantic_only corpus "
                "(tokenize with --pattern semantic_only)."
            )
        pieces = bpe.encode(body.tolist())
        head = [target.bos_token_id] if start and ids[start - 1] == layout.bos_token_id else []  # not for <pad>
        tail = [target.eos_token_id] if start + body.size < ids.size and ids[start + body.size] == layout.eos_token_id \
            else []
        out.append(head + pieces + tail)
    return out

"""The flat LM vocabulary of SemantiCodec tokens and the patterns that map codes to ids and back.

Layout (`SemantiCodecVocabularyLayout`)::

    [0, S)              semantic ids, as the codec emits them
    [S, S + A)          acoustic ids, shifted by S
    S + A + 0 .. 3      <bos>, <eos>, <pad>, <sep>   (vocab_size = S + A + 4)

It does not depend on the pattern, so an id means the same thing in every pattern. Patterns, for codes
`[2, F]` (row 0 semantic, row 1 acoustic), all lossless:

    interleaved             s0 a0 s1 a1 ... s(F-1) a(F-1)      (default; 2F ids)
    semantic_then_acoustic  s0 s1 ... s(F-1) a0 a1 ... a(F-1)  (2F ids)
    semantic_only           s0 s1 ... s(F-1)                   (F ids; cannot be decoded to audio)

Needs no codec: LM code can use it without loading any model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
import torch

PATTERNS = ("interleaved", "semantic_then_acoustic", "semantic_only")
SPECIAL_TOKENS = ("bos", "eos", "pad", "sep")

IdsLike = Union[Sequence[int], np.ndarray, torch.Tensor]


def is_batch_of_ids(ids: Any) -> bool:
    if torch.is_tensor(ids) or isinstance(ids, np.ndarray):
        if ids.ndim not in (1, 2):
            raise ValueError(f"ids must be 1-D (one sequence) or 2-D (a batch), got shape {tuple(ids.shape)}.")
        return ids.ndim == 2
    if isinstance(ids, (list, tuple)):
        return len(ids) > 0 and not isinstance(ids[0], (int, np.integer)) and hasattr(ids[0], "__len__")
    raise ValueError(
        f"ids must be a list of ints, a list of lists, a numpy array or a tensor; got {type(ids).__name__}."
    )


def as_int_array(ids: Any, where: str) -> np.ndarray:
    array = ids.detach().cpu().numpy() if torch.is_tensor(ids) else np.asarray(ids)
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"{where} must hold integer ids, got dtype {array.dtype}.")
    return array.astype(np.int64).reshape(-1)


# ------------------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class SemantiCodecVocabularyLayout:
    """Offsets and sizes of the flat LM vocabulary (semantic ids, shifted acoustic ids, 4 special tokens).

    Only the two stream sizes are stored; every offset is derived, so a layout cannot be inconsistent.
    """

    semantic_vocab_size: int
    acoustic_vocab_size: int

    def __post_init__(self) -> None:
        for name in ("semantic_vocab_size", "acoustic_vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
            object.__setattr__(self, name, int(value))

    @classmethod
    def from_config(cls, config: Any) -> "SemantiCodecVocabularyLayout":
        """Layout for a `SemantiCodecConfig` (its semantic vocabulary and acoustic codebook sizes)."""
        return cls(int(config.semantic_vocab_size), int(config.acoustic_codebook_size))

    semantic_offset = 0

    @property
    def acoustic_offset(self) -> int:
        return self.semantic_vocab_size

    @property
    def special_offset(self) -> int:
        return self.semantic_vocab_size + self.acoustic_vocab_size

    @property
    def bos_token_id(self) -> int:
        return self.special_offset + SPECIAL_TOKENS.index("bos")

    @property
    def eos_token_id(self) -> int:
        return self.special_offset + SPECIAL_TOKENS.index("eos")

    @property
    def pad_token_id(self) -> int:
        return self.special_offset + SPECIAL_TOKENS.index("pad")

    @property
    def sep_token_id(self) -> int:
        return self.special_offset + SPECIAL_TOKENS.index("sep")

    @property
    def num_special_tokens(self) -> int:
        return len(SPECIAL_TOKENS)

    @property
    def vocab_size(self) -> int:
        """Rows an LM embedding table needs."""
        return self.special_offset + self.num_special_tokens

    def to_dict(self) -> Dict[str, int]:
        """Sizes plus every derived offset (written out so a reader of the JSON needs no code)."""
        return {
            "semantic_vocab_size": self.semantic_vocab_size,
            "acoustic_vocab_size": self.acoustic_vocab_size,
            "semantic_offset": self.semantic_offset,
            "acoustic_offset": self.acoustic_offset,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "sep_token_id": self.sep_token_id,
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SemantiCodecVocabularyLayout":
        """Inverse of `to_dict`; derived values, when present, must agree (a hand-edited file is caught)."""
        try:
            layout = cls(data["semantic_vocab_size"], data["acoustic_vocab_size"])
        except KeyError as error:
            raise ValueError(f"Vocabulary layout is missing {error.args[0]!r}; got keys {sorted(data)}.") from None
        expected = layout.to_dict()
        wrong = {k: (v, expected[k]) for k, v in data.items() if k in expected and v != expected[k]}
        if wrong:
            raise ValueError(
                "Vocabulary layout is inconsistent (stored value, value implied by the two stream sizes): "
                f"{wrong}. This version of the layout puts semantic ids first, then acoustic ids, then "
                f"{'/'.join(SPECIAL_TOKENS)}."
            )
        return layout

    def describe(self, token_id: int) -> str:
        """Human-readable name of a flat id, for error messages."""
        token_id = int(token_id)
        if 0 <= token_id < self.acoustic_offset:
            return f"semantic id {token_id}"
        if self.acoustic_offset <= token_id < self.special_offset:
            return f"acoustic id {token_id} (acoustic code {token_id - self.acoustic_offset})"
        if self.special_offset <= token_id < self.vocab_size:
            return f"special token <{SPECIAL_TOKENS[token_id - self.special_offset]}> (id {token_id})"
        return f"id {token_id} (outside the vocabulary [0, {self.vocab_size}))"


# ------------------------------------------------------------------------------------------------ patterns
def check_pattern(pattern: str) -> str:
    if pattern not in PATTERNS:
        raise ValueError(f"Unknown pattern {pattern!r}; choose one of {list(PATTERNS)}.")
    return pattern


def codes_to_ids(
    codes: Union[np.ndarray, torch.Tensor], layout: SemantiCodecVocabularyLayout, pattern: str
) -> np.ndarray:
    """One clip's codes `[2, F]` (row 0 semantic, row 1 acoustic) -> flat ids (int64), no special tokens."""
    check_pattern(pattern)
    codes = codes.detach().cpu().numpy() if torch.is_tensor(codes) else np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != 2 or codes.dtype.kind not in "iu":
        raise ValueError(
            f"codes must be an integer array of shape (2, frames) (row 0 semantic, row 1 acoustic), got "
            f"{codes.dtype} {codes.shape}."
        )
    codes = codes.astype(np.int64)
    streams = (("semantic", layout.semantic_vocab_size), ("acoustic", layout.acoustic_vocab_size))
    for row, (name, size) in enumerate(streams):
        bad = np.flatnonzero((codes[row] < 0) | (codes[row] >= size))
        if bad.size:
            raise ValueError(
                f"{name} code {int(codes[row, bad[0]])} at frame {int(bad[0])} is outside [0, {size}) "
                f"({bad.size} such codes); the codes do not belong to a codec with this layout."
            )
    semantic, acoustic = codes[0], codes[1] + layout.acoustic_offset
    if pattern == "interleaved":
        return np.stack([semantic, acoustic], axis=1).reshape(-1)
    if pattern == "semantic_then_acoustic":
        return np.concatenate([semantic, acoustic])
    return semantic.copy()


def _expected_streams(length: int, pattern: str) -> np.ndarray:
    """For each position of a pattern's body: 0 where a semantic id belongs, 1 where an acoustic id does."""
    if pattern == "interleaved":
        return np.arange(length) % 2
    if pattern == "semantic_then_acoustic":
        return (np.arange(length) >= length // 2).astype(np.int64)
    return np.zeros(length, dtype=np.int64)


def _where_explained(position: int, body_start: int, length: int, pattern: str) -> str:
    index = position - body_start
    if pattern == "interleaved":
        parity = "even" if index % 2 == 0 else "odd"
        return f"{parity} offset {index} in the audio ids (frame {index // 2}) of an interleaved sequence"
    if pattern == "semantic_then_acoustic":
        half = "first" if index < length // 2 else "second"
        return f"offset {index} in the {half} half of a semantic_then_acoustic sequence of {length} audio ids"
    return f"offset {index} of a semantic_only sequence"


def ids_to_codes(
    ids: IdsLike, layout: SemantiCodecVocabularyLayout, pattern: str, position_offset: int = 0
) -> np.ndarray:
    """Audio ids of one clip (no special tokens) -> codes `[2, F]` (`[1, F]` for `semantic_only`).

    Raises a ValueError naming the first offending position (counted from `position_offset`) and value.
    """
    check_pattern(pattern)
    ids = as_int_array(ids, "ids")
    length = ids.size
    outside = np.flatnonzero((ids < 0) | (ids >= layout.vocab_size))
    if outside.size:
        p = int(outside[0])
        raise ValueError(
            f"Id {int(ids[p])} at position {position_offset + p} is outside the vocabulary [0, {layout.vocab_size})."
        )
    special = np.flatnonzero(ids >= layout.special_offset)
    if special.size:
        p = int(special[0])
        raise ValueError(
            f"{layout.describe(ids[p])} at position {position_offset + p} sits among audio ids; only a leading <bos>, "
            "a trailing <eos> and <pad> at either end are allowed. Split multi-clip sequences with "
            "`split_clips` first."
        )
    if pattern != "semantic_only" and length % 2:
        raise ValueError(
            f"The {pattern} pattern needs an even number of audio ids (one semantic and one acoustic id per frame), "
            f"got {length} (positions {position_offset}..{position_offset + length - 1}); the sequence is truncated "
            "or has an extra id."
        )
    expected = _expected_streams(length, pattern)
    actual = (ids >= layout.acoustic_offset).astype(np.int64)
    wrong = np.flatnonzero(expected != actual)
    if wrong.size:
        p = int(wrong[0])
        wanted = (
            f"a semantic id in [0, {layout.acoustic_offset})"
            if expected[p] == 0
            else f"an acoustic id in [{layout.acoustic_offset}, {layout.special_offset})"
        )
        raise ValueError(
            f"Position {position_offset + p} holds {layout.describe(ids[p])}, but it is the "
            f"{_where_explained(position_offset + p, position_offset, length, pattern)}, which must hold {wanted} "
            f"({wrong.size} misplaced ids in total)."
        )
    if pattern == "interleaved":
        pairs = ids.reshape(-1, 2)
        return np.stack([pairs[:, 0], pairs[:, 1] - layout.acoustic_offset])
    if pattern == "semantic_then_acoustic":
        half = length // 2
        return np.stack([ids[:half], ids[half:] - layout.acoustic_offset])
    return ids[None, :].copy()


def strip_special_tokens(ids: np.ndarray, layout: SemantiCodecVocabularyLayout) -> Tuple[np.ndarray, int]:
    """Drop <pad> at both ends, then one leading <bos> and one trailing <eos>; returns (body, body start)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    start, end = 0, ids.size
    while start < end and ids[start] == layout.pad_token_id:
        start += 1
    while end > start and ids[end - 1] == layout.pad_token_id:
        end -= 1
    if start < end and ids[start] == layout.bos_token_id:
        start += 1
    if end > start and ids[end - 1] == layout.eos_token_id:
        end -= 1
    return ids[start:end], start


__all__ = [
    "PATTERNS",
    "SPECIAL_TOKENS",
    "SemantiCodecVocabularyLayout",
    "codes_to_ids",
    "ids_to_codes",
    "strip_special_tokens",
]

"""Acoustic BPE: sentencepiece BPE/unigram over the semantic id stream, for shorter LM sequences.

Sentencepiece works on text, so each semantic id becomes one Unicode character in the Supplementary
Private Use Area-A:

    id  ->  chr(0xF0000 + id)        ids 0 .. 65533  (U+F0000 .. U+FFFFD)

That plane holds no assigned characters and no surrogates (those are U+D800..U+DFFF, in the BMP), and
unlike the BMP private-use block (6400 code points from U+E000) it fits every published semantic vocabulary
(4096..32768). Every id of the vocabulary is put in the training text once (as its own sentence), so the model has a
piece for each, encoding never yields `<unk>` and decoding is lossless, even for ids absent from the data.
Normalisation, whitespace handling and script splitting are turned off: the text is nothing but id characters.

Requires the optional dependency `sentencepiece` (`pip install sentencepiece`).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Iterable, List, Sequence, Union

import numpy as np

UNICODE_OFFSET = 0xF0000
MAX_BASE_IDS = 0xFFFFE - UNICODE_OFFSET  # U+FFFFE/U+FFFFF are noncharacters
MODEL_TYPES = ("bpe", "unigram")
MODEL_FILE = "acoustic_bpe.model"
CONFIG_FILE = "acoustic_bpe_config.json"


def _require_sentencepiece():
    try:
        import sentencepiece
    except ImportError as error:  # optional dependency
        raise ImportError("Acoustic BPE needs sentencepiece: `pip install sentencepiece`.") from error
    return sentencepiece


def ids_to_text(ids: Sequence[int], num_base_ids: int) -> str:
    """Semantic ids -> one private-use character each (see the module docstring)."""
    array = np.asarray(ids, dtype=np.int64).reshape(-1)
    bad = np.flatnonzero((array < 0) | (array >= num_base_ids))
    if bad.size:
        raise ValueError(f"Id {int(array[bad[0]])} at position {int(bad[0])} is outside [0, {num_base_ids}).")
    return "".join(map(chr, (array + UNICODE_OFFSET).tolist()))


def text_to_ids(text: str, num_base_ids: int) -> List[int]:
    """Inverse of `ids_to_text`."""
    ids = [ord(char) - UNICODE_OFFSET for char in text]
    bad = [i for i, value in enumerate(ids) if not 0 <= value < num_base_ids]
    if bad:
        raise ValueError(f"Character {text[bad[0]]!r} at position {bad[0]} is not an id character.")
    return ids


class AcousticBPE:
    """A trained sentencepiece model over semantic ids: `encode(ids) -> pieces`, `decode(pieces) -> ids`."""

    def __init__(self, model_proto: bytes, num_base_ids: int, model_type: str = "bpe"):
        spm = _require_sentencepiece()
        self.model_proto = model_proto
        self.num_base_ids = int(num_base_ids)
        self.model_type = model_type
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)

    @property
    def vocab_size(self) -> int:
        """Pieces in the model (`<unk>` at 0, one per base id, then merges)."""
        return self.processor.get_piece_size()

    @classmethod
    def train(
        cls,
        sequences: Iterable[Sequence[int]],
        num_base_ids: int,
        vocab_size: int,
        model_type: str = "bpe",
        max_piece_length: int = 16,
        num_threads: int = 1,
    ) -> "AcousticBPE":
        """Learn merges (BPE) or a unigram model over id sequences (e.g. each clip's semantic stream).

        `vocab_size` counts `<unk>` and all `num_base_ids` base ids, so it must exceed `num_base_ids + 1`; for
        unigram it is an upper bound (sentencepiece may stop earlier when the data has fewer useful pieces).
        """
        spm = _require_sentencepiece()
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {list(MODEL_TYPES)}, got {model_type!r}.")
        if not 1 <= num_base_ids <= MAX_BASE_IDS:
            raise ValueError(f"num_base_ids must be in [1, {MAX_BASE_IDS}], got {num_base_ids}.")
        if vocab_size <= num_base_ids + 1:
            raise ValueError(
                f"vocab_size={vocab_size} leaves no room for merges: it counts <unk> and all {num_base_ids} base ids."
            )
        lines = [ids_to_text(sequence, num_base_ids) for sequence in sequences]
        lines = [line for line in lines if line]
        if not lines:
            raise ValueError("No non-empty sequences to train on.")
        # Every base id once, as its own sentence: sentencepiece keeps only characters it has seen, and
        # one-character sentences add no pair counts that could bias the merges.
        lines.extend(chr(UNICODE_OFFSET + i) for i in range(num_base_ids))
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=1.0,
            required_chars=ids_to_text(range(num_base_ids), num_base_ids),
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            split_by_whitespace=False,
            split_by_unicode_script=False,
            split_by_number=False,
            max_sentence_length=max(len(line.encode()) for line in lines) + 1,
            max_sentencepiece_length=max_piece_length,
            hard_vocab_limit=model_type == "bpe",
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            num_threads=num_threads,
            minloglevel=2,
        )
        return cls(model.getvalue(), num_base_ids, model_type)

    def encode(self, ids: Sequence[int]) -> List[int]:
        """Semantic ids -> piece ids."""
        return list(self.processor.encode(ids_to_text(ids, self.num_base_ids)))

    def decode(self, pieces: Sequence[int]) -> List[int]:
        """Piece ids -> semantic ids (exact inverse of `encode`)."""
        pieces = [int(p) for p in pieces]
        bad = [i for i, p in enumerate(pieces) if not 0 < p < self.vocab_size]
        if bad:
            raise ValueError(
                f"Piece id {pieces[bad[0]]} at position {bad[0]} is not a piece of this model (0 is <unk>)."
            )
        return text_to_ids(self.processor.decode(pieces), self.num_base_ids)

    def piece_ids(self, piece: int) -> List[int]:
        """The semantic ids one piece stands for."""
        return text_to_ids(self.processor.id_to_piece(int(piece)), self.num_base_ids)

    def compression_ratio(self, sequences: Iterable[Sequence[int]]) -> float:
        """Semantic ids per piece over `sequences` (1.0 = no gain)."""
        ids = pieces = 0
        for sequence in sequences:
            ids += len(sequence)
            pieces += len(self.encode(sequence))
        if pieces == 0:
            raise ValueError("compression_ratio needs at least one non-empty sequence.")
        return ids / pieces

    def save(self, directory: Union[str, os.PathLike]) -> Path:
        """Write `acoustic_bpe.model` (sentencepiece) and `acoustic_bpe_config.json` (mapping and sizes)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_bytes(self.model_proto)
        config = {
            "model_type": self.model_type,
            "num_base_ids": self.num_base_ids,
            "vocab_size": self.vocab_size,
            "unicode_offset": UNICODE_OFFSET,
            "stream": "semantic",
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: Union[str, os.PathLike]) -> "AcousticBPE":
        directory = Path(directory)
        config = json.loads((directory / CONFIG_FILE).read_text())
        if config.get("unicode_offset", UNICODE_OFFSET) != UNICODE_OFFSET:
            raise ValueError(
                f"{directory} uses unicode_offset {config['unicode_offset']:#x}; this version uses {UNICODE_OFFSET:#x}."
            )
        return cls((directory / MODEL_FILE).read_bytes(), config["num_base_ids"], config.get("model_type", "bpe"))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model_type={self.model_type!r}, num_base_ids={self.num_base_ids}, "
            f"vocab_size={self.vocab_size})"
        )


def semantic_stream(audio_codes: Union[np.ndarray, Sequence[Sequence[int]]]) -> List[int]:
    """Row 0 (the semantic ids) of one clip's codes `[2, F]`."""
    return np.asarray(audio_codes)[0].astype(np.int64).tolist()


__all__ = ["AcousticBPE", "UNICODE_OFFSET", "ids_to_text", "text_to_ids", "semantic_stream"]

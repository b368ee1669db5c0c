"""Training a pretrained text LM on audio while keeping its text vocabulary (`model.keep_text_vocab: true`).

The text LM's tokenizer is extended with the audio tokens (`extend_text_tokenizer`: `<|s_i|>`, `<|a_j|>`,
`<|audio_start|>`, `<|audio_end|>`), and every clip of the audio corpus becomes a joint sequence

    [text bos] [text] <|audio_start|> s a s a ... <|audio_end|> [text] [text eos]

in the extended vocabulary (the optional text is a column of the tokenized dataset, e.g. a transcript, placed
before or after the audio). The trainer cuts, packs, collates and scores these sequences exactly as it does
audio-only ones: `JointLayout` gives them the offsets they read from a `SemantiCodecVocabularyLayout`, with the
text ids below the audio range (their own stream in the losses).

`JointAudioTextTokenizer` is what an LM folder of such a run holds: the extended text tokenizer at the top
(`AutoTokenizer.from_pretrained(folder)` loads it), the audio tokenizer (layout, pattern, codec location) in
`audio_tokenizer/` and the joint mapping in `joint_vocabulary.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout, ids_to_codes, strip_special_tokens
from semanticodec_hf.joint_vocabulary import JointVocabulary, extend_text_tokenizer
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

from .config import TEXT_POSITIONS

JOINT_VOCABULARY_NAME = "joint_vocabulary.json"
AUDIO_TOKENIZER_FOLDER = "audio_tokenizer"
JOINT_FORMAT_VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


@dataclass(frozen=True)
class JointLayout:
    """The extended text vocabulary as the block cutting, collation and stream losses see it: text ids below
    `semantic_offset` (the text tokenizer's size before the audio tokens were added), then the semantic ids, the
    acoustic ids and the two audio markers, contiguous. Named like `SemantiCodecVocabularyLayout`'s fields so the
    same code serves both; `bos`/`eos`/`pad` are the text tokenizer's (bos may be None)."""

    semantic_offset: int
    semantic_vocab_size: int
    acoustic_vocab_size: int
    eos_token_id: int
    pad_token_id: int
    bos_token_id: Optional[int] = None

    @property
    def acoustic_offset(self) -> int:
        return self.semantic_offset + self.semantic_vocab_size

    @property
    def special_offset(self) -> int:
        """First audio marker: `<|audio_start|>`, then `<|audio_end|>`."""
        return self.acoustic_offset + self.acoustic_vocab_size

    @property
    def audio_start_id(self) -> int:
        return self.special_offset

    @property
    def audio_end_id(self) -> int:
        return self.special_offset + 1

    @property
    def vocab_size(self) -> int:
        """Rows the LM's embedding needs (text rows, then the audio rows)."""
        return self.special_offset + 2


def joint_layout(joint: JointVocabulary, text_tokenizer: Any) -> JointLayout:
    """The `JointLayout` of a freshly extended text tokenizer; the audio tokens must sit in one contiguous range
    after the text ones (they do unless the tokenizer already held some of them)."""
    layout = joint.layout
    first = int(joint.audio_to_joint[0])
    expected = np.arange(first, first + layout.special_offset)
    if not np.array_equal(joint.audio_to_joint, expected) or (joint.audio_start_id, joint.audio_end_id) != (
            first + layout.special_offset, first + layout.special_offset + 1):
        raise ValueError("The text tokenizer's audio tokens are not one contiguous range after its text tokens (it "
                         "already held some of them); start from the text LM's original tokenizer.")
    eos = text_tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"The text tokenizer ({type(text_tokenizer).__name__}) has no eos token; a joint corpus "
                         "ends every clip with it. Set one (tokenizer.eos_token = ...) and save it.")
    pad = text_tokenizer.pad_token_id if text_tokenizer.pad_token_id is not None else eos  # masked out anyway
    return JointLayout(first, layout.semantic_vocab_size, layout.acoustic_vocab_size, int(eos), int(pad),
                       text_tokenizer.bos_token_id)


class JointAudioTextTokenizer:
    """An extended text tokenizer, the audio tokenizer whose ids it holds, and the mapping between them.

    `clip_to_joint(audio_ids, text)` turns one clip of the audio corpus (`<bos> ids <eos>` in the audio layout)
    into joint ids; `__call__` is a `datasets.map(batched=True)` function doing it for a column."""

    def __init__(self, text_tokenizer: Any, audio_tokenizer: SemantiCodecAudioTokenizer,
                 joint: Optional[JointVocabulary] = None):
        self.text_tokenizer = text_tokenizer
        self.audio_tokenizer = audio_tokenizer
        self.joint = joint or extend_text_tokenizer(text_tokenizer, audio_tokenizer.layout, audio_tokenizer.pattern)
        self.layout = joint_layout(self.joint, text_tokenizer)

    @property
    def audio_layout(self) -> SemantiCodecVocabularyLayout:
        return self.audio_tokenizer.layout

    @property
    def pattern(self) -> str:
        return self.audio_tokenizer.pattern

    @classmethod
    def extend(cls, text_tokenizer_path: Union[str, Path], audio_tokenizer: SemantiCodecAudioTokenizer):
        """Load a text LM's tokenizer (`AutoTokenizer`) and extend it with `audio_tokenizer`'s vocabulary."""
        from transformers import AutoTokenizer

        advice = ("Save it beside the model (tokenizer.save_pretrained) or give its folder as "
                  "model.text_tokenizer.")
        folder = Path(str(text_tokenizer_path))
        # transformers builds an EMPTY tokenizer for a local model folder without tokenizer files: refuse instead
        if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ValueError(f"model.keep_text_vocab needs the text LM's tokenizer, but {folder} holds no tokenizer "
                             f"files ({', '.join(TOKENIZER_FILES)}). {advice}")
        try:
            text_tokenizer = AutoTokenizer.from_pretrained(str(text_tokenizer_path))
        except (OSError, ValueError) as error:
            raise ValueError(f"model.keep_text_vocab needs the text LM's tokenizer, which could not be loaded from "
                             f"{text_tokenizer_path} ({error}). {advice}") from error
        return cls(text_tokenizer, audio_tokenizer)

    # ------------------------------------------------------------------------------------ audio clip -> joint
    def text_ids(self, text: Optional[str]) -> List[int]:
        if text is None or text == "":
            return []
        if not isinstance(text, str):
            raise TypeError(f"The text column must hold strings, got {type(text).__name__}.")
        return list(self.text_tokenizer(text, add_special_tokens=False)["input_ids"])

    def clip_to_joint(self, audio_ids: Sequence[int], text: Optional[str] = None,
                      text_position: str = "before") -> List[int]:
        """`[bos] [text] <|audio_start|> audio <|audio_end|> [text] eos` for one clip of audio ids (with or
        without the audio layout's `<bos>`/`<eos>`)."""
        if text_position not in TEXT_POSITIONS:
            raise ValueError(f"text_position must be one of {list(TEXT_POSITIONS)}, got {text_position!r}.")
        body, _ = strip_special_tokens(np.asarray(audio_ids, dtype=np.int64), self.audio_layout)
        if body.size and (body.min() < 0 or body.max() >= self.audio_layout.special_offset):
            bad = int(body[(body < 0) | (body >= self.audio_layout.special_offset)][0])
            raise ValueError(f"Clip holds id {bad} inside its audio ({self.audio_layout.describe(bad)}); a joint "
                             "sequence takes one clip of semantic/acoustic ids between <bos> and <eos>.")
        ids_to_codes(body, self.audio_layout, self.pattern)  # the pattern's order checked, naming any misplaced id
        audio = [self.layout.audio_start_id, *self.joint.audio_to_joint[body].tolist(), self.layout.audio_end_id]
        words = self.text_ids(text)
        head = [] if self.layout.bos_token_id is None else [self.layout.bos_token_id]
        middle = words + audio if text_position == "before" else audio + words
        return head + middle + [self.layout.eos_token_id]

    def __call__(self, batch: Dict[str, List[Any]], text_column: Optional[str] = None,
                 text_position: str = "before") -> Dict[str, List[List[int]]]:
        """`datasets.map(batched=True)`: the `input_ids` column (audio ids) -> joint ids, with `text_column`."""
        texts = batch[text_column] if text_column is not None else [None] * len(batch["input_ids"])
        return {"input_ids": [self.clip_to_joint(ids, text, text_position)
                              for ids, text in zip(batch["input_ids"], texts)]}

    # ------------------------------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory: Union[str, Path], save_codec: bool = False) -> Path:
        """Text tokenizer at the top (loads with `AutoTokenizer`), audio tokenizer in `audio_tokenizer/`, the
        mapping in `joint_vocabulary.json`."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.text_tokenizer.save_pretrained(directory)
        self.audio_tokenizer.save_pretrained(directory / AUDIO_TOKENIZER_FOLDER, save_codec=save_codec)
        record = {"format_version": JOINT_FORMAT_VERSION, "pattern": self.pattern,
                  "first_audio_id": self.layout.semantic_offset, "audio_start_id": self.layout.audio_start_id,
                  "audio_end_id": self.layout.audio_end_id}
        (directory / JOINT_VOCABULARY_NAME).write_text(json.dumps(record, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: Union[str, Path], load_codec: bool = False,
                        **audio_kwargs: Any) -> "JointAudioTextTokenizer":
        """Load what `save_pretrained` wrote; the mapping is re-derived from the tokenizer and checked against the
        saved one. `load_codec=True` also loads the codec (to make audio)."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        record_path = directory / JOINT_VOCABULARY_NAME
        if not record_path.is_file():
            raise FileNotFoundError(f"{directory} has no {JOINT_VOCABULARY_NAME}: it is not the folder of an LM "
                                    "trained with model.keep_text_vocab: true.")
        record = json.loads(record_path.read_text())
        if record.get("format_version", 1) > JOINT_FORMAT_VERSION:
            raise ValueError(f"{directory} was saved by a newer semanticodec-hf; upgrade the package.")
        audio = SemantiCodecAudioTokenizer.from_pretrained(directory / AUDIO_TOKENIZER_FOLDER, load_codec=load_codec,
                                                           **audio_kwargs)
        text = AutoTokenizer.from_pretrained(str(directory))
        joint = JointVocabulary.from_tokenizer(text, audio.layout, record["pattern"])
        loaded = cls(text, audio, joint)
        if (loaded.layout.semantic_offset, loaded.layout.audio_start_id) != (record["first_audio_id"],
                                                                            record["audio_start_id"]):
            raise ValueError(f"{directory}'s tokenizer places the audio tokens at {loaded.layout.semantic_offset}, "
                             f"but {JOINT_VOCABULARY_NAME} says {record['first_audio_id']}; the folder was altered.")
        return loaded


def is_joint_folder(path: Union[str, Path]) -> bool:
    """Whether `path` is an LM folder trained with `model.keep_text_vocab: true` (text + audio vocabulary)."""
    return (Path(path) / JOINT_VOCABULARY_NAME).is_file()


__all__ = ["JointAudioTextTokenizer", "JointLayout", "TEXT_POSITIONS", "is_joint_folder", "joint_layout"]

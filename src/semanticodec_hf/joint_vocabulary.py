"""Audio ids as text tokens: a standard `AutoTokenizer` for the flat audio vocabulary, and audio tokens added to an
existing text tokenizer (a text LLM that reads and writes audio).

Every audio id has a reserved string: `<|s_12|>` (semantic id 12), `<|a_5|>` (acoustic id 5) and
`<|audio_bos|>`, `<|audio_eos|>`, `<|audio_pad|>`, `<|audio_sep|>` for the layout's special tokens.

- `build_audio_fast_tokenizer(layout)`: a `PreTrainedTokenizerFast` whose ids are exactly the layout's ids, so
  a saved LM folder's tokenizer loads with `AutoTokenizer` like any other (no custom code: a word-level
  `tokenizer.json`).
- `extend_text_tokenizer(text_tokenizer, layout)`: adds the semantic and acoustic strings and two markers,
  `<|audio_start|>` / `<|audio_end|>`, to a text tokenizer; returns a `JointVocabulary`, which maps codes to
  joint ids and back and splits a generated mixed sequence into text spans and decodable audio spans. Resize the
  text LM with `model.resize_token_embeddings(len(text_tokenizer))` afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Sequence, Union

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AddedToken, PreTrainedTokenizerFast

from .audio_token_layout import (
    SPECIAL_TOKENS,
    SemantiCodecVocabularyLayout,
    as_int_array,
    check_pattern,
    codes_to_ids,
    ids_to_codes,
)

AUDIO_START = "<|audio_start|>"
AUDIO_END = "<|audio_end|>"


def semantic_token(index: int) -> str:
    return f"<|s_{index}|>"


def acoustic_token(index: int) -> str:
    return f"<|a_{index}|>"


def special_token(name: str) -> str:
    return f"<|audio_{name}|>"


def audio_token_strings(layout: SemantiCodecVocabularyLayout) -> List[str]:
    """The string of every id of `layout`, in id order (semantic, acoustic, then the special tokens)."""
    return ([semantic_token(i) for i in range(layout.semantic_vocab_size)]
            + [acoustic_token(j) for j in range(layout.acoustic_vocab_size)]
            + [special_token(name) for name in SPECIAL_TOKENS])


def build_audio_fast_tokenizer(layout: SemantiCodecVocabularyLayout) -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` over the audio vocabulary alone: `tokenizer("<|s_3|><|a_7|>").input_ids` gives
    the layout's ids, `decode` gives the strings back, bos/eos/pad/sep are the layout's. Its `save_pretrained`
    folder loads with `AutoTokenizer.from_pretrained` without any code of this package."""
    vocab = {token: index for index, token in enumerate(audio_token_strings(layout))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=special_token("pad")))
    # every reserved string is one token, wherever it sits; text between them is not audio and maps to <pad>
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"<\|[^|<>]*\|>"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # the strings concatenate back without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=special_token("bos"), eos_token=special_token("eos"),
        pad_token=special_token("pad"), sep_token=special_token("sep"), unk_token=special_token("pad"),
        model_max_length=int(1e9), clean_up_tokenization_spaces=False,
    )


@dataclass(frozen=True)
class AudioSpan:
    """Codes `[2, F]` of one audio span of a mixed sequence; `complete` is False when the sequence ended before
    `<|audio_end|>` (the codes then hold only its whole frames)."""

    codes: torch.Tensor
    complete: bool = True


@dataclass(frozen=True)
class TextSpan:
    """Text ids of a mixed sequence, as the text tokenizer gave them (decode them with it)."""

    ids: List[int]


class JointVocabulary:
    """Where the audio ids of one layout sit in a text tokenizer's vocabulary (built by `extend_text_tokenizer`
    or `from_tokenizer`), and the conversions between codes and joint ids.

    Audio is written as `<|audio_start|> ids in the pattern <|audio_end|>`; the layout's own special tokens are
    not used inside a joint sequence (the text tokenizer has its own bos/eos/pad)."""

    def __init__(self, layout: SemantiCodecVocabularyLayout, audio_to_joint: np.ndarray, audio_start_id: int,
                 audio_end_id: int, pattern: str = "interleaved"):
        self.layout = layout
        self.pattern = check_pattern(pattern)
        if pattern == "semantic_then_acoustic":
            raise ValueError("A joint sequence interleaves audio with text span by span; use pattern 'interleaved' "
                             "or 'semantic_only' (semantic_then_acoustic has no frame boundary to cut at).")
        self.audio_to_joint = np.asarray(audio_to_joint, dtype=np.int64)
        if self.audio_to_joint.shape != (layout.special_offset,):
            raise ValueError(f"audio_to_joint must map the {layout.special_offset} semantic and acoustic ids, got "
                             f"shape {self.audio_to_joint.shape}.")
        self.audio_start_id, self.audio_end_id = int(audio_start_id), int(audio_end_id)
        self._joint_to_audio = {int(joint): audio for audio, joint in enumerate(self.audio_to_joint)}
        if len(self._joint_to_audio) != len(self.audio_to_joint):
            raise ValueError("audio_to_joint maps two audio ids to one joint id.")

    @classmethod
    def from_tokenizer(cls, text_tokenizer: Any, layout: SemantiCodecVocabularyLayout,
                       pattern: str = "interleaved") -> "JointVocabulary":
        """The joint vocabulary of a text tokenizer that `extend_text_tokenizer` extended (e.g. reloaded from a
        saved folder): every audio string must be one token of it."""
        strings = audio_token_strings(layout)[: layout.special_offset] + [AUDIO_START, AUDIO_END]
        ids = [text_tokenizer.convert_tokens_to_ids(token) for token in strings]
        unknown = getattr(text_tokenizer, "unk_token_id", None)
        missing = [token for token, index in zip(strings, ids) if index is None or index == unknown]
        if missing:
            raise ValueError(f"The text tokenizer lacks {len(missing)} audio tokens (e.g. {missing[0]}); extend it "
                             "first with extend_text_tokenizer(text_tokenizer, layout).")
        return cls(layout, np.asarray(ids[:-2]), ids[-2], ids[-1], pattern)

    def __len__(self) -> int:
        return len(self.audio_to_joint) + 2

    # ------------------------------------------------------------------------------------ codes -> joint
    def codes_to_ids(self, codes: Union[np.ndarray, torch.Tensor]) -> List[int]:
        """One clip's codes `[2, F]` -> `<|audio_start|> ... <|audio_end|>` as joint ids."""
        body = codes_to_ids(codes, self.layout, self.pattern)
        return [self.audio_start_id, *self.audio_to_joint[body].tolist(), self.audio_end_id]

    def codes_to_text(self, codes: Union[np.ndarray, torch.Tensor]) -> str:
        """One clip's codes as the text the joint tokenizer turns back into `codes_to_ids(codes)`, for corpora
        written as strings (`f"Listen: {joint.codes_to_text(codes)}"`)."""
        strings = audio_token_strings(self.layout)
        return AUDIO_START + "".join(strings[i] for i in codes_to_ids(codes, self.layout, self.pattern)) + AUDIO_END

    # ------------------------------------------------------------------------------------ joint -> codes
    def _audio_body(self, joint_ids: Sequence[int], start: int) -> np.ndarray:
        """Joint ids of an audio span's body -> layout ids; a text id inside it is an error naming its place."""
        body = np.empty(len(joint_ids), dtype=np.int64)
        for offset, joint in enumerate(joint_ids):
            audio = self._joint_to_audio.get(int(joint))
            if audio is None:
                raise ValueError(f"id {int(joint)} at position {start + offset} is inside an audio span but is not an "
                                 "audio token (close the span with <|audio_end|> before text).")
            body[offset] = audio
        return body

    def ids_to_codes(self, joint_ids: Any) -> torch.Tensor:
        """Joint ids of one audio span (with or without its start/end markers) -> codes `[2, F]` (`[1, F]` for
        semantic_only): the exact inverse of `codes_to_ids`."""
        ids = as_int_array(joint_ids, "joint ids").tolist()
        start = 1 if ids[:1] == [self.audio_start_id] else 0
        end = len(ids) - 1 if ids[-1:] == [self.audio_end_id] and len(ids) > start else len(ids)
        body = self._audio_body(ids[start:end], start)
        return torch.from_numpy(ids_to_codes(body, self.layout, self.pattern, position_offset=start))

    def split(self, joint_ids: Any) -> List[Union[TextSpan, AudioSpan]]:
        """A generated mixed sequence -> its text spans and audio spans, in order. Audio spans are decodable
        codes; a span left open at the end keeps its whole frames (`complete=False`). An `<|audio_end|>` without a
        start, a start inside a span or a text id inside a span raise a ValueError naming the position."""
        ids = as_int_array(joint_ids, "joint ids").tolist()
        spans: List[Union[TextSpan, AudioSpan]] = []
        text: List[int] = []
        position = 0
        while position < len(ids):
            token = ids[position]
            if token == self.audio_end_id:
                raise ValueError(f"<|audio_end|> at position {position} closes no audio span.")
            if token != self.audio_start_id:
                text.append(token)
                position += 1
                continue
            if text:
                spans.append(TextSpan(text))
                text = []
            try:
                close = ids.index(self.audio_end_id, position + 1)
            except ValueError:
                close = None
            stop = len(ids) if close is None else close
            inner = ids[position + 1: stop]
            if self.audio_start_id in inner:
                raise ValueError(f"<|audio_start|> at position {position + 1 + inner.index(self.audio_start_id)} "
                                 "opens a span inside another one.")
            body = self._audio_body(inner, position + 1)
            if close is None:
                body = body[: len(body) - len(body) % (1 if self.pattern == "semantic_only" else 2)]
            codes = torch.from_numpy(ids_to_codes(body, self.layout, self.pattern, position_offset=position + 1))
            spans.append(AudioSpan(codes, complete=close is not None))
            position = stop + 1
        if text:
            spans.append(TextSpan(text))
        return spans


def extend_text_tokenizer(text_tokenizer: Any, layout: SemantiCodecVocabularyLayout,
                          pattern: str = "interleaved") -> JointVocabulary:
    """Add the audio vocabulary of `layout` (its semantic and acoustic strings) and the `<|audio_start|>` /
    `<|audio_end|>` markers to `text_tokenizer` (in place; tokens it already has are kept) and return the
    `JointVocabulary`. The tokens are never split or normalised by the text model's rules. Then
    `text_model.resize_token_embeddings(len(text_tokenizer))` gives the LM the new rows."""
    strings = audio_token_strings(layout)[: layout.special_offset] + [AUDIO_START, AUDIO_END]
    text_tokenizer.add_tokens([AddedToken(token, normalized=False, special=False, single_word=False,
                                          lstrip=False, rstrip=False) for token in strings])
    return JointVocabulary.from_tokenizer(text_tokenizer, layout, pattern)


__all__ = [
    "AUDIO_END",
    "AUDIO_START",
    "AudioSpan",
    "JointVocabulary",
    "TextSpan",
    "audio_token_strings",
    "build_audio_fast_tokenizer",
    "extend_text_tokenizer",
]

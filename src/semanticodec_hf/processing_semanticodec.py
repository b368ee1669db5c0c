"""`SemantiCodecProcessor`: the feature extractor plus the LM id layout, in one object that `AutoProcessor` loads.

audio -> `processor(audio, sampling_rate=...)` -> model inputs -> `model.encode` -> codes -> `processor.codes_to_ids`
-> LM ids -> `processor.ids_to_codes` -> `model.decode(**codes)` -> audio. The processor holds no weights: the
layout (two stream sizes, the pattern, bos/eos wrapping) is a few integers stored in `processor_config.json`.

Self-contained on purpose: this file and its relative imports travel into saved folders for
`trust_remote_code=True`, so it imports only flat sibling modules and installed libraries.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .audio_token_layout import SemantiCodecVocabularyLayout
from .tokenization_semanticodec import SemantiCodecAudioTokenizer


class SemantiCodecProcessor(ProcessorMixin):
    r"""
    Feature extractor + flat LM vocabulary of one SemantiCodec variant.

    Args:
        feature_extractor ([`SemantiCodecFeatureExtractor`]): turns audio (any rate, channels, PCM type) into
            model inputs.
        semantic_vocab_size (`int`): semantic k-means vocabulary of the codec (`config.semantic_vocab_size`).
        acoustic_vocab_size (`int`): acoustic codebook size of the codec (`config.acoustic_codebook_size`).
        pattern (`str`): order of the two streams in LM ids: `"interleaved"` (default),
            `"semantic_then_acoustic"` or `"semantic_only"` (the same patterns as [`SemantiCodecAudioTokenizer`]).
        add_special_tokens (`bool`): wrap each clip as `<bos> ... <eos>` in `codes_to_ids` (default True).

    Build one for a codec with [`SemantiCodecProcessor.from_codec`]; `save_pretrained` / `from_pretrained` /
    `AutoProcessor.from_pretrained` round-trip it.
    """

    def __init__(
        self,
        feature_extractor: Any,
        semantic_vocab_size: int,
        acoustic_vocab_size: int,
        pattern: str = "interleaved",
        add_special_tokens: bool = True,
    ):
        super().__init__(feature_extractor)
        # An ids-only audio tokenizer does the id arithmetic, so the processor and the tokenizer cannot disagree.
        self._ids = SemantiCodecAudioTokenizer(
            layout=SemantiCodecVocabularyLayout(semantic_vocab_size, acoustic_vocab_size),
            pattern=pattern,
            add_special_tokens=add_special_tokens,
        )
        self.semantic_vocab_size = self._ids.layout.semantic_vocab_size
        self.acoustic_vocab_size = self._ids.layout.acoustic_vocab_size
        self.pattern = self._ids.pattern
        self.add_special_tokens = self._ids.add_special_tokens

    @classmethod
    def from_codec(
        cls, codec: Any, feature_extractor: Optional[Any] = None, pattern: str = "interleaved",
        add_special_tokens: bool = True,
    ) -> "SemantiCodecProcessor":
        """The processor of a codec: `codec` is a `SemantiCodecModel` or its `SemantiCodecConfig`."""
        config = getattr(codec, "config", codec)
        if feature_extractor is None:
            from .feature_extraction_semanticodec import SemantiCodecFeatureExtractor

            feature_extractor = SemantiCodecFeatureExtractor()
        return cls(feature_extractor, int(config.semantic_vocab_size), int(config.acoustic_codebook_size),
                   pattern=pattern, add_special_tokens=add_special_tokens)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(semantic_vocab_size={self.semantic_vocab_size}, "
            f"acoustic_vocab_size={self.acoustic_vocab_size}, pattern={self.pattern!r}, "
            f"add_special_tokens={self.add_special_tokens}, vocab_size={self.vocab_size})"
        )

    def save_pretrained(self, save_directory: Any, push_to_hub: bool = False, **kwargs: Any) -> List[str]:
        """`ProcessorMixin.save_pretrained` (`processor_config.json`, with the feature extractor nested in it) plus
        the feature extractor's own `preprocessor_config.json`, which `AutoFeatureExtractor` and older transformers
        read."""
        files = super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        files += self.feature_extractor.save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        return files

    # ------------------------------------------------------------------------------------ audio -> inputs
    def __call__(self, audio: Any = None, sampling_rate: Optional[int] = None, **kwargs: Any) -> BatchFeature:
        """Audio -> `model.encode` inputs: the feature extractor's `__call__` (same arguments)."""
        if audio is None:
            raise ValueError("SemantiCodecProcessor needs `audio` (an array, a tensor or a list of them).")
        return self.feature_extractor(audio, sampling_rate=sampling_rate, **kwargs)

    @property
    def model_input_names(self) -> List[str]:
        return list(self.feature_extractor.model_input_names)

    # ------------------------------------------------------------------------------------ layout
    layout = property(lambda self: self._ids.layout, doc="The flat vocabulary (offsets and sizes).")
    vocab_size = property(lambda self: self._ids.vocab_size, doc="Rows an LM embedding table needs.")
    bos_token_id = property(lambda self: self._ids.bos_token_id)
    eos_token_id = property(lambda self: self._ids.eos_token_id)
    pad_token_id = property(lambda self: self._ids.pad_token_id)
    sep_token_id = property(lambda self: self._ids.sep_token_id)

    # ------------------------------------------------------------------------------------ codes <-> ids
    def codes_to_ids(
        self,
        audio_codes: Any,
        audio_codes_lengths: Optional[Sequence[int]] = None,
        add_special_tokens: Optional[bool] = None,
    ) -> Union[List[int], List[List[int]]]:
        """`model.encode` codes -> LM ids: `[2, F]` gives one list, `[B, 2, F]` (cut at `audio_codes_lengths`)
        or a list of `[2, F]` gives one list per clip."""
        return self._ids.codes_to_ids(audio_codes, audio_codes_lengths, add_special_tokens=add_special_tokens)

    def ids_to_codes(self, ids: Any, attention_mask: Optional[Any] = None) -> BatchFeature:
        """LM ids (one sequence or a batch, optionally padded with `attention_mask`) -> `model.decode` inputs:
        `audio_codes` `[B, streams, F_max]` (zero past each length) and `audio_codes_lengths` `[B]`, so that
        `model.decode(**processor.ids_to_codes(ids))` works. Anything out of place in the ids raises a ValueError
        naming the position and the value (see `SemantiCodecAudioTokenizer.decode_ids`)."""
        decoded = self._ids.decode_ids(ids, attention_mask=attention_mask)
        clips = decoded if isinstance(decoded, list) else [decoded]
        if not clips:
            raise ValueError("ids_to_codes got an empty batch.")
        empty = [row for row, clip in enumerate(clips) if clip.shape[-1] == 0]
        if empty:
            raise ValueError(f"Sequence(s) {empty} hold no audio ids (only special tokens or nothing): nothing to "
                             "decode. Drop them, or generate at least one frame.")
        streams = clips[0].shape[0]
        longest = max(int(clip.shape[-1]) for clip in clips)
        audio_codes = torch.zeros(len(clips), streams, longest, dtype=torch.long)
        for row, clip in enumerate(clips):
            audio_codes[row, :, : clip.shape[-1]] = clip
        lengths = torch.tensor([int(clip.shape[-1]) for clip in clips], dtype=torch.long)
        return BatchFeature({"audio_codes": audio_codes, "audio_codes_lengths": lengths})

    def join_clips(self, clips: Sequence[Any]) -> List[int]:
        """Several clips' ids -> one sequence `<bos> c1 <sep> c2 ... <eos>`."""
        return self._ids.join_clips(clips)

    def split_clips(self, ids: Any) -> List[List[int]]:
        """Inverse of `join_clips`."""
        return self._ids.split_clips(ids)


SemantiCodecProcessor.register_for_auto_class("AutoProcessor")

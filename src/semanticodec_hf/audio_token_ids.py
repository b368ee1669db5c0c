"""`AudioTokenIds`: codes <-> LM ids for one vocabulary layout and pattern, with no codec attached.

The id arithmetic shared by `SemantiCodecProcessor` (which adds the feature extractor and the audio work) and
`SemantiCodecAudioTokenizer` (which adds a codec model and saving): both hold the same object, so their ids
cannot disagree. Self-contained (flat sibling imports only) because it travels into saved folders for
`trust_remote_code=True`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .audio_token_layout import (
    IdsLike,
    SemantiCodecVocabularyLayout,
    as_int_array,
    check_pattern,
    codes_to_ids,
    ids_to_codes,
    is_batch_of_ids,
    strip_special_tokens,
)


class AudioTokenIds:
    r"""
    Codes `[streams, frames]` <-> flat id sequences in one layout and pattern.

    Args:
        layout ([`SemantiCodecVocabularyLayout`]): the flat vocabulary (stream offsets, special tokens).
        pattern (`str`): `"interleaved"` (default), `"semantic_then_acoustic"` or `"semantic_only"`.
        add_special_tokens (`bool`): wrap each clip as `<bos> ... <eos>` in `codes_to_ids` (default True).
    """

    def __init__(self, layout: SemantiCodecVocabularyLayout, pattern: str = "interleaved",
                 add_special_tokens: bool = True):
        self.layout = layout
        self.pattern = check_pattern(pattern)
        self.add_special_tokens = bool(add_special_tokens)

    # ------------------------------------------------------------------------------------ properties
    vocab_size = property(lambda self: self.layout.vocab_size, doc="Rows an LM embedding table needs.")
    bos_token_id = property(lambda self: self.layout.bos_token_id)
    eos_token_id = property(lambda self: self.layout.eos_token_id)
    pad_token_id = property(lambda self: self.layout.pad_token_id)
    sep_token_id = property(lambda self: self.layout.sep_token_id)

    @property
    def ids_per_frame(self) -> int:
        return 1 if self.pattern == "semantic_only" else 2

    # ------------------------------------------------------------------------------------ codes <-> ids
    def _wrap(self, body: np.ndarray, add_special_tokens: Optional[bool]) -> List[int]:
        add = self.add_special_tokens if add_special_tokens is None else add_special_tokens
        ids = body.tolist()
        return [self.bos_token_id, *ids, self.eos_token_id] if add else ids

    def codes_to_ids(
        self,
        audio_codes: Union[torch.Tensor, np.ndarray, Sequence[Union[torch.Tensor, np.ndarray]]],
        audio_codes_lengths: Optional[Sequence[int]] = None,
        add_special_tokens: Optional[bool] = None,
    ) -> Union[List[int], List[List[int]]]:
        """Codes -> ids. `[2, F]` gives one list; `[B, 2, F]` (with `audio_codes_lengths`) or a list of `[2, F]`
        gives a list per clip."""
        if isinstance(audio_codes, (list, tuple)):
            return [self._wrap(codes_to_ids(c, self.layout, self.pattern), add_special_tokens) for c in audio_codes]
        array = audio_codes.detach().cpu().numpy() if torch.is_tensor(audio_codes) else np.asarray(audio_codes)
        if array.ndim == 2:
            return self._wrap(codes_to_ids(array, self.layout, self.pattern), add_special_tokens)
        if array.ndim != 3:
            raise ValueError(f"audio_codes must be (2, frames) or (batch, 2, frames), got shape {array.shape}.")
        if audio_codes_lengths is None:
            lengths = [array.shape[-1]] * array.shape[0]
        else:
            lengths = [int(n) for n in audio_codes_lengths]
        if len(lengths) != array.shape[0]:
            raise ValueError(f"Got {len(lengths)} lengths for a batch of {array.shape[0]} codes.")
        return [
            self._wrap(codes_to_ids(array[i, :, :n], self.layout, self.pattern), add_special_tokens)
            for i, n in enumerate(lengths)
        ]

    def _decode_one(self, ids: Any, mask: Optional[Any] = None) -> torch.Tensor:
        array, first = as_int_array(ids, "ids"), 0
        if mask is not None:
            mask_array = as_int_array(mask, "attention_mask")
            if mask_array.size != array.size:
                raise ValueError(f"attention_mask has {mask_array.size} entries for {array.size} ids.")
            kept = np.flatnonzero(mask_array)
            if kept.size and kept[-1] - kept[0] + 1 != kept.size:
                raise ValueError("attention_mask has a hole; masked positions must be at the ends (padding).")
            first = int(kept[0]) if kept.size else 0
            array = array[kept]
        body, start = strip_special_tokens(array, self.layout)
        return torch.from_numpy(ids_to_codes(body, self.layout, self.pattern, position_offset=first + start))

    def _decode_one_reporting(self, ids: Any, mask: Optional[Any], item: Optional[int]) -> torch.Tensor:
        try:
            return self._decode_one(ids, mask)
        except ValueError as error:
            if item is None:
                raise
            raise ValueError(f"Sequence {item}: {error}") from None

    def decode_ids(
        self, ids: Any, attention_mask: Optional[Any] = None
    ) -> Union[torch.LongTensor, List[torch.LongTensor]]:
        """Ids -> codes, the exact inverse of the pattern: `[2, F]` per clip (`[1, F]` for `semantic_only`).

        Accepts one sequence (list of ints, 1-D array/tensor) or a batch (list of lists, 2-D array/tensor with an
        optional `attention_mask`). Padding at either end, a leading `<bos>` and a trailing `<eos>` are removed;
        anything else out of place raises a ValueError that names the position and the value.
        """
        if not is_batch_of_ids(ids):
            if attention_mask is not None and is_batch_of_ids(attention_mask):
                raise ValueError("attention_mask is 2-D but ids is one sequence.")
            return self._decode_one_reporting(ids, attention_mask, None)
        masks = [None] * len(ids) if attention_mask is None else list(attention_mask)
        if len(masks) != len(ids):
            raise ValueError(f"attention_mask has {len(masks)} rows for {len(ids)} sequences.")
        return [self._decode_one_reporting(row, m, i) for i, (row, m) in enumerate(zip(ids, masks))]

    def join_clips(self, clips: Sequence[IdsLike]) -> List[int]:
        """Several clips' ids -> one sequence `<bos> c1 <sep> c2 ... <eos>` (each clip's own bos/eos dropped)."""
        joined: List[int] = []
        for index, clip in enumerate(clips):
            body, _ = strip_special_tokens(as_int_array(clip, f"clip {index}"), self.layout)
            if index:
                joined.append(self.sep_token_id)
            joined.extend(body.tolist())
        return [self.bos_token_id, *joined, self.eos_token_id]

    def split_clips(self, ids: IdsLike) -> List[List[int]]:
        """Inverse of `join_clips`: one sequence -> the audio ids of each clip (split at `<sep>`)."""
        body, _ = strip_special_tokens(as_int_array(ids, "ids"), self.layout)
        if not body.size:
            return []
        parts = np.split(body, np.flatnonzero(body == self.sep_token_id))
        return [parts[0].tolist()] + [part[1:].tolist() for part in parts[1:]]

    def pad(self, ids: Sequence[Sequence[int]], padding_side: str = "right") -> Dict[str, torch.Tensor]:
        """Lists of ids -> `input_ids` `[batch, longest]` padded with `<pad>` and `attention_mask`."""
        longest = max((len(row) for row in ids), default=0)
        input_ids = torch.full((len(ids), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for i, row in enumerate(ids):
            span = slice(0, len(row)) if padding_side == "right" else slice(longest - len(row), longest)
            input_ids[i, span] = torch.as_tensor(list(row), dtype=torch.long)
            mask[i, span] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

"""Token healing for LMs on acoustic-BPE pieces: the prompt's last piece is taken back and the LM writes it again,
as itself or as any longer piece that starts with its semantic ids.

A prompt cut out of a longer clip is encoded alone, so its last piece is often a prefix of the piece the LM saw at
that place in training (the merge needed ids after the cut). An LM never trained on such a boundary continues it
worse. Healing removes the last piece from the prompt and lets the first new piece be any piece whose semantic
ids begin with the removed one's (`HealedFirstPieceLogitsProcessor`): the prompt's semantic ids stay exactly
what they were, and the boundary is one the LM knows.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch


def piece_base_ids(bpe: Any) -> List[Tuple[int, ...]]:
    """Per piece id (0 = `<unk>`: empty), the semantic ids it stands for (`bpe.piece_ids`)."""
    return [()] + [tuple(bpe.piece_ids(piece)) for piece in range(1, bpe.vocab_size)]


def extensions_of(base_ids: Sequence[Tuple[int, ...]], piece: int) -> List[int]:
    """Every piece whose semantic ids start with those of `piece` (itself included), ascending."""
    prefix = base_ids[piece]
    if not prefix:
        raise ValueError(f"piece {piece} stands for no semantic ids (<unk>); it cannot be healed.")
    return [other for other, ids in enumerate(base_ids) if ids[: len(prefix)] == prefix]


def heal_prompts(prompt_pieces: Sequence[Sequence[int]], base_ids: Sequence[Tuple[int, ...]]
                 ) -> Tuple[List[List[int]], List[Optional[List[int]]]]:
    """(prompts without their last piece, per row the pieces allowed first: None for an empty prompt)."""
    healed, allowed = [], []
    cache: Dict[int, List[int]] = {}
    for pieces in prompt_pieces:
        pieces = [int(p) for p in pieces]
        if not pieces:
            healed.append([])
            allowed.append(None)
            continue
        last = pieces[-1]
        if last not in cache:
            cache[last] = extensions_of(base_ids, last)
        healed.append(pieces[:-1])
        allowed.append(cache[last])
    return healed, allowed


class HealedFirstPieceLogitsProcessor:
    """At the first new position of a `generate` call (the prompt `start_width` ids wide), row r may write only
    `allowed[r]` (None: anything); later positions are left alone. Rows are the batch's rows, beams included."""

    def __init__(self, allowed: Sequence[Optional[Sequence[int]]], start_width: int):
        self.allowed = [None if a is None else torch.as_tensor(list(a), dtype=torch.long) for a in allowed]
        self.start_width = int(start_width)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] != self.start_width:
            return scores
        if input_ids.shape[0] != len(self.allowed):
            raise ValueError(f"healing was planned for {len(self.allowed)} rows but the batch has "
                             f"{input_ids.shape[0]}; give one entry per row (beams included).")
        keep = torch.ones_like(scores, dtype=torch.bool)
        for row, allowed in enumerate(self.allowed):
            if allowed is not None:
                keep[row] = False
                keep[row, allowed.to(scores.device)] = True
        return scores.masked_fill(~keep, float("-inf"))

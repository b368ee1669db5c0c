"""`PatternLogitsProcessor`: the constraint engine of audio-LM generation. It lets an LM write only id sequences
the codec can decode (the right stream at every position, `<eos>` only after a whole frame); `lm/generate.py`
uses it for continuation, and any `transformers` `generate` call can use it directly."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from semanticodec_hf.audio_token_layout import PATTERNS, SemantiCodecVocabularyLayout


def body_mask(ids: torch.Tensor, layout: SemantiCodecVocabularyLayout) -> torch.Tensor:
    """Bool [B, L]: the positions of each row of `ids` [B, L] after its last `<bos>`/`<sep>` (or, with neither, from
    its first non-`<pad>` id): the clip being written, which every length rule counts."""
    positions = torch.arange(ids.shape[1], device=ids.device)
    starts = (ids == layout.bos_token_id) | (ids == layout.sep_token_id)
    last_start = torch.where(starts, positions, -1).max(dim=1).values
    first_id = (ids != layout.pad_token_id).long().argmax(dim=1)
    return positions >= torch.where(last_start >= 0, last_start + 1, first_id)[:, None]


class PatternLogitsProcessor:
    """A `transformers` logits processor that only lets the LM write ids the codec can decode.

    For every row it reads the ids after the row's last `<bos>`/`<sep>` and allows exactly what the pattern
    permits next: interleaved - a semantic id at even offsets, an acoustic id at odd ones; semantic_then_acoustic -
    semantic ids, then as many acoustic ids (the prompt's own acoustic ids first, if given); semantic_only -
    semantic ids. `<eos>` is allowed only after a whole frame and, with `target_frames`, is forced once a row has
    that many frames (and forbidden before, unless `allow_early_eos`). `min_frames` (one entry per row) forbids
    `<eos>` before a row has that many frames, whatever else allows it. Finished rows may only write `<pad>`/`<eos>`.

    All of it runs batched on the ids' device, with no copy to the host. A row's state (semantic ids, acoustic
    ids, finished) is scanned from the ids at the first call of a `generate`; each later call adds the one new id
    (a table lookup) and checks that the ids extend the previous call's (otherwise - a new prompt, reordered
    beams - it scans again). So the state always follows from the ids alone, and beam search, which reorders
    rows between calls, gets the right mask for every beam. The state gives seven yes/no facts per row
    (`_FACTS`); the allowed ids for each of their 128 combinations are tabulated once from the plain rule in
    `_rule`. `target_frames`, `min_frames` and `forced_acoustic` have one entry per row (with beam search, one
    per beam: row b's beams are rows b * num_beams ... b * num_beams + num_beams - 1).
    """

    def __init__(
        self,
        layout: SemantiCodecVocabularyLayout,
        pattern: str,
        target_frames: Optional[Sequence[int]] = None,
        allow_early_eos: bool = False,
        forced_acoustic: Optional[Sequence[Sequence[int]]] = None,
        min_frames: Optional[Sequence[int]] = None,
    ):
        if pattern not in PATTERNS:
            raise ValueError(f"Unknown pattern {pattern!r}; choose one of {list(PATTERNS)}.")
        if pattern == "semantic_then_acoustic" and target_frames is None:
            raise ValueError("semantic_then_acoustic generation needs target_frames: the model must know when to "
                             "switch from semantic to acoustic ids.")
        self.layout, self.pattern = layout, pattern
        self.target_frames = None if target_frames is None else [int(f) for f in target_frames]
        self.allow_early_eos = bool(allow_early_eos)
        self.forced_acoustic = None if forced_acoustic is None else [list(map(int, f)) for f in forced_acoustic]
        self.min_frames = None if min_frames is None else [int(f) for f in min_frames]
        if self.min_frames is not None:
            if any(f < 0 for f in self.min_frames):
                raise ValueError(f"min_frames must be >= 0, got {self.min_frames}.")
            if self.target_frames is not None:
                if len(self.target_frames) != len(self.min_frames):
                    raise ValueError(f"min_frames has {len(self.min_frames)} entries but target_frames has "
                                     f"{len(self.target_frames)}; give one of each per row.")
                over = [row for row, (low, high) in enumerate(zip(self.min_frames, self.target_frames)) if low > high]
                if over:
                    row = over[0]
                    raise ValueError(f"min_frames {self.min_frames[row]} exceeds target_frames "
                                     f"{self.target_frames[row]} in row {row}; the minimum must not pass the target.")
        if self.forced_acoustic is not None:
            bad = [(row, i) for row, f in enumerate(self.forced_acoustic) for i in f
                   if not 0 <= i < layout.acoustic_vocab_size]
            if bad:
                raise ValueError(f"forced_acoustic row {bad[0][0]} holds {bad[0][1]}, not an acoustic code in "
                                 f"0..{layout.acoustic_vocab_size - 1} (give codes, not LM ids).")
        self._tables: Dict[Any, torch.Tensor] = {}  # per (name, device, width, rows)
        self._previous: Optional[torch.Tensor] = None  # the ids of the last call
        self._state: Optional[torch.Tensor] = None  # int64 [B, 3]: semantic ids, acoustic ids, <eos> seen

    # ------------------------------------------------------------------------------------------- the rule
    def _rule(self, frame_open: bool, more: bool, has_frame: bool, finished: bool, no_acoustic: bool,
              forced_due: bool, early: bool) -> Tuple[bool, bool, bool, bool]:
        """(semantic ids, acoustic ids, `<eos>`, only the row's forced acoustic id) allowed next, from the facts."""
        if finished:
            return False, False, True, False  # (and <pad>)
        if self.pattern == "semantic_then_acoustic":  # target is known
            if no_acoustic and more:
                return True, False, False, False
            if frame_open:  # fewer acoustic than semantic ids
                return False, not forced_due, False, forced_due
            return False, False, has_frame and not early, False
        if self.pattern == "interleaved" and frame_open:
            return False, True, False, False
        eos = has_frame and not early and (not more or self.allow_early_eos or self.target_frames is None)
        return more, False, eos, False

    def _check_rows(self, rows: int) -> None:
        for name, values in (("target_frames", self.target_frames), ("forced_acoustic", self.forced_acoustic),
                             ("min_frames", self.min_frames)):
            if values is not None and len(values) != rows:
                raise ValueError(f"{name} has {len(values)} entries but the batch has {rows} rows; give one per row "
                                 "(beams included).")

    def _mode(self, state: torch.Tensor) -> torch.Tensor:
        """[B] mode code: bit k says whether fact k of `_FACTS` holds. Integer comparisons, so counts stay exact
        under autocast and at any length."""
        device, rows = state.device, state.shape[0]
        semantic, acoustic, eos = state.unbind(dim=1)
        facts = torch.stack([
            semantic > acoustic,  # frame_open
            semantic < self._table("targets", device, rows=rows),  # more
            semantic > 0,  # has_frame
            eos > 0,  # finished
            acoustic == 0,  # no_acoustic
            acoustic < self._table("forced_counts", device, rows=rows),  # forced_due
            semantic < self._table("minimums", device, rows=rows),  # early
        ], dim=1)
        return (facts.long() * self._table("bits", device)).sum(dim=1)

    # ------------------------------------------------------------------------------------------- tables
    def _table(self, name: str, device: torch.device, width: int = 0, rows: int = 0) -> torch.Tensor:
        """Constant tensors built once per device (and width / rows): id effects, fact weights, mode masks."""
        key = (name, device, width, rows)
        if key not in self._tables:
            self._tables[key] = self._build_table(name, width, rows).to(device)
        return self._tables[key]

    def _build_table(self, name: str, width: int, rows: int) -> torch.Tensor:
        layout = self.layout
        if name == "effects":  # appending id i: state = state * effects[i, 0] + effects[i, 1]
            effects = torch.zeros(max(width, layout.vocab_size), 2, 3, dtype=torch.long)
            effects[:, 0] = 1
            effects[: layout.acoustic_offset, 1, 0] = 1
            effects[layout.acoustic_offset: layout.special_offset, 1, 1] = 1
            effects[layout.eos_token_id, 1, 2] = 1
            effects[[layout.bos_token_id, layout.sep_token_id], 0] = 0  # a new body starts
            return effects
        if name == "targets":  # per row: the frames to reach (no target: always more)
            return torch.tensor(self.target_frames or [2 ** 62] * rows, dtype=torch.long)
        if name == "minimums":  # per row: frames before which <eos> is forbidden (none: 0)
            return torch.tensor(self.min_frames or [0] * rows, dtype=torch.long)
        if name == "forced_counts":  # per row: how many acoustic ids are forced
            forced = [len(f) for f in self.forced_acoustic] if self.forced_acoustic is not None else [0] * rows
            return torch.tensor(forced, dtype=torch.long)
        if name == "forced":  # [rows, longest]: LM ids of each row's forced acoustic codes (read where due)
            longest = max([len(f) for f in self.forced_acoustic] + [1])
            forced = torch.zeros(len(self.forced_acoustic), longest, dtype=torch.long)
            for row, codes in enumerate(self.forced_acoustic):
                forced[row, : len(codes)] = torch.tensor(codes, dtype=torch.long) + layout.acoustic_offset
            return forced
        if name == "blocked":  # [128, width]: the ids a row may NOT write next, for each combination of the facts
            columns = torch.arange(width)
            semantic = columns < layout.acoustic_offset
            acoustic = (columns >= layout.acoustic_offset) & (columns < layout.special_offset)
            eos, pad = columns == layout.eos_token_id, columns == layout.pad_token_id
            allowed = torch.zeros(len(_ALL_FACTS), width, dtype=torch.bool)
            for code, facts in enumerate(_ALL_FACTS):
                sem, ac, end, _ = self._rule(*facts)
                allowed[code] = (semantic & sem) | (acoustic & ac) | (eos & end) | (pad & facts[3])
            return ~allowed
        if name == "forced_only":  # [128]: combinations in which only the row's forced acoustic id may follow
            return torch.tensor([self._rule(*facts)[3] for facts in _ALL_FACTS])
        if name == "bits":
            return torch.tensor([1 << bit for bit in range(len(_FACTS))])
        raise KeyError(name)

    # ------------------------------------------------------------------------------------------- row state
    def _scan(self, ids: torch.Tensor) -> torch.Tensor:
        """Int64 [B, 3] (semantic ids, acoustic ids, `<eos>` seen) of each row of `ids` [B, L], counted after the
        row's last `<bos>`/`<sep>` (or, with neither, from its first non-`<pad>` id)."""
        layout = self.layout
        body = body_mask(ids, layout)
        semantic = (body & (ids < layout.acoustic_offset)).sum(dim=1)
        acoustic = (body & (ids >= layout.acoustic_offset) & (ids < layout.special_offset)).sum(dim=1)
        finished = (body & (ids == layout.eos_token_id)).any(dim=1)
        return torch.stack([semantic, acoustic, finished.long()], dim=1)

    def _advance(self, state: torch.Tensor, new: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """The state after appending the ids `new` [B] (< `vocab_size`): what `_scan` of the longer ids gives
        (the `<eos>` column may count past 1; only > 0 matters)."""
        effects = self._table("effects", new.device, width=vocab_size)[new]
        return state * effects[:, 0] + effects[:, 1]

    def _blocked(self, state: torch.Tensor, width: int) -> torch.Tensor:
        """Bool [B, width]: True where a row may NOT write the id next (ids past the layout's: always)."""
        code = self._mode(state)
        blocked = self._table("blocked", state.device, width=width)[code]
        if self.forced_acoustic is not None:  # rows whose next id is forced: only that one
            only = self._table("forced_only", state.device)[code]
            rows = torch.arange(state.shape[0], device=state.device)[only]
            table = self._table("forced", state.device)
            blocked[rows, table[rows, state[rows, 1]]] = False
        return blocked

    def allowed(self, row: int, ids: np.ndarray) -> torch.Tensor:
        """Boolean mask over the layout's vocabulary of the ids row `row` of a batch may write after `ids`."""
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)[None]
        rows = max(len(self.target_frames or []), len(self.forced_acoustic or []), len(self.min_frames or []),
                   row + 1)
        self._check_rows(rows)
        state = self._scan(ids).expand(rows, 3).contiguous()  # the row sits at its index in the batch
        return ~self._blocked(state, self.layout.vocab_size)[row]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        previous = self._previous
        if (previous is not None and previous.device == input_ids.device
                and previous.shape == (input_ids.shape[0], input_ids.shape[1] - 1)
                and torch.equal(input_ids[:, :-1], previous)):
            self._state = self._advance(self._state, input_ids[:, -1], scores.shape[-1])
        else:  # the first step of a generate call (or ids that do not extend the last call's)
            self._check_rows(input_ids.shape[0])
            self._state = self._scan(input_ids)
        self._previous = input_ids
        return scores.masked_fill(self._blocked(self._state, scores.shape[-1]), float("-inf"))


class SemanticNoRepeatNGramLogitsProcessor:
    """A `transformers` logits processor: no n-gram of semantic ids may occur twice in a row's semantic stream.

    transformers' own `no_repeat_ngram_size` looks at all ids, which for interleaved ids means n-grams that mix
    the streams (and it then bans acoustic ids too). This one reads only each row's semantic ids (ids below the
    layout's acoustic offset; prompt included, acoustic and special ids skipped) and bans the semantic ids that
    would complete an n-gram already in that stream; acoustic ids are never banned. Stateless: it derives
    everything from `input_ids`, so it works per beam under beam search.

    Put it after `PatternLogitsProcessor`: if the ban would leave a row nothing it may write (a small semantic
    vocabulary runs out of fresh n-grams), the ban gives way for that row rather than leaving every id at -inf.

    `history` (one list per row, optional): semantic ids that came before the row's `input_ids` but are no
    longer in them - long-form generation slides its window and passes what slid out, so the rule still holds
    over the whole clip, not only over what the LM sees.
    """

    def __init__(self, layout: SemantiCodecVocabularyLayout, ngram_size: int,
                 history: Optional[Sequence[Sequence[int]]] = None):
        if isinstance(ngram_size, bool) or not isinstance(ngram_size, int) or ngram_size < 1:
            raise ValueError(f"no_repeat_ngram_size must be a positive integer (leave it out for no rule), got "
                             f"{ngram_size!r}.")
        self.layout, self.ngram_size = layout, ngram_size
        self.history = None if history is None else [torch.as_tensor(list(h), dtype=torch.long) for h in history]
        if self.history is not None:
            bad = [(row, int(h[(h < 0) | (h >= layout.acoustic_offset)][0])) for row, h in enumerate(self.history)
                   if ((h < 0) | (h >= layout.acoustic_offset)).any()]
            if bad:
                raise ValueError(f"history row {bad[0][0]} holds {bad[0][1]}, not a semantic id in "
                                 f"0..{layout.acoustic_offset - 1}; give only the semantic ids that slid out.")

    def banned(self, ids: torch.Tensor, history: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The semantic ids one row (ids [L]) may not write next: those completing an n-gram its semantic stream
        (after `history`, the row's earlier semantic ids) already holds."""
        semantic = ids[ids < self.layout.acoustic_offset]
        if history is not None and history.numel():
            semantic = torch.cat([history.to(semantic.device), semantic])
        n = self.ngram_size
        if semantic.numel() < n:
            return semantic.new_empty(0)
        windows = semantic.unfold(0, n, 1)  # [windows, n], every n-gram of the stream
        prefix = semantic[semantic.numel() - (n - 1):]  # the n - 1 ids a new n-gram would start with
        matches = (windows[:, : n - 1] == prefix).all(dim=1)
        return windows[matches, n - 1].unique()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.history is not None and len(self.history) != input_ids.shape[0]:
            raise ValueError(f"history has {len(self.history)} rows but the batch has {input_ids.shape[0]}; give "
                             "one per row.")
        out = scores.clone()
        for row in range(input_ids.shape[0]):
            banned = self.banned(input_ids[row], None if self.history is None else self.history[row])
            if banned.numel():
                trial = scores[row].index_fill(0, banned, float("-inf"))
                if torch.isfinite(trial).any():  # otherwise the rule gives way for this row
                    out[row] = trial
        return out


# The yes/no facts about a row that decide what it may write next (bit k of a mode code is fact k).
_FACTS = ("frame_open", "more", "has_frame", "finished", "no_acoustic", "forced_due", "early")
_ALL_FACTS = [[bool(code >> bit & 1) for bit in range(len(_FACTS))] for code in range(2 ** len(_FACTS))]

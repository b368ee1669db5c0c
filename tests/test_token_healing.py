"""Token healing of acoustic-BPE prompts: the last prompt piece is taken back and the first new piece must start
with its semantic ids, so the prompt's semantic ids survive exactly and the boundary is one training saw."""

import pytest
import torch

pytest.importorskip("sentencepiece")

from semanticodec_hf.acoustic_bpe import AcousticBPE  # noqa: E402
from semanticodec_hf.lm.token_healing import (  # noqa: E402
    HealedFirstPieceLogitsProcessor,
    extensions_of,
    heal_prompts,
    piece_base_ids,
)


@pytest.fixture(scope="module")
def bpe():
    """Merges of a repeated motif (0 1 2 3 4 5) over 16 base ids, so long pieces and their prefixes exist."""
    motif = [0, 1, 2, 3, 4, 5]
    streams = [motif * 8 + [6 + (i % 10)] + motif * 4 for i in range(40)]
    return AcousticBPE.train(streams, num_base_ids=16, vocab_size=40)


@pytest.fixture(scope="module")
def base_ids(bpe):
    return piece_base_ids(bpe)


def test_base_ids_are_the_pieces_semantic_ids(bpe, base_ids):
    assert len(base_ids) == bpe.vocab_size and base_ids[0] == ()
    assert all(list(base_ids[p]) == bpe.piece_ids(p) for p in range(1, bpe.vocab_size))
    assert max(map(len, base_ids)) >= 3  # the motif was merged: healing has something to choose from


def test_extensions_are_exactly_the_pieces_that_start_with_the_piece(bpe, base_ids):
    for piece in range(1, bpe.vocab_size):
        found = extensions_of(base_ids, piece)
        prefix = base_ids[piece]
        assert piece in found
        assert found == [q for q in range(1, bpe.vocab_size) if base_ids[q][: len(prefix)] == prefix]
    long_piece = max(range(1, bpe.vocab_size), key=lambda p: len(base_ids[p]))
    first_id = bpe.encode(list(base_ids[long_piece][:1]))[0]
    assert long_piece in extensions_of(base_ids, first_id)  # a one-id piece heals into the long merge
    with pytest.raises(ValueError, match="<unk>"):
        extensions_of(base_ids, 0)


def test_heal_prompts_takes_back_the_last_piece(bpe, base_ids):
    prompts = [bpe.encode([0, 1, 2, 3, 4, 5, 0, 1]), [], bpe.encode([7, 8])]
    healed, allowed = heal_prompts(prompts, base_ids)
    assert healed[0] == prompts[0][:-1] and healed[1] == [] and healed[2] == prompts[2][:-1]
    assert allowed[1] is None
    assert allowed[0] == extensions_of(base_ids, prompts[0][-1])
    # any allowed first piece keeps the prompt's semantic ids as the start of the healed sequence
    for row in (0, 2):
        original = bpe.decode(prompts[row])
        for first in allowed[row]:
            assert bpe.decode(healed[row] + [first])[: len(original)] == original


def test_the_processor_masks_only_the_first_new_position_of_each_row():
    processor = HealedFirstPieceLogitsProcessor([[2, 5], None], start_width=3)
    scores = torch.zeros(2, 8)
    first = processor(torch.ones(2, 3, dtype=torch.long), scores.clone())
    assert torch.isfinite(first[0]).tolist() == [False, False, True, False, False, True, False, False]
    assert torch.isfinite(first[1]).all()  # no healing for this row
    later = processor(torch.ones(2, 4, dtype=torch.long), scores.clone())
    assert torch.isfinite(later).all()
    with pytest.raises(ValueError, match="one entry per row"):
        processor(torch.ones(3, 3, dtype=torch.long), torch.zeros(3, 8))


def _continue(bpe, prompt_pieces, first_pieces, scores, target_frames):
    """`generate_pieces` with a greedy fixed-score LM (it always prefers the same pieces) on the BPE layout."""
    from fixed_score_lms import fixed_score_lm
    from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout
    from semanticodec_hf.lm.data import bpe_layout
    from semanticodec_hf.lm.generate import decoding_arguments, generate_pieces, piece_frame_table

    layout = bpe_layout(bpe, SemantiCodecVocabularyLayout(16, 32))
    lm = fixed_score_lm(layout, scores)
    bodies, slides = generate_pieces(lm, layout, piece_frame_table(bpe, layout), prompt_pieces, target_frames,
                                     None, decoding_arguments(greedy=True), first_pieces=first_pieces)
    assert slides == 0
    return bodies


def test_healing_lets_the_lm_restate_the_cut_piece_as_the_merge_it_prefers(bpe, base_ids):
    long_piece = max(range(1, bpe.vocab_size), key=lambda p: len(base_ids[p]))
    prompt = list(base_ids[long_piece][:1])  # a prompt cut right after the merge's first id
    prompt_pieces = [bpe.encode(prompt)]
    target = len(base_ids[long_piece]) + 1
    prefers_the_merge = {long_piece: 5.0}

    healed, allowed = heal_prompts(prompt_pieces, base_ids)
    with_healing = _continue(bpe, healed, allowed, prefers_the_merge, target)[0]
    assert with_healing[0] == long_piece  # the cut piece came back as the whole merge
    assert bpe.decode(with_healing)[: len(base_ids[long_piece])] == list(base_ids[long_piece])

    without = _continue(bpe, prompt_pieces, None, prefers_the_merge, target)[0]
    assert without[: len(prompt_pieces[0])] == prompt_pieces[0] and without[len(prompt_pieces[0])] == long_piece
    assert bpe.decode(without)[:2] == [prompt[0], prompt[0]]  # the merge's first id twice: not what healing gives


def test_healing_keeps_the_prompt_when_the_lm_prefers_another_piece(bpe, base_ids):
    prompt = [0, 1, 2, 3, 4, 5, 0, 1]
    prompt_pieces = [bpe.encode(prompt)]
    healed, allowed = heal_prompts(prompt_pieces, base_ids)
    elsewhere = next(p for p in range(1, bpe.vocab_size) if p not in allowed[0])
    body = _continue(bpe, healed, allowed, {elsewhere: 5.0}, len(prompt) + 4)[0]
    assert body[len(healed[0])] in allowed[0]  # forced back onto the prompt's ids at the first new piece
    assert bpe.decode(body)[: len(prompt)] == prompt
    assert elsewhere in body[len(healed[0]) + 1:]  # and free afterwards

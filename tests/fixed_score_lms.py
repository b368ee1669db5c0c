"""A real GPT-2 whose next-id scores are the same at every position, whatever the context: the final layer norm's
scale is zeroed, so its output is its bias, a constant unit vector, and the untied output matrix turns that into
fixed scores. Its log-likelihoods are known by hand, and greedily it repeats itself forever, which is what the
LM tests of sampling controls, long-form continuation and evaluation need."""

from typing import Dict, Sequence, Union

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def fixed_score_lm(layout, scores: Union[Dict[int, float], Sequence[float], torch.Tensor],
                   positions: int = 256) -> GPT2LMHeadModel:
    """`scores`: {id: score} (0 elsewhere) or one score per id of `layout`'s vocabulary."""
    config = GPT2Config(vocab_size=layout.vocab_size, n_embd=8, n_layer=1, n_head=2, n_positions=positions,
                        tie_word_embeddings=False, bos_token_id=layout.bos_token_id,
                        eos_token_id=layout.eos_token_id, pad_token_id=layout.pad_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
    column = torch.zeros(layout.vocab_size)
    if isinstance(scores, dict):
        for token, score in scores.items():
            column[token] = score
    else:
        column[:] = torch.as_tensor(scores, dtype=torch.float32)
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = column
    return model

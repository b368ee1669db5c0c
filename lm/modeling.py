"""The audio LM itself: a stock transformers causal LM sized from a recipe, and the per-stream token losses."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout

from .config import ModelRecipe
from .data import IGNORE_INDEX

STREAMS = ("semantic", "acoustic", "special")


def build_config(recipe: ModelRecipe, layout: SemantiCodecVocabularyLayout):
    """A GPT-2 or Llama config whose vocabulary is the tokenizer's flat vocabulary (ids, special tokens)."""
    from transformers import GPT2Config, LlamaConfig

    intermediate = recipe.intermediate_size or 4 * recipe.hidden_size
    special = dict(bos_token_id=layout.bos_token_id, eos_token_id=layout.eos_token_id,
                   pad_token_id=layout.pad_token_id, vocab_size=layout.vocab_size)
    if recipe.architecture == "gpt2":
        config = GPT2Config(
            n_embd=recipe.hidden_size, n_layer=recipe.num_layers, n_head=recipe.num_heads, n_inner=intermediate,
            n_positions=recipe.max_position_embeddings, resid_pdrop=recipe.dropout, embd_pdrop=recipe.dropout,
            attn_pdrop=recipe.dropout, **special,
        )
    else:
        config = LlamaConfig(
            hidden_size=recipe.hidden_size, num_hidden_layers=recipe.num_layers,
            num_attention_heads=recipe.num_heads, intermediate_size=intermediate,
            max_position_embeddings=recipe.max_position_embeddings, attention_dropout=recipe.dropout,
            tie_word_embeddings=False, **special,
        )
    for key, value in recipe.extra.items():
        setattr(config, key, value)
    return config


def build_model(recipe: ModelRecipe, layout: SemantiCodecVocabularyLayout):
    """`AutoModelForCausalLM.from_config`: any transformers decoder works; weights from the current torch seed."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(build_config(recipe, layout))


def stream_of_ids(ids: torch.Tensor, layout: SemantiCodecVocabularyLayout) -> torch.Tensor:
    """0 for semantic, 1 for acoustic, 2 for special ids (same shape as `ids`)."""
    return (ids >= layout.acoustic_offset).long() + (ids >= layout.special_offset).long()


def token_losses(logits: torch.Tensor, labels: torch.Tensor, layout: SemantiCodecVocabularyLayout) -> Dict[str, torch.Tensor]:
    """Summed next-token cross-entropy and token counts, overall and per target stream.

    Sums (not means) so that callers can divide by a token count taken over a whole global batch: then the
    gradient does not depend on how that batch was split over processes or accumulation steps.
    """
    shifted_logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    valid = targets != IGNORE_INDEX
    per_token = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]), targets.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="none",
    ).view_as(targets)
    streams = stream_of_ids(targets.clamp(min=0), layout)
    out = {"loss_sum": per_token.sum(), "tokens": valid.sum()}
    for index, name in enumerate(STREAMS):
        chosen = valid & (streams == index)
        out[f"{name}_loss_sum"] = per_token[chosen].sum()
        out[f"{name}_tokens"] = chosen.sum()
    return out


def count_targets(labels: torch.Tensor) -> int:
    """Number of positions that contribute to the loss (labels shifted by one, as in `token_losses`)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())

"""The audio LM itself: a stock transformers causal LM sized from a recipe, and the per-stream token losses."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F

from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout

from .config import ModelRecipe
from .data import IGNORE_INDEX

STREAMS = ("semantic", "acoustic", "special", "text")  # text: only with a kept text vocabulary (JointLayout)


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
    """`AutoModelForCausalLM.from_config`: any transformers decoder works; weights from the current torch seed.
    With `recipe.init_from`, the pretrained LM with the audio vocabulary instead (`warm_start_model`)."""
    from transformers import AutoModelForCausalLM

    if recipe.init_from is not None:
        return warm_start_model(recipe, layout)
    return AutoModelForCausalLM.from_config(build_config(recipe, layout))


def context_length(config: Any) -> Optional[int]:
    """Positions a transformers config allows (`max_position_embeddings`, GPT-2's `n_positions`), if it says."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def _loaded_architecture(config: Any) -> Dict[str, Any]:
    """The `ModelRecipe` architecture fields as a loaded transformers config has them (None: not readable)."""
    hidden = getattr(config, "hidden_size", None)
    intermediate = getattr(config, "intermediate_size", None)
    if config.model_type == "gpt2":  # GPT-2 keeps it as n_inner, None meaning 4 x hidden
        intermediate = config.n_inner or (4 * hidden if hidden else None)
    dropout = getattr(config, "resid_pdrop", getattr(config, "attention_dropout", None))
    return {"architecture": config.model_type, "hidden_size": hidden,
            "num_layers": getattr(config, "num_hidden_layers", None),
            "num_heads": getattr(config, "num_attention_heads", None), "intermediate_size": intermediate,
            "max_position_embeddings": context_length(config), "dropout": dropout}


def check_recipe_against(recipe: ModelRecipe, config: Any) -> None:
    """With `init_from`, the loaded model defines the architecture: recipe fields left at their defaults are
    ignored, a field set to another value must equal the loaded model's (else ValueError naming each)."""
    defaults = ModelRecipe()
    loaded = _loaded_architecture(config)
    conflicts = [f"model.{name}={getattr(recipe, name)!r} but {recipe.init_from} has {value!r}"
                 for name, value in loaded.items()
                 if value is not None  # a field the loaded config does not state cannot be checked
                 and getattr(recipe, name) != getattr(defaults, name) and getattr(recipe, name) != value]
    if conflicts:
        raise ValueError(
            "model.init_from takes the architecture from the loaded model: " + "; ".join(conflicts) + ". Remove "
            "these keys from the recipe (or make them match); change the loaded config through model.extra."
        )


def replace_vocabulary(model: Any, layout: SemantiCodecVocabularyLayout) -> Any:
    """Give a pretrained causal LM the audio vocabulary in place of its own: new input embedding (and, if not
    tied to it, output) rows, `layout.vocab_size` of them, drawn from N(0, initializer_range) with the current
    torch seed; an output bias is zeroed. Every other weight is kept as it is. The config's and generation
    config's `<bos>`/`<eos>`/`<pad>` become the layout's. Returns `model`."""
    old_input = model.get_input_embeddings()
    old_output = model.get_output_embeddings()
    tied = old_output is not None and old_output.weight is old_input.weight
    std = float(getattr(model.config, "initializer_range", 0.02))
    model.resize_token_embeddings(layout.vocab_size, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, std)
        output = model.get_output_embeddings()
        if output is not None and not tied:
            output.weight.normal_(0.0, std)
        if output is not None and getattr(output, "bias", None) is not None:
            output.bias.zero_()
    special = dict(bos_token_id=layout.bos_token_id, eos_token_id=layout.eos_token_id,
                   pad_token_id=layout.pad_token_id)
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None:
            for key, value in special.items():
                setattr(config, key, value)
    model.config.vocab_size = layout.vocab_size
    return model


def append_audio_vocabulary(model: Any, layout: Any) -> Any:
    """Keep a pretrained causal LM's text vocabulary and give it rows for the audio ids of `layout` (a
    `JointLayout`: text ids below `layout.semantic_offset`, the audio ids and markers after them). Text rows stay
    bit for bit; the audio rows (input, and output when untied) are drawn from N(0, initializer_range) with the
    current torch seed, their output bias zeroed. A model with more rows than its tokenizer (padded vocabularies,
    e.g. Qwen) keeps its size when the audio ids fit. bos/eos/pad stay the text LM's (pad: the layout's)."""
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < layout.semantic_offset:
        raise ValueError(f"The text LM has {rows} embedding rows but its tokenizer {layout.semantic_offset} tokens; "
                         "they do not belong together (model.text_tokenizer points at another model's tokenizer?).")
    old_output = model.get_output_embeddings()
    tied = old_output is not None and old_output.weight is model.get_input_embeddings().weight
    if rows < layout.vocab_size:
        model.resize_token_embeddings(layout.vocab_size, mean_resizing=False)
    audio = slice(layout.semantic_offset, layout.vocab_size)
    std = float(getattr(model.config, "initializer_range", 0.02))
    with torch.no_grad():
        model.get_input_embeddings().weight[audio].normal_(0.0, std)
        output = model.get_output_embeddings()
        if output is not None and not tied:
            output.weight[audio].normal_(0.0, std)
        if output is not None and getattr(output, "bias", None) is not None:
            output.bias[audio].zero_()
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = layout.pad_token_id
    return model


def warm_start_model(recipe: ModelRecipe, layout: Any):
    """`recipe.init_from` (a pretrained causal LM, float32, `recipe.extra` overriding its config) with the audio
    vocabulary in place of its own (`replace_vocabulary`) or, with `keep_text_vocab` (`layout` is then a
    `JointLayout`), appended to it (`append_audio_vocabulary`); the recipe's architecture fields are checked."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(recipe.init_from, **recipe.extra)
    check_recipe_against(recipe, config)  # before the weights are read: a conflict costs no loading time
    model = AutoModelForCausalLM.from_pretrained(recipe.init_from, config=config, dtype=torch.float32)
    if recipe.keep_text_vocab:
        return append_audio_vocabulary(model, layout)
    return replace_vocabulary(model, layout)


def stream_of_ids(ids: torch.Tensor, layout: Any) -> torch.Tensor:
    """0 for semantic, 1 for acoustic, 2 for special ids, 3 for text ids (same shape as `ids`). `layout` is a
    `SemantiCodecVocabularyLayout` (no text) or a `JointLayout` (text ids below `semantic_offset`)."""
    streams = (ids >= layout.acoustic_offset).long() + (ids >= layout.special_offset).long()
    if layout.semantic_offset:
        streams = streams.masked_fill(ids < layout.semantic_offset, STREAMS.index("text"))
    return streams


def token_losses(logits: torch.Tensor, labels: torch.Tensor, layout: Any) -> Dict[str, torch.Tensor]:
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

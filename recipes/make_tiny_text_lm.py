#!/usr/bin/env python
"""Write a tiny RANDOM text LM and its tokenizer to a folder, built here with no network: a stand-in for a
pretrained text LLM in the joint text+audio demos and tests (`model.init_from` with `keep_text_vocab: true`).

The tokenizer is a byte-level BPE (the kind GPT-2, Llama 3 and Qwen use) trained on a few built-in sentences;
the model a 2-layer GPT-2 (or Llama) sized to it. Its text knowledge is nil: use a real text LLM for real work.

examples:
  python recipes/make_tiny_text_lm.py runs/tiny-text-lm
  python recipes/make_tiny_text_lm.py runs/tiny-llama --architecture llama
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

SENTENCES = [
    "hello world, this is a tiny corpus of text.",
    "audio tokens live beside text tokens in one vocabulary.",
    "listen to this clip and describe what you hear.",
    "a dog barks, then a car passes by in the rain.",
    "numbers such as 12 and 345 are text too.",
    "the speaker says good morning and laughs.",
]
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def build_text_tokenizer(vocab_size: int = 400):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `SENTENCES` (bos `<s>`, eos `</s>`, pad `<pad>`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(SENTENCES * 10, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def build_text_lm(vocab_size: int, architecture: str = "gpt2", hidden_size: int = 32, num_layers: int = 2,
                  positions: int = 256, seed: int = 0, bos_token_id: int = 1, eos_token_id: int = 2):
    """A tiny random causal LM with `vocab_size` embedding rows."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if architecture == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=hidden_size, n_layer=num_layers, n_head=2,
                                          n_positions=positions, bos_token_id=bos_token_id,
                                          eos_token_id=eos_token_id))
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                                        intermediate_size=hidden_size * 3 // 2, num_hidden_layers=num_layers,
                                        num_attention_heads=2, num_key_value_heads=1,
                                        max_position_embeddings=positions, tie_word_embeddings=False,
                                        bos_token_id=bos_token_id, eos_token_id=eos_token_id))


def make_tiny_text_lm(output: Path, architecture: str = "gpt2", extra_rows: int = 0, seed: int = 0) -> Path:
    """Tokenizer and model in `output` (both `save_pretrained`). `extra_rows` gives the model more embedding rows
    than the tokenizer has tokens, as padded vocabularies (e.g. Qwen's) do."""
    tokenizer = build_text_tokenizer()
    model = build_text_lm(len(tokenizer) + extra_rows, architecture, seed=seed,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    output = Path(output)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


def main(argv: Optional[List[str]] = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="folder to write (model + tokenizer)")
    parser.add_argument("--architecture", choices=["gpt2", "llama"], default="gpt2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = make_tiny_text_lm(args.output, args.architecture, seed=args.seed)
    print(f"wrote a tiny random {args.architecture} text LM and its tokenizer to {folder}")
    return folder


if __name__ == "__main__":
    main()

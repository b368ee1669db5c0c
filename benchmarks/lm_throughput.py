#!/usr/bin/env python
"""Training and generation throughput of the tiny LM recipe on this machine (ids per second).

    python benchmarks/lm_throughput.py [--config recipes/lm_tiny_cpu.yaml] [--warmup-steps 10] [--steps 40]
                                       [--new-tokens 254]

Training: the real trainer (`semanticodec_hf.lm.train.train`) for `--warmup-steps` + `--steps` steps, logging
every step; the rate is the ids of the last `--steps` steps over their time (the first steps, which pay for
start-up, are left out). Generation: `model.generate` with sampling of `--new-tokens` ids after a `<bos>` (at
most the recipe's `model.max_position_embeddings` - 1), batch 1 and batch 8, with and without
`PatternLogitsProcessor`; the ratio shows what forcing the pattern costs. Long-form: `generate_sliding` (batch 1,
interleaved, sampling) once within the context and once for `--long-contexts` contexts' worth of ids with the
default stride (a quarter of the context); the ratio and the seconds per slide show what a KV-cache rebuild costs.
The last two lines are parseable summaries:
    LM_THROUGHPUT train_tokens_per_s=... gen_tokens_per_s_b1=... gen_tokens_per_s_b8=... pattern_overhead=...
    LM_LONG_FORM gen_tokens_per_s_plain=... gen_tokens_per_s_sliding=... sliding_overhead=... slides=...
        seconds_per_slide=...
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Tuple

import torch

from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout
from semanticodec_hf.lm.config import load_recipe
from semanticodec_hf.lm.generate import (DEFAULT_STRIDE_FRACTION, PatternLogitsProcessor, decoding_arguments,
                                         generate_sliding)
from semanticodec_hf.lm.modeling import build_model
from semanticodec_hf.lm.train import train


def generation_rate(model, layout, pattern, batch: int, new_tokens: int, processor: bool) -> float:
    from transformers import LogitsProcessorList

    prompt = torch.full((batch, 1), layout.bos_token_id)
    processors = LogitsProcessorList(
        [PatternLogitsProcessor(layout, pattern, target_frames=[new_tokens] * batch)] if processor else [])
    torch.manual_seed(0)
    started = time.perf_counter()
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens, logits_processor=processors,
                         pad_token_id=layout.pad_token_id, eos_token_id=None)
    elapsed = time.perf_counter() - started
    return batch * (out.shape[1] - 1) / elapsed


def default_stride(limit: int) -> int:
    """`generate.stride_frames_for`'s default in frames: a quarter of the context."""
    return max(1, int((limit // 2) * DEFAULT_STRIDE_FRACTION))


def sliding_rate(model, layout, limit: int, frames: int) -> Tuple[float, int, float]:
    """(ids/s, slides, seconds) of `generate_sliding` writing `frames` frames after a `<bos>` (batch 1, sampling,
    the default stride: a quarter of the context), `<eos>` forced at the end."""
    torch.manual_seed(0)
    started = time.perf_counter()
    rows, slides = generate_sliding(model, layout, [[layout.bos_token_id]], frames, limit, default_stride(limit),
                                    decoding_arguments())
    elapsed = time.perf_counter() - started
    return (len(rows[0]) - 1) / elapsed, slides, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "recipes" / "lm_tiny_cpu.yaml"))
    parser.add_argument("--warmup-steps", type=int, default=10, help="training steps run but not measured")
    parser.add_argument("--steps", type=int, default=40, help="training steps measured")
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--long-contexts", type=float, default=4.0,
                        help="length of the long-form run, in LM contexts (it slides about 4x this often)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.steps < 1 or args.warmup_steps < 0:
        parser.error(f"--steps must be >= 1 and --warmup-steps >= 0, got {args.steps} and {args.warmup_steps}.")
    torch.set_num_threads(args.threads)
    total = args.warmup_steps + args.steps
    overrides = [f"train.max_steps={total}", "train.log_every=1", f"train.eval_every={total}",
                 f"train.save_every={total}", "train.log_with=[]"]
    recipe = load_recipe(args.config, overrides)
    limit = recipe.model.max_position_embeddings - 1  # the prompt is one <bos>
    if not 1 <= args.new_tokens <= limit:
        parser.error(f"--new-tokens {args.new_tokens} does not fit: the recipe's model.max_position_embeddings is "
                     f"{recipe.model.max_position_embeddings}, so give 1..{limit} (or a recipe with a longer context).")

    with tempfile.TemporaryDirectory() as output:
        train(load_recipe(args.config, overrides + [f"train.output_dir={output}"]), resume="no")
        # Each step's logged rate is its ids over its time; the measured steps hold the same number of ids
        # (full packed blocks, to within a pair cut), so their time-weighted rate is the harmonic mean.
        rates = [json.loads(line)["train/tokens_per_second"]
                 for line in (Path(output) / "metrics.jsonl").read_text().splitlines()
                 if "train/tokens_per_second" in line and json.loads(line)["step"] > args.warmup_steps]
    train_rate = len(rates) / sum(1.0 / rate for rate in rates)

    spec = recipe.data.synthetic
    layout = SemantiCodecVocabularyLayout(spec.semantic_vocab_size, spec.acoustic_vocab_size) if spec else None
    if layout is None:
        from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

        layout = SemantiCodecAudioTokenizer.from_pretrained(Path(recipe.data.tokenized_dir) / "tokenizer",
                                                            load_codec=False).layout
    pattern = spec.pattern if spec else "interleaved"
    torch.manual_seed(0)
    model = build_model(recipe.model, layout).eval()
    new_tokens = args.new_tokens
    rates = {}
    with torch.no_grad():
        for batch in (1, 8):
            for forced in (False, True):
                generation_rate(model, layout, pattern, batch, 8, forced)  # warm-up
                rates[(batch, forced)] = generation_rate(model, layout, pattern, batch, new_tokens, forced)
    context_frames = recipe.model.max_position_embeddings // 2
    if args.long_contexts <= 1:
        parser.error(f"--long-contexts must be > 1 (a run longer than the context), got {args.long_contexts}.")
    with torch.no_grad():
        sliding_rate(model, layout, recipe.model.max_position_embeddings, 8)  # warm-up
        plain_rate, _, _ = sliding_rate(model, layout, recipe.model.max_position_embeddings, context_frames - 1)
        long_rate, slides, long_seconds = sliding_rate(model, layout, recipe.model.max_position_embeddings,
                                                       int(args.long_contexts * context_frames))
    long_ids = 2 * int(args.long_contexts * context_frames) + 1
    per_slide = max(0.0, long_seconds - long_ids / plain_rate) / max(slides, 1)
    print(f"machine: {torch.get_num_threads()} torch threads, {recipe.model.architecture} "
          f"{recipe.model.hidden_size}x{recipe.model.num_layers}, vocab {layout.vocab_size}")
    print(f"training           : {train_rate:10.0f} tokens/s (global batch {recipe.train.global_batch_size} x "
          f"{recipe.data.block_size}; steps {args.warmup_steps + 1}-{total}, after {args.warmup_steps} warm-up steps)")
    print(f"generation         : {new_tokens} new ids per sequence")
    for batch in (1, 8):
        plain, forced = rates[(batch, False)], rates[(batch, True)]
        print(f"generation batch {batch} : {forced:10.0f} tokens/s with the pattern processor, {plain:10.0f} without "
              f"(x{plain / forced:.2f})")
    overhead = rates[(8, False)] / rates[(8, True)]
    print(f"LM_THROUGHPUT train_tokens_per_s={train_rate:.0f} gen_tokens_per_s_b1={rates[(1, True)]:.0f} "
          f"gen_tokens_per_s_b8={rates[(8, True)]:.0f} pattern_overhead={overhead:.2f}")
    print(f"long-form batch 1   : {long_rate:10.0f} tokens/s over {args.long_contexts:g} contexts ({slides} slides, "
          f"stride {default_stride(recipe.model.max_position_embeddings)} frames), {plain_rate:10.0f} within one context "
          f"(x{plain_rate / long_rate:.2f}; about {per_slide * 1000:.1f} ms per slide)")
    print(f"LM_LONG_FORM gen_tokens_per_s_plain={plain_rate:.0f} gen_tokens_per_s_sliding={long_rate:.0f} "
          f"sliding_overhead={plain_rate / long_rate:.2f} slides={slides} seconds_per_slide={per_slide:.4f}")


if __name__ == "__main__":
    main()

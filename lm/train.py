#!/usr/bin/env python
"""Train a GPT-style audio LM on SemantiCodec ids with accelerate.

    accelerate launch lm/train.py --config recipes/lm_tiny_cpu.yaml
    torchrun --standalone --nproc_per_node 2 lm/train.py --config recipes/lm_tiny_cpu.yaml   # 2 CPU processes (gloo)
    accelerate launch --multi_gpu --num_processes 8 lm/train.py --config recipes/lm_realistic_gpu.yaml

(`python lm/train.py ...` runs one process.) The recipe fixes the result; accelerate's own configuration says
where it runs. Checkpoints (`save_state`) are written every `train.save_every` steps; running the same command
again resumes from the newest one with the same data order and RNG, so a killed-and-resumed run ends with the
same weights as one that was never interrupted. A resume under a changed recipe (learning rate, data, max_steps,
...; intervals and the output folder may change) is refused with the differing keys: `--resume no` starts over.
`train.num_workers` DataLoader processes prepare batches ahead; the batches do not depend on it. The final model
is `OUTPUT/final` (`save_pretrained`, with the tokenizer's vocabulary layout beside it) and can be used with
`lm/generate.py` / `semanticodec-hf continue`.

`model.init_from: PATH_OR_HUB_ID` warm-starts from a pretrained text LM: its weights are kept and its vocabulary
is replaced by the audio one (the source must still be loadable when a run resumes). `--threads N` sets torch's
CPU threads (default: the CPUs this process may use).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # a script run: drop lm/ from sys.path so its config.py, data.py, ... shadow nothing
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import datasets
import numpy as np
import torch
import yaml
from accelerate.utils import DistributedType, set_seed
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from semanticodec_hf.acoustic_bpe import AcousticBPE
from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout
from semanticodec_hf.cpu_threads import add_threads_option, use_threads
from semanticodec_hf.lm.config import LMRecipe, load_recipe
from semanticodec_hf.lm.data import (
    IGNORE_INDEX,
    AudioLMDataCollator,
    BlockBuilder,
    GlobalBatchOrder,
    apply_bpe,
    bpe_layout,
    pack_sequences,
    split_sequences,
    synthetic_corpus_from_spec,
)
from semanticodec_hf.lm.joint_corpus import JointAudioTextTokenizer
from semanticodec_hf.lm.modeling import STREAMS, build_model, context_length, count_targets, token_losses
from semanticodec_hf.progress import progress_bar
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer
from semanticodec_hf.training_utils import make_accelerator, save_checkpoint, start_run  # shared with train_codec



# ---------------------------------------------------------------------------------------------- data
class Blocks:
    """Uniform random access to blocks held in a list or a `datasets.Dataset` column."""

    def __init__(self, source: Any):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def take(self, indices: Sequence[int]) -> List[List[int]]:
        if isinstance(self.source, list):
            return [self.source[i] for i in indices]
        return self.source[list(indices)]["input_ids"]


def _split_clips(clips: List[Any], eval_fraction: float, seed: int) -> Tuple[List[Any], List[Any]]:
    order = np.random.default_rng(seed).permutation(len(clips))
    num_eval = 0 if eval_fraction == 0 or len(clips) < 2 else max(1, round(eval_fraction * len(clips)))
    return [clips[i] for i in order[num_eval:]], [clips[i] for i in order[:num_eval]]


def _with_bpe(recipe: LMRecipe, clips: List[List[int]], tokenizer):
    """Replace the semantic stream by acoustic-BPE pieces when the recipe asks for it."""
    if recipe.data.acoustic_bpe is None:
        return clips, tokenizer
    if tokenizer.pattern != "semantic_only":
        raise ValueError(f"data.acoustic_bpe needs a semantic_only corpus; this one is {tokenizer.pattern}.")
    bpe = AcousticBPE.load(recipe.data.acoustic_bpe)
    if bpe.num_base_ids != tokenizer.layout.semantic_vocab_size:
        raise ValueError(f"The BPE model covers {bpe.num_base_ids} semantic ids but the corpus has "
                         f"{tokenizer.layout.semantic_vocab_size}; train it on this codec's ids.")
    pieces = apply_bpe(clips, bpe, tokenizer.layout)
    return pieces, SemantiCodecAudioTokenizer(layout=bpe_layout(bpe, tokenizer.layout), pattern="semantic_only",
                                              codec_name_or_path=tokenizer.codec_name_or_path)


def _joint_tokenizer(recipe: LMRecipe, tokenizer: SemantiCodecAudioTokenizer) -> JointAudioTextTokenizer:
    """With `model.keep_text_vocab`: the text LM's tokenizer extended with this corpus's audio vocabulary."""
    return JointAudioTextTokenizer.extend(recipe.model.text_tokenizer or recipe.model.init_from, tokenizer)


def load_corpus(recipe: LMRecipe):
    """(train blocks, eval blocks, ids-only tokenizer) from the recipe's data section. With
    `model.keep_text_vocab` the clips become joint text+audio sequences and the tokenizer is a
    `JointAudioTextTokenizer` (its `layout` a `JointLayout`)."""
    data = recipe.data
    if data.synthetic is not None:
        spec = data.synthetic
        layout = SemantiCodecVocabularyLayout(spec.semantic_vocab_size, spec.acoustic_vocab_size)
        tokenizer = SemantiCodecAudioTokenizer(layout=layout, pattern=spec.pattern)
        clips = synthetic_corpus_from_spec(spec, seed=recipe.train.seed)  # every field of the section applied
        clips, tokenizer = _with_bpe(recipe, clips, tokenizer)
        if recipe.model.keep_text_vocab:
            tokenizer = _joint_tokenizer(recipe, tokenizer)
            clips = [tokenizer.clip_to_joint(clip) for clip in clips]
        layout = tokenizer.layout
        train_clips, eval_clips = _split_clips(clips, data.eval_fraction, recipe.train.seed)
        build = pack_sequences if data.packing else split_sequences
        return (Blocks(build(train_clips, data.block_size, layout)),
                Blocks(build(eval_clips, data.block_size, layout)), tokenizer)

    root = Path(data.tokenized_dir)
    if not (root / "dataset").is_dir() or not (root / "tokenizer").is_dir():
        raise FileNotFoundError(
            f"{root} is not a finished recipes/tokenize_dataset.py output (it needs dataset/ and tokenizer/); run "
            "or resume the tokenization first."
        )
    tokenizer = SemantiCodecAudioTokenizer.from_pretrained(root / "tokenizer", load_codec=False)
    dataset = datasets.load_from_disk(str(root / "dataset"))
    if data.text_column is not None and data.text_column not in dataset.column_names:
        raise ValueError(f"data.text_column {data.text_column!r} is not a column of {root / 'dataset'} (it has "
                         f"{dataset.column_names}); tokenize_dataset.py keeps the source's other columns.")
    clips = dataset.select_columns(["input_ids"] + ([data.text_column] if data.text_column else []))
    if data.acoustic_bpe is not None:  # pieces are computed once, in memory (BPE corpora are the short ones)
        pieces, tokenizer = _with_bpe(recipe, [list(c) for c in clips["input_ids"]], tokenizer)
        clips = datasets.Dataset.from_dict({"input_ids": pieces})
    if recipe.model.keep_text_vocab:
        tokenizer = _joint_tokenizer(recipe, tokenizer)
        clips = clips.map(tokenizer, batched=True, remove_columns=clips.column_names, desc="joint ids",
                          fn_kwargs={"text_column": data.text_column, "text_position": data.text_position})
    if data.eval_fraction > 0 and len(clips) > 1:
        parts = clips.train_test_split(test_size=max(1, round(data.eval_fraction * len(clips))),
                                       seed=recipe.train.seed)
        train_clips, eval_clips = parts["train"], parts["test"]
    else:
        train_clips, eval_clips = clips, clips.select([])
    builder = BlockBuilder(tokenizer.layout, data.block_size, data.packing)
    to_blocks = lambda ds: ds.map(builder, batched=True, batch_size=1000, remove_columns=ds.column_names,  # noqa: E731
                                  desc="blocks")
    return Blocks(to_blocks(train_clips)), Blocks(to_blocks(eval_clips)), tokenizer


# ---------------------------------------------------------------------------------------------- batches
class MicroBatches(torch.utils.data.Dataset):
    """Item i = the collated global micro-batch `first + i` (a `DataLoader` with `batch_size=None` serves it).

    Which blocks form micro-batch k is `GlobalBatchOrder(k)`, a pure function of (seed, k), so DataLoader
    workers (`train.num_workers`) only prepare ahead what the loop would have built itself: the batches, and
    hence a resumed run, are the same for any number of workers.
    """

    def __init__(self, blocks: Blocks, order: GlobalBatchOrder, collator: AudioLMDataCollator, first: int, count: int):
        self.blocks, self.order, self.collator, self.first, self.count = blocks, order, collator, first, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return self.collator(self.blocks.take(self.order(self.first + index)))


class EvalBatches(torch.utils.data.Dataset):
    """This process's eval batches: the first `limit` blocks dealt round-robin over processes, `batch_size` each.

    Every process gets the same number of batches and rows (a process short of blocks repeats block 0 with its
    labels masked out, so it adds nothing): with FSDP or DDP buffer broadcasts every forward is a collective
    call that all processes must make.
    """

    def __init__(self, blocks: Blocks, collator: AudioLMDataCollator, batch_size: int, limit: int, rank: int,
                 world: int):
        count = min(len(blocks), limit)
        per_process = math.ceil(count / world)
        mine = list(range(rank, count, world))
        rows = mine + [-1] * (per_process - len(mine))  # -1: a masked filler row
        self.batches = [rows[start:start + batch_size] for start in range(0, len(rows), batch_size)]
        self.blocks, self.collator = blocks, collator

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        rows = self.batches[index]
        batch = self.collator(self.blocks.take([max(row, 0) for row in rows]))
        filler = torch.tensor([row < 0 for row in rows])
        batch["labels"][filler] = IGNORE_INDEX
        return batch


def _loader(dataset: torch.utils.data.Dataset, num_workers: int, device: torch.device):
    """Items in order (no sampler, no re-batching), prepared by `num_workers` background processes.

    It has its own generator: a DataLoader iterator draws its workers' base seed when it starts, and from the
    global RNG that draw would shift the dropout masks of a resumed run (its loader starts after the restore)."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                                       pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------- loop
def evaluate(accelerator, model, batches: EvalBatches, layout, num_workers: int = 0) -> Dict[str, float]:
    """Loss and per-stream perplexity over the eval blocks (sharded over processes, summed exactly).

    Runs the prepared (wrapped) model, not the unwrapped module: under FSDP only the wrapper gathers the
    sharded parameters."""
    was_training = model.training
    model.eval()
    totals = {key: torch.zeros((), dtype=torch.float64, device=accelerator.device)
              for key in ["loss_sum", "tokens"] + [f"{s}_{k}" for s in STREAMS for k in ("loss_sum", "tokens")]}
    with torch.no_grad():
        for batch in _loader(batches, num_workers, accelerator.device):
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            with accelerator.autocast():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            for key, value in token_losses(logits, batch["labels"], layout).items():
                totals[key] += value.double()
    totals = {key: accelerator.reduce(value, reduction="sum") for key, value in totals.items()}
    model.train(was_training)
    results = {"eval/loss": float(totals["loss_sum"] / totals["tokens"].clamp(min=1))}
    for stream in ("semantic", "acoustic", "text"):
        tokens = float(totals[f"{stream}_tokens"])
        if tokens:
            mean = float(totals[f"{stream}_loss_sum"]) / tokens
            results[f"eval/{stream}_loss"] = mean
            results[f"eval/{stream}_perplexity"] = math.exp(min(mean, 50.0))
    return results


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML recipe (see recipes/lm_tiny_cpu.yaml)")
    parser.add_argument("--output-dir", help="overrides train.output_dir")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="recipe overrides, e.g. --set train.max_steps=20 model.num_layers=4")
    parser.add_argument("--resume", default="auto",
                        help="'auto' (default: newest checkpoint in the output folder, if any), 'no' (start over; "
                             "deletes the folder's old checkpoints), or a checkpoint path")
    add_threads_option(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None, callbacks: Sequence[Callable[[int], Any]] = ()) -> Dict[str, Any]:
    """The command line; `callbacks` are passed to `train`."""
    args = parse_args(argv)
    use_threads(args.threads)
    overrides = list(args.overrides) + ([f"train.output_dir={args.output_dir}"] if args.output_dir else [])
    recipe = load_recipe(args.config, overrides)
    return train(recipe, resume=args.resume, callbacks=callbacks)


def train(recipe: LMRecipe, resume: str = "auto", callbacks: Sequence[Callable[[int], Any]] = ()) -> Dict[str, Any]:
    """Run (or resume) the recipe; returns a summary dict (also written to OUTPUT/summary.json).

    Each of `callbacks` is called as `callback(step)` on every process once a step is complete: after its
    update, logging, evaluation and checkpoint (a checkpoint of that step, if one was due, is on disk)."""
    cfg = recipe.train
    output = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.mixed_precision, cfg.log_with, output / "logs")
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ValueError(
            "lm/train.py does not support DeepSpeed: it accumulates gradients and clips them itself, which DeepSpeed's "
            "engine does on its own terms. Use DDP (accelerate launch --multi_gpu) or FSDP instead."
        )
    world, rank = accelerator.num_processes, accelerator.process_index
    micro_batch = cfg.global_batch_size // cfg.gradient_accumulation_steps
    if micro_batch % world:
        raise ValueError(
            f"train.global_batch_size / gradient_accumulation_steps = {micro_batch} blocks cannot be split evenly "
            f"over {world} processes; choose a multiple of {world}."
        )
    per_process = micro_batch // world

    set_seed(cfg.seed)  # the same initial weights on every process
    train_blocks, eval_blocks, tokenizer = load_corpus(recipe)
    layout = tokenizer.layout
    collator = AudioLMDataCollator(layout, recipe.data.block_size)
    order = GlobalBatchOrder(len(train_blocks), micro_batch, cfg.seed)
    model = build_model(recipe.model, layout)
    if recipe.model.init_from is not None:
        positions = context_length(model.config)
        if positions is not None and recipe.data.block_size > positions:
            raise ValueError(f"data.block_size ({recipe.data.block_size}) exceeds the {positions} positions of "
                             f"model.init_from {recipe.model.init_from}; use a smaller block size.")
        vocabulary = (f"its {layout.semantic_offset} text ids kept and {layout.vocab_size - layout.semantic_offset} "
                      "audio ids added" if recipe.model.keep_text_vocab else
                      f"a new {layout.vocab_size}-id audio vocabulary")
        accelerator.print(f"warm start from {recipe.model.init_from} ({model.config.model_type}): its weights, with "
                          f"{vocabulary}")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
    )
    # Not passed to prepare(): accelerate would step it once per process; checkpointed through `objects` below.
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps,
        min_lr_rate=cfg.min_learning_rate_ratio,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    # checkpointed as JSON + safetensors by save_checkpoint, not register_for_checkpointing (which pickles it)
    objects = {"scheduler": scheduler}

    config = recipe.to_dict()  # stored in every checkpoint; a resume under another recipe is refused
    start_step, log = start_run(accelerator, output, resume, "audio-lm", config, objects=objects)

    num_params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters())
    accelerator.print(
        f"{num_params / 1e6:.2f}M parameters, {len(train_blocks)} train / {len(eval_blocks)} eval blocks of "
        f"{recipe.data.block_size}, {world} process(es) x {per_process} blocks x "
        f"{cfg.gradient_accumulation_steps} accumulation = {cfg.global_batch_size} blocks per step"
    )
    accumulation = cfg.gradient_accumulation_steps
    micro_batches = iter(_loader(
        MicroBatches(train_blocks, order, collator, start_step * accumulation, (cfg.max_steps - start_step) * accumulation),
        cfg.num_workers, accelerator.device))
    eval_batches = EvalBatches(eval_blocks, collator, per_process, recipe.data.max_eval_blocks, rank, world)
    model.train()
    last: Dict[str, Any] = {}
    interval_started, interval_tokens = time.perf_counter(), 0
    bar = progress_bar(total=cfg.max_steps, initial=start_step, desc="train", unit="step",
                       quiet=not accelerator.is_local_main_process)
    for step in range(start_step + 1, cfg.max_steps + 1):
        micro = [next(micro_batches) for _ in range(accumulation)]
        global_tokens = sum(count_targets(batch["labels"]) for batch in micro)
        loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        for m, batch in enumerate(micro):
            mine = {key: value[rank * per_process:(rank + 1) * per_process].to(accelerator.device)
                    for key, value in batch.items()}
            last_micro = m == len(micro) - 1
            with (contextlib.nullcontext() if last_micro else accelerator.no_sync(model)):
                with accelerator.autocast():
                    logits = model(input_ids=mine["input_ids"], attention_mask=mine["attention_mask"]).logits
                    losses = token_losses(logits, mine["labels"], layout)
                # DDP averages gradients over processes, hence x world: the result is the global token mean.
                accelerator.backward(losses["loss_sum"] * world / global_tokens)
            loss_sum += losses["loss_sum"].detach().double()
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        interval_tokens += global_tokens
        loss = float(accelerator.reduce(loss_sum, reduction="sum")) / global_tokens
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            # The rate over the steps since the previous log (whatever ran between them included), so it does
            # not carry the start-up cost of the first steps along for the whole run.
            elapsed = time.perf_counter() - interval_started
            last = {"train/loss": loss, "train/learning_rate": scheduler.get_last_lr()[0],
                    "train/grad_norm": float(grad_norm), "train/tokens_per_second": interval_tokens / max(elapsed, 1e-9)}
            log(last, step)
            interval_started, interval_tokens = time.perf_counter(), 0
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            if len(eval_blocks):
                log(evaluate(accelerator, model, eval_batches, layout, cfg.num_workers), step)
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            save_checkpoint(accelerator, output, step, {"recipe": config}, cfg.keep_checkpoints, objects)
        for callback in callbacks:
            callback(step)
    bar.close()
    del micro_batches  # stops the DataLoader workers before the final save
    final = output / "final"
    accelerator.wait_for_everyone()
    summary: Dict[str, Any] = {"steps": cfg.max_steps, "resumed_from": start_step or None,
                               "parameters": num_params, "final": str(final), **last}
    save_final(accelerator, model, tokenizer, recipe, final)
    if accelerator.is_main_process:
        (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.end_training()
    return summary


def save_final(accelerator, model, tokenizer, recipe: LMRecipe, final: Path) -> None:
    """`save_pretrained` folder + the vocabulary layout and pattern (`audio_tokenizer_config.json`) + the recipe.

    Call on every process with the prepared model: `get_state_dict` gathers sharded (FSDP) parameters, which
    needs all processes; only the main process writes."""
    state_dict = accelerator.get_state_dict(model)
    accelerator.unwrap_model(model).save_pretrained(final, state_dict=state_dict,
                                                    is_main_process=accelerator.is_main_process,
                                                    save_function=accelerator.save)
    if accelerator.is_main_process:
        tokenizer.save_pretrained(final, save_codec=False)
        if recipe.data.acoustic_bpe is not None:  # the pieces' meaning travels with the model
            AcousticBPE.load(recipe.data.acoustic_bpe).save(final / "acoustic_bpe")
        (final / "lm_recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()

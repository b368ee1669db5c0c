#!/usr/bin/env python
"""Evaluate audio LMs trained with lm/train.py: one row per LM folder or checkpoint, so the numbers of a run's
checkpoints form learning curves. Writes lm_eval.md, lm_eval.csv, lm_eval.png (each statistic against the
training step) and, with --pairs, probe_pairs.csv to --output.

Per LM: held-out loss and per-stream perplexity (the trainer's own evaluation, on the held-out split of the LM's
recipe or on --data); likelihood-pair probe accuracy (--pairs: good/NAME.wav + bad/NAME.wav, or a save_to_disk
dataset with good/bad columns of paths or {array, sampling_rate}; needs the codec); statistics of continuations of
--num-prompts held-out prompts (semantic unigram entropy, distinct-1..4, Auto-BLEU, <eos> fraction, length), with
the real continuations of the same prompts as a reference row; and, with --asr and --text-lm, the generative
perplexity of the continuations (decoded with the codec, transcribed, scored by a text LM). The definitions are
in semanticodec_hf.lm.evaluate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

EXAMPLES = """examples:
  # every checkpoint of a run, then its final model (one row each), on the recipe's held-out split
  python recipes/evaluate_lm.py runs/lm-tiny-cpu --output reports/lm-tiny --threads 2

  # chosen checkpoints, probe pairs and held-out data from a tokenize_dataset.py output
  python recipes/evaluate_lm.py runs/lm/checkpoints/step_* runs/lm/final --data ./tokens_eval \\
      --pairs ./probe_pairs --codec ./semanticodec-100tps-8192 --output reports/lm

  # generative perplexity of the continuations (any transformers ASR model and causal text LM)
  python recipes/evaluate_lm.py runs/lm/final --codec ./semanticodec-100tps-8192 --asr openai/whisper-tiny \\
      --text-lm gpt2 --num-prompts 32 --output reports/lm-gen
"""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from semanticodec_hf.cpu_threads import add_threads_option

    parser = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lms", nargs="+", metavar="LM",
                        help="LM folders (OUTPUT/final), checkpoints (OUTPUT/checkpoints/step_N) or run folders "
                             "(OUTPUT: each checkpoint, then final)")
    parser.add_argument("--output", required=True, help="report folder")
    parser.add_argument("--data", help="held-out data: a recipes/tokenize_dataset.py output, all of whose clips are "
                        "held out (default: the held-out split of each LM's training recipe)")
    parser.add_argument("--max-eval-blocks", type=int, default=256, help="held-out blocks scored for the loss")
    parser.add_argument("--batch-size", type=int, default=8, help="blocks, clips or prompts per forward pass")
    parser.add_argument("--pairs", help="probe pairs: a folder with good/ and bad/ clips of the same names, or a "
                        "datasets.save_to_disk folder with good/bad columns (paths or {array, sampling_rate})")
    parser.add_argument("--pairs-split", help="split of a --pairs dataset that has several")
    parser.add_argument("--num-prompts", type=int, default=16, help="held-out prompts to continue (0: no "
                        "continuation statistics)")
    parser.add_argument("--prompt-frames", type=int, default=None, help="frames of each clip used as prompt "
                        "(default: half the clip)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and of the codec's decoder")
    codec = parser.add_mutually_exclusive_group()
    codec.add_argument("--codec", help="converted SemantiCodec folder or Hub id (default: the one the LM records); "
                       "needed for --pairs and the generative perplexity")
    codec.add_argument("--tiny", action="store_true", help="a RANDOM tiny codec (pipeline tests only)")
    parser.add_argument("--asr", help="transformers automatic-speech-recognition model id or path (with --text-lm)")
    parser.add_argument("--text-lm", help="transformers causal text LM id or path that scores the transcripts")
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps of the codec decoder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG (no matplotlib needed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    if (args.asr is None) != (args.text_lm is None):
        parser.error("--asr and --text-lm go together: the transcripts of --asr are scored by --text-lm.")
    if args.asr and args.num_prompts < 1:
        parser.error("the generative perplexity scores continuations: give --num-prompts >= 1.")
    for name in ("max_eval_blocks", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    if args.num_prompts < 0:
        parser.error(f"--num-prompts must be >= 0, got {args.num_prompts}.")
    return args


class Session:
    """What the LMs of one report share, built once: held-out data, the codec, probe ids, the ASR and text LM."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.codec = None
        self.pairs = None
        self.pair_ids: Dict[Tuple[Any, str], Tuple[List[str], List[List[int]], List[List[int]]]] = {}
        self.references: Dict[str, Dict[str, Any]] = {}
        self.external = self._read_data(args.data) if args.data else None
        self.transcriber = None
        self.text = None

    @staticmethod
    def _read_data(folder: str):
        import datasets

        from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

        root = Path(folder)
        if not (root / "dataset").is_dir() or not (root / "tokenizer").is_dir():
            raise SystemExit(f"error: --data {root} is not a recipes/tokenize_dataset.py output (it needs dataset/ "
                             "and tokenizer/).")
        tokenizer = SemantiCodecAudioTokenizer.from_pretrained(root / "tokenizer", load_codec=False)
        clips = [list(c) for c in datasets.load_from_disk(str(root / "dataset"))["input_ids"]]
        return tokenizer, clips

    def held_out(self, lm) -> Tuple[Optional[Any], Optional[List[List[int]]], int, str]:
        """(blocks, clips, block size, source name) for an LM; (None, None, 0, reason) when it has none."""
        from semanticodec_hf.lm.data import pack_sequences
        from semanticodec_hf.lm.evaluate import clips_of_blocks, corpus_for
        from semanticodec_hf.lm.modeling import context_length

        if self.external is not None:
            tokenizer, clips = self.external
            if tokenizer.layout != lm.tokenizer.layout or tokenizer.pattern != lm.tokenizer.pattern:
                raise SystemExit(f"error: --data {self.args.data} holds {tokenizer.pattern} ids of layout "
                                 f"{tokenizer.layout.to_dict()} but {lm.name} was trained on {lm.tokenizer.pattern} "
                                 f"ids of layout {lm.tokenizer.layout.to_dict()}.")
            block_size = lm.recipe.data.block_size if lm.recipe else (context_length(lm.model.config) or 256) // 2 * 2
            return pack_sequences(clips, block_size, tokenizer.layout), clips, block_size, f"--data {self.args.data}"
        if lm.recipe is None:
            return None, None, 0, f"{lm.name} records no training recipe; give --data"
        _, blocks, tokenizer = corpus_for(lm.recipe)
        source = lm.recipe.data.tokenized_dir or "synthetic corpus"
        return blocks, clips_of_blocks(blocks, tokenizer.layout), lm.recipe.data.block_size, f"held-out {source}"

    def codec_for(self, lm):
        from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

        if self.codec is None:
            if self.args.tiny:
                print("WARNING: --tiny uses a small RANDOMLY INITIALISED codec: probe and generative scores mean "
                      "nothing (pipeline test only).", file=sys.stderr)
                self.codec = SemantiCodecAudioTokenizer.tiny(seed=0)
            else:
                source = self.args.codec or lm.tokenizer.codec_name_or_path
                if source is None:
                    raise SystemExit(f"error: {lm.name} does not record its codec; give --codec PATH (or --tiny).")
                self.codec = SemantiCodecAudioTokenizer.from_pretrained(source, device=self.args.device)
        if self.codec.layout != lm.tokenizer.layout:
            raise SystemExit(f"error: {lm.name} was trained on ids of layout {lm.tokenizer.layout.to_dict()} but the "
                             f"codec has {self.codec.layout.to_dict()}; use the codec variant the LM was trained with.")
        self.codec.pattern = lm.tokenizer.pattern
        return self.codec

    def probe_ids(self, lm):
        from semanticodec_hf.lm.evaluate import pair_ids, read_pairs

        if self.pairs is None:
            try:
                self.pairs = read_pairs(self.args.pairs, self.args.pairs_split)
            except ValueError as error:
                raise SystemExit(f"error: --pairs: {error}") from None
        key = (lm.tokenizer.layout, lm.tokenizer.pattern)
        if key not in self.pair_ids:
            self.pair_ids[key] = pair_ids(self.pairs, self.codec_for(lm), self.args.batch_size, self.args.quiet)
        return self.pair_ids[key]

    def speech_models(self):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from semanticodec_hf.lm.evaluate import load_transcriber

        if self.transcriber is None:
            self.transcriber = load_transcriber(self.args.asr, self.args.device)
            self.text = (AutoModelForCausalLM.from_pretrained(self.args.text_lm),
                         AutoTokenizer.from_pretrained(self.args.text_lm))
        return self.transcriber, self.text


def evaluate_one(lm, session: Session) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]], List[Dict[str, Any]]]:
    """The report row of one LM, the reference row of its held-out data (None if none) and its probe rows."""
    from semanticodec_hf.lm.evaluate import (
        decode_sequences,
        generate_continuations,
        generative_perplexity,
        heldout_loss,
        likelihood_probe_ids,
    )

    args = session.args
    row: Dict[str, Any] = {"name": lm.name, "kind": "model", "step": lm.step}
    blocks, clips, block_size, source = session.held_out(lm)
    if blocks is None:
        print(f"note: no held-out data: {source}; loss and continuation statistics are skipped.", file=sys.stderr)
    elif len(blocks):
        losses = heldout_loss(lm.model, blocks, lm.tokenizer.layout, block_size, args.batch_size,
                              args.max_eval_blocks, args.device, args.quiet)
        row["eval_loss"] = losses["eval/loss"]
        row["semantic_perplexity"] = losses.get("eval/semantic_perplexity")
        row["acoustic_perplexity"] = losses.get("eval/acoustic_perplexity")
    else:
        print(f"note: {source} has no held-out blocks (data.eval_fraction is 0?); the loss is skipped.",
              file=sys.stderr)
    pair_rows: List[Dict[str, Any]] = []
    if args.pairs:
        names, good, bad = session.probe_ids(lm)
        try:
            probe = likelihood_probe_ids(lm.model, good, bad, lm.tokenizer.pad_token_id, names, args.batch_size,
                                         args.device, args.quiet)
        except ValueError as error:
            raise SystemExit(f"error: --pairs on {lm.name}: {error}") from None
        row["probe_accuracy"], row["probe_normalized_accuracy"] = probe["accuracy"], probe["normalized_accuracy"]
        pair_rows = [{"lm": lm.name, "step": lm.step, **pair} for pair in probe["per_pair"]]
    reference = None
    if clips and args.num_prompts:
        try:
            continued = generate_continuations(lm.model, lm.tokenizer, clips, args.num_prompts, args.prompt_frames,
                                               args.temperature, args.top_k, args.top_p, args.seed, args.batch_size,
                                               args.device, args.quiet)
        except ValueError as error:
            raise SystemExit(f"error: continuations of {lm.name}: {error}") from None
        row.update({k: v for k, v in continued["model"].items() if k != "sequences"})
        row["prompts"] = continued["prompts_used"]
        reference = {"name": f"real continuations ({source})", "kind": "reference", "step": None,
                     "prompts": continued["prompts_used"],
                     **{k: v for k, v in continued["reference"].items() if k != "sequences"}}
        if args.asr:
            codec = session.codec_for(lm)
            try:
                waves = decode_sequences(codec, continued["sequences"], args.steps, args.seed, args.quiet)
            except ValueError as error:
                raise SystemExit(f"error: decoding the continuations of {lm.name}: {error}") from None
            transcriber, (text_lm, text_tokenizer) = session.speech_models()
            scored = generative_perplexity(waves, codec.sampling_rate, transcriber, text_lm, text_tokenizer,
                                           args.device, args.quiet)
            row["gen_perplexity"] = scored["gen_perplexity"]
            row["transcripts"] = scored["transcripts"]
    return row, reference, pair_rows


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    from semanticodec_hf.cpu_threads import use_threads
    from semanticodec_hf.lm.evaluate import expand_lm_paths

    use_threads(args.threads)
    try:
        paths = expand_lm_paths(args.lms)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    with _library_bars(enabled=not args.quiet):
        return _evaluate(args, paths)


@contextlib.contextmanager
def _library_bars(enabled: bool):
    """transformers' and datasets' own progress bars (weights loading, dataset maps) follow --quiet too; their
    process-wide settings are put back afterwards."""
    import datasets
    from transformers.utils import logging as transformers_logging

    transformers_before = transformers_logging.is_progress_bar_enabled()
    datasets_before = datasets.is_progress_bar_enabled()
    if not enabled:
        transformers_logging.disable_progress_bar()
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if transformers_before:
            transformers_logging.enable_progress_bar()
        if datasets_before:
            datasets.enable_progress_bars()


def _evaluate(args: argparse.Namespace, paths: List[Path]) -> Dict[str, Any]:
    """Every LM in turn, then the report."""
    from semanticodec_hf.lm.evaluate import load_lm, write_lm_report
    from semanticodec_hf.progress import progress_bar

    session = Session(args)
    rows: List[Dict[str, Any]] = []
    references: Dict[str, Dict[str, Any]] = {}
    pair_rows: List[Dict[str, Any]] = []
    bar = progress_bar(paths, desc="checkpoints", unit="checkpoint", quiet=args.quiet)
    for path in bar:
        bar.set_postfix_str(str(path))
        try:
            lm = load_lm(path, args.device)
        except (ValueError, OSError) as error:
            raise SystemExit(f"error: {error}") from None
        row, reference, pairs = evaluate_one(lm, session)
        rows.append(row)
        pair_rows.extend(pairs)
        if reference is not None:
            references.setdefault(reference["name"], reference)  # the same prompts for every checkpoint of a run
    bar.close()
    report_rows = [{k: v for k, v in row.items() if k != "transcripts"} for row in rows] + list(references.values())
    written = write_lm_report(report_rows, args.output, plot=not args.no_plot, pair_rows=pair_rows)
    transcripts = {row["name"]: row["transcripts"] for row in rows if "transcripts" in row}
    if transcripts:
        target = Path(args.output) / "transcripts.json"
        target.write_text(json.dumps(transcripts, indent=2) + "\n")
        written["transcripts"] = str(target)
    print(Path(written["markdown"]).read_text())
    if not args.quiet:
        print("written: " + ", ".join(written.values()), file=sys.stderr)
    return {"rows": report_rows, "written": written}


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # run from a checkout
    main()

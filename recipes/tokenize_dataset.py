#!/usr/bin/env python
"""Tokenize an audio folder or a Hub dataset into an Arrow dataset of SemantiCodec LM ids.

Work is cut into shards of `--shard-size` clips; each finished shard is saved with `save_to_disk` and marked
done, so an interrupted run picks up where it stopped (finished shards are skipped). At the end all shards are
concatenated into OUTPUT/dataset (load it with `datasets.load_from_disk`) and OUTPUT/index.json lists them;
OUTPUT/tokenizer records the vocabulary layout, the pattern and the codec (what `lm/train.py` reads).

Output columns: input_ids (int32), num_frames, duration (s), path, sampling_rate, variant, plus the source's
other columns (Hub datasets, e.g. transcripts) and audio_codes with --save-codes.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from semanticodec_hf.cpu_threads import add_threads_option, use_threads
from semanticodec_hf.progress import progress_bar

METADATA_COLUMNS = ("path", "sampling_rate", "variant")  # as in semanticodec_hf.datasets_utils

EXAMPLES = """examples:
  # smoke test on any folder with a RANDOM tiny codec (tokens are meaningless)
  python recipes/tokenize_dataset.py --audio-dir ./clips --output ./tokens --tiny

  # a converted codec, 2 worker processes, resumable in shards of 1000 clips
  python recipes/tokenize_dataset.py --audio-dir /data/audio --output /data/tokens \\
      --model ./semanticodec-100tps-8192 --num-proc 2 --shard-size 1000

  # a Hub dataset (audio read with soundfile from the undecoded column)
  python recipes/tokenize_dataset.py --dataset user/speech --split train --audio-column audio \\
      --output ./tokens --model ./semanticodec-50tps-16384 --pattern semantic_then_acoustic

  # local parquet files with an audio column of {bytes, path} and any other columns
  python recipes/tokenize_dataset.py --dataset parquet --data-files part-*.parquet --output ./tokens --tiny

  # re-running the same command resumes; --overwrite starts again
"""

AUDIO_EXTENSIONS = ("wav", "flac", "ogg")
RUN_CONFIG = "run_config.json"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio-dir", help="folder searched recursively for audio files")
    source.add_argument("--dataset", help="Hub dataset name (or local dataset script/folder) for load_dataset")
    codec = parser.add_mutually_exclusive_group(required=True)
    codec.add_argument("--model", help="tokenizer folder, converted codec folder, or Hub id")
    codec.add_argument("--tiny", action="store_true", help="RANDOM tiny codec for tests/demos (tokens are meaningless)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--revision", help="Hub revision of --model")
    parser.add_argument("--pattern", default=None, choices=["interleaved", "semantic_then_acoustic", "semantic_only"],
                        help="id pattern (default: the tokenizer's, else interleaved)")
    parser.add_argument("--no-special-tokens", action="store_true", help="do not wrap clips in <bos> ... <eos>")
    parser.add_argument("--save-codes", action="store_true", help="also store audio_codes [2][frames]")
    parser.add_argument("--extensions", default=",".join(AUDIO_EXTENSIONS), help="file extensions for --audio-dir")
    parser.add_argument("--config", dest="dataset_config", help="Hub dataset configuration name")
    parser.add_argument("--split", default="train", help="Hub dataset split")
    parser.add_argument("--dataset-revision", help="Hub dataset revision")
    parser.add_argument("--data-files", nargs="+", help="data_files for load_dataset (e.g. --dataset parquet)")
    parser.add_argument("--cache-dir", help="datasets cache folder for load_dataset")
    parser.add_argument("--audio-column", default="audio", help="audio column of the Hub dataset")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per map batch")
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes (each loads the codec once)")
    add_threads_option(parser)  # with --num-proc > 1 the default is 1 for the main process (workers use 1 each)
    parser.add_argument("--shard-size", type=int, default=1000, help="clips per resumable shard")
    parser.add_argument("--max-clips", type=int, help="only the first N clips (demos)")
    parser.add_argument("--stop-after-shards", type=int, help="process at most N shards this run, then exit")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resampler", choices=["reference", "soxr"], help="feature-extractor resampler")
    parser.add_argument("--short-audio", default="pad", choices=["pad", "raise"],
                        help="clips under 0.16 s: zero-pad (default) or fail")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --tiny codec")
    parser.add_argument("--overwrite", action="store_true", help="discard previous results in --output")
    args = parser.parse_args(argv)
    for name in ("batch_size", "num_proc", "shard_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


# ---------------------------------------------------------------------------------------------- sources
def list_audio_files(audio_dir: Path, extensions: List[str]) -> List[str]:
    """Paths relative to `audio_dir`, sorted, of every file with one of `extensions` (case-insensitive)."""
    wanted = {ext.lower().lstrip(".") for ext in extensions}
    files = [
        os.path.relpath(path, audio_dir)
        for path in glob.glob(os.path.join(glob.escape(str(audio_dir)), "**", "*"), recursive=True)
        if os.path.isfile(path) and path.rsplit(".", 1)[-1].lower() in wanted
    ]
    return sorted(files)


def load_source(args: argparse.Namespace):
    """The source as a `datasets.Dataset` whose audio column holds paths or {bytes, path} dicts."""
    from datasets import Audio, Dataset, load_dataset

    if args.audio_dir:
        audio_dir = Path(args.audio_dir).resolve()
        if not audio_dir.is_dir():
            raise SystemExit(f"--audio-dir {audio_dir} is not a folder.")
        files = list_audio_files(audio_dir, args.extensions.split(","))
        if not files:
            raise SystemExit(f"No {args.extensions} files under {audio_dir}.")
        if args.max_clips:
            files = files[: args.max_clips]
        return Dataset.from_dict({"audio": files}), "audio", str(audio_dir)
    dataset = load_dataset(args.dataset, args.dataset_config, split=args.split, revision=args.dataset_revision,
                           data_files=args.data_files, cache_dir=args.cache_dir)
    if args.audio_column not in dataset.column_names:
        raise SystemExit(f"Column {args.audio_column!r} not in {args.dataset} (columns: {dataset.column_names}).")
    dataset = dataset.cast_column(args.audio_column, Audio(decode=False))
    if args.max_clips:
        dataset = dataset.select(range(min(args.max_clips, len(dataset))))
    return dataset, args.audio_column, None


def source_identity(args: argparse.Namespace, dataset) -> Dict[str, Any]:
    """What must not change between a run and its resumption."""
    if args.audio_dir:
        listing = hashlib.sha256("\n".join(dataset["audio"]).encode()).hexdigest()[:16]
        return {"audio_dir": str(Path(args.audio_dir).resolve()), "files_sha": listing, "clips": len(dataset)}
    return {"dataset": args.dataset, "config": args.dataset_config, "split": args.split, "data_files": args.data_files,
            "revision": args.dataset_revision, "fingerprint": dataset._fingerprint, "clips": len(dataset)}


# ---------------------------------------------------------------------------------------------- codec
def resolve_model(args: argparse.Namespace, output: Path) -> str:
    if not args.tiny:
        return args.model
    print("=" * 78 + "\n*** --tiny: a RANDOM tiny SemantiCodec is used. Its tokens are MEANINGLESS; this run\n"
          "*** only exercises the pipeline (tests, demos). Use --model PATH for real tokens.\n" + "=" * 78,
          file=sys.stderr)
    path = output / f"tiny_codec_seed{args.seed}"
    if not (path / "audio_tokenizer_config.json").is_file():
        from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

        SemantiCodecAudioTokenizer.tiny(seed=args.seed).save_pretrained(path)
    return str(path)


def save_tokenizer_layout(tokenizer, model: str, revision: Optional[str], output: Path) -> None:
    """OUTPUT/tokenizer: the ids' vocabulary layout and pattern, and where the codec lives (no weights copied).

    `lm/train.py` reads it to size the LM's vocabulary; `lm/generate.py` to find the codec again.
    """
    from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

    local = Path(model).expanduser()
    location = str(local.resolve()) if local.is_dir() else model
    SemantiCodecAudioTokenizer(
        layout=tokenizer.layout, pattern=tokenizer.pattern, add_special_tokens=tokenizer.add_special_tokens,
        codec_name_or_path=location, codec_revision=revision,
    ).save_pretrained(output / "tokenizer", save_codec=False)


# ---------------------------------------------------------------------------------------------- shards
def save_quietly(dataset, path: Path) -> None:
    """`save_to_disk` without its own progress bar (the tokenize bar is the one that matters)."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dataset.save_to_disk(str(path))
    finally:
        if enabled:
            datasets.enable_progress_bars()


def shard_dir(output: Path, index: int) -> Path:
    return output / "shards" / f"shard-{index:05d}"


def done_marker(output: Path, index: int) -> Path:
    return output / "shards" / f"shard-{index:05d}.done.json"


def check_run_config(output: Path, run_config: Dict[str, Any], overwrite: bool) -> None:
    """Start fresh, or make sure a resumed run has the same settings."""
    path = output / RUN_CONFIG
    if overwrite and output.exists():
        for name in ("shards", "dataset", "index.json", "summary.json", RUN_CONFIG):
            target = output / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != run_config:
            changed = sorted(k for k in set(previous) | set(run_config) if previous.get(k) != run_config.get(k))
            raise SystemExit(
                f"{output} holds a run with other settings ({', '.join(changed)} differ). Use --overwrite to start "
                "again, or another --output."
            )
    output.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run_config, indent=2, sort_keys=True) + "\n")


def process_shard(
    dataset, fn, args: argparse.Namespace, output: Path, index: int, num_shards: int, audio_column: str
) -> Dict[str, Any]:
    """Tokenize one shard, save it atomically, then write its done marker with its statistics."""
    started = time.perf_counter()
    # The audio goes; source columns named like our metadata would clash with it.
    clashing = [c for c in METADATA_COLUMNS if c in dataset.column_names and c != audio_column]
    remove = [audio_column] + clashing
    mapped = dataset.map(
        fn,
        batched=True,
        batch_size=args.batch_size,
        num_proc=args.num_proc if args.num_proc > 1 else None,
        remove_columns=remove,
        features=fn.output_features(dataset.features, remove=remove),
        new_fingerprint=fn.new_fingerprint(dataset),
        desc=f"shard {index + 1}/{num_shards}",
    )
    target, tmp = shard_dir(output, index), shard_dir(output, index).with_suffix(".tmp")
    for stale in (target, tmp):
        if stale.exists():
            shutil.rmtree(stale)
    save_quietly(mapped, tmp)
    tmp.rename(target)
    stats = {
        "clips": len(mapped),
        "seconds": float(sum(mapped["duration"])),
        "tokens": int(sum(len(ids) for ids in mapped["input_ids"])),
        "frames": int(sum(mapped["num_frames"])),
        "compute_seconds": time.perf_counter() - started,
    }
    done_marker(output, index).write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def merge_shards(output: Path, num_shards: int) -> Path:
    from datasets import concatenate_datasets, load_from_disk

    merged = concatenate_datasets([load_from_disk(str(shard_dir(output, i))) for i in range(num_shards)])
    final, tmp = output / "dataset", output / "dataset.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_quietly(merged, tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def summarize(
    total: Dict[str, float], this_run: Dict[str, float], wall: float, variant: str, tiny: bool
) -> Dict[str, Any]:
    hours = total["seconds"] / 3600
    run_hours = this_run["seconds"] / 3600
    return {
        "variant": variant + (" (RANDOM tiny codec)" if tiny else ""),
        "clips": int(total["clips"]),
        "hours": hours,
        "tokens": int(total["tokens"]),
        "frames": int(total["frames"]),
        "clips_this_run": int(this_run["clips"]),
        "hours_this_run": run_hours,
        "wall_seconds_this_run": wall,
        "audio_hours_per_compute_hour": run_hours / (wall / 3600) if wall > 0 and run_hours else None,
        "tokens_per_second": this_run["tokens"] / wall if wall > 0 else None,
    }


# ---------------------------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    from semanticodec_hf.datasets_utils import SemantiCodecTokenizeFunction

    # Forked map workers take 1 thread each; the main process then only coordinates, and must not start an
    # OpenMP pool before forking (a forked worker would hang), so it stays at 1 unless --threads says otherwise.
    args.threads = use_threads(args.threads or (1 if args.num_proc > 1 else None))
    output = Path(args.output).resolve()
    if args.overwrite or not (output / RUN_CONFIG).is_file():
        output.mkdir(parents=True, exist_ok=True)
    model = resolve_model(args, output)
    dataset, audio_column, audio_root = load_source(args)
    fn = SemantiCodecTokenizeFunction(
        model, revision=args.revision, pattern=args.pattern, audio_column=audio_column,
        add_special_tokens=False if args.no_special_tokens else None, return_audio_codes=args.save_codes,
        short_audio=args.short_audio, resampler=args.resampler, device=args.device, num_threads=args.threads,
        return_metadata=True, audio_root=audio_root,
    )
    num_shards = (len(dataset) + args.shard_size - 1) // args.shard_size
    run_config = {
        "source": source_identity(args, dataset),
        "tokenize_fingerprint": fn.fingerprint,
        "model": model if not args.tiny else f"tiny(seed={args.seed})",
        "variant": fn.variant,
        "pattern": fn.pattern,
        "shard_size": args.shard_size,
        "num_shards": num_shards,
    }
    check_run_config(output, run_config, args.overwrite)
    print(f"{len(dataset)} clips in {num_shards} shards -> {output} ({fn.variant}, pattern {fn.pattern})",
          file=sys.stderr)

    tokenizer = fn.load_tokenizer()  # load once here: forked workers inherit it instead of loading their own
    save_tokenizer_layout(tokenizer, model, args.revision, output)
    finished = [i for i in range(num_shards) if done_marker(output, i).is_file()]
    if finished:
        print(f"resuming: {len(finished)} finished shards skipped", file=sys.stderr)
    total = {"clips": 0.0, "seconds": 0.0, "tokens": 0.0, "frames": 0.0}
    this_run = dict(total)
    for i in finished:
        for key, value in json.loads(done_marker(output, i).read_text()).items():
            if key in total:
                total[key] += value
    started, processed = time.perf_counter(), 0
    with progress_bar(total=len(dataset), initial=int(total["clips"]), unit="clip", desc="tokenize") as bar:
        for index in range(num_shards):
            if index in finished:
                continue
            if args.stop_after_shards is not None and processed >= args.stop_after_shards:
                break
            shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
            stats = process_shard(shard, fn, args, output, index, num_shards, audio_column)
            for key in total:
                total[key] += stats[key]
                this_run[key] += stats[key]
            processed += 1
            bar.update(stats["clips"])
    wall = time.perf_counter() - started
    complete = all(done_marker(output, i).is_file() for i in range(num_shards))
    summary = summarize(total, this_run, wall, fn.variant, args.tiny)
    summary["complete"] = complete
    if complete:
        summary["dataset"] = str(merge_shards(output, num_shards))
        index = {"shards": [str(shard_dir(output, i).relative_to(output)) for i in range(num_shards)], **summary}
        (output / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rate = summary["audio_hours_per_compute_hour"]
    print(
        f"{'done' if complete else 'partial (run again to resume)'}: {summary['clips']} clips, "
        f"{summary['hours']:.4f} h "
        f"of audio, {summary['tokens']} tokens; this run {summary['hours_this_run']:.4f} h in {wall:.1f} s"
        + (f" = {rate:.1f} h audio per compute hour, {summary['tokens_per_second']:.0f} tokens/s" if rate else "")
        + f" [{summary['variant']}]"
    )
    return summary


if __name__ == "__main__":
    main()

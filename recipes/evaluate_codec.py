#!/usr/bin/env python
"""Evaluate a codec on a folder of audio or a dataset: mel distance, multi-resolution STFT distance, SI-SDR, and
PESQ-wb / STOI on speech, per clip and per domain, with bitrate and tokens/s. Writes metrics.md, metrics.csv and
metrics.png (metric vs bitrate) to --output.

References come from a folder (`--reference-dir`, alias `--audio-dir`, searched recursively) or a dataset
(`--dataset`: a `datasets.save_to_disk` folder or a Hub dataset name, with `--audio-column` holding file paths,
encoded bytes or `{array, sampling_rate}` dicts, and optionally `--domain-column`).

Mode A: SemantiCodec reconstructs every clip here (`--model PATH` or `--tiny`, a random model for pipeline
tests). Mode B: reconstructions made by any other codec are scored from a folder holding the same clip names with
any audio extension (`--estimate-dir DIR`, or `--estimate NAME=DIR[@BITRATE[@TOKENS_PER_SECOND]]`, repeatable),
so codecs can be compared on the same clips; both modes can be combined. Everything is compared at 16 kHz mono
(SemantiCodec's output rate): other rates are resampled with soxr and channels averaged. Each pair is trimmed to
its shorter length when the lengths differ by at most max(0.1 s, 1 %) (`--max-length-difference` to allow more;
the CSV records each clip's length ratio). Clips too short for PESQ (0.25 s) or STOI (about 0.4 s of speech) get
no PESQ/STOI, with a note, and keep their other scores. The numbers come from the package's `evaluate` metric
(`semanticodec_hf.metrics.load_codec_metric()`, i.e. `CodecMetrics` on the audio as float32); PESQ and STOI need
`pip install "semanticodec-hf[eval]"`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

import numpy as np

from semanticodec_hf.cpu_threads import add_threads_option, use_threads
from semanticodec_hf.progress import progress_bar

EXAMPLES = """examples:
  # mode A: SemantiCodec on a folder whose sub-folders are domains (speech/, music/, sound/)
  python recipes/evaluate_codec.py --audio-dir ./eval --model ./semanticodec-100tps-8192 \\
      --domain-from-subfolder --speech-domains speech --output ./report

  # mode A on a dataset saved with save_to_disk (or a Hub dataset name), domains from a column
  python recipes/evaluate_codec.py --dataset ./eval_ds --split test --audio-column audio --domain-column domain \\
      --model ./semanticodec-100tps-8192 --output ./report

  # mode A smoke test with a random tiny model (its scores mean nothing)
  python recipes/evaluate_codec.py --audio-dir ./eval --tiny --steps 5 --output ./report_tiny

  # mode B: score another codec's output folder (same relative file names) against the originals
  python recipes/evaluate_codec.py --reference-dir ./eval --estimate-dir ./encodec_out --estimate-name encodec \\
      --bitrate 1500 --tokens-per-second 150 --domain-from-subfolder --speech-domains speech --output ./report

  # compare with another codec's reconstructions of the same files (NAME=DIR@BITRATE@TOKENS_PER_SECOND)
  python recipes/evaluate_codec.py --reference-dir ./eval --model ./semanticodec-50tps-8192 \\
      --estimate encodec_1.5k=./encodec_out@1500@150 --domain-from-subfolder --output ./report

  # score existing reconstructions only
  python recipes/evaluate_codec.py --reference-dir ./eval --estimate mycodec=./out@1000 --all-speech --output ./r
"""
SAMPLE_RATE = 16000  # references and estimates are scored at this rate (SemantiCodec's own)


class Clip(NamedTuple):
    name: str  # relative file name (folder) or the dataset's clip name; estimates are matched by it
    audio: np.ndarray  # 16 kHz mono float64
    domain: str


class EstimateSpec(NamedTuple):
    name: str
    folder: Path
    bitrate: Optional[float]
    tokens_per_second: Optional[float]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--reference-dir", "--audio-dir", dest="reference_dir",
                        help="folder of original audio (searched recursively)")
    source.add_argument("--dataset", help="original audio as a dataset: a datasets.save_to_disk folder, or a Hub "
                        "dataset name (datasets.load_dataset)")
    parser.add_argument("--split", help="dataset split (needed when the dataset has several)")
    parser.add_argument("--audio-column", default="audio", help="dataset column of file paths, encoded bytes "
                        "({'bytes', 'path'}) or {'array', 'sampling_rate'} dicts (default: audio)")
    parser.add_argument("--domain-column", help="dataset column naming each clip's domain")
    parser.add_argument("--name-column", help="dataset column naming each clip (default: the audio file's name, "
                        "else row000000.wav, ...); mode B matches estimate files by these names")
    codec = parser.add_mutually_exclusive_group()
    codec.add_argument("--model", help="converted SemantiCodec folder or Hub id to reconstruct with")
    codec.add_argument("--tiny", action="store_true", help="RANDOM tiny codec (pipeline test only)")
    parser.add_argument("--estimate", action="append", default=[], metavar="NAME=DIR[@BITRATE[@TOKENS_PER_SECOND]]",
                        help="reconstructions by another system, matched by clip name (any audio extension)")
    parser.add_argument("--estimate-dir", help="mode B: one folder of another codec's reconstructions, matched by "
                        "relative file name (any audio extension)")
    parser.add_argument("--estimate-name", default=None, help="name of --estimate-dir's system in the report "
                        "(default: the folder's name)")
    parser.add_argument("--bitrate", type=float, default=None, help="bit/s of --estimate-dir's codec (for the plot)")
    parser.add_argument("--tokens-per-second", type=float, default=None, help="tokens/s of --estimate-dir's codec")
    parser.add_argument("--output", required=True, help="report folder")
    parser.add_argument("--domain-from-subfolder", action="store_true", help="domain = first sub-folder of a file")
    parser.add_argument("--speech-domains", nargs="*", default=["speech"], help="domains scored with PESQ/STOI")
    parser.add_argument("--all-speech", action="store_true", help="score PESQ/STOI on every clip")
    parser.add_argument("--max-length-difference", type=float, default=None, metavar="SECONDS",
                        help="largest accepted length difference between a reference and its reconstruction "
                        "(default: max(0.1 s, 1 %% of the reference))")
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps of the SemantiCodec decoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-reconstructions", help="also write SemantiCodec's reconstructions here")
    parser.add_argument("--extensions", default="wav,flac,ogg")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bars or summaries on stderr (errors and the report still print)")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    if not (args.model or args.tiny or args.estimate or args.estimate_dir):
        parser.error("give --model (or --tiny) to reconstruct with SemantiCodec, and/or --estimate-dir DIR "
                     "(or --estimate NAME=DIR) to score another codec's output.")
    if args.estimate_dir:
        name = args.estimate_name or Path(args.estimate_dir.rstrip("/\\")).name or "estimate"
        spec = f"{name}={args.estimate_dir}"
        if args.bitrate is not None or args.tokens_per_second is not None:
            spec += "@" + (f"{args.bitrate:g}" if args.bitrate is not None else "")
        if args.tokens_per_second is not None:
            spec += f"@{args.tokens_per_second:g}"
        args.estimate.append(spec)
    elif args.estimate_name or args.bitrate is not None or args.tokens_per_second is not None:
        parser.error("--estimate-name, --bitrate and --tokens-per-second describe --estimate-dir; give it too.")
    if args.reference_dir and (args.domain_column or args.name_column or args.split):
        parser.error("--split, --domain-column and --name-column describe --dataset; a folder's domains come from "
                     "--domain-from-subfolder.")
    if args.dataset and args.domain_from_subfolder:
        parser.error("--domain-from-subfolder describes --reference-dir; a dataset's domains come from "
                     "--domain-column.")
    return args


# ---------------------------------------------------------------------------------------------- audio
def to_mono_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """`[samples]` or `[channels, samples]` at any rate -> 16 kHz mono float64 (channels averaged, soxr HQ)."""
    import soxr

    audio = np.asarray(audio, dtype=np.float64)
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio.reshape(-1)
    return soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ") if rate != SAMPLE_RATE and mono.size else mono


def read_mono_16k(path: Path) -> np.ndarray:
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as error:  # soundfile raises several types for unreadable files
        raise SystemExit(f"error: cannot read {path}: {error}") from None
    return to_mono_16k(audio.T, rate)


def _suffixes(extensions: str) -> set:
    return {"." + e.lower().lstrip(".") for e in extensions.split(",")}


def audio_files(folder: Path, extensions: str) -> List[Path]:
    wanted = _suffixes(extensions)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in wanted)


def clips_from_folder(args: argparse.Namespace) -> List[Clip]:
    root = Path(args.reference_dir)
    if not root.is_dir():
        raise SystemExit(f"error: --reference-dir {root} is not a folder.")
    files = audio_files(root, args.extensions)
    if not files:
        raise SystemExit(f"error: no {args.extensions} files under {root}.")
    clips = []
    for path in files:
        name = path.relative_to(root).as_posix()
        parts = Path(name).parts
        domain = parts[0] if args.domain_from_subfolder and len(parts) > 1 else "all"
        clips.append(Clip(name, read_mono_16k(path), domain))
    return clips


def load_reference_dataset(args: argparse.Namespace):
    """`--dataset` as one `datasets.Dataset`: a save_to_disk folder, else a Hub name; `--split` picks a split."""
    import datasets

    if Path(args.dataset).is_dir():
        try:
            loaded = datasets.load_from_disk(args.dataset)
        except FileNotFoundError as error:
            raise SystemExit(f"error: --dataset {args.dataset} is a folder but not one written by "
                             f"Dataset.save_to_disk ({error}).") from None
    else:
        try:
            loaded = datasets.load_dataset(args.dataset, split=args.split)
        except Exception as error:  # datasets raises many kinds (not found, offline, no such split)
            raise SystemExit(f"error: --dataset {args.dataset!r} is not a local save_to_disk folder and could not "
                             f"be loaded from the Hub: {type(error).__name__}: {error}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if args.split is None and len(loaded) == 1:
            return next(iter(loaded.values()))
        if args.split not in loaded:
            raise SystemExit(f"error: --dataset {args.dataset} has splits {sorted(loaded)}; choose one with --split"
                             + (f" ({args.split!r} is not one of them)." if args.split else "."))
        return loaded[args.split]
    return loaded


def clips_from_dataset(args: argparse.Namespace) -> List[Clip]:
    import datasets

    from semanticodec_hf.datasets_utils import load_audio

    table = load_reference_dataset(args)
    for option, column in (("--audio-column", args.audio_column), ("--domain-column", args.domain_column),
                           ("--name-column", args.name_column)):
        if column is not None and column not in table.column_names:
            raise SystemExit(f"error: {option} {column!r} is not a column of {args.dataset}; its columns are "
                             f"{table.column_names}.")
    if isinstance(table.features[args.audio_column], datasets.Audio):
        # datasets' own decoding needs torchcodec; read the files / bytes with soundfile instead
        table = table.cast_column(args.audio_column, datasets.Audio(decode=False))
    if len(table) == 0:
        raise SystemExit(f"error: --dataset {args.dataset} has no rows.")
    clips, seen = [], {}
    for index, row in enumerate(table):
        value = row[args.audio_column]
        try:
            audio, rate = load_audio(value, row=index)
        except ValueError as error:
            raise SystemExit(f"error: --dataset {args.dataset}: {error}") from None
        if args.name_column is not None:
            name = str(row[args.name_column])
        else:
            path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
            name = Path(path).name if path else f"row{index:06d}.wav"
        if name in seen:
            raise SystemExit(f"error: rows {seen[name]} and {index} of {args.dataset} are both named {name!r}; "
                             "give --name-column with unique clip names.")
        seen[name] = index
        domain = str(row[args.domain_column]) if args.domain_column is not None else "all"
        clips.append(Clip(name, to_mono_16k(audio, rate), domain))
    return clips


# ---------------------------------------------------------------------------------------------- estimates
def parse_estimate(text: str) -> EstimateSpec:
    if "=" not in text:
        raise SystemExit(f"error: --estimate {text!r} is not NAME=DIR[@BITRATE[@TOKENS_PER_SECOND]].")
    name, rest = text.split("=", 1)
    folder, *numbers = rest.split("@")
    if len(numbers) > 2:
        raise SystemExit(f"error: --estimate {text!r}: expected at most BITRATE and TOKENS_PER_SECOND after DIR.")
    values: List[Optional[float]] = []
    for what, number in zip(("bitrate", "tokens per second"), numbers + [""] * (2 - len(numbers))):
        try:
            values.append(float(number) if number else None)
        except ValueError:
            raise SystemExit(f"error: --estimate {text!r}: {what} {number!r} is not a number.") from None
    return EstimateSpec(name, Path(folder), values[0], values[1])


def _stem_key(name: str, extensions: str) -> str:
    """A clip name without its audio extension (how references and estimates are matched); other dots stay, so
    `utt.001` and `utt.002` remain two clips."""
    path = Path(name)
    return (path.with_suffix("") if path.suffix.lower() in _suffixes(extensions) else path).as_posix()


def match_estimates(clips: List[Clip], spec: EstimateSpec, extensions: str) -> Dict[str, Path]:
    """Each clip's reconstruction in `spec.folder`: same relative name, any audio extension. Names are compared
    as strings (no glob patterns); a clip with several candidates, a clip without one and a missing folder are
    errors; files that match no clip are reported as a warning."""
    if not spec.folder.is_dir():
        raise SystemExit(f"error: {spec.name}: estimate folder {spec.folder} does not exist (or is not a folder).")
    candidates: Dict[str, List[Path]] = {}
    for path in audio_files(spec.folder, extensions):
        candidates.setdefault(_stem_key(path.relative_to(spec.folder).as_posix(), extensions), []).append(path)
    found, missing = {}, []
    for clip in clips:
        matches = candidates.get(_stem_key(clip.name, extensions), [])
        if len(matches) > 1:
            raise SystemExit(f"error: {spec.name}: several reconstructions of {clip.name} in {spec.folder}: "
                             + " and ".join(str(m.relative_to(spec.folder)) for m in matches)
                             + "; keep one.")
        if not matches:
            missing.append(clip.name)
        else:
            found[clip.name] = matches[0]
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
        raise SystemExit(f"error: {spec.name}: no reconstruction of {shown} in {spec.folder} ({len(missing)} of "
                         f"{len(clips)} clips; same relative name, any audio extension).")
    wanted = {_stem_key(clip.name, extensions) for clip in clips}
    extra = sorted(str(p.relative_to(spec.folder)) for key, paths in candidates.items() if key not in wanted
                   for p in paths)
    if extra:
        shown = ", ".join(extra[:5]) + (", ..." if len(extra) > 5 else "")
        print(f"warning: {spec.name}: {len(extra)} file(s) in {spec.folder} match no reference and are not scored: "
              f"{shown}", file=sys.stderr)
    return found


def check_unique_stems(clips: List[Clip], extensions: str) -> None:
    seen: Dict[str, str] = {}
    for clip in clips:
        key = _stem_key(clip.name, extensions)
        if key in seen:
            raise SystemExit(f"error: references {seen[key]} and {clip.name} differ only by extension, so their "
                             "reconstructions could not be told apart; rename one.")
        seen[key] = clip.name


# ---------------------------------------------------------------------------------------------- SemantiCodec
def reconstruct(clips: List[Clip], args: argparse.Namespace):
    """SemantiCodec reconstructions (one clip at a time, seeded), its bitrate and tokens/s. A clip shorter than
    one AudioMAE patch (0.16 s) is zero-padded to it for coding and its output cut back to its length."""
    from semanticodec_hf import SemantiCodecFeatureExtractor, SemantiCodecModel, SemantiCodecProcessor

    if args.tiny:
        print("WARNING: --tiny builds a small RANDOMLY INITIALISED model; its reconstructions are noise and its "
              "scores mean nothing (pipeline test only).", file=sys.stderr)
        codec, feature_extractor = SemantiCodecModel.tiny(seed=0), SemantiCodecFeatureExtractor()
    else:
        codec = SemantiCodecModel.from_pretrained(args.model)
        feature_extractor = SemantiCodecFeatureExtractor.from_pretrained(args.model)
    codec.eval()
    processor = SemantiCodecProcessor.from_codec(codec, feature_extractor)
    minimum = feature_extractor.min_num_samples  # one AudioMAE patch (0.16 s): SemantiCodec's shortest input
    estimates, started, padded = {}, time.perf_counter(), []
    for clip in progress_bar(clips, desc="reconstruct", unit="clip", quiet=args.quiet):
        audio = clip.audio.astype(np.float32)
        if audio.size < minimum:
            padded.append(clip.name)
        (codes, num_samples), = processor.encode_audio(codec, audio, SAMPLE_RATE, short_audio="pad")
        wave, = processor.decode_codes(codec, [codes], num_samples=[num_samples], seed=args.seed,
                                       num_inference_steps=args.steps)
        estimates[clip.name] = wave[: clip.audio.size].double().numpy()
    if not args.quiet:
        print(f"SemantiCodec reconstructed {len(clips)} clips in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
    if padded:
        print(f"note: {len(padded)} clip(s) shorter than {minimum / SAMPLE_RATE} s were zero-padded for "
              f"SemantiCodec (its shortest input) and cut back: {', '.join(padded[:5])}", file=sys.stderr)
    if args.save_reconstructions:
        import soundfile as sf

        for name, wave in estimates.items():
            target = Path(args.save_reconstructions) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(target.with_suffix(".wav")), wave, SAMPLE_RATE, subtype="PCM_16")
    config = codec.config
    label = "semanticodec-tiny" if args.tiny else f"semanticodec-{config.token_rate}tps-{config.semantic_vocab_size}"
    return label, estimates, float(config.bitrate), float(config.tokens_per_second)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    use_threads(args.threads)
    from semanticodec_hf.metrics import load_codec_metric, write_report

    clips = clips_from_dataset(args) if args.dataset else clips_from_folder(args)
    empty = [clip.name for clip in clips if clip.audio.size == 0]
    if empty:
        raise SystemExit(f"error: {len(empty)} reference(s) without samples: {', '.join(empty[:5])}; remove them.")
    specs = [parse_estimate(text) for text in args.estimate]
    if specs:
        check_unique_stems(clips, args.extensions)
    speech = [args.all_speech or clip.domain in set(args.speech_domains) for clip in clips]

    systems: Dict[str, Dict[str, np.ndarray]] = {}
    bitrates: Dict[str, float] = {}
    token_rates: Dict[str, float] = {}
    if args.model or args.tiny:
        label, estimates, bitrate, tokens = reconstruct(clips, args)
        systems[label], bitrates[label], token_rates[label] = estimates, bitrate, tokens
    for spec in specs:
        systems[spec.name] = {name: read_mono_16k(path)
                              for name, path in match_estimates(clips, spec, args.extensions).items()}
        if spec.bitrate is not None:
            bitrates[spec.name] = spec.bitrate
        if spec.tokens_per_second is not None:
            token_rates[spec.name] = spec.tokens_per_second

    metric = load_codec_metric(keep_in_memory=True)  # the audio is in memory already: no Arrow cache files
    names = [clip.name for clip in clips]
    results = {}
    # clips x systems: PESQ and STOI on a hundred clips take minutes per system; the bar names the system
    with progress_bar(total=len(names) * len(systems), desc="score", unit="clip", quiet=args.quiet) as bar:
        for label, estimates in systems.items():
            bar.set_postfix_str(label)
            try:
                results[label] = metric.compute(
                    predictions=[estimates[n] for n in names], references=[clip.audio for clip in clips],
                    sampling_rate=SAMPLE_RATE, domains=[clip.domain for clip in clips], speech=speech, names=names,
                    max_length_difference=args.max_length_difference, detailed=True,
                    on_clip=lambda _name: bar.update(1))
            except (ValueError, ImportError) as error:  # bad audio; PESQ/STOI without the [eval] extra
                raise SystemExit(f"error: {label}: {error}") from None
    written = write_report(results, args.output, bitrates, token_rates)
    print(Path(written["markdown"]).read_text())
    if not args.quiet:
        print("written: " + ", ".join(written.values()), file=sys.stderr)
    return {"results": results, "written": written}


if __name__ == "__main__":
    main()

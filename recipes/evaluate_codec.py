#!/usr/bin/env python
"""Evaluate a codec on a folder of audio: mel distance, multi-resolution STFT distance, SI-SDR, and PESQ-wb /
STOI on speech, per clip and per domain, with bitrate and tokens/s. Writes metrics.md, metrics.csv and
metrics.png (metric vs bitrate) to --output.

Mode A: SemantiCodec reconstructs every clip of --audio-dir (alias --reference-dir) here (`--model PATH` or
`--tiny`, a random model for pipeline tests). Mode B: reconstructions made by any other codec are scored from a
folder holding the same relative file names (`--estimate-dir DIR`, or `--estimate NAME=DIR[@BITRATE]`,
repeatable), so codecs can be compared on the same clips; both modes can be combined. Everything is compared at
16 kHz mono (SemantiCodec's output rate): other rates are resampled with soxr, channels averaged, and each pair
trimmed to its shorter length.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

EXAMPLES = """examples:
  # mode A: SemantiCodec on a folder whose sub-folders are domains (speech/, music/, sound/)
  python recipes/evaluate_codec.py --audio-dir ./eval --model ./semanticodec-100tps-8192 \\
      --domain-from-subfolder --speech-domains speech --output ./report

  # mode A smoke test with a random tiny model (its scores mean nothing)
  python recipes/evaluate_codec.py --audio-dir ./eval --tiny --steps 5 --output ./report_tiny

  # mode B: score another codec's output folder (same relative file names) against the originals
  python recipes/evaluate_codec.py --reference-dir ./eval --estimate-dir ./encodec_out --estimate-name encodec \\
      --bitrate 1500 --domain-from-subfolder --speech-domains speech --output ./report

  # compare with another codec's reconstructions of the same files (same relative names)
  python recipes/evaluate_codec.py --reference-dir ./eval --model ./semanticodec-50tps-8192 \\
      --estimate encodec_1.5k=./encodec_out@1500 --domain-from-subfolder --output ./report

  # score existing reconstructions only
  python recipes/evaluate_codec.py --reference-dir ./eval --estimate mycodec=./out@1000 --all-speech --output ./r
"""
SAMPLE_RATE = 16000


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-dir", "--audio-dir", dest="reference_dir", required=True,
                        help="folder of original audio (searched recursively)")
    codec = parser.add_mutually_exclusive_group()
    codec.add_argument("--model", help="converted SemantiCodec folder or Hub id to reconstruct with")
    codec.add_argument("--tiny", action="store_true", help="RANDOM tiny codec (pipeline test only)")
    parser.add_argument("--estimate", action="append", default=[], metavar="NAME=DIR[@BITRATE]",
                        help="reconstructions by another system, matched by relative file name")
    parser.add_argument("--estimate-dir", help="mode B: one folder of another codec's reconstructions, matched by "
                        "relative file name (any audio extension)")
    parser.add_argument("--estimate-name", default=None, help="name of --estimate-dir's system in the report "
                        "(default: the folder's name)")
    parser.add_argument("--bitrate", type=float, default=None, help="bit/s of --estimate-dir's codec (for the plot)")
    parser.add_argument("--output", required=True, help="report folder")
    parser.add_argument("--domain-from-subfolder", action="store_true", help="domain = first sub-folder of a file")
    parser.add_argument("--speech-domains", nargs="*", default=["speech"], help="domains scored with PESQ/STOI")
    parser.add_argument("--all-speech", action="store_true", help="score PESQ/STOI on every clip")
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps of the SemantiCodec decoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-reconstructions", help="also write SemantiCodec's reconstructions here")
    parser.add_argument("--extensions", default="wav,flac,ogg")
    args = parser.parse_args(argv)
    if not (args.model or args.tiny or args.estimate or args.estimate_dir):
        parser.error("give --model (or --tiny) to reconstruct with SemantiCodec, and/or --estimate-dir DIR "
                     "(or --estimate NAME=DIR) to score another codec's output.")
    if args.estimate_dir:
        name = args.estimate_name or Path(args.estimate_dir.rstrip("/\\")).name or "estimate"
        args.estimate.append(f"{name}={args.estimate_dir}" + (f"@{args.bitrate:g}" if args.bitrate else ""))
    elif args.estimate_name or args.bitrate is not None:
        parser.error("--estimate-name and --bitrate describe --estimate-dir; give --estimate-dir too.")
    return args


def read_mono_16k(path: Path) -> np.ndarray:
    import soundfile as sf
    import soxr

    try:
        audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as error:  # soundfile raises several types for unreadable files
        raise SystemExit(f"error: cannot read {path}: {error}") from None
    mono = audio.mean(axis=1)
    return soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ") if rate != SAMPLE_RATE else mono


def parse_estimate(text: str) -> Tuple[str, Path, Optional[float]]:
    if "=" not in text:
        raise SystemExit(f"error: --estimate {text!r} is not NAME=DIR[@BITRATE].")
    name, rest = text.split("=", 1)
    folder, _, bitrate = rest.partition("@")
    try:
        return name, Path(folder), float(bitrate) if bitrate else None
    except ValueError:
        raise SystemExit(f"error: --estimate {text!r}: bitrate {bitrate!r} is not a number.") from None


def reconstruct(references: Dict[str, np.ndarray], args: argparse.Namespace):
    """SemantiCodec reconstructions (one clip at a time, seeded), its bitrate and tokens/s."""
    import torch

    from semanticodec_hf.cli import load_codec

    codec, feature_extractor = load_codec(args.model, args.tiny)
    estimates, started = {}, time.perf_counter()
    for name, audio in references.items():
        features = feature_extractor(audio.astype(np.float32), sampling_rate=SAMPLE_RATE)
        with torch.inference_mode():
            codes = codec.encode(features["input_features"], input_features_mask=features["input_features_mask"],
                                 num_samples=features["num_samples"])
            out = codec.decode(codes.audio_codes, audio_codes_lengths=codes.audio_codes_lengths,
                               num_inference_steps=args.steps, seed=args.seed, num_samples=features["num_samples"])
        estimates[name] = out.audio_values[0, 0, : int(out.audio_values_lengths[0])].double().numpy()
    print(f"SemantiCodec reconstructed {len(references)} clips in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
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
    from semanticodec_hf.metrics import CodecMetrics, write_report

    root = Path(args.reference_dir)
    wanted = {"." + e.lower().lstrip(".") for e in args.extensions.split(",")}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in wanted) if root.is_dir() else []
    if not files:
        raise SystemExit(f"error: no {sorted(wanted)} files under {root}.")
    names = [str(p.relative_to(root)) for p in files]
    references = {name: read_mono_16k(path) for name, path in zip(names, files)}
    domains = [Path(n).parts[0] if args.domain_from_subfolder and len(Path(n).parts) > 1 else "all" for n in names]
    speech = [args.all_speech or d in set(args.speech_domains) for d in domains]

    systems: Dict[str, Dict[str, np.ndarray]] = {}
    bitrates: Dict[str, float] = {}
    token_rates: Dict[str, float] = {}
    if args.model or args.tiny:
        label, estimates, bitrate, tokens = reconstruct(references, args)
        systems[label], bitrates[label], token_rates[label] = estimates, bitrate, tokens
    for text in args.estimate:
        label, folder, bitrate = parse_estimate(text)
        estimates = {}
        for name in names:
            matches = sorted(folder.glob(str(Path(name).with_suffix(".*"))))
            if not matches:
                raise SystemExit(f"error: {label}: no reconstruction of {name} in {folder} (same relative name, any "
                                 "audio extension).")
            estimates[name] = read_mono_16k(matches[0])
        systems[label] = estimates
        if bitrate is not None:
            bitrates[label] = bitrate

    metric = CodecMetrics()
    try:
        results = {
            label: metric.compute(references=[references[n] for n in names], estimates=[estimates[n] for n in names],
                                  sample_rate=SAMPLE_RATE, domains=domains, speech=speech, names=names)
            for label, estimates in systems.items()
        }
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    written = write_report(results, args.output, bitrates, token_rates)
    print(Path(written["markdown"]).read_text())
    print("written: " + ", ".join(written.values()), file=sys.stderr)
    return {"results": results, "written": written}


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # run from a checkout
    main()

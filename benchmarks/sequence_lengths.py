#!/usr/bin/env python
"""LM sequence length per second of audio, measured on a tokenized corpus: ids per second for each pattern
(interleaved, semantic_then_acoustic, semantic_only), with and without `<bos>`/`<eos>`, then acoustic-BPE pieces
per second and r (frames per piece) for BPE models trained on the corpus's semantic_only streams.

The corpus: a folder of audio files (`--audio-dir`, any format `semanticodec-hf` reads, any rate), or by default
generated speech-like clips (harmonic tones whose pitch glides, noise bursts, silence gaps; the same clips for
the same `--seed`). The codec: `--codec PATH` (a converted SemantiCodec folder or Hub id), `--tiny` (the RANDOM
tiny codec: plumbing only) or `--parity` (the full-size architecture with the repository's deterministic
pseudo-random parity weights, tests/parity_weights.py, loaded through the converter: real sequence geometry, but
random weights).

Seconds are those of the audio given (each clip's own length); ids are counted in what the tokenizer actually
produces for those clips (the codec's token budget per clip included), so frames per second can differ slightly
from the nominal rate for short clips. BPE: the clips are split by clip into a training part and a held-out part
(`--heldout-fraction`); pieces per second and r are measured on the held-out clips (the training clips'
r, which is always higher, is printed as r_train). A vocabulary size the training part cannot reach is skipped
with the largest size it supports.

One parseable line per row (each is one line; wrapped here), then a markdown table:

    SEQLEN pattern=interleaved ids_per_second=... ids_per_second_with_special=... frames_per_second=...
        clips=... seconds=...
    SEQLEN pattern=semantic_only+bpe vocab=... ids_per_second=... ids_per_second_with_special=...
        frames_per_second=... r=... r_train=... measured_on=heldout|train clips=... seconds=...
    SEQLEN_SKIP pattern=semantic_only+bpe vocab=... reason="..."

examples:
  python benchmarks/sequence_lengths.py --tiny                  # seconds: the random tiny codec
  python benchmarks/sequence_lengths.py --parity --threads 2    # full-size geometry, random weights (~4 min, 2 cores)
  python benchmarks/sequence_lengths.py --codec ./semanticodec-100tps-8192 --audio-dir ./clips --bpe-vocab-sizes 2x 4x
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PATTERNS = ("interleaved", "semantic_then_acoustic", "semantic_only")
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a", ".aiff", ".aif"}


# ------------------------------------------------------------------------------------------------ audio
def speech_like_clips(count: int, seconds: float, sampling_rate: int = 16000, seed: int = 0) -> List[np.ndarray]:
    """`count` clips of `seconds` each: a sequence of voiced segments (a harmonic series whose pitch glides
    between 90 and 260 Hz, shaped by two moving formant-like peaks), unvoiced noise bursts and near-silent gaps,
    each 50-350 ms with short fades. Deterministic from `seed`."""
    rng = np.random.default_rng(seed)
    total = int(round(seconds * sampling_rate))
    clips = []
    for _ in range(count):
        parts, length = [], 0
        while length < total:
            kind = rng.choice(["voiced", "burst", "silence"], p=[0.6, 0.2, 0.2])
            n = int(rng.uniform(0.05, 0.35) * sampling_rate)
            t = np.arange(n) / sampling_rate
            if kind == "voiced":
                f0 = np.linspace(rng.uniform(90, 260), rng.uniform(90, 260), n)
                f0 *= 1 + 0.01 * np.sin(2 * np.pi * 5.5 * t)  # a little vibrato
                phase = 2 * np.pi * np.cumsum(f0) / sampling_rate
                f1 = np.linspace(rng.uniform(300, 900), rng.uniform(300, 900), n)
                f2 = np.linspace(rng.uniform(900, 2500), rng.uniform(900, 2500), n)
                segment = np.zeros(n)
                for k in range(1, int(4000 / f0.max()) + 1):
                    weight = (np.exp(-((k * f0 - f1) / 150) ** 2) + 0.6 * np.exp(-((k * f0 - f2) / 250) ** 2)
                              + 0.05) / k ** 0.5
                    segment += weight * np.sin(k * phase)
                segment *= rng.uniform(0.3, 1.0) / max(np.abs(segment).max(), 1e-9)
            elif kind == "burst":
                noise = rng.standard_normal(n + 1)
                segment = (noise[1:] - rng.uniform(0.0, 0.95) * noise[:-1]) * rng.uniform(0.05, 0.3)  # bright noise
            else:
                segment = 0.002 * rng.standard_normal(n)
            fade = min(n // 2, int(0.01 * sampling_rate))
            if fade:
                ramp = np.linspace(0.0, 1.0, fade)
                segment[:fade] *= ramp
                segment[n - fade:] *= ramp[::-1]
            parts.append(segment)
            length += n
        clip = np.concatenate(parts)[:total]
        clips.append((0.5 * clip / max(np.abs(clip).max(), 1e-9)).astype(np.float32))
    return clips


def read_folder(folder: Path) -> Tuple[List[np.ndarray], List[int], List[str]]:
    """Every audio file under `folder` (sorted): mono float32 arrays, their rates and their names."""
    from semanticodec_hf.processing_semanticodec import read_audio

    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        raise SystemExit(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) under {folder}")
    clips, rates = [], []
    for path in paths:
        audio, rate = read_audio(str(path))
        audio = np.asarray(audio, dtype=np.float32)
        clips.append(audio.mean(axis=0) if audio.ndim == 2 else audio)
        rates.append(int(rate))
    return clips, rates, [str(p.relative_to(folder)) for p in paths]


# ------------------------------------------------------------------------------------------------ codec
def load_tokenizer(args: argparse.Namespace):
    """(tokenizer, a sentence saying what the codec's weights are)."""
    from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

    if args.codec:
        tokenizer = SemantiCodecAudioTokenizer.from_pretrained(args.codec, device=args.device)
        return tokenizer, f"the codec at {args.codec}"
    if args.tiny:
        tokenizer = SemantiCodecAudioTokenizer.tiny(seed=0, token_rate=args.token_rate)
        tokenizer.model.to(args.device)
        return tokenizer, ("the RANDOM tiny codec (SemantiCodecModel.tiny, seed 0): its ids mean nothing, only the "
                           "sequence geometry is real")
    sys.path.insert(0, str(REPO / "tests"))  # the parity weight recipe lives with the tests
    from parity_weights import build_decoder_state_dict, build_encoder_state_dict, build_semantic_centroids
    from semanticodec_hf import SemantiCodecFeatureExtractor
    from semanticodec_hf.convert_semanticodec_original_to_hf import convert_original_checkpoint

    rate, vocab = args.token_rate, args.semantic_vocab_size
    model = convert_original_checkpoint(build_encoder_state_dict(rate), build_decoder_state_dict(rate),
                                        build_semantic_centroids(vocab, rate), rate, vocab).to(args.device).eval()
    tokenizer = SemantiCodecAudioTokenizer(model, SemantiCodecFeatureExtractor())
    return tokenizer, (f"the full-size {rate} tokens/s, {vocab}-id architecture with the repository's deterministic "
                       "pseudo-random parity weights (tests/parity_weights.py), NOT a trained checkpoint")


# ------------------------------------------------------------------------------------------------ counting
def pattern_rows(codes: Sequence, layout, seconds: float) -> List[Dict[str, object]]:
    """Ids per second of `codes` (one `[2, F]` per clip) in each pattern, without and with `<bos>`/`<eos>`."""
    from semanticodec_hf.audio_token_layout import codes_to_ids

    frames = sum(int(c.shape[1]) for c in codes)
    rows = []
    for pattern in PATTERNS:
        ids = sum(len(codes_to_ids(np.asarray(c), layout, pattern)) for c in codes)
        rows.append({"pattern": pattern, "ids": ids, "ids_per_second": ids / seconds,
                     "ids_per_second_with_special": (ids + 2 * len(codes)) / seconds,
                     "frames_per_second": frames / seconds, "frames_per_id": frames / ids,
                     "clips": len(codes), "seconds": seconds})
    return rows


def vocab_sizes(specs: Sequence[str], semantic_vocab_size: int) -> List[int]:
    """`2x` -> 2 * S, `+256` -> S + 256, `5000` -> 5000 (S: the semantic vocabulary); sorted, unique."""
    sizes = []
    for spec in specs:
        text = spec.strip().lower()
        try:
            if text.endswith("x"):
                size = int(round(float(text[:-1]) * semantic_vocab_size))
            elif text.startswith("+"):
                size = semantic_vocab_size + int(text[1:])
            else:
                size = int(text)
        except ValueError:
            raise SystemExit(f"--bpe-vocab-sizes: cannot read {spec!r} (use 2x, +256 or 5000)") from None
        sizes.append(size)
    return sorted(set(sizes))


def bpe_rows(streams: Sequence[Sequence[int]], seconds: Sequence[float], semantic_vocab_size: int,
             sizes: Sequence[int], heldout_fraction: float, threads: int) -> List[Dict[str, object]]:
    """Train an AcousticBPE per vocabulary size on the training clips' semantic streams and measure pieces per
    second and frames per piece (r) on the held-out clips (on the training clips when there are too few)."""
    from semanticodec_hf.acoustic_bpe import AcousticBPE

    count = len(streams)
    held = int(round(heldout_fraction * count)) if count >= 2 else 0
    held = min(max(held, 1 if heldout_fraction > 0 and count >= 2 else 0), count - 1)
    train, test = list(range(count - held)), list(range(count - held, count)) or list(range(count))
    measured_on = "heldout" if held else "train"
    test_seconds = sum(seconds[i] for i in test)
    rows = []
    for size in sizes:
        if size <= semantic_vocab_size + 1:
            rows.append({"pattern": "semantic_only+bpe", "vocab": size, "skip": f"not above {semantic_vocab_size + 1} "
                         "(<unk> and every semantic id)"})
            continue
        try:
            bpe = AcousticBPE.train([streams[i] for i in train], num_base_ids=semantic_vocab_size, vocab_size=size,
                                    num_threads=threads)
        except RuntimeError as error:
            limit = re.search(r"<= (\d+)", str(error))
            reason = (f"the training clips support at most {limit.group(1)} pieces" if limit else
                      str(error).splitlines()[0])
            rows.append({"pattern": "semantic_only+bpe", "vocab": size, "skip": reason})
            continue
        pieces = sum(len(bpe.encode(streams[i])) for i in test)
        frames = sum(len(streams[i]) for i in test)
        rows.append({"pattern": "semantic_only+bpe", "vocab": size, "ids": pieces,
                     "ids_per_second": pieces / test_seconds,
                     "ids_per_second_with_special": (pieces + 2 * len(test)) / test_seconds,
                     "frames_per_second": frames / test_seconds, "r": frames / pieces,
                     "r_train": bpe.compression_ratio([streams[i] for i in train]),
                     "clips": len(test), "seconds": test_seconds, "measured_on": measured_on})
    return rows


def line(row: Dict[str, object]) -> str:
    if "skip" in row:
        return f"SEQLEN_SKIP pattern={row['pattern']} vocab={row['vocab']} reason=\"{row['skip']}\""
    head = f"SEQLEN pattern={row['pattern']}" + (f" vocab={row['vocab']}" if "vocab" in row else "")
    fields = [f"ids_per_second={row['ids_per_second']:.6g}",
              f"ids_per_second_with_special={row['ids_per_second_with_special']:.6g}",
              f"frames_per_second={row['frames_per_second']:.6g}"]
    if "r" in row:
        fields += [f"r={row['r']:.6g}", f"r_train={row['r_train']:.6g}", f"measured_on={row['measured_on']}"]
    fields += [f"clips={row['clips']}", f"seconds={row['seconds']:.6g}"]
    return " ".join([head, *fields])


def table(rows: Sequence[Dict[str, object]]) -> str:
    out = ["| pattern | ids/s (audio ids) | ids/s with `<bos>`/`<eos>` | frames per id (r) | measured on |",
           "|---|---:|---:|---:|---|"]
    for row in rows:
        name = f"`{row['pattern']}`" if "vocab" not in row else f"`semantic_only` + acoustic BPE, {row['vocab']} pieces"
        if "skip" in row:
            out.append(f"| {name} | - | - | - | skipped: {row['skip']} |")
            continue
        where = (f"{row['clips']} held-out clips, {row['seconds']:.1f} s" if row.get("measured_on") == "heldout" else
                 f"{row['clips']} clips, {row['seconds']:.1f} s")
        out.append(f"| {name} | {row['ids_per_second']:.2f} | {row['ids_per_second_with_special']:.2f} | "
                   f"{row['r'] if 'r' in row else row['frames_per_id']:.3f} | {where} |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ main
def main(argv: Optional[List[str]] = None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    codec = parser.add_mutually_exclusive_group(required=True)
    codec.add_argument("--codec", help="converted SemantiCodec folder, tokenizer folder or Hub id")
    codec.add_argument("--tiny", action="store_true", help="the RANDOM tiny codec (64 semantic ids): plumbing only")
    codec.add_argument("--parity", action="store_true",
                       help="full-size architecture with the repository's pseudo-random parity weights (random "
                            "weights: the BPE ratio then reflects repetition in those codes, not a trained codec's)")
    parser.add_argument("--token-rate", type=int, choices=[25, 50, 100], default=100, help="for --tiny / --parity")
    parser.add_argument("--semantic-vocab-size", type=int, default=8192, choices=[4096, 8192, 16384, 32768],
                        help="for --parity")
    parser.add_argument("--audio-dir", type=Path, help="audio files to tokenize (default: generated clips)")
    parser.add_argument("--clips", type=int, default=15, help="generated clips (without --audio-dir)")
    parser.add_argument("--clip-seconds", type=float, default=10.0,
                        help="length of each generated clip (10 s fits one 10.24 s codec window)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated clips")
    parser.add_argument("--bpe-vocab-sizes", nargs="*", default=["2x", "4x", "+256", "+1024"], metavar="SIZE",
                        help="BPE vocabulary sizes: 2x (times the semantic vocabulary), +256 (semantic vocabulary "
                             "plus 256 merges) or a number; none: skip BPE (default: 2x 4x +256 +1024)")
    parser.add_argument("--heldout-fraction", type=float, default=0.25,
                        help="fraction of the clips (whole clips, the last ones) on which BPE is measured")
    parser.add_argument("--device", default="cpu")
    from semanticodec_hf.cpu_threads import add_threads_option, use_threads

    add_threads_option(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.heldout_fraction < 1:
        parser.error(f"--heldout-fraction must be in [0, 1), got {args.heldout_fraction}")
    threads = use_threads(args.threads)

    started = time.perf_counter()
    tokenizer, weights = load_tokenizer(args)
    layout, config = tokenizer.layout, tokenizer.model.config
    if args.audio_dir is not None:
        clips, rates, _ = read_folder(args.audio_dir)
        source = f"{len(clips)} files from {args.audio_dir}"
    else:
        clips = speech_like_clips(args.clips, args.clip_seconds, 16000, args.seed)
        rates = [16000] * len(clips)
        source = (f"{len(clips)} generated speech-like clips of {args.clip_seconds:g} s (harmonic tones with gliding "
                  f"pitch, noise bursts, silences; seed {args.seed})")
    seconds = [clip.shape[-1] / rate for clip, rate in zip(clips, rates)]
    print(f"codec: {weights}; {config.token_rate} tokens/s, {layout.semantic_vocab_size} semantic / "
          f"{layout.acoustic_vocab_size} acoustic ids; {threads} thread(s)", flush=True)
    print(f"audio: {source}, {sum(seconds):.1f} s in all", flush=True)
    loaded = time.perf_counter()
    codes = tokenizer.encode_audio(clips, rates if len(set(rates)) > 1 else rates[0])
    encoded = time.perf_counter()
    print(f"tokenized in {encoded - loaded:.1f} s (codec ready in {loaded - started:.1f} s)", flush=True)

    rows = pattern_rows(codes, layout, sum(seconds))
    streams = [c[0].tolist() for c in codes]
    rows += bpe_rows(streams, seconds, layout.semantic_vocab_size,
                     vocab_sizes(args.bpe_vocab_sizes, layout.semantic_vocab_size), args.heldout_fraction, threads)
    distinct = len({i for s in streams for i in s})
    print(f"semantic ids used: {distinct} of {layout.semantic_vocab_size}")
    for row in rows:
        print(line(row))
    print()
    print(table(rows))
    print(f"\n(total {time.perf_counter() - started:.1f} s)")
    return rows


if __name__ == "__main__":
    main()

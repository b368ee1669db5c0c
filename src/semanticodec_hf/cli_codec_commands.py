"""The codec commands: `compress`, `encode`, `decompress`, `decode`, `info`, `roundtrip` and `convert`. Each
resolves its jobs (`cli_jobs`), checks its outputs and runs over `cli_runner`; audio and code files go through
`cli_audio_io` and `code_files`. Heavy imports (torch, the model) happen inside the commands."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from .cli_audio_io import check_audio_output, read_audio, write_audio, write_failure
from .cli_jobs import CliError, Job, audio_suffixes, expand, first_mentions, named_again_note, refuse_overwriting
from .cli_runner import (Outcome, Reported, fail, jobs_for, load_codec, log, note, prepare_outputs, run_jobs,
                         set_decoder_dtype)
from .code_files import CODE_SUFFIXES, CodeItem, read_code_item, read_sct_item, save_codes


# ------------------------------------------------------------------------------------------ outputs
def _write_copies(job: Job) -> None:
    """The job's other outputs (its input reached under other names: hard links, symlinks; `resolve_jobs`) as
    atomic copies of `job.target`, just written: the bytes processing the file again would give, without the work
    (encoding is deterministic, and every file is decoded with --seed as if alone)."""
    from .atomic_files import atomic_write

    for copy in job.copies:
        try:
            atomic_write(copy, lambda temporary: shutil.copyfile(job.target, temporary))
        except OSError as error:
            raise write_failure(copy, error) from error


def _outputs(job: Job) -> str:
    """`job`'s outputs for a summary line: the target, then its copies."""
    return f"{job.target}" + (f" (copied to {', '.join(str(copy) for copy in job.copies)})" if job.copies else "")


# ------------------------------------------------------------------------------------------ encoding
def _processor(codec, feature_extractor, args: argparse.Namespace):
    """The codec's `SemantiCodecProcessor`, whose feature extractor switches to --resampler when it is given (the
    model folder's choice otherwise): every command does its audio work through it."""
    from .processing_semanticodec import SemantiCodecProcessor

    if getattr(args, "resampler", None):
        feature_extractor.resampler = args.resampler
    return SemantiCodecProcessor.from_codec(codec, feature_extractor)


def _features(args: argparse.Namespace, processor, job: Job) -> Dict[str, Any]:
    """A file's encoder input (`processor.prepare_audio`: a lazy stream of fbank blocks for long files) and its
    original sampling rate."""
    audio, sampling_rate = read_audio(job.source, args.max_duration)
    try:
        features = processor.prepare_audio(audio, sampling_rate)
    except ValueError as error:
        raise CliError(f"{job.source}: {error}") from error
    features["original_sampling_rate"] = sampling_rate
    return features


def _encode_jobs(args: argparse.Namespace, jobs: List[Job], write: Callable[[Job, Any, int, int, Any], str]) -> int:
    """Shared body of `compress` and `encode`: read, extract features, encode in groups, write each result."""
    prepare_outputs(args, [("output", target) for job in jobs for target in job.targets])
    codec, feature_extractor = load_codec(args.model, args.tiny, args.device)
    processor = _processor(codec, feature_extractor, args)

    def process_group(group: List[Job], outcome: Outcome, bar: Any) -> None:
        ready, items = [], []
        for job in group:
            try:
                items.append(_features(args, processor, job))
                ready.append(job)
            except CliError as error:
                fail(outcome, bar, job, error)
        if not ready:
            return
        start = time.perf_counter()
        # batched by length, at most --batch-size windows per call; long files streamed alone
        results = processor.encode_prepared(codec, items, args.batch_size)
        seconds = (time.perf_counter() - start) / len(ready)
        for job, item, (codes, num_samples) in zip(ready, items, results):
            try:
                summary = write(job, codes.numpy(), num_samples, item["original_sampling_rate"], codec.config)
                _write_copies(job)
            except CliError as error:
                fail(outcome, bar, job, error)
                continue
            outcome.done += 1
            bar.update(1)
            log(args, f"{job.source} -> {_outputs(job)}: {summary} | encode {seconds:.2f} s")

    return run_jobs(args, jobs, process_group)


def cmd_compress(args: argparse.Namespace) -> int:
    from .sct_format import SctFormatError, write_sct

    jobs = jobs_for(args, audio_suffixes(), ".sct")

    def write(job: Job, codes, num_samples: int, original_rate: int, config) -> str:
        try:
            header = write_sct(
                job.target, codes, token_rate=config.token_rate, semantic_vocab_size=config.semantic_vocab_size,
                acoustic_codebook_size=config.acoustic_codebook_size, num_samples=num_samples,
                original_sampling_rate=original_rate,
            )
        except OSError as error:
            raise write_failure(job.target, error) from error
        except SctFormatError as error:
            raise CliError(f"cannot write {job.target}: {error}") from error
        return (f"{header.duration:.2f} s, {header.num_frames} frames, {header.file_size} bytes "
                f"({8 * header.payload_size / header.duration:.0f} bit/s payload, {config.bitrate:g} bit/s nominal)")

    return _encode_jobs(args, jobs, write)



def cmd_encode(args: argparse.Namespace) -> int:
    jobs = jobs_for(args, audio_suffixes(), f".{args.format}")
    for job in jobs:
        if job.target.suffix not in CODE_SUFFIXES:
            raise CliError(f"cannot save codes to {job.target}: use a .npy or .pt file name, or end OUTPUT with / "
                           "to write into a folder (--format picks npy or pt there).")

    def write(job: Job, codes, num_samples: int, original_rate: int, config) -> str:
        save_codes(job.target, codes, num_samples, original_rate, config)
        return f"{num_samples / config.sampling_rate:.2f} s, codes {tuple(codes.shape)}"

    return _encode_jobs(args, jobs, write)


def _stream_to_file(processor, codec, job: Job, item: CodeItem, args: argparse.Namespace) -> float:
    """Decode one long item window chunk by window chunk (`processor.decode_stream`) and write each piece as it
    comes (bounded memory, atomic output); returns the duration written. Equal to the batch path up to float32
    rounding."""
    import numpy as np
    import soundfile as sf

    from .atomic_files import atomic_write

    config = codec.config
    rate = config.sampling_rate
    resampler = None
    if args.original_rate and item.original_sampling_rate and item.original_sampling_rate != rate:
        import soxr

        resampler = soxr.ResampleStream(rate, item.original_sampling_rate, 1, dtype="float32", quality="HQ")
        rate = item.original_sampling_rate
    written = [0]

    def write(temporary: Path) -> None:
        with sf.SoundFile(str(temporary), "w", samplerate=rate, channels=1, subtype=args.subtype) as out:
            pieces = processor.decode_stream(
                codec, item.codes, num_samples=item.num_samples, windows_per_chunk=args.batch_size or 4,
                seed=args.seed, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                sampler=args.sampler,
            )
            for piece in pieces:
                samples = piece.float().cpu().numpy()
                if resampler is not None:
                    samples = resampler.resample_chunk(samples)
                out.write(np.clip(samples, -1.0, 1.0))
                written[0] += len(samples)
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                out.write(np.clip(tail, -1.0, 1.0))
                written[0] += len(tail)

    try:
        atomic_write(job.target, write)
    except OSError as error:
        raise write_failure(job.target, error) from error
    except (sf.LibsndfileError, ValueError, TypeError) as error:
        raise CliError(f"cannot write {job.target} (subtype {args.subtype or 'default'}): {error}") from error
    return written[0] / rate


def _decode_jobs(args: argparse.Namespace, jobs: List[Job], read: Callable[[Path, Any], CodeItem]) -> int:
    """Shared body of `decompress` and `decode`: read codes, decode a group per model call, write wavs."""
    from .resampling import resample

    for job in jobs:
        check_audio_output(job.target, args.subtype)  # copies have the target's suffix
    prepare_outputs(args, [("output", target) for job in jobs for target in job.targets])
    codec, feature_extractor = load_codec(args.model, args.tiny, args.device)
    codec = set_decoder_dtype(codec, args)
    processor = _processor(codec, feature_extractor, args)
    config = codec.config

    def process_group(group: List[Job], outcome: Outcome, bar: Any) -> None:
        ready, items = [], []
        for job in group:
            try:
                items.append(read(job.source, config))
                ready.append(job)
            except CliError as error:
                fail(outcome, bar, job, error)
        long_items = [i for i, item in enumerate(items) if processor.streams_decode(config, item.codes.shape[1])]
        for i in long_items:
            start = time.perf_counter()
            try:
                duration = _stream_to_file(processor, codec, ready[i], items[i], args)
                _write_copies(ready[i])
            except CliError as error:
                fail(outcome, bar, ready[i], error)
                continue
            outcome.done += 1
            bar.update(1)
            log(args, f"{ready[i].source} -> {_outputs(ready[i])}: {duration:.2f} s, streamed | decode "
                       f"{time.perf_counter() - start:.2f} s ({args.steps or config.num_inference_steps} {args.sampler} "
                       f"steps, seed {args.seed})")
        ready = [job for i, job in enumerate(ready) if i not in long_items]
        items = [item for i, item in enumerate(items) if i not in long_items]
        if not ready:
            return
        keep = [item.num_samples or config.output_num_samples(item.codes.shape[1]) for item in items]
        start = time.perf_counter()
        waves = processor.decode_codes(
            codec, [item.codes for item in items], num_samples=keep, seed=[args.seed] * len(items),
            num_inference_steps=args.steps, guidance_scale=args.guidance_scale, sampler=args.sampler,
            max_batch_size=args.batch_size, progress=not args.quiet and len(jobs) == 1,
        )
        seconds = (time.perf_counter() - start) / len(items)
        for job, item, wave in zip(ready, items, waves):
            wave = wave.float()
            rate = config.sampling_rate
            if args.original_rate and item.original_sampling_rate and item.original_sampling_rate != rate:
                wave = resample(wave[None], rate, item.original_sampling_rate, method="soxr")[0]
                rate = item.original_sampling_rate
            try:
                write_audio(job.target, wave.numpy(), rate, args.subtype)
                _write_copies(job)
            except CliError as error:
                fail(outcome, bar, job, error)
                continue
            outcome.done += 1
            bar.update(1)
            log(args, f"{job.source} -> {_outputs(job)}: {len(wave) / rate:.2f} s at {rate} Hz | "
                       f"decode {seconds:.2f} s ({args.steps or config.num_inference_steps} {args.sampler} steps, "
                       f"seed {args.seed})")

    return run_jobs(args, jobs, process_group)


def cmd_decompress(args: argparse.Namespace) -> int:
    jobs = jobs_for(args, (".sct",), ".wav")
    return _decode_jobs(args, jobs, read_sct_item)


def cmd_decode(args: argparse.Namespace) -> int:
    jobs = jobs_for(args, CODE_SUFFIXES, ".wav")
    return _decode_jobs(args, jobs, read_code_item)


# ------------------------------------------------------------------------------------------ info
def cmd_info(args: argparse.Namespace) -> int:
    """Print each `.sct` header and check its payload; no model is loaded."""
    from .sct_format import HEADER_SIZE, SctFormatError, read_sct

    notes: List[str] = []
    found = [path for pattern in args.inputs for path, _ in expand(pattern, (".sct",), notes)]
    kept, repeated = first_mentions(found)  # `a.sct ./a.sct`, a folder and a glob over it: listed once
    paths = [found[index] for index in kept]
    if repeated:
        notes.append(named_again_note(repeated))
    for message in notes:
        note(args, message)
    failures, records = 0, []
    for path in paths:
        try:
            header, _ = read_sct(path)
        except SctFormatError as error:
            failures += 1
            print(f"semanticodec-hf info: error: {error}", file=sys.stderr)
            continue
        bits = 8 * header.payload_size
        record = {"file": str(path), **header.to_dict(), "bits_per_frame": header.bits_per_frame,
                  "header_bytes": HEADER_SIZE, "payload_bytes": header.payload_size, "file_bytes": header.file_size,
                  "duration_seconds": header.duration, "payload_bitrate": bits / header.duration,
                  "file_bitrate": 8 * header.file_size / header.duration, "checksum": "ok"}
        records.append(record)
        if not args.json:
            print(
                f"{path}: .sct v{header.version} | {header.variant} | {header.num_frames} frames x "
                f"{header.bits_per_frame} bits | {header.duration:.3f} s (input at {header.original_sampling_rate} Hz) "
                f"| {header.file_size} bytes = {HEADER_SIZE} header + {header.payload_size} payload | "
                f"{record['payload_bitrate']:.0f} bit/s payload, {record['file_bitrate']:.0f} bit/s with header | "
                "checksum ok"
            )
    if args.json:
        print(json.dumps(records if len(paths) > 1 else (records[0] if records else None), indent=2))
    if failures:
        raise Reported()
    return 0


# ------------------------------------------------------------------------------------------ roundtrip
def cmd_roundtrip(args: argparse.Namespace) -> int:
    import numpy as np

    from .atomic_files import atomic_write

    output = Path(args.output)
    codes_path = Path(args.codes) if args.codes else output.with_suffix(".codes.npy")
    # Everything that can be refused is refused here, before the model is loaded and the audio encoded.
    check_audio_output(output, args.subtype)
    outputs = [("output", output), ("codes file", codes_path)]
    refuse_overwriting([Path(args.input)], outputs)
    prepare_outputs(args, outputs)
    audio, sampling_rate = read_audio(Path(args.input), args.max_duration)
    codec, feature_extractor = load_codec(args.model, args.tiny, args.device)
    codec = set_decoder_dtype(codec, args)
    processor = _processor(codec, feature_extractor, args)
    config = codec.config
    try:
        inputs = processor.prepare_audio(audio, sampling_rate)
    except ValueError as error:
        raise CliError(f"{args.input}: {error}") from error
    duration = audio.shape[-1] / sampling_rate

    start = time.perf_counter()
    (clip_codes, num_samples), = processor.encode_prepared(codec, [inputs], args.batch_size)
    encode_seconds = time.perf_counter() - start
    frames = int(clip_codes.shape[1])
    codes = clip_codes.numpy()

    start = time.perf_counter()
    wave, = processor.decode_codes(
        codec, [clip_codes], num_samples=[num_samples],  # the reconstruction has the input's duration
        seed=[args.seed], num_inference_steps=args.steps, guidance_scale=args.guidance_scale, sampler=args.sampler,
        max_batch_size=args.batch_size, progress=not args.quiet,
    )
    decode_seconds = time.perf_counter() - start
    wave = wave.numpy()

    def save_codes(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.save(handle, codes)

    try:
        atomic_write(codes_path, save_codes)
    except OSError as error:
        raise write_failure(codes_path, error) from error
    try:
        write_audio(output, wave, config.sampling_rate, args.subtype)
    except BaseException:  # the pair is the result: no codes without their reconstruction
        codes_path.unlink(missing_ok=True)
        raise

    if not args.quiet:
        print(
            f"{args.input}: {duration:.2f} s -> {frames} frames ({2 * frames} tokens) | "
            f"{config.tokens_per_second:g} tokens/s, {config.bitrate:g} bit/s | "
            f"encode {encode_seconds:.1f} s, decode {decode_seconds:.1f} s "
            f"({args.steps or config.num_inference_steps} {args.sampler} steps) | "
            f"codes -> {codes_path}, audio -> {args.output} ({len(wave) / config.sampling_rate:.2f} s)"
        )
    return 0


# ------------------------------------------------------------------------------------------ convert
def cmd_convert(args: argparse.Namespace) -> int:
    from .convert_semanticodec_original_to_hf import convert_to_folder

    start = time.perf_counter()
    try:
        out = convert_to_folder(
            args.output,
            token_rate=args.token_rate,
            semantic_vocab_size=args.semantic_vocab_size,
            checkpoint_dir=args.checkpoint_dir,
            cache_dir=args.cache_dir,
            push_to_hub=args.push_to_hub,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        raise CliError(str(error)) from error
    if not args.quiet:
        print(f"converted token_rate={args.token_rate}, vocab={args.semantic_vocab_size} -> {out} "
              f"in {time.perf_counter() - start:.1f} s")
    return 0

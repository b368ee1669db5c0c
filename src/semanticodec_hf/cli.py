"""`semanticodec-hf` command line: compress audio to `.sct` files and back, export codes, convert checkpoints.

Exit codes scripts can rely on: 0 success; 2 a usage or input error (bad option, unreadable or corrupt file,
too-short audio, wrong variant, ...), printed as one line without a traceback; 1 an unexpected error (a bug:
the traceback is printed); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). No command leaves a partial
output file: every output is written to a short locked temporary sibling and renamed into place when complete;
what a killed run (SIGKILL) leaves is removed by the next run that writes into that folder. No output may be
an input (or another output), and output locations are checked before any work.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

# Job resolution (inputs -> outputs, same-file refusals) lives in its own torch-free module.
from .cli_jobs import CliError, Job, audio_suffixes, expand, groups, refuse_overwriting, resolve_jobs, stat_kind

EXAMPLES = """examples:
  semanticodec-hf compress speech.wav speech.sct --model semanticodec-100tps-8192
  semanticodec-hf decompress speech.sct speech_rec.wav --model semanticodec-100tps-8192 --steps 50 --seed 0
  semanticodec-hf compress 'clips/**/*.flac' out_sct/ --model ./converted --batch-size 8   # glob -> folder
  semanticodec-hf decompress out_sct/ out_wav/ --model ./converted --sampler dpmsolver++ --steps 15
  semanticodec-hf info speech.sct                 # header, variant, bitrate; no model needed
  semanticodec-hf encode speech.wav speech.npy --model ./converted        # codes (2, frames) for your own tools
  semanticodec-hf decode speech.pt speech_rec.wav --model ./converted
  semanticodec-hf roundtrip speech.wav speech_rec.wav --model semanticodec-100tps-8192
  semanticodec-hf roundtrip speech.wav noise.wav --tiny --steps 5   # random tiny model: smoke test only
  semanticodec-hf convert --token-rate 100 --semantic-vocab-size 8192 --output semanticodec-100tps-8192

exit codes: 0 ok, 2 usage or input error (one line on stderr), 1 unexpected error (a bug), 130 interrupted,
143 terminated (SIGTERM).
"""

CODE_SUFFIXES = (".npy", ".pt")
DEFAULT_MAX_DURATION = 3600.0  # seconds; see --max-duration
PT_FORMAT_TAG = "semanticodec-codes-v1"


# --------------------------------------------------------------------------------------------- helpers
def _log(args: argparse.Namespace, message: str) -> None:
    """A summary line on stdout that does not break progress bars (silenced by --quiet)."""
    if getattr(args, "quiet", False):
        return
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stdout)


def _check_audio_output(path: Path, subtype: Optional[str]) -> None:
    """Refuse, before any work, an audio output whose format or `--subtype` soundfile cannot write (otherwise the
    error would come after encoding and decoding, leaving the codes of `roundtrip` behind)."""
    import soundfile as sf

    audio_format = path.suffix[1:].upper()
    if audio_format not in sf.available_formats():
        raise CliError(
            f"cannot write audio to {path}: soundfile does not know the format {path.suffix or '(no suffix)'!r}; "
            "use .wav or .flac."
        )
    if subtype is None:
        return
    valid = [name for name in sf.available_subtypes(audio_format) if sf.check_format(audio_format, name)]
    if subtype.upper() not in sf.available_subtypes():
        raise CliError(f"--subtype {subtype} is not a soundfile subtype; for {path.suffix} files use one of "
                       f"{', '.join(valid)}.")
    if not sf.check_format(audio_format, subtype.upper()):
        raise CliError(f"--subtype {subtype} cannot be written to {path.suffix} files ({path}); use one of "
                       f"{', '.join(valid)}, or another output format.")


def _read_audio(path: Path, max_duration: float):
    """Channels-first float32 audio and its rate; refuses a file longer than `max_duration` before reading it."""
    import soundfile as sf

    if stat_kind(path) != "file":
        raise CliError(f"input file {path} does not exist." if stat_kind(path) is None else
                       f"input {path} is a folder, not an audio file.")
    try:
        info = sf.info(str(path))
    except Exception as error:
        raise CliError(f"cannot read {path} as audio ({error}); is it a corrupt or unsupported file?") from error
    if info.frames <= 0 or info.samplerate <= 0:
        raise CliError(f"{path} holds no audio samples (empty file).")
    if max_duration and info.frames / info.samplerate > max_duration:
        raise CliError(
            f"{path} lasts {info.frames / info.samplerate:.0f} s, more than --max-duration {max_duration:g} s. The "
            "whole file is held in memory (about 1 GB per hour at 48 kHz stereo, plus features); split it, or "
            "raise --max-duration (0 = no limit) if the machine has the memory."
        )
    try:
        audio, sampling_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise CliError(f"cannot read {path} as audio ({error}); is it a corrupt or unsupported file?") from error
    if audio.shape[0] == 0:
        raise CliError(f"{path} holds no audio samples (empty file).")
    return audio.T, int(sampling_rate)  # channels-first, as the feature extractor expects


def _write_audio(path: Path, wave, sampling_rate: int, subtype: Optional[str]) -> None:
    """Write atomically; integer formats would wrap around outside [-1, 1], so samples are clipped first."""
    import numpy as np
    import soundfile as sf

    from .atomic_files import atomic_write

    wave = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    try:
        atomic_write(path, lambda temporary: sf.write(str(temporary), wave, sampling_rate, subtype=subtype))
    except OSError as error:
        raise _write_failure(path, error) from error
    except (sf.LibsndfileError, ValueError, TypeError) as error:
        raise CliError(f"cannot write {path} (subtype {subtype or 'default'}): {error}") from error


# ------------------------------------------------------------------------------- output safety
# (no output may be an input or another output: `cli_jobs.refuse_overwriting`, `cli_jobs.resolve_jobs`)
_WRITE_HINTS = {
    errno.EACCES: "no permission to write there; choose another output location or change the folder's permissions",
    errno.EPERM: "the operation is not permitted there; choose another output location",
    errno.EROFS: "the filesystem is read-only; choose another output location",
    errno.ENOSPC: "the disk is full; free some space or choose another output location",
    errno.EDQUOT: "the disk quota is exhausted; free some space or choose another output location",
    errno.ENAMETOOLONG: "the name is too long for this filesystem; choose a shorter output name",
    errno.ENOTDIR: "a file stands where the output path needs a folder; choose another output location",
    errno.EEXIST: "a file stands where the output path needs a folder; choose another output location",
    errno.EISDIR: "a folder has the output's name; choose another output name",
}


def _write_failure(path: Path, error: OSError) -> CliError:
    """One line for a filesystem error while writing `path`: which file, what went wrong, what to do."""
    hint = _WRITE_HINTS.get(error.errno, "check the output location")
    return CliError(f"cannot write {path}: {error.strerror or error}; {hint}.")


def _name_max(folder: Path) -> int:
    """Longest file name (bytes) the filesystem of `folder` allows; 255 where it cannot be asked."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no limit reported
        return 255


def _shorten(name: str, keep: int = 40) -> str:
    return name if len(name) <= keep else name[: keep - 3] + "..."


def _output_problem(path: Path) -> Optional[str]:
    """Why `path` cannot be written, found without writing anything: the nearest existing folder on its way must
    be a writable folder, and every name still to be created must fit the filesystem's limit. None if fine."""
    absolute = Path(os.path.abspath(path))
    to_create = [absolute.name]
    ancestor = absolute.parent
    while stat_kind(ancestor) is None and ancestor != ancestor.parent:
        to_create.append(ancestor.name)
        ancestor = ancestor.parent
    if stat_kind(ancestor) != "dir":
        return f"{ancestor} is a file, not a folder; choose another output location"
    limit = _name_max(ancestor)
    for name in to_create:
        size = len(os.fsencode(name))
        if size > limit:
            return (f"the name {_shorten(name)!r} is {size} bytes, more than the {limit} this filesystem allows; "
                    "choose a shorter name")
    if stat_kind(path) == "dir":
        return f"{path} is an existing folder; name a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return (f"no permission to create files in {ancestor}; choose another output folder or change its "
                "permissions")
    return None


def _prepare_outputs(args: argparse.Namespace, outputs: Sequence[Tuple[str, Path]]) -> None:
    """Before any work: refuse outputs that cannot be written (the first named, the others counted), and remove
    the temporary files that killed runs of ours left in the output folders (`remove_stale_temporaries`)."""
    from .atomic_files import remove_stale_temporaries

    problems = [(what, path, problem) for what, path in outputs if (problem := _output_problem(path)) is not None]
    if problems:
        what, path, problem = problems[0]
        others = len(problems) - 1
        more = f" (and {others} more output{'s' if others > 1 else ''} with problems)" if others else ""
        raise CliError(f"cannot write the {what} {path}: {problem}{more}; nothing was run.")
    folders = {path.parent for _what, path in outputs}
    for folder in sorted(folders):
        if stat_kind(folder) == "dir":
            for stale in remove_stale_temporaries(folder):
                _note(args, f"removed {stale}, a temporary file left by an interrupted run")


def _note(args: argparse.Namespace, message: str) -> None:
    """A warning-like line on stderr (silenced by --quiet)."""
    if not getattr(args, "quiet", False):
        print(f"semanticodec-hf {args.command}: note: {message}", file=sys.stderr)


def _device(name: str):
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise CliError(f"--device {name!r} is not a torch device ({error}); use cpu, cuda or cuda:N.") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {name} asks for CUDA, but torch sees no CUDA GPU here; use --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CliError(f"--device {name} asks for Apple MPS, which is not available here; use --device cpu.")
    return device


def _set_decoder_dtype(codec, args: argparse.Namespace):
    """The codec with its decoder switched to --decoder-dtype (a CliError for a precision this device lacks)."""
    try:
        return codec.set_decoder_dtype(args.decoder_dtype)
    except ValueError as error:
        raise CliError(f"--decoder-dtype {args.decoder_dtype}: {error}") from error


def load_codec(model: Optional[str], tiny: bool, device: str = "cpu"):
    """The codec and its feature extractor; never falls back to random weights unless --tiny is given."""
    from .feature_extraction_semanticodec import SemantiCodecFeatureExtractor
    from .modeling_semanticodec import SemantiCodecModel

    device = _device(str(device))
    if tiny:
        print(
            "WARNING: --tiny builds a small RANDOMLY INITIALISED model. Its output is noise; use it only to "
            "check that the pipeline runs.",
            file=sys.stderr,
        )
        return SemantiCodecModel.tiny(seed=0).to(device).eval(), SemantiCodecFeatureExtractor()
    if not model:
        raise CliError("pass --model PATH_OR_HUB_ID (a converted model folder), or --tiny for a smoke test.")
    from transformers import AutoFeatureExtractor, AutoModel

    from . import register_auto_classes

    register_auto_classes()
    try:
        codec = AutoModel.from_pretrained(model)
    except Exception as error:
        local = Path(model).exists()
        raise CliError(
            f"could not load the model {model!r} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            + ("It is a local path but not a converted SemantiCodec folder. " if local else
               "It is not a local folder and the Hub could not serve it (no network?). ")
            + "Convert the official checkpoints first, e.g. `semanticodec-hf convert --token-rate 100 "
            "--semantic-vocab-size 8192 --output semanticodec-100tps-8192`, then pass --model semanticodec-100tps-8192."
        ) from error
    if not isinstance(codec, SemantiCodecModel):
        raise CliError(f"{model!r} is a {type(codec).__name__}, not a SemantiCodec model.")
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(model)
    except Exception:
        feature_extractor = SemantiCodecFeatureExtractor()
    return codec.to(device).eval(), feature_extractor


# ------------------------------------------------------------------------------------- inputs -> outputs
# (which files, which outputs, what is refused: `cli_jobs`)
def _jobs_for(args: argparse.Namespace, suffixes: Tuple[str, ...], out_suffix: str) -> List[Job]:
    """`resolve_jobs` for a command's INPUT... OUTPUT, its notes (skipped glob matches) printed."""
    notes: List[str] = []
    jobs = resolve_jobs(args.inputs, args.output, suffixes, out_suffix, notes)
    for note in notes:
        _note(args, note)
    return jobs


@dataclass
class Outcome:
    """Per-command tally: failures are reported as they happen and decide the exit code at the end."""

    done: int = 0
    failed: List[Tuple[Path, str]] = field(default_factory=list)


def _run_jobs(
    args: argparse.Namespace,
    jobs: List[Job],
    process_group: Callable[[List[Job], Outcome, Any], None],
) -> int:
    """Run `process_group` over groups of `--batch-size` files with a file progress bar; exit code 2 on failures."""
    from tqdm.auto import tqdm

    outcome = Outcome()
    show_files = not args.quiet and len(jobs) > 1
    with tqdm(total=len(jobs), desc=args.command, unit="file", disable=not show_files, file=sys.stderr) as bar:
        for group in groups(jobs, args.batch_size):
            process_group(group, outcome, bar)
    if len(jobs) == 1 and outcome.failed:
        raise CliError(outcome.failed[0][1])
    if outcome.failed:
        for _source, message in outcome.failed:
            print(f"semanticodec-hf {args.command}: error: {message}", file=sys.stderr)
        raise CliError(f"{len(outcome.failed)} of {len(jobs)} files failed (listed above); the other "
                       f"{outcome.done} outputs were written.")
    return 0


class _Reported(CliError):
    """Errors were already printed; exit 2 without another line."""


def _fail(outcome: Outcome, bar: Any, job: Job, error: Exception) -> None:
    outcome.failed.append((job.source, str(error)))
    bar.update(1)


# ------------------------------------------------------------------------------------------ encoding
def _with_resampler(feature_extractor, args: argparse.Namespace):
    """The feature extractor, switched to --resampler when it is given (the model folder's choice otherwise)."""
    if getattr(args, "resampler", None):
        feature_extractor.resampler = args.resampler
    return feature_extractor


STREAM_ENCODE_WINDOWS = 32  # files longer than this many encoder windows (~5.5 min) are encoded as a stream


def _features(args: argparse.Namespace, feature_extractor, job: Job) -> Dict[str, Any]:
    """A file's features; for long files a lazy `stream` of fbank blocks (`iter_features`) instead."""
    audio, sampling_rate = _read_audio(job.source, args.max_duration)
    extractor = _with_resampler(feature_extractor, args)
    try:
        if audio.shape[-1] / sampling_rate > STREAM_ENCODE_WINDOWS * 10.24:
            return {"stream": extractor.iter_features(audio, sampling_rate=sampling_rate),
                    "original_sampling_rate": sampling_rate}
        features = extractor(audio, sampling_rate=sampling_rate, return_tensors="pt")
    except ValueError as error:
        raise CliError(f"{job.source}: {error}") from error
    features["original_sampling_rate"] = sampling_rate
    return features


def _encode_group(args: argparse.Namespace, codec, items: List[Dict[str, Any]]) -> List[Tuple[Any, int]]:
    """Features of several files -> [(codes (2, F) int64 numpy, num_samples)], all windows batched together;
    long files (a `stream` item) are encoded alone, block by block."""
    import torch

    if any("stream" in item for item in items):
        results, batched = [None] * len(items), [i for i, item in enumerate(items) if "stream" not in item]
        for i, item in enumerate(items):
            if "stream" in item:
                num_samples, blocks = item["stream"]
                encoded = codec.encode_stream(blocks, num_samples, max_batch_size=args.batch_size)
                results[i] = (encoded.audio_codes[0].cpu().numpy(), num_samples)
        if batched:
            for i, result in zip(batched, _encode_group(args, codec, [items[i] for i in batched])):
                results[i] = result
        return results

    windows = max(item["input_features"].shape[1] for item in items)
    batch = len(items)
    features = torch.zeros(batch, windows, items[0]["input_features"].shape[-1])
    mask = torch.zeros(batch, windows, dtype=torch.long)
    for i, item in enumerate(items):
        n = item["input_features"].shape[1]
        features[i, :n] = item["input_features"][0]
        mask[i, :n] = item["input_features_mask"][0]
    num_samples = torch.cat([item["num_samples"] for item in items])
    device = codec.device
    encoded = codec.encode(features.to(device), input_features_mask=mask.to(device), num_samples=num_samples,
                           max_batch_size=args.batch_size)
    return [
        (encoded.audio_codes[i, :, : int(encoded.audio_codes_lengths[i])].cpu().numpy(), int(num_samples[i]))
        for i in range(batch)
    ]


def _encode_jobs(args: argparse.Namespace, jobs: List[Job], write: Callable[[Job, Any, int, int, Any], str]) -> int:
    """Shared body of `compress` and `encode`: read, extract features, encode in groups, write each result."""
    _prepare_outputs(args, [("output", job.target) for job in jobs])
    codec, feature_extractor = load_codec(args.model, args.tiny, args.device)

    def process_group(group: List[Job], outcome: Outcome, bar: Any) -> None:
        ready, items = [], []
        for job in group:
            try:
                items.append(_features(args, feature_extractor, job))
                ready.append(job)
            except CliError as error:
                _fail(outcome, bar, job, error)
        if not ready:
            return
        start = time.perf_counter()
        results = _encode_group(args, codec, items)
        seconds = (time.perf_counter() - start) / len(ready)
        for job, item, (codes, num_samples) in zip(ready, items, results):
            try:
                summary = write(job, codes, num_samples, item["original_sampling_rate"], codec.config)
            except CliError as error:
                _fail(outcome, bar, job, error)
                continue
            outcome.done += 1
            bar.update(1)
            _log(args, f"{job.source} -> {job.target}: {summary} | encode {seconds:.2f} s")

    return _run_jobs(args, jobs, process_group)


def cmd_compress(args: argparse.Namespace) -> int:
    from .sct_format import SctFormatError, write_sct

    jobs = _jobs_for(args, audio_suffixes(), ".sct")

    def write(job: Job, codes, num_samples: int, original_rate: int, config) -> str:
        try:
            header = write_sct(
                job.target, codes, token_rate=config.token_rate, semantic_vocab_size=config.semantic_vocab_size,
                acoustic_codebook_size=config.acoustic_codebook_size, num_samples=num_samples,
                original_sampling_rate=original_rate,
            )
        except OSError as error:
            raise _write_failure(job.target, error) from error
        except SctFormatError as error:
            raise CliError(f"cannot write {job.target}: {error}") from error
        return (f"{header.duration:.2f} s, {header.num_frames} frames, {header.file_size} bytes "
                f"({8 * header.payload_size / header.duration:.0f} bit/s payload, {config.bitrate:g} bit/s nominal)")

    return _encode_jobs(args, jobs, write)


def _save_codes(path: Path, codes, num_samples: int, original_rate: int, config) -> None:
    """`.npy`: the bare (2, frames) int64 array; `.pt`: a dict with the codes and what decoding needs."""
    import numpy as np
    import torch

    from .atomic_files import atomic_write

    if path.suffix == ".npy":
        def write(temporary: Path) -> None:
            with open(temporary, "wb") as handle:
                np.save(handle, np.ascontiguousarray(codes, dtype=np.int64))
    elif path.suffix == ".pt":
        payload = {
            "format": PT_FORMAT_TAG,
            "audio_codes": torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64)),
            "num_samples": int(num_samples),
            "original_sampling_rate": int(original_rate),
            "token_rate": int(config.token_rate),
            "semantic_vocab_size": int(config.semantic_vocab_size),
            "acoustic_codebook_size": int(config.acoustic_codebook_size),
        }

        def write(temporary: Path) -> None:
            torch.save(payload, temporary)
    else:
        raise CliError(f"cannot save codes to {path}: use a .npy or .pt file name.")
    try:
        atomic_write(path, write)
    except OSError as error:
        raise _write_failure(path, error) from error


def cmd_encode(args: argparse.Namespace) -> int:
    jobs = _jobs_for(args, audio_suffixes(), f".{args.format}")
    for job in jobs:
        if job.target.suffix not in CODE_SUFFIXES:
            raise CliError(f"cannot save codes to {job.target}: use a .npy or .pt file name, or end OUTPUT with / "
                           "to write into a folder (--format picks npy or pt there).")

    def write(job: Job, codes, num_samples: int, original_rate: int, config) -> str:
        _save_codes(job.target, codes, num_samples, original_rate, config)
        return f"{num_samples / config.sampling_rate:.2f} s, codes {tuple(codes.shape)}"

    return _encode_jobs(args, jobs, write)


# ------------------------------------------------------------------------------------------ decoding
@dataclass
class CodeItem:
    """Codes read from a file and what is known about the audio they came from."""

    codes: Any  # int64 numpy (2, F)
    num_samples: Optional[int]  # 16 kHz input length (None: unknown, keep the original's length)
    original_sampling_rate: Optional[int]


def _check_codes_for(config, codes, source: Path):
    from .sct_format import SctFormatError, _check_codes

    try:
        return _check_codes(codes, config.semantic_vocab_size, config.acoustic_codebook_size)
    except SctFormatError as error:
        raise CliError(f"{source}: {error}") from error


def _variant_mismatch(config, found: Tuple[int, int, int], source: Path) -> None:
    from .sct_format import SctHeader, SctFormatError, check_variant

    try:
        check_variant(SctHeader(found[0], found[1], found[2], 1, 1, 1), config, str(source))
    except SctFormatError as error:
        raise CliError(str(error)) from error


def _read_sct_item(path: Path, config) -> CodeItem:
    from .sct_format import SCT_TOKEN_RATES, SctFormatError, check_variant, read_sct

    try:  # the model's own token rate is accepted too (a custom model's files), then must match it
        header, codes = read_sct(path, token_rates={*SCT_TOKEN_RATES, config.token_rate})
        check_variant(header, config, str(path))
    except SctFormatError as error:
        raise CliError(str(error)) from error
    return CodeItem(codes, header.num_samples, header.original_sampling_rate)


def _read_code_item(path: Path, config) -> CodeItem:
    """Codes from `.npy` ((2, F) ints) or `.pt` (our dict, or a bare (2, F) tensor); `.sct` works too."""
    import numpy as np
    import torch

    from .sct_format import SctFormatError, check_code_fields

    if path.suffix == ".sct":
        return _read_sct_item(path, config)
    if not path.is_file():
        raise CliError(f"input file {path} does not exist.")
    num_samples = original_rate = None
    try:
        if path.suffix == ".npy":
            codes = np.load(path, allow_pickle=False)
        elif path.suffix == ".pt":
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(loaded, dict):
                if "audio_codes" not in loaded:
                    raise CliError(f"{path} holds a dict without 'audio_codes' (keys {sorted(loaded)}).")
                if "token_rate" in loaded:
                    _variant_mismatch(config, (int(loaded["token_rate"]), int(loaded["semantic_vocab_size"]),
                                               int(loaded["acoustic_codebook_size"])), path)
                codes = loaded["audio_codes"]
                num_samples = loaded.get("num_samples")
                original_rate = loaded.get("original_sampling_rate")
            else:
                codes = loaded
            if not torch.is_tensor(codes):
                raise CliError(f"{path} holds a {type(codes).__name__}, not a codes tensor of shape (2, frames).")
            codes = codes.numpy()
        else:
            raise CliError(f"{path}: codes must be .npy, .pt or .sct files.")
    except CliError:
        raise
    except Exception as error:
        raise CliError(f"cannot read codes from {path} ({type(error).__name__}: {error}); is the file corrupt?") from error
    codes = _check_codes_for(config, codes, path)
    try:  # bounded as a .sct header is: 2**64 samples or a 16 MHz rate must not reach the decoder
        num_samples, original_rate = check_code_fields(codes.shape[1], num_samples, original_rate, config.token_rate,
                                                       str(path))
    except SctFormatError as error:
        raise CliError(str(error)) from error
    return CodeItem(codes, num_samples, original_rate)


STREAM_DECODE_WINDOWS = 8  # files longer than this many decode windows (~80 s) are decoded and written in pieces


def _stream_to_file(codec, job: Job, item: CodeItem, args: argparse.Namespace) -> float:
    """Decode one long item window chunk by window chunk and write each piece as it comes (bounded memory,
    atomic output); returns the duration written. Equal to the batch path up to float32 rounding."""
    import numpy as np
    import soundfile as sf
    import torch

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
            pieces = codec.decode_stream(
                torch.from_numpy(item.codes), num_samples=item.num_samples, windows_per_chunk=args.batch_size or 4,
                num_inference_steps=args.steps, guidance_scale=args.guidance_scale, sampler=args.sampler,
                seed=args.seed,
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
        raise _write_failure(job.target, error) from error
    except (sf.LibsndfileError, ValueError, TypeError) as error:
        raise CliError(f"cannot write {job.target} (subtype {args.subtype or 'default'}): {error}") from error
    return written[0] / rate


def _decode_jobs(args: argparse.Namespace, jobs: List[Job], read: Callable[[Path, Any], CodeItem]) -> int:
    """Shared body of `decompress` and `decode`: read codes, decode a group per model call, write wavs."""
    import torch

    from .long_audio import reference_output_samples, split_into_windows
    from .resampling import resample

    for job in jobs:
        _check_audio_output(job.target, args.subtype)
    _prepare_outputs(args, [("output", job.target) for job in jobs])
    codec, _ = load_codec(args.model, args.tiny, args.device)
    codec = _set_decoder_dtype(codec, args)
    config = codec.config

    def process_group(group: List[Job], outcome: Outcome, bar: Any) -> None:
        ready, items = [], []
        for job in group:
            try:
                items.append(read(job.source, config))
                ready.append(job)
            except CliError as error:
                _fail(outcome, bar, job, error)
        long_items = [i for i, item in enumerate(items)
                      if len(split_into_windows(item.codes.shape[1], config.frames_per_window,
                                                config.decode_window_overlap)) > STREAM_DECODE_WINDOWS]
        for i in long_items:
            start = time.perf_counter()
            try:
                duration = _stream_to_file(codec, ready[i], items[i], args)
            except CliError as error:
                _fail(outcome, bar, ready[i], error)
                continue
            outcome.done += 1
            bar.update(1)
            _log(args, f"{ready[i].source} -> {ready[i].target}: {duration:.2f} s, streamed | decode "
                       f"{time.perf_counter() - start:.2f} s ({args.steps or config.num_inference_steps} {args.sampler} "
                       f"steps, seed {args.seed})")
        ready = [job for i, job in enumerate(ready) if i not in long_items]
        items = [item for i, item in enumerate(items) if i not in long_items]
        if not ready:
            return
        frames = [item.codes.shape[1] for item in items]
        codes = torch.zeros(len(items), 2, max(frames), dtype=torch.long)
        for i, item in enumerate(items):
            codes[i, :, : frames[i]] = torch.from_numpy(item.codes)
        keep = [item.num_samples or reference_output_samples(f, config.token_rate) for item, f in zip(items, frames)]
        start = time.perf_counter()
        decoded = codec.decode(
            codes, audio_codes_lengths=torch.tensor(frames), num_samples=keep, num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale, sampler=args.sampler, seed=[args.seed] * len(items),
            max_batch_size=args.batch_size, progress=not args.quiet and len(jobs) == 1,
        )
        seconds = (time.perf_counter() - start) / len(items)
        for i, (job, item) in enumerate(zip(ready, items)):
            wave = decoded.audio_values[i, 0, : int(decoded.audio_values_lengths[i])].float().cpu()
            rate = config.sampling_rate
            if args.original_rate and item.original_sampling_rate and item.original_sampling_rate != rate:
                wave = resample(wave[None], rate, item.original_sampling_rate, method="soxr")[0]
                rate = item.original_sampling_rate
            try:
                _write_audio(job.target, wave.numpy(), rate, args.subtype)
            except CliError as error:
                _fail(outcome, bar, job, error)
                continue
            outcome.done += 1
            bar.update(1)
            _log(args, f"{job.source} -> {job.target}: {len(wave) / rate:.2f} s at {rate} Hz | decode {seconds:.2f} s "
                       f"({args.steps or config.num_inference_steps} {args.sampler} steps, seed {args.seed})")

    return _run_jobs(args, jobs, process_group)


def cmd_decompress(args: argparse.Namespace) -> int:
    jobs = _jobs_for(args, (".sct",), ".wav")
    return _decode_jobs(args, jobs, _read_sct_item)


def cmd_decode(args: argparse.Namespace) -> int:
    jobs = _jobs_for(args, CODE_SUFFIXES, ".wav")
    return _decode_jobs(args, jobs, _read_code_item)


# ------------------------------------------------------------------------------------------ info
def cmd_info(args: argparse.Namespace) -> int:
    """Print each `.sct` header and check its payload; no model is loaded."""
    from .sct_format import HEADER_SIZE, SctFormatError, read_sct

    notes: List[str] = []
    paths = [path for pattern in args.inputs for path, _ in expand(pattern, (".sct",), notes)]
    for note in notes:
        _note(args, note)
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
        raise _Reported()
    return 0


# ------------------------------------------------------------------------------------------ roundtrip
def cmd_roundtrip(args: argparse.Namespace) -> int:
    import numpy as np

    from .atomic_files import atomic_write

    output = Path(args.output)
    codes_path = Path(args.codes) if args.codes else output.with_suffix(".codes.npy")
    # Everything that can be refused is refused here, before the model is loaded and the audio encoded.
    _check_audio_output(output, args.subtype)
    outputs = [("output", output), ("codes file", codes_path)]
    refuse_overwriting([Path(args.input)], outputs)
    _prepare_outputs(args, outputs)
    audio, sampling_rate = _read_audio(Path(args.input), args.max_duration)
    codec, feature_extractor = load_codec(args.model, args.tiny, args.device)
    codec = _set_decoder_dtype(codec, args)
    config = codec.config
    try:
        inputs = _with_resampler(feature_extractor, args)(audio, sampling_rate=sampling_rate, return_tensors="pt")
    except ValueError as error:
        raise CliError(f"{args.input}: {error}") from error
    inputs = {k: v.to(codec.device) for k, v in inputs.items()}
    duration = audio.shape[-1] / sampling_rate

    start = time.perf_counter()
    encoded = codec.encode(**inputs, max_batch_size=args.batch_size)
    encode_seconds = time.perf_counter() - start
    frames = int(encoded.audio_codes_lengths[0])
    codes = encoded.audio_codes[0, :, :frames].cpu().numpy()

    start = time.perf_counter()
    decoded = codec.decode(
        encoded.audio_codes,
        audio_codes_lengths=encoded.audio_codes_lengths,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        sampler=args.sampler,
        seed=[args.seed],
        max_batch_size=args.batch_size,
        progress=not args.quiet,
        num_samples=inputs["num_samples"],  # the reconstruction has the input's duration
    )
    decode_seconds = time.perf_counter() - start
    wave = decoded.audio_values[0, 0, : int(decoded.audio_values_lengths[0])].cpu().numpy()

    def save_codes(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.save(handle, codes)

    try:
        atomic_write(codes_path, save_codes)
    except OSError as error:
        raise _write_failure(codes_path, error) from error
    try:
        _write_audio(output, wave, config.sampling_rate, args.subtype)
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
        )
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        raise CliError(str(error)) from error
    if not args.quiet:
        print(f"converted token_rate={args.token_rate}, vocab={args.semantic_vocab_size} -> {out} "
              f"in {time.perf_counter() - start:.1f} s")
    return 0


# ------------------------------------------------------------------------------------------ parser
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, 2**63), got {value}")
    return value


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0 = no limit), got {text}")
    return value


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="converted model folder or Hub id")
    parser.add_argument("--tiny", action="store_true", help="random tiny model (smoke tests only: outputs noise)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--batch-size", type=_positive_int, default=8,
                        help="files per model call, and at most this many 10.24 s windows per network call "
                             "(bounds memory; default 8)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summaries (errors still print)")


def _audio_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resampler", choices=["reference", "soxr"], default=None,
                        help="how non-16 kHz input is resampled: reference (exactly the original's, the default) or "
                             "soxr (faster; needed for rates such as 7919 Hz that share no factor with 16 kHz)")
    parser.add_argument("--max-duration", type=_duration, default=DEFAULT_MAX_DURATION, metavar="SECONDS",
                        help=f"refuse longer inputs before reading them (default {DEFAULT_MAX_DURATION:g}; 0 = no limit)")


class _LazyChoices(Sequence[str]):
    """argparse `choices` read on first use: the sampler names live next to diffusers, which building the parser
    (e.g. for `info`) must not import. argparse only looks at them to check a given value or print help."""

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self._load = load
        self._values: Optional[Tuple[str, ...]] = None

    def _get(self) -> Tuple[str, ...]:
        if self._values is None:
            self._values = tuple(self._load())
        return self._values

    def __getitem__(self, index: Any) -> Any:
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())

    def __contains__(self, value: object) -> bool:
        return value in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())


def _sampler_names() -> Sequence[str]:
    from .modeling_semanticodec_decoder import SAMPLERS

    return SAMPLERS


def _decoder_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=_positive_int, default=None, help="diffusion steps (default: the model's, 50)")
    parser.add_argument("--sampler", default="ddim", choices=_LazyChoices(_sampler_names), metavar="SAMPLER",
                        help="%(choices)s: ddim (the original) or a faster solver such as dpmsolver++ (use 10-20 "
                             "steps)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (default 2.0)")
    parser.add_argument("--decoder-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="precision of the decoder's networks: float32 (the original's, default) or bfloat16 "
                             "(2-3x faster on CPUs with AMX and recent GPUs; close to, not equal to, float32); "
                             "float16 on GPUs. The codes never change: the encoder stays float32")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the stochastic decoder; every file is decoded with it as if alone (default 0)")
    parser.add_argument("--subtype", default="PCM_16",
                        help="soundfile subtype of written audio: PCM_16 (default), PCM_24, FLOAT, ... (checked "
                             "against the output format before any work)")


def _sub(commands, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help_text, description=description, epilog=EXAMPLES,
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_continue(commands) -> None:
    """`continue` comes from the optional audio-LM toolkit; without it (or if it is broken) it is just absent."""
    try:
        from .lm.generate import add_continue_arguments, run_continue
    except Exception:  # ImportError, or a half-installed toolkit: the codec commands must keep working
        return
    parser = _sub(commands, "continue", "continue an audio prompt with an audio language model (lm toolkit)",
                  "Continue an audio prompt with an audio language model trained on SemantiCodec tokens.")
    add_continue_arguments(parser)
    parser.set_defaults(func=run_continue)


BUILTIN_COMMANDS = ("compress", "decompress", "encode", "decode", "info", "roundtrip", "convert")


def build_parser(include_continue: bool = True) -> argparse.ArgumentParser:
    """The command-line parser; without `include_continue` the optional `continue` command (which imports the LM
    toolkit, torch and more) is left out, so that light commands such as `info` start fast."""
    parser = argparse.ArgumentParser(
        prog="semanticodec-hf",
        description="SemantiCodec as Hugging Face software: compress audio to .sct files at 0.31-1.40 kbps and back, "
                    "export codes, convert official checkpoints.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inputs_help = "input files, folders (searched recursively) or quoted glob patterns; the last argument is OUTPUT"
    output_help = ("output file for one input file; otherwise an output folder (created; names keep sub-folder "
                   "paths with a new suffix)")

    compress = _sub(commands, "compress", "audio files -> .sct files",
                    "Encode audio (any format soundfile reads, any rate, any channels) to compact .sct files.")
    compress.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs_help)
    compress.add_argument("output", metavar="OUTPUT", help=output_help)
    _model_options(compress)
    _audio_input_options(compress)
    compress.set_defaults(func=cmd_compress)

    decompress = _sub(commands, "decompress", ".sct files -> audio files",
                      "Decode .sct files to audio (16 kHz by default, trimmed to the input's length).")
    decompress.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs_help)
    decompress.add_argument("output", metavar="OUTPUT", help=output_help)
    _model_options(decompress)
    _decoder_options(decompress)
    decompress.add_argument("--original-rate", action="store_true",
                            help="resample the output to the input's original sampling rate (from the header)")
    decompress.set_defaults(func=cmd_decompress)

    encode = _sub(commands, "encode", "audio files -> codes (.npy or .pt)",
                  "Encode audio to codes: .npy holds the (2, frames) int64 array (row 0 semantic, row 1 acoustic); "
                  ".pt a dict with 'audio_codes' and the variant, num_samples and original_sampling_rate.")
    encode.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs_help)
    encode.add_argument("output", metavar="OUTPUT", help=output_help)
    encode.add_argument("--format", choices=["npy", "pt"], default="npy", help="file type in folder mode (default npy)")
    _model_options(encode)
    _audio_input_options(encode)
    encode.set_defaults(func=cmd_encode)

    decode = _sub(commands, "decode", "codes (.npy, .pt or .sct) -> audio files",
                  "Decode codes to 16 kHz audio. .npy codes carry no length, so they decode to the original's "
                  "length (rounded up to 0.16 s); .pt files from `encode` and .sct files are trimmed to the input's.")
    decode.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs_help)
    decode.add_argument("output", metavar="OUTPUT", help=output_help)
    _model_options(decode)
    _decoder_options(decode)
    decode.add_argument("--original-rate", action="store_true",
                        help="resample to the input's original rate when the file records it (.pt, .sct)")
    decode.set_defaults(func=cmd_decode)

    info = _sub(commands, "info", "show and check .sct headers (no model needed)",
                "Print the header of .sct files (variant, frames, duration, sizes, bitrate) and verify the checksum.")
    info.add_argument("inputs", nargs="+", metavar="INPUT", help=".sct files, folders or quoted glob patterns")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=cmd_info)

    roundtrip = _sub(commands, "roundtrip", "encode an audio file to tokens and write its reconstruction",
                     "Encode one audio file, save its codes (.npy) and write the 16 kHz reconstruction.")
    roundtrip.add_argument("input", help="audio file (any format soundfile reads, any sampling rate)")
    roundtrip.add_argument("output", help="reconstructed 16 kHz wav")
    roundtrip.add_argument("--codes", help="where to save the codes (.npy, shape (2, frames)); default OUTPUT.codes.npy")
    _model_options(roundtrip)
    _audio_input_options(roundtrip)
    _decoder_options(roundtrip)
    roundtrip.set_defaults(func=cmd_roundtrip)

    convert = _sub(commands, "convert", "convert the official checkpoints of one variant",
                   "Convert the official SemantiCodec checkpoints of one variant to a save_pretrained folder.")
    convert.add_argument("--token-rate", type=int, required=True, choices=[25, 50, 100])
    convert.add_argument("--semantic-vocab-size", type=int, required=True, choices=[4096, 8192, 16384, 32768])
    convert.add_argument("--output", required=True, help="folder to write (config, safetensors, model card)")
    convert.add_argument("--checkpoint-dir", help="local copy of the official files; default: download from the Hub")
    convert.add_argument("--cache-dir", help="huggingface_hub cache for downloads")
    convert.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub repo")
    convert.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    convert.add_argument("--quiet", "-q", action="store_true")
    convert.set_defaults(func=cmd_convert)

    if include_continue:
        _add_continue(commands)
    return parser


def _command_name(argv: Sequence[str]) -> Optional[str]:
    """The command named in `argv` (the first argument that is not an option), if any."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: the same clean-up as for Ctrl-C runs (temporary files removed)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


@contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """Turn SIGTERM (what `kill`, systemd, docker and batch schedulers send) into `_Terminated` while a command
    runs, so that it leaves no temporary file and exits 143. A parent that made us ignore SIGTERM is obeyed;
    signal handlers can only be set from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 usage/input error, 1 unexpected error, 130 interrupted,
    143 terminated by SIGTERM)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(include_continue=_command_name(argv) not in BUILTIN_COMMANDS)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help (0) or a usage error (2), already printed by argparse
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    try:
        with _sigterm_as_exception():
            return int(args.func(args) or 0)
    except _Reported:
        return 2
    except CliError as error:
        print(f"semanticodec-hf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except _Terminated:
        print(f"semanticodec-hf {args.command}: terminated (SIGTERM); no partial output was left.", file=sys.stderr)
        return 128 + int(signal.SIGTERM)
    except KeyboardInterrupt:
        print(f"semanticodec-hf {args.command}: interrupted; no partial output was left.", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(
            f"semanticodec-hf {args.command}: unexpected error (this is a bug; please report it with the traceback "
            "above).",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

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
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

# The commands live in their own modules (torch-free at import): job resolution in `cli_jobs`, the job runner
# and model loading in `cli_runner`, audio and code files in `cli_audio_io` / `code_files`, the command bodies in
# `cli_codec_commands`, shared options in `cli_options`. This module is argparse, dispatch and exit codes.
from .cli_codec_commands import (cmd_compress, cmd_convert, cmd_decode, cmd_decompress,
                                 cmd_encode, cmd_info, cmd_roundtrip)
from .cli_jobs import CliError
from .cli_options import audio_input_options, decoder_options, model_options
from .cpu_threads import add_threads_option, use_threads
from .cli_runner import Reported, load_codec
from .code_files import PT_FORMAT_TAG

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

# PT_FORMAT_TAG and load_codec are re-exported for scripts that import them from here.
__all__ = ["PT_FORMAT_TAG", "build_parser", "load_codec", "main"]


def _sub(commands, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help_text, description=description, epilog=EXAMPLES,
                               formatter_class=argparse.RawDescriptionHelpFormatter)


COMMAND_ENTRY_POINTS = "semanticodec_hf.commands"  # where other packages register sub-commands


def _add_registered_commands(commands) -> None:
    """Sub-commands registered by other installed code under the `semanticodec_hf.commands` entry-point group: the
    audio-LM toolkit registers `continue` there (setup.py), so this package never imports the toolkit. Each entry
    point names a function `register(add_command)`, where `add_command(name, help, description)` returns the new
    sub-parser. One that fails to load (a half-installed toolkit) is left out: the codec commands keep working."""
    from importlib.metadata import entry_points

    def add_command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return _sub(commands, name, help_text, description)

    for entry in entry_points(group=COMMAND_ENTRY_POINTS):
        try:
            register = entry.load()
        except Exception:  # ImportError, or a broken plugin: it is simply absent
            continue
        register(add_command)


BUILTIN_COMMANDS = ("compress", "decompress", "encode", "decode", "info", "roundtrip", "convert")


def build_parser(include_registered: bool = True) -> argparse.ArgumentParser:
    """The command-line parser; without `include_registered` the commands other packages register (the LM
    toolkit's `continue`, which imports torch and more) are left out, so that light commands such as `info` start
    fast."""
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
    model_options(compress)
    audio_input_options(compress)
    compress.set_defaults(func=cmd_compress)

    decompress = _sub(commands, "decompress", ".sct files -> audio files",
                      "Decode .sct files to audio (16 kHz by default, trimmed to the input's length).")
    decompress.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs_help)
    decompress.add_argument("output", metavar="OUTPUT", help=output_help)
    model_options(decompress)
    decoder_options(decompress)
    decompress.add_argument("--original-rate", action="store_true",
                            help="resample the output to the input's original sampling rate (from the header)")
    decompress.set_defaults(func=cmd_decompress)

    encode = _sub(commands, "encode", "audio files -> codes (.npy or .pt)",
                  "Encode audio to codes: .npy holds the (2, frames) int64 array (row 0 semantic, row 1 acoustic); "
                  ".pt a dict with 'audio_codes' and the variant, num_samples and original_sampling_rate.")
    encode.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs_help)
    encode.add_argument("output", metavar="OUTPUT", help=output_help)
    encode.add_argument("--format", choices=["npy", "pt"], default="npy", help="file type in folder mode (default npy)")
    model_options(encode)
    audio_input_options(encode)
    encode.set_defaults(func=cmd_encode)

    decode = _sub(commands, "decode", "codes (.npy, .pt or .sct) -> audio files",
                  "Decode codes to 16 kHz audio. .npy codes carry no length, so they decode to the original's "
                  "length (rounded up to 0.16 s); .pt files from `encode` and .sct files are trimmed to the input's.")
    decode.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs_help)
    decode.add_argument("output", metavar="OUTPUT", help=output_help)
    model_options(decode)
    decoder_options(decode)
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
    model_options(roundtrip)
    audio_input_options(roundtrip)
    decoder_options(roundtrip)
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
    convert.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary (errors still print)")
    add_threads_option(convert)
    convert.set_defaults(func=cmd_convert)

    if include_registered:
        _add_registered_commands(commands)
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
    parser = build_parser(include_registered=_command_name(argv) not in BUILTIN_COMMANDS)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help (0) or a usage error (2), already printed by argparse
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    try:
        if hasattr(args, "threads"):
            use_threads(args.threads)  # every command that runs torch has --threads (default: the usable CPUs)
        with _sigterm_as_exception():
            return int(args.func(args) or 0)
    except Reported:
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

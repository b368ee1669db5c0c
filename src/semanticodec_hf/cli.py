"""`semanticodec-hf` command line: convert official checkpoints, and round-trip audio through the codec."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

EXAMPLES = """examples:
  semanticodec-hf convert --token-rate 100 --semantic-vocab-size 8192 --output semanticodec-100tps-8192
  semanticodec-hf convert --token-rate 50 --semantic-vocab-size 16384 --checkpoint-dir ./SemantiCodec --output out/
  semanticodec-hf roundtrip speech.wav speech_rec.wav --model semanticodec-100tps-8192
  semanticodec-hf roundtrip speech.wav noise.wav --tiny --steps 5   # random tiny model: smoke test only
"""


class CliError(Exception):
    """An error the user can fix; printed without a traceback, exit code 2."""


def _load_audio(path: Path):
    import soundfile as sf

    if not path.is_file():
        raise CliError(f"input file {path} does not exist.")
    try:
        audio, sampling_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise CliError(f"cannot read {path} as audio ({error}); is it a corrupt or unsupported file?") from error
    return audio.T, int(sampling_rate)  # channels-first, as the feature extractor expects


def load_codec(model: Optional[str], tiny: bool, device: str = "cpu"):
    """The codec and its feature extractor; never falls back to random weights unless --tiny is given."""
    from .configuration_semanticodec import SemantiCodecConfig
    from .feature_extraction_semanticodec import SemantiCodecFeatureExtractor
    from .modeling_semanticodec import SemantiCodecModel

    if tiny:
        print(
            "WARNING: --tiny builds a small RANDOMLY INITIALISED model. Its output is noise; use it only to "
            "check that the pipeline runs.",
            file=sys.stderr,
        )
        import torch

        torch.manual_seed(0)
        return SemantiCodecModel(SemantiCodecConfig.tiny()).to(device).eval(), SemantiCodecFeatureExtractor()
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


def cmd_roundtrip(args: argparse.Namespace) -> int:
    import numpy as np
    import soundfile as sf

    audio, sampling_rate = _load_audio(Path(args.input))
    codec, feature_extractor = load_codec(args.model, args.tiny, args.device)
    config = codec.config
    try:
        inputs = feature_extractor(audio, sampling_rate=sampling_rate, return_tensors="pt")
    except ValueError as error:
        raise CliError(f"{args.input}: {error}") from error
    inputs = {k: v.to(args.device) for k, v in inputs.items()}
    duration = audio.shape[-1] / sampling_rate

    start = time.perf_counter()
    encoded = codec.encode(**inputs, max_batch_size=args.batch_size)
    encode_seconds = time.perf_counter() - start
    frames = int(encoded.audio_codes_lengths[0])
    codes = encoded.audio_codes[0, :, :frames].cpu().numpy()
    codes_path = Path(args.codes) if args.codes else Path(args.output).with_suffix(".codes.npy")
    np.save(codes_path, codes)

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
    )
    decode_seconds = time.perf_counter() - start
    wave = decoded.audio_values[0, 0, : int(decoded.audio_values_lengths[0])].cpu().numpy()
    sf.write(args.output, wave, config.sampling_rate)

    if not args.quiet:
        print(
            f"{args.input}: {duration:.2f} s -> {frames} frames ({2 * frames} tokens) | "
            f"{config.tokens_per_second:g} tokens/s, {config.bitrate:g} bit/s | "
            f"encode {encode_seconds:.1f} s, decode {decode_seconds:.1f} s "
            f"({args.steps or config.num_inference_steps} {args.sampler} steps) | "
            f"codes -> {codes_path}, audio -> {args.output} ({len(wave) / config.sampling_rate:.2f} s)"
        )
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semanticodec-hf",
        description="SemantiCodec as Hugging Face software: convert official checkpoints, encode and decode audio.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    roundtrip = commands.add_parser("roundtrip", help="encode an audio file to tokens and write its reconstruction",
                                    epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    roundtrip.add_argument("input", help="audio file (any format soundfile reads, any sampling rate)")
    roundtrip.add_argument("output", help="reconstructed 16 kHz wav")
    roundtrip.add_argument("--model", help="converted model folder or Hub id")
    roundtrip.add_argument("--tiny", action="store_true", help="random tiny model (smoke tests only: outputs noise)")
    roundtrip.add_argument("--codes", help="where to save the codes (.npy, shape (2, frames)); default OUTPUT.codes.npy")
    roundtrip.add_argument("--steps", type=int, default=None, help="diffusion steps (default: the model's, 50)")
    roundtrip.add_argument("--sampler", default="ddim", help="ddim (the original) or dpmsolver++ (faster)")
    roundtrip.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (default 2.0)")
    roundtrip.add_argument("--seed", type=int, default=0, help="seed of the stochastic decoder")
    roundtrip.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    roundtrip.add_argument("--batch-size", type=int, default=None, help="max windows per model call (bounds memory)")
    roundtrip.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    roundtrip.set_defaults(func=cmd_roundtrip)

    convert = commands.add_parser("convert", help="convert the official checkpoints of one variant",
                                  epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("--token-rate", type=int, required=True, choices=[25, 50, 100])
    convert.add_argument("--semantic-vocab-size", type=int, required=True, choices=[4096, 8192, 16384, 32768])
    convert.add_argument("--output", required=True, help="folder to write (config, safetensors, model card)")
    convert.add_argument("--checkpoint-dir", help="local copy of the official files; default: download from the Hub")
    convert.add_argument("--cache-dir", help="huggingface_hub cache for downloads")
    convert.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub repo")
    convert.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    convert.add_argument("--quiet", action="store_true")
    convert.set_defaults(func=cmd_convert)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as error:
        print(f"semanticodec-hf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

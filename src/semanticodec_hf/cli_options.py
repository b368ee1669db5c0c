"""Shared option groups and argument types of the `semanticodec-hf` commands (torch-free: the sampler names are
read lazily)."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

from .cpu_threads import add_threads_option, positive_int_argument

DEFAULT_MAX_DURATION = 3600.0  # seconds; see --max-duration


_positive_int = positive_int_argument("integer")  # --batch-size, --steps


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


def model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="converted model folder or Hub id")
    parser.add_argument("--tiny", action="store_true", help="random tiny model (smoke tests only: outputs noise)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--batch-size", type=_positive_int, default=8,
                        help="files per model call, and at most this many 10.24 s windows per network call "
                             "(bounds memory; default 8)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summaries (errors still print)")
    add_threads_option(parser)


def audio_input_options(parser: argparse.ArgumentParser) -> None:
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


def decoder_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=_positive_int, default=None, help="diffusion steps (default: the model's, 50)")
    parser.add_argument("--sampler", default="ddim", choices=_LazyChoices(_sampler_names), metavar="SAMPLER",
                        help="%(choices)s: ddim (the original) or a faster solver such as dpmsolver++ (use 10-20 "
                             "steps)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (default 2.0)")
    parser.add_argument("--decoder-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="precision of the decoder's networks: float32 (the original's, default) or bfloat16 "
                             "(faster on CPUs with native bfloat16 and on recent GPUs; close to, not equal to, "
                             "float32); "
                             "float16 on GPUs. The codes never change: the encoder stays float32")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the stochastic decoder; every file is decoded with it as if alone (default 0)")
    parser.add_argument("--subtype", default="PCM_16",
                        help="soundfile subtype of written audio: PCM_16 (default), PCM_24, FLOAT, ... (checked "
                             "against the output format before any work)")

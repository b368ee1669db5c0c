"""The codec side of the LM toolkit's commands, shared by `continue` (lm/generate.py) and `decode-semantic`
(lm/acoustic_stage.py): decoder settings checked before any LM work, and the random tiny codec of `--tiny`."""

from __future__ import annotations

import sys
from typing import Any, Optional

from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer


def check_decode_settings(codec: Any, num_inference_steps: Optional[int], sampler: Optional[str]) -> None:
    """Refuse decoder settings the codec would refuse, before minutes of LM generation are spent
    (`SemantiCodecModel.check_decode_settings`, in the command line's words). `None` means the codec's default."""
    try:
        codec.check_decode_settings(num_inference_steps, sampler)
    except ValueError as error:
        message = str(error).replace("num_inference_steps=", "--steps ").replace("num_inference_steps", "--steps")
        raise ValueError(message) from None


def tiny_codec_tokenizer():
    """The random tiny codec behind `--tiny` (seed 0: the one `tokenize_dataset.py --tiny` uses), loudly warned."""
    print("WARNING: --tiny uses a small RANDOMLY INITIALISED codec. Its output is noise; use it only to check that "
          "the pipeline runs (e.g. with an LM from recipes/lm_tiny_cpu.yaml).", file=sys.stderr)
    return SemantiCodecAudioTokenizer.tiny(seed=0)

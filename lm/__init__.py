"""Audio language models on SemantiCodec tokens: training (`semanticodec_hf.lm.train`) and generation to waveform
(`semanticodec_hf.lm.generate`). The toolkit lives in the repository's top-level lm/ folder and installs as
`semanticodec_hf.lm`:

    from semanticodec_hf.lm import AudioContinuation, PatternLogitsProcessor, AudioLMDataCollator, load_recipe
"""

from .config import LMRecipe, load_recipe
from .data import AudioLMDataCollator, BlockBuilder, pack_sequences, split_sequences
from .generate import AudioContinuation
from .pattern_logits import PatternLogitsProcessor

__all__ = [
    "AudioContinuation",
    "AudioLMDataCollator",
    "BlockBuilder",
    "LMRecipe",
    "PatternLogitsProcessor",
    "load_recipe",
    "pack_sequences",
    "split_sequences",
]

"""Audio language models on SemantiCodec tokens: training (`lm.train`) and generation to waveform (`lm.generate`).

    from lm import AudioContinuation, PatternLogitsProcessor, AudioLMDataCollator, load_recipe
"""

from .config import LMRecipe, load_recipe
from .data import AudioLMDataCollator, BlockBuilder, pack_sequences, split_sequences
from .generate import AudioContinuation, PatternLogitsProcessor

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

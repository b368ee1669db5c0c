"""Audio language models on SemantiCodec tokens: training (`semanticodec_hf.lm.train`), generation to waveform
(`semanticodec_hf.lm.generate`) and evaluation (`semanticodec_hf.lm.evaluate`). The toolkit lives in the repository's top-level lm/ folder and installs as
`semanticodec_hf.lm`:

    from semanticodec_hf.lm import AudioContinuation, PatternLogitsProcessor, AudioLMDataCollator, load_recipe
"""

from .acoustic_stage import AcousticStage, ForcedSemanticLogitsProcessor
from .config import LMRecipe, load_recipe
from .data import AudioLMDataCollator, BlockBuilder, pack_sequences, split_sequences
from .evaluate import (
    auto_bleu,
    distinct_n,
    generate_continuations,
    heldout_loss,
    likelihood_probe_audio,
    likelihood_probe_ids,
    load_lm,
    unigram_entropy,
    write_lm_report,
)
from .generate import AudioContinuation
from .pattern_logits import PatternLogitsProcessor, SemanticNoRepeatNGramLogitsProcessor

__all__ = [
    "AcousticStage",
    "AudioContinuation",
    "AudioLMDataCollator",
    "BlockBuilder",
    "ForcedSemanticLogitsProcessor",
    "LMRecipe",
    "PatternLogitsProcessor",
    "SemanticNoRepeatNGramLogitsProcessor",
    "auto_bleu",
    "distinct_n",
    "generate_continuations",
    "heldout_loss",
    "likelihood_probe_audio",
    "likelihood_probe_ids",
    "load_lm",
    "load_recipe",
    "pack_sequences",
    "split_sequences",
    "unigram_entropy",
    "write_lm_report",
]

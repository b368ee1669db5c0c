"""semanticodec-hf: SemantiCodec as Hugging Face software."""

from .configuration_semanticodec import (
    PUBLISHED_SEMANTIC_VOCAB_SIZES,
    PUBLISHED_TOKEN_RATES,
    SemantiCodecConfig,
)

__all__ = ["SemantiCodecConfig", "PUBLISHED_TOKEN_RATES", "PUBLISHED_SEMANTIC_VOCAB_SIZES"]

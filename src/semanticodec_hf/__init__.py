"""semanticodec-hf: SemantiCodec as Hugging Face software.

Importing the package registers the `semanticodec` model type with `AutoConfig`,
`AutoFeatureExtractor`, `AutoModel` and `AutoModelForAudioTokenization`.
"""

from .configuration_semanticodec import (
    PUBLISHED_SEMANTIC_VOCAB_SIZES,
    PUBLISHED_TOKEN_RATES,
    SemantiCodecConfig,
)
from .feature_extraction_semanticodec import SemantiCodecFeatureExtractor
from .modeling_semanticodec import (
    SemantiCodecDecoderOutput,
    SemantiCodecEncoderOutput,
    SemantiCodecModel,
    SemantiCodecOutput,
    SemantiCodecPreTrainedModel,
)
from .audio_token_layout import SemantiCodecVocabularyLayout
from .tokenization_semanticodec import SemantiCodecAudioTokenizer
from .datasets_utils import SemantiCodecTokenizeFunction
from .acoustic_bpe import AcousticBPE  # sentencepiece is imported only when a BPE model is trained or loaded
from .metrics import CodecMetrics  # pesq/pystoi/matplotlib are imported only when used

__version__ = "0.1.0.dev0"


def register_auto_classes() -> None:
    """Make the transformers Auto classes resolve `model_type="semanticodec"` (idempotent)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioTokenization

    AutoConfig.register(SemantiCodecConfig.model_type, SemantiCodecConfig, exist_ok=True)
    AutoFeatureExtractor.register(SemantiCodecConfig, SemantiCodecFeatureExtractor, exist_ok=True)
    AutoModel.register(SemantiCodecConfig, SemantiCodecModel, exist_ok=True)
    AutoModelForAudioTokenization.register(SemantiCodecConfig, SemantiCodecModel, exist_ok=True)


register_auto_classes()

__all__ = [
    "PUBLISHED_SEMANTIC_VOCAB_SIZES",
    "PUBLISHED_TOKEN_RATES",
    "AcousticBPE",
    "CodecMetrics",
    "SemantiCodecAudioTokenizer",
    "SemantiCodecTokenizeFunction",
    "SemantiCodecVocabularyLayout",
    "SemantiCodecConfig",
    "SemantiCodecDecoderOutput",
    "SemantiCodecEncoderOutput",
    "SemantiCodecFeatureExtractor",
    "SemantiCodecModel",
    "SemantiCodecOutput",
    "SemantiCodecPreTrainedModel",
    "register_auto_classes",
]

"""semanticodec-hf: SemantiCodec as Hugging Face software.

Importing the package registers the `semanticodec` model type with `AutoConfig`, `AutoFeatureExtractor`,
`AutoModel`, `AutoModelForAudioTokenization` and `AutoProcessor`.

The package imports lazily: its classes come from their modules on first use (`from semanticodec_hf import
SemantiCodecModel` works as always), so that `semanticodec-hf info` and other light paths do not pay seconds and
hundreds of MB for torch, transformers and diffusers. The Auto classes are registered at once if transformers is
already imported, otherwise right after it is (see `auto_registration`), so `import semanticodec_hf` followed by
`AutoModel.from_pretrained(...)` keeps working.
"""

from __future__ import annotations

import importlib
TYPE_CHECKING = False  # `typing` is not imported at runtime: the startup hook imports this package

from .auto_registration import AUTO_REGISTRATION, install, register_auto_classes

# public name -> submodule that defines it (imported on first access, see `__getattr__`)
_EXPORTS = {
    "PUBLISHED_SEMANTIC_VOCAB_SIZES": "configuration_semanticodec",
    "PUBLISHED_TOKEN_RATES": "configuration_semanticodec",
    "SemantiCodecConfig": "configuration_semanticodec",
    "SemantiCodecFeatureExtractor": "feature_extraction_semanticodec",
    "SemantiCodecDecoderOutput": "modeling_semanticodec",
    "SemantiCodecEncoderOutput": "modeling_semanticodec",
    "SemantiCodecModel": "modeling_semanticodec",
    "SemantiCodecOutput": "modeling_semanticodec",
    "SemantiCodecPreTrainedModel": "modeling_semanticodec",
    "SemantiCodecVocabularyLayout": "audio_token_layout",
    "SemantiCodecAudioTokenizer": "tokenization_semanticodec",
    "SemantiCodecProcessor": "processing_semanticodec",
    "SemantiCodecTokenizeFunction": "datasets_utils",
    "JointVocabulary": "joint_vocabulary",  # audio ids inside a text tokenizer's vocabulary
    "extend_text_tokenizer": "joint_vocabulary",
    "AcousticBPE": "acoustic_bpe",  # sentencepiece is imported only when a BPE model is trained or loaded
    "CodecMetrics": "metrics",  # pesq/pystoi/matplotlib are imported only when used
    "load_codec_metric": "metrics",  # the same metrics as an `evaluate` module
}

if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from typing import Any, List

    from .acoustic_bpe import AcousticBPE
    from .audio_token_layout import SemantiCodecVocabularyLayout
    from .configuration_semanticodec import PUBLISHED_SEMANTIC_VOCAB_SIZES, PUBLISHED_TOKEN_RATES, SemantiCodecConfig
    from .datasets_utils import SemantiCodecTokenizeFunction
    from .feature_extraction_semanticodec import SemantiCodecFeatureExtractor
    from .joint_vocabulary import JointVocabulary, extend_text_tokenizer
    from .metrics import CodecMetrics, load_codec_metric
    from .modeling_semanticodec import (
        SemantiCodecDecoderOutput,
        SemantiCodecEncoderOutput,
        SemantiCodecModel,
        SemantiCodecOutput,
        SemantiCodecPreTrainedModel,
    )
    from .processing_semanticodec import SemantiCodecProcessor
    from .tokenization_semanticodec import SemantiCodecAudioTokenizer


def __getattr__(name: str) -> Any:
    """Import a public class from its module on first access (PEP 562), then keep it as a plain attribute."""
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    AUTO_REGISTRATION.try_register()
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0.dev0"

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
    "SemantiCodecProcessor",
    "load_codec_metric",
    "register_auto_classes",
]

install()

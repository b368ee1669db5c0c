"""Audio tokenizer for language models on SemantiCodec tokens.

SemantiCodec gives two id streams per frame (semantic, acoustic); a language model wants one flat vocabulary and
one sequence per clip. `SemantiCodecAudioTokenizer` does audio -> codes (batched codec calls) -> ids and back,
with the layout and patterns of `audio_token_layout` (default `interleaved`: s0 a0 s1 a1 ...).

A frame is not a uniform time step: the codec's frames are time-major over (time patch, frequency group),
8 / 4 / 4 frames per 0.16 / 0.16 / 0.32 s at 100 / 50 / 25 tokens/s (see `frames_per_time_step`), and a
clip's last time step may be partial. Patterns keep the codec's frame order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

import torch
from transformers import BatchEncoding
from transformers.utils import logging

from .audio_token_ids import AudioTokenIds
from .codec_timing import SAMPLING_RATE as _PUBLISHED_SAMPLING_RATE
from .feature_extraction_semanticodec import SemantiCodecFeatureExtractor
from .joint_vocabulary import build_audio_fast_tokenizer
from .audio_token_layout import PATTERNS, SPECIAL_TOKENS, SemantiCodecVocabularyLayout, codes_to_ids, ids_to_codes
from .processing_semanticodec import (  # noqa: F401 (AudioItemError, SHORT_AUDIO_RULES, pad_codes: re-exported)
    SHORT_AUDIO_RULES,
    AudioItemError,
    SemantiCodecProcessor,
    is_batch_of_audio,
    pad_codes,
)

if TYPE_CHECKING:  # the model is imported when first needed: it pulls diffusers, which ids-only use never needs
    from transformers import PreTrainedTokenizerFast

    from .modeling_semanticodec import SemantiCodecModel

logger = logging.get_logger(__name__)

AUDIO_TOKENIZER_CONFIG_NAME = "audio_tokenizer_config.json"
AUDIO_TOKENIZER_FORMAT_VERSION = 1


class SemantiCodecAudioTokenizer(AudioTokenIds):
    r"""
    Audio <-> one flat id sequence per clip, for language models on SemantiCodec tokens.

    Wraps a [`SemantiCodecModel`] and its [`SemantiCodecFeatureExtractor`]; either may be `None` for ids-only
    work (`codes_to_ids`, `decode_ids`, `split_clips`, layout queries) - then build it with `layout=`.

    Args:
        model: the codec (only needed for `__call__` and `ids_to_audio`).
        feature_extractor: its feature extractor (default: a fresh `SemantiCodecFeatureExtractor`).
        pattern (`str`): `"interleaved"` (default), `"semantic_then_acoustic"` or `"semantic_only"`.
        layout: the flat vocabulary; default derived from `model.config`.
        add_special_tokens (`bool`): wrap each clip as `<bos> ... <eos>` (default True).
        max_windows_per_batch (`int`): bound on 10.24 s windows per codec call; clips are grouped by length so
            short clips batch together and one long clip does not pad the others.
        short_audio (`str`): `"raise"` (default) on clips shorter than 0.16 s, or `"pad"` them with zeros.
        codec_name_or_path, codec_revision: where the codec came from; what `save_pretrained(...,
            save_codec=False)` records.
    """

    def __init__(
        self,
        model: Optional["SemantiCodecModel"] = None,
        feature_extractor: Optional["SemantiCodecFeatureExtractor"] = None,
        pattern: str = "interleaved",
        layout: Optional[SemantiCodecVocabularyLayout] = None,
        add_special_tokens: bool = True,
        max_windows_per_batch: int = 32,
        short_audio: str = "raise",
        codec_name_or_path: Optional[str] = None,
        codec_revision: Optional[str] = None,
    ):
        if model is not None:
            model_layout = SemantiCodecVocabularyLayout.from_config(model.config)
            if layout is not None and layout != model_layout:
                raise ValueError(
                    f"layout {layout} does not match the codec (semantic_vocab_size="
                    f"{model.config.semantic_vocab_size}, "
                    f"acoustic_codebook_size={model.config.acoustic_codebook_size})."
                )
            layout = model_layout
            if feature_extractor is None:
                feature_extractor = SemantiCodecFeatureExtractor()
        if layout is None:
            raise ValueError("Pass a codec `model` or an explicit `layout` (for ids-only use).")
        if max_windows_per_batch < 1:
            raise ValueError(f"max_windows_per_batch must be >= 1, got {max_windows_per_batch}.")
        if short_audio not in SHORT_AUDIO_RULES:
            raise ValueError(f"short_audio must be one of {list(SHORT_AUDIO_RULES)}, got {short_audio!r}.")
        super().__init__(layout, pattern=pattern, add_special_tokens=add_special_tokens)
        self.model = model
        self.feature_extractor = feature_extractor
        self.max_windows_per_batch = int(max_windows_per_batch)
        self.short_audio = short_audio
        self.codec_name_or_path = codec_name_or_path
        self.codec_revision = codec_revision

    def __repr__(self) -> str:
        codec = self.model.config.variant_name if self.model is not None else "no codec"
        return (
            f"{type(self).__name__}(pattern={self.pattern!r}, vocab_size={self.vocab_size}, codec={codec}, "
            f"add_special_tokens={self.add_special_tokens})"
        )

    # ------------------------------------------------------------------------------------ properties

    @property
    def sampling_rate(self) -> int:
        """Rate of the waveforms `ids_to_audio` returns."""
        return int(self.model.config.sampling_rate) if self.model is not None else _PUBLISHED_SAMPLING_RATE

    def _require_model(self, what: str) -> "SemantiCodecModel":
        if self.model is None:
            raise ValueError(f"{what} needs the codec; this tokenizer was built without a model (ids-only).")
        return self.model

    @property
    def frame_rate(self) -> float:
        """Frames per second (50 / 25 / 12.5 for the published token rates)."""
        return float(self._require_model("frame_rate").config.frame_rate)

    @property
    def frames_per_time_step(self) -> int:
        """Consecutive frames that share one time step (8 / 4 / 4 at 100 / 50 / 25 tokens/s): frequency groups."""
        config = self._require_model("frames_per_time_step").config
        return config.patch_grid[1] // config.pooling[1]

    @property
    def time_step_seconds(self) -> float:
        """Duration covered by one time step (0.16 / 0.16 / 0.32 s)."""
        config = self._require_model("time_step_seconds").config
        return config.window_seconds / (config.patch_grid[0] // config.pooling[0])

    @property
    def ids_per_second(self) -> float:
        """Audio ids per second of audio in this pattern (special tokens excluded)."""
        return self.frame_rate * self.ids_per_frame

    # ------------------------------------------------------------------------------------ audio -> codes
    @property
    def processor(self) -> SemantiCodecProcessor:
        """The processor of this tokenizer's codec, feature extractor and ids: the layer that runs the audio work
        (built on each access, so that it follows changes to `feature_extractor` and `pattern`)."""
        if self.feature_extractor is None:
            raise ValueError("This tokenizer has no feature extractor (ids-only); build it with a codec model.")
        return SemantiCodecProcessor(self.feature_extractor, self.layout.semantic_vocab_size,
                                     self.layout.acoustic_vocab_size, pattern=self.pattern,
                                     add_special_tokens=self.add_special_tokens)

    def encode_audio(
        self, audio: Any, sampling_rate: Union[int, Sequence[int]]
    ) -> Union[torch.LongTensor, List[torch.LongTensor]]:
        """Audio -> codes `[2, F]` per clip (`SemantiCodecProcessor.encode_audio` with this tokenizer's
        `max_windows_per_batch` and `short_audio`): batched codec calls, each clip gets exactly the codes it
        gets alone. A bad item raises `AudioItemError` naming its index."""
        model = self._require_model("Encoding audio")
        encoded = self.processor.encode_audio(model, audio, sampling_rate, self.max_windows_per_batch,
                                              short_audio=self.short_audio)
        codes = [clip.codes for clip in encoded]
        return codes if is_batch_of_audio(audio) else codes[0]

    def __call__(
        self,
        audio: Any,
        sampling_rate: Union[int, Sequence[int], None] = None,
        return_tensors: Optional[str] = None,
        padding_side: str = "right",
        add_special_tokens: Optional[bool] = None,
        return_audio_codes: bool = False,
    ) -> BatchEncoding:
        """Audio -> `input_ids` and `attention_mask` (and `num_frames`; `audio_codes` on request).

        Args:
            audio: one item (`[samples]` or `[channels, samples]`, numpy or torch) or a list of items.
            sampling_rate: rate of the audio in Hz (required), or one rate per item.
            return_tensors: `None` for lists (one list for one item, a list per item for a batch), `"pt"` for a
                padded `[batch, length]` LongTensor filled with `<pad>` and a matching `attention_mask`.
            padding_side: `"right"` or `"left"` (for prompts) when `return_tensors="pt"`.
            add_special_tokens: override the tokenizer's `<bos>`/`<eos>` setting.
            return_audio_codes: also return each clip's codes `[2, F]`.
        """
        if sampling_rate is None:
            raise ValueError("`sampling_rate` is required: pass the rate of `audio` in Hz (or one per item).")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}.")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        batched = is_batch_of_audio(audio)
        codes = self.encode_audio(audio if batched else [audio], sampling_rate)
        ids = [self._wrap(codes_to_ids(c, self.layout, self.pattern), add_special_tokens) for c in codes]
        data: Dict[str, Any] = {"num_frames": [int(c.shape[1]) for c in codes]}
        if return_tensors == "pt":
            data.update(self.pad(ids, padding_side=padding_side))
            data["num_frames"] = torch.tensor(data["num_frames"], dtype=torch.long)
        else:
            data["input_ids"] = ids
            data["attention_mask"] = [[1] * len(row) for row in ids]
            if not batched:
                data = {key: value[0] for key, value in data.items()}
        if return_audio_codes:
            data["audio_codes"] = codes if batched else codes[0]
        return BatchEncoding(data)

    # ------------------------------------------------------------------------------------ ids -> audio
    def ids_to_audio(
        self,
        ids: Any,
        attention_mask: Optional[Any] = None,
        num_inference_steps: Optional[int] = None,
        seed: Optional[Union[int, Sequence[int]]] = None,
        **decode_kwargs: Any,
    ) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Ids -> 16 kHz waveform `[samples]` per clip via `model.decode` (one batched call for a batch).

        Decoding samples a diffusion model: pass `seed` for reproducible audio. `semantic_only` ids cannot be
        decoded: the SemantiCodec decoder needs the acoustic ids too.
        """
        model = self._require_model("ids_to_audio")
        if self.pattern == "semantic_only":
            raise ValueError(
                "semantic_only ids cannot be turned into audio: the SemantiCodec decoder is conditioned on both "
                "semantic and acoustic ids. Generate acoustic ids too (e.g. pattern='interleaved')."
            )
        codes = self.decode_ids(ids, attention_mask)
        batched = isinstance(codes, list)
        codes = codes if batched else [codes]
        empty = [i for i, c in enumerate(codes) if c.shape[1] == 0]
        if empty:
            raise ValueError(f"Sequences {empty} hold no audio ids; there is nothing to decode.")
        waves = self.processor.decode_codes(model, codes, seed=seed, num_inference_steps=num_inference_steps,
                                            **decode_kwargs)
        return waves if batched else waves[0]

    # ------------------------------------------------------------------------------------ save / load
    def to_dict(self) -> Dict[str, Any]:
        """Contents of `audio_tokenizer_config.json` (codec location added by `save_pretrained`)."""
        data: Dict[str, Any] = {
            "audio_tokenizer_class": type(self).__name__,
            "format_version": AUDIO_TOKENIZER_FORMAT_VERSION,
            "pattern": self.pattern,
            "add_special_tokens": self.add_special_tokens,
            "special_tokens": {name: self.layout.special_offset + i for i, name in enumerate(SPECIAL_TOKENS)},
            "layout": self.layout.to_dict(),
            "max_windows_per_batch": self.max_windows_per_batch,
            "short_audio": self.short_audio,
        }
        if self.model is not None:
            data["variant"] = self.model.config.variant_name
            data["frames_per_time_step"] = self.frames_per_time_step
            data["time_step_seconds"] = self.time_step_seconds
        return data

    def save_pretrained(self, save_directory: Union[str, os.PathLike], save_codec: bool = True) -> Path:
        """Write `audio_tokenizer_config.json`; with `save_codec` (default) also the codec's model and feature
        extractor, so the folder is self-contained. `save_codec=False` records `codec_name_or_path` instead."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        if save_codec and self.model is not None:
            self.model.save_pretrained(directory)
            # processor_config.json + preprocessor_config.json: the folder also loads with AutoProcessor
            SemantiCodecProcessor.from_codec(self.model, self.feature_extractor, pattern=self.pattern,
                                             add_special_tokens=self.add_special_tokens).save_pretrained(directory)
            data["codec"] = {"location": "this_folder"}
        elif self.codec_name_or_path is not None:
            data["codec"] = {"name_or_path": str(self.codec_name_or_path), "revision": self.codec_revision}
        else:
            if self.model is not None:
                raise ValueError(
                    "save_codec=False needs `codec_name_or_path` (a path or Hub id) to record where the codec lives."
                )
            data["codec"] = None  # ids-only tokenizer
        (directory / AUDIO_TOKENIZER_CONFIG_NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        # tokenizer.json + tokenizer_config.json: the folder (e.g. an LM's) also loads with AutoTokenizer, ids equal
        self.fast_tokenizer().save_pretrained(directory)
        return directory

    def fast_tokenizer(self) -> "PreTrainedTokenizerFast":
        """This vocabulary as a standard `PreTrainedTokenizerFast` (`<|s_12|>`, `<|a_5|>`, `<|audio_bos|>`, ...:
        see `joint_vocabulary`), with the same ids; what `save_pretrained` writes for `AutoTokenizer`."""
        return build_audio_fast_tokenizer(self.layout)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_name_or_path: Union[str, os.PathLike],
        revision: Optional[str] = None,
        pattern: Optional[str] = None,
        load_codec: bool = True,
        device: Union[str, torch.device, None] = None,
        **kwargs: Any,
    ) -> "SemantiCodecAudioTokenizer":
        """Load from a folder (or Hub repo) holding `audio_tokenizer_config.json`, or from a plain converted codec
        folder (then the default layout is used). `pattern` and other constructor kwargs override the saved ones;
        `load_codec=False` gives an ids-only tokenizer without reading any weights."""
        settings = read_audio_tokenizer_settings(pretrained_name_or_path, revision)
        saved = settings["tokenizer_config"] or {}
        saved_options = ("add_special_tokens", "max_windows_per_batch", "short_audio")
        init = {key: saved[key] for key in saved_options if key in saved}
        init.update(kwargs)
        init["pattern"] = pattern or saved.get("pattern", "interleaved")
        layout = SemantiCodecVocabularyLayout.from_dict(saved["layout"]) if "layout" in saved else None
        codec_path, codec_revision = settings["codec_name_or_path"], settings["codec_revision"]
        if not load_codec or codec_path is None:
            return cls(layout=saved_layout(settings), codec_name_or_path=codec_path, codec_revision=codec_revision, **init)
        from .modeling_semanticodec import SemantiCodecModel

        hub_kwargs = {"revision": codec_revision} if codec_revision is not None else {}
        model = SemantiCodecModel.from_pretrained(codec_path, **hub_kwargs).eval()
        if device is not None:
            model = model.to(device)
        feature_extractor = SemantiCodecFeatureExtractor.from_pretrained(codec_path, **hub_kwargs)
        return cls(model, feature_extractor, layout=layout, codec_name_or_path=codec_path,
                   codec_revision=codec_revision, **init)

    # ------------------------------------------------------------------------------------ tiny
    @classmethod
    def tiny(
        cls, seed: int = 0, token_rate: int = 100, semantic_vocab_size: int = 64, **kwargs: Any
    ) -> "SemantiCodecAudioTokenizer":
        """A tokenizer on `SemantiCodecModel.tiny(seed)`: a small RANDOM codec with the real window geometry whose
        ids vary with the audio and whose decoder output is audible noise, for tests and demos only. Never use
        it for anything but plumbing.
        """
        from .modeling_semanticodec import SemantiCodecModel

        logger.warning("Building a tiny RANDOM SemantiCodec (tests/demos only): its tokens mean nothing.")
        model = SemantiCodecModel.tiny(seed=seed, token_rate=token_rate, semantic_vocab_size=semantic_vocab_size)
        return cls(model, SemantiCodecFeatureExtractor(), **kwargs)


# ------------------------------------------------------------------------------------------------ resolution
def saved_layout(settings: Dict[str, Any]) -> SemantiCodecVocabularyLayout:
    """The vocabulary layout of resolved settings (`read_audio_tokenizer_settings`): the one the tokenizer saved,
    else the one of its codec's config.json (the published defaults for keys it lacks)."""
    saved = settings["tokenizer_config"] or {}
    if "layout" in saved:
        return SemantiCodecVocabularyLayout.from_dict(saved["layout"])
    codec_config = settings["codec_config"]
    if not codec_config:
        raise ValueError("Found neither a vocabulary layout nor a codec config.json to derive one from.")
    return SemantiCodecVocabularyLayout(int(codec_config.get("semantic_vocab_size", 8192)),
                                        int(codec_config.get("acoustic_codebook_size", 8192)))


def _read_json_file(
    name_or_path: Union[str, os.PathLike], filename: str, revision: Optional[str]
) -> Optional[Dict[str, Any]]:
    """A small JSON file from a local folder or a Hub repo; None when the folder/repo does not have it."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        path = local / filename
        return json.loads(path.read_text()) if path.is_file() else None
    if local.is_absolute() or str(name_or_path).startswith((".", "~")) or local.exists():
        raise ValueError(f"{name_or_path} is not a folder (expected a saved tokenizer/codec folder or a Hub id).")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(str(name_or_path), filename, revision=revision)).read_text())
    except EntryNotFoundError:
        return None


def read_audio_tokenizer_settings(
    name_or_path: Union[str, os.PathLike], revision: Optional[str] = None
) -> Dict[str, Any]:
    """Resolve a tokenizer/codec location without loading weights.

    Returns `tokenizer_config` (the saved JSON or None), `codec_name_or_path`, `codec_revision` and
    `codec_config` (the codec's config.json dict, or None when the codec is not reachable).
    """
    tokenizer_config = _read_json_file(name_or_path, AUDIO_TOKENIZER_CONFIG_NAME, revision)
    codec = (tokenizer_config or {}).get("codec", {"location": "this_folder"})
    if tokenizer_config is not None and tokenizer_config.get("format_version", 1) > AUDIO_TOKENIZER_FORMAT_VERSION:
        raise ValueError(
            f"{name_or_path} was saved by a newer semanticodec-hf (format {tokenizer_config['format_version']}); "
            "upgrade the package."
        )
    if codec is None:
        codec_path, codec_revision = None, None
    elif codec.get("location") == "this_folder":
        codec_path, codec_revision = str(name_or_path), revision
    else:
        codec_path, codec_revision = codec["name_or_path"], codec.get("revision")
        relative = Path(name_or_path) / codec_path
        if Path(name_or_path).is_dir() and not Path(codec_path).is_absolute() and relative.is_dir():
            codec_path = str(relative)
    codec_config = _read_json_file(codec_path, "config.json", codec_revision) if codec_path is not None else None
    if tokenizer_config is None and codec_config is None:
        raise ValueError(
            f"{name_or_path} holds neither {AUDIO_TOKENIZER_CONFIG_NAME} nor a codec config.json; pass a folder made "
            "by SemantiCodecAudioTokenizer.save_pretrained or a converted SemantiCodec model."
        )
    return {
        "tokenizer_config": tokenizer_config,
        "codec_name_or_path": codec_path,
        "codec_revision": codec_revision,
        "codec_config": codec_config,
    }


__all__ = [
    "AUDIO_TOKENIZER_CONFIG_NAME",
    "AudioItemError",
    "PATTERNS",
    "SPECIAL_TOKENS",
    "SemantiCodecAudioTokenizer",
    "SemantiCodecVocabularyLayout",
    "codes_to_ids",
    "ids_to_codes",
    "pad_codes",
    "read_audio_tokenizer_settings",
    "saved_layout",
]

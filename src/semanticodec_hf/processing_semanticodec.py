"""`SemantiCodecProcessor`: the feature extractor plus the LM id layout, in one object that `AutoProcessor` loads.

audio -> `processor(audio, sampling_rate=...)` -> model inputs -> `model.encode` -> codes -> `processor.codes_to_ids`
-> LM ids -> `processor.ids_to_codes` -> `model.decode(**codes)` -> audio. The processor holds no weights: the
layout (two stream sizes, the pattern, bos/eos wrapping) is a few integers stored in `processor_config.json`.

It is also the package's front door for audio work, which the tokenizer, the command line, the LM toolkit and the
recipes go through: `read_audio` (the one audio reader), `encode_audio` (the minimum-length rule, the
stream-or-batch choice, grouping by length), `decode_codes` / `decode_stream` (code padding, long codes in pieces)
and codes <-> LM ids. Its methods that run the codec take the model as an argument.

Self-contained on purpose: this file and its relative imports travel into saved folders for
`trust_remote_code=True`, so it imports only flat sibling modules and installed libraries.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .audio_token_ids import AudioTokenIds
from .audio_token_layout import SemantiCodecVocabularyLayout
from .feature_extraction_semanticodec import SemantiCodecFeatureExtractor, batch_features
from .long_audio import decode_windows


def read_audio(value: Any, root: Optional[str] = None, max_seconds: Optional[float] = None,
               limit_name: str = "max_seconds", allow_empty: bool = False) -> Tuple[np.ndarray, int]:
    """One audio value -> (float32 audio, its sampling rate): the one audio reader of the package (the command
    line, the LM's prompts and the datasets helpers all call it).

    `value` is a path (relative paths are taken from `root` when given), `{"bytes": ..., "path": ...}`,
    `{"array": ..., "sampling_rate": ...}` (returned as given, as float32) or a decoder object with
    `get_all_samples()` (torchcodec). Files and bytes give channels-first `[channels, samples]`. With
    `max_seconds`, a longer file is refused from its header, before its samples are read (`limit_name` names
    the setting in the message). Every failure is a ValueError of one line naming the source: a missing file,
    a folder, an unreadable or corrupt file, a file without samples (unless `allow_empty`: then `[channels, 0]`),
    an unknown kind of value.
    """
    if isinstance(value, dict) and value.get("array") is not None:
        if value.get("sampling_rate") is None:
            raise ValueError("the audio has an `array` but no `sampling_rate`.")
        return np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    if hasattr(value, "get_all_samples"):
        samples = value.get_all_samples()
        return samples.data.cpu().numpy().astype(np.float32), int(samples.sample_rate)
    source: Any = None
    if isinstance(value, dict):
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value.get("path")
    elif isinstance(value, (str, os.PathLike)):
        source = value
    if source is None:
        raise ValueError(
            f"the audio is {type(value).__name__} {str(value)[:80]!r}; expected a path, {{'array', "
            "'sampling_rate'}} or {'bytes', 'path'} (cast a datasets column with datasets.Audio(decode=False))."
        )
    name = (value.get("path") or "the audio bytes") if isinstance(value, dict) else value
    if not isinstance(source, io.BytesIO):
        if root is not None and not os.path.isabs(source):
            source = os.path.join(root, source)
        if os.path.isdir(source):
            raise ValueError(f"{name} is a folder, not an audio file.")
        if not os.path.exists(source):
            raise ValueError(f"audio file {name} does not exist.")
        source = os.fspath(source)
    def unreadable(error: Exception) -> ValueError:
        return ValueError(f"cannot read {name} as audio ({error}); is it a corrupt or unsupported file?")

    try:
        handle = sf.SoundFile(source)
    except Exception as error:  # soundfile raises several types for unreadable files; name the file either way
        raise unreadable(error) from error
    with handle:
        frames, rate = handle.frames, handle.samplerate
        if rate <= 0 or (frames <= 0 and not allow_empty):
            raise ValueError(f"{name} holds no audio samples (empty file).")
        if max_seconds and frames / rate > max_seconds:
            raise ValueError(
                f"{name} lasts {frames / rate:.0f} s, more than {limit_name} {max_seconds:g} s. The whole file is "
                "held in memory (about 1 GB per hour at 48 kHz stereo, plus features); split it, or raise "
                f"{limit_name} (0 = no limit) if the machine has the memory."
            )
        try:
            audio = handle.read(dtype="float32", always_2d=True)
        except Exception as error:
            raise unreadable(error) from error
    if audio.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} holds no audio samples (empty file).")
    return np.ascontiguousarray(audio.T), int(rate)


STREAM_ENCODE_WINDOWS = 32  # clips longer than this many encoder windows (~5.5 min) are encoded as a stream
STREAM_DECODE_WINDOWS = 8  # codes longer than this many decode windows (~80 s) are worth decoding as a stream
SHORT_AUDIO_RULES = ("raise", "pad")


class AudioItemError(ValueError):
    """A ValueError about one item of a batch; `index` says which."""

    def __init__(self, index: int, message: str):
        super().__init__(f"Audio item {index}: {message}")
        self.index = index
        self.message = message


class EncodedClip(NamedTuple):
    """One clip's result of `SemantiCodecProcessor.encode_audio`: its codes `[2, F]` (int64, CPU) and its length in
    samples at the codec's rate (what `decode_codes` cuts the waveform to)."""

    codes: torch.Tensor
    num_samples: int


def is_batch_of_audio(audio: Any) -> bool:
    """The feature extractor's convention: a list/tuple of arrays is a batch; an array is one item."""
    if isinstance(audio, (list, tuple)):
        if len(audio) == 0:
            raise ValueError("`audio` is empty: pass at least one audio item.")
        return not isinstance(audio[0], (int, float, np.number))
    return False


def pad_codes(codes: Sequence[Any]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Clips' codes `[streams, F_i]` (tensors or arrays) -> (`audio_codes` `[B, streams, F_max]` int64, zero past
    each clip's length; `audio_codes_lengths` `[B]`): what `model.decode` takes. The one code padding of the
    package (the processor, the tokenizer, the command line and the LM toolkit use it)."""
    clips = [clip if torch.is_tensor(clip) else torch.from_numpy(np.asarray(clip)) for clip in codes]
    if not clips:
        raise ValueError("pad_codes got no codes.")
    lengths = torch.tensor([int(clip.shape[-1]) for clip in clips], dtype=torch.long)
    padded = torch.zeros(len(clips), int(clips[0].shape[0]), int(lengths.max()), dtype=torch.long)
    for row, clip in enumerate(clips):
        padded[row, :, : clip.shape[-1]] = clip
    return padded, lengths


def _as_numpy(item: Any) -> np.ndarray:
    return item.detach().cpu().numpy() if torch.is_tensor(item) else np.asarray(item)


def _zero_pad_to(item: np.ndarray, needed: int) -> np.ndarray:
    """A clip shorter than `needed` samples, zero-padded at its end to that length (longer clips unchanged)."""
    if item.shape[-1] >= needed:
        return item
    return np.pad(item, [(0, 0)] * (item.ndim - 1) + [(0, needed - item.shape[-1])])


class SemantiCodecProcessor(ProcessorMixin):
    r"""
    Feature extractor + flat LM vocabulary of one SemantiCodec variant.

    Args:
        feature_extractor ([`SemantiCodecFeatureExtractor`]): turns audio (any rate, channels, PCM type) into
            model inputs.
        semantic_vocab_size (`int`): semantic k-means vocabulary of the codec (`config.semantic_vocab_size`).
        acoustic_vocab_size (`int`): acoustic codebook size of the codec (`config.acoustic_codebook_size`).
        pattern (`str`): order of the two streams in LM ids: `"interleaved"` (default),
            `"semantic_then_acoustic"` or `"semantic_only"` (the same patterns as [`SemantiCodecAudioTokenizer`]).
        add_special_tokens (`bool`): wrap each clip as `<bos> ... <eos>` in `codes_to_ids` (default True).

    Build one for a codec with [`SemantiCodecProcessor.from_codec`]; `save_pretrained` / `from_pretrained` /
    `AutoProcessor.from_pretrained` round-trip it.
    """

    def __init__(
        self,
        feature_extractor: Any,
        semantic_vocab_size: int,
        acoustic_vocab_size: int,
        pattern: str = "interleaved",
        add_special_tokens: bool = True,
    ):
        super().__init__(feature_extractor)
        # The id arithmetic is the tokenizer's own object (`AudioTokenIds`), so the two cannot disagree.
        self._ids = AudioTokenIds(SemantiCodecVocabularyLayout(semantic_vocab_size, acoustic_vocab_size),
                                  pattern=pattern, add_special_tokens=add_special_tokens)
        self.semantic_vocab_size = self._ids.layout.semantic_vocab_size
        self.acoustic_vocab_size = self._ids.layout.acoustic_vocab_size
        self.pattern = self._ids.pattern
        self.add_special_tokens = self._ids.add_special_tokens

    @classmethod
    def from_codec(
        cls, codec: Any, feature_extractor: Optional[Any] = None, pattern: str = "interleaved",
        add_special_tokens: bool = True,
    ) -> "SemantiCodecProcessor":
        """The processor of a codec: `codec` is a `SemantiCodecModel` or its `SemantiCodecConfig`."""
        config = getattr(codec, "config", codec)
        if feature_extractor is None:
            feature_extractor = SemantiCodecFeatureExtractor()
        return cls(feature_extractor, int(config.semantic_vocab_size), int(config.acoustic_codebook_size),
                   pattern=pattern, add_special_tokens=add_special_tokens)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(semantic_vocab_size={self.semantic_vocab_size}, "
            f"acoustic_vocab_size={self.acoustic_vocab_size}, pattern={self.pattern!r}, "
            f"add_special_tokens={self.add_special_tokens}, vocab_size={self.vocab_size})"
        )

    def save_pretrained(self, save_directory: Any, push_to_hub: bool = False, **kwargs: Any) -> List[str]:
        """`ProcessorMixin.save_pretrained` (`processor_config.json`, with the feature extractor nested in it) plus
        the feature extractor's own `preprocessor_config.json`, which `AutoFeatureExtractor` and older transformers
        read."""
        files = super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        files += self.feature_extractor.save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        return files

    # ------------------------------------------------------------------------------------ audio -> inputs
    read_audio = staticmethod(read_audio)
    pad_codes = staticmethod(pad_codes)

    def __call__(self, audio: Any = None, sampling_rate: Optional[int] = None, **kwargs: Any) -> BatchFeature:
        """Audio -> `model.encode` inputs: the feature extractor's `__call__` (same arguments)."""
        if audio is None:
            raise ValueError("SemantiCodecProcessor needs `audio` (an array, a tensor or a list of them).")
        return self.feature_extractor(audio, sampling_rate=sampling_rate, **kwargs)

    @property
    def model_input_names(self) -> List[str]:
        return list(self.feature_extractor.model_input_names)

    # ------------------------------------------------------------------------------------ audio <-> codes
    # The processor holds no weights: the methods that run the codec take the model as their first argument.
    def prepare_audio(self, audio: Any, sampling_rate: int, short_audio: str = "raise",
                      stream: bool = True) -> Dict[str, Any]:
        """One clip -> its encoder input for `encode_prepared`: the feature extractor's output
        (`return_tensors="pt"`), or, with `stream` and a clip longer than `STREAM_ENCODE_WINDOWS` windows,
        `{"stream": (num_samples, blocks)}`, a lazy stream of fbank blocks so that memory stays bounded.

        `short_audio="pad"` zero-pads a clip shorter than one 0.16 s patch (at its own rate) instead of refusing
        it. The extractor's ValueErrors (too short, NaN, bad rate, ...) pass through."""
        if short_audio not in SHORT_AUDIO_RULES:
            raise ValueError(f"short_audio must be one of {list(SHORT_AUDIO_RULES)}, got {short_audio!r}.")
        extractor = self.feature_extractor
        if short_audio == "pad":
            audio = _zero_pad_to(_as_numpy(audio), extractor.padded_min_samples(int(sampling_rate)))
        window_seconds = extractor.window_samples / extractor.sampling_rate
        if stream and np.shape(audio)[-1] / sampling_rate > STREAM_ENCODE_WINDOWS * window_seconds:
            return {"stream": extractor.iter_features(audio, sampling_rate=sampling_rate)}
        return extractor(audio, sampling_rate=sampling_rate, return_tensors="pt")

    def encode_prepared(self, model: Any, items: Sequence[Dict[str, Any]],
                        max_windows_per_batch: int = 32) -> List[EncodedClip]:
        """Clips' encoder inputs (`prepare_audio`) -> an `EncodedClip` (codes, num_samples) per clip.

        Streamed clips are encoded alone, block by block (`model.encode_stream`). The others are grouped by length
        so that clips x the longest clip's windows <= `max_windows_per_batch`, one `model.encode` call per group;
        every clip gets exactly the codes it gets alone."""
        results: List[Any] = [None] * len(items)
        batched = []
        for index, item in enumerate(items):
            if "stream" in item:
                num_samples, blocks = item["stream"]
                encoded = model.encode_stream(blocks, num_samples, max_batch_size=max_windows_per_batch)
                results[index] = EncodedClip(encoded.audio_codes[0].cpu().clone(), int(num_samples))
            else:
                batched.append(index)
        window_frames = model.config.window_frames
        windows = {index: int(items[index]["input_features"].shape[1]) // window_frames for index in batched}
        groups: List[List[int]] = []
        for index in sorted(batched, key=lambda i: windows[i]):
            if groups and (len(groups[-1]) + 1) * windows[index] <= max_windows_per_batch:
                groups[-1].append(index)
            else:
                groups.append([index])
        device = next(model.parameters()).device
        for group in groups:
            batch = batch_features([items[index] for index in group], float(self.feature_extractor.padding_value))
            out = model.encode(
                batch["input_features"].to(device), input_features_mask=batch["input_features_mask"].to(device),
                num_samples=batch["num_samples"], max_batch_size=max_windows_per_batch,
            )
            for row, index in enumerate(group):
                # A clone made outside inference mode is an ordinary tensor that callers may modify in place.
                codes = out.audio_codes[row, :, : int(out.audio_codes_lengths[row])].cpu().clone()
                results[index] = EncodedClip(codes, int(batch["num_samples"][row]))
        return results

    def encode_audio(self, model: Any, audio: Any, sampling_rate: Union[int, Sequence[int]],
                     max_windows_per_batch: int = 32, short_audio: str = "raise") -> List[EncodedClip]:
        """Audio (one item or a list; one rate or one per item) -> an `EncodedClip` per item, in batched codec
        calls (`prepare_audio` + `encode_prepared`). A bad item raises `AudioItemError` naming its index."""
        items = list(audio) if is_batch_of_audio(audio) else [audio]
        if isinstance(sampling_rate, (list, tuple, np.ndarray)):
            rates = [int(rate) for rate in sampling_rate]
        else:
            rates = [sampling_rate] * len(items)
        if len(rates) != len(items):
            raise ValueError(f"Got {len(rates)} sampling rates for {len(items)} audio items.")
        prepared = []
        for index, (item, rate) in enumerate(zip(items, rates)):
            try:
                prepared.append(self.prepare_audio(item, rate, short_audio=short_audio))
            except ValueError as error:
                # The extractor saw this item alone, as its item 0: name it by its place in the batch instead.
                raise AudioItemError(index, re.sub(r"^Audio item 0:?\s*", "", str(error))) from None
        return self.encode_prepared(model, prepared, max_windows_per_batch)

    def decode_codes(self, model: Any, codes: Sequence[Any], num_samples: Optional[Sequence[int]] = None,
                     seed: Optional[Union[int, Sequence[int]]] = None, **decode_kwargs: Any) -> List[torch.Tensor]:
        """Clips' codes `[2, F_i]` -> their waveforms `[samples]` (CPU tensors at the codec's rate) in one batched
        `model.decode` call: the codes are padded together (`pad_codes`) and each output is cut to its clip's
        length (`num_samples[i]` when given, else the codec's output length for its frames). `seed` and
        `decode_kwargs` (`num_inference_steps`, `sampler`, `guidance_scale`, `max_batch_size`, ...) go to
        `model.decode`."""
        audio_codes, lengths = pad_codes(codes)
        if num_samples is not None:
            decode_kwargs["num_samples"] = num_samples
        if seed is not None:
            decode_kwargs["seed"] = seed
        out = model.decode(audio_codes, audio_codes_lengths=lengths, **decode_kwargs)
        return [out.audio_values[i, 0, : int(out.audio_values_lengths[i])].cpu().clone() for i in range(len(lengths))]

    @staticmethod
    def streams_decode(config: Any, num_frames: int) -> bool:
        """Whether codes of `num_frames` frames are long enough (more than `STREAM_DECODE_WINDOWS` decode windows)
        to be decoded piece by piece with `decode_stream` rather than in one `decode_codes` call."""
        return len(decode_windows(int(num_frames), config)) > STREAM_DECODE_WINDOWS

    def decode_stream(self, model: Any, codes: Any, num_samples: Optional[int] = None, windows_per_chunk: int = 4,
                      seed: Optional[int] = None, **decode_kwargs: Any) -> Iterator[torch.Tensor]:
        """One clip's codes `[2, F]` -> its waveform as consecutive pieces (`model.decode_stream`: bounded memory,
        equal to `decode_codes` up to float32 rounding)."""
        codes = codes if torch.is_tensor(codes) else torch.from_numpy(np.asarray(codes))
        return model.decode_stream(codes, num_samples=num_samples, windows_per_chunk=windows_per_chunk, seed=seed,
                                   **decode_kwargs)

    # ------------------------------------------------------------------------------------ layout
    layout = property(lambda self: self._ids.layout, doc="The flat vocabulary (offsets and sizes).")
    vocab_size = property(lambda self: self._ids.vocab_size, doc="Rows an LM embedding table needs.")
    bos_token_id = property(lambda self: self._ids.bos_token_id)
    eos_token_id = property(lambda self: self._ids.eos_token_id)
    pad_token_id = property(lambda self: self._ids.pad_token_id)
    sep_token_id = property(lambda self: self._ids.sep_token_id)

    # ------------------------------------------------------------------------------------ codes <-> ids
    def pad(self, ids: Sequence[Sequence[int]], padding_side: str = "right") -> Dict[str, torch.Tensor]:
        """Lists of ids -> `input_ids` `[batch, longest]` padded with `<pad>` and `attention_mask`."""
        return self._ids.pad(ids, padding_side=padding_side)

    def codes_to_ids(
        self,
        audio_codes: Any,
        audio_codes_lengths: Optional[Sequence[int]] = None,
        add_special_tokens: Optional[bool] = None,
    ) -> Union[List[int], List[List[int]]]:
        """`model.encode` codes -> LM ids: `[2, F]` gives one list, `[B, 2, F]` (cut at `audio_codes_lengths`)
        or a list of `[2, F]` gives one list per clip."""
        return self._ids.codes_to_ids(audio_codes, audio_codes_lengths, add_special_tokens=add_special_tokens)

    def ids_to_codes(self, ids: Any, attention_mask: Optional[Any] = None) -> BatchFeature:
        """LM ids (one sequence or a batch, optionally padded with `attention_mask`) -> `model.decode` inputs:
        `audio_codes` `[B, streams, F_max]` (zero past each length) and `audio_codes_lengths` `[B]`, so that
        `model.decode(**processor.ids_to_codes(ids))` works. Anything out of place in the ids raises a ValueError
        naming the position and the value (see `SemantiCodecAudioTokenizer.decode_ids`)."""
        decoded = self._ids.decode_ids(ids, attention_mask=attention_mask)
        clips = decoded if isinstance(decoded, list) else [decoded]
        if not clips:
            raise ValueError("ids_to_codes got an empty batch.")
        empty = [row for row, clip in enumerate(clips) if clip.shape[-1] == 0]
        if empty:
            raise ValueError(f"Sequence(s) {empty} hold no audio ids (only special tokens or nothing): nothing to "
                             "decode. Drop them, or generate at least one frame.")
        audio_codes, lengths = pad_codes(clips)
        return BatchFeature({"audio_codes": audio_codes, "audio_codes_lengths": lengths})

    def join_clips(self, clips: Sequence[Any]) -> List[int]:
        """Several clips' ids -> one sequence `<bos> c1 <sep> c2 ... <eos>`."""
        return self._ids.join_clips(clips)

    def split_clips(self, ids: Any) -> List[List[int]]:
        """Inverse of `join_clips`."""
        return self._ids.split_clips(ids)


SemantiCodecProcessor.register_for_auto_class("AutoProcessor")

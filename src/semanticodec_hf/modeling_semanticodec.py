"""SemantiCodecModel: the full codec (encoder + quantizer + latent-diffusion decoder) as a transformers model.

The parts live in their own modules, as `encoder`, `quantizer` and `decoder` (`modeling_semanticodec_encoder`,
`modeling_semanticodec_quantizer`, `modeling_semanticodec_decoder`); this file batches windows of many items
through them and keeps every per-item quirk of the original (token budget, window split, cross-fade, trim).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm
from transformers.modeling_utils import PreTrainedAudioTokenizerBase
from transformers.utils import ModelOutput, logging

from .configuration_semanticodec import SemantiCodecConfig
from .long_audio import StreamingOverlapAdd, decode_windows, overlap_add
from .modeling_semanticodec_decoder import SAMPLERS, SemantiCodecDecoder, reference_ddim_timesteps
from .modeling_semanticodec_encoder import SemantiCodecEncoder
from .modeling_semanticodec_quantizer import SemantiCodecQuantizer

logger = logging.get_logger(__name__)

GeneratorArg = Optional[Union[torch.Generator, Sequence[torch.Generator]]]

# Windows per network call when `max_batch_size` is not given. Unbounded, an hour of audio (352 windows) would go
# through AudioMAE or the UNet in one call and need tens of GB; inputs up to this size run exactly as before.
DEFAULT_MAX_WINDOWS_PER_CALL = 32


def _check_positive(name: str, value: Optional[int], what: str, required: bool = False) -> None:
    """Raise a ValueError naming `name` unless `value` is a positive int (or None when not `required`)."""
    if value is None and not required:
        return
    if value is None or isinstance(value, bool) or int(value) < 1:
        raise ValueError(f"{name} must be a positive {what}, got {value!r}.")


MAX_NUM_SAMPLES = 2**63 - 1  # lengths become int64 tensors; anything larger overflowed deep inside `decode`


def _sample_count(value, where: str) -> int:
    """One requested output length as a Python int in `[1, MAX_NUM_SAMPLES]`, or a ValueError naming it (a float
    was silently truncated, and 2**64 from a hostile code file raised an overflow from inside torch)."""
    try:
        if isinstance(value, bool) or (torch.is_tensor(value) and value.dtype == torch.bool):
            raise TypeError
        value = operator.index(value)  # int, numpy integer, one-element integer tensor; not float
    except TypeError:
        raise ValueError(f"num_samples{where} must be an integer number of 16 kHz samples, got {value!r}.") from None
    if not 1 <= value <= MAX_NUM_SAMPLES:
        raise ValueError(
            f"num_samples{where} is {value}, outside [1, {MAX_NUM_SAMPLES}]; pass each item's 16 kHz input length "
            "(what SemantiCodecFeatureExtractor returns as num_samples, or a .sct file's sample count)."
        )
    return value


def _check_num_samples(num_samples, batch: int) -> List[int]:
    """`num_samples` (an int, a sequence or an integer tensor) as one checked length per item."""
    if torch.is_tensor(num_samples):
        if num_samples.dtype.is_floating_point or num_samples.dtype == torch.bool:
            raise ValueError(f"num_samples must be integer lengths, got a {num_samples.dtype} tensor.")
        values = num_samples.reshape(-1).tolist()
    elif isinstance(num_samples, (list, tuple)):
        values = list(num_samples)
    elif hasattr(num_samples, "reshape") and hasattr(num_samples, "tolist"):  # a numpy array
        values = num_samples.reshape(-1).tolist()
    else:
        values = [num_samples]
    if len(values) != batch:
        raise ValueError(f"num_samples must hold one positive length per item ({batch}), got {values}.")
    return [_sample_count(value, f"[{i}]") for i, value in enumerate(values)]


@dataclass
class SemantiCodecEncoderOutput(ModelOutput):
    """
    Args:
        audio_codes (`torch.LongTensor` of shape `(batch, 2, frames)`): row 0 semantic ids, row 1 acoustic ids,
            trimmed per item to the original's token count; positions past an item's length hold 0.
        audio_codes_mask (`torch.LongTensor` of shape `(batch, frames)`): 1 where a frame belongs to the item.
        audio_codes_lengths (`torch.LongTensor` of shape `(batch,)`): frames per item.
        conditioning (`torch.FloatTensor` of shape `(batch, windows * frames_per_window, conditioning_dim)`, *optional*):
            the encoder's diffusion conditioning per window (untrimmed), when `return_conditioning=True`.
    """

    audio_codes: Optional[torch.LongTensor] = None
    audio_codes_mask: Optional[torch.LongTensor] = None
    audio_codes_lengths: Optional[torch.LongTensor] = None
    conditioning: Optional[torch.FloatTensor] = None


@dataclass
class SemantiCodecDecoderOutput(ModelOutput):
    """
    Args:
        audio_values (`torch.FloatTensor` of shape `(batch, 1, samples)`): 16 kHz waveforms, zero-padded past
            each item's length.
        audio_values_lengths (`torch.LongTensor` of shape `(batch,)`): samples per item.
    """

    audio_values: Optional[torch.FloatTensor] = None
    audio_values_lengths: Optional[torch.LongTensor] = None


@dataclass
class SemantiCodecOutput(ModelOutput):
    """Encode + decode result: the codes and the reconstruction (see the encoder/decoder outputs)."""

    audio_codes: Optional[torch.LongTensor] = None
    audio_codes_mask: Optional[torch.LongTensor] = None
    audio_codes_lengths: Optional[torch.LongTensor] = None
    audio_values: Optional[torch.FloatTensor] = None
    audio_values_lengths: Optional[torch.LongTensor] = None


# Cross-attention value gain of the tiny model: at 8x, decoding random codes instead of the encoded ones moves
# the waveform by ~10 % of its peak (1.6 % at 1x), so a test that mixes up codes sees it.
_TINY_CROSS_ATTENTION_GAIN = 8.0


@torch.no_grad()
def _spread_random_weights(model: "SemantiCodecModel") -> None:
    """Re-draw a random model's weights so that ids vary and decoded audio is audible (see `tiny`)."""
    quantizer, decoder = model.quantizer, model.decoder
    quantizer.semantic.centroids.normal_(0, 0.5)
    quantizer.acoustic.codebook.normal_(0, 0.05)
    for module in list(decoder.unet.modules()) + list(decoder.vae.modules()):
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.reset_parameters()
    for name, module in decoder.unet.named_modules():
        if name.endswith("attn2"):
            module.to_v.weight.mul_(_TINY_CROSS_ATTENTION_GAIN)
    for name, parameter in decoder.vocoder.named_parameters():
        if name.endswith("weight") and parameter.ndim > 1:
            parameter.normal_(0, parameter[0].numel() ** -0.5)


# State-dict keys that were renamed, old -> new. The codebooks moved out of the encoder into `quantizer`; folders saved
# before (and training checkpoints) still load: `from_pretrained` renames them through transformers' `key_mapping`,
# `load_state_dict` in `_load_from_state_dict`. Saving always writes the new keys.
RENAMED_STATE_DICT_KEYS = {
    "encoder.semantic_quantizer.centroids": "quantizer.semantic.centroids",
    "encoder.acoustic_quantizer.codebook": "quantizer.acoustic.codebook",
}


class SemantiCodecPreTrainedModel(PreTrainedAudioTokenizerBase):
    config_class = SemantiCodecConfig
    base_model_prefix = "semanticodec"
    main_input_name = "input_features"
    supports_gradient_checkpointing = False

    @classmethod
    def from_pretrained(cls, *args: Any, key_mapping: Optional[dict] = None, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, also for folders saved with old state-dict keys
        (`RENAMED_STATE_DICT_KEYS`); a `key_mapping` given here is applied as well."""
        renames = {"^" + re.escape(old): new for old, new in RENAMED_STATE_DICT_KEYS.items()}  # up to a name boundary
        loaded = super().from_pretrained(*args, key_mapping={**renames, **(key_mapping or {})}, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # transformers keeps the renames it used to undo them in `save_pretrained` (re-saving in the loaded layout);
        # drop ours, so that a folder with old keys is re-saved with the new ones.
        used = getattr(model, "_weight_conversions", None)
        if used:
            model._weight_conversions = [c for c in used if getattr(c, "_original_source_patterns", None) is None
                                         or not set(c._original_source_patterns) <= set(renames)]
        return loaded

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # `load_state_dict` (e.g. resuming a training checkpoint) of a state dict with old keys; runs before the
        # sub-modules read their entries, and only on torch's copy of the caller's dict.
        for old, new in RENAMED_STATE_DICT_KEYS.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _init_weights(self, module: torch.nn.Module) -> None:
        # Modules with values computed from the config (position codes, diffusion schedule) rebuild them here,
        # because transformers leaves non-persistent buffers empty after `from_pretrained`.
        if hasattr(module, "reset_computed_buffers"):
            module.reset_computed_buffers()
            return
        super()._init_weights(module)


class SemantiCodecModel(SemantiCodecPreTrainedModel):
    """SemantiCodec: 16 kHz audio <-> (semantic, acoustic) id pairs at 12.5/25/50 frames per second."""

    SAMPLERS = SAMPLERS  # the `sampler` values `decode` accepts: "ddim" (the original) and diffusers solvers

    def __init__(self, config: SemantiCodecConfig):
        super().__init__(config)
        self.encoder = SemantiCodecEncoder(config)
        self.quantizer = SemantiCodecQuantizer(config)
        self.decoder = SemantiCodecDecoder(config)
        self.post_init()

    @classmethod
    def tiny(
        cls, seed: int = 0, token_rate: int = 100, semantic_vocab_size: int = 64, **config_kwargs
    ) -> "SemantiCodecModel":
        """A small RANDOM codec with the real window geometry whose output carries signal, for tests and demos:
        `random_with_signal` of `SemantiCodecConfig.tiny(...)`. Its audio is noise: never judge quality with it."""
        config = SemantiCodecConfig.tiny(token_rate=token_rate, semantic_vocab_size=semantic_vocab_size, **config_kwargs)
        return cls.random_with_signal(config, seed=seed)

    @classmethod
    def random_with_signal(cls, config: SemantiCodecConfig, seed: int = 0) -> "SemantiCodecModel":
        """A RANDOM codec of any size (e.g. `SemantiCodecConfig.from_variant(100, 8192)` for full-size benchmarks)
        whose codes vary with the audio and whose decoded waveform is audible.

        A model built straight from a config has all-zero codebooks (every id is 0) and transformers' small-std
        init, which shrinks the waveform to ~1e-9: equality checks on it cannot fail and a benchmark of it skips
        nothing but measures a degenerate case. Here the codebooks are spread over the random feature space, the
        UNet and VAE get PyTorch's fan-in-scaled init, the cross-attention values are scaled up so that the codes,
        not only the noise, shape the output, and the vocoder keeps unit gain per layer (RMS ~0.06, peak ~0.3).
        The same `seed` gives the same weights; the global RNG is left as it was. Its audio is noise.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config)
            _spread_random_weights(model)
        return model.eval()

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained`; `auto_map` also names this class for `AutoModelForAudioTokenization`
        (transformers records one Auto class per object), so both Auto classes load the folder with remote code."""
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map["AutoModelForAudioTokenization"] = f"{type(self).__module__.rpartition('.')[2]}.{type(self).__name__}"
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    # ------------------------------------------------------------------------------------------ encode
    def _window_counts(
        self,
        input_features: torch.Tensor,
        input_features_mask: Optional[torch.Tensor],
        num_samples: Optional[torch.Tensor],
    ) -> torch.Tensor:
        batch, frames = input_features.shape[:2]
        window_frames = self.config.window_frames
        if input_features_mask is not None:
            counts = input_features_mask.reshape(batch, -1, window_frames)[..., 0].sum(-1).long()
        elif num_samples is not None:
            counts = torch.tensor([self.config.num_windows(int(n)) for n in num_samples], dtype=torch.long)
        else:
            counts = torch.full((batch,), frames // window_frames, dtype=torch.long)
        return counts.cpu()

    def _check_features(self, input_features: torch.Tensor) -> None:
        if not torch.is_tensor(input_features) or not input_features.is_floating_point():
            raise ValueError(
                "input_features must be a float tensor from SemantiCodecFeatureExtractor, got "
                f"{type(input_features).__name__} {getattr(input_features, 'dtype', '')}."
            )
        if input_features.ndim != 3 or input_features.shape[-1] != self.config.num_mel_bins:
            raise ValueError(
                f"input_features must have shape (batch, frames, {self.config.num_mel_bins}), got "
                f"{tuple(input_features.shape)}. Use SemantiCodecFeatureExtractor to compute them from audio."
            )
        if input_features.shape[1] == 0 or input_features.shape[1] % self.config.window_frames:
            raise ValueError(
                f"input_features has {input_features.shape[1]} frames; it must be a positive multiple of "
                f"{self.config.window_frames} (one 10.24 s window). Use SemantiCodecFeatureExtractor."
            )
        if not bool(torch.isfinite(input_features).all()):
            raise ValueError(
                f"input_features contains {int((~torch.isfinite(input_features)).sum())} NaN/Inf values; they would "
                "turn into arbitrary codes. Compute features from clean audio with SemantiCodecFeatureExtractor."
            )
        # The encoder's networks and the codebooks the ids are chosen from (either may have been cast alone).
        quantizer = self.quantizer
        weights = (self.encoder.output_linear.weight, quantizer.semantic.centroids, quantizer.acoustic.codebook)
        wrong_dtypes = [t.dtype for t in weights if t.dtype != torch.float32]
        if wrong_dtypes:
            raise ValueError(
                f"The encoder's weights are {wrong_dtypes[0]}; the codes are only the original's in float32 (the "
                "nearest-centroid and VQ choices are decided by tiny distance differences). Load the model without "
                "`torch_dtype` and speed up decoding with `model.set_decoder_dtype('bfloat16')` instead."
            )

    @torch.inference_mode()
    def encode(
        self,
        input_features: torch.Tensor,
        input_features_mask: Optional[torch.Tensor] = None,
        num_samples: Optional[torch.Tensor] = None,
        return_conditioning: bool = False,
        max_batch_size: Optional[int] = None,
        return_dict: bool = True,
        **kwargs,
    ) -> Union[SemantiCodecEncoderOutput, tuple]:
        """Normalised fbank windows -> codes `(batch, 2, frames)`.

        All windows of all items run through the encoder as one batch (chunked by `max_batch_size`);
        windows are independent in the original, so each item gets exactly the codes it gets alone.
        `num_samples` (from the feature extractor) sets each item's frame count the way the original does;
        without it every window's frames are kept.
        """
        self._check_features(input_features)
        _check_positive("max_batch_size", max_batch_size, "number of windows")
        batch = input_features.shape[0]
        config = self.config
        window_frames, frames_per_window = config.window_frames, config.frames_per_window
        max_windows = input_features.shape[1] // window_frames
        counts = self._window_counts(input_features, input_features_mask, num_samples)
        if (counts < 1).any() or (counts > max_windows).any():
            raise ValueError(f"Each item needs 1..{max_windows} windows; got window counts {counts.tolist()}.")

        windows = input_features.reshape(batch, max_windows, window_frames, config.num_mel_bins)
        valid = torch.arange(max_windows)[None, :] < counts[:, None]
        flat = windows[valid.to(windows.device)]
        semantic, acoustic, conditioning = [], [], []
        chunk = max_batch_size or min(flat.shape[0], DEFAULT_MAX_WINDOWS_PER_CALL)
        for start in range(0, flat.shape[0], chunk):
            out = self.encoder(flat[start : start + chunk], quantizer=self.quantizer,
                               return_conditioning=return_conditioning)
            semantic.append(out.semantic_ids)
            acoustic.append(out.acoustic_ids)
            if return_conditioning:
                conditioning.append(out.conditioning)
        semantic_ids = torch.cat(semantic).reshape(-1)
        acoustic_ids = torch.cat(acoustic).reshape(-1)

        if num_samples is not None:
            lengths = torch.tensor(
                [min(config.frame_budget(int(n)), int(c) * frames_per_window)
                 for n, c in zip(num_samples, counts)],
                dtype=torch.long,
            )
        else:
            lengths = counts * frames_per_window
        max_len = int(lengths.max())
        device = semantic_ids.device
        audio_codes = torch.zeros(batch, 2, max_len, dtype=torch.long, device=device)
        mask = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        offset = 0
        for item in range(batch):
            n = int(lengths[item])
            audio_codes[item, 0, :n] = semantic_ids[offset : offset + n]
            audio_codes[item, 1, :n] = acoustic_ids[offset : offset + n]
            mask[item, :n] = 1
            offset += int(counts[item]) * frames_per_window

        cond_out = None
        if return_conditioning:
            cond_flat = torch.cat(conditioning)
            cond_out = cond_flat.new_zeros(batch, max_windows * frames_per_window, cond_flat.shape[-1])
            offset = 0
            for item in range(batch):
                n = int(counts[item])
                cond_out[item, : n * frames_per_window] = cond_flat[offset : offset + n].reshape(-1, cond_flat.shape[-1])
                offset += n
        output = SemantiCodecEncoderOutput(audio_codes, mask, lengths.to(device), cond_out)
        return output if return_dict else output.to_tuple()

    @torch.inference_mode()
    def encode_stream(
        self,
        feature_blocks: Iterable[torch.Tensor],
        num_samples: int,
        max_batch_size: Optional[int] = None,
        progress: bool = False,
    ) -> SemantiCodecEncoderOutput:
        """Encode ONE long item from `SemantiCodecFeatureExtractor.iter_features` blocks, windows consumed as the
        blocks arrive, so hours of audio never hold all their fbank frames at once.

        Windows go through the encoder in the same chunks of `max_batch_size` as `encode` uses, so the codes
        equal `encode(**feature_extractor(audio))` bit for bit. Returns the batch-of-one `encode` output.
        """
        config = self.config
        window_frames = config.window_frames
        expected_windows = config.num_windows(int(num_samples))
        _check_positive("max_batch_size", max_batch_size, "number of windows")
        chunk = int(max_batch_size or DEFAULT_MAX_WINDOWS_PER_CALL)
        semantic, acoustic, pending, seen = [], [], [], 0
        bar = None
        if progress:
            bar = tqdm(total=expected_windows, desc="encode", unit="window")

        def run(windows: torch.Tensor) -> None:
            out = self.encoder(windows.to(self.device), quantizer=self.quantizer)
            semantic.append(out.semantic_ids.reshape(-1))
            acoustic.append(out.acoustic_ids.reshape(-1))
            if bar is not None:
                bar.update(windows.shape[0])

        for block in feature_blocks:
            self._check_features(block)
            if block.shape[0] != 1:
                raise ValueError(f"encode_stream takes blocks of one item [1, frames, bins], got {tuple(block.shape)}.")
            pending.append(block.reshape(-1, window_frames, config.num_mel_bins))
            seen += pending[-1].shape[0]
            while sum(p.shape[0] for p in pending) >= chunk:
                windows = torch.cat(pending)
                run(windows[:chunk])
                pending = [windows[chunk:]]
        if sum(p.shape[0] for p in pending):
            run(torch.cat(pending))
        if bar is not None:
            bar.close()
        if seen != expected_windows:
            raise ValueError(
                f"The feature blocks hold {seen} windows but num_samples={num_samples} needs {expected_windows} windows; "
                "pass the blocks and num_samples that SemantiCodecFeatureExtractor.iter_features returned together."
            )
        length = config.num_frames(int(num_samples))  # seen == expected_windows (checked above)
        audio_codes = torch.stack([torch.cat(semantic)[:length], torch.cat(acoustic)[:length]]).unsqueeze(0)
        device = audio_codes.device
        return SemantiCodecEncoderOutput(
            audio_codes,
            torch.ones(1, length, dtype=torch.long, device=device),
            torch.tensor([length], dtype=torch.long, device=device),
            None,
        )

    # ------------------------------------------------------------------------------------------ decode
    def set_decoder_dtype(self, dtype: Union[str, torch.dtype]) -> "SemantiCodecModel":
        """Decode in `dtype` ("float32", the original's, or "bfloat16": faster on CPUs with native bfloat16 and on
        recent GPUs, see the README's "Speed and memory"; waveforms close to but not equal to float32's). Only the decoder's UNet, VAE and vocoder
        change; the encoder stays in float32, so the codes are unaffected. The conversion is in place and lossy
        (reload the model to decode in float32 again). Returns the model."""
        self.decoder.set_network_dtype(dtype)
        return self

    def check_decode_settings(self, num_inference_steps: Optional[int] = None, sampler: Optional[str] = None) -> None:
        """Refuse the settings `decode` would refuse (an unknown sampler, a step count that is not a positive
        integer, a DDIM step count the original cannot run) without decoding anything, so that a caller can check
        them before minutes of other work. `None` means the config's default."""
        if sampler is not None and sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}.")
        if num_inference_steps is not None and (isinstance(num_inference_steps, bool) or
                                                not isinstance(num_inference_steps, int) or num_inference_steps < 1):
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}.")
        if (sampler or "ddim") == "ddim":  # the original DDIM crashes on some counts: say which ones work
            steps = num_inference_steps or self.config.num_inference_steps
            try:
                reference_ddim_timesteps(steps, self.config.num_train_timesteps)
            except ValueError as error:
                raise ValueError(f"num_inference_steps={steps} cannot be decoded with the ddim sampler: {error}") from None

    def _sampling_settings(
        self, num_inference_steps: Optional[int], guidance_scale: Optional[float], eta: Optional[float]
    ) -> tuple:
        """`(steps, guidance, eta)`: the arguments given, else the config's defaults."""
        _check_positive("num_inference_steps", num_inference_steps, "integer")
        config = self.config
        return (
            num_inference_steps or config.num_inference_steps,
            config.guidance_scale if guidance_scale is None else guidance_scale,
            config.ddim_eta if eta is None else eta,
        )

    def _check_codes(self, audio_codes: torch.Tensor, lengths: torch.Tensor) -> None:
        if not torch.is_tensor(audio_codes) or audio_codes.dtype.is_floating_point or audio_codes.dtype == torch.bool:
            raise ValueError(
                f"audio_codes must be an integer tensor (batch, 2, frames), got {type(audio_codes).__name__} "
                f"{getattr(audio_codes, 'dtype', '')}."
            )
        if audio_codes.ndim != 3 or audio_codes.shape[1] != 2:
            raise ValueError(
                f"audio_codes must have shape (batch, 2, frames) (row 0 semantic, row 1 acoustic), got "
                f"{tuple(audio_codes.shape)}."
            )
        if audio_codes.shape[-1] == 0 or (lengths < 1).any():
            raise ValueError(f"audio_codes has an item with no frames (lengths {lengths.tolist()}).")
        if (lengths > audio_codes.shape[-1]).any():
            raise ValueError(f"audio_codes_lengths {lengths.tolist()} exceed the {audio_codes.shape[-1]} frames given.")
        limits = (self.config.semantic_vocab_size, self.config.acoustic_codebook_size)
        valid = torch.arange(audio_codes.shape[-1], device=audio_codes.device)[None, :] < lengths.to(audio_codes.device)[:, None]
        for stream, (name, limit) in enumerate(zip(("semantic", "acoustic"), limits)):
            bad = valid & ((audio_codes[:, stream] < 0) | (audio_codes[:, stream] >= limit))
            if bad.any():
                item, frame = (int(i) for i in bad.nonzero()[0])
                raise ValueError(
                    f"{name} id {int(audio_codes[item, stream, frame])} at item {item}, frame {frame} is out of range "
                    f"[0, {limit}); {int(bad.sum())} ids are out of range in total. Codes must come from a model "
                    f"with semantic_vocab_size={limits[0]} and acoustic_codebook_size={limits[1]}."
                )

    @staticmethod
    def _per_item_generators(generator: GeneratorArg, seed, batch: int) -> Optional[List[torch.Generator]]:
        if seed is not None:
            seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + i for i in range(batch)]
            if len(seeds) != batch:
                raise ValueError(f"Got {len(seeds)} seeds for a batch of {batch}.")
            return [torch.Generator().manual_seed(int(s)) for s in seeds]
        if generator is None:
            return None
        if isinstance(generator, torch.Generator):
            return [generator] * batch
        generators = list(generator)
        if len(generators) != batch:
            raise ValueError(f"Got {len(generators)} generators for a batch of {batch}; pass one per item.")
        return generators

    @torch.inference_mode()
    def decode(
        self,
        audio_codes: torch.Tensor,
        audio_codes_lengths: Optional[torch.Tensor] = None,
        audio_codes_mask: Optional[torch.Tensor] = None,
        num_inference_steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        eta: Optional[float] = None,
        sampler: str = "ddim",
        generator: GeneratorArg = None,
        seed: Optional[Union[int, Sequence[int]]] = None,
        noise: Optional[torch.Tensor] = None,
        max_batch_size: Optional[int] = None,
        progress: bool = False,
        num_samples: Optional[Union[torch.Tensor, Sequence[int]]] = None,
        return_dict: bool = True,
        **kwargs,
    ) -> Union[SemantiCodecDecoderOutput, tuple]:
        """Codes `(batch, 2, frames)` -> 16 kHz waveforms `(batch, 1, samples)`.

        Long inputs are cut into the original's overlapping 10.24 s windows; all windows of all items go
        through the diffusion sampler together (both guidance halves in the same UNet call), then are
        cross-faded and trimmed per item exactly like the original. Sampling is stochastic (DDIM eta=1):
        pass `seed` (an int, or one per item) or `generator` (one, or one per item) for reproducible output;
        with one seed/generator per item, an item decodes to the same waveform in any batch (up to float32 rounding).
        `noise` replaces every random draw instead: a tensor `[windows, draws, 8, latent_frames, 16]` over all
        windows of all items in order, x_T first and then one draw per DDIM step when eta > 0 (how the parity
        tests replay the original's own draws).

        The original's output length rounds the input up to its 0.16 s token budget (one more patch at exact
        multiples of 10.24 s). Pass `num_samples` (the feature extractor's per-item 16 kHz input lengths) to
        cut each item back to its input's length instead.
        """
        if torch.is_tensor(audio_codes) and audio_codes.ndim == 2:
            audio_codes = audio_codes[None]
        batch = audio_codes.shape[0] if torch.is_tensor(audio_codes) and audio_codes.ndim == 3 else 0
        if audio_codes_lengths is None:
            if audio_codes_mask is not None:
                audio_codes_lengths = audio_codes_mask.long().sum(-1)
            elif batch:
                audio_codes_lengths = torch.full((batch,), audio_codes.shape[-1], dtype=torch.long)
        lengths = torch.as_tensor(audio_codes_lengths if audio_codes_lengths is not None else [], dtype=torch.long).cpu()
        self._check_codes(audio_codes, lengths)
        requested = _check_num_samples(num_samples, batch) if num_samples is not None else None
        config = self.config
        steps, guidance, eta = self._sampling_settings(num_inference_steps, guidance_scale, eta)
        item_generators = self._per_item_generators(generator, seed, batch)

        device = self.decoder.scale_factor.device
        audio_codes = audio_codes.to(device)
        window_conditioning, window_owner, window_generators = [], [], []
        for item in range(batch):
            for start, end in decode_windows(int(lengths[item]), config):
                codes = audio_codes[item, :, start:end]
                window_conditioning.append(self.quantizer.codes_to_conditioning(codes[0][None], codes[1][None]))
                window_owner.append(item)
                if item_generators is not None:
                    window_generators.append(item_generators[item])
        conditioning = torch.cat(window_conditioning)
        if max_batch_size is None and conditioning.shape[0] > DEFAULT_MAX_WINDOWS_PER_CALL:
            max_batch_size = DEFAULT_MAX_WINDOWS_PER_CALL
        latents = self.decoder.sample_latents(
            conditioning,
            num_inference_steps=steps,
            guidance_scale=guidance,
            eta=eta,
            sampler=sampler,
            generator=window_generators or None,
            noise=noise,
            max_batch_size=max_batch_size,
            progress=progress,
        )
        waves = self.decoder.mel_to_waveform(self.decoder.latents_to_mel(latents, max_batch_size=max_batch_size),
                                             max_batch_size=max_batch_size)

        keep = [config.output_num_samples(int(n)) for n in lengths]
        if requested is not None:
            keep = [min(k, n) for k, n in zip(keep, requested)]
        owner = torch.tensor(window_owner)
        outputs = []
        for item in range(batch):
            outputs.append(overlap_add(waves[owner == item], config.decode_overlap_samples)[: keep[item]])
        out_lengths = torch.tensor([len(w) for w in outputs], dtype=torch.long)
        audio_values = waves.new_zeros(batch, 1, int(out_lengths.max()))
        for item, wave in enumerate(outputs):
            audio_values[item, 0, : len(wave)] = wave
        output = SemantiCodecDecoderOutput(audio_values, out_lengths.to(device))
        return output if return_dict else output.to_tuple()

    @torch.inference_mode()
    def decode_stream(
        self,
        audio_codes: torch.Tensor,
        num_samples: Optional[int] = None,
        windows_per_chunk: int = 4,
        num_inference_steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        eta: Optional[float] = None,
        sampler: str = "ddim",
        generator: Optional[torch.Generator] = None,
        seed: Optional[int] = None,
    ) -> Iterator[torch.Tensor]:
        """One item's codes `(2, frames)` -> 16 kHz waveform pieces, `windows_per_chunk` decode windows at a time.

        For hour-long audio in bounded memory: only a chunk of windows (their latents, mels and waveforms) is
        alive at once, and each piece can be written out as soon as it is yielded. The pieces joined equal
        `decode(...)` of the same codes with the same seed: the same windows, the same per-window noise (windows
        consume the generator in order, as in `decode`) and the same cross-fade; only the UNet batch
        composition differs, so results agree up to float32 rounding (exactly, when all windows fit in one chunk).
        """
        if torch.is_tensor(audio_codes) and audio_codes.ndim == 3:
            if audio_codes.shape[0] != 1:
                raise ValueError(f"decode_stream decodes one item; got a batch of {audio_codes.shape[0]}.")
            audio_codes = audio_codes[0]
        if not torch.is_tensor(audio_codes) or audio_codes.ndim != 2:
            raise ValueError("audio_codes must be one item's codes of shape (2, frames).")
        _check_positive("windows_per_chunk", windows_per_chunk, "number of windows", required=True)
        frames = int(audio_codes.shape[-1])
        self._check_codes(audio_codes[None], torch.tensor([frames]))
        config = self.config
        steps, guidance, eta = self._sampling_settings(num_inference_steps, guidance_scale, eta)
        generators = self._per_item_generators(generator, seed, 1)
        item_generator = generators[0] if generators is not None else None
        keep = config.output_num_samples(frames)
        if num_samples is not None:
            keep = min(keep, _sample_count(num_samples, ""))

        device = self.decoder.scale_factor.device
        codes = audio_codes.to(device)
        windows = decode_windows(frames, config)
        joiner, emitted = StreamingOverlapAdd(config.decode_overlap_samples), 0
        for first in range(0, len(windows), int(windows_per_chunk)):
            chunk = windows[first:first + int(windows_per_chunk)]
            conditioning = torch.cat(
                [self.quantizer.codes_to_conditioning(codes[0, a:b][None], codes[1, a:b][None]) for a, b in chunk]
            )
            latents = self.decoder.sample_latents(
                conditioning, num_inference_steps=steps, guidance_scale=guidance, eta=eta, sampler=sampler,
                generator=[item_generator] * len(chunk) if item_generator is not None else None,
            )
            waves = self.decoder.mel_to_waveform(self.decoder.latents_to_mel(latents))
            for wave in waves:
                piece = joiner.push(wave)[: max(0, keep - emitted)]
                emitted += piece.shape[0]
                if piece.shape[0]:
                    yield piece
        piece = joiner.finish()[: max(0, keep - emitted)]
        if piece.shape[0]:
            yield piece

    # ------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        input_features: torch.Tensor,
        input_features_mask: Optional[torch.Tensor] = None,
        num_samples: Optional[torch.Tensor] = None,
        return_dict: bool = True,
        **decode_kwargs,
    ) -> Union[SemantiCodecOutput, tuple]:
        """Encode then decode. With `num_samples` (from the feature extractor) every reconstruction has its
        input's length; without it, the original's (rounded up to the 0.16 s token budget)."""
        encoded = self.encode(input_features, input_features_mask=input_features_mask, num_samples=num_samples)
        decoded = self.decode(
            encoded.audio_codes, audio_codes_lengths=encoded.audio_codes_lengths, num_samples=num_samples,
            **decode_kwargs,
        )
        output = SemantiCodecOutput(
            audio_codes=encoded.audio_codes,
            audio_codes_mask=encoded.audio_codes_mask,
            audio_codes_lengths=encoded.audio_codes_lengths,
            audio_values=decoded.audio_values,
            audio_values_lengths=decoded.audio_values_lengths,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "SemantiCodecModel",
    "SemantiCodecPreTrainedModel",
    "SemantiCodecEncoderOutput",
    "SemantiCodecDecoderOutput",
    "SemantiCodecOutput",
]


# `save_pretrained` copies this file (and its relative imports) into the folder for `trust_remote_code=True`.
SemantiCodecModel.register_for_auto_class("AutoModel")

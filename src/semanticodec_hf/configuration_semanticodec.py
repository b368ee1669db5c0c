"""Configuration of SemantiCodec: one class holds every hyper-parameter of all four parts
(AudioMAE encoder + acoustic branch, latent-diffusion UNet, VAE, HiFi-GAN vocoder)."""

from __future__ import annotations

import copy
import math
from typing import Any, Optional

from transformers import PretrainedConfig

from .codec_timing import (
    DECODE_WINDOW_OVERLAP,
    PATCH_SIZE,
    SAMPLING_RATE,
    WINDOW_FRAMES,
    decode_overlap_frames,
    decode_overlap_samples,
    fbank_hop_samples,
    num_windows,
    patch_samples,
    reference_frame_count,
    reference_output_samples,
    stack_factor,
    window_samples,
)
from .config_events import config_built

PUBLISHED_TOKEN_RATES = (25, 50, 100)
PUBLISHED_SEMANTIC_VOCAB_SIZES = (4096, 8192, 16384, 32768)

# Per token rate: AudioMAE patch pooling (time, frequency) and LSTM depth of the official checkpoints.
_POOLING_BY_TOKEN_RATE = {100: (1, 1), 50: (1, 2), 25: (2, 2)}
_LSTM_LAYERS_BY_TOKEN_RATE = {100: 4, 50: 3, 25: 2}


def default_unet_config(cross_attention_dim: int) -> dict:
    """Kwargs of `diffusers.AudioLDM2UNet2DConditionModel` equal to the original openaimodel UNet."""
    return {
        "sample_size": None,
        "in_channels": 8,
        "out_channels": 8,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [64, 128, 192, 320],
        "layers_per_block": 2,
        "downsample_padding": 1,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        # (self-attention, cross-attention) widths per block; None = a second self-attention.
        "cross_attention_dim": [[None, cross_attention_dim]] * 4,
        # diffusers' naming: for this class `attention_head_dim` is the number of heads (32 channels each).
        "attention_head_dim": [2, 4, 6, 10],
        "use_linear_projection": False,
        "transformer_layers_per_block": 1,
    }


def default_vae_config() -> dict:
    """Kwargs of `diffusers.AutoencoderKL` equal to the original first-stage VAE (64-bin mel, 8 latent channels)."""
    return {
        "in_channels": 1,
        "out_channels": 1,
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "block_out_channels": [128, 256, 512],
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": 8,
        "norm_num_groups": 32,
        "sample_size": 256,
    }


def default_vocoder_config() -> dict:
    """Kwargs of `transformers.SpeechT5HifiGanConfig` equal to the original HiFi-GAN (64 mels, hop 160)."""
    return {
        "model_in_dim": 64,
        "sampling_rate": SAMPLING_RATE,
        "upsample_initial_channel": 1024,
        "upsample_rates": [5, 4, 2, 2, 2],
        "upsample_kernel_sizes": [16, 16, 8, 4, 4],
        "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "leaky_relu_slope": 0.1,
        "normalize_before": False,
    }


class SemantiCodecConfig(PretrainedConfig):
    r"""
    Configuration of a [`SemantiCodecModel`]. Defaults give the published 100 tokens/s, 8192-centroid variant;
    use [`SemantiCodecConfig.from_variant`] for any of the 12 published variants.

    Token layout: a *frame* holds one semantic id and one acoustic id, so `token_rate` (tokens/s, both streams)
    is twice the frame rate. Bitrate and rates are derived properties, never stored.

    Args:
        token_rate (`int`): total tokens per second over both streams (25, 50 or 100 for published models).
        semantic_vocab_size (`int`): number of k-means centroids of the semantic codebook.
        acoustic_codebook_size (`int`): size of the acoustic vector-quantiser codebook.
        sampling_rate (`int`): sampling rate the codec works at.
        num_mel_bins (`int`): Kaldi fbank bins of the AudioMAE front end.
        fbank_mean, fbank_std (`float`): AudioSet normalisation constants (`(x - mean) / (2 * std)`).
        window_frames (`int`): fbank frames per 10.24 s encoder window.
        patch_size (`int`): AudioMAE patch edge (frames and mel bins).
        audiomae_hidden_size, audiomae_num_layers, audiomae_num_heads, audiomae_intermediate_size,
        audiomae_layer_norm_eps: the ViT-B/16 AudioMAE encoder.
        audiomae_output_layers (`list[int]`): blocks whose final-norm outputs are averaged into the feature.
        pooling (`list[int]`): (time, frequency) patches concatenated into one frame: (1,1), (1,2), (2,2).
        lstm_num_layers (`int`): depth of the bidirectional acoustic LSTM.
        positional_encoding_dim (`int`): width of the sinusoidal position code appended to the conditioning.
        positional_encoding_max_len (`int`): rows of that table.
        vq_decay, vq_commitment_weight (`float`): training settings of the acoustic VQ (EMA decay, commitment).
        unet_config, vae_config, vocoder_config (`dict`): kwargs of the diffusers UNet / VAE and the
            transformers HiFi-GAN config.
        num_train_timesteps, beta_start, beta_end: the diffusion schedule (LDM "linear" = scaled linear).
        scale_factor (`float`): latent scale used before the VAE decode (the checkpoint's learned value).
        latent_channels, latent_time_size, latent_freq_size: shape of one window's diffusion latent.
        num_inference_steps, guidance_scale, ddim_eta: default sampler settings of the original decode.
        decode_window_overlap (`float`): fraction of a window by which decoder windows overlap.
        semantic_codebook_file (`str`, *optional*): name of the official centroid file (provenance only).
    """

    model_type = "semanticodec"

    def __init__(
        self,
        token_rate: int = 100,
        semantic_vocab_size: int = 8192,
        acoustic_codebook_size: int = 8192,
        sampling_rate: int = SAMPLING_RATE,
        num_mel_bins: int = 128,
        fbank_mean: float = -4.2677393,
        fbank_std: float = 4.5689974,
        window_frames: int = WINDOW_FRAMES,
        patch_size: int = PATCH_SIZE,
        audiomae_hidden_size: int = 768,
        audiomae_num_layers: int = 12,
        audiomae_num_heads: int = 12,
        audiomae_intermediate_size: int = 3072,
        audiomae_layer_norm_eps: float = 1e-6,
        audiomae_output_layers: Optional[list] = None,
        pooling: Optional[list] = None,
        lstm_num_layers: Optional[int] = None,
        positional_encoding_dim: int = 192,
        positional_encoding_max_len: int = 512,
        vq_decay: float = 0.9,
        vq_commitment_weight: float = 1.0,
        unet_config: Optional[dict] = None,
        vae_config: Optional[dict] = None,
        vocoder_config: Optional[dict] = None,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0015,
        beta_end: float = 0.0195,
        scale_factor: float = 1.0,
        latent_channels: int = 8,
        latent_time_size: int = 256,
        latent_freq_size: int = 16,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        ddim_eta: float = 1.0,
        decode_window_overlap: float = DECODE_WINDOW_OVERLAP,
        semantic_codebook_file: Optional[str] = None,
        **kwargs: Any,
    ):
        if token_rate not in _POOLING_BY_TOKEN_RATE and pooling is None:
            raise ValueError(
                f"token_rate={token_rate} has no default pooling; published token rates are "
                f"{PUBLISHED_TOKEN_RATES}. Pass `pooling` explicitly for a custom rate."
            )
        self.token_rate = int(token_rate)
        self.semantic_vocab_size = int(semantic_vocab_size)
        self.acoustic_codebook_size = int(acoustic_codebook_size)
        self.sampling_rate = int(sampling_rate)
        self.num_mel_bins = int(num_mel_bins)
        self.fbank_mean = float(fbank_mean)
        self.fbank_std = float(fbank_std)
        self.window_frames = int(window_frames)
        self.patch_size = int(patch_size)
        self.audiomae_hidden_size = int(audiomae_hidden_size)
        self.audiomae_num_layers = int(audiomae_num_layers)
        self.audiomae_num_heads = int(audiomae_num_heads)
        self.audiomae_intermediate_size = int(audiomae_intermediate_size)
        self.audiomae_layer_norm_eps = float(audiomae_layer_norm_eps)
        self.audiomae_output_layers = list(audiomae_output_layers) if audiomae_output_layers is not None else [9, 10, 11]
        self.pooling = list(pooling) if pooling is not None else list(_POOLING_BY_TOKEN_RATE[self.token_rate])
        self.lstm_num_layers = int(
            lstm_num_layers if lstm_num_layers is not None else _LSTM_LAYERS_BY_TOKEN_RATE.get(self.token_rate, 2)
        )
        self.positional_encoding_dim = int(positional_encoding_dim)
        self.positional_encoding_max_len = int(positional_encoding_max_len)
        self.vq_decay = float(vq_decay)
        self.vq_commitment_weight = float(vq_commitment_weight)
        self.unet_config = copy.deepcopy(unet_config) if unet_config is not None else default_unet_config(
            self.conditioning_dim
        )
        self.vae_config = copy.deepcopy(vae_config) if vae_config is not None else default_vae_config()
        self.vocoder_config = copy.deepcopy(vocoder_config) if vocoder_config is not None else default_vocoder_config()
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.scale_factor = float(scale_factor)
        self.latent_channels = int(latent_channels)
        self.latent_time_size = int(latent_time_size)
        self.latent_freq_size = int(latent_freq_size)
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.ddim_eta = float(ddim_eta)
        self.decode_window_overlap = float(decode_window_overlap)
        self.semantic_codebook_file = semantic_codebook_file
        super().__init__(**kwargs)
        self.validate_architecture()
        config_built()

    # ----------------------------------------------------------------------------------------- variants
    @classmethod
    def from_variant(cls, token_rate: int = 100, semantic_vocab_size: int = 8192, **kwargs: Any) -> "SemantiCodecConfig":
        """Config of a published variant (token rate 25/50/100 x semantic vocab 4096/8192/16384/32768)."""
        if token_rate not in PUBLISHED_TOKEN_RATES:
            raise ValueError(f"token_rate={token_rate} is not published; choose one of {PUBLISHED_TOKEN_RATES}.")
        if semantic_vocab_size not in PUBLISHED_SEMANTIC_VOCAB_SIZES:
            raise ValueError(
                f"semantic_vocab_size={semantic_vocab_size} is not published; choose one of "
                f"{PUBLISHED_SEMANTIC_VOCAB_SIZES}."
            )
        window_tokens = 512 * token_rate // 100
        kwargs.setdefault(
            "semantic_codebook_file",
            f"codebook_idx/combine_{window_tokens}_audioset_dominate/codebook_{semantic_vocab_size // 2}_0.npy",
        )
        return cls(token_rate=token_rate, semantic_vocab_size=semantic_vocab_size, **kwargs)

    @classmethod
    def tiny(cls, token_rate: int = 100, semantic_vocab_size: int = 64, **kwargs: Any) -> "SemantiCodecConfig":
        """A few-million-parameter config with the real window geometry, for tests and smoke demos only.

        Build the model with `SemantiCodecModel.tiny()`, which spreads its random weights so that ids vary and
        the output is audible; `SemantiCodecModel(SemantiCodecConfig.tiny())` keeps zero codebooks (every id 0)
        and a near-silent decoder. Either way the weights are random: never use it to judge quality.
        """
        pooling = list(_POOLING_BY_TOKEN_RATE[token_rate])
        hidden = 32
        conditioning_dim = 2 * hidden * pooling[0] * pooling[1] + 16
        unet = default_unet_config(conditioning_dim)
        unet.update(block_out_channels=[32, 32, 64, 64], attention_head_dim=[1, 1, 2, 2])
        vae = default_vae_config()
        vae.update(block_out_channels=[32, 32, 32], layers_per_block=1)
        vocoder = default_vocoder_config()
        vocoder.update(upsample_initial_channel=64, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])
        defaults = dict(
            acoustic_codebook_size=128,
            audiomae_hidden_size=hidden,
            audiomae_num_layers=2,
            audiomae_num_heads=2,
            audiomae_intermediate_size=64,
            audiomae_output_layers=[0, 1],
            lstm_num_layers=1,
            positional_encoding_dim=16,
            unet_config=unet,
            vae_config=vae,
            vocoder_config=vocoder,
        )
        defaults.update(kwargs)
        return cls(token_rate=token_rate, semantic_vocab_size=semantic_vocab_size, **defaults)

    def validate_architecture(self) -> None:
        """Reject inconsistent hyper-parameters early, with the values that disagree."""
        if len(self.pooling) != 2 or min(self.pooling) < 1:
            raise ValueError(f"pooling must be two positive ints (time, frequency), got {self.pooling}.")
        grid_t, grid_f = self.patch_grid
        if grid_t % self.pooling[0] or grid_f % self.pooling[1]:
            raise ValueError(f"pooling {self.pooling} does not divide the patch grid {self.patch_grid}.")
        if self.window_frames % self.patch_size or self.num_mel_bins % self.patch_size:
            raise ValueError(
                f"window_frames={self.window_frames} and num_mel_bins={self.num_mel_bins} must be multiples of "
                f"patch_size={self.patch_size}."
            )
        if self.positional_encoding_max_len < self.frames_per_window:
            raise ValueError(
                f"positional_encoding_max_len={self.positional_encoding_max_len} < frames_per_window="
                f"{self.frames_per_window}."
            )
        unet_cross = [dims[-1] for dims in self.unet_config.get("cross_attention_dim", [[None, None]])]
        if any(d is not None and d != self.conditioning_dim for d in unet_cross):
            raise ValueError(
                f"unet_config cross_attention_dim {unet_cross} does not match the conditioning width "
                f"{self.conditioning_dim} = 2 x feature_dim ({self.feature_dim}) + positional_encoding_dim "
                f"({self.positional_encoding_dim}). Build the config with SemantiCodecConfig.from_variant."
            )
        bad_layers = [i for i in self.audiomae_output_layers if not 0 <= i < self.audiomae_num_layers]
        if bad_layers:
            raise ValueError(
                f"audiomae_output_layers {bad_layers} are outside 0..{self.audiomae_num_layers - 1} "
                f"(audiomae_num_layers={self.audiomae_num_layers})."
            )
        for name in ("semantic_vocab_size", "acoustic_codebook_size"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2, got {getattr(self, name)}.")

    # -------------------------------------------------------------------------------- derived values
    @property
    def patch_grid(self) -> tuple:
        """AudioMAE patches per window as (time, frequency): (64, 8)."""
        return self.window_frames // self.patch_size, self.num_mel_bins // self.patch_size

    @property
    def feature_dim(self) -> int:
        """Width of one frame's semantic feature: AudioMAE width x pooled patches (768/1536/3072)."""
        return self.audiomae_hidden_size * self.pooling[0] * self.pooling[1]

    @property
    def conditioning_dim(self) -> int:
        """Width of the diffusion conditioning: [acoustic, semantic, position code]."""
        return 2 * self.feature_dim + self.positional_encoding_dim

    @property
    def frames_per_window(self) -> int:
        """Frames (semantic+acoustic id pairs) per 10.24 s window: 512 / 256 / 128."""
        grid_t, grid_f = self.patch_grid
        return (grid_t // self.pooling[0]) * (grid_f // self.pooling[1])

    @property
    def frame_rate(self) -> float:
        """Frames per second (= tokens per second of one stream)."""
        return self.frames_per_window / self.window_seconds

    @property
    def tokens_per_second(self) -> float:
        """Tokens per second over both streams (the published 'token rate')."""
        return 2 * self.frame_rate

    @property
    def semantic_bits(self) -> float:
        return math.log2(self.semantic_vocab_size)

    @property
    def acoustic_bits(self) -> float:
        return math.log2(self.acoustic_codebook_size)

    @property
    def bitrate(self) -> float:
        """Bits per second: frame rate x (log2 semantic vocab + log2 acoustic codebook)."""
        return self.frame_rate * (self.semantic_bits + self.acoustic_bits)

    @property
    def variant_name(self) -> str:
        return f"semanticodec_tokenrate_{self.token_rate}_vocab_{self.semantic_vocab_size}"

    # ------------------------------------------------------------------------------------ time arithmetic
    # Samples <-> fbank frames <-> codec frames <-> windows. Every module asks the config (or, without one, the
    # same `codec_timing` functions) rather than keeping its own 16000 / 160 / 2560 / 163840 / 10240.
    @property
    def fbank_hop_samples(self) -> int:
        """Samples between consecutive fbank frames (160: 10 ms), the unit of every other length below."""
        return fbank_hop_samples(self.sampling_rate)

    @property
    def window_samples(self) -> int:
        """Samples per encoder window (163840: `window_frames` fbank frames, 10.24 s); inputs are padded to whole
        windows, and decode windows hold `frames_per_window` frames of this much audio."""
        return window_samples(self.window_frames, self.sampling_rate)

    @property
    def window_seconds(self) -> float:
        """Duration of one window (10.24 s)."""
        return self.window_samples / self.sampling_rate

    @property
    def hop_length(self) -> int:
        """Audio samples per frame (320 / 640 / 1280; on average: frames are time-major over frequency groups)."""
        return self.window_samples // self.frames_per_window

    @property
    def patch_samples(self) -> int:
        """Samples per AudioMAE time patch (2560: `patch_size` fbank frames, 0.16 s); the token budget rounds every
        input up to whole patches."""
        return patch_samples(self.patch_size, self.sampling_rate)

    @property
    def patch_seconds(self) -> float:
        """Duration of one AudioMAE time patch (0.16 s)."""
        return self.patch_samples / self.sampling_rate

    @property
    def min_num_samples(self) -> int:
        """The shortest input the feature extractor accepts, in samples at `sampling_rate`: one patch (2560), since
        the encoder needs at least one whole time patch."""
        return self.patch_samples

    @property
    def stack_factor(self) -> float:
        """The original's K = 100 / token_rate (a float, as in the reference arithmetic)."""
        return stack_factor(self.token_rate)

    @property
    def decode_overlap_frames(self) -> int:
        """Frames a decode window shares with the next: `int(frames_per_window * decode_window_overlap)` (32 / 16 /
        8); `long_audio.decode_windows` starts windows every `frames_per_window - decode_overlap_frames` frames."""
        return decode_overlap_frames(self.frames_per_window, self.decode_window_overlap)

    @property
    def decode_overlap_samples(self) -> int:
        """Samples of the cross-fade between decoded windows (10240: 0.64 s): the audio of the overlap frames,
        `decode_overlap_frames * window_samples // frames_per_window`. Derived from the same overlap as the window
        split, so the cross-fade stays on the shared frames whatever `decode_window_overlap` is."""
        return decode_overlap_samples(self.frames_per_window, self.decode_window_overlap, self.window_samples)

    def num_windows(self, num_samples: int) -> int:
        """Encoder windows for an input of `num_samples` (at `sampling_rate`): `N // window_samples + 1`; the
        original always pads at least one sample, so an exact multiple of 10.24 s gains an empty window."""
        return num_windows(num_samples, self.window_samples)

    def frame_budget(self, num_samples: int) -> int:
        """The original's token budget for `num_samples`: frames after rounding the duration up to a 0.16 s patch
        with its float arithmetic (a whole extra patch at exact multiples, at times one frame more), before the
        cap at whole windows. What the LM continuation targets; `num_frames` is what the encoder keeps."""
        return reference_frame_count(
            num_samples, self.token_rate, self.sampling_rate, self.patch_size, self.patch_grid[1]
        )

    def num_frames(self, num_samples: int) -> int:
        """Frames the encoder returns for an input of `num_samples`: the token budget (`frame_budget`), capped at
        the frames of its `num_windows` windows (1.00 s -> 57 frames at 100 tokens/s, 10.24 s -> 520)."""
        return min(self.frame_budget(num_samples), self.num_windows(num_samples) * self.frames_per_window)

    def output_num_samples(self, num_frames: int) -> int:
        """Samples the original's decode keeps for `num_frames` frames: `int(((T / 8) * 16 * 0.01 * K) * 16000)` in
        double, truncated (the input length rounded up to the token budget; pass `num_samples` to `decode` to cut
        back to the input's own length)."""
        return reference_output_samples(
            num_frames, self.token_rate, self.sampling_rate, self.patch_size, self.patch_grid[1]
        )


__all__ = ["SemantiCodecConfig", "PUBLISHED_TOKEN_RATES", "PUBLISHED_SEMANTIC_VOCAB_SIZES"]


# `save_pretrained` copies this file into the folder and names it in `auto_map`, for `trust_remote_code=True`.
SemantiCodecConfig.register_for_auto_class()

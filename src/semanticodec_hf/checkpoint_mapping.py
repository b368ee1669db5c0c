"""Key mapping from the official checkpoints (`encoder.ckpt`, `decoder.ckpt`, centroid `.npy`) to
`SemantiCodecModel`'s state dict. Written once here; the converter and the parity tests both use it.

Every original key is either mapped or matched by an explicit, commented drop rule; anything
else is an error that names the keys.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional

import torch

from .configuration_semanticodec import SemantiCodecConfig


# ------------------------------------------------------------------------------------------ encoder

ENCODER_PREFIX = "encoder."
QUANTIZER_PREFIX = "quantizer."

# Original key prefix -> model key prefix (the modules mirror the original's sub-module layouts).
_ENCODER_RENAMES = (
    ("audiomae.model.", "encoder.audiomae."),  # AudioMAE ViT encoder: same names as the original (timm layout)
    ("encoder_output_linear.", "encoder.output_linear."),  # LSTM output projection 4D -> D
    ("encoder.", "encoder.lstm."),  # the original calls its bidirectional nn.LSTM `encoder`
)
_ENCODER_CODEBOOK_KEY = "quantizer._codebook.embed"  # [1, K, D] (one VQ head) -> quantizer.acoustic.codebook [K, D]
_CODEBOOK_KEY = "quantizer.acoustic.codebook"
_CENTROIDS_KEY = "quantizer.semantic.centroids"  # from the separate k-means .npy, not encoder.ckpt

# Original keys that inference never reads, dropped on purpose:
_ENCODER_DROPPED_PREFIXES = (
    "audiomae.model.decoder_",  # MAE pre-training decoder: decoder_{pos_embed, embed, blocks.N, norm, pred}
)
_ENCODER_DROPPED_KEYS = (
    "audiomae.model.mask_token",  # MAE pre-training decoder's mask token
    "quantizer._codebook.initted",  # VQ training flag: 0-d bool (vector-quantize-pytorch 1.32) or [1] float (1.14)
    "quantizer._codebook.cluster_size",  # VQ EMA training statistic
    "quantizer._codebook.embed_avg",  # VQ EMA training statistic
)
_FEATURE_DIM_TO_TOKEN_RATE = {768: 100, 1536: 50, 3072: 25}


def _encoder_module_key(original_key: str) -> Optional[str]:
    """Model key (`encoder.*` or `quantizer.*`) of a used original key; None when the key is not known."""
    if original_key == _ENCODER_CODEBOOK_KEY:
        return _CODEBOOK_KEY
    for old, new in _ENCODER_RENAMES:
        if original_key.startswith(old):
            return new + original_key[len(old):]
    return None


def _encoder_original_key(module_key: str) -> str:
    """Inverse of `_encoder_module_key`, to name missing keys the way the checkpoint spells them."""
    if module_key == _CODEBOOK_KEY:
        return _ENCODER_CODEBOOK_KEY
    for old, new in _ENCODER_RENAMES:
        if module_key.startswith(new):
            return old + module_key[len(new):]
    return module_key


def _encoder_target_shapes(config: SemantiCodecConfig) -> Dict[str, torch.Size]:
    """Persistent state-dict shapes of the model's `encoder` and `quantizer`, with their prefixes, built on the
    meta device (no memory)."""
    from .modeling_semanticodec_encoder import SemantiCodecEncoder
    from .modeling_semanticodec_quantizer import SemantiCodecQuantizer

    shapes = {}
    with torch.device("meta"):
        for prefix, module in ((ENCODER_PREFIX, SemantiCodecEncoder(config)),
                               (QUANTIZER_PREFIX, SemantiCodecQuantizer(config))):
            shapes.update({prefix + key: value.shape for key, value in module.state_dict().items()})
    return shapes


def map_encoder_state_dict(
    original: Dict[str, torch.Tensor],
    semantic_centroids: torch.Tensor,
    config: Optional[SemantiCodecConfig] = None,
) -> Dict[str, torch.Tensor]:
    """Original `encoder.ckpt` keys (+ the centroid array) -> model keys under `encoder.` (AudioMAE, LSTM,
    projection) and `quantizer.` (the acoustic codebook `quantizer._codebook.embed` and the centroids).

    `semantic_centroids` is the k-means `.npy` content `[V, D]` (numpy array or tensor). Without `config`
    the variant is inferred from D (768/1536/3072 -> 100/50/25 tokens/s) and V from the centroid rows.
    Tensors are returned as views of the inputs (no copy) except a non-float32 centroid array.
    Raises `ValueError` naming every unknown key, missing key and shape mismatch.
    """
    centroids = torch.as_tensor(semantic_centroids)
    if centroids.ndim != 2 or not centroids.is_floating_point():
        raise ValueError(
            f"semantic_centroids must be a float [vocab, feature_dim] array, got {tuple(centroids.shape)} "
            f"{centroids.dtype}."
        )
    centroids = centroids.to(torch.float32)
    if config is None:
        token_rate = _FEATURE_DIM_TO_TOKEN_RATE.get(int(centroids.shape[1]))
        if token_rate is None:
            raise ValueError(
                f"semantic_centroids have width {centroids.shape[1]}; published widths are "
                f"{sorted(_FEATURE_DIM_TO_TOKEN_RATE)}. Pass `config` for another layout."
            )
        config = SemantiCodecConfig(token_rate=token_rate, semantic_vocab_size=int(centroids.shape[0]))
    targets = _encoder_target_shapes(config)

    mapped: Dict[str, torch.Tensor] = {_CENTROIDS_KEY: centroids}
    unknown, mismatched = [], []
    for key, value in original.items():
        if key in _ENCODER_DROPPED_KEYS or key.startswith(_ENCODER_DROPPED_PREFIXES):
            if key.endswith("_codebook.initted") and value.numel() != 1:
                mismatched.append(f"{key}: expected 0-d or [1], got {tuple(value.shape)}")
            continue
        module_key = _encoder_module_key(key)
        if module_key is None or module_key not in targets:
            unknown.append(key)
            continue
        if key == _ENCODER_CODEBOOK_KEY:
            if value.ndim != 3 or value.shape[0] != 1:
                mismatched.append(f"{key}: expected [1, {', '.join(map(str, targets[module_key]))}], "
                                  f"got {list(value.shape)} (only single-head VQ codebooks are supported)")
                continue
            value = value[0]
        mapped[module_key] = value
    for module_key, value in mapped.items():
        if module_key in targets and tuple(value.shape) != tuple(targets[module_key]):
            name = "semantic_centroids" if module_key == _CENTROIDS_KEY else _encoder_original_key(module_key)
            mismatched.append(f"{name}: expected {list(targets[module_key])}, got {list(value.shape)}")
    missing = [_encoder_original_key(k) for k in targets if k not in mapped]

    problems = []
    if unknown:
        problems.append(f"unknown keys (neither mapped nor on the drop list): {sorted(unknown)}")
    if missing:
        problems.append(f"missing keys: {missing}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched}")
    if problems:
        raise ValueError(
            f"encoder checkpoint does not match token_rate={config.token_rate} (feature_dim {config.feature_dim}, "
            f"{config.lstm_num_layers} LSTM layers): " + "; ".join(problems)
        )
    return mapped


# ------------------------------------------------------------------------------------------ decoder

DECODER_PREFIX = "decoder."
_UNET_PREFIX = "model.diffusion_model."
_VAE_PREFIX = "first_stage_model."
_VOCODER_PREFIX = "first_stage_model.vocoder."
# Conditioning width (2 x feature_dim + 192) of each published token rate, read from the UNet's cross-attention.
_DECODER_CONTEXT_DIM_TO_TOKEN_RATE = {1728: 100, 3264: 50, 6336: 25}
_DECODER_CONTEXT_PROBE = _UNET_PREFIX + "input_blocks.4.2.transformer_blocks.0.attn2.to_k.weight"

# Original keys that inference never reads, dropped on purpose:
_DECODER_DROPPED_PREFIXES = (
    "model_ema.",  # EMA copy of the UNet (LitEma buffers + decay/num_updates); inference uses the live weights
)
_DECODER_DROPPED_KEYS = (
    "logvar",  # frozen Parameter of zeros, only used by the training loss
)
# The diffusion schedule buffers are recomputed from the config (`diffusion_schedule`), so they are not copied;
# they are checked against the recomputed values instead (a mismatch means a different schedule).

# openaimodel ResBlock sub-modules -> diffusers ResnetBlock2D
_UNET_RESNET_RENAMES = (
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
)
_UNET_ATTENTION_HEADS = ("norm.", "proj_in.", "proj_out.", "transformer_blocks.")
_UNET_FIXED_RENAMES = (
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("input_blocks.0.0.", "conv_in."),
    ("out.0.", "conv_norm_out."),
    ("out.2.", "conv_out."),
)
# LDM VAE mid-block attention (1x1 convs) -> diffusers Attention (linear layers)
_VAE_ATTENTION_RENAMES = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _unet_block_key(kind: str, block: int, rest: str, layers_per_block: int) -> Optional[str]:
    """One `input_blocks.N.J.*` / `output_blocks.N.J.*` / `middle_block.J.*` key (J and rest in `rest`)."""
    match = re.match(r"(\d+)\.(.*)", rest)
    if match is None:
        return None
    part, sub = int(match.group(1)), match.group(2)
    if kind == "middle_block":
        if part in (0, 3) and sub.startswith(tuple(old for old, _ in _UNET_RESNET_RENAMES)):
            return _rename_resnet(f"mid_block.resnets.{part // 3}.", sub)
        if part in (1, 2) and sub.startswith(_UNET_ATTENTION_HEADS):
            return f"mid_block.attentions.{part - 1}.{sub}"
        return None
    per_level = layers_per_block + 1
    if kind == "input_blocks":
        level, index = divmod(block - 1, per_level)
        if index == layers_per_block:  # the level's Downsample (stride-2 conv)
            return f"down_blocks.{level}.downsamplers.0.conv.{sub[3:]}" if part == 0 and sub.startswith("op.") else None
        prefix = f"down_blocks.{level}"
    else:
        level, index = divmod(block, per_level)
        prefix = f"up_blocks.{level}"
        if sub.startswith("conv.") and index == layers_per_block:  # the level's Upsample (nearest x2 + conv)
            return f"{prefix}.upsamplers.0.conv.{sub[5:]}"
    if part == 0:
        return _rename_resnet(f"{prefix}.resnets.{index}.", sub)
    if part in (1, 2) and sub.startswith(_UNET_ATTENTION_HEADS):
        # two transformers per resnet: a self-attention-only one (J = 1) then the cross-attention one (J = 2)
        return f"{prefix}.attentions.{2 * index + part - 1}.{sub}"
    return None


def _rename_resnet(prefix: str, sub: str) -> Optional[str]:
    for old, new in _UNET_RESNET_RENAMES:
        if sub.startswith(old):
            return prefix + new + sub[len(old):]
    return None


def _unet_module_key(key: str, layers_per_block: int) -> Optional[str]:
    """`model.diffusion_model.*` -> `unet.*` (diffusers AudioLDM2UNet2DConditionModel), spec section 9.1."""
    name = key[len(_UNET_PREFIX):]
    for old, new in _UNET_FIXED_RENAMES:
        if name.startswith(old):
            return "unet." + new + name[len(old):]
    match = re.match(r"(input_blocks|output_blocks)\.(\d+)\.(.*)", name) or re.match(r"(middle_block)\.()(.*)", name)
    if match is None:
        return None
    kind, block, rest = match.group(1), int(match.group(2) or 0), match.group(3)
    mapped = _unet_block_key(kind, block, rest, layers_per_block)
    return "unet." + mapped if mapped is not None else None


def _vae_module_key(key: str, num_levels: int) -> Optional[str]:
    """`first_stage_model.{encoder,decoder,quant_conv,post_quant_conv}.*` -> `vae.*` (diffusers AutoencoderKL)."""
    name = key[len(_VAE_PREFIX):]
    if name.startswith(("quant_conv.", "post_quant_conv.")):
        return "vae." + name
    match = re.match(r"(encoder|decoder)\.(.*)", name)
    if match is None:
        return None
    side, rest = match.groups()
    rest = rest.replace("nin_shortcut.", "conv_shortcut.")
    if rest.startswith("norm_out."):
        rest = "conv_norm_out." + rest[len("norm_out."):]
    elif rest.startswith(("conv_in.", "conv_out.")):
        pass
    elif re.match(r"mid\.block_[12]\.", rest):
        rest = f"mid_block.resnets.{int(rest[10]) - 1}." + rest[len("mid.block_1."):]
    elif (attn := re.match(r"mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$", rest)) is not None:
        rest = f"mid_block.attentions.0.{_VAE_ATTENTION_RENAMES[attn.group(1)]}.{attn.group(2)}"
    elif side == "encoder" and (down := re.match(r"down\.(\d+)\.(block\.(\d+)|downsample)\.(.*)", rest)) is not None:
        level = down.group(1)
        rest = (f"down_blocks.{level}.resnets.{down.group(3)}." if down.group(3) is not None
                else f"down_blocks.{level}.downsamplers.0.") + down.group(4)
    elif side == "decoder" and (up := re.match(r"up\.(\d+)\.(block\.(\d+)|upsample)\.(.*)", rest)) is not None:
        level = num_levels - 1 - int(up.group(1))  # the original numbers up levels bottom-up, diffusers top-down
        rest = (f"up_blocks.{level}.resnets.{up.group(3)}." if up.group(3) is not None
                else f"up_blocks.{level}.upsamplers.0.") + up.group(4)
    else:
        return None
    return f"vae.{side}.{rest}"


def _vocoder_module_key(key: str) -> str:
    """`first_stage_model.vocoder.*` -> `vocoder.*` (SpeechT5HifiGan): only `ups.i` is renamed `upsampler.i`."""
    name = key[len(_VOCODER_PREFIX):]
    return "vocoder." + (("upsampler." + name[len("ups."):]) if name.startswith("ups.") else name)


def _decoder_module_key(key: str, config: SemantiCodecConfig) -> Optional[str]:
    if key == "scale_factor":
        return "scale_factor"
    if key.startswith(_UNET_PREFIX):
        return _unet_module_key(key, int(config.unet_config.get("layers_per_block", 2)))
    if key.startswith(_VOCODER_PREFIX):
        return _vocoder_module_key(key)
    if key.startswith(_VAE_PREFIX):
        return _vae_module_key(key, len(config.vae_config.get("block_out_channels", (128, 256, 512))))
    return None


def _decoder_target_shapes(config: SemantiCodecConfig) -> Dict[str, torch.Size]:
    """Persistent state-dict shapes of `SemantiCodecDecoder(config)`, built on the meta device (no memory)."""
    from .modeling_semanticodec_decoder import SemantiCodecDecoder

    with torch.device("meta"):
        module = SemantiCodecDecoder(config)
    return {key: value.shape for key, value in module.state_dict().items()}


def _check_decoder_schedule(original: Dict[str, torch.Tensor], config: SemantiCodecConfig) -> List[str]:
    """Differences between the checkpoint's schedule buffers and the ones the module recomputes."""
    from .modeling_semanticodec_decoder import SCHEDULE_BUFFER_NAMES, diffusion_schedule

    expected = diffusion_schedule(config.num_train_timesteps, config.beta_start, config.beta_end)
    problems = []
    for name in SCHEDULE_BUFFER_NAMES:
        if name not in original:
            continue  # absent is fine: the module recomputes them
        if original[name].is_meta:  # key/shape-only accounting (no data to compare)
            if original[name].shape != expected[name].shape:
                problems.append(f"{name}: expected {list(expected[name].shape)}, got {list(original[name].shape)}")
            continue
        value = original[name].detach().to("cpu", torch.float32)
        if value.shape != expected[name].shape:
            problems.append(f"{name}: expected {list(expected[name].shape)}, got {list(value.shape)}")
        elif not torch.allclose(value, expected[name], rtol=1e-6, atol=0.0):
            diff = (value - expected[name]).abs().max().item()
            problems.append(f"{name}: differs from the recomputed schedule by up to {diff:.3g}")
    return problems


def map_decoder_state_dict(
    original: Dict[str, torch.Tensor], config: Optional[SemantiCodecConfig] = None
) -> Dict[str, torch.Tensor]:
    """Original `decoder.ckpt` keys -> model keys under `decoder.` (`SemantiCodecDecoder`).

    UNet `model.diffusion_model.*` -> `unet.*` (spec 9.1), VAE `first_stage_model.*` -> `vae.*` (spec 10; the 1x1
    conv attention weights are squeezed to linear weights), vocoder -> `vocoder.*` (`ups` -> `upsampler`, plus the
    identity `mean`/`scale` buffers SpeechT5HifiGan expects), `scale_factor` kept. Dropped on purpose:
    `model_ema.*`, `logvar` and the 12 schedule buffers (recomputed; raises if the checkpoint's differ).
    Without `config` the token rate is read from the UNet's cross-attention width.
    Raises `ValueError` naming every unknown key, missing key and shape mismatch.
    """
    from .modeling_semanticodec_decoder import SCHEDULE_BUFFER_NAMES

    if config is None:
        probe = original.get(_DECODER_CONTEXT_PROBE)
        token_rate = _DECODER_CONTEXT_DIM_TO_TOKEN_RATE.get(int(probe.shape[-1])) if probe is not None else None
        if token_rate is None:
            raise ValueError(
                f"cannot infer the token rate: `{_DECODER_CONTEXT_PROBE}` is "
                f"{'missing' if probe is None else f'of width {probe.shape[-1]}'}; published conditioning widths are "
                f"{sorted(_DECODER_CONTEXT_DIM_TO_TOKEN_RATE)}. Pass `config` for another layout."
            )
        config = SemantiCodecConfig(token_rate=token_rate)
    targets = _decoder_target_shapes(config)

    mapped: Dict[str, torch.Tensor] = {}
    sources: Dict[str, str] = {}
    unknown, mismatched = [], []
    for key, value in original.items():
        if key in _DECODER_DROPPED_KEYS or key.startswith(_DECODER_DROPPED_PREFIXES) or key in SCHEDULE_BUFFER_NAMES:
            continue
        module_key = _decoder_module_key(key, config)
        if module_key is None or module_key not in targets:
            unknown.append(key)
            continue
        if module_key in mapped:
            mismatched.append(f"{key}: maps to {module_key} like {sources[module_key]}")
            continue
        if module_key.startswith("vae.") and ".mid_block.attentions.0.to_" in module_key and value.ndim == 4:
            value = value.reshape(value.shape[0], value.shape[1])  # 1x1 conv -> linear
        mapped[module_key] = value
        sources[module_key] = key
    # SpeechT5HifiGan normalises its input with (x - mean) / scale when `normalize_before`; the original has no
    # such step, so the buffers are the identity (and unused with normalize_before=False).
    for name, fill in (("vocoder.mean", 0.0), ("vocoder.scale", 1.0)):
        if name in targets and name not in mapped:
            mapped[name] = torch.full(tuple(targets[name]), fill, dtype=torch.float32)
            sources[name] = f"(identity {name.split('.')[-1]})"
    for module_key, value in mapped.items():
        if tuple(value.shape) != tuple(targets[module_key]):
            mismatched.append(f"{sources[module_key]}: expected {list(targets[module_key])}, got {list(value.shape)}")
    missing = sorted(k for k in targets if k not in mapped)

    problems = []
    if unknown:
        problems.append(f"unknown keys (neither mapped nor on the drop list): {sorted(unknown)}")
    if missing:
        problems.append(f"missing keys (module names): {missing}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched}")
    problems.extend(f"schedule buffer {p}" for p in _check_decoder_schedule(original, config))
    if problems:
        raise ValueError(
            f"decoder checkpoint does not match token_rate={config.token_rate} (conditioning width "
            f"{config.conditioning_dim}): " + "; ".join(problems)
        )
    return {DECODER_PREFIX + key: value for key, value in mapped.items()}

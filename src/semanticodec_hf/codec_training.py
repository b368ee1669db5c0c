"""Training-time pieces of SemantiCodec (used by `recipes/train_codec.py`): the acoustic VQ with EMA codebook
updates and the joint objective of the acoustic branch and the diffusion UNet.

What trains and what stays frozen follows the paper: AudioMAE, the semantic k-means codebook, the VAE and the
vocoder are frozen; the LSTM + output projection (through a straight-through VQ with a commitment loss and an
EMA-updated codebook, as vector-quantize-pytorch's `VectorQuantize(decay=0.9, commitment_weight=1.0)` trains it)
and the UNet (v-prediction on VAE latents of the 64-bin log-mel) learn together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

from .conditioning import unconditional_conditioning
from .modeling_semanticodec_encoder import frames_kept, mark_out_padding, padding_cut

# What the paper trains: parameters under these prefixes (everything else is frozen), plus the acoustic codebook,
# a buffer that follows EMA updates instead of gradients.
TRAINED_PARAMETER_PREFIXES = ("encoder.lstm.", "encoder.output_linear.", "decoder.unet.")
TRAINED_BUFFERS = ("quantizer.acoustic.codebook",)


def is_trained(name: str) -> bool:
    """Whether a codec state-dict entry is learnt by the codec recipe (True) or frozen pretrained (False)."""
    return name.startswith(TRAINED_PARAMETER_PREFIXES) or name in TRAINED_BUFFERS


class PlacedEMAModel(EMAModel):
    """diffusers' `EMAModel` whose shadow weights stay on one device, also after a resume.

    `EMAModel` keeps its copies where the parameters were when it was built, and a resume restores them from CPU
    tensors (`training_utils.load_custom_states` loads them onto the CPU): either way the copies
    would sit on the CPU while the UNet trains on a GPU, and the first `step` would fail on the device mismatch.
    """

    def __init__(self, parameters: Iterable[nn.Parameter], device: Union[str, torch.device], **kwargs):
        super().__init__(parameters, **kwargs)
        self.device = torch.device(device)
        self.to(self.device)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.to(self.device)


@torch.no_grad()
def reinitialize_trained_parts(codec: nn.Module, seed: int = 0) -> List[str]:
    """Give the parts the paper trains fresh initial weights; the frozen pretrained parts are left untouched.

    For retraining a converted codec from scratch on its own frozen AudioMAE, semantic codebook, VAE and vocoder.
    Initialisation as in the original code: PyTorch's defaults for the LSTM and the output projection; the acoustic
    codebook kaiming-uniform on its `[1, V, D]` layout (vector-quantize-pytorch's default without k-means init);
    the UNet with PyTorch's defaults and, like LDM's openaimodel `zero_module`, zeros in the last convolution of
    every residual block, every transformer's output projection and the output convolution. Seeded, and the
    global RNG state is restored afterwards. Returns the re-initialised state-dict names.
    """
    encoder, decoder = codec.encoder, codec.decoder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder.lstm.reset_parameters()
        encoder.output_linear.reset_parameters()
        codebook = torch.empty(1, *codec.quantizer.acoustic.codebook.shape)
        nn.init.kaiming_uniform_(codebook)
        codec.quantizer.acoustic.codebook.copy_(codebook[0])
        fresh = type(decoder.unet)(**codec.config.unet_config)
    for name, module in fresh.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if (leaf == "conv2" and ".resnets." in name) or (leaf == "proj_out" and ".attentions." in name) \
                or name == "conv_out":
            nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    decoder.unet.load_state_dict(fresh.state_dict())
    return [name for name in codec.state_dict() if is_trained(name)]


class EMAVectorQuantizerTrainer(nn.Module):
    """Straight-through VQ over the codec's acoustic codebook, updated in place by exponential moving averages.

    Our own (not vector-quantize-pytorch) because the inference quantizer is a plain buffer of the model; this
    module keeps only the EMA statistics (`cluster_size`, `embed_sum`) beside it, and sums them over processes.
    """

    def __init__(self, quantizer: nn.Module, decay: float = 0.9, epsilon: float = 1e-5):
        super().__init__()
        self._quantizer = [quantizer]  # a list: not registered twice, and follows the model across devices
        self.decay, self.epsilon = decay, epsilon
        self.register_buffer("cluster_size", torch.ones(quantizer.codebook.shape[0]))
        self.register_buffer("embed_sum", quantizer.codebook.detach().clone())

    @property
    def codebook(self) -> torch.Tensor:
        """The model's acoustic codebook buffer (updated in place)."""
        return self._quantizer[0].codebook

    def forward(self, residual: torch.Tensor, valid: torch.Tensor):
        """`residual [N, W, D]`, `valid [N, W]` bool -> (straight-through quantized, ids, commitment loss)."""
        flat = residual.reshape(-1, residual.shape[-1])
        with torch.no_grad():
            distances = torch.cdist(flat.float(), self.codebook.float())
            ids = distances.argmin(dim=-1)
        quantized = F.embedding(ids, self.codebook).view_as(residual)
        mask = valid.reshape(-1)
        commitment = F.mse_loss(flat[mask], quantized.reshape(-1, residual.shape[-1])[mask].detach()) if mask.any() \
            else residual.sum() * 0.0
        if self.training:
            self._update(flat.detach()[mask], ids[mask])
        return residual + (quantized - residual).detach(), ids.view(residual.shape[:-1]), commitment

    @torch.no_grad()
    def _update(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        onehot = F.one_hot(ids, self.codebook.shape[0]).type_as(vectors)
        counts, sums = onehot.sum(0), onehot.t() @ vectors
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.codebook.shape[0] * self.epsilon) * total
        self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(1))


@dataclass
class CodecLosses:
    loss: torch.Tensor
    diffusion: torch.Tensor
    commitment: torch.Tensor
    codebook_usage: torch.Tensor  # distinct acoustic ids in the batch / codebook size


class SemantiCodecTrainingModule(nn.Module):
    """The codec under training: `forward(windows, mel, generator)` -> losses.

    windows: normalised fbank windows `[B, 1024, 128]`; mel: the VAE-domain log-mel `[B, 1024, 64]` of the same
    10.24 s; generator: the source of the timesteps, noise, VAE posterior sample and conditioning dropout (training
    mode only), so a step is a pure function of its inputs (exact resume without restoring global RNG state).
    """

    def __init__(self, codec, commitment_weight: float = 1.0, vq_decay: float = 0.9, uncond_probability: float = 0.1):
        super().__init__()
        self.codec = codec
        self.commitment_weight, self.uncond_probability = commitment_weight, uncond_probability
        self.vq = EMAVectorQuantizerTrainer(codec.quantizer.acoustic, decay=vq_decay)
        for name, parameter in codec.named_parameters():
            parameter.requires_grad_(name.startswith(TRAINED_PARAMETER_PREFIXES))

    def conditioning(self, windows: torch.Tensor, generator: Optional[torch.Generator] = None):
        """Fbank windows -> (UNet conditioning `[B, W, 2D + P]` with gradients into the acoustic branch, losses)."""
        encoder, quantizer, config = self.codec.encoder, self.codec.quantizer, self.codec.config
        with torch.no_grad():
            frames = encoder.pool(encoder.audiomae(windows))
            semantic = quantizer.semantic.embed(quantizer.semantic(frames))
            kept = frames_kept(padding_cut(windows), config.window_frames, config.frames_per_window)
        residual = encoder.output_linear(encoder.lstm(mark_out_padding(torch.cat([frames, semantic], -1), kept))[0])
        valid = torch.arange(residual.shape[1], device=residual.device)[None] < kept[:, None].to(residual.device)
        acoustic, ids, commitment = self.vq(residual, valid)
        conditioning = quantizer.add_positional_encoding(mark_out_padding(torch.cat([acoustic, semantic], -1), kept))
        if generator is not None and self.training and self.uncond_probability > 0:  # no dropout in eval
            drop = torch.rand(conditioning.shape[0], generator=generator) < self.uncond_probability
            unconditional = unconditional_conditioning(conditioning, self.codec.decoder.feature_width)
            conditioning = torch.where(drop.to(conditioning.device)[:, None, None], unconditional, conditioning)
        usage = ids[valid].unique().numel() / self.vq.codebook.shape[0]
        return conditioning, commitment, torch.tensor(usage)

    @torch.no_grad()
    def latents(self, mel: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """VAE posterior sample of the mel, times the checkpoint's `scale_factor` (the diffusion domain)."""
        decoder = self.codec.decoder
        posterior = decoder.vae.encode(mel.unsqueeze(1).to(decoder.vae.dtype)).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
        return (posterior.mean + posterior.std * noise).float() * decoder.scale_factor

    def forward(self, windows: torch.Tensor, mel: torch.Tensor, generator: torch.Generator,
                timesteps: Optional[torch.Tensor] = None) -> CodecLosses:
        """Losses of one batch; `timesteps` `[B]` fixes the DDPM timesteps (validation), else they are drawn."""
        conditioning, commitment, usage = self.conditioning(windows, generator)
        clean = self.latents(mel, generator)
        if timesteps is None:
            timesteps = torch.randint(0, self.codec.decoder.sqrt_alphas_cumprod.shape[0], (clean.shape[0],),
                                      generator=generator)
        noise = torch.randn(clean.shape, generator=generator).to(clean)
        diffusion = self.diffusion_loss(conditioning, clean, noise, timesteps)
        return CodecLosses(diffusion + self.commitment_weight * commitment, diffusion.detach(), commitment.detach(),
                           usage)

    def diffusion_loss(self, conditioning: torch.Tensor, clean: torch.Tensor, noise: torch.Tensor,
                       timesteps: torch.Tensor) -> torch.Tensor:
        """v-prediction MSE of the UNet on `clean` latents noised with `noise` at `timesteps` `[B]` (on its own,
        so validation can score several timesteps of one batch without recomputing conditioning and latents)."""
        decoder = self.codec.decoder
        timesteps = timesteps.to(clean.device)
        # The checkpoint's own schedule buffers (bit-identical to the original's), not a re-derived schedule.
        a = decoder.sqrt_alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        s = decoder.sqrt_one_minus_alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        noisy, target = a * clean + s * noise, a * noise - s * clean
        prediction = decoder.predict_v(noisy, timesteps, conditioning)
        return F.mse_loss(prediction.float(), target)


def trainable_parameters(module: nn.Module) -> Dict[str, int]:
    """Parameter counts by top-level part, trainable only (for the run summary)."""
    counts: Dict[str, int] = {}
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            key = ".".join(name.split(".")[:3])
            counts[key] = counts.get(key, 0) + parameter.numel()
    return counts

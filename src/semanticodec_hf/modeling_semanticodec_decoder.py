"""The SemantiCodec decoder: conditioning -> latent diffusion (UNet, v-prediction) -> VAE -> HiFi-GAN.

The three networks are the library classes that express the original modules exactly
(`diffusers.AudioLDM2UNet2DConditionModel`, `diffusers.AutoencoderKL`, `transformers.SpeechT5HifiGan`);
this module only adds the diffusion schedule, the original DDIM sampler and the batching over windows.
Everything here works on N independent 10.24 s windows at once.
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from diffusers import (
    AudioLDM2UNet2DConditionModel,
    AutoencoderKL,
    ConfigMixin,
    SchedulerMixin,
)
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from tqdm.auto import tqdm
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from .channels_last import channels_last_convolutions
from .conditioning import unconditional_conditioning
from .configuration_semanticodec import SemantiCodecConfig
from .cpu_info import cpu_model_name, has_native_bfloat16
from .solver_schedulers import ExactRootDPMSolverMultistepScheduler, ExactRootUniPCMultistepScheduler
from .unet_context_cache import cache_cross_attention_context

GeneratorArg = Optional[Union[torch.Generator, Sequence[torch.Generator]]]

# Faster solvers offered next to the reference DDIM: name -> (diffusers scheduler class, extra kwargs).
# All are deterministic given x_T (ODE solvers), so they consume exactly one noise draw per window. Their schedule's
# square roots are rounded once, so they give the same bits on every CPU (`solver_schedulers.py`).
DIFFUSERS_SAMPLERS: Dict[str, tuple] = {
    "dpmsolver++": (ExactRootDPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": (ExactRootUniPCMultistepScheduler, {"solver_order": 2}),
}
SAMPLERS = ("ddim",) + tuple(DIFFUSERS_SAMPLERS)

# On a CPU the vocoder's long 1-D activations (up to 32 x 163872 floats per window) stop fitting in cache when
# windows are batched: one window per call is faster and lighter (`benchmarks/codec_speed.py` measures it; the
# README's "Speed and memory" has the numbers). Other devices batch by `max_batch_size`.
VOCODER_WINDOWS_PER_CALL_ON_CPU = 1

# Precisions the decoder's networks can run in (`SemantiCodecDecoder.set_network_dtype`). float32 is the
# original's; bfloat16 is an opt-in speed-up (CPUs with native bfloat16, recent GPUs): each network call is
# ~1e-2 (relative) off its float32 result, so waveforms are close to, not equal to, the original's. The diffusion
# update, the guidance combination and the schedule always stay in float32. float16 is for GPUs only.
NETWORK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _channels_last_plan(device: torch.device, dtype: torch.dtype) -> Dict[str, bool]:
    """Which networks run on channels-last kernels (`channels_last.py`): on a CPU, where `benchmarks/codec_speed.py`
    found them faster on the full-size networks (numbers in the README's "Speed and memory"): the vocoder and the
    VAE in both precisions, the UNet in bfloat16 only (in float32 it was slower). Elsewhere the libraries' own
    layouts are kept."""
    on_cpu = device.type == "cpu"
    return {"unet": on_cpu and dtype != torch.float32, "vae": on_cpu, "vocoder": on_cpu}

# Buffers of the original `LatentDiffusion`, in its registration order (all recomputable from the config).
SCHEDULE_BUFFER_NAMES = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
# The subset the sampler reads; kept on the module as non-persistent buffers.
_SAMPLER_BUFFERS = ("betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")


# --------------------------------------------------------------------------------------------- schedule
def diffusion_schedule(
    num_train_timesteps: int = 1000, beta_start: float = 0.0015, beta_end: float = 0.0195
) -> Dict[str, torch.Tensor]:
    """The original's 12 schedule arrays, bit-identical to its buffers.

    LDM's "linear" schedule (diffusers: "scaled_linear"): betas from a float64 torch linspace of the square
    roots, every derived array computed in float64 with numpy, then rounded to float32 once.
    """
    # Explicit CPU: the values must exist even when the module is built under a meta-device context.
    root_betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64, device="cpu")
    betas = (root_betas**2).numpy()
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas, axis=0)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)  # v_posterior = 0
    values = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
    }
    return {name: torch.tensor(values[name], dtype=torch.float32, device="cpu") for name in SCHEDULE_BUFFER_NAMES}


def _reference_step_count_problem(num_inference_steps: int, num_train_timesteps: int) -> Optional[str]:
    if not isinstance(num_inference_steps, (int, np.integer)) or isinstance(num_inference_steps, bool):
        return f"num_inference_steps must be an int, got {num_inference_steps!r}"
    if not 1 <= num_inference_steps <= num_train_timesteps:
        return f"num_inference_steps must be in 1..{num_train_timesteps}, got {num_inference_steps}"
    spacing = num_train_timesteps // num_inference_steps
    if (num_train_timesteps - 1) % spacing == 0:
        return (
            f"num_inference_steps={num_inference_steps} gives the spacing {num_train_timesteps} // "
            f"{num_inference_steps} = {spacing}, which divides {num_train_timesteps - 1}, so the original's "
            f"'uniform' timesteps reach t = {num_train_timesteps} (out of range; the original sampler crashes)"
        )
    return None


def valid_ddim_step_counts(num_train_timesteps: int = 1000) -> List[int]:
    """Step counts the original DDIM accepts (it crashes on the others, e.g. 3, 9, 27, 36, 37, 101..111)."""
    steps = range(1, num_train_timesteps + 1)
    return [s for s in steps if _reference_step_count_problem(s, num_train_timesteps) is None]


def reference_ddim_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000) -> torch.LongTensor:
    """The original's DDIM timesteps, DESCENDING: `range(0, T, T // S) + 1` reversed.

    It runs `ceil(T / (T // S))` steps, more than S when S does not divide T (S = 30 -> 31 steps, 991..1).
    Raises `ValueError` for the counts that crash the original, naming the nearest valid ones.
    """
    problem = _reference_step_count_problem(num_inference_steps, num_train_timesteps)
    if problem is not None:
        valid = valid_ddim_step_counts(num_train_timesteps)
        nearby = []
        if isinstance(num_inference_steps, (int, np.integer)):
            below = [s for s in valid if s < num_inference_steps]
            above = [s for s in valid if s > num_inference_steps]
            nearby = below[-2:] + above[:2]
        raise ValueError(
            f"{problem}. Nearby valid step counts: {nearby or valid[:5]}. (Counts that divide "
            f"{num_train_timesteps}, e.g. 5, 10, 20, 25, 50, 100, 200, run exactly that many steps.)"
        )
    spacing = num_train_timesteps // int(num_inference_steps)
    return (torch.arange(0, num_train_timesteps, spacing, dtype=torch.long) + 1).flip(0)


def ddim_sampling_parameters(
    alphas_cumprod: torch.Tensor, timesteps: torch.LongTensor, eta: float
) -> Dict[str, torch.Tensor]:
    """Per-step `alpha_prev` and `sigma` (float32, aligned with the descending `timesteps`), as the original.

    The original mixes a float32 tensor and float64 numpy arrays: `1 - alpha` is rounded to float32, the rest
    of sigma is float64; `alpha_prev` of the last step is `alphas_cumprod[0]` (not 1).
    """
    alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float32)
    ascending = timesteps.cpu().flip(0)
    alphas = alphas_cumprod[ascending]  # float32
    alphas_prev = torch.cat([alphas_cumprod[:1], alphas_cumprod[ascending[:-1]]]).double()
    one_minus_alphas = (1 - alphas).double()  # rounded in float32 first, as in the original
    sigmas = eta * torch.sqrt((1 - alphas_prev) / one_minus_alphas * (1 - alphas.double() / alphas_prev))
    return {"alphas_prev": alphas_prev.float().flip(0), "sigmas": sigmas.float().flip(0)}


class ReferenceDDIMScheduler(SchedulerMixin, ConfigMixin):
    """The original's DDIM sampler (v-prediction), with the `set_timesteps` / `step` interface of diffusers'
    schedulers so that one loop drives it and the diffusers solvers.

    Written out rather than configured from diffusers' `DDIMScheduler`, which takes sigma and sqrt(alpha) in
    float32 (the original: float64 / float64-derived buffers, ~1e-6 apart) and needs its timestep list patched
    whenever S does not divide 1000. Here, as in the original:

    - `set_timesteps(S)`: the original's "uniform" timesteps (`reference_ddim_timesteps`: more than S steps when
      S does not divide T; `ValueError` for the counts that crash the original) and, per step, `alpha_prev` and
      `sigma` computed in float64 and rounded to float32 once (`ddim_sampling_parameters`, with `eta` from the
      config);
    - `step`: `eps = A v + S x`, `x0 = A x - S v` with A, S the float32 schedule buffers at t, then
      `x = sqrt(alpha_prev) x0 + sqrt(1 - alpha_prev - sigma^2) eps + sigma n`. It uses one noise draw `n` at
      every step, the last one included and whatever `eta` is (`draws_noise_every_step`): pass it as
      `variance_noise`, or it is drawn from `generator`.
    """

    order = 1
    init_noise_sigma = 1.0
    draws_noise_every_step = True

    @register_to_config
    def __init__(
        self, num_train_timesteps: int = 1000, beta_start: float = 0.0015, beta_end: float = 0.0195, eta: float = 1.0
    ):
        schedule = diffusion_schedule(num_train_timesteps, beta_start, beta_end)
        self.alphas_cumprod = schedule["alphas_cumprod"]
        self.sqrt_alphas_cumprod = schedule["sqrt_alphas_cumprod"]
        self.sqrt_one_minus_alphas_cumprod = schedule["sqrt_one_minus_alphas_cumprod"]
        self.num_inference_steps: Optional[int] = None
        self.timesteps: Optional[torch.LongTensor] = None
        self.alphas_prev: Optional[torch.Tensor] = None
        self.sigmas: Optional[torch.Tensor] = None
        self._step_index_of: Dict[int, int] = {}

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def set_timesteps(self, num_inference_steps: int, device: Union[str, torch.device, None] = None) -> None:
        """The original's timesteps for `num_inference_steps` (descending) and their DDIM parameters."""
        timesteps = reference_ddim_timesteps(num_inference_steps, self.config.num_train_timesteps)
        params = ddim_sampling_parameters(self.alphas_cumprod, timesteps, self.config.eta)
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = timesteps.to(device)
        self.alphas_prev = params["alphas_prev"].to(device)
        self.sigmas = params["sigmas"].to(device)
        self.sqrt_alphas_cumprod = self.sqrt_alphas_cumprod.to(device)
        self.sqrt_one_minus_alphas_cumprod = self.sqrt_one_minus_alphas_cumprod.to(device)
        self._step_index_of = {t: i for i, t in enumerate(timesteps.tolist())}

    def scale_model_input(self, sample: torch.Tensor, timestep: Union[int, torch.Tensor, None] = None) -> torch.Tensor:
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        variance_noise: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ) -> Union[DDIMSchedulerOutput, tuple]:
        """One DDIM step from `sample` (x_t) with the v-prediction `model_output` at `timestep` (one of
        `self.timesteps`). Returns x_{t_prev} and the predicted x0 (`DDIMSchedulerOutput`, or a tuple)."""
        if self.timesteps is None:
            raise ValueError("Call `set_timesteps(num_inference_steps)` before `step`.")
        t = int(timestep)
        index = self._step_index_of.get(t)
        if index is None:
            raise ValueError(f"timestep {t} is not one of this schedule's timesteps {self.timesteps.tolist()}.")
        sqrt_alpha = self.sqrt_alphas_cumprod[t].to(sample.device)
        sqrt_one_minus_alpha = self.sqrt_one_minus_alphas_cumprod[t].to(sample.device)
        eps = sqrt_alpha * model_output + sqrt_one_minus_alpha * sample
        x0 = sqrt_alpha * sample - sqrt_one_minus_alpha * model_output
        alpha_prev = self.alphas_prev[index].to(sample.device)
        sigma = self.sigmas[index].to(sample.device)
        if variance_noise is None:
            variance_noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                          dtype=model_output.dtype)
        direction = (1.0 - alpha_prev - sigma**2).sqrt() * eps
        prev_sample = alpha_prev.sqrt() * x0 + direction + sigma * variance_noise
        if not return_dict:
            return (prev_sample, x0)
        return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)


# ------------------------------------------------------------------------------------------------ noise
def _forked_generators(generators: List[torch.Generator], draws: int, shape: Sequence[int]) -> List[torch.Generator]:
    """One private generator per window that yields what the window would get in a sequential decode.

    The original draws all of a window's noise (x_T, then one per step) before the next window starts. When
    several windows share a generator, window k's stream starts where window k-1's ended: fork the state,
    then advance the shared generator past the window's draws (same calls, so the same state on any device).
    Generators used by a single window are used directly.
    """
    counts: Dict[int, int] = {}
    for g in generators:
        counts[id(g)] = counts.get(id(g), 0) + 1
    out = []
    for g in generators:
        if counts[id(g)] == 1:
            out.append(g)
            continue
        fork = torch.Generator(device=g.device)
        fork.set_state(g.get_state())
        out.append(fork)
        for _ in range(draws):
            torch.randn(shape, generator=g, device=g.device)
    return out


def _default_generator(device: torch.device) -> torch.Generator:
    """The global generator `torch.randn(..., device=device)` uses (the original's noise source)."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


class _WindowNoise:
    """Noise draw k (0 = x_T, then one per step) for every window, from explicit tensors or generators."""

    def __init__(
        self,
        num_windows: int,
        draws: int,
        shape: Sequence[int],
        device: torch.device,
        generator: GeneratorArg = None,
        noise: Optional[Union[torch.Tensor, Sequence[torch.Tensor]]] = None,
    ):
        self.shape, self.device, self.draws = tuple(shape), device, draws
        self.noise = None
        self.generators = None
        if noise is not None:
            if generator is not None:
                raise ValueError("Pass either `noise` or `generator`, not both.")
            stacked = torch.stack(list(noise)) if not torch.is_tensor(noise) else noise
            expected = (num_windows, draws) + self.shape
            shape = tuple(stacked.shape)
            # more draws than needed are fine (e.g. a DDIM noise record replayed with a one-draw solver)
            if len(shape) != len(expected) or shape[0] != num_windows or shape[1] < draws or shape[2:] != self.shape:
                raise ValueError(
                    f"noise must hold {draws} draws per window: shape {list(expected)} (windows, draws, channels, "
                    f"time, freq), got {list(stacked.shape)}."
                )
            self.noise = stacked
            return
        if generator is None or isinstance(generator, torch.Generator):
            generators = [generator if generator is not None else _default_generator(device)] * num_windows
        else:
            generators = list(generator)
            if len(generators) != num_windows:
                raise ValueError(f"Got {len(generators)} generators for {num_windows} windows; pass one per window.")
        self.generators = _forked_generators(generators, draws, (1,) + self.shape)

    def __call__(self, index: int) -> torch.Tensor:
        if self.noise is not None:
            return self.noise[:, index].to(self.device, torch.float32)
        draws = [torch.randn((1,) + self.shape, generator=g, device=g.device) for g in self.generators]
        return torch.cat([d.to(self.device) for d in draws]).float()


# ---------------------------------------------------------------------------------------------- decoder
def _chunks(total: int, max_batch_size: Optional[int]) -> List[slice]:
    size = max_batch_size or total
    if size < 1:
        raise ValueError(f"max_batch_size must be positive, got {max_batch_size}.")
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


class SemantiCodecDecoder(nn.Module):
    """Latent-diffusion decoder of SemantiCodec, batched over windows.

    State-dict keys: `unet.*` (diffusers AudioLDM2 UNet), `vae.*` (diffusers AutoencoderKL, encoder included for
    training recipes), `vocoder.*` (transformers SpeechT5HifiGan), `scale_factor` (0-d, the checkpoint's learned
    latent scale). The schedule buffers are recomputed from the config, not saved.
    """

    def __init__(self, config: SemantiCodecConfig):
        super().__init__()
        self.config = config
        self.unet = AudioLDM2UNet2DConditionModel(**config.unet_config)
        self.vae = AutoencoderKL(**config.vae_config)
        self.vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**config.vocoder_config))
        self.register_buffer("scale_factor", torch.tensor(config.scale_factor, dtype=torch.float32), persistent=True)
        for name, value in self._compute_schedule().items():
            self.register_buffer(name, value, persistent=False)

    # ------------------------------------------------------------------------------------ computed buffers
    def _compute_schedule(self, device: Optional[torch.device] = None) -> Dict[str, torch.Tensor]:
        schedule = diffusion_schedule(self.config.num_train_timesteps, self.config.beta_start, self.config.beta_end)
        return {name: schedule[name].to(device) if device is not None else schedule[name] for name in _SAMPLER_BUFFERS}

    def reset_computed_buffers(self) -> None:
        """Recompute the schedule (not saved; left empty by meta-device or `from_pretrained` loading)."""
        for name, value in self._compute_schedule(self.scale_factor.device).items():
            setattr(self, name, value)

    # --------------------------------------------------------------------------------------- precision
    @property
    def network_dtype(self) -> torch.dtype:
        """The dtype the UNet, VAE and vocoder compute in (float32 unless `set_network_dtype` changed it)."""
        return self.unet.dtype

    def set_network_dtype(self, dtype: Union[str, torch.dtype]) -> "SemantiCodecDecoder":
        """Run the UNet, VAE and vocoder in `dtype` ("float32", "bfloat16" or "float16", or the torch dtype).

        The schedule, `scale_factor` and the sampler's arithmetic stay in float32 (casting the whole module
        would round them too). bfloat16 is not the original's precision: see `NETWORK_DTYPES`. The weights are
        converted in place, so going back to float32 keeps their rounded values: reload the model for the original
        weights.
        """
        names = {value: key for key, value in NETWORK_DTYPES.items()}
        if isinstance(dtype, str):
            if dtype not in NETWORK_DTYPES:
                raise ValueError(f"Unknown decoder dtype {dtype!r}; choose one of {sorted(NETWORK_DTYPES)}.")
            dtype = NETWORK_DTYPES[dtype]
        if dtype not in names:
            raise ValueError(f"Unsupported decoder dtype {dtype}; choose one of {sorted(NETWORK_DTYPES)}.")
        device = self.scale_factor.device
        if dtype == torch.float16 and device.type == "cpu":
            raise ValueError("float16 decoding is for GPUs; on a CPU use 'bfloat16' (fast on CPUs with AMX) or 'float32'.")
        if dtype == torch.bfloat16 and device.type == "cpu" and has_native_bfloat16() is False:
            warnings.warn(
                f"bfloat16 decoding on this CPU ({cpu_model_name()}) has no native bfloat16 arithmetic (no AMX or "
                "AVX512-BF16): PyTorch emulates it and decoding becomes many times SLOWER than float32 (a 50-step "
                "window did not finish in minutes on an AVX2 CPU). Keep 'float32' here; bfloat16 pays off on CPUs "
                "with AMX and on recent GPUs.",
                UserWarning,
                stacklevel=3,
            )
        for network in (self.unet, self.vae, self.vocoder):
            nn.Module.to(network, dtype)  # torch's own `to`: diffusers' override only adds a warning for this
        return self

    @property
    def latent_shape(self) -> tuple:
        """Shape of one window's latent: (channels, time, freq) = (8, 256, 16)."""
        return (self.config.latent_channels, self.config.latent_time_size, self.config.latent_freq_size)

    @property
    def feature_width(self) -> int:
        """Conditioning channels that carry features (the rest is the position code): 2 x feature_dim."""
        return 2 * self.config.feature_dim

    # ------------------------------------------------------------------------------------------- the UNet
    def predict_v(
        self,
        latents: torch.Tensor,
        timesteps: Union[torch.Tensor, int],
        conditioning: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        max_batch_size: Optional[int] = None,
    ) -> torch.Tensor:
        """UNet v-prediction for latents `[B, 8, 256, 16]` at integer DDPM timesteps (int or `[B]`).

        `attention_mask` `[B, W]` masks conditioning rows (1 = attend); the original passes all ones, which
        equals no mask. Runs in chunks of `max_batch_size` rows.
        """
        batch = latents.shape[0]
        timesteps = torch.as_tensor(timesteps, device=latents.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(batch)
        dtype = self.unet.dtype
        outputs = []
        for part in _chunks(batch, max_batch_size):
            mask = attention_mask[part].to(dtype) if attention_mask is not None else None
            outputs.append(
                self.unet(
                    latents[part].to(dtype),
                    timesteps[part],
                    encoder_hidden_states=conditioning[part].to(dtype),
                    encoder_attention_mask=mask,
                    return_dict=False,
                )[0]
            )
        return torch.cat(outputs).to(latents.dtype)

    def _guided_v(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        guidance_scale: Optional[float],
        max_batch_size: Optional[int],
    ) -> torch.Tensor:
        """Classifier-free guidance with both halves in one UNet batch: `v_u + g (v_c - v_u)`.

        `context` is `[unconditional ++ conditional]` (2N rows) when `guidance_scale` is given, else the N
        conditional rows. Built once per sampling call, so its cross-attention projections can be cached.
        """
        if guidance_scale is None:
            return self.predict_v(latents, timestep, context, max_batch_size=max_batch_size)
        both = self.predict_v(torch.cat([latents, latents]), timestep, context, max_batch_size=max_batch_size)
        v_uncond, v_cond = both.chunk(2)
        return v_uncond + guidance_scale * (v_cond - v_uncond)

    # ---------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_latents(
        self,
        conditioning: torch.Tensor,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        eta: float = 1.0,
        sampler: str = "ddim",
        generator: GeneratorArg = None,
        noise: Optional[Union[torch.Tensor, Sequence[torch.Tensor]]] = None,
        max_batch_size: Optional[int] = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Conditioning `[N, W, C]` of N windows -> latents `[N, 8, 256, 16]` (before `1 / scale_factor`).

        `sampler="ddim"` is the original sampler (its timesteps, float64 sigmas, a noise draw at every step
        including the last; `eta` applies only here). `"dpmsolver++"` / `"unipc"` are diffusers solvers on the
        same schedule (v-prediction) for fewer steps; they draw x_T only.

        Noise per window: x_T first, then one draw per DDIM step, in that order. `generator`: one
        `torch.Generator` (windows consume it one after another, as the original consumes the global RNG, so
        `torch.Generator().manual_seed(s)` on CPU reproduces the original run after `torch.manual_seed(s)`), or
        a list with one per window (then a window's result does not depend on the batch). None uses the global
        RNG. `noise`: explicit draws `[N, draws, 8, 256, 16]` (or a list of `[draws, 8, 256, 16]`), to replay
        a reference run.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {sampler!r}; choose one of {SAMPLERS}.")
        if conditioning.ndim != 3:
            raise ValueError(f"conditioning must be [windows, frames, channels], got {list(conditioning.shape)}.")
        device = self.scale_factor.device
        conditioning = conditioning.to(device)
        num_windows = conditioning.shape[0]
        # The original makes one conditional UNet call when g == 1 and two calls otherwise (here one batch).
        guided_scale, context = None, conditioning
        if guidance_scale != 1.0:
            guided_scale = guidance_scale
            context = torch.cat([unconditional_conditioning(conditioning, self.feature_width), conditioning])
        # Cast once: the UNet sees this very tensor at every step, so its cross-attention projections are cached.
        context = context.to(self.network_dtype)

        # Before any noise is drawn: the step count is checked here (DDIM rejects the original's crashing counts).
        scheduler = self._make_scheduler(sampler, eta)
        scheduler.set_timesteps(num_inference_steps, device=device)
        draws = 1 + (len(scheduler.timesteps) if getattr(scheduler, "draws_noise_every_step", False) else 0)
        source = _WindowNoise(num_windows, draws, self.latent_shape, device, generator=generator, noise=noise)

        def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self._guided_v(x, t, context, guided_scale, max_batch_size)

        channels_last = _channels_last_plan(device, self.network_dtype)["unet"]
        with cache_cross_attention_context(self.unet), channels_last_convolutions(self.unet, conv1d=False,
                                                                                   conv2d=channels_last):
            return self._sample_loop(guided, scheduler, source, progress, desc="DDIM" if sampler == "ddim" else sampler)

    def _make_scheduler(self, sampler: str, eta: float = 1.0):
        """A fresh scheduler for `sampler` on this decoder's schedule (timesteps not set yet).

        "ddim": `ReferenceDDIMScheduler` (the original's sampler; `eta` applies only to it). The diffusers solvers
        get the float32 betas of the schedule and v-prediction."""
        config = self.config
        if sampler == "ddim":
            return ReferenceDDIMScheduler(num_train_timesteps=config.num_train_timesteps, beta_start=config.beta_start,
                                          beta_end=config.beta_end, eta=eta)
        scheduler_class, extra = DIFFUSERS_SAMPLERS[sampler]
        return scheduler_class(
            num_train_timesteps=config.num_train_timesteps,
            trained_betas=self.betas.detach().cpu().numpy(),
            prediction_type="v_prediction",
            **extra,
        )

    @staticmethod
    def _sample_loop(
        guided: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        scheduler,
        source: _WindowNoise,
        progress: bool = False,
        desc: Optional[str] = None,
    ) -> torch.Tensor:
        """The sampler loop of every sampler: x_T = draw 0 (times `init_noise_sigma`); at each of
        `scheduler.timesteps` the guided v-prediction of `scale_model_input(x, t)`, then `scheduler.step`. A
        scheduler with `draws_noise_every_step` gets draw 1 + i as `variance_noise` of step i, drawn after the UNet
        call (the original's order); the others (ODE solvers) draw nothing more."""
        per_step_noise = getattr(scheduler, "draws_noise_every_step", False)
        x = source(0) * scheduler.init_noise_sigma
        timesteps = scheduler.timesteps
        steps = enumerate(timesteps)
        if progress:
            steps = tqdm(steps, desc=desc, total=len(timesteps))
        for i, t in steps:
            v = guided(scheduler.scale_model_input(x, t), t)
            extra = {"variance_noise": source(1 + i)} if per_step_noise else {}
            x = scheduler.step(v, t, x, return_dict=False, **extra)[0]
        return x

    # -------------------------------------------------------------------------------- VAE and vocoder
    @torch.no_grad()
    def latents_to_mel(self, latents: torch.Tensor, max_batch_size: Optional[int] = None) -> torch.Tensor:
        """Latents `[N, 8, 256, 16]` -> log-mel `[N, 1, 1024, 64]`: VAE decode of `(1 / scale_factor) * z`
        (reciprocal first, then the product, as the original rounds it)."""
        scale = 1.0 / self.scale_factor
        dtype = self.vae.dtype
        channels_last = _channels_last_plan(latents.device, dtype)["vae"]
        with channels_last_convolutions(self.vae.decoder, conv1d=False, conv2d=channels_last):
            mels = [
                self.vae.decode((scale * latents[part]).to(dtype), return_dict=False)[0].float()
                for part in _chunks(latents.shape[0], max_batch_size)
            ]
        return torch.cat(mels).contiguous()

    @torch.no_grad()
    def mel_to_waveform(self, mel: torch.Tensor, max_batch_size: Optional[int] = None) -> torch.Tensor:
        """Log-mel `[N, 1, 1024, 64]` (or `[N, 1024, 64]`) -> 16 kHz waveforms `[N, 163872]` (160 x frames + 32)."""
        if mel.ndim == 4:
            mel = mel.squeeze(1)
        if mel.device.type == "cpu":
            max_batch_size = VOCODER_WINDOWS_PER_CALL_ON_CPU
        dtype = self.vocoder.dtype
        channels_last = _channels_last_plan(mel.device, dtype)["vocoder"]
        with channels_last_convolutions(self.vocoder, conv1d=channels_last, conv2d=False):
            waves = [
                self.vocoder(mel[part].to(dtype)).reshape(mel[part].shape[0], -1).float()
                for part in _chunks(mel.shape[0], max_batch_size)
            ]
        return torch.cat(waves)

    @torch.no_grad()
    def forward(
        self, conditioning: torch.Tensor, max_batch_size: Optional[int] = None, **sample_kwargs
    ) -> torch.Tensor:
        """Conditioning `[N, W, C]` -> waveforms `[N, 163872]`, one per window (see `sample_latents`)."""
        latents = self.sample_latents(conditioning, max_batch_size=max_batch_size, **sample_kwargs)
        return self.mel_to_waveform(self.latents_to_mel(latents, max_batch_size), max_batch_size)


__all__ = [
    "SemantiCodecDecoder",
    "ReferenceDDIMScheduler",
    "NETWORK_DTYPES",
    "SAMPLERS",
    "SCHEDULE_BUFFER_NAMES",
    "diffusion_schedule",
    "ddim_sampling_parameters",
    "reference_ddim_timesteps",
    "valid_ddim_step_counts",
]

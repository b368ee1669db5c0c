"""diffusers' multistep solvers with a schedule that has the same bits on every CPU.

torch's float32 `sqrt` (and `** 0.5`) on a CPU goes through MKL's vector maths. On Intel CPUs it is correctly
rounded; on AMD CPUs MKL takes another path that is one ulp off for about one value in six (measured on an AMD EPYC
Zen 4: `perf` shows `mkl_vml_kernel_sSqrt_EXHAynn` doing the work; `MKL_CBWR` does not change it). The solvers take
square roots of the schedule (`sigmas` in `set_timesteps`, alpha_t in `_sigma_to_alpha_sigma_t` at every step), so
their waveforms moved by ~3e-6 of the peak from one CPU to the other while the networks agreed bit for bit. Here
those square roots are rounded once (IEEE), which gives on every CPU the numbers diffusers gives on an Intel one.

The reference DDIM sampler is not touched: the original takes the same float32 roots in torch, so on any CPU it
rounds as the original does there.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

# The config switches that replace the plain "sigma at each timestep" schedule; with any of them set the
# schedule's values are not square roots at the timesteps, and the exact roots are not applied to them.
_RESHAPED_SCHEDULE_FLAGS = (
    "use_karras_sigmas",
    "use_lu_lambdas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_flow_sigmas",
)


def correctly_rounded_sqrt(values: torch.Tensor) -> torch.Tensor:
    """Square root rounded once, as IEEE requires, whatever the CPU: numpy's `sqrt` is the hardware
    instruction, unlike torch's CPU kernel (see the module docstring). Other devices keep torch's (IEEE) root."""
    if values.device.type != "cpu":
        return torch.sqrt(values)
    return torch.tensor(np.sqrt(values.detach().numpy()), dtype=values.dtype)


class _ExactRootSchedule:
    """Mixin for a diffusers multistep solver: the square roots of its schedule are correctly rounded."""

    def set_timesteps(self, *args, **kwargs) -> None:
        super().set_timesteps(*args, **kwargs)
        if any(self.config.get(flag, False) for flag in _RESHAPED_SCHEDULE_FLAGS):
            return
        # diffusers' sigmas here are sqrt((1 - alpha_bar) / alpha_bar) at each timestep (float32), then the
        # final sigma (0 or sigma_min, which is the root at timestep 0); recomputed with one rounding.
        ratio = (1 - self.alphas_cumprod) / self.alphas_cumprod
        roots = correctly_rounded_sqrt(ratio.detach().cpu())
        steps = self.timesteps.detach().cpu().long()
        sigmas = self.sigmas.clone()
        sigmas[: len(steps)] = roots[steps].to(sigmas.dtype)
        if self.config.final_sigmas_type == "sigma_min":
            sigmas[-1] = roots[0].to(sigmas.dtype)
        self.sigmas = sigmas

    def _sigma_to_alpha_sigma_t(self, sigma: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.config.get("use_flow_sigmas", False):
            return super()._sigma_to_alpha_sigma_t(sigma)
        alpha_t = 1 / correctly_rounded_sqrt(sigma**2 + 1)
        return alpha_t, sigma * alpha_t


class ExactRootDPMSolverMultistepScheduler(_ExactRootSchedule, DPMSolverMultistepScheduler):
    """`DPMSolverMultistepScheduler` with correctly rounded schedule roots (same bits on every CPU)."""


class ExactRootUniPCMultistepScheduler(_ExactRootSchedule, UniPCMultistepScheduler):
    """`UniPCMultistepScheduler` with correctly rounded schedule roots (same bits on every CPU)."""

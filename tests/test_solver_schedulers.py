"""The diffusers solvers' schedule roots are correctly rounded (same bits on every CPU), and that is all that
changes: timesteps, every other value and the sampler maths are diffusers' own.

On an Intel CPU torch's own roots are already exact, so the equalities below cannot fail there with the stock
schedulers; on an AMD CPU (MKL's other vector-maths path) they fail without the fix, which is how they were
checked (see `solver_schedulers.py`)."""

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from semanticodec_hf.modeling_semanticodec_decoder import DIFFUSERS_SAMPLERS, diffusion_schedule
from semanticodec_hf.solver_schedulers import (
    ExactRootDPMSolverMultistepScheduler,
    ExactRootUniPCMultistepScheduler,
    correctly_rounded_sqrt,
)

PAIRS = [
    (ExactRootDPMSolverMultistepScheduler, DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    (ExactRootUniPCMultistepScheduler, UniPCMultistepScheduler, {}),
]


def make(scheduler_class, extra, **overrides):
    betas = diffusion_schedule()["betas"].numpy()
    return scheduler_class(num_train_timesteps=1000, trained_betas=betas, prediction_type="v_prediction",
                           solver_order=2, **extra, **overrides)


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in float32 units in the last place (both tensors finite, same sign)."""
    return int((a.float().view(torch.int32).long() - b.float().view(torch.int32).long()).abs().max())


def test_the_decoder_uses_the_exact_root_solvers():
    assert DIFFUSERS_SAMPLERS["dpmsolver++"][0] is ExactRootDPMSolverMultistepScheduler
    assert DIFFUSERS_SAMPLERS["unipc"][0] is ExactRootUniPCMultistepScheduler


def test_correctly_rounded_sqrt_is_the_float64_root_rounded_once():
    values = torch.rand(20000, generator=torch.Generator().manual_seed(0)) * 3 + 1e-3
    reference = torch.from_numpy(np.sqrt(values.numpy().astype(np.float64)).astype(np.float32))
    assert torch.equal(correctly_rounded_sqrt(values), reference)
    scalar = correctly_rounded_sqrt(torch.tensor(2.0))
    assert scalar.shape == () and scalar.dtype == torch.float32 and float(scalar) == np.float32(np.sqrt(2.0))


@pytest.mark.parametrize("ours, stock, extra", PAIRS, ids=["dpmsolver++", "unipc"])
@pytest.mark.parametrize("steps", [4, 15, 50])
def test_the_schedule_is_exact_and_within_an_ulp_of_diffusers(ours, stock, extra, steps):
    exact, reference = make(ours, extra), make(stock, extra)
    exact.set_timesteps(steps)
    reference.set_timesteps(steps)
    assert torch.equal(exact.timesteps, reference.timesteps)
    ratio = ((1 - exact.alphas_cumprod) / exact.alphas_cumprod).numpy().astype(np.float64)
    want = np.sqrt(ratio).astype(np.float32)[exact.timesteps.numpy()]
    assert np.array_equal(exact.sigmas[:-1].numpy(), want)
    assert float(exact.sigmas[-1]) == float(reference.sigmas[-1]) == 0.0
    assert ulp_distance(exact.sigmas[:-1], reference.sigmas[:-1]) <= 1  # only the rounding differs

    for sigma in exact.sigmas[:-1]:
        alpha_t, sigma_t = exact._sigma_to_alpha_sigma_t(sigma)
        root = np.sqrt(np.float64((sigma**2 + 1).numpy())).astype(np.float32)
        assert float(alpha_t) == float(np.float32(1) / root)
        assert float(sigma_t) == float(sigma * alpha_t)
        stock_alpha, _ = reference._sigma_to_alpha_sigma_t(sigma)
        assert ulp_distance(alpha_t, stock_alpha) <= 2  # one ulp in the root, one more from rounding 1 / root


def test_sigma_min_ends_on_the_exact_root_at_timestep_zero():
    scheduler = make(ExactRootDPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"},
                     final_sigmas_type="sigma_min")
    scheduler.set_timesteps(10)
    ratio = float((1 - scheduler.alphas_cumprod[0]) / scheduler.alphas_cumprod[0])
    assert float(scheduler.sigmas[-1]) == float(np.float32(np.sqrt(np.float64(np.float32(ratio)))))


def test_reshaped_schedules_are_left_to_diffusers():
    """Karras sigmas are not roots at the timesteps: the override must not write over them."""
    ours = make(ExactRootDPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}, use_karras_sigmas=True)
    stock = make(DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}, use_karras_sigmas=True)
    ours.set_timesteps(12)
    stock.set_timesteps(12)
    assert torch.equal(ours.sigmas, stock.sigmas) and torch.equal(ours.timesteps, stock.timesteps)


def test_a_solver_run_stays_within_float_rounding_of_stock_diffusers():
    """Same sampler maths: a 4-step run on a fixed v-prediction differs from diffusers' only by rounding."""
    generator = torch.Generator().manual_seed(3)
    start = torch.randn(2, 8, 32, 16, generator=generator)
    results = []
    for scheduler_class in (ExactRootDPMSolverMultistepScheduler, DPMSolverMultistepScheduler):
        scheduler = make(scheduler_class, {"algorithm_type": "dpmsolver++"})
        scheduler.set_timesteps(4)
        x = start.clone()
        for t in scheduler.timesteps:
            v = 0.3 * x + 0.01 * t.float() * torch.tanh(x)
            x = scheduler.step(v, t, x, return_dict=False)[0]
        results.append(x)
    scale = float(results[1].abs().max())
    assert scale > 1e-2
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5 * scale)

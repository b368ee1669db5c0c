"""The sampler pieces on their own: `ReferenceDDIMScheduler` (the original's DDIM as a scheduler) against the
update rule written out here, and the cross-attention K/V cache processor (`unet_context_cache.py`) against
diffusers' default processor. Whole-sampler parity with the original: tests/test_decoder_parity.py; pinned
seeded outputs: tests/test_pinned_outputs.py."""

import contextlib

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from semanticodec_hf.configuration_semanticodec import SemantiCodecConfig
from semanticodec_hf.modeling_semanticodec_decoder import (
    ReferenceDDIMScheduler,
    _WindowNoise,
    ddim_sampling_parameters,
    diffusion_schedule,
    reference_ddim_timesteps,
)
from semanticodec_hf.unet_context_cache import CachedContextAttnProcessor, cache_cross_attention_context

LATENT = (8, 256, 16)


# ------------------------------------------------------------------------------------------ the scheduler
def _previous_loop_step(v, t, x, noise, steps, eta):
    """Step `t` of the decoder's DDIM loop before it became a scheduler, operation for operation (torch's own
    kernels: its float32 `sqrt` is not always correctly rounded, so a numpy copy would differ in the last bit)."""
    schedule = diffusion_schedule()
    timesteps = reference_ddim_timesteps(steps)
    params = ddim_sampling_parameters(schedule["alphas_cumprod"], timesteps, eta)
    i = timesteps.tolist().index(t)
    t = timesteps[i]
    sqrt_alpha = schedule["sqrt_alphas_cumprod"][t]
    sqrt_one_minus_alpha = schedule["sqrt_one_minus_alphas_cumprod"][t]
    eps = sqrt_alpha * v + sqrt_one_minus_alpha * x
    x0 = sqrt_alpha * x - sqrt_one_minus_alpha * v
    alpha_prev, sigma = params["alphas_prev"][i], params["sigmas"][i]
    direction = (1.0 - alpha_prev - sigma**2).sqrt() * eps
    return alpha_prev.sqrt() * x0 + direction + sigma * noise, x0


def _float64_ddim_step(v, t, x, noise, steps, eta):
    """The spec's DDIM step (section 8.3) in float64 throughout: the float32 schedule buffers at t, the previous
    timestep t - 1000 // S (alphas_cumprod[0] after the last), sigma with `1 - a` rounded in float32 first."""
    schedule = {name: value.numpy() for name, value in diffusion_schedule().items()}
    prev = t - 1000 // steps
    a = schedule["alphas_cumprod"][t]  # float32
    a_prev = np.float64(schedule["alphas_cumprod"][max(prev, 0)])
    sigma = eta * np.sqrt((1 - a_prev) / np.float64(np.float32(1) - a) * (1 - np.float64(a) / a_prev))
    big_a = np.float64(schedule["sqrt_alphas_cumprod"][t])
    big_s = np.float64(schedule["sqrt_one_minus_alphas_cumprod"][t])
    v, x, noise = (value.double().numpy() for value in (v, x, noise))
    eps, x0 = big_a * v + big_s * x, big_a * x - big_s * v
    return torch.from_numpy(np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma**2) * eps + sigma * noise)


@pytest.mark.parametrize("steps, eta", [(5, 1.0), (30, 1.0), (50, 0.5), (1, 1.0), (4, 0.0)])
def test_ddim_scheduler_step_is_the_previous_loop_step(steps, eta):
    scheduler = ReferenceDDIMScheduler(eta=eta)
    scheduler.set_timesteps(steps)
    assert torch.equal(scheduler.timesteps, reference_ddim_timesteps(steps))
    assert scheduler.alphas_prev.dtype == scheduler.sigmas.dtype == torch.float32
    g = torch.Generator().manual_seed(steps)
    for t in scheduler.timesteps[[0, len(scheduler.timesteps) // 2, -1]]:  # first, middle, last (a_prev = a[0])
        v, x, noise = (torch.randn(2, *LATENT, generator=g) for _ in range(3))
        prev, x0 = scheduler.step(v, t, x, variance_noise=noise, return_dict=False)
        expected_prev, expected_x0 = _previous_loop_step(v, int(t), x, noise, steps, eta)
        assert prev.dtype == torch.float32
        assert torch.equal(x0, expected_x0) and torch.equal(prev, expected_prev)  # bit-identical
        # and the maths is the spec's: float64 throughout is a few float32 roundings away
        torch.testing.assert_close(prev.double(), _float64_ddim_step(v, int(t), x, noise, steps, eta),
                                   rtol=0, atol=1e-6 * expected_prev.abs().max().item())
        again = scheduler.step(v, int(t), x, variance_noise=noise)  # int timestep, output object
        assert torch.equal(again.prev_sample, prev) and torch.equal(again.pred_original_sample, x0)


def test_ddim_scheduler_draws_its_noise_from_the_generator_when_none_is_given():
    scheduler = ReferenceDDIMScheduler()
    scheduler.set_timesteps(5)
    v, x = torch.randn(2, 1, *LATENT, generator=torch.Generator().manual_seed(0)).unbind(0)
    drawn = scheduler.step(v, 201, x, generator=torch.Generator().manual_seed(3)).prev_sample
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, scheduler.step(v, 201, x, variance_noise=noise).prev_sample)


def test_ddim_scheduler_rejects_bad_step_counts_and_timesteps():
    scheduler = ReferenceDDIMScheduler()
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(torch.zeros(1), 1, torch.zeros(1))
    with pytest.raises(ValueError, match=r"num_inference_steps=27 .* divides 999.*Nearby valid step counts"):
        scheduler.set_timesteps(27)
    with pytest.raises(ValueError, match="num_inference_steps"):
        scheduler.set_timesteps(0)
    scheduler.set_timesteps(5)
    with pytest.raises(ValueError, match="timestep 500 is not one of"):
        scheduler.step(torch.zeros(1), 500, torch.zeros(1))


def test_ddim_scheduler_is_a_diffusers_scheduler_config():
    scheduler = ReferenceDDIMScheduler(eta=0.25)
    restored = ReferenceDDIMScheduler.from_config(scheduler.config)
    assert restored.config.eta == 0.25 and restored.config.num_train_timesteps == 1000
    assert restored.init_noise_sigma == 1.0 and restored.draws_noise_every_step and len(restored) == 1000
    x = torch.randn(1, *LATENT)
    assert restored.scale_model_input(x, 1) is x
    assert torch.equal(restored.alphas_cumprod, diffusion_schedule()["alphas_cumprod"])


def test_one_loop_drives_the_ddim_scheduler_and_the_diffusers_solvers(tiny_decoder):
    """The decoder builds the scheduler; the loop gives the DDIM one noise draw per step (after the UNet call)
    and the solvers none."""
    ddim = tiny_decoder._make_scheduler("ddim", eta=0.5)
    solver = tiny_decoder._make_scheduler("dpmsolver++")
    assert isinstance(ddim, ReferenceDDIMScheduler) and ddim.config.eta == 0.5
    assert isinstance(solver, DPMSolverMultistepScheduler) and solver.config.prediction_type == "v_prediction"

    events = []

    def fake_v(x, t):
        events.append(("v", int(t)))
        return 0.5 * x + 1e-3 * t.float()

    class RecordingNoise:
        def __init__(self, source):
            self.source = source

        def __call__(self, index):
            events.append(("noise", index))
            return self.source(index)

    ddim.set_timesteps(5)
    noise = torch.randn(1, 6, *LATENT, generator=torch.Generator().manual_seed(0))
    source = _WindowNoise(1, 6, LATENT, torch.device("cpu"), noise=noise)
    out = tiny_decoder._sample_loop(fake_v, ddim, RecordingNoise(source))
    expected_events = [("noise", 0)]
    for i, t in enumerate([801, 601, 401, 201, 1]):
        expected_events += [("v", t), ("noise", 1 + i)]
    assert events == expected_events
    x = noise[:, 0]
    for i, t in enumerate([801, 601, 401, 201, 1]):  # the same steps, driven by hand
        x = ddim.step(fake_v(x, torch.tensor(t)), t, x, variance_noise=noise[:, 1 + i]).prev_sample
    assert torch.equal(out, x)

    events.clear()
    solver.set_timesteps(3)
    tiny_decoder._sample_loop(fake_v, solver, RecordingNoise(source))
    assert [e for e in events if e[0] == "noise"] == [("noise", 0)]


# ----------------------------------------------------------------------------- the K/V cache processor
def _attention(**kwargs) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4, **kwargs).eval()


@pytest.mark.parametrize("layer", [{}, {"residual_connection": True, "rescale_output_factor": 2.0}])
def test_processor_equals_the_default_processor_and_serves_only_the_same_tensor(layer):
    attn = _attention(**layer)
    default, cached = AttnProcessor2_0(), CachedContextAttnProcessor()
    query = torch.randn(3, 5, 8)
    first, second = torch.randn(3, 7, 6), torch.randn(3, 7, 6)
    mask = torch.zeros(3, 1, 7)
    mask[1, :, 4:] = -10000.0  # the UNet's additive form of a 0/1 mask
    with torch.no_grad():
        for context, attention_mask in [(first, None), (second, None), (first, None), (first, mask), (second, mask)]:
            expected = default(attn, query, context, attention_mask)
            assert torch.equal(cached(attn, query, context, attention_mask), expected)
        assert cached.num_cached == 2
        same_values_elsewhere = first.clone()  # equal values, other memory: a new entry, same result
        assert torch.equal(cached(attn, query, same_values_elsewhere), default(attn, query, first))
        assert cached.num_cached == 3
        self_attention = Attention(query_dim=8, heads=2, dim_head=4).eval()  # no context: the default path
        assert torch.equal(cached(self_attention, query), default(self_attention, query))
        assert cached.num_cached == 3
    cached.clear()
    assert cached.num_cached == 0


def test_processor_bounds_its_entries():
    attn = _attention()
    cached = CachedContextAttnProcessor(max_entries=2)
    query = torch.randn(1, 5, 8)
    contexts = [torch.randn(1, 7, 6) for _ in range(3)]
    with torch.no_grad():
        for context in contexts + contexts:
            assert torch.equal(cached(attn, query, context), AttnProcessor2_0()(attn, query, context))
            assert cached.num_cached <= 2


def test_processor_goes_on_the_cross_attention_layers_only_for_one_block(tiny_decoder):
    unet = tiny_decoder.unet
    before = unet.attn_processors
    layers = {f"{name}.processor": module for name, module in unet.named_modules() if isinstance(module, Attention)}
    cross = {slot for slot, module in layers.items() if module.is_cross_attention}
    assert cross and cross != set(layers) and set(before) == set(layers)
    custom_slot = sorted(cross)[0]  # a cross-attention layer with a processor of its own keeps it
    custom = AttnProcessor()
    layers[custom_slot].set_processor(custom)
    try:
        with cache_cross_attention_context(unet) as installed:
            inside = unet.attn_processors
            assert installed == len(cross) - 1
            for slot, processor in inside.items():
                if slot in cross and slot != custom_slot:
                    assert type(processor) is CachedContextAttnProcessor
                else:
                    assert processor is (custom if slot == custom_slot else before[slot])
            assert len({id(inside[slot]) for slot in cross - {custom_slot}}) == installed  # one cache per layer
        after = unet.attn_processors
        assert all(after[slot] is (custom if slot == custom_slot else before[slot]) for slot in before)
        assert all(processor.num_cached == 0 for slot, processor in inside.items() if slot in cross - {custom_slot})
    finally:
        layers[custom_slot].set_processor(before[custom_slot])


def _conditioning(windows: int, seed: int = 0) -> torch.Tensor:
    config = SemantiCodecConfig.tiny()
    return torch.randn(windows, config.frames_per_window, config.conditioning_dim,
                       generator=torch.Generator().manual_seed(seed))


def test_cached_unet_calls_equal_uncached_ones(tiny_decoder):
    x = torch.randn(4, *LATENT, generator=torch.Generator().manual_seed(1))
    context = _conditioning(4)
    mask = torch.ones(4, context.shape[1])
    mask[2, 300:] = 0
    with torch.no_grad():
        expected = [tiny_decoder.predict_v(x, t, context, attention_mask=m, max_batch_size=b)
                    for t, m, b in [(981, None, None), (501, None, 2), (21, mask, None)]]
        with cache_cross_attention_context(tiny_decoder.unet):
            for _ in range(2):  # the second round is served from the cache
                got = [tiny_decoder.predict_v(x, t, context, attention_mask=m, max_batch_size=b)
                       for t, m, b in [(981, None, None), (501, None, 2), (21, mask, None)]]
                assert all(torch.equal(a, b) for a, b in zip(got, expected))


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++"])
def test_sampling_with_the_cache_is_bit_identical_and_nothing_stays_cached(tiny_decoder, sampler):
    cond = _conditioning(2, seed=3)
    kwargs = dict(num_inference_steps=4, sampler=sampler, max_batch_size=3)
    seeds = lambda: [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]  # noqa: E731
    before = tiny_decoder.unet.attn_processors
    cached = tiny_decoder.sample_latents(cond, generator=seeds(), **kwargs)
    assert tiny_decoder.unet.attn_processors == before  # the very same processor objects are back
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("semanticodec_hf.modeling_semanticodec_decoder.cache_cross_attention_context",
                      lambda unet: contextlib.nullcontext())
        recomputed = tiny_decoder.sample_latents(cond, generator=seeds(), **kwargs)
    assert torch.equal(cached, recomputed)


def test_no_projection_survives_a_sampling_call(tiny_decoder):
    """With g = 1 the UNet sees the caller's own tensor: writing new values into it between two calls (same
    memory, same shape) must give the new conditioning's result, not the first call's keys and values."""
    first, second = _conditioning(1, seed=4), _conditioning(1, seed=5)
    kwargs = dict(num_inference_steps=2, guidance_scale=1.0)
    expected = tiny_decoder.sample_latents(second.clone(), generator=torch.Generator().manual_seed(0), **kwargs)
    reused = first.clone()
    tiny_decoder.sample_latents(reused, generator=torch.Generator().manual_seed(0), **kwargs)
    reused.copy_(second)
    assert torch.equal(tiny_decoder.sample_latents(reused, generator=torch.Generator().manual_seed(0), **kwargs),
                       expected)

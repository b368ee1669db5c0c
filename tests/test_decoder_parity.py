"""Decoder parity with the original SemantiCodec (fixtures made by the original with the parity weight recipe).

Each stage is fed the original's own input and compared with the original's output, with the bounds of
shared/parity/README.md: one UNet call <= 1e-4 x max|ref|; DDIM trajectory, VAE, vocoder and the full decode
<= 1e-3 x max|ref|. The weights go through `map_decoder_state_dict`, so the key mapping is checked too.
Also: schedule and DDIM timesteps (incl. the original's quirks), the noise order, the faster solvers, and the
mapping's errors. The window split / cross-fade / trim helpers on their own: tests/test_long_audio.py.
"""

import contextlib

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file

from parity_weights import (
    FIXTURES,
    build_decoder_state_dict,
    build_semantic_centroids,
    load_manifest,
    original_schedule_buffers,
    recipe_tensor,
)
from semanticodec_hf.checkpoint_mapping import map_decoder_state_dict
from semanticodec_hf.conditioning import (
    build_conditioning,
    sinusoidal_positional_encoding,
    unconditional_conditioning,
)
from semanticodec_hf.configuration_semanticodec import SemantiCodecConfig
from semanticodec_hf.long_audio import (
    DEFAULT_OVERLAP_SAMPLES,
    overlap_add,
    reference_output_samples,
    split_into_windows,
)
from semanticodec_hf.modeling_semanticodec_decoder import (
    SCHEDULE_BUFFER_NAMES,
    SemantiCodecDecoder,
    _WindowNoise,
    ddim_sampling_parameters,
    diffusion_schedule,
    reference_ddim_timesteps,
    valid_ddim_step_counts,
)

NAME = "fixture_tr100_v8192_s0"
WINDOW_SAMPLES = 163872  # vocoder samples per 1024-frame window (160 x 1024 + 32)
HEAD_SAMPLES = WINDOW_SAMPLES - DEFAULT_OVERLAP_SAMPLES  # window 0's samples before the cross-fade


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual - expected).abs().max().item() / expected.abs().max().item()


# -------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def reference():
    decoder = np.load(FIXTURES / f"{NAME}_decoder.npz")
    encoder = np.load(FIXTURES / f"{NAME}_encoder.npz")
    data = {k: torch.from_numpy(decoder[k]) for k in decoder.files}
    data.update({k: torch.from_numpy(encoder[k]) for k in ("tokens", "cond_window0")})
    return data


@pytest.fixture(scope="module")
def original_state():
    """The original-layout decoder.ckpt of the recipe (without the EMA copy, which the mapping drops anyway)."""
    return build_decoder_state_dict(100, include_ema=False)


@pytest.fixture(scope="module")
def decoder(original_state):
    config = SemantiCodecConfig(token_rate=100, scale_factor=0.75)
    with torch.device("meta"):  # no random init of 185 M values; the mapped tensors are assigned
        module = SemantiCodecDecoder(config)
    mapped = map_decoder_state_dict(original_state)
    module.load_state_dict({k[len("decoder."):]: v for k, v in mapped.items()}, strict=True, assign=True)
    return module.eval()


@pytest.fixture(scope="module")
def window_conditioning(reference):
    """Conditioning of each decode window rebuilt from the stored codes (spec 7 and 13): [acoustic ++ semantic]."""
    key = "quantizer._codebook.embed"
    shape = next(e["shape"] for e in load_manifest("encoder", 100) if e["key"] == key)
    acoustic_codebook = recipe_tensor(key, shape, "float32")[0]
    centroids = torch.from_numpy(build_semantic_centroids(8192, 100))
    tokens = reference["tokens"][0]
    table = sinusoidal_positional_encoding(512, 192)
    windows = []
    for start, end in split_into_windows(tokens.shape[0], 512, 0.0625):
        codes = tokens[start:end]
        features = torch.cat([acoustic_codebook[codes[:, 1]], centroids[codes[:, 0]]], dim=-1)[None]
        windows.append(build_conditioning(features, 512, table))
    return torch.cat(windows)


@pytest.fixture(scope="module")
def sampled_latents(decoder, window_conditioning, stored_decode_noise):
    # stored_decode_noise (conftest.py): the original's draws per window, [windows, 1 + steps, 8, 256, 16]
    return decoder.sample_latents(
        window_conditioning, num_inference_steps=5, guidance_scale=2.0, eta=1.0, noise=stored_decode_noise
    )


# ------------------------------------------------------------------------------------------- schedule
def test_schedule_buffers_equal_the_checkpoint_bitwise(decoder):
    stored = load_file(FIXTURES / "decoder_buffers.safetensors")
    schedule = diffusion_schedule(1000, 0.0015, 0.0195)
    assert set(schedule) == set(SCHEDULE_BUFFER_NAMES) == set(stored) - {"scale_factor"}
    for name in SCHEDULE_BUFFER_NAMES:
        assert torch.equal(schedule[name], stored[name]), name
    for name in ("betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"):
        assert torch.equal(getattr(decoder, name), stored[name]), name
    assert torch.equal(decoder.scale_factor, stored["scale_factor"])
    assert "alphas_cumprod" not in decoder.state_dict()  # recomputed, never saved


def test_ddim_timesteps_follow_the_original_uniform_spacing():
    assert reference_ddim_timesteps(5).tolist() == [801, 601, 401, 201, 1]
    assert reference_ddim_timesteps(50).tolist() == list(range(981, 0, -20))
    thirty = reference_ddim_timesteps(30)  # spacing 33: 31 steps, more than asked
    assert len(thirty) == 31 and thirty[0] == 991 and thirty[-1] == 1
    assert reference_ddim_timesteps(1).tolist() == [1]


def test_ddim_step_counts_that_crash_the_original_raise():
    crash = {3, 9, 27, 36, 37} | set(range(101, 112)) | set(range(251, 334)) | set(range(501, 1001))
    assert set(range(1, 1001)) - set(valid_ddim_step_counts()) == crash
    nearby = r"Nearby valid step counts: \[25, 26, 28, 29\]"
    with pytest.raises(ValueError, match=r"num_inference_steps=27 .* divides 999.*" + nearby):
        reference_ddim_timesteps(27)
    for steps in (0, 1001, 2.5):
        with pytest.raises(ValueError, match="num_inference_steps"):
            reference_ddim_timesteps(steps)


def test_ddim_sigmas_match_the_originals_mixed_precision():
    """sigma: float64 except `1 - alpha`, which the original rounds in float32; last alpha_prev = alphas_cumprod[0]."""
    alphas_cumprod = diffusion_schedule()["alphas_cumprod"]
    for steps in (5, 30, 50):
        timesteps = reference_ddim_timesteps(steps)
        params = ddim_sampling_parameters(alphas_cumprod, timesteps, eta=1.0)
        ascending = timesteps.flip(0).numpy()
        alpha = alphas_cumprod[ascending].numpy()  # float32
        alpha_prev = np.array([alphas_cumprod[0].item()] + alphas_cumprod[ascending[:-1]].tolist())  # float64
        one_minus_alpha = (np.float32(1) - alpha).astype(np.float64)
        sigma = np.sqrt((1 - alpha_prev) / one_minus_alpha * (1 - alpha.astype(np.float64) / alpha_prev))
        assert np.array_equal(params["sigmas"].numpy(), sigma[::-1].astype(np.float32))
        assert np.array_equal(params["alphas_prev"].numpy(), alpha_prev[::-1].astype(np.float32))
        assert params["alphas_prev"][-1] == alphas_cumprod[0]


def test_ddim_loop_agrees_with_diffusers_ddim_on_the_reference_timesteps(tiny_decoder):
    """Independent check of the sampler maths: diffusers' DDIMScheduler set up as spec 8.3 describes."""
    module = tiny_decoder
    steps = 30  # does not divide 1000: the original runs 31 steps
    timesteps = reference_ddim_timesteps(steps)
    noise = torch.randn(2, len(timesteps) + 1, 8, 256, 16, generator=torch.Generator().manual_seed(3))

    def fake_v(x, t):  # any smooth function of (x, t) exercises the update rule
        return 0.5 * x + 1e-3 * t.float()

    source = _WindowNoise(2, len(timesteps) + 1, (8, 256, 16), torch.device("cpu"), noise=noise)
    ddim = module._make_scheduler("ddim", eta=1.0)
    ddim.set_timesteps(steps)
    ours = module._sample_loop(fake_v, ddim, source)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1, prediction_type="v_prediction", timestep_spacing="leading")
    scheduler.set_timesteps(steps)
    scheduler.timesteps = timesteps.clone()
    scheduler.alphas_cumprod = module.alphas_cumprod.clone()
    scheduler.final_alpha_cumprod = module.alphas_cumprod[0].clone()
    x = noise[:, 0]
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(fake_v(x, t), t, x, eta=1.0, variance_noise=noise[:, 1 + i]).prev_sample
    assert _relative_error(ours, x) < 1e-5


# ------------------------------------------------------------------------------------------ noise order
def test_one_generator_reproduces_the_originals_global_rng_draws(reference):
    """Windows consume one generator one after another: seed 0 gives the fixture's 12 draws (2 windows x 6)."""
    source = _WindowNoise(2, 6, (8, 256, 16), torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    for k in range(6):
        draw = source(k)
        assert torch.equal(draw[0], reference[f"decode_noise_{k:03d}"][0])
        assert torch.equal(draw[1], reference[f"decode_noise_{6 + k:03d}"][0])


def test_per_window_generators_make_a_window_independent_of_the_batch():
    alone = _WindowNoise(1, 3, (8, 256, 16), torch.device("cpu"), generator=[torch.Generator().manual_seed(7)])
    batch = _WindowNoise(2, 3, (8, 256, 16), torch.device("cpu"),
                         generator=[torch.Generator().manual_seed(9), torch.Generator().manual_seed(7)])
    for k in range(3):
        assert torch.equal(batch(k)[1], alone(k)[0])


def test_noise_arguments_are_validated():
    with pytest.raises(ValueError, match="one per window"):
        _WindowNoise(2, 3, (8, 256, 16), torch.device("cpu"), generator=[torch.Generator()])
    with pytest.raises(ValueError, match="3 draws per window"):
        _WindowNoise(2, 3, (8, 256, 16), torch.device("cpu"), noise=torch.zeros(2, 2, 8, 256, 16))
    with pytest.raises(ValueError, match="either"):
        _WindowNoise(1, 1, (8, 256, 16), torch.device("cpu"), noise=torch.zeros(1, 1, 8, 256, 16),
                     generator=torch.Generator())


# ------------------------------------------------------------------------------------- stage parity
def test_one_unet_call(decoder, reference):
    with torch.no_grad():
        out = decoder.predict_v(reference["unet_x_t"], reference["unet_t"], reference["cond_window0"])
    assert _relative_error(out, reference["unet_out"]) <= 1e-4


def test_conditioning_from_codes_matches_the_originals_window0(window_conditioning, reference):
    # Bound of the conditioning stage (the position table's sin/cos may differ in the last bits between machines).
    assert (window_conditioning[:1] - reference["cond_window0"]).abs().max() <= 1e-4
    assert torch.equal(window_conditioning[1, 120:, :1536], torch.full((392, 1536), -1.0))  # padded short window


@pytest.mark.parametrize("window", [0, 1])
def test_ddim_trajectory_from_the_stored_noise(sampled_latents, reference, window):
    expected = reference[f"decode_latent_window{window}"]
    assert _relative_error(sampled_latents[window : window + 1], expected) <= 1e-3


@pytest.mark.parametrize("window", [0, 1])
def test_vae_decode(decoder, reference, window):
    mel = decoder.latents_to_mel(reference[f"decode_latent_window{window}"])
    assert mel.shape == (1, 1, 1024, 64)
    assert _relative_error(mel, reference[f"decode_mel_window{window}"]) <= 1e-3


def test_vocoder(decoder, reference):
    waveform = decoder.mel_to_waveform(reference["decode_mel_window0"])
    expected = torch.cat([reference["decode_waveform"][..., :HEAD_SAMPLES], reference["vocoder_out_window0_tail"]], -1)
    assert waveform.shape == (1, WINDOW_SAMPLES)
    # Same maths as the original (bit-identical on one machine); the fixture's machine rounds convs differently.
    assert _relative_error(waveform, expected.reshape(1, -1)) <= 1e-3


def test_full_decode_from_the_stored_codes_and_noise(decoder, sampled_latents, reference):
    frames = reference["tokens"].shape[1]
    waves = decoder.mel_to_waveform(decoder.latents_to_mel(sampled_latents))
    assembled = overlap_add(waves, DEFAULT_OVERLAP_SAMPLES)
    assert assembled.shape == (WINDOW_SAMPLES + (waves.shape[0] - 1) * HEAD_SAMPLES,)
    output = assembled[: reference_output_samples(frames, 100)]
    expected = reference["decode_waveform"].reshape(-1)
    assert output.shape == expected.shape
    assert _relative_error(output, expected) <= 1e-3


# -------------------------------------------------------------------------------- sampling (tiny model)
def _tiny_conditioning(windows: int, seed: int = 0) -> torch.Tensor:
    config = SemantiCodecConfig.tiny()
    return torch.randn(windows, config.frames_per_window, config.conditioning_dim,
                       generator=torch.Generator().manual_seed(seed))


def test_sampling_is_deterministic_with_a_seed_and_batch_independent(tiny_decoder):
    cond = _tiny_conditioning(2)
    kwargs = dict(num_inference_steps=1, guidance_scale=2.0)  # one step: x_T and one step draw per window
    gens = lambda: [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]  # noqa: E731
    first = tiny_decoder.sample_latents(cond, generator=gens(), **kwargs)
    again = tiny_decoder.sample_latents(cond, generator=gens(), **kwargs)
    assert torch.equal(first, again)
    alone = tiny_decoder.sample_latents(cond[1:], generator=[torch.Generator().manual_seed(2)], **kwargs)
    torch.testing.assert_close(first[1:], alone, rtol=0, atol=1e-5)
    chunked = tiny_decoder.sample_latents(cond, generator=gens(), max_batch_size=1, **kwargs)
    torch.testing.assert_close(chunked, first, rtol=0, atol=1e-5)
    other = tiny_decoder.sample_latents(cond, generator=[torch.Generator().manual_seed(5)] * 2, **kwargs)
    assert not torch.allclose(other, first)


def test_one_shared_generator_equals_replaying_its_draws(tiny_decoder):
    cond = _tiny_conditioning(2)
    steps = 1
    shared = tiny_decoder.sample_latents(cond, num_inference_steps=steps, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    noise = torch.stack([torch.cat([torch.randn(1, 8, 256, 16, generator=g) for _ in range(steps + 1)])
                         for _ in range(2)])
    replay = tiny_decoder.sample_latents(cond, num_inference_steps=steps, noise=noise)
    assert torch.equal(shared, replay)


def test_guidance_batches_both_halves_like_two_calls(tiny_decoder):
    cond = _tiny_conditioning(1)
    x = torch.randn(1, 8, 256, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        v_u = tiny_decoder.predict_v(x, 500, unconditional_conditioning(cond, tiny_decoder.feature_width))
        v_c = tiny_decoder.predict_v(x, 500, cond)
        context = torch.cat([unconditional_conditioning(cond, tiny_decoder.feature_width), cond])
        guided = tiny_decoder._guided_v(x, torch.tensor(500), context, 2.0, None)
        masked = tiny_decoder.predict_v(x, 500, cond, attention_mask=torch.ones(1, cond.shape[1]))
    torch.testing.assert_close(guided, v_u + 2.0 * (v_c - v_u), rtol=0, atol=1e-5)
    torch.testing.assert_close(masked, v_c, rtol=0, atol=1e-5)  # the original's all-ones mask = no mask


@pytest.mark.parametrize("max_batch_size", [None, 1])
def test_cached_cross_attention_context_is_bit_identical_and_undone(tiny_decoder, max_batch_size):
    """Sampling projects the conditioning to keys/values once per call; the result must equal recomputing them
    at every step bit for bit, and the UNet's modules must be left as they were."""
    from diffusers.models.attention_processor import Attention

    from semanticodec_hf import unet_context_cache

    cond = _tiny_conditioning(2)
    kwargs = dict(num_inference_steps=4, max_batch_size=max_batch_size)
    calls = []
    projections = [m.to_k for m in tiny_decoder.unet.modules() if isinstance(m, Attention) and m.is_cross_attention]
    assert projections
    counted = projections[0]

    def counting_forward(hidden_states):  # an instance-level override, as accelerate hooks install
        calls.append(1)
        return torch.nn.Linear.forward(counted, hidden_states)

    counted.forward = counting_forward
    try:
        cached = tiny_decoder.sample_latents(cond, generator=torch.Generator().manual_seed(7), **kwargs)
        chunks = 1 if max_batch_size is None else 4  # 2 windows x 2 guidance halves
        assert len(calls) == chunks, "each chunk's context must be projected once per sampling call"
        assert all("forward" not in p.__dict__ for p in projections[1:])
        assert counted.forward is counting_forward, "an existing override must be put back"

        calls.clear()
        original = unet_context_cache.cache_cross_attention_context
        with pytest.MonkeyPatch.context() as patch:  # the same call with the cache switched off
            patch.setattr("semanticodec_hf.modeling_semanticodec_decoder.cache_cross_attention_context",
                          lambda unet: contextlib.nullcontext())
            recomputed = tiny_decoder.sample_latents(cond, generator=torch.Generator().manual_seed(7), **kwargs)
        assert len(calls) == 4 * chunks and original is unet_context_cache.cache_cross_attention_context
    finally:
        del counted.forward
    assert torch.equal(cached, recomputed)


def test_cpu_vocoder_runs_one_window_per_call(tiny_decoder):
    """Batched windows make the CPU vocoder slower (cache-bound); it runs them one by one, so a window's
    waveform does not depend on what it was batched with."""
    mel = -5 + torch.randn(3, 1, 1024, 64, generator=torch.Generator().manual_seed(0))
    sizes = []
    hook = tiny_decoder.vocoder.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        together = tiny_decoder.mel_to_waveform(mel, max_batch_size=8)
    finally:
        hook.remove()
    assert sizes == [1, 1, 1]
    alone = torch.cat([tiny_decoder.mel_to_waveform(mel[i:i + 1]) for i in range(3)])
    assert torch.equal(together, alone)


@pytest.mark.parametrize("sampler", ["dpmsolver++", "unipc"])
def test_fast_solvers_run_with_a_step_count(tiny_decoder, sampler):
    cond = _tiny_conditioning(2)
    kwargs = dict(num_inference_steps=3, sampler=sampler, guidance_scale=1.0)
    generators = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    out = tiny_decoder.sample_latents(cond, generator=generators, **kwargs)
    assert out.shape == (2, 8, 256, 16) and torch.isfinite(out).all()
    again = tiny_decoder.sample_latents(
        cond[:1], noise=torch.randn(1, 1, 8, 256, 16, generator=torch.Generator().manual_seed(1)), **kwargs)
    torch.testing.assert_close(again, out[:1], rtol=0, atol=1e-5)  # they draw x_T only


def test_sampler_errors(tiny_decoder):
    cond = _tiny_conditioning(1)
    with pytest.raises(ValueError, match="Unknown sampler"):
        tiny_decoder.sample_latents(cond, sampler="euler-ancestral")
    with pytest.raises(ValueError, match="divides 999"):
        tiny_decoder.sample_latents(cond, num_inference_steps=9)


def test_decoder_output_shapes(tiny_decoder):
    mel = tiny_decoder.latents_to_mel(torch.zeros(2, 8, 256, 16), max_batch_size=1)
    assert mel.shape == (2, 1, 1024, 64)
    assert tiny_decoder.mel_to_waveform(mel, max_batch_size=1).shape == (2, WINDOW_SAMPLES)


def test_computed_buffers_are_rebuilt(tiny_decoder):
    tiny_decoder.alphas_cumprod = torch.zeros(1)
    tiny_decoder.reset_computed_buffers()
    assert torch.equal(tiny_decoder.alphas_cumprod, diffusion_schedule()["alphas_cumprod"])


# ----------------------------------------------------------------------------------------------- mapping
def _meta_checkpoint(token_rate: int) -> dict:
    """Original decoder.ckpt layout with meta tensors (shapes only) and the real schedule buffers."""
    schedule = original_schedule_buffers()
    return {
        e["key"]: schedule[e["key"]] if e["key"] in schedule else torch.empty(e["shape"], device="meta")
        for e in load_manifest("decoder", token_rate)
    }


@pytest.mark.parametrize("token_rate", [100, 50, 25])
def test_mapping_covers_every_published_layout(token_rate):
    mapped = map_decoder_state_dict(_meta_checkpoint(token_rate))
    config = SemantiCodecConfig(token_rate=token_rate)
    with torch.device("meta"):
        module = SemantiCodecDecoder(config)
    assert set(mapped) == {"decoder." + k for k in module.state_dict()}
    assert mapped["decoder.unet.down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight"].shape == (
        128, config.conditioning_dim)
    assert mapped["decoder.vae.decoder.mid_block.attentions.0.to_q.weight"].shape == (512, 512)


def test_mapping_renames(original_state):
    mapped = map_decoder_state_dict(original_state)
    pairs = {
        "model.diffusion_model.input_blocks.4.0.in_layers.2.weight": "unet.down_blocks.1.resnets.0.conv1.weight",
        "model.diffusion_model.input_blocks.5.2.transformer_blocks.0.attn2.to_k.weight":
            "unet.down_blocks.1.attentions.3.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.input_blocks.9.0.op.weight": "unet.down_blocks.2.downsamplers.0.conv.weight",
        "model.diffusion_model.middle_block.3.emb_layers.1.weight": "unet.mid_block.resnets.1.time_emb_proj.weight",
        "model.diffusion_model.middle_block.2.proj_in.weight": "unet.mid_block.attentions.1.proj_in.weight",
        "model.diffusion_model.output_blocks.8.3.conv.weight": "unet.up_blocks.2.upsamplers.0.conv.weight",
        "model.diffusion_model.output_blocks.7.1.norm.bias": "unet.up_blocks.2.attentions.2.norm.bias",
        "model.diffusion_model.output_blocks.9.0.skip_connection.weight":
            "unet.up_blocks.3.resnets.0.conv_shortcut.weight",
        "model.diffusion_model.time_embed.2.bias": "unet.time_embedding.linear_2.bias",
        "model.diffusion_model.out.2.weight": "unet.conv_out.weight",
        "first_stage_model.decoder.up.0.block.2.norm2.weight": "vae.decoder.up_blocks.2.resnets.2.norm2.weight",
        "first_stage_model.decoder.up.2.upsample.conv.bias": "vae.decoder.up_blocks.0.upsamplers.0.conv.bias",
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight":
            "vae.encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
        "first_stage_model.encoder.mid.attn_1.proj_out.bias": "vae.encoder.mid_block.attentions.0.to_out.0.bias",
        "first_stage_model.decoder.norm_out.weight": "vae.decoder.conv_norm_out.weight",
        "first_stage_model.quant_conv.weight": "vae.quant_conv.weight",
        "first_stage_model.vocoder.ups.3.weight": "vocoder.upsampler.3.weight",
        "first_stage_model.vocoder.resblocks.14.convs2.2.bias": "vocoder.resblocks.14.convs2.2.bias",
        "scale_factor": "scale_factor",
    }
    for old, new in pairs.items():
        assert torch.equal(mapped["decoder." + new], original_state[old]), old
    attention = original_state["first_stage_model.decoder.mid.attn_1.q.weight"]
    assert torch.equal(mapped["decoder.vae.decoder.mid_block.attentions.0.to_q.weight"], attention[:, :, 0, 0])
    assert torch.equal(mapped["decoder.vocoder.mean"], torch.zeros(64))
    assert torch.equal(mapped["decoder.vocoder.scale"], torch.ones(64))


def test_mapping_drops_ema_logvar_and_schedule():
    checkpoint = _meta_checkpoint(100)
    assert any(k.startswith("model_ema.") for k in checkpoint) and "logvar" in checkpoint
    mapped = map_decoder_state_dict(checkpoint)
    assert not any("ema" in k or "logvar" in k or "alphas" in k for k in mapped)


def test_mapping_errors_name_the_keys():
    base = _meta_checkpoint(100)
    extra = dict(base, **{"model.diffusion_model.mystery.weight": torch.empty(1, device="meta")})
    with pytest.raises(ValueError, match=r"unknown keys .*model\.diffusion_model\.mystery\.weight"):
        map_decoder_state_dict(extra)
    missing = dict(base)
    del missing["first_stage_model.vocoder.conv_post.weight"]
    with pytest.raises(ValueError, match=r"missing keys .*vocoder\.conv_post\.weight"):
        map_decoder_state_dict(missing)
    bad_shape = dict(base, **{"model.diffusion_model.out.2.weight": torch.empty(4, 64, 3, 3, device="meta")})
    with pytest.raises(ValueError, match=r"shape mismatches: .*out\.2\.weight: expected \[8, 64, 3, 3\]"):
        map_decoder_state_dict(bad_shape)
    bad_schedule = dict(base, betas=base["betas"] * 1.01)
    with pytest.raises(ValueError, match="schedule buffer betas: differs"):
        map_decoder_state_dict(bad_schedule)
    other_rate = _meta_checkpoint(50)
    with pytest.raises(ValueError, match="token_rate=100"):
        map_decoder_state_dict(other_rate, config=SemantiCodecConfig(token_rate=100))
    no_unet = {k: v for k, v in base.items() if not k.startswith("model.diffusion_model.")}
    with pytest.raises(ValueError, match="cannot infer the token rate"):
        map_decoder_state_dict(no_unet)

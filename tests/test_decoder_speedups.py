"""The decoder's CPU speed-ups: channels-last convolutions (same maths, other kernels) and the opt-in bfloat16
networks (close to float32, codes untouched)."""

import pytest
import torch
from torch import nn

from semanticodec_hf import SemantiCodecConfig, SemantiCodecFeatureExtractor, SemantiCodecModel
from semanticodec_hf.channels_last import channels_last_convolutions
from semanticodec_hf.modeling_semanticodec_decoder import SemantiCodecDecoder


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


CONV1D_CASES = [
    dict(in_channels=6, out_channels=4, kernel_size=7, padding=3),
    dict(in_channels=4, out_channels=6, kernel_size=3, dilation=5, padding=5),
    dict(in_channels=6, out_channels=6, kernel_size=5, stride=2, padding=1, groups=3),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding="same", dilation=2, bias=False),
]
TRANSPOSED_CASES = [
    dict(in_channels=6, out_channels=4, kernel_size=16, stride=5, padding=6),  # the vocoder's upsamplers
    dict(in_channels=4, out_channels=2, kernel_size=4, stride=2, padding=1, output_padding=1),
    dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, dilation=2, groups=2),
]


@pytest.mark.parametrize("kind,kwargs", [("conv", c) for c in CONV1D_CASES] + [("transposed", c) for c in TRANSPOSED_CASES])
def test_channels_last_1d_layers_compute_what_the_layer_computes(kind, kwargs):
    torch.manual_seed(0)
    layer = (nn.Conv1d if kind == "conv" else nn.ConvTranspose1d)(**kwargs)
    signal = torch.randn(2, layer.in_channels, 50)
    time_major = signal.transpose(1, 2).contiguous().transpose(1, 2)  # the layout the vocoder's activations take
    with torch.no_grad():
        expected = layer(signal)
        with channels_last_convolutions(layer) as switched:
            assert switched == 1
            got = [layer(signal), layer(time_major)]
    for value in got:
        assert value.shape == expected.shape
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    assert "forward" not in layer.__dict__, "the layer's own forward must be back after the block"


def test_channels_last_2d_and_what_is_left_alone():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),
                            nn.Conv2d(8, 4, 1), nn.Conv1d(4, 4, 1))
    hooked = network[3]
    hooked.forward = lambda x, layer=hooked: nn.Conv2d.forward(layer, x)  # as an accelerate hook would be
    image = torch.randn(2, 3, 10, 12)
    weights = {k: v.clone() for k, v in network.state_dict().items()}
    with torch.no_grad():
        expected = network[:4](image)
        with channels_last_convolutions(network, conv1d=False) as switched:
            assert switched == 1  # not the reflect-padded layer, the hooked one, nor (conv1d=False) the Conv1d
            got = network[:4](image)
            assert "forward" not in network[2].__dict__ and "forward" not in network[4].__dict__
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert "forward" not in network[0].__dict__ and "forward" in hooked.__dict__
    for key, value in network.state_dict().items():  # parameters untouched, in their usual layout
        assert torch.equal(value, weights[key]) and value.is_contiguous()


def test_decoder_networks_on_channels_last_match_the_plain_layout(tiny_decoder):
    """The decoder runs the VAE and vocoder on channels-last kernels on a CPU; the result must be what the library
    modules compute in their own layout (float32 rounding apart)."""
    latents = torch.randn(2, 8, 256, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mel = tiny_decoder.latents_to_mel(latents)
        plain_mel = tiny_decoder.vae.decode(latents / tiny_decoder.scale_factor, return_dict=False)[0]
        wave = tiny_decoder.mel_to_waveform(mel)
        plain_wave = torch.cat([tiny_decoder.vocoder(m) for m in mel.squeeze(1).split(1)])
    assert _relative(mel, plain_mel) < 1e-5
    assert _relative(wave, plain_wave) < 1e-5
    assert not any("forward" in m.__dict__ for m in tiny_decoder.modules())


def _conditioning(windows: int) -> torch.Tensor:
    config = SemantiCodecConfig.tiny()
    return torch.randn(windows, config.frames_per_window, config.conditioning_dim,
                       generator=torch.Generator().manual_seed(0))


def test_bfloat16_networks_stay_close_to_float32_and_keep_the_sampler_in_float32():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    decoder = SemantiCodecDecoder(SemantiCodecConfig.tiny()).eval()
    cond = _conditioning(2)
    seeds = lambda: [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]  # noqa: E731
    with torch.no_grad():
        reference = decoder.sample_latents(cond, num_inference_steps=5, generator=seeds())
        reference_wave = decoder.mel_to_waveform(decoder.latents_to_mel(reference))

    assert decoder.set_network_dtype("bfloat16") is decoder and decoder.network_dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for net in (decoder.unet, decoder.vae, decoder.vocoder) for p in net.parameters())
    assert decoder.scale_factor.dtype == torch.float32 and decoder.sqrt_alphas_cumprod.dtype == torch.float32

    calls = []
    counted = next(m.to_k for m in decoder.unet.modules() if isinstance(m, Attention) and m.is_cross_attention)
    counted.forward = lambda x: (calls.append(1), nn.Linear.forward(counted, x))[1]
    try:
        with torch.no_grad():
            latents = decoder.sample_latents(cond, num_inference_steps=5, generator=seeds())
    finally:
        del counted.forward
    assert len(calls) == 1, "the bfloat16 context must be cast once, so its projections are cached across steps"
    with torch.no_grad():
        wave = decoder.mel_to_waveform(decoder.latents_to_mel(latents))
    assert latents.dtype == torch.float32 and wave.dtype == torch.float32
    assert torch.isfinite(wave).all()
    assert 0 < _relative(latents, reference) < 0.05  # bfloat16 rounding: close, and really not float32
    assert _relative(wave, reference_wave) < 0.1


def test_decoder_dtype_errors(tiny_decoder):
    with pytest.raises(ValueError, match="Unknown decoder dtype 'half'"):
        tiny_decoder.set_network_dtype("half")
    with pytest.raises(ValueError, match="Unsupported decoder dtype torch.float64"):
        tiny_decoder.set_network_dtype(torch.float64)
    with pytest.raises(ValueError, match="float16 decoding is for GPUs"):
        tiny_decoder.set_network_dtype("float16")
    assert tiny_decoder.network_dtype == torch.float32


def test_model_decodes_in_bfloat16_with_unchanged_codes():
    model = SemantiCodecModel.tiny(seed=0)
    audio = torch.randn(16000 * 3, generator=torch.Generator().manual_seed(0)).numpy() * 0.1
    inputs = SemantiCodecFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt")
    codes = model.encode(**inputs).audio_codes
    assert all(len(torch.unique(row)) > 3 for row in codes[0]), "ids must vary for the equality to mean anything"
    reference = model.decode(codes, num_inference_steps=2, seed=0, num_samples=inputs["num_samples"]).audio_values
    assert model.set_decoder_dtype("bfloat16") is model
    assert torch.equal(model.encode(**inputs).audio_codes, codes)
    decoded = model.decode(codes, num_inference_steps=2, seed=0, num_samples=inputs["num_samples"])
    assert decoded.audio_values.dtype == torch.float32 and decoded.audio_values.shape[-1] == audio.shape[0]
    assert torch.isfinite(decoded.audio_values).all()
    assert reference.pow(2).mean().sqrt() > 1e-2
    assert 0 < _relative(decoded.audio_values, reference) < 0.1  # bfloat16 rounding, not another waveform


def test_an_encoder_in_another_dtype_is_refused():
    torch.manual_seed(0)
    model = SemantiCodecModel(SemantiCodecConfig.tiny()).eval()
    model.encoder.to(torch.bfloat16)
    inputs = SemantiCodecFeatureExtractor()(torch.zeros(16000).numpy() + 0.1, sampling_rate=16000, return_tensors="pt")
    with pytest.raises(ValueError, match="only the original's in float32.*set_decoder_dtype"):
        model.encode(**inputs)


def test_cli_decoder_dtype(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from semanticodec_hf.cli import main

    source = tmp_path / "in.wav"
    sf.write(source, (0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32), 16000)
    assert main(["roundtrip", str(source), str(tmp_path / "out.wav"), "--tiny", "--steps", "2", "--quiet",
                 "--decoder-dtype", "bfloat16"]) == 0
    wave, rate = sf.read(tmp_path / "out.wav")
    assert rate == 16000 and len(wave) == 24000 and np.sqrt(np.mean(wave ** 2)) > 1e-2
    assert main(["roundtrip", str(source), str(tmp_path / "out2.wav"), "--tiny", "--steps", "2", "--quiet",
                 "--decoder-dtype", "float16"]) == 2
    assert "--decoder-dtype float16: float16 decoding is for GPUs" in capsys.readouterr().err


def test_bfloat16_on_a_cpu_without_native_bfloat16_warns(monkeypatch, tiny_decoder):
    """Emulated bfloat16 (no AMX / AVX512-BF16) made a DDIM-50 window take minutes on an AVX2 CPU: say so."""
    import copy
    import warnings

    from semanticodec_hf import modeling_semanticodec_decoder as decoder_module

    monkeypatch.setattr(decoder_module, "has_native_bfloat16", lambda: False)
    monkeypatch.setattr(decoder_module, "cpu_model_name", lambda: "AMD EPYC 7B13")
    with pytest.warns(UserWarning, match=r"AMD EPYC 7B13.*no native bfloat16.*SLOWER"):
        copy.deepcopy(tiny_decoder).set_network_dtype("bfloat16")
    for native in (True, None):  # native support, or a platform where it cannot be told: no warning
        monkeypatch.setattr(decoder_module, "has_native_bfloat16", lambda: native)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            copy.deepcopy(tiny_decoder).set_network_dtype("bfloat16")

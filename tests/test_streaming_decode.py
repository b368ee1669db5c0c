"""Streaming decode: window chunks in bounded memory equal the one-shot decode; the CLI streams long files."""

import numpy as np
import pytest
import soundfile as sf
import torch

from semanticodec_hf import SemantiCodecModel
from semanticodec_hf.processing_semanticodec import STREAM_DECODE_WINDOWS
from semanticodec_hf.cli import main as cli_main
from semanticodec_hf.long_audio import decode_windows, linear_ramp

pytestmark = pytest.mark.usefixtures("one_thread")


def _max_relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def _codes(frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, 64, (frames,), generator=g), torch.randint(0, 128, (frames,), generator=g)])


def test_decode_stream_equals_decode(tiny):
    codes = _codes(3 * 512 + 77)  # 4 decode windows, the last one partial
    full = tiny.decode(codes[None], num_inference_steps=2, seed=3, num_samples=[700000])
    expected = full.audio_values[0, 0, : int(full.audio_values_lengths[0])]
    one_chunk = torch.cat(list(tiny.decode_stream(codes, num_samples=700000, num_inference_steps=2, seed=3,
                                                  windows_per_chunk=8)))
    assert expected.pow(2).mean().sqrt() > 1e-2, "the tiny model must be audible for this comparison to mean anything"
    assert torch.equal(one_chunk, expected)  # same windows in one UNet batch: bit for bit
    pieces = list(tiny.decode_stream(codes, num_samples=700000, num_inference_steps=2, seed=3, windows_per_chunk=1))
    assert len(pieces) >= 4
    assert _max_relative_difference(torch.cat(pieces), expected) <= 1e-5  # other batches: float32 rounding
    other_seed = torch.cat(list(tiny.decode_stream(codes, num_samples=700000, num_inference_steps=2, seed=4)))
    assert _max_relative_difference(other_seed, expected) > 0.1
    with pytest.raises(ValueError, match="one item"):
        next(tiny.decode_stream(torch.stack([codes, codes]), num_inference_steps=2))
    with pytest.raises(ValueError, match="out of range"):
        next(tiny.decode_stream(codes + 1000, num_inference_steps=2))


def test_each_window_is_decoded_from_its_own_codes_and_placed_at_its_time(tiny):
    """Changing the codes that only decode window 2 sees changes exactly that window's stretch of the output."""
    codes = _codes(3 * 512 + 77)  # windows [0, 512) [480, 992) [960, 1472) [1440, 1613) in frames
    changed = codes.clone()
    changed[:, 1000:1430] = _codes(430, seed=9)  # frames seen by window 2 only
    hop, window = 163872 - 10240, 163872  # a window's samples start every W - overlap samples (spec section 13)
    start, end = 2 * hop, 2 * hop + window
    before = torch.cat(list(tiny.decode_stream(codes, num_inference_steps=2, seed=3)))
    after = torch.cat(list(tiny.decode_stream(changed, num_inference_steps=2, seed=3)))
    assert before.shape == after.shape and before.shape[0] > end
    peak = before.abs().max()
    assert (after[:start] - before[:start]).abs().max() <= 1e-6 * peak
    assert (after[end:] - before[end:]).abs().max() <= 1e-6 * peak
    assert (after[start:end] - before[start:end]).abs().max() > 1e-2 * peak


def test_a_non_default_decode_window_overlap_splits_and_cross_fades_consistently():
    """`decode_window_overlap` sets the window split AND the cross-fade (`config.decode_overlap_samples`): decode
    and decode_stream agree, each window's own waveform lands where its frames start (plus the original's 32
    samples of drift per window), the seams fade over exactly the shared frames' audio, and the length rule holds.
    0.1 shares 51 frames, 16320 samples: neither the default 10240 nor `int(10.24 * 0.1 * 16000)` = 16384."""
    model = SemantiCodecModel.tiny(seed=0, decode_window_overlap=0.1)
    config = model.config
    w, shared, fade = config.frames_per_window, config.decode_overlap_frames, config.decode_overlap_samples
    assert (w, shared, fade) == (512, 51, 51 * config.hop_length)
    frames = 2 * (w - shared) + 77  # 3 windows, the last one partial
    windows = decode_windows(frames, config)
    assert windows == [(0, w), (w - shared, 2 * w - shared), (2 * (w - shared), frames)]
    codes = _codes(frames, seed=2)
    steps = dict(num_inference_steps=1)

    decoded = model.decode(codes[None], seed=3, **steps)
    full = decoded.audio_values[0, 0, : int(decoded.audio_values_lengths[0])]
    assert full.shape[-1] == config.output_num_samples(frames) == frames * config.hop_length
    streamed = torch.cat(list(model.decode_stream(codes, seed=3, windows_per_chunk=8, **steps)))
    assert torch.equal(streamed, full)

    # Every window decoded alone with the noise it gets in the joint decode: the joint output is their cross-fade.
    noise = torch.randn(len(windows), 2, *model.decoder.latent_shape, generator=torch.Generator().manual_seed(5))
    joint = model.decode(codes[None], noise=noise, **steps).audio_values[0, 0]
    alone = [model.decode(codes[None, :, a:b], noise=noise[k:k + 1], **steps).audio_values[0, 0]
             for k, (a, b) in enumerate(windows)]  # each cut to its frames' audio: (b - a) x hop_length samples
    assert joint.abs().max() > 1e-2, "the tiny model must be audible for this comparison to mean anything"
    window_length = 163872  # vocoder samples per decoded window: 160 x 1024 + 32
    step = window_length - fade
    assert step - (w - shared) * config.hop_length == window_length - config.window_samples  # the 32-sample drift
    atol = 1e-5 * float(joint.abs().max())  # one window per UNet call instead of three: float32 rounding
    fade_in = linear_ramp(fade, 0.0, 1.0)
    for k, wave in enumerate(alone):
        start = k * step
        own_from = 0 if k == 0 else fade  # window k alone from here on, up to the next window's fade
        own_to = min(wave.shape[-1], joint.shape[-1] - start, step if k < len(alone) - 1 else wave.shape[-1])
        torch.testing.assert_close(joint[start + own_from: start + own_to], wave[own_from:own_to], rtol=0, atol=atol)
        if k:  # the seam: window k-1's tail (known up to its frames' end) fades into window k's head
            known = alone[k - 1].shape[-1] - step  # window k-1's samples past `step` that `alone` kept
            expected = (alone[k - 1][step:].double() * (1 - fade_in[:known])
                        + wave[:known].double() * fade_in[:known]).float()
            torch.testing.assert_close(joint[start: start + known], expected, rtol=0, atol=atol)


def test_cli_streams_long_files_and_matches_the_batch_decode(tiny, tmp_path, capsys):
    frames = (STREAM_DECODE_WINDOWS + 1) * 480 + 100  # more decode windows than the streaming threshold
    codes = _codes(frames, seed=1)
    np.save(tmp_path / "long.npy", codes.numpy())
    out = tmp_path / "long.wav"
    assert cli_main(["decode", str(tmp_path / "long.npy"), str(out), "--tiny", "--steps", "1", "--seed", "5"]) == 0
    assert "streamed" in capsys.readouterr().out
    audio, rate = sf.read(str(out), dtype="float32")
    expected = tiny.decode(codes[None], num_inference_steps=1, seed=[5]).audio_values[0, 0].numpy()
    assert rate == 16000 and audio.shape == expected.shape
    assert np.sqrt(np.mean(audio ** 2)) > 1e-2, "PCM_16 of the tiny model must not be silence"
    # PCM_16 of the same waveform: one quantisation step, plus the float32 rounding of decoding the windows in
    # the CLI's 4-window chunks instead of one 32-window UNet batch (1e-5 x peak per DDIM step, test above).
    peak = float(np.abs(expected).max())
    assert np.abs(audio - np.clip(expected, -1, 1)).max() <= 1.01 / 32768 + 1e-4 * peak
    assert not list(tmp_path.glob(".*partial*"))  # the atomic write left no temporary file

"""Long-audio helpers (spec section 13): window split, numpy-exact ramps, the original's cross-fade, the trim.

Pure functions, no model: each check is a hand-worked case, a property of the spec's split, or a comparison with
numpy / a numpy restatement of the original's cross-fade (bit for bit where the module promises it).
"""

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from semanticodec_hf.configuration_semanticodec import SemantiCodecConfig
from semanticodec_hf.long_audio import (
    DEFAULT_OVERLAP_SAMPLES,
    StreamingOverlapAdd,
    decode_windows,
    linear_ramp,
    overlap_add,
    reference_output_samples,
    split_into_windows,
)

# One torch thread: these tensors gain little from threads, and mutmut forks each mutant's run from a process that
# already ran these tests; an OpenMP pool does not survive a fork, so a multi-threaded op in the child would hang.
pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW_SAMPLES = 163872  # vocoder samples per 1024-frame window (160 x 1024 + 32)
HEAD_SAMPLES = WINDOW_SAMPLES - DEFAULT_OVERLAP_SAMPLES  # window 0's samples before the cross-fade


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ------------------------------------------------------------------------------------------ window split
@pytest.mark.parametrize("frames_per_window", [512, 256, 128])
def test_split_into_windows(frames_per_window):
    w, overlap = frames_per_window, int(frames_per_window * 0.0625)
    assert split_into_windows(w, w) == [(0, w)]
    assert split_into_windows(w + 1, w) == [(0, w), (w - overlap, w + 1)]  # second window of overlap + 1 frames
    assert split_into_windows(1, w) == [(0, 1)]
    assert split_into_windows(0, w) == []
    windows = split_into_windows(5 * w, w)
    assert windows[0] == (0, w) and windows[-1][1] == 5 * w
    assert all(b[0] == a[0] + w - overlap for a, b in zip(windows, windows[1:]))
    assert all(end - start == w for start, end in windows[:-1])


def test_split_worked_example_of_the_spec():
    assert split_into_windows(608, 512, 0.0625) == [(0, 512), (480, 608)]


def test_split_hand_worked_small_windows():
    """Small windows worked by hand from the spec's loop (`while start + W < T`, step `W - int(W * ratio)`)."""
    assert split_into_windows(3, 1) == [(0, 1), (1, 2), (2, 3)]  # W = 1: no overlap frame, one frame per window
    assert split_into_windows(7, 4, 0.5) == [(0, 4), (2, 6), (4, 7)]  # step 2; 6 < 7 so a third window
    assert split_into_windows(6, 4, 0.5) == [(0, 4), (2, 6)]  # 2 + 4 == 6 is not < 6: (2, 6) is the last
    assert split_into_windows(31, 16) == [(0, 16), (15, 31)]  # int(16 * 0.0625) = 1 overlap frame
    assert split_into_windows(32, 16) == [(0, 16), (15, 31), (30, 32)]
    assert split_into_windows(10, 4, 0.0) == [(0, 4), (4, 8), (8, 10)]  # ratio 0: windows touch end to end
    assert split_into_windows(5, 4, 0.2) == [(0, 4), (4, 5)]  # int(0.8) = 0 overlap frames
    assert split_into_windows(5, 4) == split_into_windows(5, 4, 0.0625)  # the default is the original's 1/16


@pytest.mark.parametrize("ratio", [0.0, 0.0625, 0.25, 0.5, 0.75])
@pytest.mark.parametrize("frames_per_window", [1, 2, 3, 8, 16])
def test_split_properties(frames_per_window, ratio):
    """For every length: windows tile [0, T) from 0 in steps of W - overlap, all full but the last (1..W
    frames), and the split stops at the first window that reaches T."""
    w = frames_per_window
    step = w - int(w * ratio)
    for num_frames in range(0, 5 * w + 3):
        windows = split_into_windows(num_frames, w, ratio)
        if num_frames == 0:
            assert windows == []
            continue
        starts = [start for start, _ in windows]
        assert starts == list(range(0, step * len(windows), step))
        assert all(end == start + w for start, end in windows[:-1])
        assert windows[-1][1] == num_frames and 1 <= num_frames - windows[-1][0] <= w
        assert all(end < num_frames for _, end in windows[:-1])  # no earlier window already reaches the end


def test_split_rejects_bad_arguments():
    for num_frames, frames_per_window in [(-1, 4), (4, 0), (4, -1), (-1, 0)]:
        with pytest.raises(ValueError, match=rf"num_frames >= 0 and frames_per_window >= 1, got "
                                             rf"{num_frames}, {frames_per_window}\."):
            split_into_windows(num_frames, frames_per_window)
    for num_frames, frames_per_window, ratio, overlap in [(4, 4, 1.0, 4), (5, 4, 1.5, 6), (8, 8, -0.25, -2)]:
        with pytest.raises(ValueError, match=rf"overlap_ratio={ratio} gives {overlap} overlap frames for "
                                             rf"{frames_per_window}-frame windows\."):
            split_into_windows(num_frames, frames_per_window, ratio)


def test_decode_windows_take_the_window_and_the_overlap_from_the_config():
    config = SimpleNamespace(frames_per_window=16, decode_window_overlap=0.25)  # 4 overlap frames: step 12
    assert decode_windows(40, config) == [(0, 16), (12, 28), (24, 40)] == split_into_windows(40, 16, 0.25)
    assert decode_windows(16, config) == [(0, 16)] and decode_windows(0, config) == []
    assert decode_windows(17, SimpleNamespace(frames_per_window=16, decode_window_overlap=0.0)) == [(0, 16), (16, 17)]


@pytest.mark.parametrize("token_rate", [100, 50, 25])
@pytest.mark.parametrize("ratio", [0.0625, 0.1, 0.25])
def test_the_config_cross_fades_exactly_the_frames_its_windows_share(token_rate, ratio):
    """`decode_overlap_samples` is the audio of the `decode_overlap_frames` that consecutive windows share, so the
    cross-fade stays on them for any `decode_window_overlap`; the published 1/16 gives the original's 10240."""
    config = SemantiCodecConfig(token_rate=token_rate, decode_window_overlap=ratio)
    w = config.frames_per_window
    windows = decode_windows(3 * w, config)
    overlap_frames = windows[0][1] - windows[1][0]
    assert overlap_frames == config.decode_overlap_frames == int(w * ratio)
    assert config.decode_overlap_samples == overlap_frames * config.hop_length
    assert config.decode_overlap_samples * w == overlap_frames * config.window_samples
    if ratio == 0.0625:
        assert config.decode_overlap_samples == DEFAULT_OVERLAP_SAMPLES == 10240


# ------------------------------------------------------------------------------------------------ ramps
def test_linear_ramp_is_numpys_linspace():
    for num, start, stop in [(10240, 0.0, 1.0), (10240, 1.0, 0.0), (7, 0.0, 1.0), (2, 1.0, 0.0), (1, 0.0, 1.0)]:
        assert np.array_equal(linear_ramp(num, start, stop).numpy(), np.linspace(start, stop, num))


@pytest.mark.parametrize("num", [1, 2, 3, 7, 10, 333, 10240])
@pytest.mark.parametrize("start, stop", [(0.1, 0.7), (0.7, -0.3), (-2.5, 1e-3), (0.3, 0.3)])
def test_linear_ramp_is_numpys_linspace_in_float64(num, start, stop):
    """Bit for bit numpy's float64 linspace (values float32 cannot hold), endpoints included."""
    ramp = linear_ramp(num, start, stop)
    assert ramp.dtype == torch.float64 and ramp.shape == (num,)
    assert np.array_equal(ramp.numpy(), np.linspace(start, stop, num))
    assert ramp[0].item() == start and ramp[-1].item() == (stop if num > 1 else start)


@pytest.mark.parametrize("num", [1, 5])
def test_linear_ramp_is_made_on_the_requested_device(num):
    """The ramp lands on `device` (the meta device stands in for an accelerator)."""
    ramp = linear_ramp(num, 0.0, 1.0, device="meta")
    assert ramp.device.type == "meta" and ramp.dtype == torch.float64 and ramp.shape == (num,)


# --------------------------------------------------------------------------------------------- cross-fade
def _numpy_cross_fade(windows: np.ndarray, overlap: int) -> np.ndarray:
    """Spec 13 step 3 restated with numpy: float32 windows, float64 ramps, products rounded to float32."""
    output = windows[0].copy()
    for window in windows[1:]:
        window = window.copy()
        window[:overlap] *= np.linspace(0, 1, overlap)
        output[-overlap:] *= np.linspace(1, 0, overlap)
        output[-overlap:] += window[:overlap]
        output = np.concatenate([output, window[overlap:]])
    return output


@pytest.mark.parametrize("count", [1, 2, 3])
def test_overlap_add_is_the_originals_cross_fade_bit_for_bit(count):
    windows = torch.randn(count, WINDOW_SAMPLES, generator=torch.Generator().manual_seed(count))
    joined = overlap_add(windows, DEFAULT_OVERLAP_SAMPLES)
    assert joined.shape == (WINDOW_SAMPLES + (count - 1) * HEAD_SAMPLES,)
    assert np.array_equal(joined.numpy(), _numpy_cross_fade(windows.numpy(), DEFAULT_OVERLAP_SAMPLES))
    assert DEFAULT_OVERLAP_SAMPLES == 10240


@pytest.mark.parametrize("overlap", [1, 2, 5, 40, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_overlap_add_small_overlaps_bit_for_bit(overlap, dtype):
    """Any overlap up to the window length (1: the next window's first sample is faded out entirely), in the
    windows' own dtype."""
    windows = _randn(4, 64, seed=overlap, dtype=dtype)
    joined = overlap_add(windows, overlap)
    assert joined.dtype == dtype and joined.shape == (64 + 3 * (64 - overlap),)
    assert np.array_equal(joined.numpy(), _numpy_cross_fade(windows.numpy(), overlap))


def test_overlap_add_of_one_window_is_that_window():
    """One window needs no cross-fade, even when it is shorter than the overlap."""
    for window in (_randn(1, 5), _randn(1, WINDOW_SAMPLES, seed=1)):
        joined = overlap_add(window, DEFAULT_OVERLAP_SAMPLES)
        assert torch.equal(joined, window[0])
        assert joined.data_ptr() != window.data_ptr()  # a copy, not a view of the input


@pytest.mark.parametrize("overlap", [0, -3])
def test_overlap_add_without_overlap_concatenates_in_the_windows_dtype(overlap):
    windows = _randn(3, 7, dtype=torch.float16)
    joined = overlap_add(windows, overlap)
    assert joined.dtype == torch.float16 and torch.equal(joined, torch.cat(list(windows)))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), (0, 8)])
def test_overlap_add_rejects_anything_but_a_nonempty_batch_of_windows(shape):
    with pytest.raises(ValueError, match=re.escape(f"windows must be [n >= 1, samples], got {list(shape)}.")):
        overlap_add(torch.zeros(shape), DEFAULT_OVERLAP_SAMPLES)


# ------------------------------------------------------------------------------------ streaming cross-fade
def test_streaming_overlap_add_equals_the_one_shot_cross_fade():
    windows = torch.randn(4, 3000, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    joiner = StreamingOverlapAdd(700)
    pieces = [joiner.push(w) for w in windows] + [joiner.finish()]
    assert torch.equal(torch.cat(pieces), overlap_add(windows, 700))
    assert all(p.shape[0] == 2300 for p in pieces[1:-1])  # each window releases all but the faded tail
    with pytest.raises(ValueError, match="exceeds the window length"):
        StreamingOverlapAdd(5000).push(windows[0])


def test_streaming_windows_of_different_lengths_bit_for_bit():
    """Windows need not share a length; each push releases all but the last `overlap` samples so far."""
    overlap, lengths = 6, [20, 6, 9, 31, 7]
    windows = [_randn(n, seed=i) for i, n in enumerate(lengths)]
    joiner = StreamingOverlapAdd(overlap)
    pieces = [joiner.push(w) for w in windows]
    assert [p.shape[0] for p in pieces] == [n - overlap for n in lengths]
    tail = joiner.finish()
    assert tail.shape == (overlap,)
    joined = torch.cat(pieces + [tail])
    assert np.array_equal(joined.numpy(), _numpy_cross_fade([w.numpy() for w in windows], overlap))


def test_streaming_overlap_of_the_whole_window():
    """overlap == window length is allowed: every push is all cross-fade and releases nothing."""
    windows = _randn(3, 8, seed=4)
    joiner = StreamingOverlapAdd(8)
    assert all(joiner.push(w).shape == (0,) for w in windows)
    assert np.array_equal(joiner.finish().numpy(), _numpy_cross_fade(windows.numpy(), 8))


def test_streaming_one_sample_windows():
    """A single-sample window is a valid window: with overlap 1 the first one is held back, then faded out."""
    joiner = StreamingOverlapAdd(1)
    assert joiner.push(torch.tensor([0.5])).shape == (0,)
    assert joiner.push(torch.tensor([0.25])).shape == (0,)
    assert torch.equal(joiner.finish(), torch.tensor([0.5]))  # linspace(1, 0, 1) == [1.], linspace(0, 1, 1) == [0.]


@pytest.mark.parametrize("overlap", [0, -2])
def test_streaming_without_overlap_passes_windows_through(overlap):
    windows = _randn(3, 5)
    joiner = StreamingOverlapAdd(overlap)
    for window in windows:
        piece = joiner.push(window)
        assert torch.equal(piece, window) and piece.data_ptr() != window.data_ptr()
    assert joiner.finish().shape == (0,)


def test_streaming_finish_ends_the_stream():
    """finish() hands over the held tail once; nothing held gives an empty tensor, and the joiner starts over."""
    assert StreamingOverlapAdd(4).finish().shape == (0,)
    windows = _randn(2, 10, seed=2)
    joiner = StreamingOverlapAdd(4)
    first = [joiner.push(w) for w in windows] + [joiner.finish()]
    assert joiner.finish().shape == (0,)
    second = [joiner.push(w) for w in windows] + [joiner.finish()]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert torch.equal(first[0], windows[0][:-4])  # a new stream's first window is not faded into anything


def test_streaming_follows_the_windows_device():
    """The ramps are built on the windows' device (the meta device stands in for an accelerator)."""
    joiner = StreamingOverlapAdd(3)
    pieces = [joiner.push(torch.ones(8, device="meta")) for _ in range(2)] + [joiner.finish()]
    assert [(p.device.type, p.shape[0]) for p in pieces] == [("meta", 5), ("meta", 5), ("meta", 3)]


@pytest.mark.parametrize("shape", [(2, 3), (0,), (1, 1), ()])
def test_streaming_rejects_anything_but_a_nonempty_1d_window(shape):
    message = re.escape(f"a window must be a non-empty 1-D waveform, got {list(shape)}.")
    for overlap in (0, 1):
        with pytest.raises(ValueError, match=message):
            StreamingOverlapAdd(overlap).push(torch.zeros(shape))


def test_streaming_rejects_an_overlap_longer_than_the_window():
    joiner = StreamingOverlapAdd(5)
    with pytest.raises(ValueError, match=r"overlap_samples=5 exceeds the window length 4\."):
        joiner.push(torch.zeros(4))


# ------------------------------------------------------------------------------------------------- trim
def test_reference_output_samples():
    assert reference_output_samples(600, 100) == 192000
    assert reference_output_samples(608, 100) == 194560  # spec worked example: 12.16 s
    for frames in (1, 57, 300, 520, 1001):
        for rate in (100, 50, 25):
            assert reference_output_samples(frames, rate) == int(((frames / 8) * 16 * 0.01 * (100 / rate)) * 16000)


def test_reference_output_samples_truncates_like_the_original():
    """T frames are T * 0.02 * K s; the original's double arithmetic sometimes lands just below the exact count
    and truncates it (803 frames: 256959.99... -> 256959, one short of 803 * 320)."""
    assert reference_output_samples(803, 100) == 256959
    assert reference_output_samples(803, 50) == 513919
    assert reference_output_samples(802, 100) == 802 * 320
    assert reference_output_samples(0, 100) == 0
    assert reference_output_samples(608, 100, sampling_rate=32000) == 389120  # 12.16 s at 32 kHz
    assert reference_output_samples(50, 25, sampling_rate=8000) == 32000  # 50 frames at 25 tokens/s: 4 s

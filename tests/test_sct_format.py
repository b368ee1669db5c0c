"""The `.sct` format: size = header + ceil(bits / 8) at every variant's true widths, exact round trips, a documented
bit layout, and every corruption (flipped bit, truncation, wrong magic/version/variant) detected with a clear error;
plus a property test of encode -> pack -> unpack -> decode shapes over random lengths, rates and channel counts."""

import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semanticodec_hf import SemantiCodecConfig, SemantiCodecFeatureExtractor, SemantiCodecModel
from semanticodec_hf.configuration_semanticodec import PUBLISHED_SEMANTIC_VOCAB_SIZES, PUBLISHED_TOKEN_RATES
from semanticodec_hf.feature_extraction_semanticodec import reference_frame_count
from semanticodec_hf.sct_format import (
    FORMAT_VERSION,
    HEADER_SIZE,
    SctFormatError,
    SctHeader,
    _checksum,
    _header_bytes,
    atomic_write,
    bit_width,
    check_variant,
    decode_sct,
    encode_sct,
    pack_codes,
    read_header,
    read_sct,
    unpack_codes,
    write_sct,
)

VARIANTS = [(rate, vocab) for rate in PUBLISHED_TOKEN_RATES for vocab in PUBLISHED_SEMANTIC_VOCAB_SIZES]


def random_codes(frames, semantic, acoustic, seed=0):
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, semantic, frames), rng.integers(0, acoustic, frames)])
    codes[:, 0] = [semantic - 1, acoustic - 1]  # the extreme ids are the ones that need every bit
    if frames > 1:
        codes[:, 1] = 0
    return codes


def sct_bytes(codes, semantic=64, acoustic=128, token_rate=100, num_samples=16000, rate=44100):
    return encode_sct(codes, token_rate=token_rate, semantic_vocab_size=semantic, acoustic_codebook_size=acoustic,
                      num_samples=num_samples, original_sampling_rate=rate)


def test_header_is_40_bytes_and_widths_are_ceil_log2():
    assert HEADER_SIZE == 40
    assert [bit_width(v) for v in (2, 3, 4, 64, 128, 1000, 4096, 8192, 16384, 32768, 32769)] == [
        1, 2, 2, 6, 7, 10, 12, 13, 14, 15, 16]
    with pytest.raises(SctFormatError, match=">= 2"):
        bit_width(1)


@pytest.mark.parametrize("token_rate,semantic", VARIANTS)
def test_every_variant_packs_at_its_true_width_and_matches_the_bitrate(token_rate, semantic):
    config = SemantiCodecConfig.from_variant(token_rate=token_rate, semantic_vocab_size=semantic)
    s, a = bit_width(config.semantic_vocab_size), bit_width(config.acoustic_codebook_size)
    assert (s, a) == (int(math.log2(semantic)), 13)
    for frames in (1, 2, 7, 8, 9, 513):
        data = sct_bytes(random_codes(frames, semantic, 8192, frames), semantic, 8192, token_rate)
        assert len(data) == HEADER_SIZE + math.ceil(frames * (s + a) / 8)
        header, codes = decode_sct(data)
        assert header.file_size == len(data) and codes.shape == (2, frames)
    # One minute of frames at the variant's frame rate: the payload is the published bitrate, to the last byte.
    seconds = 61.44  # a whole number of frames at 12.5, 25 and 50 frames/s
    frames = round(config.frame_rate * seconds)
    payload = len(sct_bytes(random_codes(frames, semantic, 8192), semantic, 8192, token_rate)) - HEADER_SIZE
    assert 0 <= 8 * payload - config.bitrate * seconds < 8


@pytest.mark.parametrize("semantic,acoustic", [(2, 2), (64, 128), (1000, 8192), (8192, 8192), (32768, 8192),
                                               (65536, 3)])
def test_round_trip_is_exact(semantic, acoustic):
    for frames in (1, 3, 100, 1001):
        codes = random_codes(frames, semantic, acoustic, seed=frames)
        header, decoded = decode_sct(sct_bytes(codes, semantic, acoustic, num_samples=12345, rate=8000))
        assert decoded.dtype == np.int64 and np.array_equal(decoded, codes)
        assert (header.num_frames, header.num_samples, header.original_sampling_rate) == (frames, 12345, 8000)
        assert np.array_equal(unpack_codes(pack_codes(codes, semantic, acoustic), frames, semantic, acoustic), codes)


def test_bit_layout_is_semantic_then_acoustic_msb_first():
    # vocab 8 / 8: 3 + 3 bits per frame. Frames (5, 3), (1, 6) -> 101 011 001 110 -> 1010 1100 | 1110 0000.
    assert pack_codes(np.array([[5, 1], [3, 6]]), 8, 8) == bytes([0b10101100, 0b11100000])
    # 13 + 13 bits: one frame (8191, 1) -> thirteen ones, then 0000000000001 (26 bits -> 4 bytes).
    assert pack_codes(np.array([[8191], [1]]), 8192, 8192) == bytes([0xFF, 0xF8, 0x00, 0x40])


def test_header_fields_are_at_the_documented_offsets():
    data = sct_bytes(random_codes(10, 64, 128), num_samples=54321, rate=22050)
    assert data[:4] == b"SCT\x1a" and data[4] == FORMAT_VERSION
    assert struct.unpack_from("<HIIIQII", data, 6)[:6] == (100, 64, 128, 10, 54321, 22050)
    assert struct.unpack_from("<I", data, 36)[0] == len(data) - HEADER_SIZE


def test_every_single_bit_flip_is_detected():
    data = bytearray(sct_bytes(random_codes(20, 64, 128)))
    for position in range(len(data)):
        for bit in range(8):
            corrupt = bytearray(data)
            corrupt[position] ^= 1 << bit
            with pytest.raises(SctFormatError):
                decode_sct(bytes(corrupt))


def test_bad_checksum_message():
    data = bytearray(sct_bytes(random_codes(20, 64, 128)))
    data[-3] ^= 0x10
    with pytest.raises(SctFormatError, match="checksum.*corrupt"):
        decode_sct(bytes(data), "x.sct")


def test_every_truncation_and_trailing_bytes_are_detected():
    data = sct_bytes(random_codes(33, 64, 128))
    for size in range(len(data)):
        with pytest.raises(SctFormatError, match="truncated|not a .sct file"):
            decode_sct(data[:size])
    with pytest.raises(SctFormatError, match="truncated"):
        decode_sct(data[: HEADER_SIZE + 3], "cut.sct")
    with pytest.raises(SctFormatError, match="trailing bytes"):
        decode_sct(data + b"\x00")


def test_wrong_magic_and_version():
    data = sct_bytes(random_codes(5, 64, 128))
    with pytest.raises(SctFormatError, match="not a .sct file"):
        decode_sct(b"RIFF" + data[4:], "song.wav")
    with pytest.raises(SctFormatError, match="not a .sct file"):
        decode_sct(b"")
    newer = bytearray(data)
    newer[4] = FORMAT_VERSION + 1
    with pytest.raises(SctFormatError, match="version 2.*Upgrade"):
        decode_sct(bytes(newer))


def test_ids_outside_a_non_power_of_two_vocabulary_are_corruption_even_with_a_valid_checksum():
    # 1000 ids need 10 bits, so 1000..1023 fit the field; a file carrying one (with a matching CRC) is rejected.
    header = SctHeader(100, 1000, 128, 2, 16000, 16000)
    payload = pack_codes(np.array([[999, 1010], [1, 2]]), 1024, 128)
    data = _header_bytes(header, _checksum(_header_bytes(header, 0), payload)) + payload
    with pytest.raises(SctFormatError, match="semantic id 1010 at frame 1 is outside \\[0, 1000\\)"):
        decode_sct(data)


@pytest.mark.parametrize(
    "codes,message",
    [
        (np.array([[64], [0]]), "semantic id 64 at frame 0"),
        (np.array([[0, 1], [0, -1]]), "acoustic id -1 at frame 1"),
        (np.zeros((2, 0), np.int64), "at least one frame"),
        (np.zeros((3, 4), np.int64), "shape \\(2, frames\\)"),
        (np.zeros((2, 4), np.float32), "integer ids"),
        (torch.zeros(2, 4), "integer ids"),
    ],
)
def test_writing_bad_codes_is_refused(codes, message):
    with pytest.raises(SctFormatError, match=message):
        sct_bytes(codes)


def test_bad_header_fields_are_refused():
    with pytest.raises(SctFormatError, match="num_samples"):
        sct_bytes(random_codes(3, 64, 128), num_samples=0)
    with pytest.raises(SctFormatError, match="original_sampling_rate"):
        sct_bytes(random_codes(3, 64, 128), rate=-1)


def test_wrong_variant_is_named_with_what_to_load():
    header = read_header(sct_bytes(random_codes(3, 8192, 8192), 8192, 8192, token_rate=50))
    check_variant(header, SemantiCodecConfig.from_variant(50, 8192))
    with pytest.raises(SctFormatError, match="token_rate=50, semantic_vocab_size=8192.*loaded model is "
                                             "token_rate=100, semantic_vocab_size=16384.*--token-rate 50"):
        check_variant(header, SemantiCodecConfig.from_variant(100, 16384), "a.sct")


def test_files_are_written_atomically(tmp_path):
    codes = random_codes(40, 64, 128)
    header = write_sct(tmp_path / "a.sct", codes, token_rate=100, semantic_vocab_size=64,
                       acoustic_codebook_size=128, num_samples=16000)
    assert (tmp_path / "a.sct").stat().st_size == header.file_size
    read_header_, read_codes = read_sct(tmp_path / "a.sct")
    assert read_header_ == header and np.array_equal(read_codes, codes)
    # A failing writer leaves neither the target nor a temporary file, and keeps an existing target intact.
    before = (tmp_path / "a.sct").read_bytes()

    def failing(path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "a.sct", failing)
    with pytest.raises(OSError):
        atomic_write(tmp_path / "b.sct", failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.sct"]
    assert (tmp_path / "a.sct").read_bytes() == before
    with pytest.raises(SctFormatError, match="cannot read"):
        read_sct(tmp_path / "missing.sct")


def test_pack_unpack_are_vectorised_fast_for_hours_of_frames():
    frames = 4 * 3600 * 50  # four hours at 50 frames/s
    codes = random_codes(frames, 32768, 8192)
    payload = pack_codes(codes, 32768, 8192)
    assert len(payload) == math.ceil(frames * 28 / 8)
    assert np.array_equal(unpack_codes(payload, frames, 32768, 8192), codes)


# ------------------------------------------------------------------------------------- property test
_MODELS = {}


def tiny_model(token_rate):
    if token_rate not in _MODELS:
        torch.manual_seed(0)
        _MODELS[token_rate] = SemantiCodecModel(SemantiCodecConfig.tiny(token_rate=token_rate)).eval()
    return _MODELS[token_rate]


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    token_rate=st.sampled_from(PUBLISHED_TOKEN_RATES),
    sampling_rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 12345]),
    channels=st.integers(1, 3),
    seconds=st.floats(0.17, 11.0),
    integer_pcm=st.booleans(),
)
def test_encode_pack_unpack_decode_shapes(one_thread, token_rate, sampling_rate, channels, seconds, integer_pcm):
    model = tiny_model(token_rate)
    length = int(seconds * sampling_rate)
    rng = np.random.default_rng(length)
    audio = (0.3 * rng.standard_normal((channels, length))).astype(np.float32)
    if integer_pcm:
        audio = (audio * 32767).clip(-32768, 32767).astype(np.int16)
    inputs = SemantiCodecFeatureExtractor()(audio, sampling_rate=sampling_rate)
    num_samples = int(inputs["num_samples"][0])
    encoded = model.encode(**inputs)
    frames = int(encoded.audio_codes_lengths[0])
    assert frames == reference_frame_count(num_samples, token_rate)
    codes = encoded.audio_codes[0, :, :frames]
    config = model.config
    data = encode_sct(codes, token_rate=config.token_rate, semantic_vocab_size=config.semantic_vocab_size,
                      acoustic_codebook_size=config.acoustic_codebook_size, num_samples=num_samples,
                      original_sampling_rate=sampling_rate)
    bits = bit_width(config.semantic_vocab_size) + bit_width(config.acoustic_codebook_size)
    assert len(data) == HEADER_SIZE + math.ceil(frames * bits / 8)
    header, unpacked = decode_sct(data)
    check_variant(header, config)
    assert np.array_equal(unpacked, codes.numpy())
    assert (header.num_samples, header.original_sampling_rate) == (num_samples, sampling_rate)
    decoded = model.decode(torch.from_numpy(unpacked)[None], num_samples=[header.num_samples],
                           num_inference_steps=2, seed=0)
    assert decoded.audio_values.shape == (1, 1, num_samples)
    assert int(decoded.audio_values_lengths[0]) == num_samples
    assert bool(torch.isfinite(decoded.audio_values).all())

"""The `.sct` format: size = header + ceil(bits / 8) at every variant's true widths, exact round trips, a documented
bit layout, and every corruption (flipped bit, truncation, wrong magic/version/variant) detected with a clear error;
header fields a checksum cannot vouch for (sample count vs frames, token rate, flags, original rate) bounded at write
and read time (issue 16), `read_sct` reading only what the header declares; plus property tests of encode -> pack ->
unpack -> decode shapes, and of random codes of every variant with random hostile headers."""

import errno
import io
import math
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semanticodec_hf import SemantiCodecConfig, SemantiCodecFeatureExtractor
from semanticodec_hf.configuration_semanticodec import PUBLISHED_SEMANTIC_VOCAB_SIZES, PUBLISHED_TOKEN_RATES
from semanticodec_hf.feature_extraction_semanticodec import reference_frame_count
from semanticodec_hf.atomic_files import atomic_write
from semanticodec_hf.sct_format import (
    _HEADER,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAX_ORIGINAL_SAMPLING_RATE,
    SCT_TOKEN_RATES,
    SctFormatError,
    SctHeader,
    _checksum,
    _header_bytes,
    _read_declared,
    bit_width,
    check_code_fields,
    check_num_samples,
    check_original_sampling_rate,
    check_variant,
    decode_sct,
    encode_sct,
    num_samples_span,
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


def sct_bytes(codes, semantic=64, acoustic=128, token_rate=100, num_samples=None, rate=44100):
    """A `.sct` file's bytes; the sample count defaults to the largest the frames can come from."""
    if num_samples is None:
        num_samples = num_samples_span(np.shape(codes)[-1], token_rate)[1]
    return encode_sct(codes, token_rate=token_rate, semantic_vocab_size=semantic, acoustic_codebook_size=acoustic,
                      num_samples=num_samples, original_sampling_rate=rate)


def test_header_is_40_bytes_and_widths_are_ceil_log2():
    assert HEADER_SIZE == 40
    assert [bit_width(v) for v in (2, 3, 4, 64, 128, 1000, 4096, 8192, 16384, 32768, 32769)] == [
        1, 2, 2, 6, 7, 10, 12, 13, 14, 15, 16]
    for bad in (1, 2.5, True):
        with pytest.raises(SctFormatError, match=f"^a vocabulary size must be an integer >= 2, got {bad!r}\\.$"):
            bit_width(bad)


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
        num_samples = 320 * frames - 7  # inside the span of `frames` frames at 100 tokens/s
        header, decoded = decode_sct(sct_bytes(codes, semantic, acoustic, num_samples=num_samples, rate=8000))
        assert decoded.dtype == np.int64 and np.array_equal(decoded, codes)
        assert (header.num_frames, header.num_samples, header.original_sampling_rate) == (frames, num_samples, 8000)
        assert np.array_equal(unpack_codes(pack_codes(codes, semantic, acoustic), frames, semantic, acoustic), codes)


def test_bit_layout_is_semantic_then_acoustic_msb_first():
    # vocab 8 / 8: 3 + 3 bits per frame. Frames (5, 3), (1, 6) -> 101 011 001 110 -> 1010 1100 | 1110 0000.
    assert pack_codes(np.array([[5, 1], [3, 6]]), 8, 8) == bytes([0b10101100, 0b11100000])
    # 13 + 13 bits: one frame (8191, 1) -> thirteen ones, then 0000000000001 (26 bits -> 4 bytes).
    assert pack_codes(np.array([[8191], [1]]), 8192, 8192) == bytes([0xFF, 0xF8, 0x00, 0x40])


def test_header_fields_are_at_the_documented_offsets():
    data = sct_bytes(random_codes(10, 64, 128), num_samples=3123, rate=22050)
    assert data[:4] == b"SCT\x1a" and data[4] == FORMAT_VERSION and data[5] == 0
    assert struct.unpack_from("<HIIIQII", data, 6)[:6] == (100, 64, 128, 10, 3123, 22050)
    assert struct.unpack_from("<I", data, 36)[0] == len(data) - HEADER_SIZE


def test_a_hand_worked_file_matches_the_documented_format_byte_for_byte():
    """Every byte of a 2-frame file (vocab 8/8, 3 + 3 bits a frame) as the module docstring lays it out."""
    data = encode_sct(np.array([[5, 1], [3, 6]]), token_rate=50, semantic_vocab_size=8, acoustic_codebook_size=8,
                      num_samples=1000, original_sampling_rate=22050)
    fields = b"SCT\x1a" + bytes([1, 0]) + struct.pack("<HIIIQI", 50, 8, 8, 2, 1000, 22050)
    payload = bytes([0b10101100, 0b11100000])  # 101 011 | 001 110, zero-padded
    crc = zlib.crc32(fields + bytes(4) + struct.pack("<I", 2) + payload)  # CRC field zeroed while computing
    assert data == fields + struct.pack("<II", crc, 2) + payload
    header, codes = decode_sct(data)
    assert header == SctHeader(50, 8, 8, 2, 1000, 22050) and codes.tolist() == [[5, 1], [3, 6]]
    assert header.to_dict() == dict(token_rate=50, semantic_vocab_size=8, acoustic_codebook_size=8, num_frames=2,
                                    num_samples=1000, original_sampling_rate=22050, version=1)
    assert (header.bits_per_frame, header.payload_size, header.file_size, header.duration) == (6, 2, 42, 0.0625)


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
    trailing = (f"x.sct has trailing bytes: {len(data) + 1} bytes, but its header describes {len(data)} (33 frames "
                "of 13 bits + 40-byte header).")
    with pytest.raises(SctFormatError, match=f"^{re.escape(trailing)}$"):
        decode_sct(data + b"\x00", "x.sct")


def test_wrong_magic_and_version():
    data = sct_bytes(random_codes(5, 64, 128))
    with pytest.raises(SctFormatError, match="not a .sct file"):
        decode_sct(b"RIFF" + data[4:], "song.wav")
    with pytest.raises(SctFormatError, match="not a .sct file"):
        decode_sct(b"")
    newer = bytearray(data)
    newer[4] = FORMAT_VERSION + 1
    cases = {2: (bytes(newer), "Upgrade semanticodec-hf."), 0: (forged(version=0), "The file is corrupt.")}
    for version, (data, advice) in cases.items():
        message = f"the data is .sct format version {version}; this semanticodec-hf reads version 1. {advice}"
        with pytest.raises(SctFormatError, match=f"^{re.escape(message)}$"):
            read_header(data)
    with pytest.raises(SctFormatError, match="^the data is .sct format version 2"):
        decode_sct(bytes(newer))


def test_ids_outside_a_non_power_of_two_vocabulary_are_corruption_even_with_a_valid_checksum():
    # 1000 ids need 10 bits, so 1000..1023 fit the field; a file carrying one (with a matching CRC) is rejected.
    header = SctHeader(100, 1000, 128, 2, 600, 16000)
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
        (torch.zeros(2, 4, requires_grad=True), "integer ids"),  # checked, not a numpy conversion error
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
    header = read_header(sct_bytes(random_codes(3, 16384, 8192), 16384, 8192, token_rate=50))
    check_variant(header, SemantiCodecConfig.from_variant(50, 16384))
    with pytest.raises(SctFormatError, match=re.escape(
            "the file was made by the variant token_rate=50, semantic_vocab_size=16384, acoustic_codebook_size=8192, "
            "but the loaded model is token_rate=100, semantic_vocab_size=32768, acoustic_codebook_size=8192; load the "
            "matching model (e.g. a folder converted with --token-rate 50 --semantic-vocab-size 16384).")):
        check_variant(header, SemantiCodecConfig.from_variant(100, 32768))


def test_files_are_written_atomically(tmp_path):
    codes = random_codes(40, 64, 128)
    header = write_sct(tmp_path / "a.sct", codes, token_rate=100, semantic_vocab_size=64,
                       acoustic_codebook_size=128, num_samples=12000)
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
    missing = tmp_path / "missing.sct"
    with pytest.raises(SctFormatError, match=f"^{re.escape(f'cannot read {missing}: {os.strerror(errno.ENOENT)}.')}$"):
        read_sct(missing)


def test_pack_unpack_are_vectorised_fast_for_hours_of_frames():
    frames = 4 * 3600 * 50  # four hours at 50 frames/s
    codes = random_codes(frames, 32768, 8192)
    payload = pack_codes(codes, 32768, 8192)
    assert len(payload) == math.ceil(frames * 28 / 8)
    assert np.array_equal(unpack_codes(payload, frames, 32768, 8192), codes)


# ------------------------------------------------------------------------------------- property test
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    token_rate=st.sampled_from(PUBLISHED_TOKEN_RATES),
    sampling_rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 12345]),
    channels=st.integers(1, 3),
    seconds=st.floats(0.17, 11.0),
    integer_pcm=st.booleans(),
)
def test_encode_pack_unpack_decode_shapes(one_thread, tiny_codec_factory, token_rate, sampling_rate, channels, seconds,
                                          integer_pcm):
    model = tiny_codec_factory(token_rate=token_rate)  # ids vary: real codes are packed
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
    if frames >= 8:
        assert len(torch.unique(codes[1])) > 1, "the packed codes must not all be equal"
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


# ------------------------------------------------------------------------------ header bounds (issue 16)
def forged(token_rate=100, semantic=64, acoustic=128, frames=4, num_samples=1000, rate=16000, flags=0, version=1,
           payload=None, size=None, codes=None):
    """A `.sct` file with any header values and a *valid* checksum: what a hostile or buggy writer can produce."""
    if payload is None:
        codes = np.zeros((2, frames), np.int64) if codes is None else codes
        payload = pack_codes(codes, 2 ** bit_width(semantic), 2 ** bit_width(acoustic))
    size = len(payload) if size is None else size
    fields = [b"SCT\x1a", version, flags, token_rate, semantic, acoustic, frames, num_samples, rate, 0, size]
    crc = _checksum(_HEADER.pack(*fields), payload)
    fields[9] = crc
    return _HEADER.pack(*fields) + payload


def encoder_frames(num_samples, token_rate, capped=True):
    """What the encoder keeps for each length in the int64 array `num_samples`: `reference_frame_count` (its float
    arithmetic, evaluated the same way but vectorised), capped at the windows' frames unless `capped` is False."""
    duration = num_samples / 16000
    duration = duration + (0.16 - duration % 0.16)
    frames = np.ceil(8 * duration / 0.16 / (100 / token_rate)).astype(np.int64)
    if not capped:
        return frames
    return np.minimum(frames, (num_samples // 163840 + 1) * (512 * token_rate // 100))


def test_sct_token_rates_are_the_published_ones():
    assert SCT_TOKEN_RATES == PUBLISHED_TOKEN_RATES


@pytest.mark.parametrize("token_rate", PUBLISHED_TOKEN_RATES)
def test_num_samples_span_holds_every_length_the_encoder_writes_and_is_tight(token_rate):
    rng = np.random.default_rng(token_rate)
    lengths = np.concatenate([
        np.arange(1, 12 * 163840 + 2),  # every length of the first two minutes (short clips, window edges)
        rng.integers(1, 16000 * 3600 * 24, 100_000),  # up to a day
        (np.arange(1, 3000)[:, None] * 163840 + np.arange(-3, 3)).reshape(-1),  # window edges up to 8.5 h
    ])
    frames = encoder_frames(lengths, token_rate)
    check = rng.choice(lengths.size, 2000)
    frames_per_window = 512 * token_rate // 100
    assert frames[check].tolist() == [  # the vectorised arithmetic is the encoder's
        min(reference_frame_count(int(n), token_rate), (int(n) // 163840 + 1) * frames_per_window)
        for n in lengths[check]
    ]
    unique, where = np.unique(frames, return_inverse=True)
    low, high = np.array([num_samples_span(int(f), token_rate) for f in unique]).T
    low, high = low[where], high[where]
    assert ((low <= lengths) & (lengths <= high)).all()
    dense = lengths <= 12 * 163840
    unclamped = dense & (low > 1)  # both bounds are reached, where the encoder's arithmetic sets them
    assert ((lengths == low) & unclamped).any() and ((lengths == high) & dense).any()
    assert (frames < encoder_frames(lengths, token_rate, capped=False)).sum() > 1000  # trimmed streams included


def test_the_encoders_edge_cases_are_inside_the_span_and_one_sample_past_is_refused():
    # (num_samples, frames) the encoder really writes at 100 tokens/s: the shortest clip, the float quirk that adds a
    # frame to a 123-sample clip, exact multiples of 0.16 s that keep no extra patch (N = F * 320, the top of the
    # span), the quirk's extra frame after a whole patch (N = (F - 1) * 320 - 2560, the bottom), and a stream of
    # 7 windows whose 3585th frame is trimmed away (1144321 samples)
    cases = {1: 8, 123: 9, 2560: 16, 7680: 24, 28160: 88, 33280: 113, 69120: 225, 163839: 512, 163840: 520,
             1144321: 3584}
    assert {n: int(encoder_frames(np.array([n]), 100)[0]) for n in cases} == cases
    assert reference_frame_count(1144321, 100) == 3585
    for n, frames in cases.items():
        assert decode_sct(sct_bytes(np.zeros((2, frames), np.int64), num_samples=n))[0].num_samples == n
    assert num_samples_span(24, 100)[1] == 7680 and num_samples_span(113, 100)[0] == 33280
    for frames in (1, 8, 9, 16, 17, 512, 520, 100_000):
        low, high = num_samples_span(frames, 100)
        codes = np.zeros((2, frames), np.int64)
        for good in {low, high}:
            assert decode_sct(sct_bytes(codes, num_samples=good))[0].num_samples == good
            assert decode_sct(forged(frames=frames, num_samples=good))[0].num_samples == good
        for bad in (low - 1, high + 1):
            if bad < 1:
                continue
            refused = f"sample count \\(num_samples\\) {bad} is outside \\[{low}, {high}\\]"
            with pytest.raises(SctFormatError, match=refused):
                sct_bytes(codes, num_samples=bad)
            with pytest.raises(SctFormatError, match=f"x.sct: the sample count \\(num_samples\\) {bad} is outside"):
                decode_sct(forged(frames=frames, num_samples=bad), "x.sct")
    assert num_samples_span(16, 100) == (2240, 5120) and num_samples_span(1, 25) == (1, 1280)


@pytest.mark.parametrize(
    "fields,message",
    [
        (dict(num_samples=2**63), "sample count \\(num_samples\\) 9223372036854775808 is outside \\[1, 1280\\]"),
        (dict(num_samples=2**64 - 1), "sample count \\(num_samples\\) 18446744073709551615 is outside"),
        (dict(num_samples=1, frames=100), "sample count \\(num_samples\\) 1 is outside \\[29120, 32000\\]"),
        (dict(token_rate=1), "token rate \\(token_rate\\) 1 is not one of \\[25, 50, 100\\]"),
        (dict(token_rate=65535), "token rate \\(token_rate\\) 65535 is not one of"),
        (dict(token_rate=200), "token rate \\(token_rate\\) 200 is not one of"),
        (dict(flags=1), "reserved flags byte \\(offset 5\\) is 0x01"),
        (dict(flags=0x80), "reserved flags byte \\(offset 5\\) is 0x80"),
        (dict(rate=0), "invalid header"),
        (dict(rate=384_001),
         "original sampling rate \\(original_sampling_rate\\) 384001 Hz is outside \\[1, 384000\\]"),
        (dict(rate=16_000_000), "original sampling rate \\(original_sampling_rate\\) 16000000 Hz"),
        (dict(rate=2**32 - 1), "original sampling rate"),
    ],
)
def test_checksum_valid_headers_with_absurd_fields_are_refused(fields, message):
    data = forged(**fields)
    with pytest.raises(SctFormatError, match=f"hostile.sct.*{message}"):
        decode_sct(data, "hostile.sct")
    with pytest.raises(SctFormatError, match=message):
        read_header(data, "hostile.sct")
    if "flags" not in fields and fields.get("rate") != 0:
        with pytest.raises(SctFormatError, match="re-create it from the audio"):  # says what to do
            read_header(data)


def test_writing_refuses_what_reading_refuses():
    codes = np.zeros((2, 4), np.int64)
    with pytest.raises(SctFormatError, match="sample count \\(num_samples\\) 18446744073709551615"):
        sct_bytes(codes, num_samples=2**64 - 1)
    with pytest.raises(SctFormatError, match="token rate \\(token_rate\\) 7 is not one of \\[25, 50, 100\\]"):
        sct_bytes(codes, token_rate=7)
    with pytest.raises(SctFormatError, match="16000000 Hz is outside \\[1, 384000\\]"):
        sct_bytes(codes, rate=16_000_000)
    assert decode_sct(sct_bytes(codes, rate=MAX_ORIGINAL_SAMPLING_RATE))[0].original_sampling_rate == 384_000
    # a custom model's own token rate is accepted where it is named (the CLI passes the loaded model's)
    custom = encode_sct(codes, token_rate=200, semantic_vocab_size=64, acoustic_codebook_size=128, num_samples=500,
                        token_rates=(200,))
    assert decode_sct(custom, token_rates=(25, 50, 100, 200))[0].token_rate == 200
    with pytest.raises(SctFormatError, match="token rate \\(token_rate\\) 200"):
        decode_sct(custom)


def test_read_sct_reads_only_the_header_of_a_large_file_of_another_type(tmp_path):
    import tracemalloc

    big = tmp_path / "movie.sct"
    with open(big, "wb") as handle:
        handle.write(b"RIFF" + b"\x00" * 60)
        handle.truncate(256 * 2**20)  # sparse: 256 MB on paper
    tracemalloc.start()
    try:
        with pytest.raises(SctFormatError, match="movie.sct is not a .sct file"):
            read_sct(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_read_sct_of_dev_zero_is_refused_without_reading_it(tmp_path):
    import subprocess
    import sys

    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    # in a child with 2 GB of address space, so that a regression fails with MemoryError instead of eating the box
    script = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
              "from semanticodec_hf.sct_format import read_sct, SctFormatError\n"
              "try:\n    read_sct('/dev/zero')\nexcept SctFormatError as error:\n    print('refused:', error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "refused: /dev/zero is not a .sct file" in result.stdout, result.stderr[-2000:]


def test_read_sct_reads_no_more_than_the_declared_size_and_names_trailing_and_missing_bytes(tmp_path):
    import tracemalloc

    data = sct_bytes(random_codes(33, 64, 128))
    joined = tmp_path / "joined.sct"
    with open(joined, "wb") as handle:
        handle.write(data + data)
        handle.truncate(64 * 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(SctFormatError, match=f"joined.sct has trailing bytes: it is {64 * 2**20} bytes, but its "
                                                 f"header describes {len(data)} .*; the file is corrupt or two files "
                                                 "were joined\\.$"):
            read_sct(joined)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # the declared payload and one byte, not the 64 MB
    cut = tmp_path / "cut.sct"
    cut.write_bytes(data[:-1])
    with pytest.raises(SctFormatError, match=f"cut.sct truncated: {len(data) - 1} bytes, but its header describes "
                                             f"{len(data)}"):
        read_sct(cut)
    header_only = tmp_path / "head.sct"
    header_only.write_bytes(data[:30])
    with pytest.raises(SctFormatError, match="head.sct is truncated: 30 bytes"):
        read_sct(header_only)
    exact = tmp_path / "exact.sct"
    exact.write_bytes(data)
    assert np.array_equal(read_sct(exact)[1], random_codes(33, 64, 128))


def test_trailing_bytes_of_a_stream_without_a_size_are_named_too():
    """A handle that has no file size (a pipe, a BytesIO) still gets the trailing-bytes error, without the size."""
    data = sct_bytes(random_codes(4, 64, 128))
    header = read_header(data)
    assert _read_declared(io.BytesIO(data[HEADER_SIZE:]), header, "stdin") == data[HEADER_SIZE:]
    with pytest.raises(SctFormatError, match="^stdin has trailing bytes: it is longer, but its header describes 47 "
                                             "\\(4 frames of 13 bits \\+ 40-byte header\\); the file is corrupt or "
                                             "two files were joined\\.$"):
        _read_declared(io.BytesIO(data[HEADER_SIZE:] + b"\x00"), header, "stdin")


def test_zero_frames_are_refused_when_written_and_when_read():
    with pytest.raises(SctFormatError, match="at least one frame"):
        sct_bytes(np.zeros((2, 0), np.int64), num_samples=1)
    with pytest.raises(SctFormatError, match="invalid header"):
        decode_sct(forged(frames=0, num_samples=1, payload=b""))


@pytest.mark.parametrize("fields", [dict(semantic=1), dict(acoustic=1), dict(frames=0), dict(num_samples=0),
                                    dict(rate=0), dict(token_rate=0)])
def test_each_zero_or_one_field_makes_an_invalid_header(fields):
    """Vocabularies < 2 and zero frames, samples, rates are refused by one message that lists the fields."""
    with pytest.raises(SctFormatError, match="^x.sct has an invalid header \\(token_rate=.*; the file is corrupt\\.$"):
        read_header(forged(payload=bytes(7), **fields), "x.sct")


def test_a_payload_size_field_that_disagrees_with_the_frames_is_named():
    with pytest.raises(SctFormatError, match=re.escape(
            "the data has an inconsistent header (payload size 5 bytes, but 4 frames of 13 bits need 7); the file "
            "is corrupt.")):
        decode_sct(forged(size=5))


def test_reserved_flags_message_says_what_to_do():
    with pytest.raises(SctFormatError, match=re.escape(
            "x.sct: the reserved flags byte (offset 5) is 0x01; version 1 files have 0 there. The file is corrupt or "
            "was not written by semanticodec-hf; re-create it from the audio (`compress`).")):
        decode_sct(forged(flags=1), "x.sct")


def test_unpack_codes_names_a_wrong_payload_size_and_zero_frames():
    # 2 frames of 6 + 7 bits = 26 bits -> 4 bytes
    for size, state in ((3, "truncated"), (5, "longer than its header says")):
        with pytest.raises(SctFormatError, match=re.escape(
                f"the payload holds {size} bytes but 2 frames of 6+7 bits need 4; the file is {state}.")):
            unpack_codes(bytes(size), 2, 64, 128)
    with pytest.raises(SctFormatError, match="^a code stream needs at least one frame, the header says 0\\.$"):
        unpack_codes(b"", 0, 64, 128)


def test_header_bounds_take_integers_only():
    """A float or bool is refused even inside the range: it is not what any writer stores."""
    for bad in (44100.0, True):
        with pytest.raises(SctFormatError, match=f"^x: the original sampling rate \\(original_sampling_rate\\) {bad}"):
            check_original_sampling_rate(bad, "x")
        with pytest.raises(SctFormatError, match=f"^x: the sample count \\(num_samples\\) {bad!r} is outside"):
            check_num_samples(bad, 140, 100, "x")
    assert check_original_sampling_rate(np.int32(44100), "x") == 44100
    assert check_num_samples(np.uint16(44100), 140, 100, "x") == 44100


@pytest.mark.parametrize("fields,message", [
    (dict(token_rate=7), "the token rate (token_rate) 7 is not one of [25, 50, 100] tokens/s"),
    (dict(rate=384_001), "the original sampling rate (original_sampling_rate) 384001 Hz is outside [1, 384000] Hz"),
    (dict(num_samples=1281), "the sample count (num_samples) 1281 is outside [1, 1280], the 16 kHz input lengths that "
                             "4 frames at 100 tokens/s come from"),
])
def test_write_time_refusals_name_the_header_to_write_and_say_what_to_pass(fields, message):
    with pytest.raises(SctFormatError, match=f"^{re.escape(f'the .sct header to write: {message}; ')}pass the values "
                                             "the feature extractor and the model gave with these codes\\.$"):
        sct_bytes(np.zeros((2, 4), np.int64), **fields)


@pytest.mark.parametrize("field,value,low,high", [
    ("token_rate", 0, 1, 0xFFFF), ("token_rate", 65536, 1, 0xFFFF),
    ("semantic_vocab_size", 2**32, 2, 2**32 - 1), ("acoustic_codebook_size", 2**32, 2, 2**32 - 1),
    ("num_samples", 2**64, 1, 2**64 - 1), ("num_samples", True, 1, 2**64 - 1),
    ("original_sampling_rate", 2**32, 1, 2**32 - 1), ("original_sampling_rate", 44100.0, 1, 2**32 - 1),
])
def test_values_that_do_not_fit_their_header_field_are_refused_by_name(field, value, low, high):
    """Each field's on-disk range (and integers only), checked before packing: never a `struct.error`."""
    fields = dict(token_rate=100, semantic_vocab_size=64, acoustic_codebook_size=128, num_samples=100,
                  original_sampling_rate=16000, token_rates=(value,) if field == "token_rate" else SCT_TOKEN_RATES)
    fields[field] = value
    message = f"{field} must be an integer in [{low}, {high}], got {value!r}."
    with pytest.raises(SctFormatError, match=f"^{re.escape(message)}$"):
        encode_sct(np.zeros((2, 1), np.int64), **fields)


def test_the_largest_values_each_header_field_holds_are_written_and_read_back(tmp_path):
    """The other side of the field ranges: token rates 1 and 65535 (a custom model's, where allowed), 32-bit
    vocabularies (32-bit ids); `write_sct` and `read_sct` pass the allowed token rates on."""
    for token_rate, frames in ((1, 1), (65535, 3)):  # 3 frames are the fewest that 1 sample can come from at 65535
        path = tmp_path / f"{token_rate}.sct"
        header = write_sct(path, np.zeros((2, frames), np.int64), token_rate=token_rate, semantic_vocab_size=64,
                           acoustic_codebook_size=128, num_samples=1, token_rates=(token_rate,))
        assert header == SctHeader(token_rate, 64, 128, frames, 1, 16000)
        assert read_sct(path, token_rates=(token_rate,))[0] == header
        with pytest.raises(SctFormatError, match=f"the token rate \\(token_rate\\) {token_rate} is not one of"):
            read_sct(path)
    top = 2**32 - 1
    codes = np.array([[top - 1, 0], [3, top - 1]])
    header, decoded = decode_sct(sct_bytes(codes, top, top))
    assert header.bits_per_frame == 64 and decoded.tolist() == codes.tolist()


# -------------------------------------------------------------------- `.pt` code files (check_code_fields)
@pytest.mark.parametrize("value", [1000, np.int64(1000), np.uint16(1000), np.array(1000), np.array([1000], np.int32),
                                   torch.tensor(1000), torch.tensor([1000], dtype=torch.int32)])
def test_pt_code_fields_take_any_integer_scalar_and_return_python_ints(value):
    num_samples, rate = check_code_fields(4, value, value, 100, "x.pt")
    assert (num_samples, rate) == (1000, 1000) and type(num_samples) is int and type(rate) is int
    assert check_code_fields(4, None, None, 100, "x.pt") == (None, None)  # unknown stays unknown


_PT_REMEDY = "the file is corrupt or was not written by semanticodec-hf; re-create it from the audio (`encode`)."


@pytest.mark.parametrize("num_samples,rate,message", [
    (torch.tensor(1000.0), None, "num_samples must be an integer, got Tensor tensor(1000.)."),
    (torch.tensor([1000, 1]), None, "num_samples must be an integer, got Tensor tensor([1000,    1])."),
    (np.array([1000.0]), None, "num_samples must be an integer, got ndarray array([1000.])."),
    (np.array([1000, 1]), None, "num_samples must be an integer, got ndarray array([1000,    1])."),
    (True, None, "num_samples must be an integer, got bool True."),
    (None, 44100.0, "original_sampling_rate must be an integer, got float 44100.0."),
    (None, torch.tensor(44100j), "original_sampling_rate must be an integer, got Tensor tensor(0.+44100.j)."),
    (1281, None, "the sample count (num_samples) 1281 is outside [1, 1280], the 16 kHz input lengths that 4 frames "
                 f"at 100 tokens/s come from; {_PT_REMEDY}"),
    (None, 384_001, f"the original sampling rate (original_sampling_rate) 384001 Hz is outside [1, 384000] Hz; "
                    f"{_PT_REMEDY}"),
])
def test_pt_code_fields_that_are_not_integers_or_out_of_bounds_are_named(num_samples, rate, message):
    with pytest.raises(SctFormatError, match=f"^{re.escape(f'x.pt: {message}')}$"):
        check_code_fields(4, num_samples, rate, 100, "x.pt")


# ------------------------------------------------------------- property test: every variant, hostile headers
_FIELDS = ["magic", "version", "flags", "token_rate", "semantic", "acoustic", "frames", "samples", "rate", "crc",
           "size"]
_FIELD_BITS = [32, 8, 8, 16, 32, 32, 32, 64, 32, 32, 32]


def _field_values(bits):
    """Any value of a `bits`-wide field, with the edges (and the published/limit values) drawn often."""
    top = 2**bits - 1
    edges = sorted(v for v in {0, 1, 2, 25, 50, 100, 384_000, 384_001, top // 2 + 1, top} if v <= top)
    return st.one_of(st.integers(0, top), st.sampled_from(edges))


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    variant=st.sampled_from(VARIANTS),
    frames=st.one_of(st.integers(1, 3), st.integers(1, 600), st.integers(1, 60_000)),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_random_codes_of_every_variant_round_trip_and_every_hostile_header_is_refused(variant, frames, seed, data):
    token_rate, semantic = variant
    codes = random_codes(frames, semantic, 8192, seed)
    low, high = num_samples_span(frames, token_rate)
    num_samples = data.draw(st.integers(low, high), "num_samples")
    rate = data.draw(st.integers(1, MAX_ORIGINAL_SAMPLING_RATE), "rate")
    good = encode_sct(codes, token_rate=token_rate, semantic_vocab_size=semantic, acoustic_codebook_size=8192,
                      num_samples=num_samples, original_sampling_rate=rate)
    header, decoded = decode_sct(good)
    assert np.array_equal(decoded, codes)
    assert (header.token_rate, header.semantic_vocab_size, header.num_frames, header.num_samples,
            header.original_sampling_rate) == (token_rate, semantic, frames, num_samples, rate)

    # flipped header bytes, checksum left as it was: always refused
    positions = data.draw(st.lists(st.integers(0, HEADER_SIZE - 1), min_size=1, max_size=4, unique=True), "flips")
    flipped = bytearray(good)
    for position in positions:
        flipped[position] ^= data.draw(st.integers(1, 255), f"xor@{position}")
    with pytest.raises(SctFormatError):
        decode_sct(bytes(flipped))

    # one field set to any value, checksum recomputed: refused, or read back as exactly what is on disk
    field = data.draw(st.integers(0, len(_FIELDS) - 1), "field")
    values = list(_HEADER.unpack_from(good))
    values[field] = data.draw(_field_values(_FIELD_BITS[field]), _FIELDS[field]) if field else \
        data.draw(st.binary(min_size=4, max_size=4), "magic")
    if _FIELDS[field] != "crc":
        values[9] = 0
        values[9] = _checksum(_HEADER.pack(*values), good[HEADER_SIZE:])
    changed = _HEADER.pack(*values) + good[HEADER_SIZE:]
    try:
        header, decoded = decode_sct(changed)
    except SctFormatError:
        return
    # accepted: a valid file (its CRC was recomputed) read back as exactly what is on disk, inside every bound
    on_disk = dict(zip(_FIELDS, values))
    assert (header.token_rate, header.semantic_vocab_size, header.acoustic_codebook_size, header.num_frames,
            header.num_samples, header.original_sampling_rate) == tuple(
        on_disk[name] for name in ("token_rate", "semantic", "acoustic", "frames", "samples", "rate"))
    assert header.token_rate in SCT_TOKEN_RATES and 1 <= header.original_sampling_rate <= MAX_ORIGINAL_SAMPLING_RATE
    low, high = num_samples_span(header.num_frames, header.token_rate)
    assert low <= header.num_samples <= high and decoded.shape == (2, header.num_frames)
    assert (decoded[0] < header.semantic_vocab_size).all() and (decoded[1] < header.acoustic_codebook_size).all()
    if _FIELDS[field] not in ("semantic", "acoustic"):  # another vocabulary is a variant mismatch, found with a model
        assert np.array_equal(decoded, codes)

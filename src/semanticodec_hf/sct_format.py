"""The `.sct` compressed file format: a SemantiCodec code stream packed at its true bit width.

A file is a fixed 40-byte little-endian header followed by the payload:

| offset | size | field |
|---|---|---|
| 0 | 4 | magic `b"SCT\\x1a"` |
| 4 | 1 | format version (1) |
| 5 | 1 | flags (0; reserved: a reader refuses any other value) |
| 6 | 2 | token rate (tokens/s over both streams: 25, 50, 100) |
| 8 | 4 | semantic vocabulary size |
| 12 | 4 | acoustic codebook size |
| 16 | 4 | frame count F |
| 20 | 8 | sample count (16 kHz samples of the input, what decoding trims to; see `num_samples_span`) |
| 28 | 4 | original sampling rate of the input, Hz (1 .. 384000) |
| 32 | 4 | CRC-32 of the header (this field zeroed) and the payload |
| 36 | 4 | payload size in bytes (= ceil(F * (s + a) / 8)) |

The payload is the frames in order, each frame its semantic id in `s = ceil(log2(semantic vocab))` bits then its
acoustic id in `a = ceil(log2(acoustic codebook))` bits, most significant bit first, zero-padded to a whole byte.
So the size on disk is `40 + ceil(F * (s + a) / 8)` bytes and matches the published bitrate (e.g. 13 + 13 bits per
frame at 50 frames/s = 1.30 kbps) up to the header and the last byte.

Every way a file can be wrong (another file type, a newer version, truncation, flipped bits, ids outside the
vocabulary, a variant other than the loaded model's) raises `SctFormatError` (a `ValueError`) saying which. A
checksum only proves the bytes are the ones written, not that a writer was sane, so the header fields are bounded
too, at write time and at read time alike: the token rate is a published one (25/50/100), the reserved flags are
zero, the original sampling rate is at most 384 kHz, and the sample count lies in the span the encoder maps to the
frame count. A hand-made file with a 2^64 sample count or a 16 MHz "original" rate is refused before any decoding.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Collection, Optional, Tuple, Union

import numpy as np

from .atomic_files import atomic_write
from .codec_timing import PATCH_SAMPLES  # 0.16 s at 16 kHz: the encoder rounds every input up to whole patches
from .codec_timing import SAMPLING_RATE as CODEC_SAMPLING_RATE  # the header's sample count is at this rate

MAGIC = b"SCT\x1a"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBBHIIIQIII")
HEADER_SIZE = _HEADER.size  # 40
_CRC_OFFSET = 32
# The published token rates (configuration_semanticodec.PUBLISHED_TOKEN_RATES, repeated so that reading a header
# imports neither torch nor transformers; a test keeps the two equal).
SCT_TOKEN_RATES = (25, 50, 100)
# The highest original sampling rate a file may declare: `decompress --original-rate` resamples to it, so a
# corrupt 4.29 GHz would write gigabytes per second of audio. 384 kHz is the highest rate audio interfaces record.
MAX_ORIGINAL_SAMPLING_RATE = 384_000
_READ_REMEDY = "the file is corrupt or was not written by semanticodec-hf; re-create it from the audio (`compress`)."
_WRITE_REMEDY = "pass the values the feature extractor and the model gave with these codes."
PathLike = Union[str, os.PathLike]


class SctFormatError(ValueError):
    """A `.sct` file or code array that cannot be read or written as asked; the message says why."""


def bit_width(vocab_size: int) -> int:
    """Bits needed for ids `0 .. vocab_size - 1`: `ceil(log2(vocab_size))` (13 for 8192, 6 for 64)."""
    if isinstance(vocab_size, bool) or int(vocab_size) != vocab_size or vocab_size < 2:
        raise SctFormatError(f"a vocabulary size must be an integer >= 2, got {vocab_size!r}.")
    return (int(vocab_size) - 1).bit_length()


def payload_size(num_frames: int, semantic_vocab_size: int, acoustic_codebook_size: int) -> int:
    """Payload bytes of `num_frames` frames: `ceil(num_frames * (s + a) / 8)`."""
    bits = num_frames * (bit_width(semantic_vocab_size) + bit_width(acoustic_codebook_size))
    return (bits + 7) // 8


@dataclass(frozen=True)
class SctHeader:
    """The fields of a `.sct` header (see the module docstring for the byte layout)."""

    token_rate: int
    semantic_vocab_size: int
    acoustic_codebook_size: int
    num_frames: int
    num_samples: int
    original_sampling_rate: int
    version: int = FORMAT_VERSION

    @property
    def bits_per_frame(self) -> int:
        return bit_width(self.semantic_vocab_size) + bit_width(self.acoustic_codebook_size)

    @property
    def payload_size(self) -> int:
        return payload_size(self.num_frames, self.semantic_vocab_size, self.acoustic_codebook_size)

    @property
    def file_size(self) -> int:
        return HEADER_SIZE + self.payload_size

    @property
    def duration(self) -> float:
        """Seconds of the encoded input."""
        return self.num_samples / CODEC_SAMPLING_RATE

    @property
    def variant(self) -> str:
        return (
            f"token_rate={self.token_rate}, semantic_vocab_size={self.semantic_vocab_size}, "
            f"acoustic_codebook_size={self.acoustic_codebook_size}"
        )

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- bit packing
def check_codes(codes: Any, semantic_vocab_size: int, acoustic_codebook_size: int) -> np.ndarray:
    """`codes` as int64 `(2, F)` with every id inside its vocabulary, or a `SctFormatError` naming the first bad id."""
    if hasattr(codes, "detach"):  # a torch tensor, without importing torch here
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise SctFormatError(f"codes must be integer ids, got dtype {codes.dtype}.")
    if codes.ndim != 2 or codes.shape[0] != 2 or codes.shape[1] == 0:
        raise SctFormatError(
            f"codes must have shape (2, frames) with at least one frame (row 0 semantic, row 1 acoustic), got "
            f"{codes.shape}."
        )
    codes = codes.astype(np.int64, copy=False)
    for row, (name, limit) in enumerate((("semantic", semantic_vocab_size), ("acoustic", acoustic_codebook_size))):
        bad = np.flatnonzero((codes[row] < 0) | (codes[row] >= limit))
        if bad.size:
            raise SctFormatError(
                f"{name} id {int(codes[row, bad[0]])} at frame {int(bad[0])} is outside [0, {limit}) "
                f"({bad.size} bad ids); the codes do not belong to a model with {name} vocabulary {limit}."
            )
    return codes


def _bit_weights(width: int) -> np.ndarray:
    return np.uint64(1) << np.arange(width - 1, -1, -1, dtype=np.uint64)


def pack_codes(codes: Any, semantic_vocab_size: int, acoustic_codebook_size: int) -> bytes:
    """Codes `(2, F)` -> `ceil(F * (s + a) / 8)` bytes (per frame: s semantic bits, a acoustic bits, MSB first)."""
    codes = check_codes(codes, semantic_vocab_size, acoustic_codebook_size).astype(np.uint64)
    s, a = bit_width(semantic_vocab_size), bit_width(acoustic_codebook_size)
    # [F, s] and [F, a] bit matrices, one row per frame; concatenating them gives the frame's s + a bits in order.
    semantic_bits = (codes[0][:, None] >> np.arange(s - 1, -1, -1, dtype=np.uint64)) & np.uint64(1)
    acoustic_bits = (codes[1][:, None] >> np.arange(a - 1, -1, -1, dtype=np.uint64)) & np.uint64(1)
    bits = np.concatenate([semantic_bits, acoustic_bits], axis=1).astype(np.uint8)
    return np.packbits(bits).tobytes()  # packbits flattens (row-major): frame after frame


def unpack_codes(payload: bytes, num_frames: int, semantic_vocab_size: int, acoustic_codebook_size: int) -> np.ndarray:
    """Inverse of `pack_codes`: bytes -> int64 codes `(2, num_frames)`; rejects a wrong size or out-of-range ids."""
    s, a = bit_width(semantic_vocab_size), bit_width(acoustic_codebook_size)
    expected = payload_size(num_frames, semantic_vocab_size, acoustic_codebook_size)
    if num_frames < 1:
        raise SctFormatError(f"a code stream needs at least one frame, the header says {num_frames}.")
    if len(payload) != expected:
        raise SctFormatError(
            f"the payload holds {len(payload)} bytes but {num_frames} frames of {s}+{a} bits need {expected}; "
            f"the file is {'truncated' if len(payload) < expected else 'longer than its header says'}."
        )
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=num_frames * (s + a))
    bits = bits.reshape(num_frames, s + a).astype(np.uint64)
    codes = np.stack([bits[:, :s] @ _bit_weights(s), bits[:, s:] @ _bit_weights(a)]).astype(np.int64)
    # Ids >= vocab fit in the bit width when a vocabulary is not a power of two; they are corruption.
    return check_codes(codes, semantic_vocab_size, acoustic_codebook_size)


# ------------------------------------------------------------------------------------------ header bounds
def num_samples_span(num_frames: int, token_rate: int) -> Tuple[int, int]:
    """`(low, high)`: the 16 kHz input lengths that the encoder turns into `num_frames` frames at `token_rate`.

    Why these numbers: for N samples the encoder keeps `min(reference_frame_count(N), windows * frames_per_window)`
    frames. `reference_frame_count` rounds N up to the next 0.16 s patch (a whole extra patch at exact multiples,
    at times one frame more from its float arithmetic), and each frame spans `hop = 32000 / token_rate` samples
    (320 / 640 / 1280). So `N <= F * hop` (equality at exact multiples that the float modulo rounds down), and
    `N >= (F - 1) * hop - 2560` (the extra patch plus the extra frame); 1 at the least, which covers the shortest
    clips. The window cap only ever removes frames past `N / hop`, so trimmed streams stay inside too. A sample
    count outside this span cannot have come from the encoder; `tests/test_sct_format.py` checks the span against
    the encoder's arithmetic for every N over minutes of audio, and both sides of each bound.
    """
    per_frame = 2 * CODEC_SAMPLING_RATE  # samples per frame times the token rate
    high = num_frames * per_frame // token_rate
    low = -(-((num_frames - 1) * per_frame - PATCH_SAMPLES * token_rate) // token_rate)  # ceil division
    return max(1, low), high


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_token_rate(token_rate: int, source: str, allowed: Collection[int] = SCT_TOKEN_RATES,
                     remedy: str = _READ_REMEDY) -> int:
    """The token rate if it is one of `allowed` (the published ones, or a model's own): the frame timing and the
    bitrate follow from it, so an arbitrary 1..65535 would make both nonsense."""
    if token_rate not in allowed:
        raise SctFormatError(
            f"{source}: the token rate (token_rate) {token_rate} is not one of {sorted(set(allowed))} tokens/s; "
            + remedy
        )
    return int(token_rate)


def check_original_sampling_rate(rate: int, source: str, remedy: str = _READ_REMEDY) -> int:
    """The original sampling rate if it is in `[1, MAX_ORIGINAL_SAMPLING_RATE]`: `decompress --original-rate`
    resamples to it, so an absurd rate turns a tiny file into gigabytes of output."""
    if not _is_int(rate) or not 1 <= rate <= MAX_ORIGINAL_SAMPLING_RATE:
        raise SctFormatError(
            f"{source}: the original sampling rate (original_sampling_rate) {rate!r} Hz is outside "
            f"[1, {MAX_ORIGINAL_SAMPLING_RATE}] Hz; {remedy}"
        )
    return int(rate)


def check_num_samples(num_samples: int, num_frames: int, token_rate: int, source: str,
                      remedy: str = _READ_REMEDY) -> int:
    """The sample count if it lies in `num_samples_span(num_frames, token_rate)`: decoding trims to it and `info`
    divides by it, so 2^64 overflowed the decoder and 1 printed megabit bitrates."""
    low, high = num_samples_span(num_frames, token_rate)
    if not _is_int(num_samples) or not low <= num_samples <= high:
        raise SctFormatError(
            f"{source}: the sample count (num_samples) {num_samples!r} is outside [{low}, {high}], the 16 kHz input "
            f"lengths that {num_frames} frames at {token_rate} tokens/s come from; {remedy}"
        )
    return int(num_samples)


def check_header(header: "SctHeader", source: str, token_rates: Collection[int] = SCT_TOKEN_RATES,
                 remedy: str = _READ_REMEDY) -> "SctHeader":
    """Bound the fields a checksum cannot vouch for (see the module docstring); returns `header`."""
    check_token_rate(header.token_rate, source, token_rates, remedy)
    check_original_sampling_rate(header.original_sampling_rate, source, remedy)
    check_num_samples(header.num_samples, header.num_frames, header.token_rate, source, remedy)
    return header


def _as_int(value: Any, name: str, source: str) -> int:
    """`value` (a Python or numpy integer, or a one-element integer tensor or array) as a Python int, or an error
    naming its type: `.pt` files are dicts anyone can fill."""
    if hasattr(value, "numel") and hasattr(value, "dtype") and value.numel() == 1 \
            and not value.dtype.is_floating_point and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iu":
        value = value.item()
    if not _is_int(value):
        raise SctFormatError(f"{source}: {name} must be an integer, got {type(value).__name__} {value!r}.")
    return int(value)


def check_code_fields(num_frames: int, num_samples: Any, original_sampling_rate: Any, token_rate: int,
                      source: str) -> Tuple[Optional[int], Optional[int]]:
    """`(num_samples, original_sampling_rate)` of a code file other than `.sct` (the `.pt` dict), bounded as a
    `.sct` header is; None stays None (unknown). `token_rate` is the model's."""
    remedy = "the file is corrupt or was not written by semanticodec-hf; re-create it from the audio (`encode`)."
    if num_samples is not None:
        num_samples = check_num_samples(_as_int(num_samples, "num_samples", source), num_frames, token_rate, source,
                                        remedy)
    if original_sampling_rate is not None:
        original_sampling_rate = check_original_sampling_rate(
            _as_int(original_sampling_rate, "original_sampling_rate", source), source, remedy)
    return num_samples, original_sampling_rate


# ------------------------------------------------------------------------------------------------ files
def _header_bytes(header: SctHeader, crc: int) -> bytes:
    return _HEADER.pack(
        MAGIC, header.version, 0, header.token_rate, header.semantic_vocab_size, header.acoustic_codebook_size,
        header.num_frames, header.num_samples, header.original_sampling_rate, crc, header.payload_size,
    )


def _checksum(header_with_zero_crc: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(header_with_zero_crc)) & 0xFFFFFFFF


def _check_field(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= int(value) <= high:
        raise SctFormatError(f"{name} must be an integer in [{low}, {high}], got {value!r}.")
    return int(value)


def encode_sct(
    codes: Any,
    *,
    token_rate: int,
    semantic_vocab_size: int,
    acoustic_codebook_size: int,
    num_samples: int,
    original_sampling_rate: int = CODEC_SAMPLING_RATE,
    token_rates: Collection[int] = SCT_TOKEN_RATES,
) -> bytes:
    """Header + packed codes of one item, as the bytes of a `.sct` file.

    The header is bounded exactly as `read_header` bounds it, so nothing is written that a reader refuses.
    `token_rates`: the accepted token rates (the published ones; pass a custom model's own rate to allow it)."""
    codes = check_codes(codes, semantic_vocab_size, acoustic_codebook_size)
    header = SctHeader(
        token_rate=_check_field("token_rate", token_rate, 1, 0xFFFF),
        semantic_vocab_size=_check_field("semantic_vocab_size", semantic_vocab_size, 2, 0xFFFFFFFF),
        acoustic_codebook_size=_check_field("acoustic_codebook_size", acoustic_codebook_size, 2, 0xFFFFFFFF),
        num_frames=_check_field("the frame count", codes.shape[1], 1, 0xFFFFFFFF),
        num_samples=_check_field("num_samples", num_samples, 1, 2**64 - 1),
        original_sampling_rate=_check_field("original_sampling_rate", original_sampling_rate, 1, 0xFFFFFFFF),
    )
    check_header(header, "the .sct header to write", token_rates, _WRITE_REMEDY)
    payload = pack_codes(codes, semantic_vocab_size, acoustic_codebook_size)
    crc = _checksum(_header_bytes(header, 0), payload)
    return _header_bytes(header, crc) + payload


def read_header(data: bytes, source: str = "the data", token_rates: Collection[int] = SCT_TOKEN_RATES) -> SctHeader:
    """Parse and check the header only (magic, version, flags, sizes, field bounds); the checksum needs the payload
    (`decode_sct`). `token_rates`: the accepted token rates (the published ones, or a model's own)."""
    if len(data) < HEADER_SIZE:
        if not MAGIC.startswith(bytes(data[: len(MAGIC)])) or not data:
            raise SctFormatError(f"{source} is not a .sct file ({len(data)} bytes, no SCT header).")
        raise SctFormatError(f"{source} is truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header.")
    magic, version, flags, token_rate, semantic, acoustic, frames, samples, rate, _crc, size = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SctFormatError(f"{source} is not a .sct file (it starts with {bytes(magic)!r}, not {MAGIC!r}).")
    if version != FORMAT_VERSION:
        raise SctFormatError(
            f"{source} is .sct format version {version}; this semanticodec-hf reads version {FORMAT_VERSION}. "
            + ("Upgrade semanticodec-hf." if version > FORMAT_VERSION else "The file is corrupt.")
        )
    if flags:
        raise SctFormatError(
            f"{source}: the reserved flags byte (offset 5) is 0x{flags:02x}; version {FORMAT_VERSION} files have 0 "
            f"there. {_READ_REMEDY[0].upper()}{_READ_REMEDY[1:]}"
        )
    if semantic < 2 or acoustic < 2 or frames < 1 or samples < 1 or rate < 1 or token_rate < 1:
        raise SctFormatError(
            f"{source} has an invalid header (token_rate={token_rate}, vocab sizes {semantic}/{acoustic}, "
            f"{frames} frames, {samples} samples, {rate} Hz); the file is corrupt."
        )
    header = SctHeader(token_rate, semantic, acoustic, frames, samples, rate, version)
    if size != header.payload_size:
        raise SctFormatError(
            f"{source} has an inconsistent header (payload size {size} bytes, but {frames} frames of "
            f"{header.bits_per_frame} bits need {header.payload_size}); the file is corrupt."
        )
    return check_header(header, source, token_rates)


def decode_sct(
    data: bytes, source: str = "the data", token_rates: Collection[int] = SCT_TOKEN_RATES
) -> Tuple[SctHeader, np.ndarray]:
    """Bytes of a `.sct` file -> (header, int64 codes `(2, F)`), after checking the header, sizes and the CRC-32."""
    header = read_header(data, source, token_rates)
    payload = bytes(data[HEADER_SIZE:])
    if len(payload) != header.payload_size:
        state = "truncated" if len(payload) < header.payload_size else "has trailing bytes"
        raise SctFormatError(
            f"{source} {state}: {len(data)} bytes, but its header describes {header.file_size} "
            f"({header.num_frames} frames of {header.bits_per_frame} bits + {HEADER_SIZE}-byte header)."
        )
    stored = _HEADER.unpack_from(data)[9]
    zeroed = bytes(data[:_CRC_OFFSET]) + b"\x00\x00\x00\x00" + bytes(data[_CRC_OFFSET + 4 : HEADER_SIZE])
    actual = _checksum(zeroed, payload)
    if actual != stored:
        raise SctFormatError(
            f"{source} failed its checksum (stored CRC-32 {stored:08x}, computed {actual:08x}): the file is corrupt."
        )
    codes = unpack_codes(payload, header.num_frames, header.semantic_vocab_size, header.acoustic_codebook_size)
    return header, codes


def check_variant(header: Any, config: Any, source: str = "the file") -> None:
    """Refuse codes of another variant than `config`'s: they would decode to garbage, not fail. `header` is a
    `SctHeader` or anything else with `token_rate`, `semantic_vocab_size` and `acoustic_codebook_size` (the
    variant recorded in a `.pt` code file, say)."""
    expected = (config.token_rate, config.semantic_vocab_size, config.acoustic_codebook_size)
    found = (header.token_rate, header.semantic_vocab_size, header.acoustic_codebook_size)
    if expected != found:
        raise SctFormatError(
            f"{source} was made by the variant token_rate={found[0]}, semantic_vocab_size={found[1]}, "
            f"acoustic_codebook_size={found[2]}, but the loaded model is token_rate={expected[0]}, "
            f"semantic_vocab_size={expected[1]}, acoustic_codebook_size={expected[2]}; load the matching model "
            f"(e.g. a folder converted with --token-rate {found[0]} --semantic-vocab-size {found[1]})."
        )


def write_sct(path: PathLike, codes: Any, **fields: Any) -> SctHeader:
    """Write one `.sct` file atomically (fields as in `encode_sct`); returns its header."""
    data = encode_sct(codes, **fields)
    atomic_write(path, lambda temporary: temporary.write_bytes(data))
    return read_header(data, str(path), fields.get("token_rates", SCT_TOKEN_RATES))


def _read_declared(handle: Any, header: SctHeader, source: str) -> bytes:
    """The payload the header declares, read without reading past it (one byte more, to see trailing bytes)."""
    payload = handle.read(header.payload_size + 1)
    if len(payload) > header.payload_size:
        try:
            size = f"{os.fstat(handle.fileno()).st_size} bytes"
        except (OSError, AttributeError, ValueError):
            size = "longer"
        raise SctFormatError(
            f"{source} has trailing bytes: it is {size}, but its header describes {header.file_size} "
            f"({header.num_frames} frames of {header.bits_per_frame} bits + {HEADER_SIZE}-byte header); the file is "
            "corrupt or two files were joined."
        )
    return payload


def read_sct(path: PathLike, token_rates: Collection[int] = SCT_TOKEN_RATES) -> Tuple[SctHeader, np.ndarray]:
    """Read and fully check one `.sct` file -> (header, int64 codes `(2, F)`).

    The magic and header are read and checked first, then at most the size they declare: a large file of
    another type (or /dev/zero) costs 40 bytes, not its size. `token_rates` as in `read_header`."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEADER_SIZE)
            header = read_header(head, str(path), token_rates)
            payload = _read_declared(handle, header, str(path))
    except OSError as error:
        raise SctFormatError(f"cannot read {path}: {error.strerror or error}.") from error
    return decode_sct(head + payload, str(path), token_rates)


__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_ORIGINAL_SAMPLING_RATE",
    "SCT_TOKEN_RATES",
    "SctFormatError",
    "SctHeader",
    "bit_width",
    "check_code_fields",
    "check_codes",
    "check_header",
    "check_num_samples",
    "check_original_sampling_rate",
    "check_token_rate",
    "check_variant",
    "decode_sct",
    "encode_sct",
    "num_samples_span",
    "pack_codes",
    "payload_size",
    "read_header",
    "read_sct",
    "unpack_codes",
    "write_sct",
]

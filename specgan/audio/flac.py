"""Whole FLAC files decoded with dr_flac (through miniaudio): the same float32 samples as libsndfile gives, 1.6×
as fast.

FLAC is lossless, so every correct decoder recovers the same integers, and both libraries scale them to float by
``2 ** -(bits_per_sample - 1)``; ``tests/test_flac.py`` checks the two agree bit for bit (8, 16 and 24 bits, one to
three channels, VCC2016's files). dr_flac checks each frame's CRC and skips a damaged frame, so a damaged file
decodes short; :func:`decode_flac` then declines, and libsndfile decodes the file and decides what it is worth.
:class:`~specgan.audio.io.AudioFile` opens a file with libsndfile first, so its header check and its errors
stay the only ones. prep, which has read a file's bytes anyway to hash them, skips libsndfile for a plain FLAC
file (:func:`stream_info` declares what libsndfile would report, and the file decodes to exactly that;
:func:`~specgan.audio.io.decode_bytes`): opening VCC2016's 648 files with libsndfile took 63 ms on one thread of
the 2-core Intel VM, against dr_flac's 0.5 s to decode them.

Measured on VCC2016's 648 FLAC files (16 kHz, 16 bits, mono; 2 cores): 0.30 s against libsndfile's 0.51 s on one
thread, 0.16 s against 0.28 s on two (the decoding call releases the GIL, as cffi's calls do).
"""

from __future__ import annotations

from dataclasses import dataclass

import miniaudio
import numpy as np


#: Bytes up to the end of STREAMINFO: ``fLaC``, its block header (4), its 34 bytes.
HEADER_BYTES = 42
#: Where STREAMINFO's packed fields lie in a FLAC file's bytes (see :func:`stream_info`).
STREAMINFO_FIELDS = slice(18, 26)
#: Bits of total samples, the lowest of those fields.
FRAMES_BITS = 36


#: Where STREAMINFO's minimum block size (16 bits) lies: a fixed-blocksize stream's frame numbers count in it.
MIN_BLOCK_SIZE = slice(8, 10)
#: The SEEKTABLE metadata block's type, and the size of one of its seek points (RFC 9639, 8.5).
SEEKTABLE, SEEK_POINT_BYTES = 3, 18


@dataclass(frozen=True)
class StreamInfo:
    """What a FLAC file's STREAMINFO block declares."""

    sample_rate: int       # Hz
    channels: int
    bits_per_sample: int
    frames: int            # samples per channel in the whole file; 0 when the encoder did not know


def stream_info(data: bytes) -> StreamInfo | None:
    """The STREAMINFO of a FLAC file's bytes: ``fLaC``, then the metadata block that must come first (type 0, 34
    bytes). None when ``data`` does not begin that way.

    STREAMINFO's fields after the four sizes (10 bytes) are packed big-endian in 64 bits: sample rate (20 bits),
    channels - 1 (3), bits per sample - 1 (5), total samples (36).
    """
    if len(data) < HEADER_BYTES or data[:4] != b"fLaC" or data[4] & 0x7F != 0 or int.from_bytes(data[5:8], "big") != 34:
        return None
    fields = int.from_bytes(data[STREAMINFO_FIELDS], "big")
    return StreamInfo(sample_rate=fields >> 44, channels=(fields >> 41 & 0x7) + 1,
                      bits_per_sample=(fields >> 36 & 0x1F) + 1, frames=fields & (1 << FRAMES_BITS) - 1)


def decode_flac(data: bytes, *, frames: int, channels: int) -> np.ndarray | None:
    """The samples of the whole FLAC file ``data`` as float32 ``(frames, channels)`` in [-1, 1).

    ``frames`` and ``channels`` are what the file's header declares (libsndfile's reading of it). Returns None
    unless the file decodes to exactly that many frames and channels: a damaged or truncated file (dr_flac
    skips frames that fail their CRC), or one that is not FLAC at all.
    """
    if frames <= 0 or channels <= 0 or not _seek_tables_whole(data):
        return None
    try:
        decoded = miniaudio.flac_read_f32(data)
    except miniaudio.DecodeError:
        return None
    if decoded.nchannels != channels or len(decoded.samples) != frames * channels:
        return None
    return np.frombuffer(decoded.samples, dtype=np.float32).reshape(frames, channels)


def _seek_tables_whole(data: bytes) -> bool:
    """Whether every SEEKTABLE block among the metadata blocks of ``data`` (after ``fLaC``, each a 4-byte header:
    last-block flag, type, 24-bit length) holds whole seek points. libsndfile refuses a file whose table does not
    ("unknown error in flac decoder"), where dr_flac reads past it: left to dr_flac, such a file had decoded."""
    at = 4
    while at + 4 <= len(data):
        kind, length = data[at] & 0x7F, int.from_bytes(data[at + 1:at + 4], "big")
        if kind == SEEKTABLE and length % SEEK_POINT_BYTES:
            return False
        if data[at] & 0x80:  # the last metadata block
            break
        at += 4 + length
    return True


def last_frame_end(tail: bytes, *, block_size: int) -> int | None:
    """Samples per channel up to the end of the last FLAC frame whose header lies in ``tail`` (a file's last bytes),
    by that header: its first sample's number plus its block size; None when no header is found.

    A frame header (RFC 9639, 9.1) starts with the sync code ``0xFFF8`` (fixed block size: it numbers the frame,
    counting ``block_size`` samples each, STREAMINFO's minimum block size) or ``0xFFF9`` (variable: it numbers the
    first sample), in a UTF-8-like code, and ends with a CRC-8 of its bytes. Audio data can hold the sync code too:
    the last candidate from the end whose fields are valid and whose CRC-8 matches is taken, so the result is a
    cheap hint (one in 256 false candidates passes the CRC), for the caller to confirm by decoding.
    """
    at = len(tail)
    while True:
        at = max(tail.rfind(b"\xff\xf8", 0, at), tail.rfind(b"\xff\xf9", 0, at))
        if at < 0:
            return None
        found = _frame_header(tail, at)
        if found is not None:
            number, samples = found
            return (number if tail[at + 1] & 1 else number * block_size) + samples


#: Block sizes of the frame header's codes 1 and 2-5 (6 and 7: given after the number; 8-15: 256 · 2 ** (n - 8)).
_BLOCK_SIZES = {1: 192, 2: 576, 3: 1152, 4: 2304, 5: 4608}


def _frame_header(data: bytes, at: int) -> tuple[int, int] | None:
    """``(the coded number, block size)`` of a valid frame header at ``data[at:]``, or None."""
    if at + 6 > len(data):
        return None
    size_code, rate_code = data[at + 2] >> 4, data[at + 2] & 0xF
    if size_code == 0 or rate_code == 0xF or data[at + 3] >> 4 > 10 or data[at + 3] & 1:
        return None
    first = data[at + 4]
    ones = 8 - (~first & 0xFF).bit_length()  # its leading ones give the code's length, as in UTF-8
    length = 1 if ones == 0 else ones if 2 <= ones <= 7 else 0
    continuation = data[at + 5:at + 4 + length]
    if length == 0 or len(continuation) != length - 1 or any(b >> 6 != 0b10 for b in continuation):
        return None
    number = first & (0xFF >> (length + 1) if length > 1 else 0x7F)
    for b in continuation:
        number = number << 6 | b & 0x3F
    end = at + 4 + length
    extra = (1 if size_code == 6 else 2 if size_code == 7 else 0)
    block_size = (int.from_bytes(data[end:end + extra], "big") + 1 if extra else
                  _BLOCK_SIZES.get(size_code) or 256 << (size_code - 8))
    end += extra + (1 if rate_code == 12 else 2 if rate_code in (13, 14) else 0)
    if end >= len(data) or _crc8(data[at:end]) != data[end]:
        return None
    return number, block_size


def _crc8(data: bytes) -> int:
    """FLAC's frame-header CRC-8: polynomial x^8 + x^2 + x + 1, initial value 0."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc << 1 ^ 0x07) & 0xFF if crc & 0x80 else crc << 1 & 0xFF
    return crc

"""The plainest WAV files, 16-bit PCM, read from their bytes without libsndfile: the same float32 samples.

libsndfile scales a 16-bit sample to float as ``sample * (1 / 0x8000)``; both factors are exact in float32, so
``int16.astype(float32) * 2 ** -15`` gives its numbers bit for bit (``tests/test_wav.py`` holds libsndfile as the
oracle). Opening a file with libsndfile took about 0.1 ms (VCC2016's 648 files: 63 ms on one thread), which is
much of the work for a short file, so prep, which has read each file's bytes to hash them, takes this path for the
WAV files it can (FSDD's 3000 WAVs: a whole prep 1.28× faster, with the string-based discovery) and leaves every
other file to :class:`~specgan.audio.io.AudioFile`: another encoding, a
``WAVE_FORMAT_EXTENSIBLE`` header, fields that disagree with each other, a data chunk that does not fit in the
file (libsndfile's reading of those, or its error, decides).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

#: ``fmt `` chunk format tag of integer PCM.
WAVE_FORMAT_PCM = 1


@dataclass(frozen=True)
class PcmWav:
    """Where a 16-bit PCM WAV file's samples are in its bytes, and what they are."""

    sample_rate: int  # Hz
    channels: int
    frames: int
    offset: int       # byte of the first sample


def pcm16_wav(data: bytes) -> PcmWav | None:
    """The layout of a RIFF/WAVE file of 16-bit little-endian PCM: one ``fmt `` chunk (format 1, block align and
    byte rate consistent with the channels and rate) before a ``data`` chunk that lies whole within ``data``.
    None for anything else, including a data chunk whose size is 0 or 0xFFFFFFFF (streaming writers).

    Chunks are walked as RIFF lays them out: an 8-byte header (id, little-endian size), the body, a pad byte
    after an odd size.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    fmt = None
    position = 12
    while position + 8 <= len(data):
        chunk, size = data[position:position + 4], int.from_bytes(data[position + 4:position + 8], "little")
        body = position + 8
        if chunk == b"fmt ":
            if fmt is not None or size < 16 or body + size > len(data):
                return None
            fmt = struct.unpack_from("<HHIIHH", data, body)  # tag, channels, rate, byte rate, block align, bits
        elif chunk == b"data":
            if fmt is None or size in (0, 0xFFFFFFFF) or body + size > len(data):
                return None
            tag, channels, rate, byte_rate, block_align, bits = fmt
            if (tag != WAVE_FORMAT_PCM or bits != 16 or channels < 1 or block_align != 2 * channels
                    or byte_rate != rate * block_align):
                return None
            return PcmWav(sample_rate=rate, channels=channels, frames=size // block_align, offset=body)
        position = body + size + (size & 1)
    return None


def pcm16_samples(data: bytes, wav: PcmWav) -> np.ndarray:
    """The samples of ``wav`` in ``data`` as float32 ``(frames, channels)`` in [-1, 1), as libsndfile gives them."""
    samples = np.frombuffer(data, dtype="<i2", count=wav.frames * wav.channels, offset=wav.offset)
    return np.multiply(samples, np.float32(2.0 ** -15), dtype=np.float32).reshape(wav.frames, wav.channels)


def riff_data_chunk(fd: int) -> tuple[int, int] | None:
    """``(offset of its 8-byte header, declared size)`` of the ``data`` chunk of the RIFF/WAVE file open at ``fd``
    (read with ``pread``; the descriptor's position is left alone), or None when the file is not RIFF/WAVE or has
    no such chunk header within it. Chunks are walked as in :func:`pcm16_wav`, without reading their bodies."""
    head = os.pread(fd, 12, 0)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    size = os.fstat(fd).st_size
    position = 12
    while position + 8 <= size:
        header = os.pread(fd, 8, position)
        chunk, chunk_size = header[:4], int.from_bytes(header[4:], "little")
        if chunk == b"data":
            return position, chunk_size
        position += 8 + chunk_size + (chunk_size & 1)
    return None


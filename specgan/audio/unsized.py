"""Audio files whose writer never came back to write their length into the header.

A program that writes to a pipe cannot seek back when it is done, so it leaves the length at what it wrote first:
a WAV ``data`` chunk of size 0 (a recorder that stopped mid-way leaves the same), a FLAC STREAMINFO of 0 total
samples ("unknown"; ``ffmpeg -f flac pipe:``, ``flac -`` reading stdin). libsndfile reads such a WAV as 0 frames,
and such a FLAC as 2**63 - 1 frames whose last read fails ("Internal psf_fseek() failed"). ffmpeg reads both to
the end of the file, and so does specgan: :func:`length_patches` works out what the header would have said, and
:class:`PatchedFile` shows libsndfile the file with those bytes in place. The file itself is never changed.

A WAV data size of 0xFFFFFFFF, the other streaming convention, libsndfile already reads to the end.

A FLAC file whose STREAMINFO declares fewer samples than its frames hold (a header written before the encoder was
done, or frames appended after it) libsndfile cut short at the declared count without a word; it is read to the
end as well.
"""

from __future__ import annotations

import io
import os

import miniaudio

from specgan.audio.flac import FRAMES_BITS, HEADER_BYTES, MIN_BLOCK_SIZE, STREAMINFO_FIELDS, last_frame_end, \
    stream_info
from specgan.audio.wav import riff_data_chunk

#: Frames that dr_flac decodes at a time while counting an unknown-length FLAC file.
COUNT_BLOCK_FRAMES = 1 << 16
#: The end of a FLAC file searched for its last frame header (a frame of 4096 samples of 16-bit stereo takes at
#: most 16 KiB).
FLAC_TAIL_BYTES = 1 << 16


def length_patches(fd: int) -> dict[int, bytes]:
    """``{byte offset: new bytes}`` that give the file open at ``fd`` the length its writer left out;
    empty when it has one, or is neither WAV nor FLAC.

    - WAV (RIFF/WAVE): a ``data`` chunk whose size is 0 while bytes follow its header gets the size of the rest of
      the file (0xFFFFFFFF beyond 4 GiB, which libsndfile also reads to the end), and a RIFF size of 0 that of the
      whole file after it.
    - FLAC: a STREAMINFO that gives 0 total samples gets the frames that dr_flac decodes from the file, counted by
      decoding it once more (a 10-minute 44.1 kHz stereo file: 0.27 s, against 0.43 s to read it, on the 2-core
      Zen 4 VM); a file dr_flac cannot decode is left to libsndfile. So does one that gives fewer than the last
      frame's header says end there (:func:`~specgan.audio.flac.last_frame_end`, a hint read from the last
      :data:`FLAC_TAIL_BYTES`, which the count confirms): 1100 files of VCC2016 and the demo corpus took 0.17 s
      to check, and none was counted.
    """
    wav = riff_data_chunk(fd)
    if wav is not None:
        at, declared = wav
        size = os.fstat(fd).st_size
        if declared != 0 or at + 8 >= size:
            return {}
        patches = {at + 4: min(size - at - 8, 0xFFFFFFFF).to_bytes(4, "little")}
        if int.from_bytes(os.pread(fd, 4, 4), "little") == 0:
            patches[4] = min(size - 8, 0xFFFFFFFF).to_bytes(4, "little")
        return patches
    head = os.pread(fd, HEADER_BYTES, 0)
    flac = stream_info(head)
    if flac is None:
        return {}
    if flac.frames > 0:
        size = os.fstat(fd).st_size
        start = max(HEADER_BYTES, size - FLAC_TAIL_BYTES)
        end = last_frame_end(os.pread(fd, size - start, start),
                             block_size=int.from_bytes(head[MIN_BLOCK_SIZE], "big"))
        if end is None or end <= flac.frames:
            return {}
    frames = _flac_frames(fd, channels=flac.channels)
    if flac.frames < frames < 1 << FRAMES_BITS:
        fields = int.from_bytes(head[STREAMINFO_FIELDS], "big") & ~((1 << FRAMES_BITS) - 1)
        return {STREAMINFO_FIELDS.start: (fields | frames).to_bytes(8, "big")}
    return {}


def _flac_frames(fd: int, *, channels: int) -> int:
    """Frames per channel that dr_flac decodes from the FLAC file open at ``fd`` (16-bit samples: only counted), or
    0 when it cannot decode it. Streamed through ``/proc/self/fd`` (miniaudio takes a name, which it encodes as
    strict UTF-8, and a file's own name need not be); where there is no ``/proc`` (macOS), decoded whole from its
    bytes."""
    proc = f"/proc/self/fd/{fd}"
    try:
        if not os.path.exists(proc):
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            return len(miniaudio.flac_read_s16(data).samples) // channels
        frames = 0
        for block in miniaudio.flac_stream_file(proc, frames_to_read=COUNT_BLOCK_FRAMES):
            frames += len(block)
    except (miniaudio.MiniaudioError, OSError):
        return 0
    return frames // channels


class PatchedFile(io.RawIOBase):
    """The file open at ``fd`` read as though ``patches`` (``{offset: bytes}``) were written over it; for
    soundfile's virtual I/O. Reads with ``pread``, so the descriptor's own position is left alone."""

    def __init__(self, fd: int, patches: dict[int, bytes]):
        super().__init__()
        self._fd, self._patches = fd, patches
        self._size = os.fstat(fd).st_size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self._fd, len(view), self._position)
        n = len(data)
        view[:n] = data
        for at, new in self._patches.items():
            start, stop = max(at, self._position), min(at + len(new), self._position + n)
            if start < stop:
                view[start - self._position:stop - self._position] = new[start - at:stop - at]
        self._position += n
        return n

"""Files whose streaming writer left the length out of the header (:mod:`specgan.audio.unsized`) read like the same
recording with its length in place, libsndfile's reading of which is the oracle: the same samples, the same
frame count, in one piece and block by block; prep and reconstruct take them."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from specgan.audio.io import AudioFile, load_audio
from specgan.audio.unsized import PatchedFile, length_patches
from specgan.data.dataset_dir import open_dataset
from specgan.errors import AudioError
from helpers import noise


def encoded(signal: np.ndarray, *, format: str, subtype: str, sample_rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, sample_rate, format=format, subtype=subtype)
    return buffer.getvalue()


def without_flac_length(data: bytes) -> bytes:
    """``data`` (a FLAC file) with STREAMINFO's total samples set to 0, as ``flac -`` and ffmpeg to a pipe write."""
    fields = int.from_bytes(data[18:26], "big")
    assert fields & (1 << 36) - 1, "the encoder wrote a length to take out"
    return data[:18] + (fields & ~((1 << 36) - 1)).to_bytes(8, "big") + data[26:]


def without_wav_length(data: bytes, *, riff_too: bool = True) -> bytes:
    """``data`` (a WAV file) with its ``data`` chunk size, and with ``riff_too`` its RIFF size, set to 0."""
    at = data.index(b"data") + 4
    out = bytearray(data)
    out[at:at + 4] = bytes(4)
    if riff_too:
        out[4:8] = bytes(4)
    return bytes(out)


def blocks_of(path, *, block_frames: int) -> tuple[int, np.ndarray]:
    with AudioFile(path) as audio:
        return audio.frames, np.concatenate(list(audio.blocks(block_frames=block_frames)))


CASES = [("FLAC", "PCM_16", 1), ("FLAC", "PCM_24", 2), ("FLAC", "PCM_S8", 3),
         ("WAV", "PCM_16", 1), ("WAV", "PCM_24", 2), ("WAV", "FLOAT", 1)]


@pytest.mark.parametrize("format, subtype, channels", CASES)
@pytest.mark.parametrize("frames", [1, 4097, 30011])
def test_a_file_without_its_length_reads_as_the_same_file_with_it(tmp_path, format, subtype, channels, frames):
    data = encoded(noise(frames, channels), format=format, subtype=subtype)
    unsized = without_flac_length(data) if format == "FLAC" else without_wav_length(data)
    (tmp_path / "sized").write_bytes(data)
    (tmp_path / "unsized").write_bytes(unsized)
    expected = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0]
    assert len(expected) == frames

    for block_frames in (frames + 1, 1000):  # whole (dr_flac for FLAC), and in blocks through libsndfile
        counted, samples = blocks_of(tmp_path / "unsized", block_frames=block_frames)
        assert counted == frames
        np.testing.assert_array_equal(samples, expected)
    np.testing.assert_array_equal(load_audio(tmp_path / "unsized", sample_rate=8000)[0],
                                  load_audio(tmp_path / "sized", sample_rate=8000)[0])
    assert (tmp_path / "unsized").read_bytes() == unsized  # never rewritten


def test_only_the_missing_length_is_patched(tmp_path):
    data = encoded(noise(5000, 1), format="WAV", subtype="PCM_16")
    cases = {"sized.wav": data, "ffff.wav": data.replace(data[data.index(b"data"):][:8],
                                                          b"data\xff\xff\xff\xff"),
             "data_only.wav": without_wav_length(data, riff_too=False),
             "sized.flac": encoded(noise(5000, 1), format="FLAC", subtype="PCM_16"),
             "other.ogg": encoded(noise(5000, 1), format="OGG", subtype="VORBIS")}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    patches = {}
    for name in cases:
        fd = os.open(tmp_path / name, os.O_RDONLY)
        try:
            patches[name] = length_patches(fd)
        finally:
            os.close(fd)
    data_at = data.index(b"data") + 4
    assert patches == {"sized.wav": {}, "ffff.wav": {}, "sized.flac": {}, "other.ogg": {},
                       "data_only.wav": {data_at: (len(data) - data_at - 4).to_bytes(4, "little")}}
    assert blocks_of(tmp_path / "data_only.wav", block_frames=1 << 20)[0] == 5000


# 11025 and 12340 Hz: rates a frame header gives after its number, in Hz (code 13) and in tens of Hz (code 14), two
# bytes that the header's CRC-8 covers.
@pytest.mark.parametrize("subtype, channels, sample_rate", [("PCM_16", 1, 16000), ("PCM_24", 2, 16000),
                                                            ("PCM_S8", 3, 16000), ("PCM_16", 1, 11025),
                                                            ("PCM_16", 2, 12340)])
def test_a_flac_file_that_declares_fewer_samples_than_it_holds_reads_to_the_end(tmp_path, subtype, channels,
                                                                                 sample_rate):
    """libsndfile stopped at STREAMINFO's count without a word (10000 of 30011 frames here), as ffmpeg does not."""
    data = encoded(noise(30011, channels), format="FLAC", subtype=subtype, sample_rate=sample_rate)
    fields = int.from_bytes(data[18:26], "big")
    short = data[:18] + (fields & ~((1 << 36) - 1) | 10000).to_bytes(8, "big") + data[26:]
    assert sf.info(io.BytesIO(short)).frames == 10000
    (tmp_path / "sized.flac").write_bytes(data)
    (tmp_path / "short.flac").write_bytes(short)
    expected = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0]
    for block_frames in (40000, 1000):
        counted, samples = blocks_of(tmp_path / "short.flac", block_frames=block_frames)
        assert counted == 30011
        np.testing.assert_array_equal(samples, expected)
    np.testing.assert_array_equal(load_audio(tmp_path / "short.flac", sample_rate=8000)[0],
                                  load_audio(tmp_path / "sized.flac", sample_rate=8000)[0])
    # Counted through the open file: miniaudio encodes a name as strict UTF-8, and this one is not.
    odd = tmp_path / os.fsdecode(b"caf\xe9.flac")
    (tmp_path / "short.flac").rename(odd)
    np.testing.assert_array_equal(blocks_of(odd, block_frames=40000)[1], expected)


@pytest.mark.parametrize("frames", [1, 192, 4096, 4097, 100003])
def test_the_last_frame_header_gives_the_encoders_count(frames):
    from specgan.audio.flac import MIN_BLOCK_SIZE, last_frame_end

    data = encoded(noise(frames, 2), format="FLAC", subtype="PCM_16")
    assert last_frame_end(data[-(1 << 16):], block_size=int.from_bytes(data[MIN_BLOCK_SIZE], "big")) == frames


def test_a_variable_block_size_frame_numbers_its_first_sample():
    from specgan.audio.flac import _crc8, last_frame_end

    assert _crc8(b"123456789") == 0xF4  # the check value of CRC-8 with polynomial 0x07 (CRC-8/SMBUS)
    # Sync 0xFFF9; block size code 7 (16 bits of size - 1 follow), rate and sample size from STREAMINFO; mono;
    # first sample 70000 in the 4-byte UTF-8-like code; block size 1000.
    header = bytes([0xFF, 0xF9, 0x70, 0x00, 0xF0, 0x91, 0x85, 0xB0]) + (999).to_bytes(2, "big")
    frame = header + bytes([_crc8(header)]) + b"\x00" * 40
    assert last_frame_end(b"\x11" * 30 + frame, block_size=4096) == 71000
    assert last_frame_end(b"\x11" * 30 + header + bytes([_crc8(header) ^ 1]) + b"\x00" * 40, block_size=4096) is None
    for junk in (os.urandom(1 << 16), b"\xff\xf8" * 100, b"\xff\xf9", b""):  # never an error, whatever the bytes
        end = last_frame_end(junk, block_size=4096)
        assert end is None or end > 0


def test_without_proc_the_count_decodes_the_bytes(tmp_path, monkeypatch):
    """Where there is no /proc (macOS), the frames are counted from the file's bytes (it had returned 0: no patch)."""
    from specgan.audio import unsized

    data = encoded(noise(30011, 2), format="FLAC", subtype="PCM_16")
    (tmp_path / "unsized.flac").write_bytes(without_flac_length(data))
    real_exists = os.path.exists
    monkeypatch.setattr(unsized.os.path, "exists", lambda p: False if str(p).startswith("/proc/") else real_exists(p))
    fd = os.open(tmp_path / "unsized.flac", os.O_RDONLY)
    try:
        assert unsized._flac_frames(fd, channels=2) == 30011
    finally:
        os.close(fd)


def test_a_header_with_nothing_after_it_is_still_empty(tmp_path):
    data = encoded(np.zeros((0, 1), np.float32), format="WAV", subtype="PCM_16")
    (tmp_path / "empty.wav").write_bytes(without_wav_length(data))
    with pytest.raises(AudioError, match="empty audio"):
        load_audio(tmp_path / "empty.wav")


def test_a_flac_file_without_length_that_does_not_decode_is_still_refused(tmp_path):
    data = without_flac_length(encoded(noise(30000, 1), format="FLAC", subtype="PCM_16"))
    (tmp_path / "cut.flac").write_bytes(data[:200])
    with pytest.raises(AudioError, match="cut.flac"):
        load_audio(tmp_path / "cut.flac")


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_patched_file_reads_what_the_patched_bytes_hold(tmp_path_factory, data):
    content = data.draw(st.binary(min_size=1, max_size=300))
    patches = {}
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(content) - 1))
        if any(at < a + len(b) and a < at + 8 for a, b in patches.items()):
            continue
        patches[at] = data.draw(st.binary(min_size=1, max_size=min(8, len(content) - at)))
    expected = bytearray(content)
    for at, new in patches.items():
        expected[at:at + len(new)] = new
    path = tmp_path_factory.mktemp("patched") / "file"
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = PatchedFile(fd, patches)
        got = bytearray()
        while True:
            piece = reader.read(data.draw(st.integers(1, 50)))
            if not piece:
                break
            got += piece
        assert bytes(got) == bytes(expected)
        start = data.draw(st.integers(0, len(content)))
        assert reader.seek(start - len(content), os.SEEK_END) == start
        assert reader.read() == bytes(expected[start:])
    finally:
        os.close(fd)


def test_prep_and_reconstruct_take_files_without_length(tmp_path):
    wavs = tmp_path / "wavs"
    (wavs / "A").mkdir(parents=True)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    (wavs / "A" / "pipe.flac").write_bytes(without_flac_length(encoded(tone, format="FLAC", subtype="PCM_16")))
    (wavs / "A" / "pipe.wav").write_bytes(without_wav_length(encoded(tone, format="WAV", subtype="PCM_16")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "specgan", "prep", str(wavs), "-o", str(tmp_path / "ds"),
                          "--workers", "1", "--sample-rate", "8000", "--n-fft", "256", "--hop-length", "64",
                          "--n-mels", "32", "--frames", "32"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    dataset = open_dataset(tmp_path / "ds")
    assert {s["path"]: s["chunks"] for s in dataset.manifest["sources"]} == {"A/pipe.flac": 7, "A/pipe.wav": 7}
    run = subprocess.run([sys.executable, "-m", "specgan", "reconstruct", str(wavs / "A" / "pipe.flac"), "-o",
                          str(tmp_path / "back.wav"), "--iters", "4"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sf.info(str(tmp_path / "back.wav")).duration == pytest.approx(1.0, abs=0.01)

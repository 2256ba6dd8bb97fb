"""16-bit PCM WAV files read from their bytes (prep's path) against libsndfile, the oracle: the same float32
samples, bit for bit; anything else, damaged headers included, is left to libsndfile, so that prep reads it as
opening the file does."""

from __future__ import annotations

import io
import re
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specgan.audio.io import AudioFile, decode_bytes, load_audio
from specgan.audio.wav import pcm16_samples, pcm16_wav
from specgan.errors import AudioError
from helpers import decoded_whole_or_error, noise


def wav_bytes(signal: np.ndarray, *, sample_rate: int = 16000, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, sample_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def libsndfile_samples(data: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0]


@pytest.mark.parametrize("channels", [1, 2, 5])
@pytest.mark.parametrize("frames", [1, 4095, 30011])
@pytest.mark.parametrize("sample_rate", [8000, 44100])
def test_pcm16_samples_are_libsndfiles(channels, frames, sample_rate):
    data = wav_bytes(noise(frames, channels), sample_rate=sample_rate)
    wav = pcm16_wav(data)
    assert (wav.sample_rate, wav.channels, wav.frames) == (sample_rate, channels, frames)
    samples = pcm16_samples(data, wav)
    assert samples.dtype == np.float32
    np.testing.assert_array_equal(samples, libsndfile_samples(data))


def test_real_recordings_read_as_libsndfile_reads_them(fsdd):
    for path in sorted(fsdd.glob("*.wav"))[:20]:
        data = path.read_bytes()
        samples, rate = decode_bytes(data, sample_rate=22050)
        assert rate == sf.info(path).samplerate
        np.testing.assert_array_equal(samples, libsndfile_samples(data))


def chunked(fmt: bytes, data: bytes, *, fmt_first: bool = True, extra: bytes = b"") -> bytes:
    """A RIFF/WAVE file of the given ``fmt `` body and sample bytes, with ``extra`` chunks before them."""
    chunks = [b"fmt " + struct.pack("<I", len(fmt)) + fmt, b"data" + struct.pack("<I", len(data)) + data]
    body = b"WAVE" + extra + b"".join(chunks if fmt_first else chunks[::-1])
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pcm_fmt(*, tag=1, channels=1, rate=16000, byte_rate=None, align=None, bits=16) -> bytes:
    align = 2 * channels if align is None else align
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align if byte_rate is None else byte_rate, align, bits)


def test_other_files_are_left_to_libsndfile():
    samples = (np.arange(200, dtype=np.int16) * 100).tobytes()
    plain = chunked(pcm_fmt(), samples)
    assert pcm16_wav(plain) is not None
    # an odd-sized chunk before fmt is padded to an even size, as RIFF says
    assert pcm16_wav(chunked(pcm_fmt(), samples, extra=b"LIST" + struct.pack("<I", 3) + b"abc\0")).frames == 200
    for subtype in ["PCM_24", "PCM_32", "FLOAT", "PCM_U8", "ULAW"]:
        assert pcm16_wav(wav_bytes(noise(100, 1), subtype=subtype)) is None, subtype
    assert pcm16_wav(wav_bytes(noise(100, 2), fmt="WAVEX")) is None  # WAVE_FORMAT_EXTENSIBLE
    assert pcm16_wav(wav_bytes(noise(100, 1), fmt="RF64")) is None
    assert pcm16_wav(plain[:-2]) is None  # the data chunk does not fit: libsndfile's "truncated" check decides
    assert pcm16_wav(chunked(pcm_fmt(), b"")) is None
    assert pcm16_wav(chunked(pcm_fmt(), samples, fmt_first=False)) is None
    assert pcm16_wav(chunked(pcm_fmt(byte_rate=1), samples)) is None
    assert pcm16_wav(chunked(pcm_fmt(align=4), samples)) is None
    assert pcm16_wav(chunked(pcm_fmt(bits=8), samples)) is None
    assert pcm16_wav(b"RIFX" + plain[4:]) is None
    assert decode_bytes(chunked(pcm_fmt(rate=500), samples), sample_rate=22050) is None  # outside SOURCE_RATES


def test_decode_bytes_gives_what_audio_file_gives(tmp_path):
    for i, channels in enumerate([1, 2, 3]):
        path = tmp_path / f"{i}.wav"
        path.write_bytes(wav_bytes(noise(12345, channels, seed=i), sample_rate=22050))
        with AudioFile(path) as audio:
            expected = next(audio.blocks(block_frames=audio.frames + 1))
        samples, rate = decode_bytes(path.read_bytes(), sample_rate=16000)
        assert rate == 22050
        np.testing.assert_array_equal(samples, expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.none() | st.floats(0, 1), channels=st.sampled_from([1, 2]), header_only=st.booleans())
def test_prep_decodes_a_damaged_file_from_its_bytes_as_it_does_from_the_file(tmp_path, damage, cut, channels,
                                                                             header_only):
    """Damage in the header (half the examples) or anywhere: the bytes read once for hashing decode to what
    opening the file with libsndfile gives, or to the same error."""
    data = bytearray(wav_bytes(noise(3000, channels, seed=channels)))
    span = 44 if header_only else len(data)
    for where, value in damage:
        data[int(where * span)] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path / "damaged.wav"
    path.write_bytes(bytes(data))
    assert decoded_whole_or_error(path, bytes(data)) == decoded_whole_or_error(path, None)


def test_a_second_fmt_chunk_is_left_to_libsndfile(tmp_path):
    """Two ``fmt `` chunks that disagree: libsndfile refuses the file ("No 'data' chunk marker"), so prep's byte
    path must decline it too and report libsndfile's error, not decode it at the second chunk's rate."""
    samples = (np.arange(200, dtype=np.int16) * 100).tobytes()
    data = chunked(pcm_fmt(rate=16000), samples, extra=b"fmt " + struct.pack("<I", 16) + pcm_fmt(rate=8000))
    assert pcm16_wav(data) is None
    path = tmp_path / "two_fmt.wav"
    path.write_bytes(data)
    assert decoded_whole_or_error(path, data) == decoded_whole_or_error(path, None)


@pytest.mark.parametrize("extra", [b"", b"LIST" + struct.pack("<I", 3) + b"abc\0",
                                   b"junk" + struct.pack("<I", 1) + b"x\0"])
def test_a_truncated_wav_is_refused_also_after_an_odd_sized_chunk(tmp_path, extra):
    """The truncation check finds the ``data`` chunk past an odd-sized chunk (RIFF pads it to an even size);
    libsndfile itself reads the complete file, and would read the cut one short without a word."""
    samples = (np.arange(2000, dtype=np.int16) * 10).tobytes()
    whole = chunked(pcm_fmt(), samples, extra=extra)
    (tmp_path / "whole.wav").write_bytes(whole)
    with AudioFile(tmp_path / "whole.wav") as audio:
        np.testing.assert_array_equal(next(audio.blocks(block_frames=5000)), libsndfile_samples(whole))
    (tmp_path / "cut.wav").write_bytes(whole[:-100])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated WAV file \(100 bytes of audio data missing\)"):
        AudioFile(tmp_path / "cut.wav").__enter__()


@pytest.mark.parametrize("values, reason", [([0.5, float("nan")], "holds NaN or infinite samples"),
                                            ([0.5, 150.0], "sample values reach 150, over 100"),
                                            ([0.5, -100.5], "sample values reach 100.5, over 100")])
def test_samples_that_are_not_audio_are_refused_naming_the_file(tmp_path, values, reason):
    """A float file with NaN, or with samples past ±100 (+40 dBFS: scaled like integers), is an AudioError that
    names the file, whether read whole or streamed; ±100 itself is still audio."""
    signal = np.zeros(2000, np.float32)
    signal[1000:1000 + len(values)] = values
    path = tmp_path / "odd.wav"
    sf.write(path, signal, 16000, subtype="FLOAT")
    for rate in (None, 22050):
        with pytest.raises(AudioError, match=f"^{re.escape(str(path))}: {re.escape(reason)}"):
            load_audio(path, sample_rate=rate)
    signal[1000:1000 + len(values)] = [0.5, -100.0]
    sf.write(path, signal, 16000, subtype="FLOAT")
    assert load_audio(path)[0].abs().max() == 100.0

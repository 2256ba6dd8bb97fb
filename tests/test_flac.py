"""dr_flac against libsndfile, the oracle: whole FLAC files decode to the same float32 samples, bit for bit, and a
damaged file is left to libsndfile, so that reading it gives what libsndfile alone gives. prep's bytes-only path
(STREAMINFO read without libsndfile) gives what opening the file gives, damaged files included."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import specgan.audio.io as audio_io
from specgan.audio.flac import decode_flac, stream_info
from specgan.audio.io import AudioFile, decode_bytes, load_audio
from specgan.errors import AudioError
from helpers import decoded_whole_or_error, noise


def flac_bytes(signal: np.ndarray, *, sample_rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, sample_rate, format="FLAC", subtype=subtype)
    return buffer.getvalue()


def libsndfile_samples(data: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0]


@pytest.mark.parametrize("subtype", ["PCM_S8", "PCM_16", "PCM_24"])
@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("frames", [1, 4095, 4096, 30011])
def test_decodes_the_same_samples_as_libsndfile(subtype, channels, frames):
    data = flac_bytes(noise(frames, channels), subtype=subtype)
    expected = libsndfile_samples(data)
    decoded = decode_flac(data, frames=frames, channels=channels)
    assert decoded is not None and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, expected)


def test_decodes_real_recordings_as_libsndfile_does(vcc):
    files = [sorted((vcc / "vcc2016_training" / speaker).glob("*.flac"))[0] for speaker in ["SF1", "SM1", "TM3"]]
    for file in files:
        data = file.read_bytes()
        expected = libsndfile_samples(data)
        np.testing.assert_array_equal(decode_flac(data, frames=len(expected), channels=1), expected)


def test_declines_what_does_not_decode_to_the_declared_frames():
    data = flac_bytes(noise(20000, 2))
    assert decode_flac(data, frames=20001, channels=2) is None  # the header said otherwise
    assert decode_flac(data, frames=20000, channels=1) is None
    assert decode_flac(data[: len(data) // 2], frames=20000, channels=2) is None  # truncated
    assert decode_flac(b"RIFF" + bytes(100), frames=20000, channels=2) is None  # not FLAC
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x10  # a frame that fails its CRC is skipped
    assert decode_flac(bytes(damaged), frames=20000, channels=2) is None


def test_audio_file_decodes_whole_flac_files_with_dr_flac_and_streams_with_libsndfile(tmp_path, monkeypatch):
    path = tmp_path / "a.flac"
    path.write_bytes(flac_bytes(noise(50000, 2)))
    calls = []

    def recording(data, **kwargs):
        calls.append(decode_flac(data, **kwargs))
        return calls[-1]

    monkeypatch.setattr(audio_io, "decode_flac", recording)
    with AudioFile(path) as audio:
        whole = list(audio.blocks(block_frames=audio.frames + 1))
    assert len(calls) == 1 and calls[0] is not None and len(whole) == 1
    with AudioFile(path) as audio:
        streamed = list(audio.blocks(block_frames=4096))
    assert len(calls) == 1 and len(streamed) == 13
    np.testing.assert_array_equal(whole[0], np.concatenate(streamed))
    np.testing.assert_array_equal(whole[0], libsndfile_samples(path.read_bytes()))


def read_or_error(path) -> np.ndarray | str:
    try:
        return load_audio(path)[0].numpy()
    except AudioError as e:
        return str(e)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.none() | st.floats(0, 1), channels=st.sampled_from([1, 2]))
# the block after STREAMINFO (a 40-byte VORBIS_COMMENT) made a SEEKTABLE: not whole seek points, which libsndfile
# refuses and dr_flac had read past
@example(damage=[(0.0, 0x83)], cut=None, channels=1)
def test_a_damaged_file_reads_as_libsndfile_alone_reads_it(tmp_path, monkeypatch, damage, cut, channels):
    data = bytearray(flac_bytes(noise(9000, channels, seed=channels), subtype="PCM_16"))
    for where, value in damage:
        data[42 + int(where * (len(data) - 42))] = value  # after STREAMINFO: the header stays readable
    if cut is not None:
        data = data[: 42 + int(cut * (len(data) - 42))]
    path = tmp_path / "damaged.flac"
    path.write_bytes(bytes(data))
    ours = read_or_error(path)
    with monkeypatch.context() as m:
        m.setattr(audio_io, "decode_flac", lambda data, **kwargs: None)
        theirs = read_or_error(path)
    if isinstance(theirs, str):
        assert ours == theirs
    else:
        np.testing.assert_array_equal(ours, theirs)


# -- prep's path: FLAC bytes decoded without libsndfile ----------------------------------------------------------
@pytest.mark.parametrize("subtype,bits", [("PCM_S8", 8), ("PCM_16", 16), ("PCM_24", 24)])
@pytest.mark.parametrize("channels", [1, 2, 5])
@pytest.mark.parametrize("sample_rate", [8000, 44100, 192000])
def test_stream_info_declares_what_libsndfile_reports(subtype, bits, channels, sample_rate):
    data = flac_bytes(noise(3001 + channels, channels), sample_rate=sample_rate, subtype=subtype)
    info = stream_info(data)
    with sf.SoundFile(io.BytesIO(data)) as f:
        assert (info.sample_rate, info.channels, info.frames) == (f.samplerate, f.channels, f.frames)
    assert info.bits_per_sample == bits


def test_stream_info_needs_a_flac_stream_that_begins_with_it():
    data = flac_bytes(noise(100, 1))
    assert stream_info(data) is not None
    assert stream_info(data[:41]) is None  # cut inside STREAMINFO
    assert stream_info(b"RIFF" + data[4:]) is None
    other_block = bytearray(data)
    other_block[4] = (data[4] & 0x80) | 4  # a VORBIS_COMMENT where STREAMINFO must be
    assert stream_info(bytes(other_block)) is None


def with_streaminfo(data: bytes, **fields) -> bytes:
    """``data`` with STREAMINFO's sample rate, bits per sample or total samples replaced."""
    packed = int.from_bytes(data[18:26], "big")
    if "sample_rate" in fields:
        packed = packed & (1 << 44) - 1 | fields["sample_rate"] << 44
    if "bits_per_sample" in fields:
        packed = packed & ~(0x1F << 36) | fields["bits_per_sample"] - 1 << 36
    if "frames" in fields:
        packed = packed & ~((1 << 36) - 1) | fields["frames"]
    return data[:18] + packed.to_bytes(8, "big") + data[26:]


def test_flac_bytes_decode_to_what_audio_file_gives(tmp_path, vcc):
    files = [sorted((vcc / "vcc2016_training" / "SM1").glob("*.flac"))[0]]
    for i, (channels, subtype) in enumerate([(1, "PCM_16"), (2, "PCM_24"), (3, "PCM_S8")]):
        files.append(tmp_path / f"{i}.flac")
        files[-1].write_bytes(flac_bytes(noise(20011, channels, seed=i), sample_rate=44100, subtype=subtype))
    for path in files:
        with AudioFile(path) as audio:
            expected = next(audio.blocks(block_frames=audio.frames + 1))
            rate = audio.sample_rate
        samples, decoded_rate = decode_bytes(path.read_bytes(), sample_rate=22050)
        assert decoded_rate == rate
        np.testing.assert_array_equal(samples, expected)


def test_flac_bytes_leave_to_libsndfile_what_it_must_decide(monkeypatch):
    data = flac_bytes(noise(20000, 2))
    assert decode_bytes(data, sample_rate=22050) is not None
    assert decode_bytes(data[: len(data) // 2], sample_rate=22050) is None  # truncated: decodes short
    assert decode_bytes(with_streaminfo(data, frames=20001), sample_rate=22050) is None
    assert decode_bytes(with_streaminfo(data, frames=0), sample_rate=22050) is None  # length not declared
    assert decode_bytes(with_streaminfo(data, sample_rate=500), sample_rate=22050) is None  # outside SOURCE_RATES
    assert decode_bytes(with_streaminfo(data, bits_per_sample=12), sample_rate=22050) is None
    monkeypatch.setattr(audio_io, "WHOLE_SAMPLES", 20000)  # long enough at 22050 Hz to be streamed in blocks
    monkeypatch.setattr(audio_io, "BLOCK_SAMPLES", 4096)
    assert decode_bytes(data, sample_rate=22050) is None
    assert decode_bytes(data, sample_rate=8000) is not None  # 10000 samples at 8 kHz: read whole


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.none() | st.floats(0, 1), channels=st.sampled_from([1, 2]))
def test_prep_decodes_a_damaged_file_from_its_bytes_as_it_does_from_the_file(tmp_path, damage, cut, channels):
    """Damage anywhere after ``fLaC``, STREAMINFO included: the bytes read once for hashing decode to what
    opening the file with libsndfile first gives, or to the same error."""
    data = bytearray(flac_bytes(noise(9000, channels, seed=channels), subtype="PCM_16"))
    for where, value in damage:
        data[4 + int(where * (len(data) - 4))] = value
    if cut is not None:
        data = data[: 4 + int(cut * (len(data) - 4))]
    path = tmp_path / "damaged.flac"
    path.write_bytes(bytes(data))
    assert decoded_whole_or_error(path, bytes(data)) == decoded_whole_or_error(path, None)


def test_stream_info_of_a_file_whose_only_metadata_block_is_streaminfo():
    """STREAMINFO flagged as the last metadata block (a file with no other, as ``flac --no-padding`` writes one):
    its flag bit is no part of the block type. Oracle: libsndfile's reading of the same bytes."""
    data = flac_bytes(noise(3001, 2), sample_rate=22050)
    position, last = 42, bool(data[4] & 0x80)
    while not last:  # skip the metadata blocks after STREAMINFO
        last = bool(data[position] & 0x80)
        position += 4 + int.from_bytes(data[position + 1:position + 4], "big")
    only = bytearray(data[:42] + data[position:])
    only[4] |= 0x80
    only = bytes(only)
    info = stream_info(only)
    with sf.SoundFile(io.BytesIO(only)) as f:
        assert info is not None
        assert (info.sample_rate, info.channels, info.frames) == (f.samplerate, f.channels, f.frames)
    samples, rate = decode_bytes(only, sample_rate=16000)
    assert rate == 22050
    np.testing.assert_array_equal(samples, sf.read(io.BytesIO(only), dtype="float32", always_2d=True)[0])

"""dr_flac against libsndfile, the oracle: whole FLAC files decode to the same float32 samples, bit for bit, and a
damaged file is left to libsndfile, so that reading it gives what libsndfile alone gives."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specgan.audio.io as audio_io
from specgan.audio.flac import decode_flac
from specgan.audio.io import AudioFile, load_audio
from specgan.errors import AudioError


def flac_bytes(signal: np.ndarray, *, sample_rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, sample_rate, format="FLAC", subtype=subtype)
    return buffer.getvalue()


def libsndfile_samples(data: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0]


def noise(frames: int, channels: int, *, seed: int = 0) -> np.ndarray:
    signal = np.clip(np.random.default_rng(seed).normal(0, 0.3, (frames, channels)), -1, 1)
    signal[: min(frames, 7)] = 1.0  # full scale both ways: the ends of the integer range
    signal[min(frames, 7): min(frames, 14)] = -1.0
    return signal


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

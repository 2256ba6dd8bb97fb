"""A hostile corpus for ``specgan prep``: good recordings in domain sub-folders, next to every kind of bad file.

Every file is generated here (no real-data mirror needed). :data:`GOOD` lists the files that must land in the
dataset, :data:`BAD` the ones that must be skipped, each with a fragment of the reason prep must give.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from specgan.audio.io import MAGIC
from specgan.audio.params import AudioParams

#: Small spectrograms keep prep quick without changing any code path (every file is still resampled to 16 kHz).
PARAMS = AudioParams(sample_rate=16000, n_mels=64, frames=64)
PARAM_FLAGS = ["--sample-rate", "16000", "--n-mels", "64", "--frames", "64", "--quiet"]
#: The long file: 30 minutes, written at 8 kHz 16-bit (29 MB, under a second to write). See
#: tests/reliability/test_prep_hostile.py::test_long_file_is_streamed_in_bounded_memory for why this rate.
LONG_SECONDS, LONG_RATE = 1800, 8000
TONE_HZ = 1000.0
#: File names that are not UTF-8 (Latin-1 "café", a stray 0xFF byte), and how the manifest and report show them.
NON_UTF8_GOOD, NON_UTF8_BAD = b"caf\xe9-\xff.wav", b"d\xe9j\xe0-vu.wav"
SHOWN_GOOD, SHOWN_BAD = "caf\\xe9-\\xff.wav", "d\\xe9j\\xe0-vu.wav"

# relative path -> source sample rate (Hz) of each file that must land in the dataset.
GOOD = {
    "alpha/tone_16k.wav": 16000,
    "alpha/tone_44k.flac": 44100,
    "alpha/square_clipped.wav": 16000,   # full-scale square wave: clipped, but valid audio
    "alpha/rate_8k.wav": 8000,           # resampled up
    "beta/rate_192k.wav": 192000,        # resampled down
    "beta/eight_channels.wav": 48000,    # mixed down
    f"beta/{SHOWN_GOOD}": 22050,
    "beta/long_30min.wav": LONG_RATE,    # streamed
    "alpha/piped.wav": 16000,            # written to a pipe: data size 0
    "beta/piped.flac": 22050,            # written to a pipe: 0 total samples
}
#: Valid audio that no one may read (mode 000): skipped where permissions are enforced, see :func:`unreadable`.
UNREADABLE = "alpha/unreadable.wav"
# relative path -> fragment of the reason it is skipped.
BAD = {
    "alpha/zero_bytes.wav": "empty file (0 bytes)",
    "alpha/random.wav": "not readable audio (no known audio header",
    "beta/random.flac": "not readable audio (no known audio header",
    "beta/random.mp3": "not readable audio (no known audio header",
    "alpha/truncated_header.wav": "not readable audio",
    "alpha/truncated_data.wav": "truncated WAV file",
    "beta/claims_more_frames.wav": "truncated WAV file",
    "beta/nan_inf_float.wav": "NaN or infinite samples",
    "beta/huge_float.wav": "sample values reach 1e+06",
    "alpha/one_sample.wav": "too short: 1 samples",
    "alpha/silent.wav": "silent",
    "alpha/rate_1hz.wav": "unsupported sample rate 1 Hz",
    "alpha/loop_a.wav": "cannot open (Too many levels of symbolic links)",
    "alpha/loop_b.wav": "cannot open (Too many levels of symbolic links)",
    "beta/named_pipe.wav": "not a regular file",
    f"beta/{SHOWN_BAD}": "not readable audio (no known audio header; starts with 6a 75 6e 6b)",
}


@dataclass(frozen=True)
class Corpus:
    root: Path
    good: dict[str, int]     # relpath -> source rate, including UNREADABLE when this process can read it
    bad: dict[str, str]      # relpath -> reason fragment, including UNREADABLE when it cannot


def unreadable_by_this_process(path: Path) -> bool:
    """Whether opening ``path`` for reading fails here (mode 000 does not stop root, who bypasses permissions)."""
    try:
        os.close(os.open(path, os.O_RDONLY))
    except PermissionError:
        return True
    return False


def voiced(seconds: float, rate: int, *, f0: float = 180.0, seed: int = 0) -> np.ndarray:
    """A speech-like signal: harmonics of ``f0`` under a 3 Hz syllable envelope, over a faint noise floor.
    float32 ``(samples,)``, peak about 0.6."""
    t = np.arange(int(seconds * rate)) / rate
    harmonics = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8) if f0 * k < 0.45 * rate)
    envelope = 0.25 + 0.75 * np.abs(np.sin(np.pi * 3.0 * t))
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.25 * harmonics * envelope + 0.003 * noise).astype(np.float32)


def tone(seconds: float, rate: int, *, hz: float = TONE_HZ) -> np.ndarray:
    """A ``hz`` sine at 0.5 under a slow tremolo, float32 ``(samples,)``: its energy sits in one mel band at
    every sample rate, which shows that a file was resampled to the right rate."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2.0 * t))).astype(np.float32)


def write_long(path: Path, *, seconds: int, rate: int) -> None:
    """A long 16-bit WAV written a minute at a time: tone bursts (1 s on, 1 s off) over a faint noise floor."""
    rng = np.random.default_rng(1)
    minute = np.arange(60 * rate) / rate
    burst = 0.4 * np.sin(2 * np.pi * 440.0 * minute) * (np.sin(np.pi * minute) > 0)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for _ in range(seconds // 60):
            f.write((burst + 0.002 * rng.standard_normal(minute.size)).astype(np.float32))


def random_bytes(n: int, *, seed: int) -> bytes:
    """``n`` random bytes that do not start like any audio format: the first such draw from ``seed`` on."""
    while True:
        data = np.random.default_rng(seed).bytes(n)
        if not (data[0] == 0xFF and data[1] & 0xE0 == 0xE0) and not data.startswith(MAGIC):
            return data
        seed += 1000


def wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    """A canonical 16-bit PCM WAV (44-byte header) of ``wave``."""
    import io
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    assert data[36:40] == b"data"
    return data


def make_hostile_corpus(root: Path) -> None:
    """Write the files of :data:`GOOD`, :data:`BAD` and :data:`UNREADABLE` under ``root``."""
    alpha, beta = root / "alpha", root / "beta"
    alpha.mkdir(parents=True)
    beta.mkdir()
    # Good files.
    sf.write(alpha / "tone_16k.wav", voiced(2.5, 16000), 16000, subtype="PCM_16")
    sf.write(alpha / "tone_44k.flac", tone(2.5, 44100), 44100, subtype="PCM_16")
    square = np.sign(np.sin(2 * np.pi * 150.0 * np.arange(2 * 16000) / 16000)).astype(np.float32)
    sf.write(alpha / "square_clipped.wav", square, 16000, subtype="PCM_16")
    sf.write(alpha / "rate_8k.wav", tone(2.5, 8000), 8000, subtype="PCM_16")
    sf.write(beta / "rate_192k.wav", tone(2.5, 192000), 192000, subtype="PCM_24")
    channels = np.stack([voiced(2.5, 48000, f0=120.0 + 20 * c, seed=c) for c in range(8)], axis=1)
    sf.write(beta / "eight_channels.wav", channels, 48000, subtype="PCM_16")
    with open(os.fsencode(beta) + b"/" + NON_UTF8_GOOD, "wb") as f:
        f.write(wav_bytes(voiced(2.0, 22050, seed=3), 22050))
    write_long(beta / "long_30min.wav", seconds=LONG_SECONDS, rate=LONG_RATE)
    sf.write(alpha / "unreadable.wav", voiced(2.0, 16000, seed=4), 16000, subtype="PCM_16")
    os.chmod(alpha / "unreadable.wav", 0)
    # A streaming writer cannot seek back to fill in the length: 0 where WAV's data size and FLAC's total samples go.
    piped = bytearray(wav_bytes(voiced(2.0, 16000, seed=7), 16000))
    piped[4:8] = piped[40:44] = bytes(4)
    (alpha / "piped.wav").write_bytes(bytes(piped))
    sf.write(beta / "piped.flac", voiced(2.0, 22050, seed=8), 22050, subtype="PCM_16")
    piped = bytearray((beta / "piped.flac").read_bytes())
    piped[21] &= 0xF0  # the low 36 bits of bytes 18-25: total samples
    piped[22:26] = bytes(4)
    (beta / "piped.flac").write_bytes(bytes(piped))

    # Bad files.
    (alpha / "zero_bytes.wav").write_bytes(b"")
    (alpha / "random.wav").write_bytes(random_bytes(20000, seed=1))
    (beta / "random.flac").write_bytes(random_bytes(20000, seed=2))
    (beta / "random.mp3").write_bytes(random_bytes(20000, seed=3))
    good_wav = wav_bytes(voiced(2.0, 16000, seed=5), 16000)
    (alpha / "truncated_header.wav").write_bytes(good_wav[:30])
    (alpha / "truncated_data.wav").write_bytes(good_wav[: 44 + (len(good_wav) - 44) // 2])
    claims = bytearray(good_wav)
    claims[40:44] = (2 * (len(good_wav) - 44)).to_bytes(4, "little")  # data size: twice what follows
    (beta / "claims_more_frames.wav").write_bytes(bytes(claims))
    poisoned = voiced(2.0, 16000, seed=6)
    poisoned[1000], poisoned[2000], poisoned[3000] = np.nan, np.inf, -np.inf
    sf.write(beta / "nan_inf_float.wav", poisoned, 16000, subtype="FLOAT")
    huge = voiced(2.0, 16000)  # a float WAV scaled like integers, peak 1e6
    sf.write(beta / "huge_float.wav", huge / np.abs(huge).max() * 1e6, 16000, subtype="FLOAT")
    sf.write(alpha / "one_sample.wav", np.array([0.5], np.float32), 16000, subtype="PCM_16")
    sf.write(alpha / "silent.wav", np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    one_hz = bytearray(good_wav)
    one_hz[24:28] = (1).to_bytes(4, "little")  # sample rate field
    one_hz[28:32] = (2).to_bytes(4, "little")  # byte rate, consistent with it
    (alpha / "rate_1hz.wav").write_bytes(bytes(one_hz))
    os.symlink("loop_b.wav", alpha / "loop_a.wav")
    os.symlink("loop_a.wav", alpha / "loop_b.wav")
    os.mkfifo(beta / "named_pipe.wav")
    with open(os.fsencode(beta) + b"/" + NON_UTF8_BAD, "wb") as f:
        f.write(b"junk, and a name that is not UTF-8")
    # Not audio files at all, and folder links that would loop: never listed.
    (alpha / "notes.txt").write_text("not named like audio: ignored")
    os.symlink("..", beta / "up.wav")   # a link to a folder, named like audio
    os.symlink(".", beta / "self")


@pytest.fixture(scope="session")
def hostile(tmp_path_factory) -> Corpus:
    """The hostile corpus, built once per session; tests must not change it (copy it first)."""
    root = tmp_path_factory.mktemp("hostile") / "src"
    make_hostile_corpus(root)
    good, bad = dict(GOOD), dict(BAD)
    if unreadable_by_this_process(root / UNREADABLE):
        bad[UNREADABLE] = "cannot open (Permission denied)"
    else:
        good[UNREADABLE] = 16000
    assert stat.S_IMODE(os.lstat(root / UNREADABLE).st_mode) == 0
    return Corpus(root, good, bad)

"""``specgan convert`` on awkward input: valid-but-odd files convert (silence, 0.05 s, 3 channels at another rate),
unusable ones are one line with exit code 2, and a failed write leaves nothing behind. Complements
tests/test_convert.py (missing file, non-audio, unknown domain, unwritable folder, stereo 44.1 kHz)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from specgan.audio.params import AudioParams
from specgan.cli import app
from helpers import one_line_error, write_run

PARAMS = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=32)
RATE = PARAMS.sample_rate


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A real checkpoint of a tiny translate run between domains A and B."""
    return write_run(tmp_path_factory.mktemp("runs") / "ab")


def tone(seconds: float, *, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    wave = (0.4 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.stack([wave * (1 - 0.3 * c) for c in range(channels)], axis=1) if channels > 1 else wave


def convert(model: Path, *args):
    result = CliRunner().invoke(app, ["convert", *map(str, args), "--model", str(model), "--iters", "2",
                                      "--device", "cpu"])
    return result.exit_code, result.stdout, result.stderr


def converted(path: Path, *, frames: int) -> np.ndarray:
    out, rate = sf.read(path, always_2d=True)
    assert rate == RATE and out.shape == (frames, 1)
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    return out[:, 0]


# -- valid, if odd: converted --------------------------------------------------------------------------------
def test_a_silent_file_converts_to_a_file_of_the_same_length(model, tmp_path):
    src = tmp_path / "silence.wav"
    sf.write(src, np.zeros(RATE, np.float32), RATE)
    code, stdout, stderr = convert(model, src, "--to", "B", "-o", tmp_path / "out.wav")
    assert code == 0, stderr
    converted(tmp_path / "out.wav", frames=RATE)
    assert f"wrote {tmp_path / 'out.wav'}" in stdout


@pytest.mark.parametrize("seconds", [0.05, 0.001])
def test_a_very_short_file_keeps_its_length(model, tmp_path, seconds):
    src = tmp_path / "short.wav"
    sf.write(src, tone(seconds), RATE)
    n = sf.info(src).frames
    assert n in (400, 8)
    code, _, stderr = convert(model, src, "--to", "A", "-o", tmp_path / "out.wav")
    assert code == 0, stderr
    converted(tmp_path / "out.wav", frames=n)


@pytest.mark.parametrize("rate,channels,suffix", [(22050, 3, ".wav"), (16000, 1, ".flac"), (48000, 2, ".ogg")])
def test_other_rates_and_channel_counts_become_mono_at_the_model_rate(model, tmp_path, rate, channels, suffix):
    src = tmp_path / f"in{suffix}"
    sf.write(src, tone(0.5, rate=rate, channels=channels), rate)
    code, _, stderr = convert(model, src, "--to", "B", "-o", tmp_path / "out.wav")
    assert code == 0, stderr
    converted(tmp_path / "out.wav", frames=RATE // 2)


# -- unusable input: one line, exit 2, nothing written -------------------------------------------------------
def write_bad(path: Path, kind: str) -> Path:
    if kind == "no-samples":
        sf.write(path, np.zeros(0, np.float32), RATE)
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "nan":
        wave = tone(0.3)
        wave[100] = np.nan
        sf.write(path, wave, RATE, subtype="FLOAT")
    elif kind == "text-with-audio-suffix":
        path.write_text("title,artist\n")
    elif kind == "one-sample-above-the-model-rate":  # none left at the model's rate: it had been called empty
        sf.write(path, np.array([0.5], np.float32), 6 * RATE)
    elif kind == "truncated-wav":
        sf.write(path, tone(0.3), RATE)
        path.write_bytes(path.read_bytes()[:200])
    return path


@pytest.mark.parametrize("kind,fragment", [
    ("no-samples", "empty audio (0 samples)"),
    ("zero-bytes", "empty file (0 bytes)"),
    ("nan", "holds NaN or infinite samples"),
    ("text-with-audio-suffix", "not readable audio"),
    ("truncated-wav", "truncated WAV file"),
    ("one-sample-above-the-model-rate", f"too short: 1 sample(s) at {6 * RATE} Hz, none at {RATE} Hz"),
])
def test_unusable_audio_is_one_line_naming_the_file(model, tmp_path, kind, fragment):
    src = write_bad(tmp_path / "bad.wav", kind)
    code, _, stderr = convert(model, src, "--to", "B", "-o", tmp_path / "out.wav")
    one_line_error(code, stderr, f"{src}: ", fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav"]


def test_a_folder_named_like_audio_without_audio_in_it_is_one_line(model, tmp_path):
    src = tmp_path / "album.wav"
    src.mkdir()
    (src / "notes.txt").write_text("no audio here")
    code, _, stderr = convert(model, src, "--to", "B")
    one_line_error(code, stderr, f"{src}: no audio files found")
    assert not (tmp_path / "album.wav.to-B").exists()


# -- outputs that cannot be written ----------------------------------------------------------------------------
def test_an_output_below_a_file_is_one_line(model, tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, tone(0.3), RATE)
    code, _, stderr = convert(model, src, "--to", "B", "-o", src / "out.wav")
    one_line_error(code, stderr, f"{src}: cannot create the output folder ({src} is a file)")


def test_a_full_disk_while_writing_the_output_is_one_line_and_leaves_nothing(model, tmp_path, monkeypatch):
    src = tmp_path / "in.wav"
    sf.write(src, tone(0.3), RATE)
    out = tmp_path / "out"
    out.mkdir()
    real_write = sf.SoundFile.write

    def disk_fills_up(self, data):
        real_write(self, data[:len(data) // 2])  # part of it reached the disk ...
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ... then no more space

    monkeypatch.setattr(sf.SoundFile, "write", disk_fills_up)
    code, _, stderr = convert(model, src, "--to", "B", "-o", out / "x.wav")
    one_line_error(code, stderr, f"{out / 'x.wav'}: cannot write (No space left on device)")
    assert list(out.iterdir()) == []  # neither x.wav nor its temporary file


def test_an_output_folder_that_cannot_be_created_is_one_line(model, tmp_path, monkeypatch):
    src = tmp_path / "in.wav"
    sf.write(src, tone(0.3), RATE)
    target = tmp_path / "denied" / "x.wav"
    real_mkdir = Path.mkdir

    def denied(self, *args, **kwargs):
        if self == target.parent:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    code, _, stderr = convert(model, src, "--to", "B", "-o", target)
    one_line_error(code, stderr, str(target.parent), "Permission denied")


def test_an_output_name_too_long_for_a_file_is_one_line_before_any_work(model, tmp_path):
    """A 252-byte input name (a file system holds 255) made ``<stem>.to-B.wav`` too long: checking whether it
    exists had been an internal error ("File name too long"), as was a too long -o, for convert and reconstruct."""
    src = tmp_path / ("n" * 248 + ".wav")
    sf.write(src, tone(0.3), RATE)
    code, _, stderr = convert(model, src, "--to", "B")
    one_line_error(code, stderr, f"{src.with_name('n' * 248 + '.to-B.wav')}: output file name too long (257 ",
                   "bytes, at most 255); choose a shorter one with -o")
    code, _, stderr = convert(model, src, "--to", "B", "-o", tmp_path / ("m" * 300) / "x.wav")
    one_line_error(code, stderr, "/x.wav: name of a folder in it too long (300 bytes")
    result = CliRunner().invoke(app, ["reconstruct", str(src), "-o", f"{tmp_path}/", "--iters", "2"])
    one_line_error(result.exit_code, result.stderr, ".reconstructed.wav: output file name too long (266 bytes")
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_a_name_near_the_limit_is_written_in_a_folders_mirror(model, tmp_path):
    """A 250-byte name fits a file system, but the temporary file written first (".<name>.<random>.tmp", 14 bytes
    more) did not: the folder's conversion stopped there with 'File name too long'."""
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / ("n" * 246 + ".wav"), tone(0.3), RATE)
    code, stdout, stderr = convert(model, src, "--to", "B", "-o", tmp_path / "out")
    assert code == 0, stderr
    converted(tmp_path / "out" / ("n" * 246 + ".wav"), frames=int(0.3 * RATE))
    assert len(list((tmp_path / "out").iterdir())) == 1  # no temporary file left

"""``specgan convert``: seamless window stitching, bounded batches, exact lengths, silence, phase, and the command
line end to end on tiny translate checkpoints."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from specgan.audio.chunks import window_starts
from specgan.audio.features import LogMel
from specgan.audio import inverse
from specgan.audio.inverse import MelInverter, PhaseNoise, block_size, frame_blocks, spectral_convergence, stft
from specgan.audio.io import load_audio, save_audio
from specgan.audio.params import AudioParams
from specgan import convert
from specgan.cli import app
from specgan.convert import Translator, convert_file, convert_waveform, find_translator, load_translator, \
    translate_logmel
from specgan.errors import CheckpointError, ConfigError, SpecganError
from specgan.spectrogram_figure import LEFT, colour_table, figure_layout
from helpers import one_line_error, write_run

PARAMS = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=32)
RATE = PARAMS.sample_rate


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: a second intra-op thread only spins, and on a busy 2-core machine that costs seconds per call
    # (conftest restores the thread count afterwards).
    torch.set_num_threads(1)


class Spy(nn.Module):
    """Identity plus ``step`` times the window's running index; records every batch it is given."""

    def __init__(self, step: float = 0.0):
        super().__init__()
        self.step = step
        self.batches: list[int] = []

    def forward(self, x):
        first = sum(self.batches)
        self.batches.append(len(x))
        index = torch.arange(first, first + len(x), dtype=x.dtype, device=x.device)
        return x + self.step * index[:, None, None, None]


def speech_like(seconds: float, *, rate: int = RATE, seed: int = 0) -> torch.Tensor:
    """A voiced signal with a gliding, vibrato pitch, formant-shaped harmonics, syllable-rate loudness and breath
    noise; peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110 + 60 * np.sin(2 * np.pi * 0.7 * t) ** 2 + 3 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = np.zeros_like(t)
    for k in range(1, int(rate / 2 / 300)):
        freq = k * f0
        envelope = sum(np.exp(-0.5 * ((freq - f) / 120) ** 2) for f in (500, 1500, 2500)) + 0.05
        wave += envelope * np.sin(k * phase) * (freq < rate / 2 - 200)
    wave *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    wave += 0.02 * rng.standard_normal(len(t))
    return torch.from_numpy((0.5 * wave / np.abs(wave).max()).astype(np.float32))


# ---------------------------------------------------------------------------------------------------------------
# translate_logmel

@pytest.mark.parametrize("n_frames", [1, 7, 31, 32, 33, 47, 48, 200, 237, 1001])
@pytest.mark.parametrize("frames", [32, 33])
def test_identity_model_gives_back_the_log_mel_exactly(n_frames, frames):
    logmel = torch.rand(PARAMS.n_mels, n_frames, generator=torch.Generator().manual_seed(n_frames)) * 2 - 1
    out = translate_logmel(logmel, generator=nn.Identity(), frames=frames, batch_size=3)
    assert out.shape == logmel.shape
    torch.testing.assert_close(out, logmel, atol=1e-6, rtol=0)
    # Around every overlap (and the padded end) explicitly: the seams are where errors would show.
    hop = frames // 2
    padded = frames + -(-max(0, n_frames - frames) // hop) * hop
    for start in window_starts(padded, frames=frames, hop=hop)[1:]:
        seam = slice(max(0, start - 2), min(n_frames, start + frames - hop + 2))
        torch.testing.assert_close(out[:, seam], logmel[:, seam], atol=1e-6, rtol=0)


@pytest.mark.parametrize("n_frames", [33, 100, 237, 1001])
def test_cross_fade_between_windows_is_continuous(n_frames):
    frames, step = 32, 0.01
    hop = frames // 2
    logmel = torch.rand(4, n_frames, generator=torch.Generator().manual_seed(1)) * 2 - 1
    spy = Spy(step)
    added = translate_logmel(logmel, generator=spy, frames=frames, hop=hop, batch_size=5) - logmel
    jumps = (added[:, 1:] - added[:, :-1]).abs()
    fade_step = step / (frames - hop)  # adjacent windows differ by `step`, blended over the whole overlap
    assert jumps.max() <= fade_step * (1 + 1e-3)
    assert added[:, -1].mean() > step * (len(spy.batches) - 1)  # the later windows' offsets did arrive
    assert added[:, 0].abs().max() < 1e-6                         # the first frames come from window 0 alone


def test_windows_go_through_the_generator_in_bounded_batches():
    spy = Spy()
    n_frames, frames, batch_size = 2000, 32, 7
    out = translate_logmel(torch.zeros(PARAMS.n_mels, n_frames), generator=spy, frames=frames, batch_size=batch_size)
    n_windows = 1 + -(-(n_frames - frames) // (frames // 2))
    assert sum(spy.batches) == n_windows and max(spy.batches) == batch_size
    assert len(spy.batches) == -(-n_windows // batch_size)
    assert out.shape == (PARAMS.n_mels, n_frames)


# ---------------------------------------------------------------------------------------------------------------
# convert_waveform

@pytest.mark.parametrize("seconds", [0.3, 7.0, 95.0])
def test_output_is_exactly_as_long_as_the_input(seconds):
    wave = speech_like(seconds)
    spy = Spy()
    result = convert_waveform(wave, generator=spy, audio=PARAMS, n_iter=2, batch_size=16)
    assert result.wave.shape == wave.shape
    assert torch.isfinite(result.wave).all()
    n_frames = 1 + wave.numel() // PARAMS.hop_length
    assert result.logmel_in.shape == result.logmel_out.shape == (PARAMS.n_mels, n_frames)
    assert max(spy.batches) <= 16  # 95 s is ~740 windows: never all at once


def test_very_short_input_keeps_its_length():
    wave = speech_like(0.01)  # 80 samples: shorter than the FFT
    result = convert_waveform(wave, generator=nn.Identity(), audio=PARAMS, n_iter=2)
    assert result.wave.shape == wave.shape and torch.isfinite(result.wave).all()


@pytest.mark.parametrize("phase_init", ["source", "random"])
@pytest.mark.parametrize("kind", ["zeros", "dither"])
def test_silence_in_gives_near_silence_out(kind, phase_init):
    wave = torch.zeros(RATE)
    if kind == "dither":  # -120 dBFS noise: below the -80 dB floor of the log-mel
        wave = torch.randn(RATE, generator=torch.Generator().manual_seed(0)) * 1e-6
    result = convert_waveform(wave, generator=nn.Identity(), audio=PARAMS, n_iter=8, phase_init=phase_init)
    assert torch.isfinite(result.wave).all() and np.isfinite(result.spectral_convergence)
    assert (result.logmel_in == -1).all()
    assert result.wave.abs().max() < 1e-3


def test_identity_model_from_source_phase_rebuilds_speech_closely():
    wave = speech_like(2.0)
    result = convert_waveform(wave, generator=nn.Identity(), audio=PARAMS, n_iter=8, phase_init="source")
    assert result.spectral_convergence < 0.3
    torch.testing.assert_close(result.logmel_out, result.logmel_in, atol=1e-6, rtol=0)
    # The figure is measured against the magnitude Griffin-Lim was given (what the mel image implies).
    target = MelInverter(PARAMS).magnitude(result.logmel_out)
    measured = spectral_convergence(reference=target, estimate=stft(result.wave, n_fft=PARAMS.n_fft,
                                                                    hop_length=PARAMS.hop_length).abs())
    assert abs(float(measured) - result.spectral_convergence) < 1e-4


@pytest.fixture
def small_blocks(monkeypatch):
    """Griffin-Lim blocks of the fewest frames PARAMS allows (4 margins: 128 frames, 1 s), so that a few seconds
    make several blocks."""
    monkeypatch.setattr(inverse, "BLOCK_VALUES", 128 * PARAMS.n_fft)
    assert block_size(n_fft=PARAMS.n_fft, hop_length=PARAMS.hop_length) == (128, 32)


def _one_pass(monkeypatch, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(inverse, "BLOCK_VALUES", 1 << 40)
        return convert_waveform(**kwargs)


def test_long_input_converted_in_blocks_is_one_pass_s_conversion(monkeypatch, small_blocks):
    wave = speech_like(8.0)
    wave[RATE:RATE + RATE // 2] = 0   # digital silence: those bins start from a random phase (PhaseNoise)
    kwargs = dict(wave=wave, audio=PARAMS, n_iter=16, phase_init="source")
    # A model that changes the log-mel, differently in each window: fresh for each run, so both get the same.
    blocked = convert_waveform(generator=Spy(step=1e-3), **kwargs)
    one = _one_pass(monkeypatch, generator=Spy(step=1e-3), **kwargs)
    assert len(frame_blocks(1 + wave.numel() // PARAMS.hop_length, block_frames=128, margin=32)) == 8
    torch.testing.assert_close(blocked.logmel_in, one.logmel_in, atol=1e-5, rtol=0)
    torch.testing.assert_close(blocked.logmel_out, one.logmel_out, atol=0, rtol=0)
    # The random phases of the silent bins differ (one seed per block core), and that is all: the waveforms agree
    # to a thousandth of their size, the measured quality to its fourth digit.
    assert float(torch.linalg.norm(blocked.wave - one.wave) / torch.linalg.norm(one.wave)) < 1e-3
    assert blocked.spectral_convergence == pytest.approx(one.spectral_convergence, rel=1e-3)
    # The figure, summed over block cores, is the whole output's against the whole magnitude (float64 oracle).
    target = MelInverter(PARAMS).magnitude(blocked.logmel_out).double()
    estimate = stft(blocked.wave.double(), n_fft=PARAMS.n_fft, hop_length=PARAMS.hop_length).abs()
    oracle = float(torch.linalg.norm(target - estimate) / torch.linalg.norm(target))
    assert blocked.spectral_convergence == pytest.approx(oracle, rel=1e-4)


def test_random_phase_in_blocks_is_as_good_as_one_pass(monkeypatch, small_blocks):
    kwargs = dict(wave=speech_like(8.0), generator=nn.Identity(), audio=PARAMS, n_iter=16, phase_init="random")
    blocked, one = convert_waveform(**kwargs), _one_pass(monkeypatch, **kwargs)
    assert blocked.wave.shape == one.wave.shape
    assert blocked.spectral_convergence < 1.05 * one.spectral_convergence
    again = convert_waveform(**kwargs)
    assert torch.equal(again.wave, blocked.wave)   # seeded: the same phases, block by block
    other = convert_waveform(**{**kwargs, "seed": 1})
    assert not torch.equal(other.wave, blocked.wave)


def test_phase_noise_slices_agree_where_they_overlap():
    blocks = frame_blocks(1000, block_frames=128, margin=32)
    noise = PhaseNoise(blocks, seed=3, n_freqs=5, device=torch.device("cpu"))
    whole = noise(0, 1000)
    assert whole.shape == (5, 1000) and 0 <= whole.min() and whole.max() < 2 * math.pi
    for block in blocks:
        assert torch.equal(noise(block.start, block.end), whole[:, block.start:block.end])
    cores = [whole[:, b.core_start:b.core_start + 100] for b in blocks]   # each core its own draw
    assert all(not torch.equal(a, b) for a, b in zip(cores, cores[1:]))
    assert not torch.equal(PhaseNoise(blocks, seed=4, n_freqs=5, device=torch.device("cpu"))(0, 1000), whole)


class Constant(nn.Module):
    """Whatever comes in, a flat log-mel at ``level`` (in [-1, 1]) comes out."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level

    def forward(self, x):
        return torch.full_like(x, self.level)


def test_translator_can_put_sound_where_the_input_was_digitally_silent():
    # The source phase of digital silence is undefined (0): those bins start from a random phase instead, or
    # Griffin-Lim could never give them energy.
    result = convert_waveform(torch.zeros(RATE), generator=Constant(0.0), audio=PARAMS, n_iter=4)
    assert result.wave.square().mean().sqrt() > 1e-3 and torch.isfinite(result.wave).all()


def test_loud_output_is_scaled_down_not_clipped_and_quiet_output_stays_quiet(tmp_path):
    def written(generator, src):
        translator = Translator(("A", "B"), PARAMS, 0, tmp_path / "model.pt", torch.device("cpu"), generator,
                                generator)
        convert_file(src, tmp_path / "out.wav", translator=translator, to="B", n_iter=4)
        return sf.read(tmp_path / "out.wav")[0]

    loud = written(Constant(1.0), speech_file(tmp_path / "in.wav"))  # +40 dB in every band: far above full scale
    assert 0.99 < np.abs(loud).max() <= 1.0
    assert np.mean(np.abs(loud) > 0.98) < 0.001  # scaled as a whole, no flat tops
    quiet_in = tmp_path / "quiet.wav"
    sf.write(quiet_in, 0.05 * speech_like(1.0).numpy(), RATE)
    quiet = written(nn.Identity(), quiet_in)
    assert 0.01 < np.abs(quiet).max() < 0.1  # not normalised up


def test_source_phase_beats_random_phase_on_real_speech(vcc):
    wave, _ = load_audio(vcc / "vcc2016_training" / "SF1" / "100001.flac", sample_rate=RATE)
    source, random = (convert_waveform(wave, generator=nn.Identity(), audio=PARAMS, n_iter=4, phase_init=init)
                      for init in ("source", "random"))
    assert source.wave.shape == wave.shape and source.spectral_convergence < 0.25
    assert source.spectral_convergence < 0.75 * random.spectral_convergence  # measured 0.185 vs 0.316


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and the command line

def cli(*args):
    result = CliRunner().invoke(app, ["convert", *map(str, args), "--iters", "4", "--device", "cpu"])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def run(tmp_path) -> Path:
    path = tmp_path / "runs" / "ab"
    write_run(path)
    return path


def test_load_translator_rebuilds_both_directions(run):
    translator = load_translator(run, device="cpu")
    assert translator.domains == ("A", "B") and translator.step == 1 and translator.audio == PARAMS
    assert translator.generator_to("B") is translator.g_ab and translator.generator_to("A") is translator.g_ba
    assert not translator.g_ab.training
    x = torch.rand(2, 1, PARAMS.n_mels, 50) * 2 - 1
    assert translator.g_ab(x).shape == x.shape
    with pytest.raises(ConfigError, match="--to jazz: .*step_00000001.pt translates between A and B"):
        translator.generator_to("jazz")


def test_a_generate_run_is_not_a_translator(tmp_path):
    gen = tmp_path / "gen"
    write_run(gen, task="generate", domains=("0", "1"))
    with pytest.raises(CheckpointError, match="not a translator"):
        load_translator(gen, device="cpu")
    code, _, stderr = cli(speech_file(tmp_path / "in.wav"), "--to", "1", "--model", gen)
    one_line_error(code, stderr, "not a translator")


def speech_file(path: Path, *, seconds: float = 1.3, rate: int = RATE, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = speech_like(seconds, rate=rate, seed=seed).numpy()
    data = np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave
    sf.write(path, data, rate)
    return path


def test_stereo_44k_input_becomes_mono_at_the_model_rate(run, tmp_path):
    src = speech_file(tmp_path / "in" / "talk.wav", rate=44100, channels=2)
    code, stdout, stderr = cli(src, "--to", "B", "--model", run)
    assert code == 0, stderr
    dst = tmp_path / "in" / "talk.to-B.wav"
    out, rate = sf.read(dst, always_2d=True)
    assert rate == RATE and out.shape == (load_audio(src, sample_rate=RATE)[0].numel(), 1)
    assert np.abs(out).max() <= 1.0 and np.abs(out).max() > 0
    assert f"model {run / 'checkpoints' / 'step_00000001.pt'} (step 1, A ↔ B)" in stdout
    assert "picked automatically" not in stdout
    assert f"wrote {dst}" in stdout and "spectral convergence" in stdout and "s per s of audio" in stdout
    # Under a second of audio the time per second says more about start-up than speed: the time taken instead.
    short = speech_file(tmp_path / "short" / "blip.wav", seconds=0.5)
    code, stdout, stderr = cli(short, "--to", "B", "--model", run)
    assert code == 0 and "s per s of audio" not in stdout and re.search(r"; took \d+\.\d\d s\)$", stdout.strip())
    # A translate run has nothing to sample: said in one line, pointing at convert.
    result = CliRunner().invoke(app, ["sample", str(run)])
    assert result.exit_code == 2 and "this is a translate run, which converts recordings: specgan convert" in \
        result.stderr
    # --sample-rate: resampled on the way out, same duration.
    code, _, stderr = cli(src, "--to", "A", "--model", run, "-o", tmp_path / "x.flac", "--sample-rate", 16000)
    assert code == 0, stderr
    out16, rate16 = sf.read(tmp_path / "x.flac")
    assert rate16 == 16000 and abs(len(out16) - 2 * out.shape[0]) <= 1


@pytest.mark.parametrize("rate", [44100, 22050, 16000])
def test_output_at_another_rate_lasts_exactly_as_long_as_the_input(run, tmp_path, rate):
    """Through the model's rate and back, the length is rounded twice; it is the input's own, rounded once: at
    the input's rate, exactly its frame count (132307 frames at 44.1 kHz came out as 132308)."""
    src = tmp_path / "talk.wav"
    sf.write(src, np.stack([speech_like(3.1, rate=44100).numpy()[:132307]] * 2, axis=1), 44100)
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", tmp_path / "out.wav", "--sample-rate", rate)
    assert code == 0, stderr
    out, written_rate = sf.read(tmp_path / "out.wav")
    assert written_rate == rate and len(out) == int(132307 * rate / 44100 + 0.5)


def test_folder_input_is_mirrored_and_bad_files_are_listed(run, tmp_path):
    src = tmp_path / "calls"
    speech_file(src / "a.wav")
    speech_file(src / "deep" / "er" / "b.flac", seed=1)
    speech_file(src / "deep" / "b.wav", seed=2)
    speech_file(src / "deep" / "b.ogg", seed=3)  # same stem as b.wav: both keep their suffix in the name
    (src / "deep" / "broken.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    (src / ".hidden.wav").write_bytes(b"not even looked at")
    (src / "notes.txt").write_text("not audio, not an audio suffix")
    code, stdout, stderr = cli(src, "--to", "B", "--model", run, "-o", tmp_path / "out")
    assert code == 2
    expected = ["a.wav", "deep/b.ogg.wav", "deep/b.wav.wav", "deep/er/b.wav"]
    for rel in expected:
        assert f"wrote {tmp_path / 'out' / rel}" in stdout
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
                  if p.is_file()) == expected
    assert "converted 4 file(s)" in stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 2 and "broken.wav: not readable audio" in lines[0], stderr
    assert f"error: 1 of 5 file(s) could not be converted (listed above); the others are in {tmp_path / 'out'}" \
        in lines[1]
    # Continued with --skip-existing, only the broken file is left: there are no "others" to point to.
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", tmp_path / "out", "--skip-existing")
    assert code == 2 and stderr.strip().splitlines()[-1] == "error: 1 of 1 file(s) could not be converted (listed " \
                                                            "above)", stderr
    # Default output folder: <folder>.to-DOMAIN beside it.
    (src / "deep" / "broken.wav").unlink()
    code, _, stderr = cli(src, "--to", "A", "--model", run)
    assert code == 0, stderr
    assert (tmp_path / "calls.to-A" / "deep" / "er" / "b.wav").is_file()
    code, _, stderr = cli(src, "--to", "A", "--model", run, "-o", tmp_path / "out.wav")
    one_line_error(code, stderr, "out.wav: looks like a file name; for a folder of inputs give an output folder")
    code, _, stderr = cli(src, "--to", "A", "--model", run, "-o", src / "deep")
    one_line_error(code, stderr, "is inside the input folder")
    # Converting again into the same folder replaces nothing unless asked to.
    before = {p: p.read_bytes() for p in (tmp_path / "calls.to-A").rglob("*") if p.is_file()}
    code, _, stderr = cli(src, "--to", "A", "--model", run)
    one_line_error(code, stderr, f"{tmp_path / 'calls.to-A' / 'a.wav'}: exists (and 3 more output(s)); use "
                                 f"--overwrite to replace, or choose another output")
    assert {p: p.read_bytes() for p in (tmp_path / "calls.to-A").rglob("*") if p.is_file()} == before
    code, _, stderr = cli(src, "--to", "A", "--model", run, "--overwrite")
    assert code == 0, stderr


def test_an_existing_output_file_is_replaced_only_with_overwrite(run, tmp_path):
    """-o naming someone's recording (or the .png --plot writes beside it) is refused, and the file kept."""
    src, mine = speech_file(tmp_path / "in.wav"), speech_file(tmp_path / "mine.wav", seed=4)
    kept = mine.read_bytes()
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", mine)
    one_line_error(code, stderr, f"{mine}: exists; use --overwrite to replace, or choose another output")
    assert mine.read_bytes() == kept
    (tmp_path / "out.png").write_bytes(b"a picture")
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", tmp_path / "out.wav", "--plot")
    one_line_error(code, stderr, f"{tmp_path / 'out.png'}: exists")
    assert not (tmp_path / "out.wav").exists()
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", mine, "--overwrite")
    assert code == 0 and mine.read_bytes() != kept, stderr
    # A folder where the .png goes: refused before any work even with --overwrite (the audio had been written,
    # then the plot failed with exit 2).
    (tmp_path / "taken.png").mkdir()
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", tmp_path / "taken.wav", "--plot", "--overwrite")
    one_line_error(code, stderr, f"{tmp_path / 'taken.png'}: is a folder, where an output file is to be written")
    assert not (tmp_path / "taken.wav").exists()


def test_the_default_output_of_dot_and_dot_dot_is_beside_the_folder_they_name(run, tmp_path, monkeypatch):
    src = tmp_path / "calls"
    speech_file(src / "deep" / "a.wav")
    monkeypatch.chdir(src)
    code, _, stderr = cli(".", "--to", "A", "--model", run)  # "." has no name of its own: it was a ValueError
    assert code == 0, stderr
    assert (tmp_path / "calls.to-A" / "deep" / "a.wav").is_file()
    monkeypatch.chdir(src / "deep")
    code, _, stderr = cli("..", "--to", "B", "--model", run)  # was "inside the input folder"
    assert code == 0, stderr
    assert (tmp_path / "calls.to-B" / "deep" / "a.wav").is_file()


def test_a_file_converted_into_a_new_folder_given_with_a_trailing_slash(run, tmp_path):
    src = speech_file(tmp_path / "in.wav")
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", f"{tmp_path / 'new'}/")  # was "unsupported format"
    assert code == 0, stderr
    assert sf.read(tmp_path / "new" / "in.to-B.wav")[0].shape[0] == sf.read(src)[0].shape[0]


def test_two_inputs_that_would_share_an_output_name_are_refused_before_any_work(run, tmp_path):
    src = tmp_path / "clash"
    for name in ("a.wav", "a.flac", "a.wav.flac"):  # a.wav keeps its suffix (a.wav.wav), a.wav.flac's plain name
        speech_file(src / name)
    code, stdout, stderr = cli(src, "--to", "B", "--model", run, "-o", tmp_path / "out")
    one_line_error(code, stderr, f"{src / 'a.wav'} and {src / 'a.wav.flac'} would both be written as "
                                 f"{tmp_path / 'out' / 'a.wav.wav'}")
    assert not (tmp_path / "out").exists()


def test_user_errors_are_one_line_with_exit_code_2(run, tmp_path):
    src = speech_file(tmp_path / "in.wav")
    code, _, stderr = cli(src, "--to", "jazz", "--model", run)
    one_line_error(code, stderr, "--to jazz:", "translates between A and B")
    code, _, stderr = cli(tmp_path / "missing.wav", "--to", "B", "--model", run)
    one_line_error(code, stderr, "missing.wav: no such file or folder")
    text = tmp_path / "readme.wav"
    text.write_text("this is not audio\n")
    code, _, stderr = cli(text, "--to", "B", "--model", run)
    one_line_error(code, stderr, "readme.wav: not readable audio")
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", src)
    one_line_error(code, stderr, "is the input file")
    os.link(src, tmp_path / "same.wav")  # another name of the same file
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", tmp_path / "same.wav", "--overwrite")
    one_line_error(code, stderr, "same.wav: is the input file")
    take = speech_file(tmp_path / "take.wav").rename(tmp_path / "take.png")  # its plot would replace it
    for flags in ([], ["--overwrite"]):
        code, _, stderr = cli(take, "--to", "B", "--model", run, "-o", tmp_path / "take.wav", "--plot", *flags)
        one_line_error(code, stderr, f"{take}: the plot's name, is the input file; choose another output so the "
                                     f"original is kept")
    assert sf.info(take).frames > 0
    os.mkfifo(tmp_path / "pipe.wav")
    code, _, stderr = cli(tmp_path / "pipe.wav", "--to", "B", "--model", run)
    one_line_error(code, stderr, f"{tmp_path / 'pipe.wav'}: not a regular file or folder")
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", tmp_path / "out.mp4")
    one_line_error(code, stderr, "out.mp4: unsupported output format")
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", tmp_path / "out3")
    one_line_error(code, stderr, f"out3: unsupported output format (use .wav, .flac or .ogg); to write into a "
                                 f"folder, end it with /: {tmp_path / 'out3'}/")
    code, _, stderr = cli(src, "--to", "B", "--model", tmp_path / "nope")
    one_line_error(code, stderr, "nope: no such run folder or checkpoint")
    code, _, stderr = cli(src, "--to", "B", "--model", run, "--phase-init", "zeros")
    one_line_error(code, stderr, "--phase-init zeros")
    assert sf.read(src)[0].shape == (int(1.3 * RATE),)  # the input is untouched


def test_unwritable_output_folder_is_one_line(run, tmp_path, monkeypatch):
    src = speech_file(tmp_path / "calls" / "in.wav")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: make os.access answer as for anyone else
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and
                                real_access(path, mode, **kw))
        code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", locked / "x.wav")
        one_line_error(code, stderr, f"{locked}: output folder is not writable")
        code, _, stderr = cli(src.parent, "--to", "B", "--model", run, "-o", locked / "sub")
        one_line_error(code, stderr, f"{locked / 'sub'}: cannot create the output folder ({locked} is not writable)")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_plot_shows_input_above_output(run, tmp_path):
    src = speech_file(tmp_path / "in.wav", seconds=0.9)
    code, stdout, stderr = cli(src, "--to", "B", "--model", run, "--plot", "-o", tmp_path / "o" / "res.wav")
    assert code == 0, stderr
    png = tmp_path / "o" / "res.png"
    assert f"and {png}" in stdout
    top, _ = plotted_panels(png, seconds=0.9)
    # The top panel is the input's log-mel, low bands at the bottom: loud low harmonics near its lower edge.
    y_scale = figure_layout(columns=top.shape[1], n_mels=PARAMS.n_mels, panels=2).y_scale
    assert top[-8 * y_scale:].mean() > top[:8 * y_scale].mean()


def plotted_panels(png: Path, *, seconds: float) -> list[np.ndarray]:
    """The two panels (grey levels) of convert's plot of a clip of ``seconds``, checking the figure's size."""
    layout = figure_layout(columns=1 + int(seconds * RATE) // PARAMS.hop_length, n_mels=PARAMS.n_mels, panels=2)
    with Image.open(png) as image:
        assert image.size == layout.size
        grey = np.asarray(image.convert("L")).astype(float)
    return [grey[layout.top(k):layout.top(k) + layout.height, LEFT:LEFT + layout.width] for k in range(2)]


def test_automatic_choice_names_and_warns_about_runs_it_cannot_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = write_run(Path("runs") / "good")
    broken = write_run(Path("runs") / "broken")
    broken.write_bytes(broken.read_bytes()[:1000])          # its only checkpoint: no intact one
    os.utime(good, (1e9 - 100, 1e9 - 100))
    os.utime(broken, (1e9, 1e9))                            # the newer run
    src = speech_file(tmp_path / "in.wav", seconds=0.5)
    code, stdout, stderr = cli(src, "--to", "B")
    assert code == 0, stderr
    assert f"model {good} " in stdout
    warning = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and warning[0].startswith(f"warning: passed over {Path('runs') / 'broken'}, newer than "
                                                       f"{Path('runs') / 'good'} but unreadable (")
    assert "no intact checkpoint" in warning[0]
    code, _, stderr = cli(src, "--to", "jazz")   # nothing fits: the error says which runs could not be read
    one_line_error(code, stderr, "no model under runs/ converts to 'jazz' (domains there: A, B; could not read: "
                                 f"{Path('runs') / 'broken'})")


def test_plot_of_a_long_input_averages_runs_of_frames(run, tmp_path, monkeypatch):
    monkeypatch.setattr(convert, "PLOT_MAX_COLUMNS", 16)
    src = speech_file(tmp_path / "in.wav", seconds=0.9)           # 113 frames: runs of 8, the last of 1
    assert convert.convert_path(src, to="B", model=run, output=tmp_path / "res.wav", plot=True).converted[0].plot
    layout = figure_layout(columns=15, n_mels=PARAMS.n_mels, panels=2)
    with Image.open(tmp_path / "res.png") as image:
        assert image.size == layout.size
        pixels = np.asarray(image).astype(int)
    wave, _ = load_audio(src, sample_rate=RATE)
    logmel = LogMel(PARAMS)(wave)                               # the top panel: the input's, averaged over 8 frames
    levels = ((logmel[:, 8:16].mean(1).flip(0) + 1) * 127.5).round().long().numpy()
    x = LEFT + layout.x_scale                                   # the second column's first pixel
    rows = layout.top(0) + np.arange(PARAMS.n_mels) * layout.y_scale
    # Within one quantisation level of the mean (float rounding), in the colour map's terms.
    table = colour_table().astype(int)
    nearest = [np.abs(table[max(0, v - 1):v + 2] - pixels[y, x]).sum(1).min() for v, y in zip(levels, rows)]
    assert max(nearest) == 0
    monkeypatch.undo()
    help_text = " ".join(CliRunner().invoke(app, ["convert", "--help"], terminal_width=200).output.split())
    assert f"to at most {convert.PLOT_MAX_COLUMNS} columns" in help_text   # the help says the real limit


def test_automatic_model_choice_takes_the_newest_run_with_the_domain(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = write_run(Path("runs") / "old", seed=1)
    new = write_run(Path("runs") / "new", seed=2)
    other = write_run(Path("runs") / "other", domains=("C", "D"))
    gen = write_run(Path("runs") / "gen", task="generate", domains=("0", "1"))
    (Path("runs") / "empty").mkdir()
    for age, path in [(400, old), (300, new), (200, other), (100, gen)]:
        os.utime(path, (1e9 - age, 1e9 - age))
    assert find_translator("B") == Path("runs") / "new"   # the run; convert reads its newest intact checkpoint
    nested = write_run(Path("runs") / "voices" / "newest", seed=3)  # run folders may be grouped in folders
    os.utime(nested, (1e9 - 250, 1e9 - 250))
    assert find_translator("B") == Path("runs") / "voices" / "newest"
    os.utime(nested, (1e9 - 500, 1e9 - 500))
    src = speech_file(tmp_path / "in.wav", seconds=0.5)
    code, stdout, stderr = cli(src, "--to", "B")
    assert code == 0, stderr
    assert f"model {new} (step 1, A ↔ B) (picked automatically" in stdout
    os.utime(old, (1e9, 1e9))
    code, stdout, _ = cli(src, "--to", "A")
    assert code == 0 and f"model {old} " in stdout and "picked automatically" in stdout
    code, _, stderr = cli(src, "--to", "jazz")
    one_line_error(code, stderr, "no model under runs/ converts to 'jazz' (domains there: A, B, C, D)")
    monkeypatch.chdir(tmp_path / "runs")
    code, _, stderr = cli(src, "--to", "B", "--overwrite")  # (in.to-B.wav is there from the first call)
    one_line_error(code, stderr, "no model under runs/ (no such folder) converts to 'B'")


def test_eval_pairs_in_folders_named_the_other_way_round_are_refused(run, tmp_path, monkeypatch):
    """--pairs SRC TGT with SRC named after the target domain (and TGT after the source): the wrong --direction
    (or folder order); the scores would measure nothing and be appended to eval.jsonl, so it is refused."""
    from specgan.evaluate import evaluate_translation

    for domain in ("A", "B"):
        speech_file(tmp_path / domain / "s1.wav", seconds=0.5, seed=ord(domain))
    with pytest.raises(ConfigError, match=f"^--pairs {re.escape(str(tmp_path / 'B'))} "
                                          f"{re.escape(str(tmp_path / 'A'))}: the folders are named B and A, but "
                                          f"--direction A2B converts A → B; --direction B2A converts B → A, or give "
                                          f"the folders the other way round$"):
        evaluate_translation(run, source_dir=tmp_path / "B", target_dir=tmp_path / "A", direction="A2B", n_iter=2)
    monkeypatch.chdir(tmp_path / "B")   # "." names no folder: the check had been passed by
    with pytest.raises(ConfigError, match="the folders are named B and A"):
        evaluate_translation(run, source_dir=Path("."), target_dir=Path("../A"), direction="A2B", n_iter=2)
    result = evaluate_translation(run, source_dir=tmp_path / "B", target_dir=tmp_path / "A", direction="B2A",
                                  n_iter=2)
    assert result["direction"] == "B->A" and result["pairs"] == 1
    # B2A converts with the B → A generator: the score is that of its output.
    from specgan.metrics.audio_quality import audio_distances

    translator = load_translator(run, device="cpu")
    source, _ = load_audio(tmp_path / "B" / "s1.wav", sample_rate=RATE)
    target, _ = load_audio(tmp_path / "A" / "s1.wav", sample_rate=RATE)
    converted = convert_waveform(source, generator=translator.g_ba, audio=translator.audio, n_iter=2)
    assert result["per_pair"][0]["mcd_db"] == audio_distances(target, converted.wave, sample_rate=RATE).mcd_db


@pytest.mark.parametrize("name", ["square", "square-3k", "speech-like", "quiet"])
def test_ogg_output_decodes_without_clipping(tmp_path, name):
    """Vorbis overshoots the peaks it is given (a conversion scaled to a peak of 1.0 decoded at 1.024, and a full
    square wave at 1.45): save_audio writes again, scaled down by the overshoot, until the decoded peak is within 1.
    A quiet signal is left as it is; .wav keeps a peak of 1.0."""
    t = np.arange(32000) / 16000
    signal = {"square": np.sign(np.sin(2 * np.pi * 440 * t)), "square-3k": np.sign(np.sin(2 * np.pi * 3000 * t)),
              "speech-like": sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 30)) * (1 + np.sin(9 * t)),
              "quiet": 0.1 * np.sign(np.sin(2 * np.pi * 440 * t))}[name]
    signal = (signal / np.abs(signal).max() * (0.1 if name == "quiet" else 1.0)).astype(np.float32)
    sf.write(tmp_path / "plain.ogg", signal, 16000, format="OGG", subtype="VORBIS")
    overshoot = np.abs(sf.read(tmp_path / "plain.ogg")[0]).max()
    save_audio(tmp_path / "out.ogg", signal, sample_rate=16000)
    decoded = np.abs(sf.read(tmp_path / "out.ogg")[0]).max()
    assert decoded <= 1.0
    if overshoot > 1.0:
        assert decoded > 0.9               # scaled by the overshoot, not by a blanket margin
    else:
        assert decoded == pytest.approx(overshoot, abs=1e-6)   # nothing to do: the same file
    save_audio(tmp_path / "out.wav", signal, sample_rate=16000)
    assert np.abs(sf.read(tmp_path / "out.wav")[0]).max() == pytest.approx(np.abs(signal).max(), abs=1 / 32768)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_a_file_name_that_is_not_utf8_is_converted(run, tmp_path, suffix):
    """Linux allows any bytes in a name; soundfile encodes a name as strict UTF-8, and writing the output had been an
    internal error (exit 1) after all the work, which also stopped a folder's conversion."""
    src = speech_file(tmp_path / "plain.wav", seconds=0.5).rename(tmp_path / os.fsdecode(b"take \xff1.wav"))
    out = tmp_path / os.fsdecode(b"out \xfe" + suffix.encode())
    done = subprocess.run([sys.executable, "-m", "specgan", "convert", src, "--to", "B", "--model", run, "-o", out,
                           "--iters", "2", "--plot"], capture_output=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open(out, "rb") as written, open(src, "rb") as given:
        assert sf.info(written).frames == sf.info(given).frames
    assert out.with_suffix(".png").is_file()


@pytest.mark.parametrize("free_bytes, reason", [(0, "No space left on device"),
                                                (1 << 30, "libsndfile: System error")])
def test_a_write_that_libsndfile_fails_is_a_one_line_write_error(tmp_path, monkeypatch, free_bytes, reason):
    """libsndfile says "System error" for a full disk: it had been an internal error (exit 1), and a training run
    writing sample audio stopped without saving its step (it saves it on a WriteError)."""
    from types import SimpleNamespace

    import specgan.audio.io as io_module
    from specgan.errors import WriteError

    def failing_write(path, data, **kwargs):
        raise sf.LibsndfileError(2, "Error writing: ")   # code 2: SFE_SYSTEM, "System error."

    monkeypatch.setattr(io_module, "_write_in_blocks", failing_write)
    monkeypatch.setattr(io_module.os, "statvfs", lambda path: SimpleNamespace(f_bavail=free_bytes // 4096,
                                                                             f_frsize=4096))
    with pytest.raises(WriteError, match=f"^{re.escape(str(tmp_path / 'out.wav'))}: cannot write \\({reason}"):
        save_audio(tmp_path / "out.wav", np.zeros(100, np.float32), sample_rate=8000)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, where every write fails (ENOSPC)")
@pytest.mark.parametrize("format, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_a_real_failed_write_reaches_save_audio_as_libsndfile_error(format, subtype):
    """What the test above stands in for: soundfile raises LibsndfileError (not, say, an AssertionError on a short
    write) when the system refuses the bytes, so save_audio's translation of it is what a full disk meets."""
    import specgan.audio.io as io_module

    with pytest.raises(sf.LibsndfileError):
        io_module._write_in_blocks(Path("/dev/full"), np.zeros(70000, np.float32), sample_rate=8000, format=format,
                                   subtype=subtype)


def test_a_long_ogg_output_is_written(tmp_path):
    """libvorbis allocates a write's whole input on its stack: one write of 2.2M samples (50 s at 44.1 kHz)
    crashed the process (a segmentation fault, exit 139, a temporary file left). In a child process, so that a
    crash fails this test rather than the whole run."""
    script = ("import sys, numpy as np\n"
              "from specgan.audio.io import save_audio\n"
              "t = np.arange(2_300_000, dtype=np.float64)\n"
              "save_audio(sys.argv[1], (0.5 * np.sin(2 * np.pi * 440 / 44100 * t)).astype(np.float32), "
              "sample_rate=44100)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "long.ogg")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.ogg"]
    decoded, rate = sf.read(tmp_path / "long.ogg", dtype="float32")
    assert rate == 44100 and len(decoded) == 2_300_000 and 0.45 < np.abs(decoded).max() <= 0.55


def test_a_recipe_or_a_folder_of_runs_given_for_a_run_says_what_to_give(tmp_path):
    """``sample runs/x/recipe.toml`` answered 'not a readable checkpoint (... not a zip file)', and ``sample
    runs`` 'no checkpoints in runs/checkpoints'."""
    from specgan.train.checkpoint import load_model_checkpoint
    runs = tmp_path / "runs"
    for name in ("b", "a", "deeper/c"):
        write_run(runs / name)
    (runs / "a" / "recipe.toml").write_text('name = "a"\n')
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(runs / 'a' / 'recipe.toml'))}: a recipe, not a "
                                              f"checkpoint; give the run folder: {re.escape(str(runs / 'a'))}$"):
        load_model_checkpoint(runs / "a" / "recipe.toml")
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(runs))}: not a run folder; the runs in it: "
                                              f"{re.escape(', '.join(str(runs / n) for n in ('a', 'b', 'deeper/c')))}$"):
        load_model_checkpoint(runs)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: no checkpoints in .*empty/checkpoints$"):
        load_model_checkpoint(tmp_path / "empty")


def test_ogg_above_what_vorbis_holds_is_one_line_before_any_work(run, tmp_path):
    """libsndfile crashed the process writing Vorbis above 200 kHz (a segmentation fault, exit 139, a temporary
    file left behind); convert and reconstruct now refuse such an output before converting, and save_audio before
    writing."""
    src = speech_file(tmp_path / "in.wav", seconds=0.5)
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", tmp_path / "hi.ogg", "--sample-rate", 384000)
    one_line_error(code, stderr, f"{tmp_path / 'hi.ogg'}: an .ogg file holds at most 200000 Hz, not 384000; write "
                                 f".wav or .flac, or choose a lower --sample-rate")
    result = CliRunner().invoke(app, ["reconstruct", str(src), "-o", str(tmp_path / "r.ogg"), "--sample-rate",
                                      "200001"])
    one_line_error(result.exit_code, result.stderr, f"{tmp_path / 'r.ogg'}: an .ogg file holds at most 200000 Hz, "
                                                    f"not 200001; write .wav or .flac, or choose a lower --sample-rate")
    with pytest.raises(SpecganError, match="holds at most 200000 Hz"):
        save_audio(tmp_path / "direct.ogg", np.zeros(1000, np.float32), sample_rate=256000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "runs"]
    # The limit itself, and .flac above it, are written.
    save_audio(tmp_path / "top.ogg", np.zeros(1000, np.float32), sample_rate=200000)
    save_audio(tmp_path / "hi.flac", np.zeros(1000, np.float32), sample_rate=384000)
    assert sf.info(tmp_path / "top.ogg").samplerate == 200000 and sf.info(tmp_path / "hi.flac").samplerate == 384000


def test_eval_pairs_leaves_out_pairs_it_cannot_score_and_says_why(run, tmp_path):
    """A recording shorter than one analysis frame (64 ms) made the scoring raise ValueError (an internal error,
    exit 1, no result); a silent one was averaged in. Each now costs its pair only, with the reason."""
    from specgan.evaluate import evaluate_translation

    for domain in ("A", "B"):
        speech_file(tmp_path / domain / "good.wav", seconds=0.5, seed=ord(domain))
        speech_file(tmp_path / domain / "other.wav", seconds=0.5, seed=ord(domain) + 7)
    sf.write(tmp_path / "A" / "blip.wav", np.full(400, 0.1, np.float32), 16000)   # 25 ms
    speech_file(tmp_path / "B" / "blip.wav", seconds=0.5, seed=3)
    speech_file(tmp_path / "A" / "hush.wav", seconds=0.5, seed=4)
    sf.write(tmp_path / "B" / "hush.wav", np.zeros(8000, np.float32), 16000)       # silent target
    speech_file(tmp_path / "A" / "lone.wav", seconds=0.5, seed=5)                  # no target: unmatched
    result = evaluate_translation(run, source_dir=tmp_path / "A", target_dir=tmp_path / "B", direction="A2B",
                                  n_iter=2)
    assert result["pairs"] == 2 and sorted(Path(r["source"]).name for r in result["per_pair"]) == ["good.wav",
                                                                                                   "other.wav"]
    reasons = {Path(f["source"]).name: f["reason"] for f in result["failed"]}
    assert reasons == {"blip.wav": f"{tmp_path / 'A' / 'blip.wav'}: too short to score (25 ms; one analysis frame "
                                   f"is 64 ms)",
                       "hush.wav": f"{tmp_path / 'B' / 'hush.wav'}: silent (peak -240 dBFS), nothing to score"}
    # The means are over the pairs scored (not over all four), and the baseline is the unconverted source's.
    from specgan.metrics.audio_quality import audio_distances

    rows = result["per_pair"]
    for key in ("mcd_db", "baseline_mcd_db", "lsd_db", "baseline_lsd_db", "resynthesis_mcd_db",
                "spectral_convergence"):
        assert result[key] == round(sum(r[key] for r in rows) / len(rows), 4), key
    target, _ = load_audio(rows[0]["target"], sample_rate=RATE)
    source, _ = load_audio(rows[0]["source"], sample_rate=RATE)
    unconverted = audio_distances(target, source, sample_rate=RATE)
    assert (rows[0]["baseline_mcd_db"], rows[0]["baseline_lsd_db"]) == (unconverted.mcd_db, unconverted.lsd_db)
    assert result["unmatched"] == 1 and result["unmatched_sources"] == [str(tmp_path / "A" / "lone.wav")]
    # The floor is the target itself through log-mel and Griffin-Lim (no generator), against the target.
    floor = convert_waveform(target, generator=nn.Identity(), audio=load_translator(run).audio, n_iter=2)
    assert rows[0]["resynthesis_mcd_db"] == audio_distances(target, floor.wave, sample_rate=RATE).mcd_db
    with pytest.raises(ConfigError, match="the same folder twice"):
        evaluate_translation(run, source_dir=tmp_path / "A", target_dir=tmp_path / "A" / ".", direction="A2B")


def test_a_folders_conversion_continues_with_skip_existing_and_passes_over_earlier_conversions(run, tmp_path,
                                                                                                monkeypatch):
    """Stopped after some files, or given new recordings, a folder's conversion could only start again from scratch
    with --overwrite; and name.to-B.wav, written beside its input by an earlier conversion of that one file, was
    converted again (a conversion of a conversion)."""
    import specgan.convert as convert_module

    src, out = tmp_path / "calls", tmp_path / "out"
    for i, name in enumerate(["a.wav", "b.wav", "c.wav"]):
        speech_file(src / name, seconds=0.5, seed=i)
    code, _, stderr = cli(src / "a.wav", "--to", "B", "--model", run)   # -> calls/a.to-B.wav, beside it
    assert code == 0, stderr
    real_convert_file, calls = convert_module.convert_file, []

    def convert_then_stop(source, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(source.name)
        return real_convert_file(source, *args, **kwargs)

    monkeypatch.setattr(convert_module, "convert_file", convert_then_stop)
    code, stdout, stderr = cli(src, "--to", "B", "--model", run, "-o", out)
    assert code == 130 and calls == ["a.wav", "b.wav"]
    assert stderr.strip().splitlines()[-1] == (f"interrupted; 2 of 3 file(s) converted into {out}; the same command "
                                               f"with --skip-existing converts the rest")
    assert "a.to-B.wav" not in calls and "passed over 1 file(s) named as conversions to B already" in stderr
    monkeypatch.undo()
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", out)
    one_line_error(code, stderr, f"{out / 'a.wav'}: exists (and 1 more output(s)); use --overwrite to replace, or "
                                 f"choose another output")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, stdout, stderr = cli(src, "--to", "B", "--model", run, "-o", out, "--skip-existing")
    assert code == 0, stderr
    assert f"wrote {out / 'c.wav'}" in stdout and "kept 2 output(s) that exist (--skip-existing)" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "b.wav", "c.wav"]
    assert all(out.joinpath(name).stat().st_mtime_ns == t for name, t in before.items())  # left as they were
    code, stdout, _ = cli(src, "--to", "B", "--model", run, "-o", out, "--skip-existing")
    assert code == 0 and "kept 3 output(s) that exist (--skip-existing); nothing else to convert" in stdout
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", out, "--skip-existing", "--overwrite")
    one_line_error(code, stderr, "--overwrite and --skip-existing: choose one (replace outputs that exist, or keep "
                                 "them)")


def test_skip_existing_with_plot_writes_only_what_is_missing(run, tmp_path):
    """A file whose audio exists but not its plot (or the other way round) made --skip-existing refuse the whole
    folder ('exists; use --overwrite'); it is converted again for the missing output, and the other is kept."""
    src, out = tmp_path / "calls", tmp_path / "out"
    for i, name in enumerate(["a.wav", "b.wav", "c.wav"]):
        speech_file(src / name, seconds=0.5, seed=i)
    code, _, stderr = cli(src, "--to", "B", "--model", run, "-o", out, "--plot")
    assert code == 0, stderr
    (out / "a.png").unlink()
    (out / "b.wav").unlink()
    speech_file(src / "d.wav", seconds=0.5, seed=3)  # a new recording
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    code, stdout, stderr = cli(src, "--to", "B", "--model", run, "-o", out, "--plot", "--skip-existing")
    assert code == 0, stderr
    assert f"wrote {out / 'a.png'}, the plot of {out / 'a.wav'}, which exists and was kept (0.50 s; " in stdout
    assert f"wrote {out / 'b.wav'} (" in stdout and f"wrote {out / 'd.wav'} and {out / 'd.png'}" in stdout
    # c whole, a given its plot; only b and d were converted (a had been counted as converted, its audio timed)
    assert "kept 2 output(s) that exist (--skip-existing, 1 of them given their missing plot)" in stdout
    assert "converted 2 file(s) to B" in stdout
    assert sorted(p.name for p in out.iterdir()) == [f"{n}.{s}" for n in "abcd" for s in ("png", "wav")]
    assert all(out.joinpath(name).stat().st_mtime_ns == t and out.joinpath(name).read_bytes() == b
               for name, (t, b) in before.items())  # a.wav, b.png and c's pair left as they were
    # a.png shows the kept a.wav as it is (it had been drawn from a new conversion, by whatever model is current):
    # after a.wav is replaced by silence, a new plot's lower half is the floor of the colour scale.
    silent = np.zeros(sf.info(out / "a.wav").frames, np.float32)
    sf.write(out / "a.wav", silent, sf.info(out / "a.wav").samplerate)
    (out / "a.png").unlink()
    code, stdout, stderr = cli(src, "--to", "B", "--model", run, "-o", out, "--plot", "--skip-existing")
    assert code == 0 and f"wrote {out / 'a.png'}, the plot of {out / 'a.wav'}" in stdout, stderr
    assert plotted_panels(out / "a.png", seconds=0.5)[1].std() == 0
    assert plotted_panels(out / "c.png", seconds=0.5)[1].std() > 0


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_an_output_names_the_model_that_converted_it(run, tmp_path, suffix):
    from specgan.audio.io import audio_comment

    out = tmp_path / f"out{suffix}"
    code, _, stderr = cli(speech_file(tmp_path / "in.wav", seconds=0.5), "--to", "B", "--model", run, "-o", out)
    assert code == 0, stderr
    translator = load_translator(run, device="cpu")
    assert audio_comment(out) == (f"specgan convert --to B: model {translator.checkpoint}, step 1, weights "
                                  f"{translator.weights}")
    assert sf.info(str(out)).frames == int(0.5 * RATE)   # the tag leaves the audio as it was


def test_skip_existing_refuses_to_finish_a_folder_with_another_model(tmp_path, monkeypatch):
    """Without --model, convert takes the newest run: a run trained after a folder's conversion stopped would
    have converted the rest of the folder, leaving it made by two models without a word."""
    monkeypatch.chdir(tmp_path)
    checkpoint = write_run(Path("runs") / "first", seed=1)
    os.utime(checkpoint, (1e9, 1e9))
    src, out = tmp_path / "calls", tmp_path / "out"
    for i, name in enumerate(["a.wav", "b.wav"]):
        speech_file(src / name, seconds=0.5, seed=i)
    code, _, stderr = cli(src / "a.wav", "--to", "B", "-o", out / "a.wav")
    assert code == 0, stderr
    second = write_run(Path("runs") / "second", seed=2)   # trained since: the newest run with domain B
    os.utime(second, (2e9, 2e9))
    code, _, stderr = cli(src, "--to", "B", "-o", out, "--skip-existing")
    one_line_error(code, stderr, f"--skip-existing: {out / 'a.wav'} was converted by another model ({checkpoint}, "
                                 f"step 1) than {second} (step 1); give "
                                 f"that model with --model to finish with it, or --overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["a.wav"]                 # nothing was written
    code, stdout, stderr = cli(src, "--to", "B", "-o", out, "--skip-existing", "--model", checkpoint)
    assert code == 0 and f"wrote {out / 'b.wav'}" in stdout, stderr
    # The same weights under another name (a copied run) are the same model.
    shutil.copytree(Path("runs") / "first", Path("copy"))
    speech_file(src / "c.wav", seconds=0.5, seed=3)
    code, stdout, stderr = cli(src, "--to", "B", "-o", out, "--skip-existing", "--model", "copy")
    assert code == 0 and f"wrote {out / 'c.wav'}" in stdout, stderr
    # An output without specgan's tag (another tool's, or an older version's) is not judged.
    for kept in out.iterdir():
        sf.write(str(kept), np.zeros(8000, np.float32), RATE)
    speech_file(src / "d.wav", seconds=0.5, seed=4)
    code, stdout, stderr = cli(src, "--to", "B", "-o", out, "--skip-existing")
    assert code == 0 and f"wrote {out / 'd.wav'}" in stdout, stderr


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_save_audio_writes_every_sample_as_16_bit_pcm_scaled_down_from_above_full_scale(tmp_path, suffix):
    """.wav and .flac are written as 16-bit PCM; a wave peaking above 1 is scaled down as a whole, not clipped;
    a wave longer than one write block keeps every sample. Oracle: libsndfile's reading of the file."""
    from specgan.audio.io import WRITE_BLOCK_SAMPLES

    n = 2 * WRITE_BLOCK_SAMPLES + 123
    signal = (3.0 * np.sin(2 * np.pi * 440 / 16000 * np.arange(n))).astype(np.float32)
    save_audio(tmp_path / f"out{suffix}", signal, sample_rate=16000)
    info = sf.info(tmp_path / f"out{suffix}")
    assert (info.subtype, info.frames, info.samplerate) == ("PCM_16", n, 16000)
    back = sf.read(tmp_path / f"out{suffix}", dtype="float32")[0]
    np.testing.assert_allclose(back, signal / np.abs(signal).max(), rtol=0, atol=1 / 32768)

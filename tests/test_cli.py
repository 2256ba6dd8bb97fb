"""The command line as a user meets it: real processes, exit codes, one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from specgan.audio.features import mel_filterbank
from specgan.audio.inverse import spectral_convergence, stft
from specgan.audio.io import load_audio
from specgan.errors import SpecganWarning


def specgan(*args, cwd=None, env: dict[str, str] | None = None):
    result = subprocess.run([sys.executable, "-m", "specgan", *map(str, args)], capture_output=True, text=True,
                            cwd=cwd, env={**os.environ, **(env or {})})
    return result.returncode, result.stdout, result.stderr


def test_reconstruct_replaces_an_existing_file_only_with_overwrite(tmp_path):
    src, out = tmp_path / "tone.wav", tmp_path / "mine.wav"
    sf.write(src, 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32), 8000)
    out.write_bytes(b"someone's recording")
    code, _, stderr = specgan("reconstruct", src, "-o", out, "--iters", "2", "--device", "cpu")
    assert code == 2 and stderr.strip() == f"error: {out}: exists; use --overwrite to replace, or choose another " \
                                           f"output", stderr
    assert out.read_bytes() == b"someone's recording"
    code, _, stderr = specgan("reconstruct", src, "-o", out, "--iters", "2", "--device", "cpu", "--overwrite")
    assert code == 0 and sf.read(out)[0].size > 0, stderr



def test_reconstruct_into_a_folder(tmp_path):
    """-o naming a folder (with a trailing /, or one that exists) writes <stem>.reconstructed.wav in it; the
    trailing / had been dropped, and 'rec: unsupported output format' was the answer."""
    src = tmp_path / "tone.wav"
    sf.write(src, 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32), 8000)
    for output in (f"{tmp_path / 'new'}{os.sep}", tmp_path / "new"):    # made, then existing
        code, stdout, stderr = specgan("reconstruct", src, "-o", output, "--iters", "2", "--device", "cpu",
                                       "--overwrite")
        assert code == 0, stderr
        assert f"wrote {tmp_path / 'new' / 'tone.reconstructed.wav'} " in stdout
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["tone.reconstructed.wav"]


def test_reconstruct_of_silence_says_its_quality_cannot_be_measured(tmp_path):
    """Spectral convergence divides by the input's energy: for silence it is undefined (it printed 1.4e11)."""
    src = tmp_path / "silence.wav"
    sf.write(src, np.zeros(16000, np.float32), 16000)
    code, stdout, stderr = specgan("reconstruct", src, "-o", tmp_path / "out.wav", "--iters", "2", "--device", "cpu")
    assert code == 0, stderr
    assert "spectral convergence n/a (the input is silent) after 2 Griffin-Lim iterations" in stdout
    assert sf.read(tmp_path / "out.wav")[0].shape == (22050,)


def test_audio_parameters_that_leave_mel_bands_empty_are_one_warning_line(tmp_path):
    """torchaudio's own warning was two lines of Python warning (twice: log-mel and inverse); now one line, once."""
    src = tmp_path / "tone.wav"
    sf.write(src, 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32), 8000)
    code, stdout, stderr = specgan("reconstruct", src, "-o", tmp_path / "out.wav", "--n-fft", "64", "--hop-length",
                                   "16", "--n-mels", "80", "--iters", "2", "--device", "cpu",
                                   env={"OMP_NUM_THREADS": "1"})  # no line about busy cores, whatever else runs
    assert code == 0, stderr
    with pytest.warns(SpecganWarning, match="n_mels = 80"):
        fbank = mel_filterbank(sample_rate=22050, n_fft=64, n_mels=80)
    empty = int((fbank.amax(dim=0) == 0).sum())
    assert 0 < empty < 80
    assert stderr.splitlines() == [f"warning: n_mels = 80: {empty} of the mel bands get no FFT bin at n_fft = 64 and "
                                   f"22050 Hz, so they stay at the floor; use fewer mels or a larger n_fft"]
    assert "wrote" in stdout


def test_reconstruct_writes_audio_and_reports_spectral_convergence(vcc, tmp_path):
    src = vcc / "vcc2016_training" / "SF1" / "100001.flac"
    out = tmp_path / "rebuilt.wav"
    code, stdout, stderr = specgan("reconstruct", src, "-o", out, "--iters", "16", "--device", "cpu")
    assert code == 0, stderr
    rebuilt, rate = sf.read(out)
    assert rate == 22050
    wave, _ = load_audio(src, sample_rate=22050)
    assert abs(len(rebuilt) - wave.numel()) == 0
    reported = float(stdout.split("spectral convergence ")[1].split()[0])
    # Recompute the figure from the written file (16-bit quantisation moves it slightly).
    measured = float(spectral_convergence(reference=stft(wave, n_fft=1024, hop_length=256).abs(),
                                          estimate=stft(torch.from_numpy(rebuilt).float(), n_fft=1024,
                                                        hop_length=256).abs()))
    assert abs(reported - measured) < 0.01 and measured < 0.3


def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[audio]\nn_melz = 40\n")
    wav = tmp_path / "a.wav"
    sf.write(wav, (np.random.default_rng(0).standard_normal(8000) * 0.1).astype(np.float32), 8000)
    os.mkfifo(tmp_path / "pipe.wav")  # it had been "no such file"
    short = tmp_path / "short.wav"
    sf.write(short, np.full(100, 0.1, np.float32), 22050)
    audio_3 = tmp_path / "a3.toml"
    audio_3.write_text("audio = 3\n")
    typo = tmp_path / "typo.toml"  # a whole training recipe: prep reads its [audio], and checks the rest
    typo.write_text('name = "t"\n[audio]\nn_mels = 40\n[train]\nstepz = 5\n')
    cases = [
        (["prep", tmp_path / "nope", "-o", tmp_path / "ds"], "nope: source folder does not exist"),
        (["reconstruct", wav, "-o", tmp_path / "b.wav", "--recipe", recipe], "r.toml: unknown key 'audio.n_melz'"),
        (["reconstruct", wav, "-o", tmp_path / "b.wav", "--set", "n_mels=2"], "n_mels = 2: must be >= 4"),
        (["reconstruct", wav, "-o", tmp_path / "b.mp4"], "b.mp4: unsupported output format"),
        (["reconstruct", wav, "-o", wav], "is the input file"),
        (["reconstruct", tmp_path / "missing.wav", "-o", tmp_path / "b.wav"], "missing.wav: no such file"),
        (["reconstruct", tmp_path / "pipe.wav", "-o", tmp_path / "b.wav"], "pipe.wav: not a regular file"),
        (["prep", tmp_path, "-o", tmp_path / "ds", "--recipe", audio_3], "a3.toml: audio must be a table"),
        (["prep", tmp_path, "-o", tmp_path / "ds", "--recipe", typo], "typo.toml: unknown key 'train.stepz'"),
        (["prep", tmp_path, "-o", tmp_path / "ds", "--domain-pattern", "(a"], "--domain-pattern '(a': not a regular"),
        (["prep", tmp_path, "-o", tmp_path / "ds", "--domains", ","], "--domains ,: names no domain; leave it out"),
        # the [audio] table given a value (it had been an internal error) or an [audio] key given keys
        (["reconstruct", wav, "-o", tmp_path / "b.wav", "--set", "audio=5"], "--set audio=5: [audio] is a table"),
        (["reconstruct", wav, "-o", tmp_path / "b.wav", "--set", "n_fft.x=1"],
         "--set n_fft.…: n_fft is an [audio] value, not a table"),
        (["prep", tmp_path, "-o", tmp_path / "ds", "--set", "frames=abc", "--frames", "16"],
         "command line: frames = 'abc': expected int, got str"),
        (["prep", tmp_path, "-o", tmp_path / "ds", "--domain-pattern", r"^\d+_"],  # shown as typed, not doubled
         r"--domain-pattern '^\d+_': needs a (group) that captures the domain"),
    ]
    for args, message in cases:
        code, stdout, stderr = specgan(*args)
        assert code == 2, (args, stderr)
        assert message in stderr, (message, stderr)
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert sf.read(wav)[0].shape == (8000,)  # the input was not overwritten
    code, _, stderr = specgan("reconstruct", wav, "-o", tmp_path / "new" / "folder" / "b.wav", "--iters", "2")
    assert code == 0 and sf.read(tmp_path / "new" / "folder" / "b.wav")[1] == 22050, stderr
    # A clip shorter than an FFT window is framed followed by silence, as convert frames it (it had been refused).
    code, _, stderr = specgan("reconstruct", short, "-o", tmp_path / "short_out.wav", "--iters", "2")
    assert code == 0, stderr
    rebuilt, rate = sf.read(tmp_path / "short_out.wav")
    assert rate == 22050 and rebuilt.shape == (100,) and np.abs(rebuilt).max() > 0.01


def test_a_name_too_long_for_the_file_system_is_one_line_with_exit_code_2(tmp_path):
    """A path with a name past the file system's 255 bytes failed where it was first looked at, as an internal error
    (exit code 1) in every command: a user's mistake, to be named like any other."""
    wav = tmp_path / "a.wav"
    sf.write(wav, np.full(8000, 0.1, np.float32), 8000)
    long = tmp_path / ("x" * 300)
    for args in (["reconstruct", wav, "-o", f"{long}.wav"], ["prep", tmp_path, "-o", long],
                 ["train", f"{long}.toml"], ["sample", long]):
        code, _, stderr = specgan(*args)
        assert code == 2, (args, stderr)
        assert stderr.startswith(f"error: {long}") and len(stderr.strip().splitlines()) == 1, stderr
        assert "name too long" in stderr.lower() and "internal error" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_messages_print_paths_whole_and_as_they_are(tmp_path):
    """A path is printed as it is, brackets included (rich would read ``[b]`` or ``[/x]`` as markup), and on one
    line however long (rich wraps at 80 columns when stderr is not a terminal), so a user can copy it."""
    folder = tmp_path / ("a [b] [/x] " + "long" * 30)  # the slash makes two folders, "a [b] [" and "x] long…"
    folder.mkdir(parents=True)
    wav = folder / "tone [1].wav"
    sf.write(wav, (0.3 * np.sin(np.arange(4000) / 8000 * 2 * np.pi * 220)).astype(np.float32), 8000)
    code, stdout, stderr = specgan("reconstruct", folder / "missing.wav", "-o", tmp_path / "b.wav")
    assert code == 2 and stderr == f"error: {folder / 'missing.wav'}: no such file\n"
    out = folder / "out [2].wav"
    code, stdout, stderr = specgan("reconstruct", wav, "-o", out, "--iters", "2", "--device", "cpu")
    assert code == 0, stderr
    assert stdout.splitlines()[0].startswith(f"wrote {out} (")


def test_help_lists_commands():
    code, stdout, _ = specgan("--help")
    assert code == 0 and "prep" in stdout and "reconstruct" in stdout


def test_version():
    from importlib.metadata import version

    code, stdout, _ = specgan("--version")
    assert code == 0 and stdout.strip() == f"specgan {version('specgan')}"


def test_usage_errors_are_one_line_naming_the_command_and_option(tmp_path):
    """Click's own usage errors (an unknown command or option, a missing argument, a value out of an option's
    range) follow the same rule as specgan's: one line, exit code 2, with the help command to run."""
    cases = [
        (["bogus"], "error: specgan: No such command 'bogus' (see 'specgan --help')"),
        (["train", "--bogus"], "error: specgan train: No such option: --bogus (see 'specgan train --help')"),
        (["sample"], "error: specgan sample: Missing argument 'RUN' (see 'specgan sample --help')"),
        (["sample", tmp_path, "-n", "0"], "error: specgan sample: Invalid value for '"),
        (["sample", tmp_path, "--seed", "99999999999999999999"], "Invalid value for '--seed'"),
        (["reconstruct", tmp_path / "a.wav", "-o", tmp_path / "b.wav", "--seed", "-1"], "Invalid value for '--seed'"),
        # the refused value is in the message, whichever parser library wrote it
        (["reconstruct", tmp_path / "a.wav", "--iters", "0"], "0"),
        (["convert", tmp_path / "a.wav", "--to", "x", "--sample-rate", "123"], "123"),
        (["sample", tmp_path, "-n", "lots"], "lots"),
        (["eval", tmp_path, "-n", "0"], "greater than or equal to 100, got 0"),  # "0" is in "100": it had been left out
        (["data", "fetch"], "error: specgan data fetch: Missing argument 'NAME'"),
        # raised by the option parser without a context: placed under the command being run
        (["eval", tmp_path, "--pairs", tmp_path], "error: specgan eval: Option '--pairs' requires 2 arguments"),
        # not a parser's error, but the same rule: an option that would be ignored is refused
        (["eval", tmp_path, "--pairs", tmp_path, tmp_path, "--data", tmp_path],
         f"error: --data {tmp_path}: for generate runs; with --pairs"),
        (["eval", tmp_path, "--pairs", tmp_path, tmp_path, "-n", "500"], "error: -n 500: for generate runs; with --pairs"),
        (["eval", tmp_path, "--direction", "B2A"], "error: --direction B2A: for translate runs, measured with --pairs"),
        (["eval", tmp_path, "--iters", "8"], "error: --iters 8: for translate runs"),
    ]
    for args, message in cases:
        code, stdout, stderr = specgan(*args)
        assert code == 2, (args, stderr)
        assert len(stderr.strip().splitlines()) == 1 and message in stderr, (message, stderr)
        assert "Usage:" not in stderr + stdout
    code, stdout, stderr = specgan()  # no command at all: the help, as before
    assert "Commands:" in stdout + stderr and "error:" not in stderr


def test_a_cpu_run_that_will_take_hours_says_so_once_its_pace_is_known():
    from specgan.cli import _pace_note

    assert _pace_note(seconds_per_step=4.0, steps_left=20000) == (
        "at this pace the remaining 20000 steps take about 22 h on the CPU; the recipes are sized for a GPU, and the "
        "header of each gives a --set line for a short CPU run")
    assert _pace_note(seconds_per_step=0.4, steps_left=4500) is None  # half an hour: nothing to say


#: Run in a child: the signal ``sys.argv[1]`` reaches the process while torch's C initialisation imports numpy
#: (sent by a hook on that import), then ``specgan reconstruct <missing file>`` is dispatched.
SIGNAL_DURING_TORCH_IMPORT = """
import builtins, os, signal, sys
real_import, sent, signal_number = builtins.__import__, [], getattr(signal, sys.argv[1])
def hooked(name, *args, **kwargs):
    if name == "numpy" and "torch.version" in sys.modules and "torch._C" not in sys.modules and not sent:
        sent.append(name)
        os.kill(os.getpid(), signal_number)
    return real_import(name, *args, **kwargs)
builtins.__import__ = hooked
from specgan.cli import main
sys.argv = ["specgan", "reconstruct", "no-such-file.wav", "-o", "out.wav"]
main()
"""


@pytest.mark.parametrize("sent, code, said", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "stopped by SIGTERM")])
def test_a_signal_while_torch_loads_stops_the_command(tmp_path, sent, code, said):
    """torch's C initialisation imports numpy and discards any exception from it: Ctrl-C in a command's first half
    second was lost (the command ran on, here to its 'no such file' error), or left torch half-imported (an
    internal error, an abort). The signal is held back until torch is in, then stops the command."""
    done = subprocess.run([sys.executable, "-c", SIGNAL_DURING_TORCH_IMPORT, sent], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == code and done.stderr.strip() == f"{said}; nothing half-written was kept", done.stderr


#: Run in a child: the signal ``sys.argv[1]`` reaches the process while typer is imported, before specgan's command
#: line is even built; then the command ``sys.argv[2:]`` is dispatched, as the ``specgan`` script does.
SIGNAL_DURING_START = """
import builtins, os, signal, sys
real_import, sent, signal_number = builtins.__import__, [], getattr(signal, sys.argv[1])
def hooked(name, *args, **kwargs):
    if name == "typer" and not sent:
        sent.append(name)
        os.kill(os.getpid(), signal_number)
    return real_import(name, *args, **kwargs)
builtins.__import__ = hooked
from specgan.__main__ import run
sys.argv = ["specgan", *sys.argv[2:]]
run()
"""


@pytest.mark.parametrize("sent, code, said", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "stopped by SIGTERM")])
@pytest.mark.parametrize("command", [["reconstruct", "no-such-file.wav", "-o", "out.wav"],   # imports torch
                                     ["data", "fetch", "mnist", "--mirror", "nowhere"]])     # does not
def test_a_signal_while_the_command_line_loads_stops_the_command(tmp_path, sent, code, said, command):
    """Ctrl-C during typer's and rich's imports (a fifth of a second) had ended in a traceback."""
    done = subprocess.run([sys.executable, "-c", SIGNAL_DURING_START, sent, *command], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == code and done.stderr.strip() == f"{said}; nothing half-written was kept", done.stderr


def test_exit_codes_of_the_errors_and_the_format_header_check():
    from specgan.errors import (CheckpointError, ConfigError, LostRankError, Terminated, TrainingError,
                                TrainingInterrupted, check_format)

    assert (ConfigError.exit_code, TrainingError.exit_code, LostRankError.exit_code, Terminated.exit_code) == (
        2, 3, 3, 143)
    assert TrainingInterrupted("x", step=0, checkpoint=None).exit_code == 130
    assert TrainingInterrupted("x", step=0, checkpoint=None, signal_number=15).exit_code == 143
    check_format({"format": "f"}, path="p", expected="f", version=0, what="thing", error=CheckpointError)  # 0: none
    for document, said in [(["format", "f"], "p: not a specgan thing"), ({"format": "g"}, "p: not a specgan thing"),
                           ({"format": "f", "version": True}, "p: thing format version True is not a number"),
                           ({"format": "f", "version": "1"}, "p: thing format version '1' is not a number"),
                           ({"format": "f", "version": 2}, r"p: thing format version 2 is newer than this specgan "
                                                           r"understands \(1\); upgrade specgan")]:
        with pytest.raises(CheckpointError, match=f"^{said}$"):
            check_format(document, path="p", expected="f", version=1, what="thing", error=CheckpointError)

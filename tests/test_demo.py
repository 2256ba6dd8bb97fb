"""``make demo``'s script end to end with tiny models (``scripts/demo.py --tiny``, about a minute on 2 cores): the
embedded demo corpus → prepped datasets → trained translators → converted held-out audio with before/after plots
→ a scored voice conversion → (with MNIST at hand) generated digits, and a table of what it wrote."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf
from PIL import Image

from conftest import data_mirror
from specgan.spectrogram_figure import figure_layout

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "demo.py"
HELDOUT = ROOT / "data" / "demo"


def _mnist_available() -> bool:
    local = ROOT / "data" / "mnist"
    return (data_mirror() / "mnist").is_dir() or all(
        (local / n).exists() or (local / f"{n}.gz").exists()
        for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))


def test_the_demo_runs_end_to_end_and_says_what_it_wrote(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "SPECGAN_DATA_MIRROR": str(data_mirror()), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, SCRIPT, "--tiny", "--out", out], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stdout = proc.stdout

    # Each command is printed as a user types it (relative to the project root, where the demo runs them).
    assert "$ specgan prep data/demo/music -o " in stdout
    # (On a busy machine a torch command is prefixed with OMP_NUM_THREADS=N: the free cores.)
    assert "specgan train recipes/music_style.toml --set data.path=" in stdout
    assert "$ specgan prep data/demo/voices -o " in stdout
    assert "specgan eval " in stdout and "--pairs data/demo/voices_heldout/kal data/demo/voices_heldout/slt" in stdout

    # Converted held-out audio: the model's sample rate (the inputs' own here) and exactly the input's length.
    for wav, source, rate in [
        (out / "classical_041.to-jazz.wav", HELDOUT / "music_heldout" / "classical" / "041.flac", 22050),
        (out / "kal_s067.to-slt.wav", HELDOUT / "voices_heldout" / "kal" / "s067.flac", 16000),
    ]:
        info = sf.info(wav)
        assert info.samplerate == rate == sf.info(source).samplerate
        assert info.frames == sf.info(source).frames
        plot = Image.open(wav.with_suffix(".png"))
        assert plot.size[1] == figure_layout(columns=1, n_mels=80, panels=2).size[1]  # input above output
        assert wav.name in stdout and wav.with_suffix(".png").name in stdout

    # The voices are parallel: the conversion was scored, and the score is in the table.
    record = json.loads((out / "runs" / "voices_demo" / "eval.jsonl").read_text().splitlines()[-1])
    assert record["direction"] == "kal->slt" and record["pairs"] == 6
    assert "MCD converted" in stdout and f"MCD {record['mcd_db']:.2f} dB converted" in stdout

    assert "demo outputs (tiny budget" in stdout
    assert (out / "runs" / "music_style" / "samples").is_dir()
    if _mnist_available():
        assert (out / "digits.png").exists() and "digits.png" in stdout
        assert (out / "runs" / "mnist_dcgan" / "samples").is_dir()
    else:
        assert "MNIST step skipped" in stdout and "specgan data fetch mnist" in stdout
        assert "SPECGAN_DATA_MIRROR chooses it" in stdout  # where it looked, and how to point it elsewhere
        assert not (out / "digits.png").exists()


def test_a_failing_step_stops_the_demo_with_the_commands_own_message(tmp_path, monkeypatch, capfd):
    spec = importlib.util.spec_from_file_location("specgan_demo", SCRIPT)
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "specgan_demo", demo)         # dataclasses look their module up
    spec.loader.exec_module(demo)
    monkeypatch.setattr(demo, "DEMO", tmp_path / "no-corpus")      # the first prep fails: its input is missing
    code = demo.main(["--tiny", "--out", str(tmp_path / "out")])
    captured = capfd.readouterr()
    assert code == 2                                               # specgan's exit code for a user error
    assert "no-corpus" in captured.err and "error:" in captured.err   # prep's own one-line message
    assert "demo stopped" in captured.err and "specgan prep" in captured.err
    assert "specgan train" not in captured.out                     # nothing ran after the failure
    assert not (tmp_path / "out" / "runs" / "music_style").exists()


def test_the_demo_leaves_a_folder_it_did_not_make_alone(tmp_path):
    mine = tmp_path / "mine"
    (mine / "runs" / "music_style").mkdir(parents=True)
    (mine / "runs" / "music_style" / "model.pt").write_bytes(b"precious")
    proc = subprocess.run([sys.executable, SCRIPT, "--tiny", "--out", mine], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "choose another --out" in proc.stderr
    assert (mine / "runs" / "music_style" / "model.pt").read_bytes() == b"precious"

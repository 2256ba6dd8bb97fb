"""The voice-conversion workflow from the command line on real VCC2016 speech: prep two speakers, train the
voice_convert recipe for a few steps, convert a held-out utterance, score the run with ``specgan eval``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from PIL import Image

from specgan.audio.io import load_audio
from specgan.errors import ConfigError, SpecganError
from specgan.evaluate import parallel_pairs
from specgan.metrics.audio_quality import mel_cepstral_distortion
from specgan.spectrogram_figure import figure_layout
from test_cli_train import specgan

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "voice_convert.toml"
TINY = ["--set", "model.channels=4", "--set", "model.n_blocks=1", "--set", "train.steps=3", "--set",
        "train.batch_size=2", "--set", "train.sample_every=3", "--set", "train.checkpoint_every=3", "--set",
        "train.crop_frames=32"]


def test_prep_train_convert_and_eval_a_voice_pair(vcc, tmp_path):
    wavs = tmp_path / "wavs"
    for speaker in ("SF1", "TM3"):
        (wavs / speaker).mkdir(parents=True)
        for name in ("100001", "100002", "100003", "100004"):
            shutil.copy(vcc / "vcc2016_training" / speaker / f"{name}.flac", wavs / speaker)
    code, _, stderr = specgan("prep", wavs, "-o", tmp_path / "data" / "vcc2016", "--recipe", RECIPE, "--quiet",
                              cwd=tmp_path)
    assert code == 0, stderr
    code, stdout, stderr = specgan("train", RECIPE, *TINY, "--device", "cpu", "--quiet", cwd=tmp_path)
    assert code == 0, stderr
    run = tmp_path / "runs" / "voice_convert"
    assert "more: specgan convert FILE --to TM3 --model runs/voice_convert" in stdout  # a translator: not sample
    assert (run / "samples" / "step_000003_SF1-to-TM3.png").exists()

    # Convert a held-out utterance; the model is found under ./runs by its domain.
    source = vcc / "evaluation_all" / "SF1" / "200001.flac"
    code, stdout, stderr = specgan("convert", source, "--to", "TM3", "-o", tmp_path / "out.wav", "--plot",
                                   "--iters", "4", "--device", "cpu", cwd=tmp_path)
    assert code == 0, stderr
    assert "picked automatically" in stdout and "step 3" in stdout
    out, rate = sf.read(tmp_path / "out.wav")
    assert rate == 16000 and len(out) == sf.info(source).frames  # VCC is 16 kHz already
    plot = Image.open(tmp_path / "out.png")
    assert plot.size[1] == figure_layout(columns=1, n_mels=80, panels=2).size[1]  # input above output, 80 bands each

    code, _, stderr = specgan("convert", source, "--to", "jazz", "--model", run, cwd=tmp_path)
    assert code == 2 and "--to jazz" in stderr and "SF1 and TM3" in stderr
    assert len(stderr.strip().splitlines()) == 1

    # Score against the parallel target sentences (two of them), next to the unconverted baseline.
    src_dir, tgt_dir = tmp_path / "eval" / "SF1", tmp_path / "eval" / "TM3"
    for folder, speaker in ((src_dir, "SF1"), (tgt_dir, "TM3")):
        folder.mkdir(parents=True)
        for name in ("200001", "200002"):
            shutil.copy(vcc / "evaluation_all" / speaker / f"{name}.flac", folder)
    shutil.copy(vcc / "evaluation_all" / "SF1" / "100160.flac", src_dir)  # a source without its target
    code, stdout, stderr = specgan("eval", run, "--pairs", src_dir, tgt_dir, "--direction", "A2B", "--iters", "4",
                                   "--device", "cpu", cwd=tmp_path)
    assert code == 0, stderr
    assert "MCD converted" in stdout and "MCD unconverted" in stdout
    record = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
    assert record["task"] == "translate" and record["direction"] == "SF1->TM3" and record["pairs"] == 2
    assert record["unmatched_sources"] == [str(src_dir / "100160.flac")] and "100160.flac" in stdout
    # The baseline is exactly the metric applied to the unconverted files.
    first = record["per_pair"][0]
    target, _ = load_audio(first["target"], sample_rate=16000)
    original, _ = load_audio(first["source"], sample_rate=16000)
    assert abs(first["baseline_mcd_db"] - mel_cepstral_distortion(target, original, sample_rate=16000)) < 1e-9
    assert abs(record["baseline_mcd_db"] - sum(p["baseline_mcd_db"] for p in record["per_pair"]) / 2) < 1e-3
    assert record["mcd_ratio"] == round(record["mcd_db"] / record["baseline_mcd_db"], 4)
    # The target through log-mel and Griffin-Lim alone is far closer to the target than another speaker is.
    assert 0 < record["resynthesis_mcd_db"] < 0.8 * record["baseline_mcd_db"]

    code, _, stderr = specgan("eval", run, cwd=tmp_path)
    assert code == 2 and "--pairs SOURCE_DIR TARGET_DIR" in stderr

    # Links that loop, as a folder to read or to write into: Path.resolve had raised a RuntimeError (exit code 1).
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    code, _, stderr = specgan("eval", run, "--pairs", loop, tgt_dir, "--iters", "4", "--device", "cpu", cwd=tmp_path)
    assert code == 2 and stderr.strip() == f"error: --pairs: {loop}: no such folder", stderr
    code, _, stderr = specgan("convert", src_dir, "--to", "TM3", "--model", run, "-o", loop / "out", "--iters", "4",
                              "--device", "cpu", cwd=tmp_path)
    # one error line (convert may first say how many cores other programs keep busy, a note of its own)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Too many levels of symbolic links" in errors[0], stderr
    assert "Traceback" not in stderr and not (tmp_path / "loop2" / "out").exists()


def test_parallel_pairs_match_by_relative_name(tmp_path):
    for folder, names in ((tmp_path / "a", ["x/1.wav", "2.flac", "3.wav"]), (tmp_path / "b", ["x/1.flac", "2.wav"])):
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"")
    pairs, unmatched = parallel_pairs(tmp_path / "a", tmp_path / "b")
    assert [(s.relative_to(tmp_path).as_posix(), t.relative_to(tmp_path).as_posix()) for s, t in pairs] == \
        [("a/2.flac", "b/2.wav"), ("a/x/1.wav", "b/x/1.flac")]
    assert [u.name for u in unmatched] == ["3.wav"]


@pytest.mark.parametrize("side", ["a", "b"])
def test_two_recordings_of_one_name_are_refused(tmp_path, side):
    """x.wav and x.flac: one target had been taken silently (a stray file scored as the sentence's target), or two
    sources scored against one target and counted as two pairs."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.wav").write_bytes(b"")
    (tmp_path / side / "x.flac").write_bytes(b"")
    with pytest.raises(ConfigError, match=f"^--pairs: {re.escape(str(tmp_path / side / 'x.flac'))} and "
                                          f"{re.escape(str(tmp_path / side / 'x.wav'))}: two recordings of one name"):
        parallel_pairs(tmp_path / "a", tmp_path / "b")


def test_results_are_appended_by_concurrent_evals_without_loss(tmp_path):
    """record_result reads the log and replaces it whole (atomic): two evals of one run had each read the same log,
    and the second's replacement dropped the first's line (15 of 600 lost in an audit)."""
    from specgan.evaluate import record_result

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "eval.jsonl").write_bytes(b'{"earlier": 1}\n\xff\xfe not UTF-8, kept as it is')
    script = ("import sys\nfrom specgan.evaluate import record_result\n"
              "for i in range(150):\n"
              "    record_result({'checkpoint': sys.argv[1], 'who': sys.argv[2], 'i': i})\n")
    checkpoint = str(tmp_path / "checkpoints" / "step_1.pt")
    writers = [subprocess.Popen([sys.executable, "-c", script, checkpoint, who]) for who in "AB"]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    lines = (tmp_path / "eval.jsonl").read_bytes().split(b"\n")
    assert lines[:2] == [b'{"earlier": 1}', b"\xff\xfe not UTF-8, kept as it is"] and lines[-1] == b""
    records = [json.loads(line) for line in lines[2:-1]]
    assert sorted((r["who"], r["i"]) for r in records) == [(who, i) for who in "AB" for i in range(150)]
    (tmp_path / "other" / "eval.jsonl").mkdir(parents=True)   # a folder where the log goes: one line, no traceback
    with pytest.raises(SpecganError, match="eval.jsonl: not a file; the result above was not recorded$"):
        record_result({"checkpoint": str(tmp_path / "other" / "x.pt")})


def test_parallel_pairs_name_a_file_given_for_a_folder_as_such(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b.wav").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^--pairs: .*b.wav: a file; --pairs takes two folders of same-named "
                                          r"recordings$"):
        parallel_pairs(tmp_path / "a", tmp_path / "b.wav")
    with pytest.raises(ConfigError, match=r"^--pairs: .*nowhere: no such folder$"):
        parallel_pairs(tmp_path / "nowhere", tmp_path / "a")

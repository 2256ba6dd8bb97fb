"""Damaged, foreign and too-new checkpoints: a one-line error for the commands that read one checkpoint, and a
fallback to the newest intact checkpoint (said out loud, the damaged file kept aside) when a run continues."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from specgan.cli import app
from specgan.errors import CheckpointError, DamagedCheckpointError, TrainingError
from specgan.train.checkpoint import find_checkpoint, list_checkpoints, load_checkpoint, load_latest_checkpoint, \
    load_model_checkpoint, stale_temp_files
from specgan.train.config import load_recipe
from specgan.train.loop import train
from helpers import assert_same_training_state, make_two_tone_folder, one_line_error, write_run

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models; conftest restores the count


# -- a tiny image-folder run ---------------------------------------------------------------------------------
def tiny_recipe(data: Path, run: Path, **train_keys):
    table = {"name": "tiny", "data": {"kind": "image-folder", "path": str(data)},
             "model": {"conditional": True, "z_dim": 8, "channels": 8},
             "train": {"steps": 6, "batch_size": 8, "sample_every": 100, "checkpoint_every": 2, "ema_decay": 0.9,
                       **train_keys},
             "output": {"dir": str(run)}}
    return load_recipe(None, base=table)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_two_tone_folder(tmp_path_factory.mktemp("two-tone") / "data", n=24)


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory) -> Path:
    """An uninterrupted 6-step run: the reference every continued run must equal."""
    run = tmp_path_factory.mktemp("straight") / "run"
    torch.set_num_threads(1)
    train(tiny_recipe(data, run), device=CPU)
    return run


@pytest.fixture(scope="module")
def four_steps(data, tmp_path_factory) -> Path:
    """A run stopped after step 4: checkpoints at steps 2 and 4 (copied by the tests that change it)."""
    run = tmp_path_factory.mktemp("four") / "run"
    torch.set_num_threads(1)
    train(tiny_recipe(data, run, steps=4), device=CPU)
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002.pt", "step_00000004.pt"]
    return run


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# -- ways a checkpoint file can be bad ---------------------------------------------------------------------
def flip_a_tensor_byte(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor's data: the file stays a well-formed zip archive."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        content = archive.read(member)
    at = raw.find(content)
    assert at > 0 and raw.find(content, at + 1) < 0
    raw[at + len(content) // 2] ^= 0x5A
    path.write_bytes(bytes(raw))


class NotATensor:
    pass


def damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated-head":
        path.write_bytes(raw[:40])
    elif how == "truncated-half":
        path.write_bytes(raw[:len(raw) // 2])
    elif how == "truncated-last-byte":
        path.write_bytes(raw[:-1])
    elif how == "bit-flip":
        flip_a_tensor_byte(path)
    elif how == "text":
        path.write_text("not a checkpoint\n")
    elif how == "foreign-torch-file":
        torch.save({"weights": torch.ones(3)}, path)
    elif how == "pickled-code":
        torch.save({"format": "specgan-checkpoint", "version": 1, "step": 4, "x": NotATensor()}, path)
    elif how == "no-step":
        state = torch.load(path, weights_only=True)
        del state["step"]
        torch.save(state, path)
    else:
        raise AssertionError(how)


DAMAGES = ["empty", "truncated-head", "truncated-half", "truncated-last-byte", "bit-flip", "text",
           "foreign-torch-file", "pickled-code", "no-step"]


def make_newer(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["version"] = 2
    torch.save(state, path)


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_checkpoint_is_a_one_line_error_naming_it(four_steps, tmp_path, how):
    path = tmp_path / "step_00000004.pt"
    path.write_bytes((four_steps / "checkpoints" / "step_00000004.pt").read_bytes())
    load_checkpoint(path)  # intact before
    damage(path, how)
    with pytest.raises(DamagedCheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "not a readable checkpoint" in message or "not a specgan checkpoint" in message


def test_a_bit_flip_is_caught_by_the_crc_not_loaded_as_other_weights(four_steps, tmp_path):
    path = tmp_path / "flipped.pt"
    path.write_bytes((four_steps / "checkpoints" / "step_00000004.pt").read_bytes())
    flip_a_tensor_byte(path)
    torch.load(path, weights_only=True)  # torch itself reads the flipped file without complaint
    with pytest.raises(DamagedCheckpointError, match=r"corrupted: .*/data/\d+ fails its CRC check"):
        load_checkpoint(path)


def test_a_newer_format_is_an_error_that_says_upgrade_not_damage(four_steps, tmp_path):
    path = tmp_path / "step_00000004.pt"
    path.write_bytes((four_steps / "checkpoints" / "step_00000004.pt").read_bytes())
    make_newer(path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert not isinstance(e.value, DamagedCheckpointError)
    assert str(e.value) == (f"{path}: checkpoint format version 2 is newer than this specgan understands (1); "
                            f"upgrade specgan")


# -- commands that read one checkpoint ---------------------------------------------------------------------
def cli(*args):
    result = CliRunner().invoke(app, [*map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def train_cli(run: Path, *args):
    """``specgan train RUN/recipe.toml`` into ``run`` (a copied run's recipe still names the original folder)."""
    return cli("train", run / "recipe.toml", "--set", f"output.dir={run}", "--device", "cpu", "--quiet", *args)




def speech(path: Path) -> Path:
    import soundfile as sf

    t = np.arange(4000) / 8000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32), 8000)
    return path


@pytest.mark.parametrize("how", ["truncated-half", "bit-flip", "text", "newer"])
def test_sample_convert_and_eval_refuse_a_bad_checkpoint_in_one_line(four_steps, tmp_path, how):
    generate = tmp_path / "gen.pt"
    generate.write_bytes((four_steps / "checkpoints" / "step_00000004.pt").read_bytes())
    translate = write_run(tmp_path / "tr")
    assert cli("sample", generate, "-n", "4", "-o", tmp_path / "ok.png", "--device", "cpu")[0] == 0
    for path in (generate, translate):
        make_newer(path) if how == "newer" else damage(path, how)
    expected = "upgrade specgan" if how == "newer" else "checkpoint"
    code, _, stderr = cli("sample", generate, "-n", "4", "-o", tmp_path / "s.png", "--device", "cpu")
    one_line_error(code, stderr, str(generate), expected)
    assert not (tmp_path / "s.png").exists()
    code, _, stderr = cli("convert", speech(tmp_path / "in.wav"), "--to", "B", "--model", translate,
                          "-o", tmp_path / "out.wav", "--iters", "2", "--device", "cpu")
    one_line_error(code, stderr, str(translate), expected)
    assert not (tmp_path / "out.wav").exists()
    code, _, stderr = cli("eval", generate, "-n", "100", "--device", "cpu")
    one_line_error(code, stderr, str(generate), expected)
    code, _, stderr = cli("eval", translate, "--pairs", tmp_path, tmp_path, "--device", "cpu")
    one_line_error(code, stderr, str(translate), expected)


def test_a_checkpoint_of_the_other_task_is_refused_in_one_line(four_steps, tmp_path):
    generate = four_steps / "checkpoints" / "step_00000004.pt"
    translate = write_run(tmp_path / "tr")
    code, _, stderr = cli("sample", translate, "-o", tmp_path / "s.png", "--device", "cpu")
    one_line_error(code, stderr, str(translate), "this is a translate run, which converts recordings")
    code, _, stderr = cli("convert", speech(tmp_path / "in.wav"), "--to", "light", "--model", generate,
                          "--iters", "2", "--device", "cpu")
    one_line_error(code, stderr, str(generate), "not a translator")
    code, _, stderr = cli("eval", translate, "-n", "100", "--device", "cpu")
    one_line_error(code, stderr, str(translate), "--pairs")
    code, _, stderr = cli("eval", generate, "--pairs", tmp_path, tmp_path, "--device", "cpu")
    one_line_error(code, stderr, str(generate), "not a translator")


def test_weights_that_do_not_fit_the_checkpoints_own_recipe_are_one_line(four_steps, tmp_path):
    path = tmp_path / "step_00000004.pt"
    state = load_checkpoint(four_steps / "checkpoints" / "step_00000004.pt")
    state["recipe"]["model"]["channels"] = 16  # the recipe of another run, with this run's weights
    torch.save(state, path)
    code, _, stderr = cli("sample", path, "-n", "4", "-o", tmp_path / "s.png", "--device", "cpu")
    one_line_error(code, stderr, str(path), "model")
    state["recipe"]["model"]["name"] = "stylegan"  # a model this specgan does not know
    torch.save(state, path)
    code, _, stderr = cli("sample", path, "-n", "4", "-o", tmp_path / "s.png", "--device", "cpu")
    one_line_error(code, stderr, str(path), "cannot rebuild its generator (model.name = 'stylegan'")


@pytest.mark.parametrize("field", ["data", "recipe", "task"])
def test_a_checkpoint_without_a_field_the_model_needs_is_one_line(four_steps, tmp_path, field):
    path = tmp_path / "step_00000004.pt"
    state = load_checkpoint(four_steps / "checkpoints" / "step_00000004.pt")
    del state[field]
    torch.save(state, path)
    code, _, stderr = cli("sample", path, "-n", "4", "-o", tmp_path / "s.png", "--device", "cpu")
    one_line_error(code, stderr, str(path), f"it has no '{field}'")
    code, _, stderr = cli("eval", path, "-n", "100", "--device", "cpu")
    one_line_error(code, stderr, str(path), f"it has no '{field}'")


def test_eval_results_are_shown_before_a_run_folder_that_cannot_be_written_refuses_them(four_steps, tmp_path,
                                                                                        monkeypatch):
    """The measurement is printed first: a read-only run folder costs the record, not the result."""
    import specgan.evaluate as evaluate

    translate = write_run(tmp_path / "tr")
    pairs = {side: tmp_path / side for side in ("src", "tgt")}
    for folder in pairs.values():
        folder.mkdir()
        speech(folder / "one.wav")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    monkeypatch.setattr(evaluate, "results_log", lambda checkpoint: blocked / "eval.jsonl")
    result = CliRunner().invoke(app, ["eval", str(translate), "--pairs", str(pairs["src"]), str(pairs["tgt"]),
                                      "--iters", "2", "--device", "cpu"])
    assert result.exit_code == 2 and "MCD converted" in result.stdout, result.output
    # Each source is its own target here: a baseline of 0 dB, so no ratio (it was a division by zero).
    assert re.search(r"MCD ratio\s+.?\s*n/a", result.stdout), result.stdout
    assert "blocked" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unreadable_pair_is_left_out_of_eval_and_listed(tmp_path):
    """Like a folder convert: the other pairs are measured and recorded, the bad one is named, exit code 2."""
    translate = write_run(tmp_path / "tr")
    src, tgt = tmp_path / "src", tmp_path / "tgt"
    for folder in (src, tgt):
        folder.mkdir()
        for name in ("one", "two"):
            speech(folder / f"{name}.wav")
    (tgt / "two.wav").write_bytes((tgt / "two.wav").read_bytes()[:60])  # a truncated WAV
    result = CliRunner().invoke(app, ["eval", str(translate), "--pairs", str(src), str(tgt), "--iters", "2",
                                      "--json", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    record = json.loads(result.stdout)
    assert record["pairs"] == 1 and [f["target"] for f in record["failed"]] == [str(tgt / "two.wav")]
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith(f"skipped the pair of {tgt / 'two.wav'}: ") and "Traceback" not in result.stderr
    assert lines[-1] == "error: 1 of 2 pair(s) could not be scored (listed above); the result is over the other 1"
    logged = json.loads((tmp_path / "tr" / "eval.jsonl").read_text().splitlines()[-1])
    assert logged["failed"] == record["failed"]
    for name in ("one", "two"):
        (tgt / f"{name}.wav").write_bytes(b"RIFF")
    result = CliRunner().invoke(app, ["eval", str(translate), "--pairs", str(src), str(tgt), "--device", "cpu"])
    one_line_error(result.exit_code, result.stderr, "none of the 2 pairs could be read")


def test_results_of_a_checkpoint_outside_a_run_are_kept_beside_it(tmp_path):
    from specgan.evaluate import results_log

    assert results_log(tmp_path / "run" / "checkpoints" / "step_00000004.pt") == tmp_path / "run" / "eval.jsonl"
    assert results_log(tmp_path / "models" / "model.pt") == tmp_path / "models" / "eval.jsonl"
    assert results_log(tmp_path / "checkpoints" / "model.pt") == tmp_path / "eval.jsonl"


def test_sample_convert_and_eval_of_a_run_pass_over_a_damaged_newest_checkpoint_and_say_so(four_steps, tmp_path):
    """As train does, but reading a run leaves it as it was: the damaged file is not set aside."""
    generate = copy_run(four_steps, tmp_path / "gen")
    damage(generate / "checkpoints" / "step_00000004.pt", "truncated-half")
    translate = tmp_path / "runs" / "tr"
    intact = write_run(translate, step=1)
    newest = intact.with_name("step_00000002.pt")
    newest.write_bytes(intact.read_bytes()[:1000])
    before = {run: sorted(p.name for p in (run / "checkpoints").iterdir()) for run in (generate, translate)}

    def warned(stderr, damaged, used, step):
        lines = [line for line in stderr.splitlines() if line.startswith("warning:")]
        assert len(lines) == 1, stderr
        assert lines[0].startswith(f"warning: {damaged}: not a readable checkpoint")
        assert lines[0].endswith(f"; using {used} (step {step}), the newest intact checkpoint")

    code, stdout, stderr = cli("sample", generate, "-n", "4", "-o", tmp_path / "s.png", "--device", "cpu")
    assert code == 0, stderr
    warned(stderr, generate / "checkpoints" / "step_00000004.pt", generate / "checkpoints" / "step_00000002.pt", 2)
    assert "from step 2 of" in stdout and (tmp_path / "s.png").exists()
    src = speech(tmp_path / "in.wav")
    code, stdout, stderr = cli("convert", src, "--to", "B", "--model", translate, "-o", tmp_path / "out.wav",
                               "--iters", "2", "--device", "cpu")
    assert code == 0, stderr
    warned(stderr, newest, intact, 1)
    assert f"model {intact} (step 1" in stdout and (tmp_path / "out.wav").exists()
    pairs = [tmp_path / "pairs" / side for side in ("src", "tgt")]
    for folder in pairs:
        folder.mkdir(parents=True)
        speech(folder / "u1.wav")
    code, stdout, stderr = cli("eval", translate, "--pairs", *pairs, "--iters", "2", "--device", "cpu")
    assert code == 0, stderr
    warned(stderr, newest, intact, 1)
    # Picked automatically under runs/: the run is still found by its intact checkpoint.
    from specgan.convert import find_translator
    assert find_translator("B", runs_dir=tmp_path / "runs") == translate
    assert {run: sorted(p.name for p in (run / "checkpoints").iterdir()) for run in (generate, translate)} == before


# -- continuing a run --------------------------------------------------------------------------------------
def test_continuing_past_a_damaged_newest_checkpoint_uses_the_previous_one_and_says_so(four_steps, straight, data,
                                                                                        tmp_path):
    run = copy_run(four_steps, tmp_path / "run")
    damaged = run / "checkpoints" / "step_00000004.pt"
    damage(damaged, "truncated-half")
    bad_bytes = damaged.read_bytes()
    warnings = []
    result = train(tiny_recipe(data, run), device=CPU, on_warning=warnings.append)
    assert result.resumed_from == 2 and result.step == 6
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith(f"{damaged}: not a readable checkpoint")
    assert f"continuing from {run / 'checkpoints' / 'step_00000002.pt'} (step 2)" in warnings[0]
    assert "kept as step_00000004.pt.damaged" in warnings[0]
    # The damaged file is kept aside, byte for byte, and is no longer one of the run's checkpoints.
    assert (run / "checkpoints" / "step_00000004.pt.damaged").read_bytes() == bad_bytes
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002.pt", "step_00000004.pt", "step_00000006.pt"]
    # Steps 3-4 were redone: the result is exactly the uninterrupted run's.
    assert_same_training_state(run / "checkpoints" / "step_00000006.pt",
                               straight / "checkpoints" / "step_00000006.pt")
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_the_cli_prints_the_fallback_warning_and_resume_accepts_it(four_steps, tmp_path):
    run = copy_run(four_steps, tmp_path / "run")
    damage(run / "checkpoints" / "step_00000004.pt", "bit-flip")
    code, stdout, stderr = train_cli(run, "--resume")
    assert code == 0, stderr
    warning = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, stderr
    assert "step_00000004.pt: not a readable checkpoint (corrupted" in warning[0]
    assert "continuing from" in warning[0] and "step_00000002.pt (step 2)" in warning[0]
    assert "continuing" in stderr and "from step 2" in stderr
    assert "finished step 4" in stdout


def test_rotation_after_a_fallback_never_deletes_the_last_intact_checkpoint(four_steps, data, tmp_path,
                                                                            monkeypatch):
    """keep_checkpoints = 1 after falling back from a damaged step 4 to step 2: once step 3 is written, step 2 may
    go, but step 3 must stay even when training stops before step 4 is written again (here: a NaN at step 4)."""
    from specgan.train import generate

    run = copy_run(four_steps, tmp_path / "run")
    damage(run / "checkpoints" / "step_00000004.pt", "truncated-last-byte")
    original = generate.GenerateTask.step

    def nan_at_step_4(self, step):
        out = original(self, step)
        if step == 4:
            out["loss/D"] = out["loss/D"] * float("nan")
        return out

    monkeypatch.setattr(generate.GenerateTask, "step", nan_at_step_4)
    with pytest.raises(TrainingError, match="step 4: loss/D is nan"):
        train(tiny_recipe(data, run, checkpoint_every=1, keep_checkpoints=1), device=CPU)
    intact = list_checkpoints(run)
    assert [p.name for p in intact] == ["step_00000003.pt"]
    assert load_checkpoint(intact[0])["step"] == 3
    assert find_checkpoint(run) == intact[0]


def test_when_no_checkpoint_is_intact_nothing_is_renamed_and_the_error_says_so(four_steps, data, tmp_path):
    run = copy_run(four_steps, tmp_path / "run")
    for path, how in zip(list_checkpoints(run), ["text", "truncated-head"]):
        damage(path, how)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    with pytest.raises(CheckpointError) as e:
        train(tiny_recipe(data, run), device=CPU)
    message = str(e.value)
    assert message.startswith(f"{run / 'checkpoints'}: no intact checkpoint to continue from (newest: "
                              f"{run / 'checkpoints' / 'step_00000004.pt'}: not a readable checkpoint")
    assert "\n" not in message and "output.dir" in message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    code, _, stderr = train_cli(run)
    one_line_error(code, stderr, "no intact checkpoint")


def test_a_newer_newest_checkpoint_is_not_skipped(four_steps, data, tmp_path):
    """Falling back past a checkpoint a newer specgan wrote would silently discard its work: an error instead."""
    run = copy_run(four_steps, tmp_path / "run")
    newest = run / "checkpoints" / "step_00000004.pt"
    make_newer(newest)
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    warnings = []
    with pytest.raises(CheckpointError, match=r"step_00000004\.pt: checkpoint format version 2 is newer .*upgrade"):
        train(tiny_recipe(data, run), device=CPU, on_warning=warnings.append)
    assert warnings == []
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before
    code, _, stderr = train_cli(run, "--resume")
    one_line_error(code, stderr, "upgrade specgan")


def test_a_checkpoint_of_another_recipe_or_task_is_not_continued(four_steps, data, tmp_path):
    run = copy_run(four_steps, tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"step_00000004\.pt: this run was trained with model\.z_dim = 8, not 16"):
        train(load_recipe(None, base={"name": "tiny", "data": {"kind": "image-folder", "path": str(data)},
                                      "model": {"conditional": True, "z_dim": 16, "channels": 8},
                                      "train": {"steps": 6, "batch_size": 8, "checkpoint_every": 2,
                                                "ema_decay": 0.9},
                                      "output": {"dir": str(run)}}), device=CPU)
    # A translate checkpoint dropped into a generate run folder: refused, not trained over or skipped.
    write_run(tmp_path / "tr")
    (tmp_path / "tr" / "checkpoints" / "step_00000001.pt").rename(run / "checkpoints" / "step_00000009.pt")
    code, _, stderr = train_cli(run, "--set", "train.steps=12")
    # The run's earlier checkpoints fit its recipe: this one is another run's. The command that 'continues this one
    # as it was' had been offered, and failed the same way.
    one_line_error(code, stderr, f"{run / 'checkpoints' / 'step_00000009.pt'}: not a checkpoint of this run, whose "
                                 f"earlier checkpoints fit its recipe (it was trained with ")
    assert stderr.strip().endswith(f"; move it out of {run / 'checkpoints'} to continue the run"), stderr
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002.pt", "step_00000004.pt", "step_00000009.pt"]


def test_temporary_files_of_unfinished_writes_are_ignored_then_removed(four_steps, data, tmp_path):
    run = copy_run(four_steps, tmp_path / "run")
    folder = run / "checkpoints"
    half = (folder / "step_00000004.pt").read_bytes()[:1000]
    (folder / ".step_00000005.pt.abc123.tmp").write_bytes(half)  # what kill -9 during a write leaves
    (folder / ".step_00000006.pt.x_y.tmp").write_bytes(b"")
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002.pt", "step_00000004.pt"]
    assert find_checkpoint(run).name == "step_00000004.pt"
    path, state = load_latest_checkpoint(run, tidy=False)
    assert path.name == "step_00000004.pt" and state["step"] == 4 and len(stale_temp_files(run)) == 2
    result = train(tiny_recipe(data, run), device=CPU)
    assert result.resumed_from == 4
    assert stale_temp_files(run) == [] and not list(folder.glob(".*"))
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002.pt", "step_00000004.pt", "step_00000006.pt"]


def test_a_checkpoint_that_cannot_be_read_is_an_error_not_set_aside_as_damaged(four_steps, tmp_path, monkeypatch):
    """No permission (or a failing disk) says nothing about a file's contents: it had been renamed .damaged and the
    run continued from an older checkpoint, redoing the steps since."""
    import errno

    import specgan.train.checkpoint as checkpoint_module

    run = copy_run(four_steps, tmp_path / "run")
    newest = list_checkpoints(run)[-1]
    real_zipfile = zipfile.ZipFile

    def zip_file(path, *args, **kwargs):
        if Path(path) == newest:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_zipfile(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.zipfile, "ZipFile", zip_file)
    warned = []
    with pytest.raises(CheckpointError) as caught:
        load_latest_checkpoint(run, on_warning=warned.append)
    assert not isinstance(caught.value, DamagedCheckpointError) and not warned
    assert str(caught.value) == f"{newest}: cannot read (Permission denied); the checkpoint is left as it is"
    assert list_checkpoints(run)[-1] == newest and not list(run.glob("checkpoints/*.damaged"))


def test_stale_temporary_files_go_when_a_checkpoint_is_written_and_when_a_run_is_tidied(four_steps, tmp_path):
    """Each of the two clean-ups on its own: save_checkpoint removes them after its write, load_latest_checkpoint
    with tidy (and only with it) before it reads."""
    from specgan.train.checkpoint import save_checkpoint

    run = copy_run(four_steps, tmp_path / "run")
    folder = run / "checkpoints"
    (folder / ".step_00000005.pt.abc123.tmp").write_bytes(b"half")
    load_latest_checkpoint(run, tidy=False)
    assert len(stale_temp_files(run)) == 1
    load_latest_checkpoint(run, tidy=True)
    assert stale_temp_files(run) == []
    (folder / ".step_00000005.pt.abc123.tmp").write_bytes(b"half")
    save_checkpoint(run, {"task": {}}, step=7, keep=5)
    assert stale_temp_files(run) == [] and (folder / "step_00000007.pt").exists()


def test_a_damaged_checkpoint_set_aside_twice_keeps_both_copies(four_steps, tmp_path):
    """A second damaged file of the same step (the run fell back, wrote it again, and it was damaged again) is
    set aside beside the first one, never over it."""
    run = copy_run(four_steps, tmp_path / "run")
    newest = list_checkpoints(run)[-1]
    for content in (b"first damaged copy", b"second damaged copy"):
        newest.write_bytes(content)
        path, _ = load_latest_checkpoint(run, on_warning=lambda line: None)
        assert path.name == "step_00000002.pt"
    kept = sorted(p.name for p in newest.parent.iterdir() if ".damaged" in p.name)
    assert kept == ["step_00000004.pt.damaged", "step_00000004.pt.damaged.1"]
    assert {(newest.parent / name).read_bytes() for name in kept} == {b"first damaged copy", b"second damaged copy"}


def test_a_run_whose_checkpoints_were_all_set_aside_is_not_started_afresh(four_steps, data, tmp_path):
    """Damaged checkpoints set aside earlier are the run's work: with no intact one left, a fresh start would
    replace its metrics and samples, so training refuses as when no checkpoint is intact; sample names them too."""
    run = copy_run(four_steps, tmp_path / "run")
    for path in list_checkpoints(run):
        path.rename(path.with_name(path.name + ".damaged"))
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(CheckpointError) as e:
        train(tiny_recipe(data, run), device=CPU)
    message = str(e.value)
    assert message.startswith(f"{run / 'checkpoints'}: no intact checkpoint to continue from, only damaged ones set "
                              f"aside earlier (step_00000004.pt.damaged and 1 more)")
    assert "\n" not in message and "output.dir" in message
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    code, _, stderr = train_cli(run)
    one_line_error(code, stderr, "only damaged ones set aside")
    with pytest.raises(CheckpointError, match=r"checkpoints: no intact checkpoint, only damaged ones set aside earlier "
                                              r"\(step_00000004\.pt\.damaged and 1 more\)$"):
        load_model_checkpoint(run)
    # with them gone, the folder is a run that never saved a checkpoint, and starts afresh
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    assert train(tiny_recipe(data, run, steps=2), device=CPU).step == 2

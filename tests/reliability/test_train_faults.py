"""Faults during training never lose work: kill -9 at random moments (and once in the middle of a checkpoint
write), a full disk, a NaN loss, Ctrl-C. After each, what is on disk is complete, and continuing gives exactly the
weights of an uninterrupted run (CPU, one thread, same seed)."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from specgan.cli import app
from specgan.errors import SpecganError, TrainingError, TrainingInterrupted
from specgan.recipe import dump_toml
from specgan.train.checkpoint import list_checkpoints, load_checkpoint, stale_temp_files
from specgan.train.config import load_recipe, recipe_mapping
from specgan.train.loop import train
from helpers import make_two_tone_folder
from helpers import assert_same_training_state as _same

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[2]
#: Safety net for waiting on a subprocess: a hang fails the test instead of stalling the suite (not a timing test).
PATIENCE_S = 300


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # determinism across processes, and tiny models; conftest restores the count


def recipe_table(data: Path, run: Path, **train_keys) -> dict:
    return {"name": "tiny", "data": {"kind": "image-folder", "path": str(data)},
            "model": {"conditional": True, "z_dim": 8, "channels": 8},
            "train": {"steps": 6, "batch_size": 8, "sample_every": 1000, "checkpoint_every": 2, "ema_decay": 0.9,
                      **train_keys},
            "output": {"dir": str(run)}}


def tiny_recipe(data: Path, run: Path, **train_keys):
    return load_recipe(None, base=recipe_table(data, run, **train_keys))


def recipe_file(path: Path, data: Path, run: Path, **train_keys) -> Path:
    path.write_text(dump_toml(recipe_mapping(tiny_recipe(data, run, **train_keys))))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_two_tone_folder(tmp_path_factory.mktemp("two-tone") / "data", n=24)


def assert_same_training_state(a: Path, b: Path) -> None:
    _same(a, b, models=("G", "D", "G_ema"))


def metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def step_of(path: Path) -> int:
    return int(re.fullmatch(r"step_(\d{8})\.pt", path.name)[1])


def assert_every_checkpoint_is_complete(run: Path) -> None:
    """Every file under a checkpoint's name loads (CRC-checked) and holds the step its name says."""
    folder = run / "checkpoints"
    for path in folder.iterdir():
        if path.name.startswith("."):
            assert re.fullmatch(r"\.step_\d{8}\.pt\..+\.tmp", path.name), path  # a temporary file, never a name
            continue
        assert load_checkpoint(path)["step"] == step_of(path), path


def cli(*args):
    result = CliRunner().invoke(app, [*map(str, args)])
    return result.exit_code, result.stdout, result.stderr


# -- kill -9 -----------------------------------------------------------------------------------------------
#: ``specgan train`` in a subprocess with one thread; with KILL_MID_WRITE_AT_STEP=k it writes half of step k's
#: checkpoint and then SIGKILLs itself, which is a kill landing in the middle of the write. THROTTLE_S=t makes
#: every step last at least t seconds (a sleep after it; the arithmetic is untouched), so that however fast the
#: machine, a kill a random fraction of a second after a checkpoint lands a few steps later, not after the end.
RUNNER = r'''
import io, os, signal, sys, time
import torch
torch.set_num_threads(1)
throttle = float(os.environ.get("THROTTLE_S", "0"))
if throttle:
    from specgan.train import generate
    real_step = generate.GenerateTask.step
    def slow_step(self, step):
        out = real_step(self, step)
        time.sleep(throttle)
        return out
    generate.GenerateTask.step = slow_step
kill_at = int(os.environ.get("KILL_MID_WRITE_AT_STEP", "0"))
if kill_at:
    real_save = torch.save
    def save_then_die(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == kill_at:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[:len(data) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)
    torch.save = save_then_die
from specgan.cli import main
sys.argv = ["specgan", *sys.argv[1:]]
main()
'''


def start_training(runner: Path | None, recipe: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """``runner`` (see RUNNER), or plain ``python -m specgan`` when None."""
    program = [str(runner)] if runner is not None else ["-m", "specgan"]
    return subprocess.Popen([sys.executable, *program, "train", str(recipe), "--device", "cpu", "--quiet", *extra],
                            cwd=recipe.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def newest_step(run: Path) -> int:
    found = list_checkpoints(run)
    return step_of(found[-1]) if found else 0


def wait_for(condition, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended (exit {proc.returncode}) before the kill: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("training made no progress")
        time.sleep(0.01)


def test_kill_9_at_random_moments_loses_nothing_and_resume_is_exact(data, tmp_path):
    steps = 24
    reference = tmp_path / "reference"
    train(tiny_recipe(data, reference, steps=steps, checkpoint_every=1, keep_checkpoints=3), device=CPU)

    run = tmp_path / "run"
    recipe = recipe_file(tmp_path / "tiny.toml", data, run, steps=steps, checkpoint_every=1, keep_checkpoints=3)
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    rng = random.Random(7)
    for kill in range(3):
        before = newest_step(run)
        proc = start_training(runner, recipe, *(["--resume"] if before else []), env={"THROTTLE_S": "0.03"})
        wait_for(lambda: newest_step(run) > before, proc)  # training (not start-up) is under way
        time.sleep(rng.uniform(0.0, 0.1))  # at most a few steps further (THROTTLE_S)
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        assert_every_checkpoint_is_complete(run)
        assert newest_step(run) > before

    # Once more, the kill landing in the middle of writing a checkpoint.
    at = newest_step(run) + 2
    proc = start_training(runner, recipe, "--resume", env={"KILL_MID_WRITE_AT_STEP": str(at)})
    proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == -signal.SIGKILL
    left = stale_temp_files(run)
    assert [p.name.split(".pt.")[0] for p in left] == [f".step_{at:08d}"] and left[0].stat().st_size > 0
    assert not (run / "checkpoints" / f"step_{at:08d}.pt").exists() and newest_step(run) == at - 1
    assert_every_checkpoint_is_complete(run)

    proc = start_training(runner, recipe, "--resume")
    out, err = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 0, err
    assert f"from step {at - 1}" in err and f"finished step {steps}" in out
    assert stale_temp_files(run) == []
    assert_every_checkpoint_is_complete(run)
    assert metric_steps(run) == list(range(1, steps + 1))
    assert_same_training_state(run / "checkpoints" / f"step_{steps:08d}.pt",
                               reference / "checkpoints" / f"step_{steps:08d}.pt")


# -- a full disk -------------------------------------------------------------------------------------------
def test_disk_full_during_a_checkpoint_is_one_line_and_keeps_the_previous_one(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=2), device=CPU)
    previous = run / "checkpoints" / "step_00000002.pt"
    saved = previous.read_bytes()
    recipe = recipe_file(tmp_path / "tiny.toml", data, run, steps=4)
    real_save = torch.save

    def disk_fills_up(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_up)
    code, _, stderr = cli("train", recipe, "--device", "cpu", "--quiet")
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == (f"error: {run / 'checkpoints' / 'step_00000004.pt'}: cannot write (No space left on "
                         f"device); no checkpoint was written and the existing ones are untouched (newest: "
                         f"{previous})"), stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002.pt"]  # no temp file
    assert previous.read_bytes() == saved



def test_disk_full_while_logging_metrics_is_one_line_and_keeps_the_checkpoint(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=2), device=CPU)
    recipe = recipe_file(tmp_path / "tiny.toml", data, run, steps=4)
    real_dumps = json.dumps

    def disk_fills_up(obj, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_dumps(obj, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", disk_fills_up)
    assert_disk_full_stops_in_one_line(recipe, run, refused=run / "metrics.jsonl")


def assert_disk_full_stops_in_one_line(recipe: Path, run: Path, *, refused: Path) -> None:
    """``specgan train RECIPE`` exits with 2 and one line naming ``refused``, and step 2's checkpoint stays."""
    code, _, stderr = cli("train", recipe, "--device", "cpu", "--quiet")
    assert code == 2 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"error: {refused}: cannot write (No space left on device); training stopped. Last checkpoint: "
        f"{run / 'checkpoints' / 'step_00000002.pt'}")
    assert load_checkpoint(run / "checkpoints" / "step_00000002.pt")["step"] == 2


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # the writer thread stays quiet
def test_disk_full_in_tensorboards_writer_thread_is_one_line_and_keeps_the_checkpoint(data, tmp_path, monkeypatch):
    """TensorBoard writes its events on a thread, which keeps the error for the next write in the main thread (and
    would print a traceback as it dies). The error is one line naming tb/, even though closing the writer at the
    end raises it once more."""
    from tensorboard.summary.writer import record_writer

    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=2), device=CPU)
    recipe = recipe_file(tmp_path / "tiny.toml", data, run, steps=60, checkpoint_every=50, sample_every=50)
    real_write, events = record_writer.RecordWriter.write, []

    def disk_fills_up(self, event):
        events.append(event)
        if len(events) > 3:  # the file header and a couple of scalars fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, event)

    monkeypatch.setattr(record_writer.RecordWriter, "write", disk_fills_up)
    assert_disk_full_stops_in_one_line(recipe, run, refused=run / "tb")


WRITER_FAILS = r'''
import resource, signal, sys
from pathlib import Path
import torch
from specgan.errors import CheckpointError
from specgan.train.checkpoint import save_checkpoint
run = Path(sys.argv[1])
save_checkpoint(run, {"w": torch.arange(10.0)}, step=1, keep=3)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    save_checkpoint(run, {"w": torch.zeros(100000)}, step=2, keep=3)
except CheckpointError as e:
    print(e)
'''


def test_the_real_writer_failing_mid_file_is_one_line_with_the_reason(tmp_path):
    """torch's own writer hitting a file-size limit (EFBIG, like ENOSPC: the disk refuses more bytes mid-file)
    reports "unexpected pos"; the error names the reason instead, and leaves no partial file."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER_FAILS)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=PATIENCE_S)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "run" / "checkpoints"
    assert result.stdout.strip().splitlines() == [
        f"{folder / 'step_00000002.pt'}: cannot write (File too large); no checkpoint was written and the "
        f"existing ones are untouched (newest: {folder / 'step_00000001.pt'})"]
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000001.pt"]
    assert torch.equal(load_checkpoint(folder / "step_00000001.pt")["w"], torch.arange(10.0))


REAL_FULL_DISK = r'''
import json, sys
from pathlib import Path
import torch
from specgan.errors import CheckpointError
from specgan.train.checkpoint import load_checkpoint, save_checkpoint
run = Path(sys.argv[1]) / "run"
first = save_checkpoint(run, {"w": torch.arange(10.0)}, step=1, keep=3)
try:
    save_checkpoint(run, {"w": torch.zeros(200000)}, step=2, keep=3)  # 800 KB on a 256 KB disk
    error = None
except CheckpointError as e:
    error = str(e)
# The disk lives only as long as this namespace: report what is on it from here.
print(json.dumps({"error": error, "files": sorted(p.name for p in first.parent.iterdir()),
                  "intact": torch.equal(load_checkpoint(first)["w"], torch.arange(10.0))}))
'''


def test_a_real_full_disk_on_a_small_tmpfs(tmp_path):
    """The kernel's own ENOSPC, on a 256 KB tmpfs mounted in a private namespace (nothing outside this test sees
    it). Skipped where such a mount is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(REAL_FULL_DISK)
    mount = 'mount -t tmpfs -o size=256k specgan-test "$1" && shift && exec "$@"'
    for prefix in (["unshare", "--mount", "--propagation", "private"],
                   ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]):
        try:
            done = subprocess.run([*prefix, "sh", "-c", mount, "sh", str(disk), sys.executable, str(script),
                                   str(disk)], capture_output=True, text=True, timeout=PATIENCE_S,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        except (FileNotFoundError, subprocess.SubprocessError) as e:
            pytest.skip(f"unshare unavailable ({e})")
        if done.returncode == 0 or ("mount" not in done.stderr and "unshare" not in done.stderr):
            break
    else:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    folder = disk / "run" / "checkpoints"  # as the process inside the namespace saw it
    assert result["error"] == (f"{folder / 'step_00000002.pt'}: cannot write (No space left on device); no "
                               f"checkpoint was written and the existing ones are untouched (newest: "
                               f"{folder / 'step_00000001.pt'})")
    assert result["files"] == ["step_00000001.pt"] and result["intact"]  # no partial file, no temporary file


# -- a NaN -------------------------------------------------------------------------------------------------
def test_a_nan_stops_at_its_step_names_the_loss_and_keeps_the_checkpoints(data, tmp_path, monkeypatch):
    from specgan.train import generate

    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=3, checkpoint_every=3), device=CPU)
    good = run / "checkpoints" / "step_00000003.pt"
    saved = good.read_bytes()
    original = generate.GenerateTask.step

    def diverges_at_step_5(self, step):
        if step == 5:  # the weights blow up: every loss of this step is NaN
            with torch.no_grad():
                for p in self.G.parameters():
                    p.fill_(float("nan"))
        return original(self, step)

    monkeypatch.setattr(generate.GenerateTask, "step", diverges_at_step_5)
    recipe = recipe_file(tmp_path / "tiny.toml", data, run, steps=9, checkpoint_every=3)
    code, _, stderr = cli("train", recipe, "--device", "cpu", "--quiet")
    assert code == 3, stderr
    line = stderr.strip().splitlines()[-1]
    assert re.match(rf"error: step 5: loss/[\w/]+ is nan; training stopped\. Last good checkpoint: "
                    rf"{re.escape(str(good))}\. ", line), stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000003.pt"]
    assert good.read_bytes() == saved
    assert all(torch.isfinite(v).all() for v in load_checkpoint(good)["task"]["models"]["G"].values()
               if v.is_floating_point())
    assert metric_steps(run) == [1, 2, 3, 4]


# -- Ctrl-C ------------------------------------------------------------------------------------------------
def test_ctrl_c_finishes_the_step_checkpoints_it_and_continuing_is_exact(data, tmp_path, monkeypatch):
    from specgan.train import generate

    reference = tmp_path / "reference"
    train(tiny_recipe(data, reference), device=CPU)
    run = tmp_path / "run"
    original = generate.GenerateTask.step

    def ctrl_c_during_step_3(self, step):
        if step == 3:
            signal.raise_signal(signal.SIGINT)  # arrives while the step is in progress
        return original(self, step)

    monkeypatch.setattr(generate.GenerateTask, "step", ctrl_c_during_step_3)
    with pytest.raises(TrainingInterrupted) as e:
        train(tiny_recipe(data, run), device=CPU)
    checkpoint = run / "checkpoints" / "step_00000003.pt"
    assert str(e.value) == (f"interrupted: stopped after step 3, checkpoint {checkpoint}; continue with: specgan "
                            f"train {run / 'recipe.toml'}")
    assert e.value.step == 3 and e.value.checkpoint == checkpoint
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert load_checkpoint(checkpoint)["step"] == 3 and metric_steps(run) == [1, 2, 3]
    monkeypatch.setattr(generate.GenerateTask, "step", original)
    result = train(tiny_recipe(data, run), device=CPU)
    assert result.resumed_from == 3 and result.step == 6
    assert metric_steps(run) == [1, 2, 3, 4, 5, 6]
    assert_same_training_state(run / "checkpoints" / "step_00000006.pt",
                               reference / "checkpoints" / "step_00000006.pt")


def test_a_second_ctrl_c_stops_at_once_without_saving_the_half_done_step(data, tmp_path, monkeypatch):
    from specgan.train import generate

    reference = tmp_path / "reference"
    train(tiny_recipe(data, reference), device=CPU)
    run = tmp_path / "run"
    recipe = recipe_file(tmp_path / "tiny.toml", data, run)
    original = generate.GenerateTask.step

    def cut_off_in_step_5(self, step):
        out = original(self, step)  # the weights have moved on ...
        if step == 5:
            raise KeyboardInterrupt  # ... but the step's bookkeeping has not: its state must not be saved
        return out

    monkeypatch.setattr(generate.GenerateTask, "step", cut_off_in_step_5)
    code, _, stderr = cli("train", recipe, "--device", "cpu", "--quiet")
    assert code == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted during step 5; the newest checkpoint is {run / 'checkpoints' / 'step_00000004.pt'} (later "
        f"steps will be redone); continue with: specgan train {run / 'recipe.toml'}")
    assert [step_of(p) for p in list_checkpoints(run)] == [2, 4]
    monkeypatch.setattr(generate.GenerateTask, "step", original)
    assert cli("train", recipe, "--device", "cpu", "--quiet")[0] == 0
    assert metric_steps(run) == [1, 2, 3, 4, 5, 6]
    assert_same_training_state(run / "checkpoints" / "step_00000006.pt",
                               reference / "checkpoints" / "step_00000006.pt")


@pytest.mark.parametrize("sent, code, said", [(signal.SIGINT, 130, "interrupted: stopped"),
                                              (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_sigint_or_sigterm_to_the_command_saves_says_where_and_exits_128_plus_its_number(data, tmp_path, sent,
                                                                                        code, said):
    """SIGTERM is what ``timeout``, ``docker stop`` and batch schedulers send: it too keeps the step in progress."""
    run = tmp_path / "run"
    recipe = recipe_file(tmp_path / "tiny.toml", data, run, steps=5000, checkpoint_every=5000)
    proc = start_training(None, recipe)
    wait_for(lambda: (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().strip(), proc)
    proc.send_signal(sent)
    out, err = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == code, err
    last = err.strip().splitlines()[-1]
    found = re.fullmatch(said + r" after step (\d+), checkpoint (\S+); continue with: specgan train (\S+)", last)
    assert found, err
    step, checkpoint = int(found[1]), Path(found[2])
    assert checkpoint == run / "checkpoints" / f"step_{step:08d}.pt" and found[3] == str(run / "recipe.toml")
    assert list_checkpoints(run) == [checkpoint] and load_checkpoint(checkpoint)["step"] == step
    assert metric_steps(run) == list(range(1, step + 1))
    # Continuing (to a few steps further) equals a run that went there in one go.
    reference = tmp_path / "reference"
    train(tiny_recipe(data, reference, steps=step + 3, checkpoint_every=5000), device=CPU)
    result = train(tiny_recipe(data, run, steps=step + 3, checkpoint_every=5000), device=CPU)
    assert result.resumed_from == step
    last_name = f"step_{step + 3:08d}.pt"
    assert_same_training_state(run / "checkpoints" / last_name, reference / "checkpoints" / last_name)


# -- what a run folder may already hold --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["samples", "checkpoints", "tb"])
def test_a_file_where_the_run_writes_a_folder_is_a_one_line_error(data, tmp_path, name):
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_text("mine")
    code, _, stderr = cli("train", recipe_file(tmp_path / "tiny.toml", data, run), "--device", "cpu", "--quiet")
    assert code == 2, stderr
    assert stderr.strip().endswith(f"output.dir = '{run}': a file named {name} is in the way of the run's {name} "
                                   f"folder; move it, or set another output.dir")
    assert (run / name).read_text() == "mine" and not list_checkpoints(run)


def test_samples_of_steps_a_stopped_run_never_checkpointed_are_removed(data, tmp_path):
    """A run killed at step 7 before its first checkpoint leaves step_000005's samples; the new run redoes step 5
    (and writes its own samples then), so the old ones would pass for the new run's."""
    from specgan.train.config import run_recipe_text

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    for name in ["step_000005.png", "step_000005_0.wav", "step_000010_A-to-B.png", "mine.png"]:
        (run / "samples" / name).write_text("old")
    # what the killed run wrote first (without it, a folder of pictures is not a run's: refused)
    (run / "recipe.toml").write_text(run_recipe_text(tiny_recipe(data, run, steps=2, sample_every=2)))
    train(tiny_recipe(data, run, steps=2, sample_every=2), device=CPU)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["mine.png", "step_000002.png"]
    # continuing from step 2 keeps the samples of steps up to 2
    (run / "samples" / "step_000003.png").write_text("old")
    train(tiny_recipe(data, run, steps=4, sample_every=1000), device=CPU)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["mine.png", "step_000002.png", "step_000004.png"]


@pytest.mark.parametrize("steps, moved, jump", [
    # the start moves: rates now fall from step 4, and step 5 of 8 has 4/5 (step 4 of 4 had 1/3)
    (8, "now starts at step 4 instead of 2", "33% to 80%"),
    # int(0.5 * 5) = 2, the start stays (it had said 'starts at step 2 instead of 2'); step 5 of 5 has 1/4
    (5, "still starts at step 2 but now ends at step 5 instead of 4", "33% to 25%"),
])
def test_raising_train_steps_after_the_decay_began_says_how_it_moved(data, tmp_path, steps, moved, jump):
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=4, lr_decay_start=0.5), device=CPU)  # rates fall from step 2
    said: list[str] = []
    train(tiny_recipe(data, run, steps=steps, lr_decay_start=0.5), device=CPU, on_warning=said.append)
    assert said == [f"train.steps went from 4 to {steps} after the learning rates began to fall (train.lr_decay_start "
                    f"= 0.5): the decay {moved}, so the rates jump from {jump} of train.lr_g/lr_d at step 5; the "
                    f"result will differ from a run trained for {steps} steps from the start"]


def test_raising_train_steps_with_a_constant_rate_says_nothing(data, tmp_path):
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=4, lr_decay_start=1.0), device=CPU)
    said: list[str] = []
    train(tiny_recipe(data, run, steps=8, lr_decay_start=1.0), device=CPU, on_warning=said.append)
    assert not [line for line in said if "train.steps" in line]


def test_raising_train_steps_of_a_run_stopped_before_its_decay_says_nothing(data, tmp_path):
    """Stopped (Ctrl-C) at step 4 of 8 with the decay due at 6: every step so far had the full rate either way."""
    from specgan.train.loop import _decay_moved

    recipe = tiny_recipe(data, tmp_path / "run", steps=16, lr_decay_start=0.75)
    assert _decay_moved({"train": {"steps": 8}}, recipe, start=4) is None
    assert _decay_moved({"train": {"steps": 8}}, recipe, start=7) is not None  # 6 and 7 had falling rates
    assert _decay_moved({"train": {"steps": 32}}, recipe, start=20) is None  # lowered below it: nothing to train


def test_a_run_continued_by_other_specgan_code_says_so(data, tmp_path, monkeypatch):
    """Bit-for-bit continuation holds for the same code: a checkpoint keeps a fingerprint of specgan's files."""
    from specgan.train import checkpoint as checkpoint_module, loop

    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=2), device=CPU)
    saved = load_checkpoint(run / "checkpoints" / "step_00000002.pt")["specgan_code"]
    assert saved == checkpoint_module.code_fingerprint() and len(saved) == 16
    said: list[str] = []
    train(tiny_recipe(data, run, steps=4), device=CPU, on_warning=said.append)
    assert not [line for line in said if "other specgan code" in line]  # the same code: nothing to say
    monkeypatch.setattr(loop, "code_fingerprint", lambda: "0123456789abcdef")
    train(tiny_recipe(data, run, steps=6), device=CPU, on_warning=said.append)
    assert [line for line in said if "other specgan code" in line] == [
        f"{run / 'checkpoints' / 'step_00000004.pt'} was written by other specgan code (version "
        f"{checkpoint_module.__version__}, files {saved}; now {checkpoint_module.__version__}, 0123456789abcdef): the "
        f"run continues, but need not end as an uninterrupted run would, bit for bit"]
    monkeypatch.setattr(loop, "code_fingerprint", lambda: "fedcba9876543210")
    said.clear()
    train(tiny_recipe(data, run, steps=6), device=CPU, on_warning=said.append)  # nothing to train: nothing to say
    assert not [line for line in said if "other specgan code" in line]


def test_a_file_put_in_place_of_the_samples_folder_during_training_stops_it_with_the_step_saved(data, tmp_path,
                                                                                               monkeypatch):
    """Samples that cannot be written stop training in one line, after checkpointing the step (it was whole)."""
    from specgan.train import generate

    run = tmp_path / "run"
    original = generate.GenerateTask.step

    def replace_samples_folder_in_step_3(self, step):
        if step == 3:
            shutil.rmtree(run / "samples")
            (run / "samples").write_text("mine")
        return original(self, step)

    monkeypatch.setattr(generate.GenerateTask, "step", replace_samples_folder_in_step_3)
    recipe = recipe_file(tmp_path / "tiny.toml", data, run, sample_every=2, checkpoint_every=100)
    code, _, stderr = cli("train", recipe, "--device", "cpu", "--quiet")
    assert code == 2, stderr
    checkpoint = run / "checkpoints" / "step_00000004.pt"
    assert stderr.strip().splitlines()[-1].startswith(
        f"error: {run / 'samples'}: cannot write the samples of step 4 (") and stderr.strip().endswith(
        f"training stopped after checkpoint {checkpoint}; fix that and continue with: specgan train "
        f"{run / 'recipe.toml'}")
    assert list_checkpoints(run) == [checkpoint] and (run / "samples").read_text() == "mine"


def test_signals_ignored_by_whoever_started_training_stay_ignored(data, tmp_path, monkeypatch):
    """A shell's background job (or nohup) starts with SIGINT ignored: training must not start listening to it."""
    from specgan.train import generate

    original = generate.GenerateTask.step

    def ctrl_c_in_step_2(self, step):
        if step == 2:
            signal.raise_signal(signal.SIGINT)
        return original(self, step)

    monkeypatch.setattr(generate.GenerateTask, "step", ctrl_c_in_step_2)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = train(tiny_recipe(data, tmp_path / "run", steps=4), device=CPU)
        assert result.step == 4  # not stopped after step 2
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_code_fingerprint_ignores_docstrings_and_comments_but_not_code(tmp_path, monkeypatch):
    from specgan.train import checkpoint as checkpoint_module

    package = tmp_path / "specgan"
    (package / "train").mkdir(parents=True)
    fake_module_file = package / "train" / "checkpoint.py"
    monkeypatch.setattr(checkpoint_module, "__file__", str(fake_module_file))
    source = package / "mod.py"

    def fingerprint(text: str) -> str:
        source.write_text(text)
        checkpoint_module.code_fingerprint.cache_clear()
        return checkpoint_module.code_fingerprint()

    try:
        base = fingerprint('"""Module."""\ndef f(x):\n    """Doc."""\n    return x + 1\n')
        assert fingerprint('"""Other words."""\ndef f(x):  # a comment\n    """More."""\n    return x + 1\n') == base
        assert fingerprint('"""Module."""\ndef f(x):\n    """Doc."""\n    return x + 2\n') != base
    finally:
        checkpoint_module.code_fingerprint.cache_clear()


def test_a_sample_grid_the_disk_refuses_stops_training_with_the_step_saved(data, tmp_path, monkeypatch):
    """A sample write that fails inside atomic_path (no permission, a full disk) became a one-line error before
    the loop could checkpoint the step: every step since the last checkpoint was lost."""
    import tempfile

    run = tmp_path / "run"
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, prefix="", **kwargs):  # as a samples folder made read-only would refuse it
        if prefix.startswith(".step_000004.png"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkstemp(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(SpecganError) as caught:
        train(tiny_recipe(data, run, steps=8, sample_every=2, checkpoint_every=100), device=CPU)
    checkpoint = run / "checkpoints" / "step_00000004.pt"
    assert str(caught.value) == (f"{run / 'samples'}: cannot write the samples of step 4 (Permission denied); "
                                 f"training stopped after checkpoint {checkpoint}; fix that and continue with: "
                                 f"specgan train {run / 'recipe.toml'}")
    assert list_checkpoints(run) == [checkpoint]


def test_a_damaged_or_unreadable_log_or_checkpoint_folder_is_one_line_when_continuing(data, tmp_path, monkeypatch):
    """These were internal errors (UnicodeDecodeError, IsADirectoryError, PermissionError) when a run continued."""
    from specgan.train.checkpoint import CheckpointError

    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=2, sample_every=2, checkpoint_every=2), device=CPU)
    with open(run / "metrics.jsonl", "ab") as f:   # a line that is not even UTF-8: dropped like a torn one
        f.write(b'\xff\xfe{"step": 9}\n')
    train(tiny_recipe(data, run, steps=3, sample_every=2, checkpoint_every=2), device=CPU)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    with pytest.raises(SpecganError, match=f"^{re.escape(str(run / 'metrics.jsonl'))}: cannot read the run's "
                                           f"metrics \\(Is a directory\\)$"):
        train(tiny_recipe(data, run, steps=4, sample_every=2, checkpoint_every=2), device=CPU)
    (run / "metrics.jsonl").rmdir()
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self.name == "checkpoints":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(run / 'checkpoints'))}: cannot read the run's "
                                              f"checkpoints \\(Permission denied\\)$"):
        train(tiny_recipe(data, run, steps=4, sample_every=2, checkpoint_every=2), device=CPU)


def test_a_stop_request_defers_the_first_signal_raises_on_a_second_and_merges_a_repeat(monkeypatch):
    from specgan.train.interrupt import StopRequest

    stop = StopRequest().install()
    try:
        signal.raise_signal(signal.SIGTERM)  # deferred: only noted
        assert stop.requested and stop.signal_number == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    merged = StopRequest(merged_within=60.0).install()
    try:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # the same request arriving twice (torchrun passes it on)
        assert merged.requested and merged.signal_number == signal.SIGINT
    finally:
        merged.restore()


def test_continuing_keeps_the_metric_lines_up_to_its_step_and_drops_torn_ones(tmp_path):
    from specgan.train.metric_log import truncate_metrics

    truncate_metrics(tmp_path / "none.jsonl", after=3)  # no file yet: nothing to do, nothing made
    assert not (tmp_path / "none.jsonl").exists()
    log = tmp_path / "metrics.jsonl"
    log.write_bytes(b'{"step": 1, "d": 0.5}\n{"step": 2\n\n[3]\n{"no_step": 1}\n\xff{"step": 2}\n{"step": 3}\n'
                    b'{"step": 4}\n{"step": 2, "d": 1}')
    truncate_metrics(log, after=3)
    assert log.read_text() == '{"step": 1, "d": 0.5}\n{"step": 3}\n{"step": 2, "d": 1}\n'


def test_the_metric_log_writes_each_steps_rounded_scalars_and_stops_at_an_inf_writing_none_of_its_step(tmp_path,
                                                                                                         monkeypatch):
    from PIL import Image

    from specgan.train import metric_log
    from specgan.train.distributed import Distributed
    from specgan.train.metric_log import MetricLog

    clock = iter([10.0, 12.0, 13.0])
    monkeypatch.setattr(metric_log.time, "perf_counter", lambda: next(clock))

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 9}\n{"step": 2, "loss": 9}\n')
    seen = []
    log = MetricLog(tmp_path, start=1, images_per_step=8, on_record=seen.append, distributed=Distributed())
    log.flush()  # nothing pending: nothing written
    log.add(2, {"loss_d": torch.tensor(0.1234567), "loss_g": torch.tensor(2, dtype=torch.int64)})
    log.add(3, {"loss_d": torch.tensor(0.5), "loss_g": torch.tensor(1.0)})
    log.flush()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "images_per_s"} for r in records] == [
        {"step": 1, "loss": 9}, {"step": 2, "loss_d": 0.123457, "loss_g": 2.0},
        {"step": 3, "loss_d": 0.5, "loss_g": 1.0}]
    assert records[1]["images_per_s"] == records[2]["images_per_s"] == 8.0  # 2 steps of 8 images in 2 s
    assert seen == [records[2]] and log.last == records[2]
    log.add(4, {"loss_d": torch.tensor(0.5), "loss_g": torch.tensor(1.0)})
    log.add(5, {"loss_d": torch.tensor(float("inf")), "loss_g": torch.tensor(1.0)})
    with pytest.raises(TrainingError, match=r"^step 5: loss_d is inf; training stopped. Last good checkpoint: none"):
        log.flush()
    images = tmp_path / "samples"
    images.mkdir()
    for name in ("step_000004.png", "step_000004_A-to-B.png", "step_000040.png"):
        Image.new("L", (4, 4)).save(images / name)
    tags = []
    monkeypatch.setattr(log.writer, "add_image", lambda tag, pixels, step, dataformats: tags.append((tag, step)))
    log.add_sample_images(images, 4)
    assert tags == [("samples", 4), ("samples/A-to-B", 4)]
    log.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert log.pending == [] and any((tmp_path / "tb").iterdir())

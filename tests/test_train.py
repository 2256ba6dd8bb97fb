"""Recipes, checkpoints and the training loop: exact resume, NaN handling, a seeded run with a checked effect."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from specgan.data.loaders import load_data
from specgan.errors import CheckpointError, ConfigError, TrainingError
from specgan.sample import load_generator
from specgan.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from specgan.train.config import Recipe, load_recipe, recipe_mapping
from specgan.train.loop import train
from helpers import make_two_tone_folder  # noqa: F401  (also imported from here by other tests)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads_and_says_how_to_launch_it(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe) and recipe.name == path.stem
    first = path.read_text().splitlines()[0]
    assert first.startswith("#")
    assert f"specgan train recipes/{path.name}" in path.read_text()


def test_the_required_recipes_are_shipped():
    names = {p.stem for p in RECIPES}
    assert {"mnist_dcgan", "mnist_cgan", "fashion_wgangp", "fsdd_dcgan", "voice_convert", "voices_demo",
            "music_style"} <= names


@pytest.mark.parametrize("text,message", [
    ('name = "x"\n[train]\nstep = 3\n', "r.toml: unknown key 'train.step'"),
    ('name = "x"\n[train]\nsteps = "many"\n', "r.toml: train.steps = 'many': expected int, got str"),
    ('name = "x"\n[train]\nsteps = 0\n', "r.toml: train.steps = 0: must be >= 1"),
    ('name = "x"\n[train]\nloss = "magic"\n', "r.toml: train.loss = 'magic': must be one of"),
    ('name = "x"\n[data]\nkind = "cifar"\n', "r.toml: data.kind = 'cifar': must be one of"),
    ('[train]\nsteps = 3\n', "r.toml: missing key 'name'"),
    # a section's own cross-field check names its key with the section
    ('name = "x"\n[train]\nbetas = [0.5]\n', "r.toml: train.betas = [0.5]: expected two numbers in [0, 1)"),
    ('name = "x"\n[train]\nbetas = [0.5, 1.0]\n', "r.toml: train.betas = [0.5, 1.0]: expected two numbers in"),
    ('name = ".hidden"\n', "r.toml: name = '.hidden': give the run a plain name"),
    ('name = "x"\n[model]\nz_dim = 0\n', "r.toml: model.z_dim = 0: must be >= 1"),
    ('name = "x"\n[train]\nkeep_checkpoints = 0\n', "r.toml: train.keep_checkpoints = 0: must be >= 1"),
    ('name = "x"\n[data]\nimage_size = [100000, 100000]\n', "r.toml: data.image_size = [100000, 100000]: expected "
                                                              "[height, width], each even and from 6 to 1024"),
    ('name = "x"\n[data]\nimage_size = [33, 33]\n', "r.toml: data.image_size = [33, 33]: expected [height, width], "
                                                      "each even"),
    ('name = "x"\n[data]\nimage_size = [4, 4]\n', "r.toml: data.image_size = [4, 4]: expected"),
    # a key that would change nothing, yet bind the run to its value
    ('name = "x"\n[model]\nembed_dim = 16\n', "r.toml: model.embed_dim = 16: the width of a conditional dcgan's "
                                                "label embedding; this model is not conditional"),
    # a NUL character (TOML's \u0000) in a path had ended the command as an internal error
    ('name = "x"\n[data]\npath = "a\\u0000b"\n', 'r.toml: data.path = "a\\u0000b": a path cannot hold a NUL'),
    ('name = "x"\n[output]\ndir = "a\\u0000b"\n', 'r.toml: output.dir = "a\\u0000b": a path cannot hold a NUL'),
])
def test_recipe_errors_name_file_key_and_value(tmp_path, text, message):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_overrides_by_dotted_name(tmp_path):
    recipe = load_recipe(ROOT / "recipes" / "mnist_dcgan.toml",
                         overrides=["train.steps=7", "data.path=/somewhere", 'data.domains=["a","b"]',
                                    "train.loss=hinge", "model.conditional=true"])
    assert recipe.train.steps == 7 and recipe.data.path == "/somewhere" and recipe.data.domains == ("a", "b")
    assert recipe.train.loss == "hinge" and recipe.model.conditional
    assert recipe.run_dir == Path("runs/mnist_dcgan")
    with pytest.raises(ConfigError, match="unknown key 'train.stepz'"):
        load_recipe(ROOT / "recipes" / "mnist_dcgan.toml", overrides=["train.stepz=7"])


def test_an_unset_train_loss_is_the_non_saturating_bce_for_generate():
    """The README's default: train.loss = "" trains a generate task with bce (translate: lsgan, tested there)."""
    recipe = load_recipe(None, base={"name": "x"})
    assert recipe.train.loss == "" and recipe.adversarial_loss == "bce"
    assert load_recipe(None, base={"name": "x", "train": {"loss": "hinge"}}).adversarial_loss == "hinge"


# -- a tiny image-folder dataset (tests/helpers.py) ----------------------------------------------------------
def tiny_recipe(data: Path, run: Path, **train) -> Recipe:
    table = {"name": "tiny", "data": {"kind": "image-folder", "path": str(data)},
             "model": {"conditional": True, "z_dim": 8, "channels": 8},
             "train": {"steps": 6, "batch_size": 8, "sample_every": 3, "checkpoint_every": 3, "ema_decay": 0.9,
                       **train},
             "output": {"dir": str(run)}}
    return load_recipe(None, base=table)


def weights(run: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(list_checkpoints(run)[-1])
    return {f"{m}.{k}": v for m, sd in state["task"]["models"].items() for k, v in sd.items()}


@pytest.mark.parametrize("train_overrides", [{}, {"loss": "wgan", "gp_weight": 10.0, "n_critic": 2}],
                         ids=["bce", "wgan-gp"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, train_overrides):
    data = make_two_tone_folder(tmp_path / "data")
    device = torch.device("cpu")
    train(tiny_recipe(data, tmp_path / "straight", **train_overrides), device=device)
    # Interrupted after step 3 (its checkpoint), then run again into the same folder.
    train(tiny_recipe(data, tmp_path / "resumed", **{**train_overrides, "steps": 3}), device=device)
    result = train(tiny_recipe(data, tmp_path / "resumed", **train_overrides), device=device, resume=True)
    assert result.resumed_from == 3 and result.step == 6
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to differ in thread count")
def test_a_cpu_run_continues_on_the_thread_count_it_trained_on(tmp_path, monkeypatch):
    """Sums split over another number of threads round differently, so a CPU run continued on more threads than
    it trained on (the machine was busier when it started) would drift from an uninterrupted run: it continues on
    its own count, and says so."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    data = make_two_tone_folder(tmp_path / "data")
    device = torch.device("cpu")
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train(tiny_recipe(data, tmp_path / "straight"), device=device)
        train(tiny_recipe(data, tmp_path / "resumed", steps=3), device=device)
        torch.set_num_threads(2)  # the cores are free now
        notes = []
        train(tiny_recipe(data, tmp_path / "resumed"), device=device, on_warning=notes.append)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads_before)
    assert notes == ["continuing on 1 CPU thread(s), as this run trained, so that it matches an uninterrupted run "
                     "bit for bit (set OMP_NUM_THREADS to choose)"]
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


def test_a_cpu_run_with_fewer_cores_free_than_it_used_says_it_will_differ(monkeypatch):
    from specgan.train.loop import _keep_cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        note = _keep_cpu_threads(4, device=torch.device("cpu"))
        assert torch.get_num_threads() == 1 and "only 1 core(s) are free" in note and "OMP_NUM_THREADS=4" in note
        assert _keep_cpu_threads(1, device=torch.device("cpu")) is None
        assert _keep_cpu_threads(None, device=torch.device("cpu")) is None  # a checkpoint from before it was kept
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert _keep_cpu_threads(4, device=torch.device("cpu")) is None   # the user chose
    finally:
        torch.set_num_threads(threads_before)


def test_run_folder_contents_and_checkpoint_rotation(tmp_path):
    data = make_two_tone_folder(tmp_path / "data")
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=9, checkpoint_every=2, keep_checkpoints=2), device=torch.device("cpu"))
    assert [p.name for p in list_checkpoints(run)] == ["step_00000008.pt", "step_00000009.pt"]
    assert (run / "samples" / "step_000003.png").exists() and (run / "samples" / "step_000009.png").exists()
    # TensorBoard holds the curves and, under Images, the very grids in samples/
    import io

    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0}).Reload()
    assert [e.step for e in events.Scalars("loss/D")] == list(range(1, 10))
    shown = {e.step: e for e in events.Images("samples")}
    assert sorted(shown) == [3, 6, 9]
    grid = Image.open(run / "samples" / "step_000009.png")
    assert (shown[9].width, shown[9].height) == grid.size
    with Image.open(io.BytesIO(shown[9].encoded_image_string)) as decoded:
        assert np.array_equal(np.asarray(decoded.convert(grid.mode)), np.asarray(grid))
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss/D", "loss/G", "D/real", "D/fake", "D/accuracy", "images_per_s"} <= set(record)
    assert 0.0 <= record["D/accuracy"] <= 1.0
    # The saved recipe re-loads to the same recipe.
    assert load_recipe(run / "recipe.toml") == tiny_recipe(data, run, steps=9, checkpoint_every=2,
                                                           keep_checkpoints=2)
    state = load_checkpoint(list_checkpoints(run)[-1])
    assert state["data"]["class_names"] == ["dark", "light"] and state["step"] == 9


def test_continuing_with_another_recipe_is_refused(tmp_path):
    data = make_two_tone_folder(tmp_path / "data")
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=3), device=torch.device("cpu"))
    changed = load_recipe(None, base={**json.loads(json.dumps({"name": "tiny"})),
                                      "data": {"kind": "image-folder", "path": str(data)},
                                      "model": {"conditional": True, "z_dim": 8, "channels": 16},
                                      "train": {"steps": 6, "batch_size": 8}, "output": {"dir": str(run)}})
    with pytest.raises(CheckpointError, match="model.channels = 8, not 16") as e:
        train(changed, device=torch.device("cpu"))
    # every difference at once (tiny_recipe's train.ema_decay too), and how to go on with the run as it was
    assert str(e.value) == (f"{run / 'checkpoints' / 'step_00000003.pt'}: this run was trained with model.channels = "
                            f"8, not 16, and train.ema_decay = 0.9, not 0.999; use another output.dir for a new run "
                            f"(specgan train {run / 'recipe.toml'} continues this one as it was)")
    # The run's own recipe.toml edited: it no longer says how the run trained, so no command continues it as it is.
    own = run / "recipe.toml"
    own.write_text(own.read_text().replace("channels = 8", "channels = 16"))
    with pytest.raises(CheckpointError) as e:
        train(load_recipe(own), device=torch.device("cpu"))
    assert str(e.value) == (f"{run / 'checkpoints' / 'step_00000003.pt'}: this run was trained with model.channels = "
                            f"8, not 16; set those back to continue it, or use another output.dir for a new run")
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny_recipe(data, tmp_path / "runs" / "new" / "empty"), device=torch.device("cpu"), resume=True)
    assert not (tmp_path / "runs").exists()  # made for the run, which wrote nothing: removed again, parents too
    (tmp_path / "mine").mkdir()
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny_recipe(data, tmp_path / "mine"), device=torch.device("cpu"), resume=True)
    assert list((tmp_path / "mine").iterdir()) == []  # the user's folder stays, without a lock file left in it


def test_continuing_with_another_value_of_a_key_that_shapes_training_is_refused(tmp_path):
    """Only the keys of RESUMABLE_CHANGES may change when a run continues; a learning rate, the loss or its
    schedule changed in mid-run would make a run no uninterrupted one matches, and is named."""
    data = make_two_tone_folder(tmp_path / "data", n=8)
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=1), device=torch.device("cpu"))
    for key, value, said in (("lr_g", 1e-3, "train.lr_g = 0.0002, not 0.001"),
                             ("lr_d", 1e-3, "train.lr_d = 0.0002, not 0.001"),
                             ("loss", "hinge", 'train.loss = "", not "hinge"'),
                             ("lr_decay_start", 0.5, "train.lr_decay_start = 1.0, not 0.5"),
                             ("n_critic", 2, "train.n_critic = 1, not 2"),
                             ("seed", 1, "train.seed = 0, not 1")):
        with pytest.raises(CheckpointError, match=re.escape(said)):
            train(tiny_recipe(data, run, steps=2, **{key: value}), device=torch.device("cpu"))
    assert train(tiny_recipe(data, run, steps=2, sample_every=5, keep_checkpoints=2),
                 device=torch.device("cpu")).resumed_from == 1  # these may change


def test_the_last_step_always_gets_samples_and_a_checkpoint(tmp_path):
    data = make_two_tone_folder(tmp_path / "data", n=8)
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=4, sample_every=3, checkpoint_every=3), device=torch.device("cpu"))
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_000003.png", "step_000004.png"]
    assert [p.name for p in list_checkpoints(run)] == ["step_00000003.pt", "step_00000004.pt"]


def test_a_second_training_into_a_run_folder_in_use_is_refused(tmp_path):
    """While a run folder trains it is locked: another specgan train into it (here, the lock held through another
    open file, as another process would hold it) is refused at once, and the run there is left as it was."""
    from specgan.folder_lock import FolderLock

    data = make_two_tone_folder(tmp_path / "data")
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=3), device=torch.device("cpu"))
    before = {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    with FolderLock(run, error=CheckpointError, busy="held by the test"):
        with pytest.raises(CheckpointError, match=f"{run}: another specgan train is writing this run folder"):
            train(tiny_recipe(data, run, steps=6), device=torch.device("cpu"))
    assert {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    result = train(tiny_recipe(data, run, steps=6), device=torch.device("cpu"))  # free again: it continues
    assert result.resumed_from == 3 and result.step == 6


def test_a_runs_recipe_continues_that_run_from_any_folder_even_after_it_moved(tmp_path, monkeypatch):
    """``specgan train RUN/recipe.toml`` continues the run in RUN, whatever the current directory and wherever the
    run folder now is; relative data.path and output.dir of the first run are resolved where it started."""
    make_two_tone_folder(tmp_path / "start" / "data")
    monkeypatch.chdir(tmp_path / "start")
    first = load_recipe(None, base={"name": "tiny", "data": {"kind": "image-folder", "path": "data"},
                                    "model": {"z_dim": 8, "channels": 8},
                                    "train": {"steps": 2, "batch_size": 8, "checkpoint_every": 1}})
    train(first, device=torch.device("cpu"))
    saved = tmp_path / "start" / "runs" / "tiny" / "recipe.toml"
    assert load_recipe(saved).data.path == str(tmp_path / "start" / "data")
    moved = tmp_path / "elsewhere" / "tiny"
    moved.parent.mkdir()
    (tmp_path / "start" / "runs" / "tiny").rename(moved)
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    recipe = load_recipe(moved / "recipe.toml", overrides=["train.steps=3"])
    assert recipe.run_dir == moved
    result = train(recipe, device=torch.device("cpu"))
    assert (result.resumed_from, result.step) == (2, 3)
    assert [p.name for p in list_checkpoints(moved)][-1] == "step_00000003.pt"
    assert not (tmp_path / "other" / "runs").exists()
    # --set output.dir still chooses the folder; a recipe.toml without the run header is an ordinary recipe (the
    # continued run's file now names the moved folder, so its own output.dir is that folder).
    assert load_recipe(moved / "recipe.toml", overrides=[f"output.dir={tmp_path / 'x'}"]).run_dir == tmp_path / "x"
    (tmp_path / "plain").mkdir()
    header, body = (moved / "recipe.toml").read_text().split("\n", 1)
    (tmp_path / "plain" / "recipe.toml").write_text(body.replace(str(moved), str(tmp_path / "named")))
    assert load_recipe(tmp_path / "plain" / "recipe.toml").run_dir == tmp_path / "named"
    (tmp_path / "plain" / "recipe.toml").write_text(header + "\n" + body)
    assert load_recipe(tmp_path / "plain" / "recipe.toml").run_dir == tmp_path / "plain"


def test_continuing_on_data_of_another_shape_or_other_classes_is_refused(tmp_path):
    """data.path may change (the data moved), but not into data the networks were not built for."""
    data = make_two_tone_folder(tmp_path / "data")
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=3), device=torch.device("cpu"))
    before = (run / "recipe.toml").read_text()
    bigger = make_two_tone_folder(tmp_path / "bigger", size=32)
    with pytest.raises(CheckpointError, match=r"image_shape = \[1, 16, 16\], but data.path = .*bigger.* has "
                                              r"\[1, 32, 32\]"):
        train(tiny_recipe(bigger, run, steps=6), device=torch.device("cpu"))
    renamed = make_two_tone_folder(tmp_path / "renamed")
    (renamed / "light").rename(renamed / "bright")
    with pytest.raises(CheckpointError, match=r"class_names = \['dark', 'light'\], .* has \['bright', 'dark'\]"):
        train(tiny_recipe(renamed, run, steps=6), device=torch.device("cpu"))
    assert (run / "recipe.toml").read_text() == before
    shutil.copytree(data, tmp_path / "moved")
    result = train(tiny_recipe(tmp_path / "moved", run, steps=6), device=torch.device("cpu"))
    assert (result.resumed_from, result.step) == (3, 6)


def test_a_run_past_its_steps_keeps_its_recipe(tmp_path):
    data = make_two_tone_folder(tmp_path / "data")
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=3), device=torch.device("cpu"))
    before = (run / "recipe.toml").read_text()
    events = sorted((run / "tb").iterdir())
    metrics = (run / "metrics.jsonl").read_text()
    result = train(tiny_recipe(data, run, steps=2), device=torch.device("cpu"))
    assert result.resumed_from == 3 and result.step == 3 and (run / "recipe.toml").read_text() == before
    assert sorted((run / "tb").iterdir()) == events and (run / "metrics.jsonl").read_text() == metrics
    assert result.last == load_checkpoint(list_checkpoints(run)[-1])["metrics"]


def test_a_batch_larger_than_the_data_is_said_and_shrunk(tmp_path):
    data = make_two_tone_folder(tmp_path / "data", n=5)
    warnings = []
    result = train(tiny_recipe(data, tmp_path / "run", steps=1, batch_size=64), device=torch.device("cpu"),
                   on_warning=warnings.append)
    assert warnings == ["train.batch_size = 64, but there are only 10 images: each batch takes 10"]
    assert result.task.images_per_step == 10


@pytest.mark.parametrize("blocker", ["file", "file_above", "link_loop"])
def test_a_run_folder_that_cannot_be_made_is_a_config_error_naming_output_dir(tmp_path, blocker):
    data = make_two_tone_folder(tmp_path / "data")
    (tmp_path / "afile").write_text("mine")
    run = tmp_path / "afile" if blocker == "file" else tmp_path / "afile" / "run"
    if blocker == "link_loop":  # two links to each other: Path.resolve had raised a RuntimeError, an internal error
        (tmp_path / "loop").symlink_to(tmp_path / "loop2")
        (tmp_path / "loop2").symlink_to(tmp_path / "loop")
        run = tmp_path / "loop" / "run"
    with pytest.raises(ConfigError, match=f"output.dir = '{run}': "):
        train(tiny_recipe(data, run, steps=1), device=torch.device("cpu"))
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from specgan.train import generate

    data = make_two_tone_folder(tmp_path / "data")
    run = tmp_path / "run"
    original = generate.GenerateTask.step
    calls = {"n": 0}

    def step_that_diverges(self, step):
        calls["n"] += 1
        out = original(self, step)
        if calls["n"] == 5:
            out["loss/G"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(generate.GenerateTask, "step", step_that_diverges)
    with pytest.raises(TrainingError, match=r"step 5: loss/G is nan.*step_00000003\.pt"):
        train(tiny_recipe(data, run), device=torch.device("cpu"))
    assert [p.name for p in list_checkpoints(run)] == ["step_00000003.pt"]


def test_each_network_trains_at_its_own_learning_rate_on_the_decay_schedule(tmp_path):
    """train.lr_g and train.lr_d each reach their own optimiser, and both fall as train.lr_decay_start says
    (the resume test cannot see a key that is ignored: the straight and the resumed run ignore it alike)."""
    from specgan.train.generate import GenerateTask
    from specgan.train.optim import linear_decay

    data = load_data("image-folder", make_two_tone_folder(tmp_path / "data", n=8))
    recipe = tiny_recipe(tmp_path / "data", tmp_path / "run", steps=4, lr_g=2e-3,
                         lr_d=5e-4, lr_decay_start=0.5)
    task = GenerateTask(recipe, data, device=torch.device("cpu"))
    D_before = [p.detach().clone() for p in task.D.parameters()]
    for step in range(1, 5):
        task.step(step)
        factor = linear_decay(step, steps=4, start=0.5)
        assert [g["lr"] for g in task.opt_g.param_groups] == [pytest.approx(2e-3 * factor)], step
        assert [g["lr"] for g in task.opt_d.param_groups] == [pytest.approx(5e-4 * factor)], step
        if step == 1:  # Adam's first update moves each weight with a gradient by about the learning rate
            moved = torch.cat([(p.detach() - b).abs().flatten() for p, b in zip(task.D.parameters(), D_before)])
            assert moved.max() == pytest.approx(5e-4, rel=0.01)
    assert factor < 1


def test_the_gradient_penalty_is_weighted_and_trains_the_critic(tmp_path):
    """train.gp_weight scales the logged penalty and changes D's update (a penalty left out of the step, or
    computed and not back-propagated, went unnoticed: every run with it was a plain WGAN)."""
    from specgan.train.generate import GenerateTask

    data = load_data("image-folder", make_two_tone_folder(tmp_path / "data", n=8))

    def one_step(gp_weight: float):
        recipe = tiny_recipe(tmp_path / "data", tmp_path / "run", loss="wgan", gp_weight=gp_weight)
        task = GenerateTask(recipe, data, device=torch.device("cpu"))
        scalars = task.step(1)
        return scalars["loss/D/gp"], {k: v.clone() for k, v in task.D.state_dict().items()}

    gp, D = one_step(10.0)
    tiny_gp, tiny_D = one_step(1e-6)
    assert gp > 0
    torch.testing.assert_close(gp, tiny_gp * 1e7, rtol=1e-4, atol=0)  # the same interpolates, weighted
    assert any(not torch.equal(D[k], tiny_D[k]) for k in D)


def test_the_sampled_generator_is_the_warmed_up_moving_average_of_the_trained_one(tmp_path):
    """G_ema (what samples and ``specgan sample`` draw from) follows G's weights after every step as
    ``avg ← d·avg + (1 - d)·G`` with ``d = min(train.ema_decay, (1 + k) / (10 + k))`` after ``k`` updates, checked
    against that average computed by hand from G's weights after each step."""
    from specgan.train.generate import GenerateTask

    data = load_data("image-folder", make_two_tone_folder(tmp_path / "data", n=8))
    task = GenerateTask(tiny_recipe(tmp_path / "data", tmp_path / "run", ema_decay=0.5), data,
                        device=torch.device("cpu"))
    average = [p.detach().clone() for p in task.G.parameters()]
    for k in range(4):  # decays 0.1, 0.18, 0.25, then capped at 0.5
        task.step(k + 1)
        d = min(0.5, (1 + k) / (10 + k))
        average = [d * a + (1 - d) * p.detach() for a, p in zip(average, task.G.parameters())]
    assert task.sampler is task.ema.module
    for mine, theirs in zip(average, task.ema.module.parameters()):
        torch.testing.assert_close(theirs, mine, rtol=1e-5, atol=1e-6)


def test_the_moving_average_gets_batch_norm_statistics_of_its_own(tmp_path):
    """The averaged generator's batch norm statistics are its own activations' (standing statistics), not the
    live generator's copied in: checked on its first batch norm against the moments of fresh latents."""
    data = make_two_tone_folder(tmp_path / "data", n=8)
    train(tiny_recipe(data, tmp_path / "run", steps=3), device=torch.device("cpu"))
    models = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["task"]["models"]
    g = load_generator(tmp_path / "run").generator
    rng = torch.Generator().manual_seed(99)
    z, labels = torch.randn(4096, g.z_dim, generator=rng), torch.randint(0, 2, (4096,), generator=rng)
    with torch.no_grad():
        x = g.project(torch.cat([z, g.embed(labels)], dim=1)).view(len(z), *g.start)
    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3))
    scale = var.sqrt().mean()
    torch.testing.assert_close(models["G_ema"]["project_norm.running_mean"], mean, rtol=0, atol=0.1 * scale)
    torch.testing.assert_close(models["G_ema"]["project_norm.running_var"], var, rtol=0.15, atol=0)
    assert not torch.equal(models["G_ema"]["project_norm.running_mean"], models["G"]["project_norm.running_mean"])


def test_batches_continue_their_shuffle_from_a_checkpoint_across_epochs(tmp_path):
    """A resumed run draws the same batches as an uninterrupted one also after the next epoch begins: the
    shuffling generator's state is restored, not only the current order (the resume tests end within one epoch)."""
    from specgan.train.generate import Batches

    data = load_data("image-folder", make_two_tone_folder(tmp_path / "data", n=5))  # 10 images
    cpu = torch.device("cpu")
    straight = Batches(data, batch_size=4, seed=0, device=cpu)
    for _ in range(3):  # into the second epoch (two batches of 4 per epoch)
        straight.next_index()
    resumed = Batches(data, batch_size=4, seed=0, device=cpu)
    resumed.load_state_dict(straight.state_dict())
    for _ in range(12):  # six more epochs
        assert torch.equal(resumed.next_index(), straight.next_index())


def test_checkpoint_round_trip_and_atomicity(tmp_path):
    state = {"task": {"w": torch.arange(3.0)}, "recipe": {"name": "x"}}
    path = save_checkpoint(tmp_path, state, step=5, keep=2)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 5 and torch.equal(loaded["task"]["w"], torch.arange(3.0))
    assert not list(path.parent.glob(".*tmp"))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_seeded_conditional_run_learns_the_labels(tmp_path):
    """A checked effect: after a short seeded run, the class "light" comes out brighter than "dark"."""
    data = make_two_tone_folder(tmp_path / "data")
    run = tmp_path / "run"
    recipe = tiny_recipe(data, run, steps=150, batch_size=16, sample_every=1000, checkpoint_every=1000,
                         ema_decay=0.0, lr_g=0.001, lr_d=0.001)
    train(recipe, device=torch.device("cpu"))
    model = load_generator(run)
    z = torch.randn(64, model.z_dim, generator=torch.Generator().manual_seed(1))
    dark = model(z, torch.zeros(64, dtype=torch.long)).mean().item()
    light = model(z, torch.ones(64, dtype=torch.long)).mean().item()
    # Real class means are (40/127.5 - 1) = -0.69 and (215/127.5 - 1) = 0.69.
    assert light - dark > 0.8, (dark, light)



def test_a_conditional_run_saved_before_model_embed_dim_samples_and_continues_as_it_trained(tmp_path):
    """Conditional DCGANs embedded their labels in z_dim dimensions before model.embed_dim existed (now one per
    class by default); such a run's checkpoints and recipe.toml lack the key, and it still samples, and continues,
    with the embedding it trained."""
    from specgan.train.checkpoint import _torch_save

    data = make_two_tone_folder(tmp_path / "data")
    cpu = torch.device("cpu")
    train(tiny_recipe(data, tmp_path / "new", steps=3), device=cpu)
    assert load_generator(tmp_path / "new").generator.embed.weight.shape == (2, 2)  # two classes, two dimensions
    old = tmp_path / "old"
    table = recipe_mapping(tiny_recipe(data, old, steps=3))
    table["model"]["embed_dim"] = table["model"]["z_dim"]
    train(load_recipe(None, base=table), device=cpu)
    # As an older specgan wrote them: without the key.
    checkpoint = list_checkpoints(old)[-1]
    state = torch.load(checkpoint, weights_only=True)
    del state["recipe"]["model"]["embed_dim"]
    _torch_save(state, checkpoint)
    run_recipe = old / "recipe.toml"
    text = run_recipe.read_text()
    assert "embed_dim = 8\n" in text
    run_recipe.write_text(text.replace("embed_dim = 8\n", ""))

    assert load_checkpoint(checkpoint)["recipe"]["model"]["embed_dim"] == 8
    assert load_generator(old).generator.embed.weight.shape == (2, 8)
    result = train(load_recipe(run_recipe, overrides=["train.steps=6"]), device=cpu)
    assert result.resumed_from == 3 and result.step == 6
    with pytest.raises(CheckpointError, match="model.embed_dim = 8, not 0"):  # a recipe of today's default
        train(tiny_recipe(data, old, steps=9), device=cpu)


def test_the_conditional_mnist_recipe_on_a_cpu_budget_draws_varied_digits_of_each_class(mnist, mnist_classifier,
                                                                                        tmp_path):
    """A checked effect on real data: recipes/mnist_cgan.toml for 500 steps at 32 channels (a third of the CPU
    budget its header suggests) draws every digit, and the digits of a class vary about as much as real ones. With
    a label embedding as wide as z (model.embed_dim = 100, the only width before the key existed), each class had
    collapsed to one image: within-class diversity 0.03, against 1.16 now (label accuracy 0.72; seed 1: 1.17 and
    0.67; in fp32: 1.16 and 0.73; 2000 samples, 2-core Zen 4 VM)."""
    from specgan.evaluate import evaluate_run

    run = tmp_path / "run"
    recipe = load_recipe(ROOT / "recipes" / "mnist_cgan.toml", overrides=[
        f"data.path={mnist}", f"output.dir={run}", "train.steps=500", "model.channels=32", "train.sample_every=500",
        "train.checkpoint_every=500"])
    train(recipe, device=torch.device("cpu"))
    result = evaluate_run(run, n=2000, device=torch.device("cpu"), cache_dir=mnist_classifier[2])
    assert result["within_class_diversity"] > 0.6, result
    assert result["class_entropy"] > 3.0 and result["label_accuracy"] > 0.4, result


def test_an_rgb_image_folder_trains_in_colour(tmp_path):
    """data.channels = 3 keeps an image folder's colour (it had always been made grayscale): after a short seeded
    conditional run, class "red" comes out red and class "blue" blue. Kinds with one channel refuse it."""
    rng = np.random.default_rng(0)
    for name, colour in (("blue", (30, 40, 220)), ("red", (220, 40, 30))):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(48):
            pixels = np.clip(np.array(colour) + rng.normal(0, 12, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    recipe = load_recipe(None, base={**recipe_mapping(tiny_recipe(tmp_path / "data", tmp_path / "run", steps=150,
                                                                  batch_size=16, sample_every=150,
                                                                  checkpoint_every=1000, ema_decay=0.0, lr_g=0.001,
                                                                  lr_d=0.001, seed=0))},
                         overrides=["data.channels=3"])
    train(recipe, device=torch.device("cpu"))
    model = load_generator(tmp_path / "run")
    z = torch.randn(32, model.z_dim, generator=torch.Generator().manual_seed(1))
    blue, red = (model(z, torch.full((32,), label, dtype=torch.long)).mean((0, 2, 3)) for label in (0, 1))
    # Real images: red (0.73, -0.69, -0.76), blue (-0.76, -0.69, 0.73). A run this short depends on its seed: with
    # the label embedding of one dimension per class, seed 0 gave differences of 1.09-1.24 on one thread and on two,
    # seeds 2 and 3 also passed, and seeds 1 and 4 drew one class in the other's colour (about -1.05); with the
    # 8-dimensional embedding before model.embed_dim, seeds 1 and 3 passed and 0 and 2 failed.
    assert blue.shape == (3,) and red[0] - red[2] > 0.5 and blue[2] - blue[0] > 0.5, (red, blue)
    with Image.open(tmp_path / "run" / "samples" / "step_000150.png") as grid:
        assert grid.mode == "RGB"
    with pytest.raises(ConfigError, match="data.channels = 3: only image folders can be loaded in colour"):
        load_data("mnist", tmp_path, channels=3)


def test_sample_grids_labels_and_latent_walks(tmp_path):
    from specgan.sample import draw, latents_and_labels, slerp

    data = make_two_tone_folder(tmp_path / "data", n=16)
    run = tmp_path / "run"
    train(tiny_recipe(data, run, steps=2), device=torch.device("cpu"))
    # Refused before any work: --audio for an image model, and a grid named as anything but a PNG.
    with pytest.raises(ConfigError, match="^--audio: .*step_00000002.pt is an image model, not a spectrogram model$"):
        draw(run, output=tmp_path / "a.png", n=2, audio=True)
    with pytest.raises(ConfigError, match="grid.jpg: the grid is written as PNG; give a .png file name$"):
        draw(run, output=tmp_path / "grid.jpg", n=2)
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "grid.jpg").exists()
    report = draw(run, output=tmp_path / "walk.png", n=16, interpolate=True, seed=3)
    assert report.n == 16 and Image.open(tmp_path / "walk.png").size == (2 + 8 * 18, 2 + 2 * 18)
    model = load_generator(run)
    z, labels, nrow = latents_and_labels(model, n=16, label=None, seed=3, interpolate=True)
    assert nrow == 8 and labels.tolist() == [0] * 8 + [1] * 8  # one class per row
    # Each row walks on the sphere: ends are the drawn latents, norms stay between them (no dip towards 0).
    a, b = z[0], z[7]
    walk = slerp(a, b, torch.linspace(0, 1, 8))
    torch.testing.assert_close(walk, z[:8])
    assert walk.norm(dim=1).min() >= min(a.norm(), b.norm()) * 0.999
    # Fewer than a row: one walk of n steps (it was a row of 8, more than asked for); else whole rows of 8.
    for n, (rows, steps) in {5: (1, 5), 2: (1, 2), 20: (2, 8)}.items():
        z, _, nrow = latents_and_labels(model, n=n, label=None, seed=3, interpolate=True)
        assert (len(z), nrow) == (rows * steps, steps)
    with pytest.raises(ConfigError, match="--n 1: a latent walk"):  # it had drawn one image and called it a walk
        latents_and_labels(model, n=1, label=None, seed=3, interpolate=True)
    # Without --label, every class: a row each, or in turn when there are fewer rows than classes (two rows here:
    # with 10 classes, -n 64 had drawn classes 0-7 only, and -n 10 class 0 alone).
    assert latents_and_labels(model, n=16, label=None, seed=0, interpolate=False)[1].tolist() == [0] * 8 + [1] * 8
    assert latents_and_labels(model, n=5, label=None, seed=0, interpolate=False)[1].tolist() == [0, 1, 0, 1, 0]
    digits = SimpleNamespace(z_dim=8, conditional=True, class_names=tuple("0123456789"), checkpoint="x")
    assert set(latents_and_labels(digits, n=64, label=None, seed=0, interpolate=False)[1].tolist()) == set(range(10))
    assert latents_and_labels(digits, n=10, label=None, seed=0, interpolate=False)[1].tolist() == list(range(10))
    z, labels, _ = latents_and_labels(model, n=4, label="light", seed=0, interpolate=False)
    assert labels.tolist() == [1, 1, 1, 1]
    z, labels, _ = latents_and_labels(model, n=4, label="LIGHT", seed=0, interpolate=False)  # case aside
    assert labels.tolist() == [1, 1, 1, 1]
    with pytest.raises(ConfigError, match="--label dusk: not a class of this model"):
        latents_and_labels(model, n=4, label="dusk", seed=0, interpolate=False)
    for digit_like in ("²", "١"):  # a digit to str.isdigit; "²" had been an internal error (int() refused it)
        with pytest.raises(ConfigError, match=f"--label {digit_like}: not a class of this model"):
            latents_and_labels(model, n=4, label=digit_like, seed=0, interpolate=False)


def test_spectrogram_samples_are_the_ema_generators_drawn_low_at_the_bottom_and_their_audio_is_not_replaced(
        tones, tmp_path):
    """sample on a spectrogram run: the generator is G_ema (the averaged weights; G with use_ema=False), each grid
    tile has the lowest mel band at the bottom, and the --audio files, one per sample named by its class, are
    refused like the grid when they exist, even with the grid gone."""
    from specgan.errors import SpecganError
    from specgan.images import grid_array
    from specgan.sample import draw, latents_and_labels

    run = tmp_path / "run"
    train(load_recipe(None, base={"name": "spec", "data": {"kind": "spectrogram", "path": str(tones)},
                                  "model": {"conditional": True, "z_dim": 8, "channels": 8},
                                  "train": {"steps": 1, "batch_size": 4, "sample_every": 100, "checkpoint_every": 1,
                                            "ema_decay": 0.5},
                                  "output": {"dir": str(run)}}), device=torch.device("cpu"))
    saved = load_checkpoint(list_checkpoints(run)[-1])["task"]["models"]
    assert any(not torch.equal(v, saved["G"][k]) for k, v in saved["G_ema"].items())
    for use_ema, name in ((True, "G_ema"), (False, "G")):
        weights = load_generator(run, use_ema=use_ema).generator.state_dict()
        assert all(torch.equal(weights[k], v) for k, v in saved[name].items()), name
    report = draw(run, output=tmp_path / "s.png", n=3, audio=True, n_iter=2, seed=1)
    model = load_generator(run)
    z, labels, nrow = latents_and_labels(model, n=3, label=None, seed=1, interpolate=False)
    images = model(z, labels)
    plain, (h, w) = grid_array(images, nrow=nrow)[..., 0], images.shape[-2:]
    drawn = np.asarray(Image.open(tmp_path / "s.png"))
    assert drawn.shape == plain.shape == (2 + h + 2, 2 + 3 * (w + 2))
    for i in range(3):
        left = 2 + i * (w + 2)
        np.testing.assert_array_equal(drawn[2:2 + h, left:left + w], plain[2:2 + h, left:left + w][::-1])
    assert [p.name for p in report.audio] == [f"s_{i:03d}_{model.class_names[int(c)]}.wav"
                                              for i, c in enumerate(labels)]
    (tmp_path / "s.png").unlink()
    before = [p.read_bytes() for p in report.audio]
    with pytest.raises(SpecganError, match=f"^{report.audio[0]}: exists \\(and 2 more output\\(s\\)\\); use "
                                           f"--overwrite"):
        draw(run, output=tmp_path / "s.png", n=3, audio=True, n_iter=2, seed=2)
    assert [p.read_bytes() for p in report.audio] == before and not (tmp_path / "s.png").exists()


def test_a_sample_that_fails_leaves_no_folder_made_for_it(tmp_path, monkeypatch):
    """``sample -o new/sub/grid.png`` made new/sub before the work; a failed write had left them behind, empty."""
    from specgan import images
    from specgan.errors import WriteError
    from specgan.sample import draw

    data = make_two_tone_folder(tmp_path / "data", n=8)
    train(tiny_recipe(data, tmp_path / "run", steps=1), device=torch.device("cpu"))

    def full_disk(images, path, **kwargs):
        assert path.parent.is_dir()
        raise WriteError(path, "No space left on device")

    monkeypatch.setattr(images, "save_grid", full_disk)
    with pytest.raises(WriteError, match="No space left"):
        draw(tmp_path / "run", output=tmp_path / "new" / "sub" / "grid.png", n=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"]


def test_a_tilde_in_a_recipes_paths_is_the_home_folder(tmp_path, monkeypatch):
    """``~/data/mnist`` in a recipe (or a --set) means what it means to a shell."""
    monkeypatch.setenv("HOME", str(tmp_path))
    recipe = load_recipe(None, base={"name": "t", "data": {"path": "~/data/mnist"}, "output": {"dir": "~/runs/t"}})
    assert recipe.data.path == str(tmp_path / "data" / "mnist") and recipe.run_dir == tmp_path / "runs" / "t"
    recipe = load_recipe(ROOT / "recipes" / "mnist_dcgan.toml", overrides=["data.path=~/elsewhere"])
    assert recipe.data.path == str(tmp_path / "elsewhere")


def test_commands_in_messages_quote_paths_for_the_shell(tmp_path):
    """A command specgan suggests is one to copy: a path with a space in it stays one word."""
    from specgan.train.config import run_recipe_text
    from specgan.train.interrupt import interruption

    run = tmp_path / "my runs" / "tiny"
    text = run_recipe_text(tiny_recipe(tmp_path / "data", run))
    assert text.splitlines()[0].endswith(f"continue it with: specgan train '{run.absolute() / 'recipe.toml'}'")
    roundabout = tmp_path / "my runs" / ".." / "my runs" / "tiny"   # named as the folder it is
    text = run_recipe_text(tiny_recipe(tmp_path / "data", roundabout))
    assert text.splitlines()[0].endswith(f"continue it with: specgan train '{run.absolute() / 'recipe.toml'}'")
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_00000002.pt").write_bytes(b"")  # the newest checkpoint, as far as names go
    message = str(interruption(run, step=2, saved=True))
    assert message.endswith(f"continue with: specgan train '{run / 'recipe.toml'}'")


def test_a_runs_checkpoints_folder_stands_for_the_run(tmp_path):
    """sample, convert and eval read a run's newest checkpoint; given the run's checkpoints/ folder, the same."""
    from specgan.train.checkpoint import load_model_checkpoint

    run = tmp_path / "run"
    train(tiny_recipe(make_two_tone_folder(tmp_path / "data"), run, steps=3), device=torch.device("cpu"))
    for given in (run, run / "checkpoints"):
        path, state = load_model_checkpoint(given)
        assert path == run / "checkpoints" / "step_00000003.pt" and state["step"] == 3


def test_a_run_folder_that_cannot_be_written_says_what_to_do(tmp_path):
    data = make_two_tone_folder(tmp_path / "data")
    run = tmp_path / "run"
    (run / ".lock").mkdir(parents=True)  # as root, permissions refuse nothing: a folder where the lock file goes
    with pytest.raises(CheckpointError) as e:
        train(tiny_recipe(data, run, steps=2), device=torch.device("cpu"))
    assert str(e.value) == f"{run}: cannot write here (Is a directory); set another output.dir"


def test_a_conditional_model_on_one_class_is_told_so(tmp_path):
    from specgan.data.image_data import ImageData
    from specgan.train.generate import GenerateTask

    recipe = tiny_recipe(tmp_path / "data", tmp_path / "run")
    one = ImageData(images=torch.zeros(16, 1, 16, 16), labels=torch.zeros(16, dtype=torch.long),
                    class_names=("digits",))
    assert GenerateTask(recipe, one, device=torch.device("cpu")).notes == [
        "model.conditional = true, but the data has one class (digits): the condition tells the networks nothing"]
    two = ImageData(images=torch.zeros(16, 1, 16, 16), labels=torch.arange(16) % 2, class_names=("a", "b"))
    assert GenerateTask(recipe, two, device=torch.device("cpu")).notes == []


@pytest.mark.parametrize("names, label, expected", [
    (("0", "1", "2"), "2", 2), (("cat", "dog"), "1", 1), (("cat", "dog"), "Dog", 1),
    (("10", "2", "3"), "2", 1), (("10", "2", "3"), "0", None), (("10", "2", "3"), "1", None),
    (("cat", "dog"), "2", None)])
def test_a_label_is_a_class_name_or_an_index_only_where_no_class_is_a_number(names, label, expected):
    """Folders named 2, 10 and 3 sort as 10, 2, 3: --label 0 had drawn class 10, and --label 1 class 2."""
    from specgan.sample import TrainedGenerator

    model = TrainedGenerator(generator=torch.nn.Identity(), z_dim=2, class_names=names, conditional=True,
                             image_shape=(1, 8, 8), audio=None, step=1, checkpoint=Path("x.pt"),
                             device=torch.device("cpu"))
    if expected is None:
        with pytest.raises(ConfigError, match=f"^--label {label}: not a class of this model \\(classes: "
                                              f"{', '.join(names)}\\)$"):
            model.label_index(label)
    else:
        assert model.label_index(label) == expected


@pytest.mark.parametrize("table, embed_dim", [
    ({"model": {"conditional": True, "z_dim": 8}}, 8), ({"model": {"conditional": True}}, 100),
    ({"model": {"z_dim": 8}}, 0), ({"task": "translate", "model": {"conditional": True, "z_dim": 8}}, 0),
    ({"model": {"conditional": True, "z_dim": 8, "embed_dim": 3}}, 3), ({"name": "x"}, 0)])
def test_a_saved_recipe_without_model_embed_dim_gets_the_width_its_run_trained_with(table, embed_dim):
    from specgan.train.added_keys import complete_saved_recipe

    completed = complete_saved_recipe(table)
    assert completed["model"]["embed_dim"] == embed_dim
    assert "embed_dim" not in table.get("model", {}) or table["model"]["embed_dim"] == 3  # the input is left alone
    assert complete_saved_recipe({"model": "not a table"})["model"] == "not a table"

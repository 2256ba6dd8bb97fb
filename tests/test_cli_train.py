"""The GAN workflow from the command line on real MNIST: train a few steps, sample, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import one_line_error

ROOT = Path(__file__).resolve().parents[1]


def specgan(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "specgan", *map(str, args)], capture_output=True, text=True,
                            cwd=cwd)
    return result.returncode, result.stdout, result.stderr


def test_train_sample_and_resume_mnist_dcgan(mnist, tmp_path):
    data = tmp_path / "mnist"
    code, stdout, stderr = specgan("data", "fetch", "mnist", "-o", data, "--mirror", mnist, cwd=tmp_path)
    assert code == 0, stderr
    recipe = ROOT / "recipes" / "mnist_dcgan.toml"
    small = ["--set", "train.steps=4", "--set", "train.batch_size=16", "--set", "model.channels=8",
             "--set", "train.sample_every=2", "--set", "train.checkpoint_every=2", "--set", f"data.path={data}",
             "--device", "cpu", "--quiet"]
    code, stdout, stderr = specgan("train", recipe, *small, cwd=tmp_path)
    assert code == 0, stderr
    run = tmp_path / "runs" / "mnist_dcgan"
    assert (run / "samples" / "step_000004.png").exists()
    grid = Image.open(run / "samples" / "step_000004.png")
    assert grid.size == (2 + 8 * 30, 2 + 8 * 30)  # 64 samples of 28x28 with 2-pixel padding
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4

    code, stdout, stderr = specgan("sample", run, "-n", "16", "-o", tmp_path / "grid.png", "--device", "cpu",
                                   cwd=tmp_path)
    assert code == 0, stderr
    pixels = np.asarray(Image.open(tmp_path / "grid.png"))
    assert pixels.shape == (2 + 2 * 30, 2 + 8 * 30) and pixels.std() > 0
    before = (tmp_path / "grid.png").read_bytes()
    code, _, stderr = specgan("sample", run, "-n", "8", "-o", tmp_path / "grid.png", cwd=tmp_path)
    one_line_error(code, stderr, f"{tmp_path / 'grid.png'}: exists; use --overwrite to replace")
    assert (tmp_path / "grid.png").read_bytes() == before
    code, _, stderr = specgan("sample", run, "-n", "8", "-o", tmp_path / "grid.png", "--overwrite", cwd=tmp_path)
    assert code == 0 and np.asarray(Image.open(tmp_path / "grid.png")).shape == (2 + 30, 2 + 8 * 30), stderr

    # Running again with more steps continues from step 4.
    more = [s.replace("train.steps=4", "train.steps=6") for s in small]
    code, stdout, stderr = specgan("train", recipe, *more, cwd=tmp_path)
    assert code == 0, stderr
    assert "from step 4" in stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]

    code, _, stderr = specgan("sample", run, "--label", "3", "-o", tmp_path / "x.png", cwd=tmp_path)
    assert code == 2 and "not a conditional model" in stderr
    (tmp_path / "afile").write_text("in the way")               # where the grid's folder should be
    code, _, stderr = specgan("sample", run, "-o", tmp_path / "afile" / "sub" / "x.png", cwd=tmp_path)
    one_line_error(code, stderr, f"{tmp_path / 'afile' / 'sub' / 'x.png'}: cannot create its folder "
                                 f"({tmp_path / 'afile'} is a file)")

    # The run folder stands for its recipe.toml; a checkpoint given instead names the command that continues.
    code, stdout, stderr = specgan("train", run, "--device", "cpu", "--quiet", cwd=tmp_path)
    assert code == 0 and f"{run} already reached step 6; raise train.steps to go on" in stdout, stderr
    code, stdout, stderr = specgan("train", run, "--set", "train.steps=5", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert code == 0 and f"{run} already reached step 6 (train.steps = 5 is below it: nothing is undone); raise " \
                         "train.steps to go on" in stdout, stderr
    fork = tmp_path / "fork"   # another output.dir for a run's own recipe: a new run, which the user is told
    code, stdout, stderr = specgan("train", run, "--set", f"output.dir={fork}", "--set", "train.steps=1",
                                   "--device", "cpu", "--quiet", cwd=tmp_path)
    assert code == 0 and f"warning: output.dir = '{fork}': a new run from step 0; {run}'s checkpoints stay where " \
                         f"they are" in stderr and f"training mnist_dcgan in {fork}" in stderr, stderr
    checkpoint = run / "checkpoints" / "step_00000006.pt"
    code, _, stderr = specgan("train", checkpoint, cwd=tmp_path)
    assert code == 2 and stderr.strip() == f"error: {checkpoint}: a checkpoint, not a recipe; to continue its run: " \
                                           f"specgan train {run / 'recipe.toml'}", stderr
    code, _, stderr = specgan("train", tmp_path, cwd=tmp_path)
    assert code == 2 and "a folder without a recipe.toml" in stderr


def test_train_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "b"\n[model]\nchanels = 3\n')
    code, _, stderr = specgan("train", bad, cwd=tmp_path)
    assert code == 2 and "bad.toml: unknown key 'model.chanels'" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = specgan("train", ROOT / "recipes" / "mnist_dcgan.toml", "--set", "data.path=nowhere",
                              cwd=tmp_path)
    assert code == 2 and "nowhere" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = specgan("sample", tmp_path / "no_run", cwd=tmp_path)
    assert code == 2 and "no_run" in stderr


def test_eval_prints_metrics_and_appends_to_the_run(mnist, mnist_classifier, tmp_path, monkeypatch):
    """Train a conditional model for a few steps and measure it (the classifier is the session's cached one)."""
    import shutil

    data = tmp_path / "mnist"
    assert specgan("data", "fetch", "mnist", "-o", data, "--mirror", mnist, cwd=tmp_path)[0] == 0
    shutil.copy(mnist_classifier[1]["path"], data / "specgan-classifier-mnist.pt")  # reuse: same data, no retrain
    code, _, stderr = specgan("train", ROOT / "recipes" / "mnist_cgan.toml", "--set", "train.steps=2",
                              "--set", "train.batch_size=16", "--set", "model.channels=8", "--set",
                              "data.path=mnist", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert code == 0, stderr
    run = tmp_path / "runs" / "mnist_cgan"
    # The recipe named its data relative to where train ran; eval finds it from anywhere.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, stdout, stderr = specgan("eval", run, "-n", "500", "--json", "--device", "cpu", cwd=elsewhere)
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["n"] == 500 and result["step"] == 2 and result["classifier_test_accuracy"] >= 0.985
    assert result["data"] == str(data)  # which data the scores are against, in eval.jsonl too
    assert result["n_real"] == 10000  # against the held-out test split, not the 60000 images it trained on
    assert 0 <= result["label_accuracy"] <= 1 and result["fd"] > 0 and 0 <= result["class_entropy"] <= 3.33
    logged = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert logged[-1]["fd"] == result["fd"]
    code, stdout, _ = specgan("eval", run, "-n", "500", "--device", "cpu", cwd=tmp_path)
    assert code == 0 and "label accuracy" in stdout and "Fréchet distance" in stdout
    assert f"appended to {run / 'eval.jsonl'}" in stdout
    assert len((run / "eval.jsonl").read_text().splitlines()) == 2
    # Other MNIST-like data (here the test images as a training set: same names, shape and classes, as
    # Fashion-MNIST has) is refused in one line, and nothing is appended.
    other = tmp_path / "other"
    other.mkdir()
    for kind in ("images-idx3", "labels-idx1"):
        for name in ("train", "t10k"):
            shutil.copy(data / f"t10k-{kind}-ubyte.gz", other / f"{name}-{kind}-ubyte.gz")
    code, _, stderr = specgan("eval", run, "-n", "500", "--data", other, "--device", "cpu", cwd=tmp_path)
    assert code == 2 and stderr.strip() == (f"error: --data {other}: not the data this run trained on (data.path = "
                                            f"'{data}'; the train images differ); eval measures a run against its "
                                            f"own data")
    assert len((run / "eval.jsonl").read_text().splitlines()) == 2
    # A checkpoint outside any run keeps its results beside it, not in the folder above.
    loose = tmp_path / "loose" / "models"
    loose.mkdir(parents=True)
    shutil.copy(sorted((run / "checkpoints").glob("*.pt"))[-1], loose / "cgan.pt")
    code, _, stderr = specgan("eval", loose / "cgan.pt", "-n", "500", "--json", "--device", "cpu", cwd=tmp_path)
    assert code == 0 and f"appended to {loose / 'eval.jsonl'}" in stderr
    assert len((loose / "eval.jsonl").read_text().splitlines()) == 1 and not (tmp_path / "loose" / "eval.jsonl").exists()
    # A cached classifier that had to be trained again (damaged, or stale) is said, not retrained silently.
    import specgan.evaluate as evaluate_module

    model, info, _ = mnist_classifier
    monkeypatch.setattr(evaluate_module, "load_or_train_classifier", lambda *args, **kwargs: (
        model, {**info, "trained_now": True, "reason": "unreadable", "seconds": 42.0}))
    warnings = []
    evaluate_module.evaluate_run(run, n=100, device="cpu", on_warning=warnings.append)
    assert warnings == [f"{info['path']}: the cached reference classifier was unreadable (damaged, or made for other "
                        f"data or code); it was trained again (42 s) and cached anew"]


def test_spectrogram_gan_on_spoken_digits(fsdd, tmp_path):
    """prep with labels from file names → train the fsdd recipe briefly → samples come with audio."""
    import shutil

    import soundfile as sf

    src = tmp_path / "recordings"
    src.mkdir()
    for digit in ("3", "7"):
        for take in range(6):
            shutil.copy(fsdd / f"{digit}_jackson_{take}.wav", src)
    recipe = ROOT / "recipes" / "fsdd_dcgan.toml"
    code, stdout, stderr = specgan("prep", src, "-o", tmp_path / "digits", "--recipe", recipe,
                                   "--domain-pattern", r"^(\d+)_", "--quiet", cwd=tmp_path)
    assert code == 0, stderr
    code, _, stderr = specgan("train", recipe, "--set", f"data.path={tmp_path / 'digits'}", "--set", "train.steps=2",
                              "--set", "train.batch_size=4", "--set", "model.channels=8", "--set",
                              "train.sample_every=2", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert code == 0, stderr
    run = tmp_path / "runs" / "fsdd_dcgan"
    rendered = sorted((run / "samples").glob("step_000002_*.wav"))
    assert rendered and all(name.stem.split("_")[-1] in ("3", "7") for name in rendered)
    wave, rate = sf.read(rendered[0])
    assert rate == 8000 and len(wave) == 63 * 64  # 64 frames of hop 64, centred STFT
    code, stdout, stderr = specgan("sample", run, "--label", "7", "-n", "2", "--audio", "-o", tmp_path / "s.png",
                                   "--device", "cpu", cwd=tmp_path)
    assert code == 0, stderr
    assert sorted(p.name for p in tmp_path.glob("s_*.wav")) == ["s_000_7.wav", "s_001_7.wav"]
    code, stdout, stderr = specgan("sample", run, "--label", "7", "-n", "1", "--audio", "-o", tmp_path / "s.png",
                                   "--overwrite", "--iters", "2", "--device", "cpu", cwd=tmp_path)
    assert code == 0 and f"warning: {tmp_path / 's_001_7.wav'}: named as a sample of {tmp_path / 's.png'} but left " \
                         "by an earlier call, not drawn now" in stderr, stderr   # said, and kept
    assert sorted(p.name for p in tmp_path.glob("s_*.wav")) == ["s_000_7.wav", "s_001_7.wav"]
    code, _, stderr = specgan("sample", run, "--label", "9", "-o", tmp_path / "t.png", cwd=tmp_path)
    assert code == 2 and "--label 9: not a class of this model (classes: 3, 7)" in stderr


def test_train_says_when_it_compiles_the_networks(tmp_path, monkeypatch):
    """torch.compile makes the first steps take a minute: the command says so, and how to skip it."""
    import torch
    from typer.testing import CliRunner

    from helpers import make_two_tone_folder
    from specgan.cli import app

    data = make_two_tone_folder(tmp_path / "img", n=8)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(f'name = "tiny"\n[data]\nkind = "image-folder"\npath = "{data}"\n'
                      '[model]\nz_dim = 8\nchannels = 4\n'
                      '[train]\nsteps = 1\nbatch_size = 4\nsample_every = 1\ncheckpoint_every = 1\n')
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)  # the note is under test, not Inductor
    for compiled in (False, True):
        result = CliRunner().invoke(app, ["train", str(recipe), "--set", f"train.compile={str(compiled).lower()}",
                                          "--set", f"output.dir={tmp_path / str(compiled)}", "--device", "cpu",
                                          "--quiet"])
        assert result.exit_code == 0, result.output
        assert ("compiling the networks" in result.output) is compiled
        assert ("train.compile = false skips it" in result.output) is compiled


def tiny_recipe_file(tmp_path: Path) -> Path:
    """An 8-step recipe on a two-class image folder, training into ``tmp_path / "run"``."""
    from helpers import make_two_tone_folder

    data = make_two_tone_folder(tmp_path / "data")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(f'name = "tiny"\n[data]\nkind = "image-folder"\npath = "{data}"\n'
                      '[model]\nchannels = 8\nz_dim = 8\n'
                      '[train]\nsteps = 8\nbatch_size = 8\nsample_every = 4\ncheckpoint_every = 4\n'
                      f'[output]\ndir = "{tmp_path / "run"}"\n')
    return recipe


def test_a_reader_that_goes_away_does_not_stop_the_training(tmp_path):
    """``specgan train ... | head -1``: once the reader of its output has gone, train goes on quietly to the
    last step and exits 0 (rich's default would exit 1, a bug's code, at the next line printed, between
    checkpoints)."""
    recipe = tiny_recipe_file(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "specgan", "train", str(recipe), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.close()  # the reader leaves before the first line
    proc.stderr.close()
    assert proc.wait(timeout=300) == 0
    assert (tmp_path / "run" / "checkpoints" / "step_00000008.pt").exists()


def test_off_a_terminal_training_prints_plain_progress_lines(tmp_path):
    """No progress bar off a terminal (nohup, | tee): plain lines instead, at least the last step's; --quiet none."""
    recipe = tiny_recipe_file(tmp_path)
    code, _, stderr = specgan("train", recipe, "--device", "cpu", cwd=tmp_path)
    assert code == 0, stderr
    assert [line for line in stderr.splitlines() if line.startswith("step ")][-1].startswith("step 8/8  ")
    code, _, stderr = specgan("train", recipe, "--set", "train.steps=10", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert code == 0 and not [line for line in stderr.splitlines() if line.startswith("step ")], stderr


def test_a_run_folder_that_is_not_a_run_or_lies_inside_its_images_is_refused(tmp_path):
    """output.dir naming a folder of the user's own files replaced its recipe.toml and cut a line of its
    metrics.jsonl; one inside the image folder made the run's sample grids a class of the next run's data."""
    recipe = tiny_recipe_file(tmp_path)
    mine = tmp_path / "mystuff"
    mine.mkdir()
    (mine / "recipe.toml").write_text("important\n")
    (mine / "metrics.jsonl").write_text("x")
    code, _, stderr = specgan("train", recipe, "--set", f"output.dir={mine}", "--set", "train.steps=1", cwd=tmp_path)
    one_line_error(code, stderr, f"output.dir = '{mine}': holds 2 file(s) or folder(s) that are not a specgan run's "
                                 f"(e.g. metrics.jsonl), which the run could replace; set another output.dir")
    assert (mine / "recipe.toml").read_text() == "important\n" and (mine / "metrics.jsonl").read_text() == "x"
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.jsonl", "recipe.toml"]
    # A checkpoints folder without checkpoints had made it a run, whose recipe.toml and metrics.jsonl replaced the
    # user's; a samples folder of the user's own pictures is in the way too.
    (mine / "checkpoints").mkdir()
    code, _, stderr = specgan("train", recipe, "--set", f"output.dir={mine}", "--set", "train.steps=1", cwd=tmp_path)
    one_line_error(code, stderr, f"output.dir = '{mine}': holds 2 file(s) or folder(s) that are not a specgan run's")
    (mine / "checkpoints").rmdir()
    for name in ("metrics.jsonl", "recipe.toml"):
        (mine / name).unlink()
    (mine / "samples").mkdir()
    (mine / "samples" / "step_000001.png").write_bytes(b"a picture of mine")
    code, _, stderr = specgan("train", recipe, "--set", f"output.dir={mine}", "--set", "train.steps=1", cwd=tmp_path)
    one_line_error(code, stderr, f"output.dir = '{mine}': holds 1 file(s) or folder(s) that are not a specgan run's "
                                 f"(e.g. samples)")
    assert (mine / "samples" / "step_000001.png").read_bytes() == b"a picture of mine"
    inside = tmp_path / "data" / "runs" / "one"
    code, _, stderr = specgan("train", recipe, "--set", f"output.dir={inside}", "--set", "train.steps=1",
                              cwd=tmp_path)
    one_line_error(code, stderr, f"output.dir = '{inside}': inside data.path = '{tmp_path / 'data'}', whose every "
                                 f"image is training data (the run's samples would become a class); set an output.dir "
                                 f"outside it")
    assert not (tmp_path / "data" / "runs").exists()
    # A run folder is continued; an empty folder becomes one.
    empty = tmp_path / "empty"
    empty.mkdir()
    for _ in range(2):
        code, _, stderr = specgan("train", recipe, "--set", f"output.dir={empty}", "--set", "train.steps=1",
                                  cwd=tmp_path)
        assert code == 0, stderr
    code, _, stderr = specgan("train", empty, "--set", "train.steps=2", cwd=tmp_path)
    assert code == 0, stderr
    assert (empty / "checkpoints" / "step_00000002.pt").exists()
    # A recipe written into the folder it names as output.dir is that run's recipe in the making.
    planned = tmp_path / "planned"
    planned.mkdir()
    (planned / "recipe.toml").write_text(recipe.read_text().replace(str(tmp_path / "run"), str(planned)))
    code, _, stderr = specgan("train", planned / "recipe.toml", "--set", "train.steps=1", cwd=tmp_path)
    assert code == 0, stderr


def test_the_image_folder_recipe_trains_on_a_folder_of_pictures_and_samples_them(tmp_path):
    rng = np.random.default_rng(0)
    for name, size in (("cats", (40, 30)), ("dogs", (20, 24))):   # any sizes: image_size resizes them
        (tmp_path / "pics" / name).mkdir(parents=True)
        for i in range(6):
            picture = Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8))
            picture.save(tmp_path / "pics" / name / f"{i}.jpg")
    code, _, stderr = specgan("train", ROOT / "recipes" / "image_folder.toml",
                              "--set", f"data.path={tmp_path / 'pics'}", "--set", "data.image_size=[16,16]",
                              "--set", "train.steps=2", "--set", "model.channels=4", "--set", "train.batch_size=4",
                              "--set", f"output.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert code == 0, stderr
    assert "12 images (3, 16, 16), 2 classes" in stderr
    code, _, stderr = specgan("sample", tmp_path / "run", "-n", "4", "-o", tmp_path / "grid.png", cwd=tmp_path)
    assert code == 0, stderr
    assert Image.open(tmp_path / "grid.png").mode == "RGB"


def test_a_run_folder_that_lost_its_recipe_continues_from_its_checkpoints_recipe(tmp_path):
    """Every checkpoint holds the resolved recipe: a run folder without recipe.toml had been refused as not a run
    folder, with no way back but the original recipe file."""
    from specgan.train.config import is_run_recipe

    recipe = tiny_recipe_file(tmp_path)
    code, _, stderr = specgan("train", recipe, "--set", "train.steps=4", cwd=tmp_path)
    assert code == 0, stderr
    run = tmp_path / "run"
    (run / "recipe.toml").unlink()
    moved = run.rename(tmp_path / "moved")
    code, _, stderr = specgan("train", moved, "--set", "train.steps=6", cwd=tmp_path)
    assert code == 0, stderr
    assert (f"warning: {moved / 'recipe.toml'} was missing: rebuilt from {moved / 'checkpoints' / 'step_00000004.pt'}, "
            f"which holds the recipe the run trained with") in stderr
    assert is_run_recipe(moved / "recipe.toml") and f'dir = "{moved}"' in (moved / "recipe.toml").read_text()
    steps = [json.loads(line)["step"] for line in (moved / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7)) and (moved / "checkpoints" / "step_00000006.pt").exists()
    # With a damaged newest checkpoint too: it is named once, when training sets it aside (it had been twice).
    (moved / "recipe.toml").unlink()
    (moved / "checkpoints" / "step_00000006.pt").write_bytes(b"damaged")
    code, _, stderr = specgan("train", moved, "--set", "train.steps=7", cwd=tmp_path)
    assert code == 0, stderr
    assert stderr.count("step_00000006.pt: not a readable checkpoint") == 1, stderr
    assert f"rebuilt from {moved / 'checkpoints' / 'step_00000004.pt'}" in stderr
    # RUN/recipe.toml, as the continue command names it, stands for the folder when the file was lost.
    (moved / "recipe.toml").unlink()
    code, _, stderr = specgan("train", moved / "recipe.toml", "--set", "train.steps=8", cwd=tmp_path)
    assert code == 0 and f"{moved / 'recipe.toml'} was missing: rebuilt from" in stderr, stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, stderr = specgan("train", empty, cwd=tmp_path)
    one_line_error(code, stderr, f"{empty}: a folder without a recipe.toml; give a recipe file (recipes/*.toml) or a "
                                 f"run folder")

"""Bad recipes never crash or pollute: ``specgan train`` answers each with one line naming the file, the key and the
value, exit code 2, and writes no run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from specgan.audio.params import AudioParams
from specgan.cli import app
from specgan.data.prep import prep
from helpers import one_line_error

AUDIO = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=32, trim_silence=False)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    """A tiny prepped spectrogram dataset with domains "low" and "high" (audio parameters AUDIO)."""
    root = tmp_path_factory.mktemp("tones")
    t = np.arange(int(0.8 * AUDIO.sample_rate)) / AUDIO.sample_rate
    for name, base in (("low", 300), ("high", 2000)):
        (root / "wavs" / name).mkdir(parents=True)
        for i in range(2):
            sf.write(root / "wavs" / name / f"{i}.wav",
                     (0.5 * np.sin(2 * np.pi * (base + 40 * i) * t)).astype(np.float32), AUDIO.sample_rate)
    prep(root / "wavs", root / "prepped", params=AUDIO, workers=1)
    return root / "prepped"


def translate_recipe(data: Path, run: Path, *, domains: str = '["low", "high"]', extra: str = "") -> str:
    return (f'name = "bad"\ntask = "translate"\n[data]\nkind = "spectrogram"\npath = "{data}"\ndomains = {domains}\n'
            f'[model]\nname = "cyclegan"\nchannels = 2\nn_blocks = 1\n[train]\nsteps = 1\nbatch_size = 2\n'
            f'[output]\ndir = "{run}"\n{extra}')


def train_cli(recipe: Path, *args):
    result = CliRunner().invoke(app, ["train", str(recipe), "--device", "cpu", "--quiet", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


GENERATE = 'name = "bad"\n[data]\nkind = "image-folder"\npath = "{data}"\n[model]\nchannels = 8\n' \
           '[train]\nsteps = 2\nbatch_size = 4\n[output]\ndir = "{run}"\n'


@pytest.mark.parametrize("change,fragments", [
    (("steps = 2", "stepz = 2"), ["r.toml: unknown key 'train.stepz'"]),
    (("[model]", "[modle]"), ["r.toml: unknown key 'modle'"]),
    (("steps = 2", 'steps = "many"'), ["r.toml: train.steps = 'many': expected int, got str"]),
    (("steps = 2", "steps = 2.5"), ["r.toml: train.steps = 2.5: expected int, got float"]),
    (("steps = 2", "steps = -5"), ["r.toml: train.steps = -5: must be >= 1"]),
    (("steps = 2", "steps = 100000000"), ["r.toml: train.steps = 100000000: must be <= 99999999"]),
    (("batch_size = 4", "batch_size = 0"), ["r.toml: train.batch_size = 0: must be >= 1"]),
    (("channels = 8", 'name = "vae"'), ["r.toml: model.name = 'vae': must be one of"]),
    (('kind = "image-folder"', 'kind = "cifar"'), ["r.toml: data.kind = 'cifar': must be one of"]),
    (("[output]", "lr_g = -0.1\n[output]"), ["r.toml: train.lr_g = -0.1: must be > 0"]),
    (("[output]", "lr_d = 0\n[output]"), ["r.toml: train.lr_d = 0.0: must be > 0"]),  # (0.0 too: nothing learns)
    (('name = "bad"', 'name = "../escape"'), ["r.toml: name = '../escape': give the run a plain name"]),
    ((('name = "bad"\n', 'name = "bad"\ntrain = 3\n'), ("[train]\nsteps = 2\nbatch_size = 4\n", "")),
     ["r.toml: train must be a table"]),
    (("steps = 2", "steps = "), ["r.toml: not valid TOML"]),
    # nan passes every range check (comparisons with it are false), and no key means inf
    (("[output]", "ema_decay = nan\n[output]"), ["r.toml: train.ema_decay = nan: expected a finite number"]),
    (("[output]", "gp_weight = inf\n[output]"), ["r.toml: train.gp_weight = inf: expected a finite number"]),
    # finite, but enough to make the loss infinite at step 1 (and the divergence message blamed the learning rates)
    (("[output]", "gp_weight = 3.3e38\n[output]"), ["r.toml: train.gp_weight = 3.3e+38: must be <= 1000.0"]),
    (("[output]", "lr_g = nan\n[output]"), ["r.toml: train.lr_g = nan: expected a finite number"]),
    (("steps = 2", "steps = 2\nseed = 99999999999999999999"),
     ["r.toml: train.seed = 99999999999999999999: must be <= 9223372036854775807"]),
    (("[output]", 'loss = "bec"\n[output]'), ["r.toml: train.loss = 'bec': must be one of '', bce, lsgan"]),
])
def test_a_bad_key_or_value_is_one_line_naming_file_key_and_value(tmp_path, change, fragments):
    run = tmp_path / "run"
    recipe = tmp_path / "r.toml"
    text = GENERATE.format(data=tmp_path, run=run)
    for old, new in (change if isinstance(change[0], tuple) else [change]):
        assert old in text
        text = text.replace(old, new)
    recipe.write_text(text)
    code, _, stderr = train_cli(recipe)
    one_line_error(code, stderr, *fragments)
    assert not run.exists()


def test_a_recipe_that_is_not_utf8_text_is_one_line_naming_it(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_bytes(GENERATE.format(data=tmp_path, run=tmp_path / "run").encode() + b"# caf\xe9\n")
    code, _, stderr = train_cli(recipe)
    one_line_error(code, stderr, "r.toml: not valid TOML (not UTF-8 text")
    assert not (tmp_path / "run").exists()


def test_set_overrides_are_checked_like_the_file(tmp_path):
    run = tmp_path / "run"
    recipe = tmp_path / "r.toml"
    recipe.write_text(GENERATE.format(data=tmp_path, run=run))
    code, _, stderr = train_cli(recipe, "--set", "train.steps=-1")
    one_line_error(code, stderr, "r.toml with --set: train.steps = -1: must be >= 1")
    code, _, stderr = train_cli(recipe, "--set", "train.stepz=1")
    one_line_error(code, stderr, "unknown key 'train.stepz'")
    code, _, stderr = train_cli(recipe, "--set", "nonsense")
    one_line_error(code, stderr, "--set 'nonsense': expected KEY=VALUE")
    code, _, stderr = train_cli(tmp_path / "missing.toml")
    assert code == 2 and "missing.toml" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not run.exists()


@pytest.mark.parametrize("kind", ["spectrogram", "image-folder", "mnist"])
def test_a_missing_data_path_is_one_line_naming_file_key_and_value(tmp_path, kind):
    run = tmp_path / "run"
    recipe = tmp_path / "r.toml"
    text = translate_recipe(tmp_path / "nowhere", run) if kind == "spectrogram" else \
        GENERATE.format(data=tmp_path / "nowhere", run=run).replace('"image-folder"', f'"{kind}"')
    recipe.write_text(text)
    code, _, stderr = train_cli(recipe)
    one_line_error(code, stderr, f"error: {recipe}: data.path = '{tmp_path / 'nowhere'}': ")
    assert not run.exists()


def test_an_option_the_data_kind_cannot_use_is_one_line_naming_the_recipe(tmp_path):
    run = tmp_path / "run"
    recipe = tmp_path / "r.toml"
    (tmp_path / "pictures").mkdir()  # (the run folder may not lie inside the image folder)
    recipe.write_text(GENERATE.format(data=tmp_path / "pictures", run=run).replace("[model]",
                                                                                   'domains = ["a", "b"]\n[model]'))
    code, _, stderr = train_cli(recipe)
    one_line_error(code, stderr, f"error: {recipe}: data.domains = ['a', 'b']: only spectrogram datasets")
    assert not run.exists()


def test_a_domain_the_dataset_lacks_is_one_line_naming_it(tones, tmp_path):
    run = tmp_path / "run"
    recipe = tmp_path / "r.toml"
    recipe.write_text(translate_recipe(tones, run, domains='["low", "jazz"]'))
    code, _, stderr = train_cli(recipe)
    one_line_error(code, stderr, f"error: {recipe}: ", "'jazz'", "available: high, low")
    assert not run.exists()


def test_a_domain_the_dataset_lacks_names_the_key(tones, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(translate_recipe(tones, tmp_path / "run", domains='["low", "jazz"]'))
    code, _, stderr = train_cli(recipe)
    one_line_error(code, stderr, f"error: {recipe}: ", "data.domains", "'jazz'")


def test_a_dataset_prepped_with_other_audio_parameters_is_one_line(tones, tmp_path):
    run = tmp_path / "run"
    recipe = tmp_path / "r.toml"
    recipe.write_text(translate_recipe(tones, run, extra="[audio]\nsample_rate = 8000\nn_fft = 256\nhop_length = 64\n"
                                                         "n_mels = 64\nframes = 32\n"))
    code, _, stderr = train_cli(recipe)
    one_line_error(code, stderr, "r.toml", "audio.n_mels = 64", "32", str(tones))
    assert not (run / "checkpoints").exists()


def test_a_matching_audio_table_trains(tones, tmp_path):
    """The check above must not refuse a recipe whose [audio] table is the dataset's."""
    run = tmp_path / "run"
    recipe = tmp_path / "r.toml"
    recipe.write_text(translate_recipe(tones, run, extra="[audio]\nsample_rate = 8000\nn_fft = 256\nhop_length = 64\n"
                                                         "n_mels = 32\nframes = 32\ntrim_silence = false\n"))
    code, _, stderr = train_cli(recipe)
    assert code == 0, stderr
    assert (run / "checkpoints" / "step_00000001.pt").is_file()

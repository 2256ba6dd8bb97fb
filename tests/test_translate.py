"""The translate task: crops, the history pool, the learning-rate schedule, one step's effects, exact resume,
and a seeded tiny run that learns to move energy from low to high mel bands."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from specgan.data.spectrogram_data import load_spectrogram_data
from specgan.errors import CheckpointError, ConfigError
from specgan.train.checkpoint import list_checkpoints, load_checkpoint
from specgan.train.config import load_recipe, recipe_mapping
from specgan.train.loop import train
from specgan.train.optim import linear_decay
from specgan.train.translate import ImagePool, TranslateTask, crop_starts, crop_windows

from conftest import TONES_AUDIO as AUDIO  # noqa: E402  (the audio parameters of the tones fixture)
LOSS_NAMES = {"loss/G", "loss/G/adv_a", "loss/G/adv_b", "loss/G/cycle_a", "loss/G/cycle_b", "loss/G/identity_a",
              "loss/G/identity_b", "loss/D", "loss/D/a", "loss/D/b", "D/real", "D/fake", "D/accuracy", "lr/G",
              "lr/D"}


def tiny_recipe(data: Path, run: Path, *, model: str = "cyclegan", loss: dict | None = None, **train_keys):
    table = {"name": "tiny-translate", "task": "translate",
             "data": {"kind": "spectrogram", "path": str(data), "domains": ["low", "high"]},
             "model": {"name": model, "channels": 4, "n_blocks": 1},
             "train": {"steps": 4, "batch_size": 4, "crop_frames": 24, "pool_size": 6, "sample_every": 2,
                       "checkpoint_every": 2, **train_keys},
             "loss": {"identity_until": 2, **(loss or {})},
             "output": {"dir": str(run)}}
    return load_recipe(None, base=table)


# -- pieces ------------------------------------------------------------------------------------------------
def test_random_crops_are_windows_of_their_own_image():
    images = torch.arange(5 * 2 * 3 * 20, dtype=torch.float32).reshape(5, 2, 3, 20)
    drawn = crop_starts(5, frames=20, width=7, generator=torch.Generator().manual_seed(0), device=images.device)
    crops = crop_windows(images, starts=drawn, width=7)
    assert crops.shape == (5, 2, 3, 7)
    starts = []
    for image, crop in zip(images, crops):
        start = int(crop[0, 0, 0] - image[0, 0, 0])
        starts.append(start)
        assert 0 <= start <= 13 and torch.equal(crop, image[..., start:start + 7])
    assert starts == drawn.tolist() and len(set(starts)) > 1  # not one offset for the whole batch
    assert crop_starts(1000, frames=20, width=7, generator=torch.Generator(), device=images.device).max() == 13


def test_image_pool_fills_then_swaps_about_half():
    pool = ImagePool(4, generator=torch.Generator().manual_seed(0))
    first = torch.arange(3.0).view(3, 1)
    assert torch.equal(pool.query(first), first) and pool.count == 3
    second = torch.tensor([[10.0], [11.0]])
    out = pool.query(second)
    assert out[0] == 10.0 and pool.count == 4  # the fourth slot is filled and passed through
    stored = set(pool.images.flatten().tolist())
    seen, swapped = set(stored), 0
    for k in range(400):
        new = torch.tensor([[100.0 + k]])
        got = float(pool.query(new))
        assert got == 100.0 + k or got in seen  # either the new image or one that was stored before
        swapped += got != 100.0 + k
        seen |= set(pool.images.flatten().tolist())
    assert 150 < swapped < 250
    assert ImagePool(0, generator=torch.Generator()).query(first) is not None


def test_linear_decay_is_constant_then_falls_to_almost_zero():
    assert [linear_decay(s, steps=10, start=1.0) for s in (1, 10)] == [1.0, 1.0]
    factors = [linear_decay(s, steps=10, start=0.5) for s in range(1, 11)]
    assert factors[:5] == [1.0] * 5
    assert all(a > b for a, b in zip(factors[4:], factors[5:])) and 0 < factors[-1] <= 1 / 6 + 1e-12


@pytest.mark.parametrize("keys,message", [
    ({"model": {"name": "dcgan"}}, "model.name = 'dcgan' is a generate model; task = 'translate' needs one of"),
    ({"data": {"kind": "spectrogram", "path": "x", "domains": ["a"]}}, "task = 'translate' needs the two domains"),
    ({"train": {"n_critic": 2}}, "generate-only"),
    ({"train": {"gp_weight": 10.0}}, "generate-only"),
    ({"data": {"kind": "spectrogram", "path": "x", "domains": ["a", "b", "c"]}},
     "task = 'translate' needs the two domains"),
    # keys a translate run would otherwise ignore in silence
    ({"model": {"name": "cyclegan", "spectral_norm": True}}, "model.spectral_norm = true: generate-only"),
    ({"model": {"name": "cyclegan-vc2", "z_dim": 7}}, "model.z_dim = 7: generate-only"),
    ({"train": {"ema_decay": 0.5}}, "train.ema_decay = 0.5: generate-only"),
])
def test_translate_recipe_errors(keys, message):
    table = {"name": "t", "task": "translate", "model": {"name": "cyclegan"},
             "data": {"kind": "spectrogram", "path": "x", "domains": ["a", "b"]}, **keys}
    with pytest.raises(ConfigError, match=message):
        load_recipe(None, base=table)
    assert load_recipe(None, base={"name": "t", "task": "translate", "model": {"name": "cyclegan"},
                                   "data": {"kind": "spectrogram", "path": "x", "domains": ["a", "b"]}}
                       ).adversarial_loss == "lsgan"


def test_crop_wider_than_the_chunks_is_an_error(tones, tmp_path):
    recipe = tiny_recipe(tones, tmp_path / "run", crop_frames=33)
    data = load_spectrogram_data(tones, domains=("low", "high"))
    with pytest.raises(ConfigError, match="train.crop_frames = 33: the chunks of .* are only 32 frames wide"):
        TranslateTask(recipe, data, device=torch.device("cpu"))
    # narrower than the networks take: the key is named, not the image shape the networks were asked for
    with pytest.raises(ConfigError, match="^train.crop_frames = 7: cyclegan needs at least 8 frames$"):
        TranslateTask(tiny_recipe(tones, tmp_path / "run", crop_frames=7), data, device=torch.device("cpu"))



def test_a_recipe_that_spells_out_what_the_dataset_left_unset_fits_it(tones, tmp_path):
    """f_max = sample_rate / 2 and win_length = n_fft make the chunks that f_max and win_length unset make: such a
    recipe had been refused ("prepped with f_max = None; prep it again"), and a real difference still is."""
    from specgan.train.loop import _check_audio

    data = load_spectrogram_data(tones, domains=("low", "high"))
    audio = dict(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=32, trim_silence=False)
    spelled_out = load_recipe(None, base={**recipe_mapping(tiny_recipe(tones, tmp_path / "run")),
                                          "audio": {**audio, "f_max": 4000.0, "win_length": 256}})
    _check_audio(spelled_out, data)
    other = load_recipe(None, base={**recipe_mapping(tiny_recipe(tones, tmp_path / "run")),
                                    "audio": {**audio, "f_max": 3000.0}})
    with pytest.raises(ConfigError, match=f"^audio.f_max = 3000.0, but {re.escape(str(tones))} was prepped with "
                                          f"f_max = 4000.0; prep it again"):
        _check_audio(other, data)
    # The same for a continued run whose data was prepped again with the unset values spelled out.
    from specgan.recipe import to_mapping
    from specgan.train.loop import _check_same_data

    saved = {"image_shape": [1, 32, 32], "class_names": ["low", "high"], "audio": to_mapping(AUDIO)}
    found = {**saved, "audio": {**to_mapping(AUDIO), "f_max": 4000.0, "win_length": 256}}
    _check_same_data(saved, found, tmp_path / "step.pt", data_path=str(tones))
    with pytest.raises(CheckpointError, match="audio.n_mels = 32, but data.path"):
        _check_same_data(saved, {**found, "audio": {**found["audio"], "n_mels": 40}}, tmp_path / "step.pt",
                         data_path=str(tones))


def test_a_domain_without_chunks_is_refused_before_training(tones, tmp_path):
    """Every file of a speaker can be too short for a chunk: prep then keeps the domain with no chunks, and the
    first step's losses would be NaN (a mean over an empty batch), blamed on the learning rates."""
    data = load_spectrogram_data(tones, domains=("low", "high"))
    only_low = dataclasses.replace(data, images=data.images[data.labels == 0], labels=data.labels[data.labels == 0])
    with pytest.raises(ConfigError, match=r"^.*: domain high has no chunks \(prep skipped all of its files; its "
                                          r"manifest.json says why\); nothing to translate from$"):
        TranslateTask(tiny_recipe(tones, tmp_path / "run"), only_low, device=torch.device("cpu"))
    one_high = dataclasses.replace(data, images=torch.cat([only_low.images, data.images[data.labels == 1][:1]]),
                                   labels=torch.cat([only_low.labels, torch.ones(1, dtype=torch.long)]))
    TranslateTask(tiny_recipe(tones, tmp_path / "run"), one_high, device=torch.device("cpu"))  # one is enough


# -- steps ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["cyclegan", "cyclegan-vc2"])
def test_one_step_changes_every_model_and_logs_every_loss(tones, tmp_path, model):
    recipe = tiny_recipe(tones, tmp_path / "run", model=model)
    task = TranslateTask(recipe, load_spectrogram_data(tones, domains=("low", "high")), device=torch.device("cpu"))
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in task.models.items()}
    scalars = task.step(1)
    assert set(scalars) == LOSS_NAMES
    assert all(torch.isfinite(v) and v.dim() == 0 for v in scalars.values())
    for name, module in task.models.items():
        changed = [not torch.equal(a, b) for a, b in zip(before[name], module.parameters())]
        assert all(changed), f"{name}: {changed.count(False)} parameter tensors did not change"
    total = (scalars["loss/G/adv_a"] + scalars["loss/G/adv_b"] + 10.0 * (scalars["loss/G/cycle_a"]
             + scalars["loss/G/cycle_b"]) + 5.0 * (scalars["loss/G/identity_a"] + scalars["loss/G/identity_b"]))
    torch.testing.assert_close(scalars["loss/G"], total)


def test_the_loss_weights_and_learning_rates_of_the_recipe_are_used(tones, tmp_path):
    """loss.cycle_weight, loss.identity_weight, train.lr_g and train.lr_d as the recipe sets them, not their
    defaults, and one history pool per domain (the resume test cannot see a key that is ignored: both of its runs
    ignore it alike)."""
    recipe = tiny_recipe(tones, tmp_path / "run", lr_g=3e-3, lr_d=7e-4, lr_decay_start=0.5,
                         loss={"cycle_weight": 3.0, "identity_weight": 0.5})
    task = TranslateTask(recipe, load_spectrogram_data(tones, domains=("low", "high")), device=torch.device("cpu"))
    for step in range(1, 5):
        scalars = task.step(step)
        if step == 1:
            total = (scalars["loss/G/adv_a"] + scalars["loss/G/adv_b"] + 3.0 * (scalars["loss/G/cycle_a"]
                     + scalars["loss/G/cycle_b"]) + 0.5 * (scalars["loss/G/identity_a"] + scalars["loss/G/identity_b"]))
            torch.testing.assert_close(scalars["loss/G"], total)
            assert task.pool_a.count == task.pool_b.count == 4  # each history pool keeps its own domain's fakes
        factor = linear_decay(step, steps=4, start=0.5)
        assert [g["lr"] for g in task.opt_g.param_groups] == [pytest.approx(3e-3 * factor)], step
        assert [g["lr"] for g in task.opt_d.param_groups] == [pytest.approx(7e-4 * factor)], step
    assert factor < 1


def test_every_loss_term_of_a_step_against_a_slow_reference(tones, tmp_path):
    """Each logged term of step 1 is the term named in the module docstring, recomputed one call at a time from
    copies of the networks as they were before the step, on the same crops: a cycle through the wrong generator,
    or a discriminator judging the other domain, changes a number."""
    import copy

    import torch.nn.functional as F

    from specgan.losses import d_loss, g_loss

    recipe = tiny_recipe(tones, tmp_path / "run", precision="fp32", channels_last=False, pool_size=0)
    task = TranslateTask(recipe, load_spectrogram_data(tones, domains=("low", "high")), device=torch.device("cpu"))
    G_AB, G_BA, D_A, D_B = (copy.deepcopy(task.models[k]) for k in ("G_AB", "G_BA", "D_A", "D_B"))
    states = task.noise.get_state(), task.batches_a.state_dict(), task.batches_b.state_dict()
    index_a, index_b = task.batches_a.next_index(), task.batches_b.next_index()
    a, b = task._crop(task.batches_a, index_a), task._crop(task.batches_b, index_b)
    assert a.shape[-1] == b.shape[-1] == 24  # train.crop_frames of the 32-frame chunks
    task.noise.set_state(states[0])
    task.batches_a.load_state_dict(states[1])
    task.batches_b.load_state_dict(states[2])
    got = task.step(1)
    with torch.no_grad():
        fake_b, fake_a = G_AB(a), G_BA(b)
        expected = {"loss/G/adv_a": g_loss("lsgan", D_A(fake_a)), "loss/G/adv_b": g_loss("lsgan", D_B(fake_b)),
                    "loss/G/cycle_a": F.l1_loss(G_BA(fake_b), a), "loss/G/cycle_b": F.l1_loss(G_AB(fake_a), b),
                    "loss/G/identity_a": F.l1_loss(G_BA(a), a), "loss/G/identity_b": F.l1_loss(G_AB(b), b)}
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5, msg=name)
    # D's terms (after the generators' update, on the same fakes: the history pool is off) and D's accuracy.
    with torch.no_grad():
        torch.testing.assert_close(got["loss/D/a"], d_loss("lsgan", D_A(a).flatten(), D_A(fake_a).flatten()),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got["loss/D/b"], d_loss("lsgan", D_B(b).flatten(), D_B(fake_b).flatten()),
                                   rtol=1e-4, atol=1e-5)


def test_identity_loss_switches_off_after_its_step(tones, tmp_path):
    train(tiny_recipe(tones, tmp_path / "run", steps=4), device=torch.device("cpu"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(r["loss/G/identity_a"] > 0 and r["loss/G/identity_b"] > 0 for r in records[:2])
    assert all(r["loss/G/identity_a"] == 0 and r["loss/G/identity_b"] == 0 for r in records[2:])
    samples = tmp_path / "run" / "samples"
    assert (samples / "step_000004_low-to-high.png").exists() and (samples / "step_000004_high-to-low.png").exists()
    assert (samples / "step_000002_low-to-high_0.wav").exists() and (samples / "real_low_0.wav").exists()
    state = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    assert set(state["task"]["models"]) == {"G_AB", "G_BA", "D_A", "D_B"}
    assert state["data"]["class_names"] == ["low", "high"] and state["recipe"]["task"] == "translate"


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tones, tmp_path):
    cpu = torch.device("cpu")
    keys = dict(steps=4, lr_decay_start=0.5, lr_d=1e-4)
    train(tiny_recipe(tones, tmp_path / "straight", **keys), device=cpu)
    # Both learning rates are logged on their schedule (steps 3 and 4 decay: 2/3 and 1/3 of the rate).
    t = tiny_recipe(tones, tmp_path / "straight", **keys).train
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    for key, lr in (("lr/G", t.lr_g), ("lr/D", t.lr_d)):
        assert [r[key] for r in records] == pytest.approx([lr, lr, lr * 2 / 3, lr / 3], rel=0.01)  # logged rounded
    # A run that died after its step-2 checkpoint (same recipe, so the same learning-rate schedule).
    train(tiny_recipe(tones, tmp_path / "resumed", **keys), device=cpu)
    list_checkpoints(tmp_path / "resumed")[-1].unlink()
    result = train(tiny_recipe(tones, tmp_path / "resumed", **keys), device=cpu, resume=True)
    assert result.resumed_from == 2
    a = load_checkpoint(list_checkpoints(tmp_path / "straight")[-1])["task"]
    b = load_checkpoint(list_checkpoints(tmp_path / "resumed")[-1])["task"]
    for name in a["models"]:
        for key, value in a["models"][name].items():
            torch.testing.assert_close(b["models"][name][key], value, rtol=0, atol=0, msg=f"{name}.{key}")
    torch.testing.assert_close(b["pools"]["A"]["images"], a["pools"]["A"]["images"], rtol=0, atol=0)


@pytest.mark.parametrize("first, then", [("bf16", "fp32"), ("fp32", "bf16")])
def test_a_run_continues_with_another_precision(tones, tmp_path, first, then):
    """The README lets a continued run change train.precision: a run that had trained in bf16 stopped at its first
    step in fp32 with an internal error (its history pools held bf16 images, which an indexed write of fp32 ones
    refused)."""
    cpu = torch.device("cpu")
    train(tiny_recipe(tones, tmp_path / "run", steps=2, precision=first), device=cpu)
    assert load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["task"]["pools"]["A"]["images"].dtype == \
        (torch.bfloat16 if first == "bf16" else torch.float32)
    result = train(tiny_recipe(tones, tmp_path / "run", steps=4, precision=then), device=cpu)
    assert result.resumed_from == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and all(math.isfinite(r["loss/G"]) for r in records)


def test_a_seeded_tiny_run_learns_to_move_energy_up(tones, tmp_path):
    """Low tones translated to the high domain must carry most of their energy in the upper mel bands."""
    torch.set_num_threads(1)  # tiny convolutions: a second thread costs more than it gives, worse under load
    recipe = tiny_recipe(tones, tmp_path / "run", steps=120, sample_every=1000, checkpoint_every=1000,
                         lr_g=2e-3, lr_d=2e-3, loss={"identity_weight": 0.0})
    train(recipe, device=torch.device("cpu"))
    state = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    task = TranslateTask(recipe, load_spectrogram_data(tones, domains=("low", "high")), device=torch.device("cpu"))
    task.load_state_dict(state["task"])
    low = task.batches_a.images
    with torch.no_grad():
        fake_high = task.G_AB(low)

    def upper_share(x: torch.Tensor) -> float:
        power = (x + 1).clamp_min(0)  # [-1, 1] → non-negative, silence = 0
        return float(power[..., AUDIO.n_mels // 2:, :].sum() / power.sum())

    assert upper_share(low) < 0.3
    assert upper_share(fake_high) > upper_share(low) + 0.25


def test_colour_images_are_refused_by_the_translators(tones, tmp_path):
    data = load_spectrogram_data(tones, domains=("low", "high"))
    rgb = dataclasses.replace(data, images=data.images.expand(-1, 3, -1, -1))
    with pytest.raises(ConfigError, match="^data.channels = 3: cyclegan translates one-channel images"):
        TranslateTask(tiny_recipe(tones, tmp_path / "run"), rgb, device=torch.device("cpu"))

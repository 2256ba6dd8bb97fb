"""The training loop: one function for every task.

A run folder holds::

    recipe.toml        the resolved recipe (re-runnable: ``specgan train RUN/recipe.toml``)
    metrics.jsonl      one JSON line per step: losses, D(real), D(fake), D accuracy, images/s
    tb/                TensorBoard events of the same scalars
    samples/           step_XXXXXX.png grids from a fixed latent batch (and .wav renderings for spectrograms)
    checkpoints/       step_XXXXXXXX.pt, the newest ``keep_checkpoints``

Re-running into a run folder that has checkpoints continues from the newest one; the result is the same as an
uninterrupted run (batches, latents and every RNG are restored).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from specgan.audio.io import atomic_path
from specgan.data.image_data import ImageData
from specgan.data.loaders import load_data
from specgan.errors import CheckpointError, TrainingError
from specgan.images import save_grid
from specgan.recipe import dump_toml, to_mapping
from specgan.sample import render_audio
from specgan.train.checkpoint import list_checkpoints, load_checkpoint, restore_rng_state, rng_state, \
    save_checkpoint
from specgan.train.config import Recipe, recipe_mapping
from specgan.train.generate import GenerateTask, fixed_latents

#: Task name (the recipe's ``task``) → the class that builds its models and performs one step.
TASKS = {"generate": GenerateTask}

#: Recipe keys that may change when a run is continued; any other difference is an error.
RESUMABLE_CHANGES = {("train", "steps"), ("train", "sample_every"), ("train", "checkpoint_every"),
                     ("train", "keep_checkpoints"), ("output", "dir"), ("data", "path")}


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    resumed_from: int
    checkpoint: Path | None
    last: dict[str, float]


def train(recipe: Recipe, *, device: torch.device, resume: bool = False,
          on_start: Callable[[int, int, ImageData], None] | None = None,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``recipe`` in its run folder, continuing from the newest checkpoint there if any.

    ``on_start(first_step, last_step, data)`` and ``on_step(record)`` report progress (``record`` is the line
    written to metrics.jsonl). Raises TrainingError if a loss becomes NaN or infinite (nothing is written for
    that step; the last good checkpoint stays).
    """
    t = recipe.train
    run_dir = recipe.run_dir

    # -- continue or start -----------------------------------------------------------------------------
    existing = list_checkpoints(run_dir)
    if resume and not existing:
        raise CheckpointError(f"{run_dir}: nothing to resume (no checkpoints in {run_dir / 'checkpoints'})")
    state = load_checkpoint(existing[-1], map_location=device) if existing else None
    if state is not None:
        _check_same_run(state["recipe"], recipe_mapping(recipe), existing[-1])

    # -- data and models -------------------------------------------------------------------------------
    data = load_data(recipe.data.kind, Path(recipe.data.path), split=recipe.data.split, domains=recipe.data.domains,
                     image_size=tuple(recipe.data.image_size) or None)
    task = TASKS[recipe.task](recipe, data, device=device)
    start = 0
    if state is not None:
        task.load_state_dict(state["task"])
        restore_rng_state(state["rng"])
        start = int(state["step"])
    data_info = {"kind": recipe.data.kind, "source": data.source, "image_shape": list(data.image_shape),
                 "class_names": list(data.class_names), "audio": to_mapping(data.audio) if data.audio else None}
    z_fixed, labels_fixed, nrow = fixed_latents(n_classes=task.n_classes, z_dim=task.z_dim, seed=t.seed)

    # -- run folder ------------------------------------------------------------------------------------
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "recipe.toml") as tmp:
        tmp.write_text(f"# resolved recipe of this run; continue it with: specgan train {run_dir}/recipe.toml\n"
                       + dump_toml(recipe_mapping(recipe)))
    _truncate_metrics(run_dir / "metrics.jsonl", after=start)
    from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None)
    metrics = open(run_dir / "metrics.jsonl", "a")
    if on_start:
        on_start(start, t.steps, data)

    # -- the loop --------------------------------------------------------------------------------------
    checkpoint, last, tick = None, {}, time.perf_counter()
    try:
        for step in range(start + 1, t.steps + 1):
            scalars = task.step()
            values = torch.stack([v.float() for v in scalars.values()]).tolist()  # one device sync per step
            bad = [k for k, v in zip(scalars, values) if v != v or v in (float("inf"), float("-inf"))]
            if bad:
                kept = list_checkpoints(run_dir)
                raise TrainingError(f"step {step}: {bad[0]} is {values[list(scalars).index(bad[0])]}; training "
                                    f"stopped. Last good checkpoint: {kept[-1] if kept else 'none'}. Try lower "
                                    f"learning rates (train.lr_g, train.lr_d) or another train.loss")
            now = time.perf_counter()
            record = {"step": step, **{k: round(v, 6) for k, v in zip(scalars, values)},
                      "images_per_s": round(t.batch_size * t.n_critic / max(now - tick, 1e-9), 1)}
            tick = now
            metrics.write(json.dumps(record) + "\n")
            for key, value in record.items():
                if key != "step":
                    writer.add_scalar(key, value, step)
            last = record

            if step % t.sample_every == 0 or step == t.steps:
                _write_samples(task, run_dir / "samples", step, z_fixed, labels_fixed, nrow, data, seed=t.seed)
            if step % t.checkpoint_every == 0 or step == t.steps:
                metrics.flush()
                checkpoint = save_checkpoint(run_dir, {"task": task.state_dict(), "rng": rng_state(),
                                                       "recipe": recipe_mapping(recipe), "data": data_info,
                                                       "metrics": record}, step=step, keep=t.keep_checkpoints)
            if on_step:
                on_step(record)
    finally:
        metrics.close()
        writer.close()
    final_step = max(start, t.steps)
    return TrainResult(run_dir, final_step, start, checkpoint or (existing[-1] if existing else None), last)


def _check_same_run(saved: dict, wanted: dict, path: Path) -> None:
    """A run continues only with the recipe it started with (up to RESUMABLE_CHANGES)."""
    for section in sorted(set(saved) | set(wanted)):
        a, b = saved.get(section), wanted.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key) and (section, key) not in RESUMABLE_CHANGES:
                    raise CheckpointError(f"{path}: this run was trained with {section}.{key} = {a.get(key)!r}, "
                                          f"not {b.get(key)!r}; use another output.dir for a new run")
        elif a != b:
            raise CheckpointError(f"{path}: this run was trained with {section} = {a!r}, not {b!r}; use another "
                                  f"output.dir for a new run")


def _truncate_metrics(path: Path, *, after: int) -> None:
    """Drop metric lines past ``after`` (steps an interrupted run logged after its last checkpoint)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines(keepends=True)
            if line.strip() and json.loads(line)["step"] <= after]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept))


def _write_samples(task, folder: Path, step: int, z, labels, nrow: int, data: ImageData, *, seed: int) -> None:
    sampler = task.sampler
    was_training = sampler.training
    sampler.eval()
    with torch.no_grad():
        images = sampler(z.to(task.device), labels.to(task.device) if labels is not None else None).float()
    sampler.train(was_training)
    save_grid(images, folder / f"step_{step:06d}.png", nrow=nrow, low_at_bottom=data.audio is not None)
    if data.audio is not None:
        picks = list(range(0, len(images), max(1, len(images) // 4)))[:4]
        names = [f"step_{step:06d}_{i}" + (f"_{data.class_names[int(labels[i])]}" if labels is not None else "")
                 for i in picks]
        render_audio(images[picks], audio=data.audio, paths=[folder / f"{n}.wav" for n in names], seed=seed)

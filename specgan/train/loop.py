"""The training loop: one function for every task.

A run folder holds::

    recipe.toml        the resolved recipe (re-runnable: ``specgan train RUN/recipe.toml``)
    metrics.jsonl      one JSON line per step: losses, D(real), D(fake), D accuracy, images/s
    tb/                TensorBoard events of the same scalars, and the sample grids as images
    samples/           step_XXXXXX.png grids from a fixed latent batch (and .wav renderings for spectrograms)
    checkpoints/       step_XXXXXXXX.pt, the newest ``keep_checkpoints`` (and step_XXXXXXXX.pt.damaged, set aside)

Re-running into a run folder that has checkpoints continues from the newest intact one; the result is the same as
an uninterrupted run (batches, latents and every RNG are restored). Under ``torchrun`` the same loop runs in every
process (see :mod:`specgan.train.distributed`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from specgan import __version__
from specgan.atomic import atomic_path
from specgan.audio.params import IMAGE_KEYS, AudioParams, image_values
from specgan.data.image_data import ImageData, data_fingerprint
from specgan.data.loaders import load_data
from specgan.errors import CheckpointError, ConfigError, SpecganError, WriteError
from specgan.folder_lock import FolderLock
from specgan.folders import outermost_missing
from specgan.recipe import as_written, to_mapping, toml_value
from specgan.train.checkpoint import (RUN_FIELDS, code_fingerprint, list_checkpoints, load_checkpoint,
                                      load_latest_checkpoint, restore_rng_state, rng_state, save_checkpoint)
from specgan.train import distributed as ranks
from specgan.train.acceleration import Acceleration
from specgan.train.config import (RUN_RECIPE, Recipe, continue_command, is_run_recipe, load_recipe,
                                  recipe_mapping, run_recipe_text, saved_recipe_mapping)
from specgan.train.distributed import Distributed
from specgan.train.interrupt import REPEAT_WINDOW_S, StopRequest, interruption
from specgan.train.optim import linear_decay
from specgan.train.metric_log import MetricLog, writer_thread_errors_left_to_the_log
from specgan.train.generate import GenerateTask
from specgan.train.translate import TranslateTask

#: Steps whose scalars are fetched from the device together (see the loop).
LOG_EVERY = 25

#: Task name (the recipe's ``task``) → the class that builds its models and performs one step. A task has
#: ``step(step) -> {name: scalar tensor}``, ``images_per_step``, ``notes`` (lines for the user), ``accel`` (its
#: Acceleration), ``refresh_sampler(seed=)``, ``write_samples(folder, step)``, ``state_dict()`` and
#: ``load_state_dict()``.
TASKS = {"generate": GenerateTask, "translate": TranslateTask}

#: Recipe keys that may change when a run is continued; any other difference is an error.
RESUMABLE_CHANGES = {("train", "steps"), ("train", "sample_every"), ("train", "checkpoint_every"),
                     ("train", "keep_checkpoints"), ("output", "dir"), ("data", "path"),
                     # how the arithmetic runs, not what it computes
                     ("train", "precision"), ("train", "channels_last"), ("train", "compile"),
                     ("train", "cudnn_benchmark"), ("train", "cuda_graphs")}


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    resumed_from: int
    checkpoint: Path | None
    last: dict[str, float]
    #: This process's rank under torchrun (0 in a single process); only rank 0 wrote the run folder.
    rank: int = 0
    #: The trained task (its models, optimisers and batch state), for callers that go on using it.
    task: Any = None


def train(recipe: Recipe, *, device: torch.device, resume: bool = False,
          on_start: Callable[[int, int, ImageData, Acceleration], None] | None = None,
          on_step: Callable[[dict[str, Any]], None] | None = None,
          on_warning: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``recipe`` in its run folder, continuing from the newest intact checkpoint there if any (damaged
    newer ones are set aside and reported through ``on_warning``, one line each).

    ``on_start(first_step, last_step, data, accel)`` (``accel``: how the steps run, e.g. whether they are compiled)
    and ``on_step(record)`` report progress (``record`` is the newest line written to metrics.jsonl; lines are
    written LOG_EVERY steps at a time). Raises TrainingError if a loss becomes NaN or infinite (nothing is written
    for that step; the last good checkpoint stays). Ctrl-C or SIGTERM finishes the step in progress, checkpoints it
    and raises :class:`~specgan.errors.TrainingInterrupted` (a second one stops at once, losing that step).

    Started by ``torchrun``, each process trains its shard of every batch with DistributedDataParallel on its own
    device (see :mod:`specgan.train.distributed`); only rank 0 reports progress and writes the run folder. What can
    fail on one rank alone fails on every rank (:meth:`~specgan.train.distributed.Distributed.together`), and a
    collective that fails because a rank is gone raises :class:`~specgan.errors.LostRankError`.
    """
    distributed, device = ranks.start(device)
    failed = True
    try:
        with contextlib.ExitStack() as held:
            # Rank 0 makes and locks the run folder; every rank learns if that failed (and stops with it).
            distributed.together(lambda: held.enter_context(_run_folder_lock(recipe))
                                 if distributed.is_main else None, device=device)
            result = _train(recipe, device=device, distributed=distributed, resume=resume, on_start=on_start,
                            on_step=on_step, on_warning=on_warning)
        failed = False
        return result
    except Exception as e:
        lost = ranks.lost_rank(e, distributed=distributed, run_dir=recipe.run_dir)
        if lost is None:
            raise
        raise lost from None
    finally:
        ranks.stop(distributed, failed=failed)


def _run_folder_lock(recipe: Recipe) -> FolderLock:
    """The run folder, made if need be and locked for this training (rank 0 writes it): a second ``specgan
    train`` into the same folder is refused at once instead of interleaving its checkpoints with this one's. A
    folder made here (and any parents made for it) is removed again if the run fails before writing anything.
    A folder that holds other things than a run, or one inside the image folder it trains on, is refused."""
    run_dir = recipe.run_dir
    made = outermost_missing(run_dir)
    _refuse_a_folder_not_a_run(run_dir)
    _refuse_a_run_inside_its_images(recipe)
    _make_run_dir(run_dir)
    return FolderLock(run_dir, error=CheckpointError, made=made, elsewhere="set another output.dir",
                      busy="another specgan train is writing this run folder; wait for it to finish, or set "
                           "another output.dir")


def _train(recipe: Recipe, *, device: torch.device, distributed: Distributed, resume: bool,
           on_start: Callable[[int, int, ImageData, Acceleration], None] | None,
           on_step: Callable[[dict[str, Any]], None] | None,
           on_warning: Callable[[str], None] | None = None) -> TrainResult:
    t = recipe.train
    run_dir = recipe.run_dir
    main = distributed.is_main
    distributed.check_batch(t.batch_size)

    # -- continue or start, data and models -----------------------------------------------------------------
    # Every rank reads them (and could fail alone: another machine's data.path), so the ranks agree on failure.
    resumed_from, state, data, data_info = distributed.together(
        lambda: _load(recipe, device=device, distributed=distributed, resume=resume, on_warning=on_warning),
        device=device)
    task = TASKS[recipe.task](recipe, data, device=device, distributed=distributed)
    if main and on_warning:
        for note in [*task.notes, ranks.crowded_cpu_note(device)]:
            if note:
                on_warning(note)
    start = 0
    if state is not None:
        task.load_state_dict(state["task"])
        restore_rng_state(state["rng"])
        start = int(state["step"])
        training = start < t.steps  # (else nothing will be trained, and nothing differs)
        notes = [_other_code(state, resumed_from) if training else None,
                 _decay_moved(state["recipe"], recipe, start=start),
                 _other_world_size(state.get("world_size"), distributed.world_size,
                                   own_batch_statistics=_batch_statistics_per_process(
                                       task, sides=((state.get("device_type"), state.get("world_size") or 1),
                                                    (device.type, distributed.world_size))))
                 if training else None,
                 None if distributed.active or not training else
                 _keep_cpu_threads(state.get("cpu_threads"), device=device)]
        for note in notes:
            if note and main and on_warning:
                on_warning(note)

    # -- run folder (rank 0) ---------------------------------------------------------------------------
    if start >= t.steps:  # nothing to train: not even an empty TensorBoard event file is written
        distributed.together(lambda: _write_run_recipe(recipe) if main and not (run_dir / RUN_RECIPE).exists()
                             else None, device=device)  # a run already past train.steps keeps its recipe.toml
        return TrainResult(run_dir, start, start, resumed_from, state.get("metrics", {}), rank=distributed.rank,
                           task=task)

    def open_run_folder() -> MetricLog:
        if main:
            _write_run_recipe(recipe)
            _remove_samples_after(run_dir / "samples", step=start)
        # Step scalars stay on the device and are fetched LOG_EVERY steps at a time (and always before a sample or
        # a checkpoint), so the CPU does not wait for the GPU after every step; every step is still logged.
        return MetricLog(run_dir, start=start, images_per_step=task.images_per_step, on_record=on_step,
                         distributed=distributed)

    log = distributed.together(open_run_folder, device=device)
    if main and on_start:
        on_start(start, t.steps, data, task.accel)

    def write_samples_and_checkpoint(step: int, *, sampling: bool, checkpointing: bool) -> Path | None:
        """Rank 0's writes at ``step``: sample grids and a checkpoint (returned), as due."""
        if not main:
            return None
        task.refresh_sampler(seed=t.seed + step)
        unwritable = None
        if sampling:
            try:
                task.write_samples(run_dir / "samples", step)
                log.add_sample_images(run_dir / "samples", step)
            except (OSError, WriteError) as e:  # e.g. a file put where the samples folder was, or a full disk
                unwritable = e
        # Checkpointed after the samples (the state an uninterrupted run goes on from), and also when they failed:
        # then training stops, but with this step saved (the whole step: stopping at a checkpoint loses nothing).
        if checkpointing or unwritable is not None:
            saved = save_checkpoint(run_dir, {"task": task.state_dict(), "rng": rng_state(),
                                              "recipe": saved_recipe_mapping(recipe), "data": data_info,
                                              "metrics": log.last, "cpu_threads": cpu_threads,
                                              "world_size": distributed.world_size, "device_type": device.type},
                                    step=step, keep=t.keep_checkpoints)
        if unwritable is not None:
            reason = unwritable.reason if isinstance(unwritable, WriteError) else unwritable.strerror or unwritable
            raise SpecganError(f"{run_dir / 'samples'}: cannot write the samples of step {step} "
                               f"({reason}); training stopped after checkpoint {saved}; "
                               f"fix that and continue with: {continue_command(run_dir)}")
        return saved if checkpointing else None

    # -- the loop --------------------------------------------------------------------------------------
    checkpoint = None
    # Kept with each checkpoint: a CPU run continued on another thread count rounds its sums differently.
    # Only for a run in one process: torchrun gives each rank its own share, which says nothing about one process.
    cpu_threads = torch.get_num_threads() if device.type == "cpu" and not distributed.active else None
    # Ctrl-C only asks to stop; the step it lands in completes and is checkpointed. Ranks agree on the step to stop
    # after (see the loop): on CUDA at the steps where they exchange scalars anyway (every LOG_EVERY steps at
    # most), so stopping costs no extra synchronisation; on a CPU at every step. (torchrun passes Ctrl-C on to
    # every rank and kills them 30 s later.)
    # Under torchrun a Ctrl-C in a terminal reaches each rank twice (directly and through torchrun): one request.
    stop = StopRequest(merged_within=REPEAT_WINDOW_S if distributed.active else 0.0).install()
    step, stopping, stop_signal = start, False, 0
    # cuDNN's algorithm search (train.cudnn_benchmark) is process-wide: set while the loop runs, restored after.
    failing = True
    with task.accel.backend_settings(), writer_thread_errors_left_to_the_log():
        try:
            for step in range(start + 1, t.steps + 1):
                log.add(step, task.step(step))
                sampling = step % t.sample_every == 0 or step == t.steps
                checkpointing = step % t.checkpoint_every == 0 or step == t.steps
                due = sampling or checkpointing or len(log.pending) >= LOG_EVERY
                # Whether to stop, at every step where asking costs no wait for queued device work: in one process,
                # on a CPU (where 25 steps can outlast torchrun's 30 s), and where scalars are fetched anyway.
                if due or not distributed.active or device.type == "cpu":
                    # the signal too, so that every rank names the one that stopped them (SIGTERM over Ctrl-C)
                    stop_signal = distributed.largest(stop.signal_number if stop.requested else 0, device=device)
                    stopping = stop_signal > 0
                checkpointing = checkpointing or stopping
                if due or stopping:  # raises TrainingError on a NaN/inf loss, before anything is saved
                    distributed.together(log.flush, device=device)
                if sampling or checkpointing:  # every rank learns whether rank 0's writes failed
                    written = distributed.together(lambda: write_samples_and_checkpoint(
                        step, sampling=sampling, checkpointing=checkpointing), device=device)
                    checkpoint = written or checkpoint
                if stopping:
                    break
            failing = False
        except KeyboardInterrupt:  # a second Ctrl-C: the step in progress is lost; atomic writes leave no part
            raise interruption(run_dir, step=step, saved=False, signal_number=stop.signal_number,
                               distributed=distributed.active, launcher_gone=ranks.launcher_gone()) from None
        finally:
            # Under torchrun a rank that failed (most often because another rank is gone) keeps ignoring the SIGTERM
            # torchrun sends the rest, so that it can say why it stops rather than vanish without a word.
            if not (failing and distributed.active):
                stop.restore()
            log.close(failing=failing)  # with an error on its way out, that error is the one reported
    if stopping and step < t.steps:
        distributed.barrier()  # rank 0's checkpoint is on disk before any rank names it
        raise interruption(run_dir, step=step, saved=True, signal_number=stop_signal,
                           distributed=distributed.active, launcher_gone=ranks.launcher_gone())
    final_step = max(start, t.steps)
    return TrainResult(run_dir, final_step, start, checkpoint or resumed_from, log.last,
                       rank=distributed.rank, task=task)


def _load(recipe: Recipe, *, device: torch.device, distributed: Distributed, resume: bool,
          on_warning: Callable[[str], None] | None) -> tuple[Path | None, dict | None, ImageData, dict]:
    """The newest intact checkpoint of the run (damaged newer ones are passed over with a warning; rank 0 sets them
    aside), checked against the recipe, and the data with its description for checkpoints. Returns
    ``(checkpoint, state, data, data_info)``, with ``checkpoint`` and ``state`` None for a new run. (No
    collectives: the ranks agree on its failure afterwards.)"""
    run_dir, main = recipe.run_dir, distributed.is_main
    latest = load_latest_checkpoint(run_dir, map_location=device, on_warning=on_warning if main else None,
                                    tidy=main)
    if resume and latest is None:
        raise CheckpointError(f"{run_dir}: nothing to resume (no checkpoints in {run_dir / 'checkpoints'}); "
                              f"without --resume, train starts a new run there")
    resumed_from, state = latest if latest is not None else (None, None)
    if state is not None:
        _check_same_run(state["recipe"], recipe_mapping(recipe), resumed_from)
    data = load_data(recipe.data.kind, Path(recipe.data.path), split=recipe.data.split, domains=recipe.data.domains,
                     image_size=tuple(recipe.data.image_size) or None, channels=recipe.data.channels)
    _check_audio(recipe, data)
    data_info = {"kind": recipe.data.kind, "source": data.source, "image_shape": list(data.image_shape),
                 "class_names": list(data.class_names), "audio": to_mapping(data.audio) if data.audio else None,
                 # which images, for eval on another folder (a resumed run may train on more or other data)
                 "fingerprint": data_fingerprint(data)}
    if state is not None:
        _check_same_data(state["data"], data_info, resumed_from, data_path=recipe.data.path)
    return resumed_from, state, data, data_info


#: What specgan writes in a run folder besides recipe.toml and metrics.jsonl: folders, which a file must not block.
RUN_SUBFOLDERS = ("checkpoints", "samples", "tb")


def _write_run_recipe(recipe: Recipe) -> None:
    """The run folder's ``recipe.toml`` (re-runnable), after checking that no file blocks a folder the run
    writes into."""
    run_dir = recipe.run_dir
    _make_run_dir(run_dir)
    for name in RUN_SUBFOLDERS:
        if (run_dir / name).exists() and not (run_dir / name).is_dir():
            raise ConfigError(f"output.dir = '{run_dir}': a file named {name} is in the way of the run's {name} "
                              f"folder; move it, or set another output.dir")
    with atomic_path(run_dir / RUN_RECIPE) as tmp:
        tmp.write_text(run_recipe_text(recipe))


def _remove_samples_after(folder: Path, *, step: int) -> None:
    """Remove the samples of steps after ``step`` (``step_XXXXXX*``, written by a run stopped before it
    checkpointed them): the continued run writes its own, as metrics.jsonl and TensorBoard drop their lines."""
    if not folder.is_dir():
        return
    for path in folder.glob("step_*"):
        digits = path.name[len("step_"):].split("_")[0].split(".")[0]
        if digits.isdigit() and int(digits) > step and path.is_file():
            try:
                path.unlink()
            except OSError as e:
                raise SpecganError(f"{path}: cannot remove this sample of a step after the checkpoint the run "
                                   f"continues from ({e.strerror or e})") from None


def _other_code(state: dict, path: Path) -> str | None:
    """A line for the user when the checkpoint a run continues from was written by other specgan code (see
    :func:`~specgan.train.checkpoint.code_fingerprint`; older checkpoints do not say, and are not checked)."""
    saved = state.get("specgan_code")
    if saved is None or saved == code_fingerprint():
        return None
    return (f"{path} was written by other specgan code (version {state.get('specgan_version', '?')}, files "
            f"{saved}; now {__version__}, {code_fingerprint()}): the run continues, but need not end as an "
            f"uninterrupted run would, bit for bit")


def _decay_moved(saved: dict, recipe: Recipe, *, start: int) -> str | None:
    """A line for the user when a run continues with another ``train.steps`` after its learning rates began to
    fall: the decay starts at ``lr_decay_start × steps``, so it moves, and the continued run differs from one
    trained for the new number of steps from the start. None otherwise."""
    before = saved.get("train", {}).get("steps")
    t = recipe.train
    if before is None or before == t.steps or t.lr_decay_start >= 1 or start >= t.steps:  # (nothing to train)
        return None
    fall_before, fall_now = int(t.lr_decay_start * before), int(t.lr_decay_start * t.steps)
    if start <= min(fall_before, fall_now):  # no step so far had a different rate
        return None
    rate_before = linear_decay(start, steps=before, start=t.lr_decay_start)
    rate_now = linear_decay(start + 1, steps=t.steps, start=t.lr_decay_start)
    moved = (f"now starts at step {fall_now} instead of {fall_before}" if fall_now != fall_before else
             f"still starts at step {fall_now} but now ends at step {t.steps} instead of {before}")
    return (f"train.steps went from {before} to {t.steps} after the learning rates began to fall (train.lr_decay_start "
            f"= {toml_value(t.lr_decay_start)}): the decay {moved}, so the rates jump from {rate_before:.0%} to "
            f"{rate_now:.0%} of train.lr_g/lr_d at step {start + 1}; the result will differ from a run trained for "
            f"{t.steps} steps from the start")


def _other_world_size(saved: int | None, now: int, *, own_batch_statistics: bool) -> str | None:
    """A line for the user when a run continues in another number of processes than it trained in (checkpoints
    say since they record it): it continues, but the gradients are summed in another order (and, with
    ``own_batch_statistics``, batch norm's statistics are each process's own), so its numbers differ from an
    uninterrupted run's. None otherwise."""
    if saved is None or saved == now:
        return None
    why = "gradients are summed in another order" + (
        ", and batch norm's statistics are each process's own" if own_batch_statistics else "")
    return (f"this run trained in {saved} process(es) and continues in {now}: it goes on from its checkpoint, but its "
            f"numbers will differ from an uninterrupted run's ({why})")


def _batch_statistics_per_process(task, *, sides: tuple[tuple[str | None, int], ...]) -> bool:
    """Whether the task's networks hold batch norm whose statistics each process took from its own shard on one of
    ``sides`` (``(device type, processes)``; device None: not recorded, as by checkpoints before it was): in
    several processes on CPUs (gloo); on GPUs they are synchronised (SyncBatchNorm), and one process has the whole
    batch. Translators use instance norm: none."""
    return any(processes > 1 and kind != "cuda" for kind, processes in sides) and any(
        isinstance(layer, nn.modules.batchnorm._BatchNorm) for network in task.models.values()
        for layer in network.modules())


def _keep_cpu_threads(saved: int | None, *, device: torch.device) -> str | None:
    """Continue a CPU run on the thread count it trained on, so that it stays bit-identical to an uninterrupted
    run (a different count sums in another order), unless ``OMP_NUM_THREADS`` chooses or fewer cores are free
    than it used (more threads than free cores wait on each other: a step ran 20x slower). Returns a line for the
    user when the count differs from what this machine would have chosen, else None."""
    if device.type != "cpu" or not saved or "OMP_NUM_THREADS" in os.environ:
        return None
    now = torch.get_num_threads()  # the free cores (device.fit_cpu_threads), or all of them
    if saved == now:
        return None
    if saved < now:
        torch.set_num_threads(saved)
        return (f"continuing on {saved} CPU thread(s), as this run trained, so that it matches an uninterrupted "
                f"run bit for bit (set OMP_NUM_THREADS to choose)")
    return (f"this run trained on {saved} CPU threads but only {now} core(s) are free: continuing on {now}, so "
            f"its numbers will differ in rounding from an uninterrupted run's (OMP_NUM_THREADS={saved} keeps them)")


def _refuse_a_folder_not_a_run(run_dir: Path) -> None:
    """A ConfigError when ``output.dir`` is a folder that holds other things than a specgan run: the run would
    replace a ``recipe.toml``, a ``metrics.jsonl`` and sample grids there (and cut a last line it takes for one
    left half-written by a crash). A run folder has its own recipe (see :func:`~specgan.train.config.is_run_recipe`)
    or checkpoints (a ``checkpoints`` folder of any other files, or none, does not make one); an empty folder
    becomes one, and so does one whose ``recipe.toml`` is a recipe written for it (its ``output.dir`` is this
    folder). Not in the way: the lock of a start that failed, and the run's own sub-folders while empty (a file in
    their way gets its own message, see :func:`_write_run_recipe`)."""
    if (not run_dir.is_dir() or is_run_recipe(run_dir / RUN_RECIPE) or list_checkpoints(run_dir)
            or _a_recipe_for(run_dir)):
        return

    def in_the_way(name: str) -> bool:
        path = run_dir / name
        return name != ".lock" and not (name in RUN_SUBFOLDERS and not (path.is_dir() and any(path.iterdir())))

    try:
        others = sorted(name for name in os.listdir(run_dir) if in_the_way(name))
    except OSError as e:
        raise ConfigError(f"output.dir = '{run_dir}': cannot read the folder ({e.strerror or e})") from None
    if others:
        raise ConfigError(f"output.dir = '{run_dir}': holds {len(others)} file(s) or folder(s) that are not a specgan "
                          f"run's (e.g. {others[0]}), which the run could replace; set another output.dir")


def _a_recipe_for(run_dir: Path) -> bool:
    """Whether ``run_dir/recipe.toml`` is a recipe whose ``output.dir`` is ``run_dir``: written for this run (and
    the one being trained, if any), which the run's own resolved recipe then replaces."""
    path = run_dir / RUN_RECIPE
    if not path.is_file():
        return False
    try:
        return os.path.realpath(load_recipe(path).run_dir) == os.path.realpath(run_dir)
    except (SpecganError, OSError):
        return False


def _refuse_a_run_inside_its_images(recipe: Recipe) -> None:
    """A ConfigError when the run folder is an image-folder dataset's folder or lies inside it: every image found
    there is training data, so the run's sample grids would become a class of the next run's data (and this run
    could not continue: its data would have changed)."""
    if recipe.data.kind != "image-folder":
        return
    # (realpath: Path.resolve raised on a link that loops, an internal error; making the folder names it instead)
    if Path(os.path.realpath(recipe.run_dir)).is_relative_to(os.path.realpath(recipe.data.path)):  # (or inside)
        raise ConfigError(f"output.dir = '{recipe.run_dir}': inside data.path = '{recipe.data.path}', whose every "
                          f"image is training data (the run's samples would become a class); set an output.dir "
                          f"outside it")


def _make_run_dir(run_dir: Path) -> None:
    """Create the run folder; one that cannot be (a file in the way, no permission) is a ConfigError naming it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output.dir = '{run_dir}': a file is in the way of the run folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output.dir = '{run_dir}': cannot make the run folder ({e.strerror or e})") from None


def _check_audio(recipe: Recipe, data: ImageData) -> None:
    """A recipe whose [audio] table is not the defaults must describe the dataset it trains on. (A table equal to
    the defaults cannot be told from no table, so it is not checked.)"""
    if data.audio is None or recipe.audio == AudioParams():
        return
    # Unset values as what they stand for: f_max unset and f_max = sample_rate / 2 make the same chunks.
    recipe_values, data_values = image_values(to_mapping(recipe.audio)), image_values(to_mapping(data.audio))
    for key in IMAGE_KEYS:
        wanted, found = recipe_values[key], data_values[key]
        if wanted != found:
            raise ConfigError(f"audio.{key} = {wanted!r}, but {recipe.data.path} was prepped with {key} = "
                              f"{found!r}; prep it again with this recipe, or make the recipe's [audio] table match")


def _check_same_data(saved: dict, found: dict, path: Path, *, data_path: str) -> None:
    """A run continues on data like the data it started on: ``data.path`` may move (RESUMABLE_CHANGES), but the
    images must keep their shape, the classes (or domains) their names and order, and spectrograms the audio
    parameters that made them; the networks were built for them, and labels mean what they meant."""
    def image_audio(audio: dict | None) -> dict | None:
        return image_values(audio) if audio else None

    pairs = {"image_shape": (saved.get("image_shape"), found["image_shape"]),
             "class_names": (saved.get("class_names"), found["class_names"]),
             "audio": (image_audio(saved.get("audio")), image_audio(found["audio"]))}
    for what, (before, now) in pairs.items():
        if before != now:
            if what == "audio" and before and now:
                key = next(k for k in IMAGE_KEYS if before[k] != now[k])
                what, before, now = f"audio.{key}", before[key], now[key]
            raise CheckpointError(f"{path}: this run was trained on data with {what} = {before}, but data.path = "
                                  f"{data_path!r} has {now}; point data.path at the run's data, or use another "
                                  f"output.dir for a new run")


def _check_same_run(saved: dict, wanted: dict, path: Path) -> None:
    """A run continues only with the recipe it started with (up to RESUMABLE_CHANGES); every other difference is
    named in one line, with what to do: the command that continues the run as it was (its recipe.toml still says
    so), moving the checkpoint out (an earlier checkpoint of the run fits the recipe: this one is another run's,
    copied in), or setting the recipe back (it was changed since the run trained)."""
    differences = _recipe_differences(saved, wanted)
    if not differences:
        return
    run = Path(path).parent.parent
    own = run / RUN_RECIPE
    try:
        as_it_was = is_run_recipe(own) and not _recipe_differences(saved, recipe_mapping(load_recipe(own)))
    except SpecganError:  # a damaged recipe.toml: no command to offer
        as_it_was = False
    said = f"{path}: this run was trained with {', and '.join(differences)}"
    if as_it_was:
        raise CheckpointError(f"{said}; use another output.dir for a new run ({continue_command(run)} continues "
                              f"this one as it was)")
    if _an_earlier_checkpoint_fits(path, wanted):
        raise CheckpointError(f"{path}: not a checkpoint of this run, whose earlier checkpoints fit its recipe (it "
                              f"was trained with {', and '.join(differences)}); move it out of {path.parent} to "
                              f"continue the run")
    raise CheckpointError(f"{said}; set those back to continue it, or use another output.dir for a new run")


def _an_earlier_checkpoint_fits(path: Path, wanted: dict) -> bool:
    """Whether an intact checkpoint of ``path``'s run from before it was trained with the recipe ``wanted`` (the
    newest first: several of another run's may have been copied in)."""
    for earlier in reversed([p for p in list_checkpoints(Path(path).parent.parent) if p != path]):
        try:
            if not _recipe_differences(load_checkpoint(earlier, required=RUN_FIELDS)["recipe"], wanted):
                return True
        except SpecganError:  # damaged, or not a run's: the ones before it
            continue
    return False


def _recipe_differences(saved: dict, wanted: dict) -> list[str]:
    """``"key = saved value, not wanted value"`` for each key of two recipe mappings that differs and may not
    change when a run continues (see RESUMABLE_CHANGES)."""
    differences = []
    for section in sorted(set(saved) | set(wanted)):
        a, b = saved.get(section), wanted.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += [f"{section}.{key} = {as_written(a.get(key))}, not {as_written(b.get(key))}"
                            for key in sorted(set(a) | set(b))
                            if a.get(key) != b.get(key) and (section, key) not in RESUMABLE_CHANGES]
        elif a != b:
            differences.append(f"{section} = {as_written(a)}, not {as_written(b)}")
    return differences

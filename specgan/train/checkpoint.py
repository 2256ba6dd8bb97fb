"""Self-describing checkpoints: plain dicts of state_dicts, step, RNG states, the resolved recipe and the data
description (image shape, class names, audio parameters), loadable with ``torch.load(weights_only=True)`` and
written atomically. A run folder keeps the most recent few in ``checkpoints/``.

Faults never lose work:

* A checkpoint is written to ``.step_XXXXXXXX.pt.<random>.tmp``, flushed to the disk, then renamed: a process
  killed mid-write leaves at most such a temporary file (ignored by :func:`list_checkpoints`, removed by the next
  run), never a partial ``step_XXXXXXXX.pt``. Older checkpoints are deleted only after the new one is complete.
* A failed write (disk full) is a one-line :class:`~specgan.errors.CheckpointError`; nothing else is touched.
* Reading verifies the zip archive's CRC-32 of every member, so a truncated or bit-flipped file is a one-line
  :class:`~specgan.errors.DamagedCheckpointError` instead of silently different weights.
* Continuing a run (:func:`load_latest_checkpoint`) passes over damaged newest checkpoints to the newest intact
  one, says so, and renames the damaged files to ``step_XXXXXXXX.pt.damaged`` (kept for inspection, and out of
  the rotation, which could otherwise count them among the newest ``keep`` and delete the intact one). A
  checkpoint newer than this specgan understands is an error, not passed over: falling back would discard its work.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import functools
import hashlib
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from specgan import __version__
from specgan.atomic import atomic_path
from specgan.errors import CheckpointError, DamagedCheckpointError, SpecganError, check_format
from specgan.train.added_keys import complete_saved_recipe

FORMAT = "specgan-checkpoint"
FORMAT_VERSION = 1
#: Checkpoint files are named by their step in this many digits (train.steps stays below 10 ** STEP_DIGITS).
STEP_DIGITS = 8
_NAME = re.compile(rf"^step_(\d{{{STEP_DIGITS}}})\.pt$")
_TEMP = re.compile(r"^\.step_\d{8}\.pt\..+\.tmp$")
#: Suffix given to a damaged checkpoint that a continued run passed over.
DAMAGED_SUFFIX = ".damaged"
_SET_ASIDE = re.compile(rf"^step_\d{{{STEP_DIGITS}}}\.pt{re.escape(DAMAGED_SUFFIX)}(\.\d+)?$")
#: What every checkpoint of a training run holds besides the header and ``step`` (a run continues only from one).
RUN_FIELDS = ("task", "rng", "recipe", "data")
#: What a checkpoint needs to rebuild its networks (``specgan sample``, ``convert``, ``eval``).
MODEL_FIELDS = ("task", "recipe", "data")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_of(path: Path) -> int:
    """The step a checkpoint's file name ``step_XXXXXXXX.pt`` says."""
    return int(_NAME.match(Path(path).name)[1])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first (temporary files of unfinished writes and set-aside damaged files are
    not checkpoints)."""
    return _files_named(run_dir, _NAME)


def stale_temp_files(run_dir: Path) -> list[Path]:
    """Temporary files of checkpoint writes that never finished (a process killed mid-write)."""
    return _files_named(run_dir, _TEMP)


def _files_named(run_dir: Path, name: re.Pattern) -> list[Path]:
    """The files of the run's checkpoint folder whose names match ``name``, sorted; a folder that cannot be read
    is a one-line CheckpointError."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    try:
        return sorted(p for p in folder.iterdir() if name.match(p.name))
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot read the run's checkpoints ({e.strerror or e})") from None


def set_aside_checkpoints(run_dir: Path) -> list[Path]:
    """Damaged checkpoints that a continued run renamed out of the rotation (``step_XXXXXXXX.pt.damaged``, and
    ``.damaged.N`` for a second copy of a step), newest step first."""
    return _files_named(run_dir, _SET_ASIDE)[::-1]  # names sort by step: its digits are fixed-width


def _only_set_aside(run_dir: Path) -> str | None:
    """``"only damaged ones set aside earlier (NAME and N more)"`` when the run's checkpoint folder holds set-aside
    checkpoints and no others; None when it holds none."""
    aside = set_aside_checkpoints(run_dir)
    if not aside:
        return None
    more = f" and {len(aside) - 1} more" if len(aside) > 1 else ""
    return f"only damaged ones set aside earlier ({aside[0].name}{more})"


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete :func:`stale_temp_files`; only safe while no other process writes checkpoints into this run."""
    removed = stale_temp_files(run_dir)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


@functools.cache
def code_fingerprint() -> str:
    """A short SHA-256 of specgan's own code: each source file's path and syntax tree without its docstrings (so
    comments and docs may change). Kept in every checkpoint, so that a run continued by other code (an upgrade, or
    an edited checkout with the same version number) can say that its result need not match an uninterrupted
    run's."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_bytes())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return digest.hexdigest()[:16]


def save_checkpoint(run_dir: Path, state: dict[str, Any], *, step: int, keep: int) -> Path:
    """Write ``state`` (plus format fields and ``step``) as ``checkpoints/step_XXXXXXXX.pt`` atomically and
    durably, then delete all but the newest ``keep`` (never the one just written) and any stale temporary files.

    Raises:
        CheckpointError: the file could not be written (disk full, read-only, ...); no partial file is left and
            the existing checkpoints are untouched.
    """
    folder = checkpoint_dir(run_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot create the checkpoint folder ({e.strerror or e})") from None
    path = folder / f"step_{step:08d}.pt"
    document = {"format": FORMAT, "version": FORMAT_VERSION, "specgan_version": __version__,
                "specgan_code": code_fingerprint(), "step": step, **state}
    failure = None
    try:
        with atomic_path(path, durable=True) as tmp:
            _torch_save(document, tmp)
    except SpecganError as e:  # from atomic_path: disk full, over quota, read-only
        failure = str(e)
    except OSError as e:
        failure = f"{path}: cannot write ({e.strerror or e})"
    except RuntimeError as e:  # torch's writer, when the OSError did not reach it
        failure = _one_line(f"{path}: cannot write ({type(e).__name__}: {e})")
    if failure is not None:
        kept = list_checkpoints(run_dir)
        raise CheckpointError(f"{failure}; no checkpoint was written and the existing ones are untouched "
                              f"(newest: {kept[-1] if kept else 'none'})")
    older = [p for p in list_checkpoints(run_dir) if p.name < path.name]
    for old in older[:max(0, len(older) - (keep - 1))]:
        old.unlink(missing_ok=True)
    remove_stale_temp_files(run_dir)
    return path


class _Sink:
    """A file object for torch.save that remembers the OSError of a failed write: torch turns it into a
    RuntimeError without errno ("unexpected pos ..."), and the errno (ENOSPC) is what tells the user why."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.file.flush()


def _torch_save(document: dict[str, Any], path: Path) -> None:
    with _crc32_on(), open(path, "wb") as f:
        sink = _Sink(f)
        try:
            torch.save(document, sink)
        except RuntimeError:
            if sink.error is not None:
                raise sink.error from None
            raise


@contextlib.contextmanager
def _crc32_on() -> Iterator[None]:
    """torch.save computes each member's CRC-32 unless told not to; :func:`load_checkpoint` relies on it."""
    config = getattr(getattr(getattr(torch.utils, "serialization", None), "config", None), "save", None)
    if config is None or getattr(config, "compute_crc32", True):
        yield
        return
    config.compute_crc32 = True
    try:
        yield
    finally:
        config.compute_crc32 = False


def load_checkpoint(path: Path, *, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors only, no pickled code), after checking the
    CRC-32 of every member of its zip archive.

    Raises:
        DamagedCheckpointError: truncated, corrupted, not a specgan checkpoint, without a step, or without one of
            the ``required`` fields (e.g. :data:`RUN_FIELDS`).
        CheckpointError: no such file, or a format version newer than this specgan understands.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a checkpoint file")
    _check_archive(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as e:  # foreign files raise a variety of errors
        raise DamagedCheckpointError(_one_line(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})")) \
            from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DamagedCheckpointError(f"{path}: not a specgan checkpoint")
    try:
        check_format(state, path=path, expected=FORMAT, version=FORMAT_VERSION, what="checkpoint",
                     error=CheckpointError)
    except CheckpointError as e:
        if not isinstance(state.get("version"), int) or isinstance(state.get("version"), bool):
            raise DamagedCheckpointError(str(e)) from None
        raise
    if not isinstance(state.get("step"), int) or isinstance(state.get("step"), bool) or state["step"] < 0:
        raise DamagedCheckpointError(f"{path}: not a readable checkpoint (step = {state.get('step')!r})")
    missing = [key for key in required if key not in state]
    if missing:
        raise DamagedCheckpointError(f"{path}: not a readable checkpoint (it has no {missing[0]!r})")
    if isinstance(state.get("recipe"), dict):  # saved by an older specgan, perhaps: keys added since
        state["recipe"] = complete_saved_recipe(state["recipe"])
    return state


#: Errors of reading a file that say nothing about its contents (no permission, a failing disk or network file
#: system, a folder of that name): such a checkpoint is not taken for a damaged one.
CANNOT_READ = frozenset({errno.EACCES, errno.EPERM, errno.EIO, errno.EISDIR})


def _check_archive(path: Path) -> None:
    """DamagedCheckpointError unless ``path`` is a complete zip archive whose members match their CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, OSError) as e:
        if isinstance(e, OSError) and e.errno in CANNOT_READ:  # the file may be whole: not for setting aside
            raise CheckpointError(f"{path}: cannot read ({e.strerror}); the checkpoint is left as it is") from None
        raise DamagedCheckpointError(_one_line(f"{path}: not a readable checkpoint (truncated or not a checkpoint "
                                               f"file: {e})")) from None
    if bad is not None:
        raise DamagedCheckpointError(f"{path}: not a readable checkpoint (corrupted: {bad} fails its CRC check)")


def _one_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def load_latest_checkpoint(run_dir: Path, *, map_location: str | torch.device = "cpu",
                           on_warning: Callable[[str], None] | None = None, tidy: bool = True,
                           required: tuple[str, ...] = RUN_FIELDS) -> tuple[Path, dict[str, Any]] | None:
    """The newest intact checkpoint of a run folder and its contents, or None when there are no checkpoints.

    Damaged checkpoints newer than it (see :class:`~specgan.errors.DamagedCheckpointError`; also one without a
    field in ``required``) are passed over, each with a one-line ``on_warning`` naming it and the checkpoint used.
    With ``tidy`` they are renamed to ``step_XXXXXXXX.pt.damaged`` (kept, but out of the rotation of
    :func:`save_checkpoint`, which could otherwise count them among the newest and delete the intact one) and stale
    temporary files of unfinished writes are deleted. Pass ``tidy=False`` on every process but one when several
    read the same run folder (distributed training); they skip the same files.

    Raises:
        CheckpointError: the newest readable checkpoint has a newer format version than this specgan understands
            (upgrade; falling back past it would discard newer work), or none of the checkpoints is intact
            (nothing is renamed then: there is nothing to protect, and the user decides), or the only ones left
            are damaged ones set aside earlier (a fresh start would replace the run's metrics and samples).
    """
    if tidy:
        remove_stale_temp_files(run_dir)
    found, damaged = _newest_intact(run_dir, map_location=map_location, required=required)
    if found is None:
        if damaged:
            raise CheckpointError(f"{checkpoint_dir(run_dir)}: no intact checkpoint to continue from (newest: "
                                  f"{damaged[0][1]}); use another output.dir to start afresh")
        if aside := _only_set_aside(run_dir):
            raise CheckpointError(f"{checkpoint_dir(run_dir)}: no intact checkpoint to continue from, {aside}; use "
                                  f"another output.dir to start afresh (or delete them to start this run again)")
        return None
    path, state = found
    for bad, why in damaged:
        kept = _set_aside(bad) if tidy else bad
        note = f"; kept as {kept.name}" if kept != bad else ""
        if on_warning:
            on_warning(f"{why}{note}; continuing from {path} (step {state['step']}), the newest intact checkpoint")
    return path, state


def load_model_checkpoint(run_or_checkpoint: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                          on_warning: Callable[[str], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """The checkpoint that ``sample``, ``convert`` and ``eval`` rebuild networks from, and its contents: the file
    given, or a run folder's newest intact checkpoint with :data:`MODEL_FIELDS`. Damaged newer ones are passed
    over, each with a one-line ``on_warning``, and left where they are: reading a run does not change it.

    Raises:
        CheckpointError: no such file or folder, no checkpoints, none intact, or a damaged file given by name.
    """
    path = Path(run_or_checkpoint)
    if not path.is_dir():
        path = find_checkpoint(path)
        return path, load_checkpoint(path, map_location=map_location, required=MODEL_FIELDS)
    if path.name == "checkpoints" and not checkpoint_dir(path).is_dir() and list_checkpoints(path.parent):
        path = path.parent  # a run's checkpoints folder, given for the run
    found, damaged = _newest_intact(path, map_location=map_location, required=MODEL_FIELDS)
    if found is None:
        if damaged:
            raise CheckpointError(f"{checkpoint_dir(path)}: no intact checkpoint (newest: {damaged[0][1]})")
        if aside := _only_set_aside(path):
            raise CheckpointError(f"{checkpoint_dir(path)}: no intact checkpoint, {aside}")
        raise _not_a_run(path)
    for _, why in damaged:
        if on_warning:
            on_warning(f"{why}; using {found[0]} (step {found[1]['step']}), the newest intact checkpoint")
    return found


def _newest_intact(run_dir: Path, *, map_location: str | torch.device, required: tuple[str, ...]) \
        -> tuple[tuple[Path, dict[str, Any]] | None, list[tuple[Path, str]]]:
    """``((path, contents) of the run's newest intact checkpoint, or None; [(path, why)] of the damaged ones newer
    than it, newest first])``."""
    damaged: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return (path, load_checkpoint(path, map_location=map_location, required=required)), damaged
        except DamagedCheckpointError as e:
            damaged.append((path, str(e)))
        except CheckpointError:
            if path.exists():
                raise
            # else: set aside meanwhile by the tidying process of a distributed run
    return None, damaged


def _set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint out of the rotation (never over another file); the new path."""
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}.{n}")
        n += 1
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return path
    return target


def run_folders(runs_dir: str | os.PathLike) -> list[Path]:
    """The folders under ``runs_dir`` (at any depth; ``runs/voices/sf1_tm3``) that hold a ``checkpoints`` folder,
    sorted; nothing inside a run folder is searched."""
    found = []
    for folder, subfolders, _ in os.walk(runs_dir):
        subfolders.sort()
        if "checkpoints" in subfolders:
            found.append(Path(folder))
            subfolders.clear()
    return found


def _not_a_run(path: Path) -> CheckpointError:
    """The error for ``path``, a folder without checkpoints: naming the runs inside it, if any."""
    inside = [run for run in run_folders(path) if run != path]
    if inside:
        shown = ", ".join(str(run) for run in inside[:5]) + (", ..." if len(inside) > 5 else "")
        return CheckpointError(f"{path}: not a run folder; the runs in it: {shown}")
    return CheckpointError(f"{path}: no checkpoints in {checkpoint_dir(path)}")


def _refuse_a_recipe_file(path: Path) -> None:
    """A recipe given where a run or checkpoint is asked for: say which to give instead."""
    if path.suffix.lower() == ".toml" and path.is_file():
        run = f": {path.parent}" if list_checkpoints(path.parent) else " (or a checkpoint .pt file)"
        raise CheckpointError(f"{path}: a recipe, not a checkpoint; give the run folder{run}")


def find_checkpoint(run_or_checkpoint: str | os.PathLike) -> Path:
    """A checkpoint file given either itself or its run folder (then the latest one)."""
    path = Path(run_or_checkpoint)
    if path.is_file():
        _refuse_a_recipe_file(path)
        return path
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise _not_a_run(path)
        return found[-1]
    raise CheckpointError(f"{path}: no such run folder or checkpoint")


def rng_state() -> dict[str, Any]:
    """The global CPU and CUDA RNG states (explicit generators are saved by their owners)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])

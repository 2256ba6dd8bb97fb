"""Self-describing checkpoints: plain dicts of state_dicts, step, RNG states, the resolved recipe and the data
description (image shape, class names, audio parameters), loadable with ``torch.load(weights_only=True)`` and
written atomically. A run folder keeps the most recent few in ``checkpoints/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from specgan import __version__
from specgan.atomic import atomic_path
from specgan.errors import CheckpointError, check_format

FORMAT = "specgan-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def save_checkpoint(run_dir: Path, state: dict[str, Any], *, step: int, keep: int) -> Path:
    """Write ``state`` (plus format fields and ``step``) as ``checkpoints/step_XXXXXXXX.pt`` atomically, then
    delete all but the newest ``keep``."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": FORMAT_VERSION, "specgan_version": __version__, "step": step,
                    **state}, tmp)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors only, no pickled code)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as e:  # truncated or foreign files raise a variety of errors
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})".splitlines()[0]) \
            from None
    check_format(state, path=path, expected=FORMAT, version=FORMAT_VERSION, what="checkpoint", error=CheckpointError)
    return state


def find_checkpoint(run_or_checkpoint: str | os.PathLike) -> Path:
    """A checkpoint file given either itself or its run folder (then the latest one)."""
    path = Path(run_or_checkpoint)
    if path.is_file():
        return path
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path}: no checkpoints in {checkpoint_dir(path)}")
        return found[-1]
    raise CheckpointError(f"{path}: no such run folder or checkpoint")


def rng_state() -> dict[str, Any]:
    """The global CPU and CUDA RNG states (explicit generators are saved by their owners)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

"""Ctrl-C during training: stop after a whole step, checkpoint it, and say where it is and how to continue."""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path
from typing import Any

from specgan.errors import TrainingInterrupted
from specgan.train.checkpoint import list_checkpoints, step_of


class StopRequest:
    """Ctrl-C during training, deferred to a step boundary.

    While installed (only possible in the main thread; elsewhere it does nothing), the first SIGINT just sets
    :attr:`requested`: the loop finishes the step in progress, writes a checkpoint of it and stops, so the saved
    state is that of a whole step and a continued run is exact. A second SIGINT raises KeyboardInterrupt at once
    (the step in progress is then lost; atomic writes still leave no partial file). In distributed training the
    loop makes the ranks agree on the step to stop after (see :mod:`specgan.train.loop`).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False


def interruption(run_dir: Path, *, step: int, saved: bool) -> TrainingInterrupted:
    """The TrainingInterrupted to raise after Ctrl-C: ``saved`` when the loop stopped after step ``step`` and
    checkpointed it, else it was cut off during that step (whose work is lost). Its ``step`` and ``checkpoint`` are
    those of the newest checkpoint on disk."""
    found = list_checkpoints(run_dir)
    newest = found[-1] if found else None
    again = f"continue with: specgan train {shlex.quote(str(Path(run_dir) / 'recipe.toml'))}"
    if saved and newest is not None:
        message = f"interrupted: stopped after step {step}, checkpoint {newest}; {again}"
    elif newest is not None:
        message = f"interrupted during step {step}; the newest checkpoint is {newest} (later steps will be redone); " \
                  f"{again}"
    else:
        message = f"interrupted during step {step}; no checkpoint was written yet"
    return TrainingInterrupted(message, step=step_of(newest) if newest else 0, checkpoint=newest)

"""Stopping training on request: Ctrl-C (SIGINT) or SIGTERM (``kill``, ``timeout``, ``docker stop``, a batch
scheduler's time limit) stops after a whole step, checkpoints it, and says where it is and how to continue."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from specgan.errors import TrainingInterrupted
from specgan.train.checkpoint import list_checkpoints, step_of
from specgan.train.config import continue_command

#: The signals that ask training to stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Under torchrun, a second signal this soon after the first is the same request arriving twice, not a second
#: one, in seconds: Ctrl-C in a terminal reaches every worker directly *and* through torchrun, which passes on the
#: signals it receives.
REPEAT_WINDOW_S = 1.0


class StopRequest:
    """Ctrl-C or SIGTERM during training, deferred to a step boundary.

    While installed (only possible in the main thread; elsewhere it does nothing), the first SIGINT or SIGTERM
    just sets :attr:`requested` (and :attr:`signal_number`): the loop finishes the step in progress, writes a
    checkpoint of it and stops, so the saved state is that of a whole step and a continued run is exact. A second
    one raises KeyboardInterrupt at once (the step in progress is then lost; atomic writes still leave no partial
    file). With ``merged_within`` seconds, a second signal that soon after the first is taken as the same request
    (see :data:`REPEAT_WINDOW_S`). In distributed training the loop makes the ranks agree on the step to stop after
    (see :mod:`specgan.train.loop`).
    """

    def __init__(self, *, merged_within: float = 0.0) -> None:
        self.requested = False
        self.signal_number = signal.SIGINT
        self.merged_within = merged_within
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                if signal.getsignal(number) is not signal.SIG_IGN:  # ignored by whoever started us (nohup, &): kept so
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if not self.requested:
            self.requested, self.signal_number, self._first_at = True, signal.Signals(signum), time.monotonic()
        elif time.monotonic() - self._first_at >= self.merged_within:
            raise KeyboardInterrupt

    def restore(self) -> None:
        for number, previous in self._previous.items():
            if previous is None:  # a handler not installed from Python
                previous = signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL
            signal.signal(number, previous)
        self._previous = {}


def interruption(run_dir: Path, *, step: int, saved: bool, signal_number: int = signal.SIGINT,
                 distributed: bool = False, launcher_gone: bool = False) -> TrainingInterrupted:
    """The TrainingInterrupted to raise after a stop request (signal ``signal_number``): ``saved`` when the loop
    stopped after step ``step`` and checkpointed it, else it was cut off during that step (whose work is lost).
    Its ``step`` and ``checkpoint`` are those of the newest checkpoint on disk. ``distributed``: the run was
    started by torchrun, which the hint to continue mentions (a checkpoint continues at any number of ranks);
    ``launcher_gone``: the signal came from torchrun's launcher dying (see :func:`~specgan.train.distributed.
    stop_with_launcher`), which the message says instead of naming the signal."""
    found = list_checkpoints(run_dir)
    newest = found[-1] if found else None
    again = f"continue with: {continue_command(run_dir)}"
    if distributed:
        again += " (under torchrun as before, or in one process)"
    what = "interrupted" if signal_number == signal.SIGINT else f"stopped by {signal.Signals(signal_number).name}"
    if launcher_gone:
        what = "torchrun's launcher ended: stopped"
    if saved and newest is not None:
        stopped = "interrupted: stopped" if signal_number == signal.SIGINT else what
        message = f"{stopped} after step {step}, checkpoint {newest}; {again}"
    elif newest is not None:
        message = f"{what} during step {step}; the newest checkpoint is {newest} (later steps will be redone); " \
                  f"{again}"
    else:
        message = f"{what} during step {step}; no checkpoint was written yet"
    return TrainingInterrupted(message, step=step_of(newest) if newest else 0, checkpoint=newest,
                               signal_number=signal_number)

"""The run's step scalars on disk: ``metrics.jsonl`` and TensorBoard events (``tb/``: the same scalars, and the
sample grids as images), written by rank 0.

Scalars stay on the device and are fetched :data:`~specgan.train.loop.LOG_EVERY` steps at a time. A write the disk
refuses stops training with one line naming the file and the last checkpoint. TensorBoard writes its events on a
background thread, which keeps such an error for the main thread to raise at the next write, flush or close; that
thread would also print a traceback of its own as it ends, which :func:`writer_thread_errors_left_to_the_log`
keeps quiet.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from specgan.atomic import atomic_path
from specgan.errors import SpecganError, TrainingError
from specgan.train.checkpoint import list_checkpoints
from specgan.train.distributed import Distributed


class MetricLog:
    """One record per step, fetched from the device in batches of steps, appended to ``metrics.jsonl`` and
    TensorBoard. Continuing a run at step ``start`` first drops the lines and events of later steps (logged by an
    interrupted run after its last checkpoint).

    With several ranks, each scalar is the mean over ranks (every rank sees the same values, so a NaN stops them
    all at once), and rank 0 writes.
    """

    def __init__(self, run_dir: Path, *, start: int, images_per_step: int,
                 on_record: Callable[[dict[str, Any]], None] | None, distributed: Distributed):
        self.run_dir, self.images_per_step, self.on_record = run_dir, images_per_step, on_record
        self.distributed = distributed
        self.file = self.writer = None
        if distributed.is_main:
            truncate_metrics(run_dir / "metrics.jsonl", after=start)
            from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

            # purge_step: TensorBoard hides the events of later steps, from a run stopped before its checkpoint
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1)
            self.file = open(run_dir / "metrics.jsonl", "a")
        self.pending: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.last: dict[str, Any] = {}
        self.tick = time.perf_counter()

    def add(self, step: int, scalars: dict[str, torch.Tensor]) -> None:
        self.pending.append((step, scalars))

    def flush(self) -> None:
        """Fetch the pending steps' scalars and write them. Raises TrainingError on a NaN or infinite one (nothing
        is written for its step) and SpecganError when a file cannot be written."""
        if not self.pending:
            return
        names = list(self.pending[0][1])
        values = torch.stack([torch.stack([v.float() for v in s.values()]) for _, s in self.pending])
        values = self.distributed.mean(values).tolist()
        now = time.perf_counter()
        rate = self.images_per_step * len(self.pending) / max(now - self.tick, 1e-9)
        self.tick = now
        for (step, _), row in zip(self.pending, values):
            bad = [(k, v) for k, v in zip(names, row) if not math.isfinite(v)]
            if bad:
                self.pending = []
                kept = list_checkpoints(self.run_dir)
                raise TrainingError(f"step {step}: {bad[0][0]} is {bad[0][1]}; training stopped. Last good "
                                    f"checkpoint: {kept[-1] if kept else 'none'}. Try lower learning rates "
                                    f"(train.lr_g, train.lr_d), smaller loss weights or another train.loss")
            record = {"step": step, **{k: round(v, 6) for k, v in zip(names, row)}, "images_per_s": round(rate, 1)}
            self.last = record
            if self.file is not None:
                self._write(record)
        self.pending = []
        if self.file is None:
            return
        self._write(None)
        if self.on_record:
            self.on_record(self.last)

    def _write(self, record: dict[str, Any] | None) -> None:
        """Append ``record`` to metrics.jsonl and TensorBoard (None: flush metrics.jsonl)."""
        try:
            if record is None:
                self.file.flush()
                return
            self.file.write(json.dumps(record) + "\n")
        except OSError as e:
            raise self._cannot_write(self.run_dir / "metrics.jsonl", e) from None
        try:
            for key, value in record.items():
                if key != "step":
                    self.writer.add_scalar(key, value, record["step"])
        except OSError as e:  # raised again here from TensorBoard's writer thread
            raise self._cannot_write(self.run_dir / "tb", e) from None

    def add_sample_images(self, folder: Path, step: int) -> None:
        """The sample grids written for ``step`` (``folder/step_XXXXXX[_NAME].png``) as TensorBoard images, tagged
        ``samples`` (or ``samples/NAME``, e.g. ``samples/SF1-to-TM3``), so its Images tab shows training progress
        next to the curves. Rank 0 only, like every write."""
        if self.writer is None:
            return
        prefix = f"step_{step:06d}"
        for path in sorted(folder.glob(f"{prefix}*.png")):
            name = path.stem[len(prefix):].lstrip("_")
            with Image.open(path) as image:
                pixels = np.asarray(image)
            try:
                self.writer.add_image(f"samples/{name}" if name else "samples", pixels, step,
                                      dataformats="HW" if pixels.ndim == 2 else "HWC")
            except OSError as e:  # raised again here from TensorBoard's writer thread
                raise self._cannot_write(self.run_dir / "tb", e) from None

    def _cannot_write(self, path: Path, error: OSError) -> SpecganError:
        kept = list_checkpoints(self.run_dir)
        return SpecganError(f"{path}: cannot write ({error.strerror or error}); training stopped. Last checkpoint: "
                            f"{kept[-1] if kept else 'none'}")

    def close(self, *, failing: bool = False) -> None:
        """Close both files. With ``failing`` (another error is on its way out, and is the one to report), a write
        TensorBoard's thread could not do is not raised again; otherwise it is one line: the metrics and the
        checkpoints are complete, only TensorBoard's last events are missing."""
        if self.file is not None:
            self.file.close()
        if self.writer is None:
            return
        try:
            self.writer.close()
        except OSError as e:
            if not failing:
                raise SpecganError(f"{self.run_dir / 'tb'}: cannot write TensorBoard's last events "
                                   f"({e.strerror or e}); metrics.jsonl and the checkpoints are complete") from None


@contextlib.contextmanager
def writer_thread_errors_left_to_the_log() -> Iterator[None]:
    """While training, an OSError that ends one of TensorBoard's writer threads prints nothing: :class:`MetricLog`
    reports it as one line when the main thread meets it again. Other threads' errors are reported as before."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (issubclass(args.exc_type, OSError) and type(args.thread).__module__.startswith("tensorboard.")):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def truncate_metrics(path: Path, *, after: int) -> None:
    """Drop metric lines past ``after`` (steps an interrupted run logged after its last checkpoint)."""
    if not path.exists():
        return
    try:
        # A line that is not UTF-8 is as damaged as a torn one: dropped below, not a reason to stop.
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise SpecganError(f"{path}: cannot read the run's metrics ({e.strerror or e})") from None
    kept = []
    for line in text.splitlines(keepends=True):
        try:
            if line.strip() and json.loads(line)["step"] <= after:
                kept.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):  # a line torn by a kill in mid-append
            continue
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept))

"""Training on several processes with DistributedDataParallel, as started by ``torchrun``.

``torchrun --nproc_per_node N -m specgan train RECIPE`` starts N copies of ``specgan train`` with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. Each copy joins the process group (NCCL on GPUs, gloo on
CPUs), and then:

- every rank draws the same *global* batch (same seeds, same batch order, same latents and crops) and keeps its
  own contiguous shard of it, so the recipe's ``train.batch_size`` is the global batch and a run's random streams
  do not depend on the number of ranks;
- gradients are averaged across ranks by DDP, which makes them those of the global batch (every loss is a mean
  over equal shards);
- state that needs the whole batch (CycleGAN's image pool) sees it through :meth:`Distributed.all_gather`;
- only rank 0 writes the run folder (samples, metrics, checkpoints).

Checkpoints hold only global state, so a run continues at any world size. One process without ``torchrun`` is a
world of size 1 and every method here is a no-op.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from specgan.errors import ConfigError, LostRankError, RankFailed, SpecganError
from specgan.train.checkpoint import list_checkpoints
from specgan.train.config import continue_command

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """This process's place among the ranks of a run."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder and reports progress."""
        return self.rank == 0

    def shard(self, batch: Tensor) -> Tensor:
        """This rank's contiguous part of a global batch ``(N, ...)`` → ``(N / world_size, ...)``."""
        if not self.active:
            return batch
        per = len(batch) // self.world_size
        return batch[self.rank * per:(self.rank + 1) * per]

    def all_gather(self, shard: Tensor) -> Tensor:
        """The global batch from every rank's shard (the inverse of :meth:`shard`; no gradient flows back)."""
        if not self.active:
            return shard
        parts = [torch.empty_like(shard) for _ in range(self.world_size)]
        dist.all_gather(parts, shard.contiguous())
        return torch.cat(parts)

    def mean(self, values: Tensor) -> Tensor:
        """The element-wise mean of ``values`` over ranks (for logged scalars: every rank sees the same)."""
        if not self.active:
            return values
        values = values.clone()
        dist.all_reduce(values)
        return values / self.world_size

    def any(self, flag: bool, *, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on at least one (a collective: every rank must call it)."""
        return self.largest(int(flag), device=device) > 0

    def largest(self, value: int, *, device: torch.device) -> int:
        """The largest of the ranks' ``value``, on every rank (a collective: every rank must call it)."""
        if not self.active:
            return value
        values = torch.tensor([float(value)], device=device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return int(values.item())

    def together(self, action: Callable[[], T], *, device: torch.device) -> T:
        """``action()`` on this rank, then the ranks compare notes (a collective: every rank must call it): when it
        raised on any rank, it raises on every rank, so that none is left waiting in a collective for a rank that
        has left. The rank that failed raises its own error; the others raise :class:`~specgan.errors.RankFailed`
        carrying the first failed rank's message (rank 0 reports it). For steps that can fail on one rank alone:
        rank 0's writes to the run folder, data another machine cannot read."""
        error: Exception | None = None
        try:
            result = action()
        except Exception as e:  # noqa: BLE001 (re-raised below, on every rank)
            error = e
        if not self.active:
            if error is not None:
                raise error
            return result
        if not self.any(error is not None, device=device):
            return result
        told: list = [None] * self.world_size
        dist.all_gather_object(told, None if error is None else _as_told(error))
        if error is not None:
            raise error
        rank, (message, exit_code) = next((r, t) for r, t in enumerate(told) if t is not None)
        raise RankFailed(f"rank {rank}: {message}", exit_code=exit_code)

    def wrap(self, module: nn.Module, *, device: torch.device) -> nn.Module:
        """``module`` inside DistributedDataParallel (gradient averaging), or itself in a single process."""
        if not self.active:
            return module
        ids = [device.index] if device.type == "cuda" else None
        # No buffer broadcast: a GAN calls D twice before one backward, and re-broadcasting batch-norm statistics
        # in place between the calls breaks the first call's graph. BN statistics are synchronised by
        # SyncBatchNorm on CUDA and are each rank's own on CPUs; rank 0's are saved.
        ignore_size_one_stride_warnings()
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ConfigError(f"train.batch_size = {batch_size}: with {self.world_size} processes the global batch "
                              f"must be a multiple of {self.world_size}")

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


#: DDP's warning when a gradient's strides differ from its bucket's in a size-1 channel dimension only (weight
#: ``(O, 1, kh, kw)``), where any stride describes the same memory order: a one-input-channel weight placed
#: channels-last has strides ``(kh·kw, 1, kw, 1)``, and the gradient penalty's double backward gives its gradient
#: ``(kh·kw, kh·kw, kw, 1)``. The reducer copies it into the bucket (a few kB); nothing is wrong.
SIZE_ONE_STRIDE_WARNING = (r"(?s)Grad strides do not match bucket view strides.*"
                           r"grad\.sizes\(\) = \[(\d+), 1, (\d+), (\d+)\], "
                           r"strides\(\) = \[(\d+), \d+, (\d+), (\d+)\]\s*"
                           r"bucket_view\.sizes\(\) = \[\1, 1, \2, \3\], strides\(\) = \[\4, \d+, \5, \6\]")


def ignore_size_one_stride_warnings() -> None:
    """Silence :data:`SIZE_ONE_STRIDE_WARNING` (a 4-line warning per rank in a CPU WGAN-GP run); DDP's warning
    about strides that differ in a dimension of more than one element still shows."""
    warnings.filterwarnings("ignore", message=SIZE_ONE_STRIDE_WARNING, category=UserWarning)


def start(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1) and pick this rank's device
    (``cuda:LOCAL_RANK`` when ``device`` is CUDA). Returns ``(Distributed, device)``; a no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), device
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun
        stop_with_launcher()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        # Checked by every rank before any joins the group, so that all of them stop with the same one-line error
        # (rather than the extra ranks failing in set_device and the others waiting for them).
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
        gpus = torch.cuda.device_count()
        if per_machine > gpus:
            raise ConfigError(f"--nproc_per_node {per_machine}: this machine has {gpus} GPU"
                              f"{'' if gpus == 1 else 's'}, and each process trains on its own; start at most "
                              f"{gpus} per machine")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # On GPUs the group is bound to this rank's GPU from the start, so NCCL never infers a collective's device
        # (its barrier does, with a warning, when no other collective ran before it).
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return Distributed(rank=rank, world_size=world_size), device


def _as_told(error: Exception) -> tuple[str, int]:
    """An error as another rank reports it: its one line and exit code (1 for an internal error)."""
    if isinstance(error, SpecganError):
        return str(error), error.exit_code
    return f"internal error: {type(error).__name__}: {error}", 1


def lost_rank(error: BaseException, *, distributed: Distributed, run_dir: Path) -> LostRankError | None:
    """The one-line error for ``error`` if it is a collective failing because another rank is gone (killed, out of
    memory, its machine lost), else None. gloo raises a plain RuntimeError naming its transport; NCCL a
    DistBackendError."""
    if not distributed.active or not isinstance(error, RuntimeError):
        return None
    text = str(error)
    if not (isinstance(error, dist.DistError) or "gloo/transport" in text or "Connection closed by peer" in text):
        return None
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    found = list_checkpoints(run_dir)
    where = (f"the newest checkpoint is {found[-1]}; continue with: {continue_command(run_dir)}" if found
             else "no checkpoint was written yet")
    return LostRankError(f"rank {distributed.rank}: lost contact with the other ranks (one of them stopped or was "
                         f"killed: {first_line}); {where}")


#: torchrun's launcher (this worker's parent) once :func:`stop_with_launcher` asked to outlive it by no more than
#: a SIGTERM; None before.
_launcher: int | None = None


def launcher_gone() -> bool:
    """Whether torchrun's launcher has died since :func:`stop_with_launcher` (this worker was handed to another
    parent): a SIGTERM then came from its death, not from a user."""
    return _launcher is not None and os.getppid() != _launcher


def stop_with_launcher() -> None:
    """Ask for SIGTERM when torchrun's launcher dies (Linux's parent-death signal), so that a worker whose launcher
    was killed with SIGKILL stops like one sent SIGTERM (checkpointing its step) instead of training on as an
    orphan. Elsewhere a no-op."""
    global _launcher
    if not sys.platform.startswith("linux"):
        return
    launcher = _launcher = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != launcher:  # the launcher died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def crowded_cpu_note(device: torch.device) -> str | None:
    """A line for the user when ``torchrun`` started more processes on this machine than it has cores for CPU
    training: they then take turns on the cores, and every step waits for the slowest. None otherwise."""
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type != "cpu" or per_machine <= cores:
        return None
    return (f"--nproc_per_node {per_machine} on {cores} CPU core{'' if cores == 1 else 's'}: the processes take "
            f"turns on the cores and each step waits for the slowest; at most {cores} train faster")


#: How long :func:`stop` lets the process group's threads finish with completed collectives, in seconds.
GLOO_SETTLE_SECONDS = 0.05


def stop(distributed: Distributed, *, failed: bool = False) -> None:
    """Leave the process group: after every rank has finished, or at once when this rank ``failed`` (the others
    may never reach a barrier; when they failed too, they have agreed through :meth:`Distributed.together`)."""
    if distributed.active and dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()
        # gloo's worker threads outlive destroy_process_group (DDP's reducers still hold the group) and free a
        # finished collective's tensors after its waiter has returned. Freeing a tensor that Python created takes
        # the GIL; if the interpreter is shutting down by then, the thread is torn down inside a C++ destructor and
        # the process aborts ("terminate called without an active exception": about 1 CPU run in 50 of the
        # two-rank tests). Sleeping releases the GIL, which is all those threads wait for.
        time.sleep(GLOO_SETTLE_SECONDS)

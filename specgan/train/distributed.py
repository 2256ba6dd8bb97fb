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

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from specgan.errors import ConfigError


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
        if not self.active:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def wrap(self, module: nn.Module, *, device: torch.device) -> nn.Module:
        """``module`` inside DistributedDataParallel (gradient averaging), or itself in a single process."""
        if not self.active:
            return module
        ids = [device.index] if device.type == "cuda" else None
        # No buffer broadcast: a GAN calls D twice before one backward, and re-broadcasting batch-norm statistics
        # in place between the calls breaks the first call's graph. BN statistics are synchronised by
        # SyncBatchNorm on CUDA and are each rank's own on CPUs; rank 0's are saved.
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ConfigError(f"train.batch_size = {batch_size}: with {self.world_size} processes the global batch "
                              f"must be a multiple of {self.world_size}")

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def start(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1) and pick this rank's device
    (``cuda:LOCAL_RANK`` when ``device`` is CUDA). Returns ``(Distributed, device)``; a no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), device
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


def stop(distributed: Distributed) -> None:
    """Leave the process group (after every rank has finished)."""
    if distributed.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        # gloo's worker threads outlive destroy_process_group (DDP's reducers still hold the group) and free a
        # finished collective's tensors after its waiter has returned. Freeing a tensor that Python created takes
        # the GIL; if the interpreter is shutting down by then, the thread is torn down inside a C++ destructor and
        # the process aborts ("terminate called without an active exception": about 1 CPU run in 50 of the
        # two-rank tests). Sleeping releases the GIL, which is all those threads wait for.
        time.sleep(GLOO_SETTLE_SECONDS)

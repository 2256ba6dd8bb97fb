"""Choosing the compute device: CUDA when present, then Apple's MPS, then the CPU."""

from __future__ import annotations

import os
import time

import torch

from specgan.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` → cuda, mps or cpu (first available); otherwise the named device, checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available (use --device cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {name}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def fit_cpu_threads() -> str | None:
    """Use only the cores other programs leave free, unless ``OMP_NUM_THREADS`` chooses.

    torch starts one thread per core; when some cores are busy, those threads wait on each other at every
    operation (measured: a CycleGAN step 20x slower with one of two cores busy). The free cores are the usable
    ones minus :func:`busy_cores`, shared among this machine's ranks under torchrun. Returns a line for the user
    when the thread count was lowered, else None.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = busy_cores()
    free = max(1, round(cores - busy) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if free >= torch.get_num_threads():
        return None
    torch.set_num_threads(free)
    # Runnable tasks can outnumber the cores (each then waits its turn): all of them are busy.
    return (f"{min(busy, cores):g} of {cores} cores are busy: using {free} thread(s) (set OMP_NUM_THREADS to "
            f"choose)")


#: The kernel's count of runnable tasks is field 4 of this file ("running/total").
LOADAVG = "/proc/loadavg"
#: Looks at it, LOADAVG_GAP_S apart: a task that wants a core all the time is runnable in each of them.
LOADAVG_LOOKS = 5
LOADAVG_GAP_S = 0.01


def busy_cores() -> float:
    """How many cores other programs are using now: the fewest tasks the kernel had runnable, besides this process
    (which is running while it reads), over a few looks 10 ms apart, so that a short-lived task is not counted.
    Where there is no /proc/loadavg, the 1-minute load average (0 without one).

    Not the load average itself: it remembers the last minute, so a command run just after another (a shell loop
    over files) took the one before it for another program and halved its own threads (0.6 of 2 cores "busy": 45%
    slower on a 5-minute convert).
    """
    try:
        counts = []
        for look in range(LOADAVG_LOOKS):
            if look:
                time.sleep(LOADAVG_GAP_S)
            with open(LOADAVG) as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        return float(max(0, min(counts)))
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0

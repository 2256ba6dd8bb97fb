"""Optimizers and the learning-rate schedule shared by every task."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def adam(params: Iterable[nn.Parameter], *, lr: float, betas: tuple[float, ...],
         device: torch.device) -> torch.optim.Adam:
    """Adam with fused updates on CUDA (one kernel per step; small GANs are bound by kernel launches)."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=device.type == "cuda")


def linear_decay(step: int, *, steps: int, start: float) -> float:
    """Learning-rate factor at ``step`` (1-based) of ``steps``: 1 up to ``first = floor(start · steps)``, then
    falling linearly towards 0, reaching ``1 / (steps - first + 1)`` at the last step (CycleGAN's schedule, per
    step instead of per epoch). ``start = 1`` keeps it constant.

    A pure function of the step, so a resumed run follows the same schedule with no saved scheduler state.
    """
    first = int(start * steps)
    if step <= first:
        return 1.0
    return max(0.0, (steps - step + 1) / (steps - first + 1))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

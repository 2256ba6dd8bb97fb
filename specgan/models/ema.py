"""Exponential moving average of a module's weights (the generator used for samples)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


class EMA:
    """A copy of ``module`` whose parameters follow ``avg ← decay·avg + (1 - decay)·param`` at each update.

    The average starts as a copy of ``module`` at construction. Buffers (BatchNorm running statistics) are
    copied from the live module at every update, not averaged. :attr:`module` is the averaged copy, kept in
    eval mode with gradients off.

    The update rule is torch's :func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`. ``AveragedModel`` itself is
    not used: its state dict carries a ``module.`` prefix and an ``n_averaged`` counter, whereas
    :meth:`state_dict` here is exactly the wrapped module's, so a checkpoint's averaged weights load into a
    plain generator, and the state is then complete, so a resumed run averages exactly like an uninterrupted one.
    """

    def __init__(self, module: nn.Module, *, decay: float = 0.999):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay = {decay}: must be in [0, 1]")
        self.decay = decay
        self._average = get_ema_multi_avg_fn(decay)
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average one step towards ``module``'s parameters; copy its buffers."""
        averaged = list(self.module.parameters())
        live = [p.detach() for p in module.parameters()]
        if len(averaged) != len(live):
            raise ValueError(f"EMA.update: module has {len(live)} parameters, the average {len(averaged)}")
        if averaged:
            self._average(averaged, live, None)
        for mine, theirs in zip(self.module.buffers(), module.buffers(), strict=True):
            mine.copy_(theirs)

    def state_dict(self) -> dict:
        """The averaged module's state dict (loads into a module of the same class)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)

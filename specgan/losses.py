"""Adversarial losses, the WGAN-GP gradient penalty and the discriminator's accuracy.

Pure functions of logits: no logging, no state. :data:`LOSSES` maps a recipe's ``train.loss`` to the pair of
discriminator and generator losses; :func:`d_loss` and :func:`g_loss` look them up. Every loss is a mean over
the batch, returned as a scalar tensor.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from specgan.errors import ConfigError


class AdversarialLoss(NamedTuple):
    """``d(real_logits, fake_logits)`` and ``g(fake_logits)``, each → scalar; ``boundary``: the output at which D
    calls an image neither real nor fake (halfway between its targets), or None when its outputs have no fixed
    scale (a critic): then the boundary is halfway between the batch's mean real and mean fake output."""

    d: Callable[[Tensor, Tensor], Tensor]
    g: Callable[[Tensor], Tensor]
    boundary: float | None = 0.0


def _bce_d(real: Tensor, fake: Tensor) -> Tensor:
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def _bce_g(fake: Tensor) -> Tensor:
    # Non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z))).
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def _lsgan_d(real: Tensor, fake: Tensor) -> Tensor:
    return 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean()


def _lsgan_g(fake: Tensor) -> Tensor:
    return 0.5 * (fake - 1).square().mean()


def _hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()


def _wgan_d(real: Tensor, fake: Tensor) -> Tensor:
    return fake.mean() - real.mean()


def _critic_g(fake: Tensor) -> Tensor:
    return -fake.mean()


#: ``train.loss`` → (D loss, G loss).
#:
#: - ``bce``: the original GAN with the non-saturating G loss (Goodfellow et al. 2014).
#: - ``lsgan``: least squares with targets 1 (real) and 0 (fake), each term halved (Mao et al. 2017).
#: - ``hinge``: ``relu(1 - D(x)) + relu(1 + D(G(z)))`` for D, ``-D(G(z))`` for G (Lim & Ye 2017; SNGAN).
#: - ``wgan``: the critic's ``D(G(z)) - D(x)``, ``-D(G(z))`` for G (Arjovsky et al. 2017); pair it with
#:   :func:`gradient_penalty` (WGAN-GP) rather than weight clipping.
LOSSES: dict[str, AdversarialLoss] = {
    "bce": AdversarialLoss(_bce_d, _bce_g),
    "lsgan": AdversarialLoss(_lsgan_d, _lsgan_g, boundary=0.5),  # targets 1 and 0
    "hinge": AdversarialLoss(_hinge_d, _critic_g),                 # margins at +1 and -1
    "wgan": AdversarialLoss(_wgan_d, _critic_g, boundary=None),
}


def _lookup(name: str) -> AdversarialLoss:
    if name not in LOSSES:
        raise ConfigError(f"train.loss = {name!r}: must be one of {', '.join(LOSSES)}")
    return LOSSES[name]


def d_loss(name: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss ``name`` (see :data:`LOSSES`) on logits ``(N,)`` of real and generated images."""
    return _lookup(name).d(real_logits, fake_logits)


def g_loss(name: str, fake_logits: Tensor) -> Tensor:
    """Generator loss ``name`` (see :data:`LOSSES`) on the discriminator's logits ``(N,)`` of generated images."""
    return _lookup(name).g(fake_logits)


def gradient_penalty(discriminator: nn.Module | Callable[..., Tensor], real: Tensor, fake: Tensor,
                     labels: Tensor | None = None, *, weight: float = 10.0,
                     generator: torch.Generator | None = None, eps: Tensor | None = None) -> Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): ``weight · mean_i (‖∇D(x̂_i)‖₂ - 1)²``.

    ``x̂_i = ε_i·real_i + (1 - ε_i)·fake_i`` with one ``ε_i ~ U(0, 1)`` per sample (drawn from ``generator``,
    which must live on ``real``'s device) unless ``eps`` ``(N, 1, ...)`` is given; the norm is over all non-batch
    dimensions. The interpolates are
    detached, so the penalty trains D only; the graph is kept (``create_graph``) so that it can be
    back-propagated to D's parameters. ``labels`` are passed to D when given.

    Args:
        real, fake: ``(N, ...)`` tensors of the same shape.

    Returns:
        scalar tensor.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    if eps is None:
        eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, device=real.device,
                         dtype=real.dtype)
    mixed = torch.lerp(fake.detach(), real.detach(), eps).requires_grad_(True)
    out = discriminator(mixed) if labels is None else discriminator(mixed, labels)
    (grad,) = torch.autograd.grad(out.sum(), mixed, create_graph=True)
    return weight * (torch.linalg.vector_norm(grad.flatten(1), dim=1) - 1).square().mean()


def d_accuracy(name: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Fraction of all items that D, trained with loss ``name``, classifies right: real ones above the loss's
    boundary (see :class:`AdversarialLoss`: 0 for bce and hinge, 0.5 for lsgan) and fake ones below it. For
    ``wgan``, whose critic outputs have no zero point (only differences matter), the boundary is halfway between
    the mean real and mean fake output: whether one threshold tells them apart.

    A convergence signal for the logs, not a loss.

    Returns:
        float scalar tensor in [0, 1].
    """
    boundary = _lookup(name).boundary
    if boundary is None:
        boundary = (real_logits.float().mean() + fake_logits.float().mean()) / 2
    correct = (real_logits > boundary).sum() + (fake_logits < boundary).sum()
    return correct.float() / (real_logits.numel() + fake_logits.numel())

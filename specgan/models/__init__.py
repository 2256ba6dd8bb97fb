"""Model registry: recipe names (``model.name``) → builders that return the networks of a task."""

from __future__ import annotations

from typing import Callable

from torch import nn

from specgan.errors import ConfigError
from specgan.models.dcgan import Discriminator, Generator


def build_dcgan(*, image_shape: tuple[int, int, int], n_classes: int = 0, z_dim: int = 100, channels: int = 64,
                spectral_norm: bool = False, batch_norm_d: bool = True) -> tuple[Generator, Discriminator]:
    """A DCGAN pair for images of ``image_shape`` ``(C, H, W)``; conditional when ``n_classes > 0``."""
    generator = Generator(image_shape=image_shape, z_dim=z_dim, channels=channels, n_classes=n_classes)
    discriminator = Discriminator(image_shape=image_shape, channels=channels, n_classes=n_classes,
                                  spectral_norm=spectral_norm, batch_norm=batch_norm_d)
    return generator, discriminator


#: ``model.name`` → builder (keyword arguments only).
MODELS: dict[str, Callable[..., tuple[nn.Module, ...]]] = {
    "dcgan": build_dcgan,
}


def build_model(name: str, **kwargs) -> tuple[nn.Module, ...]:
    """Build the networks of the model family ``name`` (see :data:`MODELS`) with the builder's keywords."""
    if name not in MODELS:
        raise ConfigError(f"model.name = {name!r}: must be one of {', '.join(MODELS)}")
    return MODELS[name](**kwargs)

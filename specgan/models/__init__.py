"""Model registry: recipe names (``model.name``) → builders that return the networks of a task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from specgan.errors import ConfigError
from specgan.models.cyclegan import build_cyclegan, build_cyclegan_vc2
from specgan.models.dcgan import Discriminator, Generator


def build_dcgan(*, image_shape: tuple[int, int, int], n_classes: int = 0, z_dim: int = 100, channels: int = 64,
                spectral_norm: bool = False, batch_norm_d: bool = True, embed_dim: int = 0) \
        -> tuple[Generator, Discriminator]:
    """A DCGAN pair for images of ``image_shape`` ``(C, H, W)``; conditional when ``n_classes > 0``, G's label
    embedding of ``embed_dim`` dimensions (0: ``n_classes``)."""
    generator = Generator(image_shape=image_shape, z_dim=z_dim, channels=channels, n_classes=n_classes,
                          embed_dim=embed_dim)
    discriminator = Discriminator(image_shape=image_shape, channels=channels, n_classes=n_classes,
                                  spectral_norm=spectral_norm, batch_norm=batch_norm_d)
    return generator, discriminator


@dataclass(frozen=True)
class ModelFamily:
    """A ``model.name``: the task it serves, the builder of one (generator, discriminator) pair, and what the
    ``"auto"`` speed switches do for it where measured faster: ``train.channels_last`` on a CPU, for the
    precisions it names (``"fp32"``, ``"bf16"``: the one the run computes in), and in compiled CUDA code;
    ``train.precision`` and ``train.compile`` on CUDA."""

    task: str
    build: Callable[..., tuple[nn.Module, nn.Module]]
    channels_last_on_cpu: tuple[str, ...] = ()
    #: ``train.precision = auto`` on CUDA: bf16 autocast, unless the family's step was measured slower so.
    bf16_on_cuda: bool = True
    compile_on_cuda: bool = False
    #: Compiled on CUDA, whether TorchInductor's layout optimisation is forced on: the compiled code computes the
    #: convolutions channels-last whatever the memory order of the weights and images it is given.
    channels_last_compiled_on_cuda: bool = False


#: ``model.name`` → family. ``generate`` builders take ``image_shape, n_classes, z_dim, channels, spectral_norm,
#: batch_norm_d, embed_dim``; ``translate`` builders take ``image_shape, channels, n_blocks`` and are called once per
#: direction.
#: Channels-last on CPUs: on the 2-core AMD EPYC with AVX512-BF16 (bf16), two interleaved measurements each, DCGAN
#: step 1.01x and 1.06x, ResNet CycleGAN step 1.03x and 1.11x faster; CycleGAN-VC2's step 7% slower (its pixel
#: shuffles, channel-split GLUs and 2D↔1D reshapes), so it keeps the contiguous order. In fp32 the DCGAN gains on an
#: Intel Xeon (1.25x the reference against 1.08x contiguous) and on an AMD Zen 3 (1483 and 1568 against 1431 images/s),
#: but the ResNet CycleGAN's step was 1.06x faster contiguous on the Zen 3 (interleaved in one process), and 1.13x
#: with its instance norms as group norms, which only the contiguous layout makes faster (models/instance_norm.py);
#: so in fp32 it stays contiguous. torch.compile with the step recorded as a CUDA graph, on an H100: the ResNet
#: CycleGAN step 1.64x faster (bench/results.md); the others were not measured that way, so stay eager. Compiled
#: with Inductor's layout optimisation forced on (its heuristic leaves it off for these networks, whose last
#: convolutions have one output channel), the ResNet CycleGAN step ran 837 against 715 images/s on an H200, in one
#: round of one process: cuDNN's NCHW <-> NHWC conversions had taken 26% of the compiled step's kernel time.
MODELS: dict[str, ModelFamily] = {
    # DCGAN G and D, from the image shape
    # On an H200 the 28×28 DCGAN step is launch-bound, and autocast's casts are extra kernels: bf16 ran it at 80.9k
    # images/s against fp32's 90.5k (bench/gpu/train_dcgan_cuda.json, CUDA graphs, 2 rounds; 12% slower without, in
    # an earlier session). Only that size was measured; larger DCGANs (64×64 pictures, spectrograms) may differ.
    "dcgan": ModelFamily("generate", build_dcgan, channels_last_on_cpu=("fp32", "bf16"), bf16_on_cuda=False),
    "cyclegan": ModelFamily("translate", build_cyclegan, channels_last_on_cpu=("bf16",),  # ResNet G, PatchGAN D
                            compile_on_cuda=True, channels_last_compiled_on_cuda=True),
    "cyclegan-vc2": ModelFamily("translate", build_cyclegan_vc2),  # CycleGAN-VC2's 2-1-2D gated G, PatchGAN D
}


def models_for(task: str) -> tuple[str, ...]:
    """The ``model.name`` values that serve ``task``."""
    return tuple(name for name, family in MODELS.items() if family.task == task)


def build_model(name: str, **kwargs) -> tuple[nn.Module, nn.Module]:
    """Build the networks of the model family ``name`` (see :data:`MODELS`) with the builder's keywords.

    Raises ConfigError for an unknown name, and for sizes the family cannot take (the builders' ValueErrors: e.g. a
    DCGAN for 27×27 images, whose sides cannot be halved), naming the family and the size."""
    if name not in MODELS:
        raise ConfigError(f"model.name = {name!r}: must be one of {', '.join(MODELS)}")
    try:
        return MODELS[name].build(**kwargs)
    except ValueError as e:
        raise ConfigError(f"model.name = {name!r}: {e}") from None

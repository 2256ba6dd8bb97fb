"""DCGAN (Radford et al. 2016) sized from the image shape, optionally class-conditional.

The generator starts from a small ``h0 × w0`` grid and doubles it ``n`` times with strided transposed
convolutions; the discriminator mirrors it with strided convolutions. :func:`layout` picks ``n`` and ``h0 × w0``
so that any image whose sides are divisible by 2 (28×28 MNIST, 32×32, 64×64, 80×128 spectrogram chunks) works.
The conditional generator concatenates a learned label embedding to ``z``, by default of one dimension per class
(as a one-hot label has: with as many as ``z`` has, MNIST's conditional DCGAN made one image per class at CPU
budgets; see docs/architecture.md); the conditional discriminator is a projection discriminator (Miyato & Koyama
2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

#: Most ×2 stages a model gets (so 256×256 starts from 8×8).
MAX_STAGES = 5
#: Smallest side of the starting grid.
MIN_START = 3
#: The widest layer has at most this many times the base channel count.
MAX_WIDTH_FACTOR = 8


def layout(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Number of ×2 stages ``n`` and the starting grid ``(n, h0, w0)`` for an image shape ``(C, H, W)``.

    ``n`` is the largest value ``≤ MAX_STAGES`` with ``H`` and ``W`` both divisible by ``2**n`` and both
    ``H / 2**n`` and ``W / 2**n`` at least ``MIN_START``: 28×28 → (2, 7, 7), 32×32 → (3, 4, 4),
    64×64 → (4, 4, 4), 80×128 → (4, 5, 8).

    Raises:
        ValueError: for a shape that is not ``(C, H, W)`` with positive sizes, or has no ``n ≥ 1``.
    """
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape = {tuple(image_shape)}: expected (channels, height, width), each >= 1")
    _, height, width = image_shape
    for n in range(MAX_STAGES, 0, -1):
        step = 2 ** n
        if height % step == 0 and width % step == 0 and height // step >= MIN_START and width // step >= MIN_START:
            return n, height // step, width // step
    raise ValueError(f"image_shape = {tuple(image_shape)}: height and width must both be even and at least "
                     f"{2 * MIN_START}, so that halving them leaves at least {MIN_START} rows and columns "
                     f"(e.g. 28x28, 32x32, 64x64, 80x128)")


def _width(channels: int, level: int) -> int:
    """Channel count at ``level`` stages below the full resolution (level 0 is the layer next to the image)."""
    return channels * min(2 ** level, MAX_WIDTH_FACTOR)


def _memory_format(conv: nn.Module) -> torch.memory_format:
    """The memory order of ``conv``'s weight: channels-last when the run placed it so."""
    weight = conv.weight
    if weight.is_contiguous() or not weight.is_contiguous(memory_format=torch.channels_last):
        return torch.contiguous_format
    return torch.channels_last


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv/linear weights ~ N(0, 0.02), BN weights ~ N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _check_labels(labels: Tensor | None, n_classes: int, batch: int, who: str) -> None:
    if n_classes and labels is None:
        raise ValueError(f"{who} is conditional on {n_classes} classes: labels are required")
    if not n_classes and labels is not None:
        raise ValueError(f"{who} is unconditional: labels must be None")
    if labels is not None and labels.shape != (batch,):
        raise ValueError(f"{who}: labels of shape {tuple(labels.shape)} for a batch of {batch}; expected ({batch},)")


class Generator(nn.Module):
    """``z`` ``(N, z_dim)`` (and labels ``(N,)`` int64 when conditional) → images ``(N, C, H, W)`` in [-1, 1].

    A bias-free linear layer maps ``z`` (concatenated with the label embedding, ``embed_dim`` dimensions; 0:
    ``n_classes``) to
    ``min(channels·2**(n-1), channels·8) × h0 × w0``, then BN + ReLU; each of the ``n`` stages is
    ``ConvTranspose2d(4, stride 2, padding 1)`` halving the channels, with BN + ReLU, except the last, which
    goes to ``C`` channels with ``tanh``. In eval mode every item is independent of the rest of the batch.
    """

    def __init__(self, *, image_shape: tuple[int, int, int], z_dim: int = 100, channels: int = 64,
                 n_classes: int = 0, embed_dim: int = 0):
        super().__init__()
        n, h0, w0 = layout(image_shape)
        if z_dim < 1 or channels < 1 or n_classes < 0 or embed_dim < 0:
            raise ValueError(f"z_dim = {z_dim}, channels = {channels}, n_classes = {n_classes}, "
                             f"embed_dim = {embed_dim}: z_dim and channels must be >= 1, the others >= 0")
        self.image_shape = tuple(image_shape)
        self.z_dim, self.n_classes = z_dim, n_classes
        self.start = (_width(channels, n - 1), h0, w0)
        self.embed = nn.Embedding(n_classes, embed_dim or n_classes) if n_classes else None
        in_dim = z_dim + (self.embed.embedding_dim if self.embed is not None else 0)
        self.project = nn.Linear(in_dim, self.start[0] * h0 * w0, bias=False)
        self.project_norm = nn.BatchNorm2d(self.start[0])
        stages: list[nn.Module] = []
        for level in range(n - 1, 0, -1):
            stages += [nn.ConvTranspose2d(_width(channels, level), _width(channels, level - 1), 4, 2, 1, bias=False),
                       nn.BatchNorm2d(_width(channels, level - 1)), nn.ReLU(inplace=True)]
        stages += [nn.ConvTranspose2d(_width(channels, 0), image_shape[0], 4, 2, 1), nn.Tanh()]
        self.stages = nn.Sequential(*stages)
        self.apply(init_dcgan_weights)  # the label embedding keeps N(0, 1), the scale of z it sits next to

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"generator: z of shape {tuple(z.shape)}; expected (N, {self.z_dim})")
        _check_labels(labels, self.n_classes, z.shape[0], "generator")
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        x = self.project(z).view(z.shape[0], *self.start)
        # In the memory order of the convolutions (channels-last runs): batch norm and ReLU then run, and get their
        # gradients, in one layout; mixed layouts send their backward through slow strided loops (measured on CPU).
        x = x.contiguous(memory_format=_memory_format(self.stages[0]))
        return self.stages(torch.relu(self.project_norm(x)))


class Discriminator(nn.Module):
    """Images ``(N, C, H, W)`` (and labels ``(N,)`` when conditional) → raw logits ``(N,)``.

    ``n`` stages of ``Conv2d(4, stride 2, padding 1)`` doubling the channels (capped at ``channels·8``), each
    with BN (not on the first stage, nor anywhere when ``batch_norm=False``, as WGAN-GP needs) and
    LeakyReLU(0.2), down to ``h0 × w0``; the flattened features ``φ(x)`` go through a linear layer to one logit.
    Conditional: ``logit += <embed(label), φ(x)>`` (projection discriminator). With ``spectral_norm`` every
    conv, linear and embedding weight is spectrally normalised.
    """

    def __init__(self, *, image_shape: tuple[int, int, int], channels: int = 64, n_classes: int = 0,
                 spectral_norm: bool = False, batch_norm: bool = True):
        super().__init__()
        n, h0, w0 = layout(image_shape)
        if channels < 1 or n_classes < 0:
            raise ValueError(f"channels = {channels}, n_classes = {n_classes}: channels must be >= 1, "
                             f"n_classes >= 0")
        self.image_shape = tuple(image_shape)
        self.n_classes = n_classes
        stages: list[nn.Module] = []
        in_channels = image_shape[0]
        for level in range(n):
            norm = batch_norm and level > 0
            stages.append(nn.Conv2d(in_channels, _width(channels, level), 4, 2, 1, bias=not norm))
            if norm:
                stages.append(nn.BatchNorm2d(_width(channels, level)))
            stages.append(nn.LeakyReLU(0.2))
            in_channels = _width(channels, level)
        self.stages = nn.Sequential(*stages)
        features = in_channels * h0 * w0
        self.head = nn.Linear(features, 1)
        self.embed = nn.Embedding(n_classes, features) if n_classes else None
        self.apply(init_dcgan_weights)
        if self.embed is not None:
            # N(0, 1) would make the projection term ~sqrt(features) times larger than the linear head's logit.
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if spectral_norm:
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    _spectral_norm(module)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"discriminator: input of shape {tuple(x.shape)}; expected (N, "
                             f"{', '.join(map(str, self.image_shape))})")
        _check_labels(labels, self.n_classes, x.shape[0], "discriminator")
        x = self.stages(x)                              # (N, C, h0, w0), in the convolutions' memory order
        n, c, h, w = x.shape
        weight = self.head.weight                       # (1, C·h0·w0), in (C, h0, w0) order
        projection = self.embed(labels) if self.embed is not None else None
        if x.is_contiguous():
            features = x.flatten(1)
        else:
            # Channels-last: read the features in their memory order (h0, w0, C), a view, and the weights in the
            # same order, instead of copying x into (C, h0, w0) order and its gradient back. The 28×28 DCGAN step
            # on the 2-core CPU was 6% faster so (interleaved in one process) than with that copy made before the
            # last batch norm (made after it, LeakyReLU's backward had taken 10× longer: mixed layouts).
            features = x.permute(0, 2, 3, 1).reshape(n, -1)

            def in_memory_order(t: Tensor) -> Tensor:
                return t.view(-1, c, h, w).permute(0, 2, 3, 1).reshape(t.shape[0], -1)

            weight = in_memory_order(weight)
            projection = in_memory_order(projection) if projection is not None else None
        logits = F.linear(features, weight, self.head.bias).squeeze(1)
        if projection is not None:
            logits = logits + (projection * features).sum(dim=1)
        return logits

"""Translation networks: one-channel log-mel images ``(N, 1, H=n_mels, W=frames)`` in [-1, 1] → the same shape.

- :class:`ResnetGenerator`: CycleGAN's generator (Zhu et al. 2017; Johnson et al. 2016), as in the authors'
  reference code (``resnet_6blocks``/``resnet_9blocks``, instance norm without affine parameters).
- :class:`GatedGenerator`: CycleGAN-VC2's 2-1-2D generator with gated linear units (Kaneko et al. 2019).
- :class:`PatchDiscriminator`: the 70×70 PatchGAN (pix2pix ``NLayerDiscriminator``), a map of patch logits.

Sizes: both generators down-sample by 4 in total, so an input whose side is not a multiple of 4 is
reflection-padded at its end (highest mel bands, last frames) up to the next multiple and the output is cropped back:
any ``H, W ≥ 8`` gives an output of exactly ``(N, 1, H, W)``. Both are fully convolutional along time, so the
number of frames may differ from call to call. :class:`GatedGenerator` mixes the frequency axis in its 1D part,
so its ``n_mels`` is fixed when it is built. :class:`PatchDiscriminator` uses fewer stride-2 layers for small
images so that its logit map stays at least 2×2.

Weights follow the reference code's ``init_type='normal'``: every conv weight ~ N(0, 0.02), biases 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from specgan.models.instance_norm import InstanceNorm2d
from specgan.models.one_channel_conv import OneChannelConv2d

#: Total down-sampling factor of both generators: inputs are padded to a multiple of it.
FACTOR = 4
#: Smallest height and width any network here accepts.
MIN_SIDE = 8
#: The discriminator's widest layer has at most this many times the base channel count.
MAX_WIDTH_FACTOR = 8


def init_normal_weights(module: nn.Module) -> None:
    """CycleGAN/pix2pix ``init_type='normal'``, gain 0.02: conv weights ~ N(0, 0.02), biases 0.

    Affine instance-norm parameters keep PyTorch's 1 and 0 (the reference re-initialises only batch norm).
    """
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _check_positive(**values: int) -> None:
    bad = {name: value for name, value in values.items() if value < 1}
    if bad:
        raise ValueError(", ".join(f"{name} = {value}" for name, value in bad.items()) + ": must be >= 1")


def _check_image(x: Tensor, who: str, channels: int = 1) -> None:
    if x.dim() != 4 or x.shape[1] != channels or x.shape[2] < MIN_SIDE or x.shape[3] < MIN_SIDE:
        raise ValueError(f"{who}: input of shape {tuple(x.shape)}; expected (N, {channels}, H, W) with H and W "
                         f">= {MIN_SIDE}")


def _check_image_shape(image_shape: tuple[int, ...], who: str) -> None:
    if len(image_shape) != 3 or image_shape[0] < 1 or min(image_shape[1:]) < MIN_SIDE:
        raise ValueError(f"{who}: image_shape = {tuple(image_shape)}; expected (channels, n_mels, frames) with "
                         f"n_mels and frames >= {MIN_SIDE}")


def _pad_amount(size: int) -> int:
    return -size % FACTOR


class ReflectionPad2d(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` that pads in its input's dtype under autocast.

    CPU autocast runs reflection padding in fp32 (it is on that autocast's fp32 list), so a bf16 feature map would
    be cast up, padded, and cast back down by the next convolution, and each cast has a backward: on the 2-core
    CPU the CycleGAN step took 258 ms with them and 244 ms without. Padding only copies values, so padding in bf16
    gives exactly the bf16 tensor the convolution would have received; only the gradients of the border, which
    add up, are summed in bf16. CUDA autocast leaves padding alone, so nothing changes there.
    """

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x)


class ResnetBlock(nn.Module):
    """``(N, C, H, W)`` → ``(N, C, H, W)``: ``x + body(x)``, body = reflect pad 1, conv 3×3, IN, ReLU, reflect
    pad 1, conv 3×3, IN."""

    def __init__(self, *, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), InstanceNorm2d(channels), nn.ReLU(True),
            ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), InstanceNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's generator: images ``(N, 1, H, W)`` in [-1, 1] → ``(N, 1, H, W)`` in [-1, 1], any ``H, W ≥ 8``.

    ReflectionPad(3), conv 7×7 (1 → c), IN, ReLU; two conv 3×3 stride 2 (c → 2c → 4c) with IN + ReLU, giving
    ``(N, 4c, H/4, W/4)``; ``n_blocks`` :class:`ResnetBlock` at 4c; two ConvTranspose 3×3 stride 2
    (output_padding 1; 4c → 2c → c) with IN + ReLU; ReflectionPad(3), conv 7×7 (c → 1), tanh. Instance norm
    has no affine parameters and every conv keeps its bias, as in the reference code. ``H`` and ``W`` are
    reflection-padded at their end to a multiple of 4 and the output is cropped back to ``H × W``; both may
    change from call to call.
    """

    def __init__(self, *, channels: int = 64, n_blocks: int = 6):
        super().__init__()
        _check_positive(channels=channels)
        if n_blocks < 0:
            raise ValueError(f"n_blocks = {n_blocks}: must be >= 0")
        c = channels
        layers: list[nn.Module] = [ReflectionPad2d(3), OneChannelConv2d(1, c, 7), InstanceNorm2d(c), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(c * mult, c * mult * 2, 3, stride=2, padding=1), InstanceNorm2d(c * mult * 2),
                       nn.ReLU(True)]
        layers += [ResnetBlock(channels=4 * c) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(c * mult, c * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       InstanceNorm2d(c * mult // 2), nn.ReLU(True)]
        layers += [ReflectionPad2d(3), OneChannelConv2d(c, 1, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.apply(init_normal_weights)

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, "ResnetGenerator")
        height, width = x.shape[2:]
        x = F.pad(x, (0, _pad_amount(width), 0, _pad_amount(height)), mode="reflect")
        return self.model(x)[:, :, :height, :width]


def _pair(kernel_size) -> tuple[int, int]:
    return (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)


def _glu_conv2d(in_channels: int, out_channels: int, kernel_size, *, stride: int = 1, norm: bool = True,
                shuffle: bool = False) -> nn.Sequential:
    """Conv producing ``2·out_channels`` (×4 before a pixel shuffle), [PixelShuffle(2)], [IN], GLU over channels."""
    conv = OneChannelConv2d if in_channels == 1 else nn.Conv2d
    layers: list[nn.Module] = [conv(in_channels, 2 * out_channels * (4 if shuffle else 1), kernel_size,
                                    stride=stride, padding=tuple(k // 2 for k in _pair(kernel_size)))]
    if shuffle:
        layers.append(nn.PixelShuffle(2))
    if norm:
        layers.append(InstanceNorm2d(2 * out_channels, affine=True))
    layers.append(nn.GLU(dim=1))
    return nn.Sequential(*layers)


class GatedResBlock1d(nn.Module):
    """``(N, C, T)`` → ``(N, C, T)``: x + [conv 3 (C → 2C), IN, GLU, conv 3 (C → C), IN](x)."""

    def __init__(self, *, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(channels, 2 * channels, 3, padding=1), nn.InstanceNorm1d(2 * channels, affine=True),
            nn.GLU(dim=1),
            nn.Conv1d(channels, channels, 3, padding=1), nn.InstanceNorm1d(channels, affine=True))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class GatedGenerator(nn.Module):
    """CycleGAN-VC2's 2-1-2D generator: ``(N, 1, n_mels, W)`` in [-1, 1] → ``(N, 1, n_mels, W)`` in [-1, 1].

    With ``c = channels`` (widths after each GLU; ``c = 64`` gives the paper's 128, 256, 256, 256, 128, 64):

    - conv (5, 15) → GLU: 2c channels (no norm, as in the paper);
    - two down-sampling blocks, conv 5×5 stride 2 → IN → GLU: 4c, 4c channels at ``(H/4, W/4)``;
    - reshape ``(N, 4c, H/4, W/4)`` → ``(N, 4c·H/4, W/4)``; conv1d 1×1 → 4c, IN;
    - ``n_blocks`` :class:`GatedResBlock1d` at 4c;
    - conv1d 1×1 → 4c·H/4, IN; reshape back to ``(N, 4c, H/4, W/4)``;
    - two up-sampling blocks, conv 5×5 → PixelShuffle(2) → IN → GLU: 2c, c channels;
    - conv (5, 15) → 1 channel, tanh.

    The paper's output is linear because its features are standardised mel-cepstra; ours are images in
    [-1, 1], hence tanh. Every GLU is ``F.glu`` over channels of a conv that produces twice the width. Instance
    norms are affine (the paper does not say; the common re-implementations are): without a learned scale and
    shift, a normalised gate could never be driven to stay shut or open.

    The 1D part mixes all frequency rows, so ``n_mels`` is fixed at construction (padded to a multiple of 4
    there, by reflecting the highest bands) and other heights raise ``ValueError``; the number of frames is free
    (``≥ 8``, reflection-padded at the end to a multiple of 4 at run time and cropped back).
    """

    def __init__(self, *, n_mels: int, channels: int = 64, n_blocks: int = 6):
        super().__init__()
        _check_positive(channels=channels)
        if n_mels < MIN_SIDE:
            raise ValueError(f"GatedGenerator: n_mels = {n_mels}; must be >= {MIN_SIDE}")
        if n_blocks < 0:
            raise ValueError(f"n_blocks = {n_blocks}: must be >= 0")
        c = channels
        self.n_mels = n_mels
        self.bottom = (4 * c, (n_mels + _pad_amount(n_mels)) // FACTOR)  # channels and rows at H/4
        flat = self.bottom[0] * self.bottom[1]
        self.encode = nn.Sequential(
            _glu_conv2d(1, 2 * c, (5, 15), norm=False),
            _glu_conv2d(2 * c, 4 * c, 5, stride=2),
            _glu_conv2d(4 * c, 4 * c, 5, stride=2))
        self.to_1d = nn.Sequential(nn.Conv1d(flat, 4 * c, 1), nn.InstanceNorm1d(4 * c, affine=True))
        self.blocks = nn.Sequential(*[GatedResBlock1d(channels=4 * c) for _ in range(n_blocks)])
        self.to_2d = nn.Sequential(nn.Conv1d(4 * c, flat, 1), nn.InstanceNorm1d(flat, affine=True))
        self.decode = nn.Sequential(
            _glu_conv2d(4 * c, 2 * c, 5, shuffle=True),
            _glu_conv2d(2 * c, c, 5, shuffle=True),
            OneChannelConv2d(c, 1, (5, 15), padding=(2, 7)), nn.Tanh())
        self.apply(init_normal_weights)

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, "GatedGenerator")
        if x.shape[2] != self.n_mels:
            raise ValueError(f"GatedGenerator: input of shape {tuple(x.shape)} has {x.shape[2]} mel bands; this "
                             f"model was built for n_mels = {self.n_mels}")
        height, width = x.shape[2:]
        x = F.pad(x, (0, _pad_amount(width), 0, _pad_amount(height)), mode="reflect")
        h = self.encode(x)
        n, frames = h.shape[0], h.shape[3]
        h = self.to_2d(self.blocks(self.to_1d(h.reshape(n, -1, frames))))
        return self.decode(h.view(n, *self.bottom, frames))[:, :, :height, :width]


def patch_layers(image_shape: tuple[int, int, int], n_layers: int) -> int:
    """Stride-2 layers a :class:`PatchDiscriminator` uses for ``image_shape``: at most ``n_layers``, and few
    enough that the logit map stays at least 2×2, i.e. ``min(H, W) ≥ 2**(n + 2)``.

    Each stride-2 conv (4×4, padding 1) floors the side to ``side // 2``; the two stride-1 4×4 convs then take
    3 rows and columns off, so a side ``s`` ends as ``s // 2**n - 2``. 36×40 → 3, 16×64 → 2, 8×8 → 1.
    """
    _check_image_shape(image_shape, "PatchDiscriminator")
    _check_positive(n_layers=n_layers)
    side = min(image_shape[1:])
    n = n_layers
    while side < 2 ** (n + 2):
        n -= 1
    return n


class PatchDiscriminator(nn.Module):
    """pix2pix/CycleGAN PatchGAN: images ``(N, C, H, W)`` → patch logits ``(N, 1, h, w)`` (no sigmoid).

    Conv 4×4 stride 2 (C → c) + LeakyReLU(0.2); ``n - 1`` convs 4×4 stride 2 doubling the width (capped at 8c)
    with IN + LeakyReLU; conv 4×4 stride 1 (width doubled once more, capped at 8c) + IN + LeakyReLU; conv 4×4
    stride 1 → 1 channel. With ``n = n_layers = 3`` each logit sees a 70×70 patch. For small images ``n`` is
    reduced (see :func:`patch_layers`; stored as ``self.n_layers``) so that ``h, w ≥ 2``. Fully convolutional:
    inputs of another size work as long as both sides are at least ``2**(n + 2)``.
    """

    def __init__(self, *, image_shape: tuple[int, int, int], channels: int = 64, n_layers: int = 3):
        super().__init__()
        _check_positive(channels=channels)
        self.n_layers = patch_layers(image_shape, n_layers)
        self.image_shape = tuple(image_shape)
        c = channels
        layers: list[nn.Module] = [nn.Conv2d(image_shape[0], c, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = c
        for level in range(1, self.n_layers + 1):
            stride = 2 if level < self.n_layers else 1
            new_width = c * min(2 ** level, MAX_WIDTH_FACTOR)
            layers += [nn.Conv2d(width, new_width, 4, stride=stride, padding=1), InstanceNorm2d(new_width),
                       nn.LeakyReLU(0.2, True)]
            width = new_width
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        self.apply(init_normal_weights)

    def forward(self, x: Tensor) -> Tensor:
        side = 2 ** (self.n_layers + 2)
        if x.dim() != 4 or x.shape[1] != self.image_shape[0] or min(x.shape[2:]) < side:
            raise ValueError(f"PatchDiscriminator: input of shape {tuple(x.shape)}; expected (N, "
                             f"{self.image_shape[0]}, H, W) with H and W >= {side}")
        return self.model(x)


def _check_one_channel(image_shape: tuple[int, ...], who: str) -> None:
    _check_image_shape(image_shape, who)
    if image_shape[0] != 1:
        raise ValueError(f"{who}: image_shape = {tuple(image_shape)}; translation models take 1-channel images")


def build_cyclegan(*, image_shape: tuple[int, int, int], channels: int = 64,
                   n_blocks: int = 6) -> tuple[ResnetGenerator, PatchDiscriminator]:
    """One direction of a CycleGAN for ``(1, n_mels, frames)`` images: a generator and its discriminator."""
    _check_one_channel(image_shape, "cyclegan")
    return (ResnetGenerator(channels=channels, n_blocks=n_blocks),
            PatchDiscriminator(image_shape=image_shape, channels=channels))


def build_cyclegan_vc2(*, image_shape: tuple[int, int, int], channels: int = 64,
                       n_blocks: int = 6) -> tuple[GatedGenerator, PatchDiscriminator]:
    """One direction of a CycleGAN-VC2 for ``(1, n_mels, frames)`` images: a 2-1-2D gated generator and a
    PatchGAN discriminator."""
    _check_one_channel(image_shape, "cyclegan_vc2")
    return (GatedGenerator(n_mels=image_shape[1], channels=channels, n_blocks=n_blocks),
            PatchDiscriminator(image_shape=image_shape, channels=channels))

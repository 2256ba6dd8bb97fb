"""A ``Conv2d`` for the layers at an image's edge, where one side has a single channel, computed faster on the CPU.

oneDNN, PyTorch's CPU convolution library, pads a single channel to a block of 16 in its vectorised kernels, so the
direction of a convolution that *produces* one channel wastes most of its work: the forward pass of a ``C → 1``
convolution, and the gradient of the input of a ``1 → C`` one. Both are sums over ``C`` channels of one-channel
convolutions, which is what a depthwise (grouped) convolution computes before the sum. Measured on the 2-core AMD
EPYC, bf16 autocast, channels-last, the CycleGAN generator's 7×7 layers on a batch of 16 ``86×70`` maps:

======================================  ========  =========================
                                        oneDNN    depthwise + channel sum
======================================  ========  =========================
``16 → 1`` forward                      4.8 ms    1.0 ms
``1 → 16`` gradient of the input        5.3 ms    1.8 ms
======================================  ========  =========================

The CycleGAN step (16 channels, 3 blocks, batch 8) took 4.5% less time with both layers of each generator so
computed, and the CycleGAN-VC2 step 2.8% less with its first layer's (1 → 4c, 5×15) input gradient so computed.
:class:`OneChannelConv2d` takes that route for those two directions, and the forward one only for square kernels:
a depthwise convolution with a 5×15 kernel was slower than oneDNN's one-channel output in every layout measured,
and in bf16 channels-last oneDNN ran one for minutes (the transposed one behind the input gradient ran in
milliseconds in all four). Every other direction (but the float32 ones below), and every other device, is the
library's. The results are the convolution's own up to rounding: each channel's term is rounded to the compute
dtype before the terms are added in float32.

In float32 three more parts leave oneDNN, which is slow wherever one side has a single channel:

- the input gradient of a ``C → 1`` layer is the ``1 → C`` convolution it is the adjoint of, with the kernels
  flipped (oneDNN's fast one-input-channel forward);
- the forward pass of a ``C → 1`` layer whose kernel is not square (CycleGAN-VC2's last, 5×15) is the adjoint of
  that flipped ``1 → C`` convolution (``conv_transpose2d``), 3.5× faster than oneDNN's forward, which ran at
  about 4 GFLOP/s;
- the weight gradient of every layer with one channel on a side is one batched matrix product against the
  single channel unfolded into its ``kh·kw`` shifts (:func:`_weight_gradient_by_unfolding`), 2-5× faster than
  oneDNN's. A depthwise convolution with the output gradient as its kernels computes the same and was sometimes
  faster still, but oneDNN's depthwise convolutions ran 1-4× slower from one call to the next on the same
  shapes, so the matrix product, whose time is steady, was chosen.

Before these, oneDNN's forward and backward passes of CycleGAN-VC2's ``16 → 1`` 5×15 layer took a quarter of its
training step on that CPU.

``bench/edge_convolutions.py`` times each edge layer's forward and backward pass against ``nn.Conv2d``. On the
2-core AMD Zen 3 (float32, 80×64 outputs, fresh operands each call; two runs) it measured 1.6-2.5× for the
ResNet's ``1 → 16`` 7×7 layer, 2.1-4.0× for its ``16 → 1``, 1.0-2.0× for CycleGAN-VC2's ``1 → 64`` 5×15 (the
input gradient is the gain) and 4.5-5.0× for its ``16 → 1`` 5×15. Interleaved in one process, the whole CycleGAN step
(batch 8) ran 1.06× faster than with the previous routes, and the CycleGAN-VC2 step 1.23× (medians of 8 and 4
interleaved rounds).
bf16 was not measured on a CPU with bf16 instructions, so it keeps the library's backward and, for kernels that
are not square, its forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def _one_output(weight: Tensor) -> bool:
    """Whether a convolution with ``weight`` ``(out, in, kh, kw)`` makes one output channel from several."""
    return weight.shape[0] == 1 and weight.shape[1] > 1


def _one_input(weight: Tensor) -> bool:
    """Whether it makes several output channels from one input channel."""
    return weight.shape[1] == 1 and weight.shape[0] > 1


def _depthwise_forward(weight: Tensor) -> bool:
    """Whether its forward pass is a depthwise convolution and a channel sum: one output channel, square kernel."""
    return _one_output(weight) and weight.shape[2] == weight.shape[3]


def _adjoint_forward(weight: Tensor, dtype: torch.dtype) -> bool:
    """Whether its forward pass is the adjoint of the ``1 → C`` convolution with the kernels flipped
    (:func:`_flipped`): one output channel, a kernel that is not square, in float32 (where it was measured)."""
    return _one_output(weight) and weight.shape[2] != weight.shape[3] and dtype == torch.float32


def _flipped_input_gradient(weight: Tensor, dtype: torch.dtype) -> bool:
    """Whether the gradient of the input of a ``C → 1`` convolution is computed as the ``1 → C`` convolution it
    is, with the kernels flipped (:func:`_flipped`): in float32 (where it was measured)."""
    return _one_output(weight) and dtype == torch.float32


def _unfolded_weight_gradient(weight: Tensor, dtype: torch.dtype) -> bool:
    """Whether the weight gradient is computed by :func:`_weight_gradient_by_unfolding` (one channel on either
    side) when the layer computes in ``dtype``: in float32, where it was measured faster."""
    return (_one_output(weight) or _one_input(weight)) and dtype == torch.float32


def _flipped(weight: Tensor) -> Tensor:
    """``(1, C, kh, kw)`` → ``(C, 1, kh, kw)``, each kernel turned by 180°: the ``1 → C`` convolution whose adjoint is
    the ``C → 1`` one, and the other way round (with :func:`_adjoint_padding`)."""
    return weight.transpose(0, 1).flip(2, 3)


def _adjoint_padding(weight: Tensor, padding: tuple[int, int]) -> tuple[int, int]:
    """The padding of the flipped convolution: the rest of the kernel (``k - 1 - p`` on each axis)."""
    return weight.shape[2] - 1 - padding[0], weight.shape[3] - 1 - padding[1]


def _correlate_with_shifts(single: Tensor, many: Tensor, kernel_size: tuple[int, int]) -> Tensor:
    """``r[m, i, j] = Σ_n Σ_hw many[n, m, h, w] · single[n, 0, h + i, w + j]`` for ``i < kh, j < kw``.

    ``single`` ``(N, 1, H + kh - 1, W + kw - 1)`` and ``many`` ``(N, M, H, W)`` give ``(M, kh, kw)``: one batched
    matrix product of ``many`` against the ``kh·kw`` shifted copies of the single channel (its im2col, ``N·kh·kw·H·W``
    values, small because it is one channel), summed over the batch.
    """
    n, m, h, w = many.shape
    kh, kw = kernel_size
    shifted = single[:, 0].unfold(1, h, 1).unfold(2, w, 1).reshape(n, kh * kw, h * w)  # [n, (i, j), (h, w)]
    return torch.bmm(many.reshape(n, m, h * w), shifted.transpose(1, 2)).sum(0).view(m, kh, kw)


def _weight_gradient_by_unfolding(x: Tensor, grad: Tensor, weight_shape: torch.Size,
                                  padding: tuple[int, int]) -> Tensor:
    """``dL/dw`` ``(O, C, kh, kw)`` of a stride-1 convolution with one input or one output channel, from its input
    ``x`` ``(N, C, H', W')`` (before ``padding``) and output gradient ``grad`` ``(N, O, H, W)``.

    ``dw[o, c, i, j] = Σ_n Σ_hw grad[n, o, h, w] · x_padded[n, c, h + i, w + j]``. With ``C = 1`` that is
    :func:`_correlate_with_shifts` of ``x_padded`` against ``grad``. With ``O = 1``, substituting ``u = h + i``
    turns it into ``Σ x_padded[n, c, u, v] · grad[n, u - i, v - j]``: the same correlation of ``grad`` (padded by
    the kernel less one on each side) against ``x_padded``, the kernel flipped.
    """
    kh, kw = weight_shape[2:]
    ph, pw = padding
    x = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    if weight_shape[1] == 1:
        return _correlate_with_shifts(x, grad, (kh, kw)).unsqueeze(1)
    grad = F.pad(grad, (kw - 1, kw - 1, kh - 1, kh - 1))
    return _correlate_with_shifts(grad, x, (kh, kw)).flip(1, 2).unsqueeze(0)


def _channel_sum(terms: Tensor, dtype: torch.dtype) -> Tensor:
    """``(N, C, H, W)`` → ``(N, 1, H, W)``, summed in float32, returned in ``dtype``."""
    return terms.sum(1, keepdim=True, dtype=torch.float32).to(dtype)


class _OneChannelConv(torch.autograd.Function):
    """``conv2d(x, weight, bias, padding=padding)`` (stride 1), each part by the route the predicates above choose
    for the weight's shape and the dtype, every other part by ``F.conv2d`` and ``aten.convolution_backward``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        if _adjoint_forward(weight, x.dtype):
            return F.conv_transpose2d(x, _flipped(weight), bias, padding=_adjoint_padding(weight, padding))
        if not _depthwise_forward(weight):
            return F.conv2d(x, weight, bias, padding=padding)
        channels = weight.shape[1]
        terms = F.conv2d(x, weight.reshape(channels, 1, *weight.shape[2:]), padding=padding, groups=channels)
        out = terms.sum(1, keepdim=True, dtype=torch.float32)
        if bias is not None:
            out += bias.float().view(1, 1, 1, 1)
        return out.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias, _ = ctx.needs_input_grad
        one_input = _one_input(weight)
        flipped = need_x and _flipped_input_gradient(weight, grad.dtype)
        unfolded = need_weight and _unfolded_weight_gradient(weight, grad.dtype)
        library = [need_x and not one_input and not flipped, need_weight and not unfolded]
        if any(library):
            grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], list(ctx.padding), [1, 1],
                False, [0, 0], 1, [*library, need_bias])
        else:  # oneDNN's backward costs milliseconds even for the bias alone
            grad_x = grad_weight = None
            grad_bias = grad.sum((0, 2, 3), dtype=torch.float32).to(grad.dtype) if need_bias else None
        if need_x and one_input:
            # The adjoint of a 1 → C convolution: each channel's transposed convolution, summed.
            grad_x = _channel_sum(F.conv_transpose2d(grad, weight, padding=ctx.padding, groups=weight.shape[0]),
                                  x.dtype)
        if flipped:
            # The adjoint of a C → 1 convolution (stride 1) is a 1 → C one with each kernel flipped, padded by the
            # rest of the kernel: oneDNN's fast one-input-channel forward instead of its slow one-output backward.
            grad_x = F.conv2d(grad, _flipped(weight), padding=_adjoint_padding(weight, ctx.padding))
        if unfolded:
            grad_weight = _weight_gradient_by_unfolding(x, grad, weight.shape, ctx.padding)
        return grad_x, grad_weight, grad_bias, None


class OneChannelConv2d(nn.Conv2d):
    """``nn.Conv2d`` (the same parameters and state dict) that computes the parts oneDNN is slow at, where one side
    has a single channel, another way on the CPU (see the module docstring): with stride 1, no dilation, no groups
    and zero padding within the kernel's reach. Anywhere else it is ``nn.Conv2d``. Under CPU autocast it computes
    in the autocast dtype, as ``nn.Conv2d`` does."""

    def _takes_own_route(self, x: Tensor) -> bool:
        """Whether :class:`_OneChannelConv` computes this call (some part of it faster than ``nn.Conv2d``)."""
        w, dtype = self.weight, self._compute_dtype(x)
        gains = (_depthwise_forward(w) or _adjoint_forward(w, dtype) or (_one_input(w) and x.requires_grad)
                 or (torch.is_grad_enabled() and w.requires_grad and _unfolded_weight_gradient(w, dtype)))
        # The flipped convolutions pad by k - 1 - p, which must not be negative.
        padding_within_kernel = (not isinstance(self.padding, str)
                                 and all(p < k for p, k in zip(self.padding, self.kernel_size)))
        return (x.is_cpu and gains and self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros" and padding_within_kernel)

    @staticmethod
    def _compute_dtype(x: Tensor) -> torch.dtype:
        """The dtype ``nn.Conv2d`` computes ``x`` in: autocast's under CPU autocast, else ``x``'s."""
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype

    def forward(self, x: Tensor) -> Tensor:
        if not self._takes_own_route(x):
            return super().forward(x)
        dtype = self._compute_dtype(x)
        bias = self.bias.to(dtype) if self.bias is not None else None
        with torch.autocast("cpu", enabled=False):
            return _OneChannelConv.apply(x.to(dtype), self.weight.to(dtype), bias, tuple(self.padding))

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
:class:`OneChannelConv2d` takes that route for those two directions only, and the forward one only for square
kernels: a depthwise convolution with a 5×15 kernel was slower than oneDNN's one-channel output in every layout
measured, and in bf16 channels-last oneDNN ran one for minutes (the transposed one behind the input gradient ran
in milliseconds in all four). Every other direction (but the float32 ones below), and every other device, is the
library's. The results are the convolution's own up to rounding: each channel's term is rounded to the compute
dtype before the terms are added in float32.

In float32 two more parts of the backward pass leave oneDNN's convolution backward, which is slow wherever one
side has a single channel. Measured on the 2-core AMD Zen 3, contiguous float32, 16 channels, 80×64 outputs,
interleaved (batch 8 / batch 16):

============================================  ==================  =========================================
                                              oneDNN              instead
============================================  ==================  =========================================
``16 → 1`` gradient of the input              10.8 / 22.7 ms      6.2 / 12.4 ms: the ``1 → 16`` convolution
                                                                  with the kernels flipped
``1 → 16`` weight gradient (and bias)         7.4 / 14.9 ms       3.0 / 6.1 ms: input and output gradient
                                                                  convolved, batch as channels; bias a sum
============================================  ==================  =========================================

With them the CycleGAN step took 529 against 564 ms (median of 16 interleaved rounds of 4 steps; the per-round
ratio ranged from 0.91 to 1.26 on that noisy VM). CycleGAN-VC2's 5×15 weight gradient was slower that way, so
that one stays with oneDNN; bf16 was not measured, so it keeps the library's backward there too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def _depthwise_forward(weight: Tensor) -> bool:
    """Whether a convolution with ``weight`` ``(out, in, kh, kw)`` computes its forward pass as a depthwise one: one
    output channel from several, with a square kernel."""
    return weight.shape[0] == 1 and weight.shape[1] > 1 and weight.shape[2] == weight.shape[3]


def _depthwise_input_gradient(weight: Tensor) -> bool:
    """Whether it computes the gradient of its input as a transposed depthwise one: one input channel to several."""
    return weight.shape[1] == 1 and weight.shape[0] > 1


def _flipped_input_gradient(weight: Tensor, grad: Tensor) -> bool:
    """Whether the gradient of the input of a ``C → 1`` convolution (a depthwise-forward one) is computed as the
    ``1 → C`` convolution it is, with the kernels transposed and flipped: in float32 (where it was measured)."""
    return _depthwise_forward(weight) and grad.dtype == torch.float32


def _batch_as_channels_weight_gradient(weight: Tensor, grad: Tensor) -> bool:
    """Whether the weight gradient of a ``1 → C`` convolution is computed as one convolution of the input with the
    output gradient, the batch taking the place of the channels: square kernels in float32, where it was measured
    faster (CycleGAN-VC2's 5×15 kernel was slower so)."""
    return (_depthwise_input_gradient(weight) and weight.shape[2] == weight.shape[3]
            and grad.dtype == torch.float32)


def _channel_sum(terms: Tensor, dtype: torch.dtype) -> Tensor:
    """``(N, C, H, W)`` → ``(N, 1, H, W)``, summed in float32, returned in ``dtype``."""
    return terms.sum(1, keepdim=True, dtype=torch.float32).to(dtype)


class _OneChannelConv(torch.autograd.Function):
    """``conv2d(x, weight, bias, padding=padding)`` (stride 1): the one-channel output (forward) or the one-channel
    input's gradient (backward) as a depthwise convolution and a channel sum where :func:`_depthwise_forward` and
    :func:`_depthwise_input_gradient` say so, every other part by ``F.conv2d`` and ``aten.convolution_backward``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
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
        one_input = _depthwise_input_gradient(weight)
        flipped = need_x and _flipped_input_gradient(weight, grad)
        batch_as_channels = need_weight and _batch_as_channels_weight_gradient(weight, grad)
        library = [need_x and not one_input and not flipped, need_weight and not batch_as_channels]
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
            kh, kw = weight.shape[2:]
            grad_x = F.conv2d(grad, weight.transpose(0, 1).flip(2, 3),
                              padding=(kh - 1 - ctx.padding[0], kw - 1 - ctx.padding[1]))
        if batch_as_channels:
            # dL/dw[o, 0, i, j] = Σ_n Σ_hw grad[n, o, h, w] · x_padded[n, 0, h + i, w + j]: a convolution of the
            # input (batch as channels) with the output gradient (the same), giving (1, C, kh, kw).
            grad_weight = F.conv2d(x.transpose(0, 1), grad.transpose(0, 1), padding=ctx.padding).transpose(0, 1)
        return grad_x, grad_weight, grad_bias, None


class OneChannelConv2d(nn.Conv2d):
    """``nn.Conv2d`` (the same parameters and state dict) that computes the one-channel direction as a depthwise
    convolution and a channel sum (see the module docstring) on the CPU: the forward pass when it has one output
    channel and a square kernel, the gradient of the input when it has one input channel and that gradient is
    wanted; with stride 1, no dilation, no groups and zero padding. Anywhere else it is ``nn.Conv2d``. Under CPU
    autocast it computes in the autocast dtype, as ``nn.Conv2d`` does."""

    def _takes_depthwise_route(self, x: Tensor) -> bool:
        gains = _depthwise_forward(self.weight) or (_depthwise_input_gradient(self.weight) and x.requires_grad)
        return (x.is_cpu and gains and self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros" and not isinstance(self.padding, str))

    def forward(self, x: Tensor) -> Tensor:
        if not self._takes_depthwise_route(x):
            return super().forward(x)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        bias = self.bias.to(dtype) if self.bias is not None else None
        with torch.autocast("cpu", enabled=False):
            return _OneChannelConv.apply(x.to(dtype), self.weight.to(dtype), bias, tuple(self.padding))

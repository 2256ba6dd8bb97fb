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
in milliseconds in all four). Every other direction, and every other device, is the library's. The results are
the convolution's own up to rounding: each channel's term is rounded to the compute dtype before the terms are
added in float32.
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
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], list(ctx.padding), [1, 1],
            False, [0, 0], 1, [need_x and not one_input, need_weight, need_bias])
        if need_x and one_input:
            # The adjoint of a 1 → C convolution: each channel's transposed convolution, summed.
            grad_x = _channel_sum(F.conv_transpose2d(grad, weight, padding=ctx.padding, groups=weight.shape[0]),
                                  x.dtype)
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

"""OneChannelConv2d against its oracle, nn.Conv2d with the same weights: outputs and every gradient, in fp32 (equal
up to float rounding) and under bf16 autocast (no further from the exact result than nn.Conv2d's own bf16 result,
give or take a bf16 step), in both memory layouts."""

import pytest
import torch
from torch import nn

from specgan.models.cyclegan import GatedGenerator, ResnetGenerator
from specgan.models.one_channel_conv import OneChannelConv2d

#: (in_channels, out_channels, kernel, padding): the ResNet generator's 7x7 edge layers, CycleGAN-VC2's first and
#: last layers, and others (a kernel taller than wide, the padding of a kernel's full reach).
SHAPES = [(16, 1, 7, 0), (1, 16, 7, 0), (1, 8, (5, 15), (2, 7)), (8, 1, (5, 15), (2, 7)), (8, 1, 3, 1),
          (1, 8, 5, 2), (5, 1, 4, 1), (3, 1, (7, 2), (6, 1)), (1, 3, (2, 5), (1, 4))]
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def forward_backward(conv: nn.Module, x: torch.Tensor, *, bf16: bool) -> list[torch.Tensor]:
    """Output, and the gradients of x, weight and bias for a fixed random output gradient (float32)."""
    conv.zero_grad()
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = conv(x)
    assert y.dtype == (torch.bfloat16 if bf16 else torch.float32)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    (y.float() * grad).sum().backward()
    return [y.detach().float(), x.grad, conv.weight.grad, conv.bias.grad]


def exact_forward_backward(conv: nn.Conv2d, x: torch.Tensor) -> list[torch.Tensor]:
    """What :func:`forward_backward` computes under bf16 autocast, in float64 from the operands autocast rounds to
    bf16 (input, weight, bias, and the output gradient, which arrives in the output's dtype)."""
    rounded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding).double()
    rounded.load_state_dict({k: v.bfloat16().double() for k, v in conv.state_dict().items()})
    x = x.detach().bfloat16().double().requires_grad_()
    y = rounded(x)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).bfloat16().double()
    (y * grad).sum().backward()
    return [y.detach(), x.grad, rounded.weight.grad, rounded.bias.grad]


def pair(in_channels: int, out_channels: int, kernel, padding, memory_format) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    oracle = nn.Conv2d(in_channels, out_channels, kernel, padding=padding).to(memory_format=memory_format)
    fast = OneChannelConv2d(in_channels, out_channels, kernel, padding=padding).to(memory_format=memory_format)
    fast.load_state_dict(oracle.state_dict())
    return oracle, fast


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("in_channels,out_channels,kernel,padding", SHAPES)
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_matches_nn_conv2d(in_channels, out_channels, kernel, padding, layout, bf16):
    oracle, fast = pair(in_channels, out_channels, kernel, padding, LAYOUTS[layout])
    x = torch.randn(3, in_channels, 21, 18).contiguous(memory_format=LAYOUTS[layout])
    assert fast._takes_own_route(x.requires_grad_())
    names = ["output", "grad of x", "grad of weight", "grad of bias"]
    library, ours = forward_backward(oracle, x, bf16=bf16), forward_backward(fast, x, bf16=bf16)
    if not bf16:
        # Sums of a few thousand products: their rounding scales with the largest value, not with each entry.
        for name, want, got in zip(names, library, ours):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 + 1e-6 * float(want.abs().max()), msg=name)
        return
    # In bf16 both round, each its own way, and how far nn.Conv2d itself lands from the exact result depends on the
    # CPU: with AVX512-BF16 oneDNN sums in float32, while on a CPU without it (AMD Zen 3, say) the input gradient
    # was measured 1.2% of its largest value off. So the oracle is exact arithmetic (float64) on the same
    # bf16-rounded operands, and the depthwise route may stray from it by at most nn.Conv2d's own error plus one
    # bf16 step (2^-8) of the largest value.
    exact = exact_forward_backward(oracle, x)
    for name, want, lib, got in zip(names, exact, library, ours):
        scale = float(want.abs().max())
        library_error = float((lib.double() - want).abs().max())
        torch.testing.assert_close(got.double(), want, rtol=0, atol=library_error + 2 ** -8 * scale, msg=name)


def test_fp32_routes():
    """Which parts leave oneDNN in float32: the forward pass of a C → 1 layer with a kernel that is not square (the
    adjoint of a flipped 1 → C one), its input gradient for every kernel (a flipped 1 → C convolution) and the
    weight gradient of any layer with one channel on a side (one matrix product against the unfolded channel)."""
    from specgan.models.one_channel_conv import (_adjoint_forward, _flipped_input_gradient,
                                                 _unfolded_weight_gradient)

    fp32, bf16 = torch.float32, torch.bfloat16
    c_to_1, one_to_c, wide_c_to_1 = torch.randn(1, 16, 7, 7), torch.randn(16, 1, 7, 7), torch.randn(1, 16, 5, 15)
    assert _adjoint_forward(wide_c_to_1, fp32) and not _adjoint_forward(c_to_1, fp32)  # square: depthwise
    assert not _adjoint_forward(wide_c_to_1, bf16)                                    # measured in fp32 only
    assert _flipped_input_gradient(c_to_1, fp32) and _flipped_input_gradient(wide_c_to_1, fp32)
    assert not _flipped_input_gradient(one_to_c, fp32) and not _flipped_input_gradient(c_to_1, bf16)
    for weight in (c_to_1, one_to_c, wide_c_to_1, torch.randn(16, 1, 5, 15)):
        assert _unfolded_weight_gradient(weight, fp32) and not _unfolded_weight_gradient(weight, bf16)
    assert not _unfolded_weight_gradient(torch.randn(4, 4, 3, 3), fp32)
    assert not _unfolded_weight_gradient(torch.randn(1, 1, 3, 3), fp32)


@pytest.mark.parametrize("in_channels,out_channels,kernel,padding", SHAPES)
def test_weight_gradient_by_unfolding_matches_the_library(in_channels, out_channels, kernel, padding):
    """The unfolded weight gradient alone, against aten's convolution backward, on a batch of 5 with a
    non-square map (oracle: the library; float64, so equal to rounding)."""
    from specgan.models.one_channel_conv import _weight_gradient_by_unfolding

    torch.manual_seed(0)
    weight = torch.randn(out_channels, in_channels, *((kernel, kernel) if isinstance(kernel, int) else kernel),
                         dtype=torch.float64)
    padding = (padding, padding) if isinstance(padding, int) else padding
    x = torch.randn(5, in_channels, 13, 17, dtype=torch.float64)
    grad = torch.randn_like(torch.nn.functional.conv2d(x, weight, padding=padding))
    want = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], list(padding), [1, 1], False, [0, 0],
                                               1, [False, True, False])[1]
    torch.testing.assert_close(_weight_gradient_by_unfolding(x, grad, weight.shape, padding), want)


def test_without_gradients_the_output_is_the_same():
    oracle, fast = pair(16, 1, 7, 0, torch.channels_last)
    x = torch.randn(2, 16, 20, 20).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), oracle(x), rtol=1e-5, atol=1e-5)


def test_other_convolutions_are_left_to_nn_conv2d():
    x = torch.randn(2, 1, 20, 20)
    assert OneChannelConv2d(1, 8, 7)._takes_own_route(x)                       # fp32: its weight gradient
    with torch.no_grad():
        assert not OneChannelConv2d(1, 8, 7)._takes_own_route(x)               # nothing but a quick forward
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not OneChannelConv2d(1, 8, 7)._takes_own_route(x)               # no input gradient to compute
        assert OneChannelConv2d(1, 8, 7)._takes_own_route(x.clone().requires_grad_())
        assert OneChannelConv2d(1, 8, (5, 15))._takes_own_route(x.clone().requires_grad_())  # quick transpose
        assert not OneChannelConv2d(8, 1, (5, 15))._takes_own_route(torch.randn(2, 8, 20, 20))  # minutes in bf16
        assert OneChannelConv2d(8, 1, 7)._takes_own_route(torch.randn(2, 8, 20, 20))
    assert OneChannelConv2d(8, 1, (5, 15))._takes_own_route(torch.randn(2, 8, 20, 20))  # fp32: the adjoint
    assert not OneChannelConv2d(1, 8, 7, stride=2)._takes_own_route(x)
    assert not OneChannelConv2d(1, 8, 3, dilation=2)._takes_own_route(x)
    assert not OneChannelConv2d(1, 8, 3, padding="same")._takes_own_route(x)
    assert not OneChannelConv2d(1, 8, 3, padding=1, padding_mode="reflect")._takes_own_route(x)
    assert not OneChannelConv2d(1, 8, 3, padding=3)._takes_own_route(x)        # wider than the kernel reaches
    assert not OneChannelConv2d(4, 8, 3)._takes_own_route(torch.randn(2, 4, 9, 9, requires_grad=True))
    assert not OneChannelConv2d(4, 1, 3)._takes_own_route(torch.randn(2, 4, 9, 9, device="meta"))
    assert not OneChannelConv2d(1, 1, 3)._takes_own_route(x)                   # nothing to sum
    # a depthwise layer's weight (C, 1, k, k) looks like a 1 → C one's, but it is C → C in C groups
    depthwise = OneChannelConv2d(4, 4, 3, padding=1, groups=4)
    x4 = torch.randn(2, 4, 9, 9, requires_grad=True)
    assert not depthwise._takes_own_route(x4)
    torch.testing.assert_close(depthwise(x4), nn.Conv2d.forward(depthwise, x4))


@pytest.mark.parametrize("make,edges", [(lambda: ResnetGenerator(channels=4, n_blocks=1), [(1, 4), (4, 1)]),
                                        (lambda: GatedGenerator(n_mels=24, channels=4, n_blocks=1), [(1, 16), (4, 1)])],
                         ids=["resnet", "gated"])
def test_the_generators_are_unchanged_by_it(make, edges):
    """The generators' edge layers take the route; the same generator with plain nn.Conv2d layers gives the same
    images and gradients, and loads the same state dict."""
    torch.manual_seed(0)
    fast = make()
    layers = [name for name, m in fast.named_modules() if isinstance(m, OneChannelConv2d)]
    assert [(fast.get_submodule(n).in_channels, fast.get_submodule(n).out_channels) for n in layers] == edges
    plain = make()
    for name in layers:
        plain.get_submodule(name).__class__ = nn.Conv2d
    plain.load_state_dict(fast.state_dict())
    x = torch.rand(2, 1, 24, 20) * 2 - 1
    results = []
    for G in (fast, plain):
        x_in = x.clone().requires_grad_()  # as in the cycle pass, where the input is a generated image
        y = G(x_in)
        y.square().sum().backward()
        results.append([y.detach(), x_in.grad] + [G.get_submodule(n).weight.grad for n in layers])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

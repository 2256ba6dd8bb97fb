"""specgan's InstanceNorm2d against its oracle, nn.InstanceNorm2d with the same parameters: outputs and every
gradient, on the group-norm route (contiguous float32 CPU maps) and on the maps that keep nn.InstanceNorm2d."""

import pytest
import torch
from torch import nn

from specgan.models.cyclegan import GatedGenerator, PatchDiscriminator, ResnetGenerator
from specgan.models.instance_norm import InstanceNorm2d


def forward_backward(norm: nn.Module, x: torch.Tensor, *, bf16: bool = False) -> list[torch.Tensor]:
    """Output, and the gradients of x (and of the affine parameters) for a fixed random output gradient."""
    norm.zero_grad()
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = norm(x)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    (y.float() * grad).sum().backward()
    return [y.detach().float(), x.grad] + ([norm.weight.grad, norm.bias.grad] if norm.affine else [])


@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_matches_nn_instance_norm(affine, layout):
    torch.manual_seed(0)
    oracle = nn.InstanceNorm2d(6, affine=affine)
    if affine:  # not the initial 1 and 0, so that the parameters matter
        nn.init.normal_(oracle.weight, 1.0, 0.5)
        nn.init.normal_(oracle.bias, 0.0, 0.5)
    ours = InstanceNorm2d(6, affine=affine)
    ours.load_state_dict(oracle.state_dict())
    x = (torch.randn(3, 6, 11, 9) * 3 + 2).contiguous(
        memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    assert ours._takes_group_norm_route(x) == (layout == "contiguous")
    for want, got in zip(forward_backward(oracle, x), forward_backward(ours, x)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_other_maps_keep_nn_instance_norm():
    norm = InstanceNorm2d(4)
    x = torch.randn(2, 4, 8, 8)
    assert norm._takes_group_norm_route(x)
    assert not norm._takes_group_norm_route(x.double())
    assert not norm._takes_group_norm_route(x.bfloat16())
    assert not norm._takes_group_norm_route(x.transpose(2, 3))                      # not contiguous
    assert not norm._takes_group_norm_route(torch.randn(4, 8, 8))                   # unbatched
    assert not norm._takes_group_norm_route(torch.randn(2, 4, 8, 8, device="meta"))
    assert not InstanceNorm2d(4, track_running_stats=True)._takes_group_norm_route(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not norm._takes_group_norm_route(x)
    # and under autocast it is nn.InstanceNorm2d exactly
    oracle = nn.InstanceNorm2d(4)
    for want, got in zip(forward_backward(oracle, x, bf16=True), forward_backward(norm, x, bf16=True)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("make", [lambda: ResnetGenerator(channels=4, n_blocks=1),
                                  lambda: GatedGenerator(n_mels=24, channels=4, n_blocks=1),
                                  lambda: PatchDiscriminator(image_shape=(1, 24, 20), channels=4)],
                         ids=["resnet", "gated", "patch"])
def test_the_networks_use_it_and_are_unchanged_by_it(make):
    """Every 2D instance norm of the translation networks is specgan's; the same network with nn.InstanceNorm2d
    gives the same outputs and input gradients."""
    torch.manual_seed(0)
    fast = make()
    norms = [m for m in fast.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(type(m) is InstanceNorm2d for m in norms)
    plain = make()
    for m in plain.modules():
        if type(m) is InstanceNorm2d:
            m.__class__ = nn.InstanceNorm2d
    plain.load_state_dict(fast.state_dict())
    x = torch.rand(2, 1, 24, 20) * 2 - 1
    results = []
    for net in (fast, plain):
        x_in = x.clone().requires_grad_()
        y = net(x_in)
        y.square().sum().backward()
        results.append([y.detach(), x_in.grad])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

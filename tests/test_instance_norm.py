"""specgan's InstanceNorm2d against its oracle, nn.InstanceNorm2d with the same parameters: outputs and every
gradient, on the group-norm route (contiguous float32 CPU maps), on the moments route (compiled GPU code) and on
the maps that keep nn.InstanceNorm2d."""

import pytest
import torch
from torch import nn

from specgan.models.cyclegan import GatedGenerator, PatchDiscriminator, ResnetGenerator
from specgan.models.instance_norm import InstanceNorm2d, instance_norm_from_moments


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


class FromMoments(nn.InstanceNorm2d):
    """The moments route on its own, with nn.InstanceNorm2d's parameters."""

    def forward(self, x):
        return instance_norm_from_moments(x, weight=self.weight, bias=self.bias, eps=self.eps)


@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_moments_route_matches_nn_instance_norm(affine, layout):
    torch.manual_seed(0)
    oracle = nn.InstanceNorm2d(5, affine=affine)
    if affine:
        nn.init.normal_(oracle.weight, 1.0, 0.5)
        nn.init.normal_(oracle.bias, 0.0, 0.5)
    ours = FromMoments(5, affine=affine)
    ours.load_state_dict(oracle.state_dict())
    x = (torch.randn(3, 5, 12, 7) * 3 - 1).contiguous(
        memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    for want, got in zip(forward_backward(oracle, x), forward_backward(ours, x)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("route", ["group_norm", "moments"])
def test_eps_is_honoured_and_a_constant_map_stays_finite(route):
    """A map that is constant (a dead ReLU channel: all zeros) has zero variance: nn.InstanceNorm2d gives zeros
    there, not NaN, because of eps; and a non-default eps is the one used (oracle: nn.InstanceNorm2d)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 6) * 0.3
    x[0, 1] = 0.0
    for eps in (1e-5, 0.5):
        oracle = nn.InstanceNorm2d(3, eps=eps)
        ours = (InstanceNorm2d if route == "group_norm" else FromMoments)(3, eps=eps)
        if route == "group_norm":
            assert ours._takes_group_norm_route(x)
        for want, got in zip(forward_backward(oracle, x), forward_backward(ours, x)):
            assert got.isfinite().all()
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_moments_route_in_bf16_is_the_exact_norm_rounded_once():
    """A bf16 map gives a bf16 result within one rounding step of the norm computed in float64 on its values."""
    torch.manual_seed(0)
    x = (torch.randn(2, 3, 16, 10) * 4 + 3).bfloat16()
    got = instance_norm_from_moments(x, weight=None, bias=None, eps=1e-5)
    assert got.dtype == torch.bfloat16
    x64 = x.double()
    var, mean = torch.var_mean(x64, dim=(2, 3), keepdim=True, correction=0)
    exact = (x64 - mean) / torch.sqrt(var + 1e-5)
    step = torch.finfo(torch.bfloat16).eps * exact.abs().clamp(min=2 ** -8)  # one bf16 step at each value
    assert ((got.double() - exact).abs() <= step).all()
    # and a result off by two steps at one value fails that bound
    off = got.double().clone()
    off[0, 0, 0, 0] += 2 * step[0, 0, 0, 0]
    assert not ((off - exact).abs() <= step).all()


def test_moments_route_is_taken_in_compiled_gpu_code_only(monkeypatch):
    norm = InstanceNorm2d(4)
    gpu_like = torch.randn(2, 4, 8, 8, device="meta")  # not a CPU tensor
    assert not norm._takes_moments_route(gpu_like)     # eager
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert norm._takes_moments_route(gpu_like)
    assert not norm._takes_moments_route(torch.randn(2, 4, 8, 8))
    assert not norm._takes_moments_route(torch.randn(4, 8, 8, device="meta"))
    assert not InstanceNorm2d(4, track_running_stats=True)._takes_moments_route(gpu_like)
    monkeypatch.setattr(InstanceNorm2d, "moments_under_compile", False)
    assert not norm._takes_moments_route(gpu_like)

"""Translation networks (CycleGAN, CycleGAN-VC2, PatchGAN): shapes at odd and even sizes, padding and cropping,
layer widths against the papers, gradients, and a generator that can learn the identity."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from specgan.models.cyclegan import (GatedGenerator, GatedResBlock1d, PatchDiscriminator, ReflectionPad2d,
                                     ResnetBlock, ResnetGenerator, build_cyclegan, build_cyclegan_vc2, patch_layers)

SIZES = [(80, 64), (64, 128), (36, 40), (80, 63), (9, 8)]
BUILDERS = [build_cyclegan, build_cyclegan_vc2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: on a busy machine, syncing intra-op threads costs more than the arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(n: int, height: int, width: int) -> torch.Tensor:
    return torch.rand(n, 1, height, width) * 2 - 1


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("n_mels,frames", SIZES)
def test_shapes_and_range(builder, n_mels, frames):
    torch.manual_seed(0)
    G, D = builder(image_shape=(1, n_mels, frames), channels=4, n_blocks=1)
    x = images(2, n_mels, frames)
    y = G(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.min() >= -1 and y.max() <= 1 and y.std() > 0
    logits = D(y)
    n = D.n_layers
    assert logits.shape == (2, 1, n_mels // 2 ** n - 2, frames // 2 ** n - 2)
    assert min(logits.shape[2:]) >= 2


@pytest.mark.parametrize("builder", BUILDERS)
def test_frames_free_at_run_time(builder):
    torch.manual_seed(0)
    G, D = builder(image_shape=(1, 36, 64), channels=4, n_blocks=1)
    for frames in (100, 37):
        y = G(images(2, 36, frames))
        assert y.shape == (2, 1, 36, frames)
        assert D(y).shape == (2, 1, 36 // 8 - 2, frames // 8 - 2)


@pytest.mark.parametrize("gated", [False, True])
def test_odd_sizes_are_padded_by_reflection_and_cropped(gated):
    torch.manual_seed(0)
    if gated:
        G = GatedGenerator(n_mels=38, channels=4, n_blocks=1).eval()
        G_padded = GatedGenerator(n_mels=40, channels=4, n_blocks=1).eval()  # same weight shapes: 38 → 40 rows
        G_padded.load_state_dict(G.state_dict())
    else:
        G = G_padded = ResnetGenerator(channels=4, n_blocks=1).eval()
    x = images(2, 38, 61)
    y = G(x)
    # 40 × 64 are the next multiples of 4: the padded input goes through unpadded.
    torch.testing.assert_close(y, G_padded(F.pad(x, (0, 3, 0, 2), mode="reflect"))[:, :, :38, :61])
    # The padded rows and frames really do change the output, so the equality above is not vacuous.
    assert not torch.allclose(y, G_padded(F.pad(x, (0, 3, 0, 2)))[:, :, :38, :61])


def test_gated_generator_fixes_n_mels():
    G = GatedGenerator(n_mels=36, channels=4, n_blocks=1)
    with pytest.raises(ValueError, match="n_mels = 36"):
        G(images(1, 40, 64))
    with pytest.raises(ValueError, match="n_mels"):
        GatedGenerator(n_mels=7)


@pytest.mark.parametrize("call", [
    lambda: build_cyclegan(image_shape=(3, 64, 64)),
    lambda: build_cyclegan_vc2(image_shape=(2, 64, 64)),
    lambda: build_cyclegan(image_shape=(1, 64, 7), channels=4),
    lambda: build_cyclegan_vc2(image_shape=(64, 64), channels=4),
    lambda: ResnetGenerator(channels=4)(images(1, 6, 64)),
    lambda: ResnetGenerator(channels=4)(images(1, 64, 6)),
    lambda: ResnetGenerator(channels=4)(torch.zeros(1, 2, 16, 16)),
    lambda: PatchDiscriminator(image_shape=(1, 64, 64), n_layers=0),
    lambda: PatchDiscriminator(image_shape=(1, 64, 64), channels=4)(images(1, 64, 16)),
])
def test_bad_shapes_raise(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("shape,n_layers,expected", [
    ((1, 256, 256), 3, 3), ((1, 36, 40), 3, 3), ((1, 31, 40), 3, 2), ((1, 16, 64), 3, 2), ((1, 8, 8), 3, 1),
    ((1, 128, 128), 5, 5), ((1, 128, 128), 6, 5), ((1, 80, 15), 3, 1)])
def test_patch_layers_keep_the_map_at_least_two_by_two(shape, n_layers, expected):
    assert patch_layers(shape, n_layers) == expected
    D = PatchDiscriminator(image_shape=shape, channels=2, n_layers=n_layers)
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in D.modules()) == expected
    assert min(D(images(1, *shape[1:])).shape[2:]) >= 2
    # the width doubles per layer up to 8 times the base (c·8), the stride-1 layer included
    assert max(m.out_channels for m in D.modules() if isinstance(m, nn.Conv2d)) == 2 * min(2 ** expected, 8)


def test_sizes_match_the_reference_code():
    # The CycleGAN code prints 11.378 M (resnet_9blocks) and 2.765 M (basic D) parameters for 3-channel images:
    # exactly 11,378,179 and 2,764,737. One channel in and out removes 2·64·49 weights from the first conv and
    # 2·64·49 + 2 from the last one of G, and 2·64·16 from the first conv of D.
    G = ResnetGenerator(channels=64, n_blocks=9)
    assert sum(p.numel() for p in G.parameters()) == 11_378_179 - 2 * 64 * 49 - (2 * 64 * 49 + 2)
    D = PatchDiscriminator(image_shape=(1, 256, 256))
    assert sum(p.numel() for p in D.parameters()) == 2_764_737 - 2 * 64 * 16
    weights = [m.weight for m in G.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(abs(w.std().item() - 0.02) < 0.002 for w in weights if w.numel() > 10_000)
    assert not any(isinstance(m, nn.InstanceNorm2d) and m.affine for m in G.modules())
    assert {m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)} == {0.2}


@pytest.mark.parametrize("make, shape", [(lambda: ResnetBlock(channels=3), (2, 3, 6, 7)),
                                         (lambda: GatedResBlock1d(channels=3), (2, 3, 9))], ids=["resnet", "gated"])
def test_residual_blocks_add_their_input(make, shape):
    """``x + body(x)``: a block that dropped its skip connection still has every shape right."""
    block = make()
    x = torch.randn(*shape)
    torch.testing.assert_close(block(x), x + block.body(x))
    # the body ends in an instance norm (affine ones start at 1 and 0): each map of it has mean 0, variance 1
    var, mean = torch.var_mean(block.body(x), dim=tuple(range(2, x.dim())), correction=0)
    torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=1e-5)
    torch.testing.assert_close(var, torch.ones_like(var), rtol=0, atol=0.05)  # eps: v / (v + eps)


def test_gated_widths_match_the_paper():
    # CycleGAN-VC2 (Kaneko et al. 2019, fig. 4) on 35 mel-cepstral rows: 128, 256, 256 channels in 2D (before the
    # GLU halving: 256, 512, 512), 2304 = 256·9 features reshaped to 1D, 256 channels in the 1D blocks (512
    # before GLU), then 1024 and 512 channels before the pixel shuffles, and one output channel.
    G = GatedGenerator(n_mels=35, channels=64, n_blocks=1)
    widths = [(m.in_channels, m.out_channels) for m in G.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert widths == [(1, 256), (128, 512), (256, 512), (2304, 256), (256, 512), (256, 256), (256, 2304),
                      (256, 1024), (128, 512), (64, 1)]


@pytest.mark.parametrize("make", [lambda: ResnetGenerator(channels=4, n_blocks=2),
                                  lambda: GatedGenerator(n_mels=36, channels=4, n_blocks=2),
                                  lambda: PatchDiscriminator(image_shape=(1, 36, 40), channels=4)])
def test_gradients_reach_every_parameter(make):
    torch.manual_seed(0)
    model = make()
    model(images(2, 36, 40)).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def smooth_images(n: int) -> torch.Tensor:
    """Random 16×16 images with 4×4 degrees of freedom (white noise cannot pass a 4× bottleneck of 8 channels)."""
    return F.interpolate(images(n, 4, 4), size=(16, 16), mode="bilinear", align_corners=True)


def test_resnet_generator_learns_the_identity():
    torch.manual_seed(0)
    G = ResnetGenerator(channels=8, n_blocks=1)
    optimizer = torch.optim.Adam(G.parameters(), lr=2e-3)
    held_out = smooth_images(64)
    with torch.no_grad():
        before = F.l1_loss(G(held_out), held_out).item()
    for _ in range(50):
        x = smooth_images(16)
        loss = F.l1_loss(G(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = F.l1_loss(G(held_out), held_out).item()
    assert after < before / 2, (before, after)  # 0.33-0.43 of it over eight seeds


def test_reflection_padding_keeps_bf16_under_cpu_autocast():
    """CPU autocast would pad in fp32 (and the next convolution cast back): the generator's padding stays in the
    feature map's dtype, with the values the fp32 route gives, and its gradient arrives in fp32 like any
    autocast input's."""
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = x.to(torch.bfloat16)
        assert nn.ReflectionPad2d(2)(h).dtype == torch.float32      # what plain padding does under autocast
        padded = ReflectionPad2d(2)(h)
    assert padded.dtype == torch.bfloat16
    assert torch.equal(padded, F.pad(x.detach(), (2, 2, 2, 2), mode="reflect").to(torch.bfloat16))
    weights = torch.randn(padded.shape)
    (padded.float() * weights).sum().backward()
    y = x.detach().requires_grad_()
    (F.pad(y, (2, 2, 2, 2), mode="reflect") * weights).sum().backward()   # the fp32 route's gradient
    assert x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-2, atol=1e-2)  # the bf16 route rounds the incoming gradient
    generator = ResnetGenerator(channels=4, n_blocks=1)
    assert sum(isinstance(m, ReflectionPad2d) for m in generator.modules()) == 4

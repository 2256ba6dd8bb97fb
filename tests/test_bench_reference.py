"""The benchmarks' CycleGAN reference runs specgan's architecture on the plain torch layers the reference code
uses, so that specgan's faster layer classes count on specgan's side of the comparison, not on both."""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from reference import CycleGanReference, as_plain_torch_layers  # noqa: E402

from specgan.models import build_model  # noqa: E402

TORCH_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.InstanceNorm2d, nn.ReflectionPad2d)


def test_the_reference_networks_are_plain_torch_layers():
    ref = CycleGanReference(image_shape=(1, 24, 20), channels=4, n_blocks=1, device=torch.device("cpu"))
    for net in (ref.netG_A, ref.netG_B, ref.netD_A, ref.netD_B):
        layers = [m for m in net.modules() if isinstance(m, TORCH_LAYERS)]
        assert layers and all(type(m) in TORCH_LAYERS for m in layers)


def test_plain_layers_compute_the_same_networks():
    torch.manual_seed(0)
    fast_g, fast_d = build_model("cyclegan", image_shape=(1, 24, 20), channels=4, n_blocks=1)
    plain_g, plain_d = build_model("cyclegan", image_shape=(1, 24, 20), channels=4, n_blocks=1)
    for fast, plain in ((fast_g, plain_g), (fast_d, plain_d)):
        as_plain_torch_layers(plain).load_state_dict(fast.state_dict())
        assert any(type(m) not in TORCH_LAYERS and isinstance(m, TORCH_LAYERS) for m in fast.modules())
        x = torch.rand(2, 1, 24, 20) * 2 - 1
        torch.testing.assert_close(plain(x), fast(x), rtol=1e-4, atol=1e-5)

"""The plain reference training loops the benchmarks compare specgan against, written the way the usual public
example code is written (same architectures, losses, optimisers and batch sizes as specgan; only the loop differs).

- DCGAN: the PyTorch DCGAN example (pytorch/examples ``dcgan/main.py``): a per-item ``Dataset`` normalising one
  image per ``__getitem__``, a ``DataLoader`` with ``shuffle=True``, fp32, ``cudnn.benchmark = True`` on CUDA, D on
  real then on ``fake.detach()``, then G through D on the same fakes. (The example also calls ``.item()`` on three
  scalars every step, which waits for the GPU; that is left out here, so the reference is a little faster than
  the example.)
- CycleGAN: junyanz/pytorch-CycleGAN-and-pix2pix (``cycle_gan_model.py``, ``unaligned_dataset.py``,
  ``image_pool.py``): an unaligned per-item dataset (A in order, B at random) with a random crop per item, two
  Adam optimisers (both G, both D), an ``ImagePool`` that is a Python list queried image by image, ``set_requires_grad``
  toggling, LSGAN as ``MSELoss`` against an expanded target, D loss ``0.5 * (real + fake)``, fp32, and
  ``cudnn.benchmark = True`` (the reference code sets it for fixed-size inputs).

Each loop is a class with ``step(batch)``, so FLOPs of one step can be counted, and a ``run_*`` function that
trains for a number of steps and returns the images/s of each timing window after a warm-up.
"""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from specgan.data.idx import read_idx
from specgan.models import build_model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class WindowTimer:
    """Images/s of consecutive windows of ``window`` steps after ``warmup`` steps (the device is synchronised at
    each window's end, so a window is the wall time of its steps)."""

    def __init__(self, *, device: torch.device, images_per_step: int, warmup: int, window: int):
        self.device, self.images_per_step, self.warmup, self.window = device, images_per_step, warmup, window
        self.rates: list[float] = []
        self.tick: float | None = None

    def after(self, step: int) -> None:
        """Call after step ``step`` (1-based) completes on the host."""
        if step < self.warmup or (step - self.warmup) % self.window:
            return
        sync(self.device)
        now = time.perf_counter()
        if self.tick is not None:
            self.rates.append(self.images_per_step * self.window / (now - self.tick))
        self.tick = now


# -- DCGAN (pytorch/examples dcgan) ----------------------------------------------------------------------------

class MnistItems(Dataset):
    """What the usual example code does: one (image, label) pair per __getitem__, normalised on the fly."""

    def __init__(self, folder: Path):
        self.images = read_idx(folder / "train-images-idx3-ubyte.gz")
        self.labels = read_idx(folder / "train-labels-idx1-ubyte.gz")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = torch.from_numpy(self.images[i]).float().div(255).sub(0.5).div(0.5)[None]
        return image, int(self.labels[i])


class DcganReference:
    """Models, optimisers and one step of the example's loop (BCE on logits, Adam 2e-4, betas 0.5/0.999)."""

    def __init__(self, *, image_shape=(1, 28, 28), n_classes: int, z_dim: int, channels: int, seed: int,
                 device: torch.device):
        torch.manual_seed(seed)
        self.device, self.z_dim, self.conditional = device, z_dim, n_classes > 0
        self.G, self.D = build_model("dcgan", image_shape=image_shape, n_classes=n_classes, z_dim=z_dim,
                                     channels=channels, spectral_norm=False, batch_norm_d=True)
        self.G.to(device)
        self.D.to(device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.bce = nn.BCEWithLogitsLoss()

    def step(self, real: Tensor, labels: Tensor) -> None:
        device = self.device
        real = real.to(device)
        labels = labels.to(device) if self.conditional else None
        n = real.size(0)
        fake = self.G(torch.randn(n, self.z_dim, device=device), labels)
        loss_d = self.bce(self.D(real, labels), torch.ones(n, device=device)) + \
            self.bce(self.D(fake.detach(), labels), torch.zeros(n, device=device))
        self.opt_d.zero_grad()
        loss_d.backward()
        self.opt_d.step()
        loss_g = self.bce(self.D(fake, labels), torch.ones(n, device=device))
        self.opt_g.zero_grad()
        loss_g.backward()
        self.opt_g.step()


def run_dcgan_reference(folder: Path, *, steps: int, batch_size: int, channels: int, z_dim: int, n_classes: int,
                        seed: int, device: torch.device, workers: int = 0, warmup: int = 50,
                        window: int = 25) -> tuple[nn.Module, list[float], float]:
    """Train ``steps`` steps. Returns G (eval mode), the images/s of each window after ``warmup`` steps, and the
    images/s over all steps after the warm-up."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the example does
    ref = DcganReference(n_classes=n_classes, z_dim=z_dim, channels=channels, seed=seed, device=device)
    loader = DataLoader(MnistItems(folder), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers)
    timer = WindowTimer(device=device, images_per_step=batch_size, warmup=warmup, window=window)
    step, timed_from = 0, None
    while step < steps:
        for real, labels in loader:
            ref.step(real, labels)
            step += 1
            timer.after(step)
            if step == warmup:
                timed_from = time.perf_counter()
            if step == steps:
                break
    sync(device)
    steady = (steps - warmup) * batch_size / (time.perf_counter() - timed_from) if timed_from else float("nan")
    return ref.G.eval(), timer.rates, steady


# -- CycleGAN (junyanz/pytorch-CycleGAN-and-pix2pix) -----------------------------------------------------------

class UnalignedChunks(Dataset):
    """``UnalignedDataset``: item ``i`` is A[i % len(A)] and a random B, each randomly cropped to ``crop`` frames
    on its own (the reference's per-item transform)."""

    def __init__(self, a: Tensor, b: Tensor, *, crop: int):
        self.a, self.b, self.crop = a, b, crop

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def _crop(self, image: Tensor) -> Tensor:
        if not self.crop or self.crop >= image.shape[-1]:
            return image
        start = random.randint(0, image.shape[-1] - self.crop)
        return image[..., start:start + self.crop]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        a = self.a[i % len(self.a)]
        b = self.b[random.randint(0, len(self.b) - 1)]
        return {"A": self._crop(a), "B": self._crop(b)}


class ImagePool:
    """``util/image_pool.py`` as written: a list of images, queried one image at a time."""

    def __init__(self, pool_size: int):
        self.pool_size = pool_size
        self.num_imgs = 0
        self.images: list[Tensor] = []

    def query(self, images: Tensor) -> Tensor:
        if self.pool_size == 0:
            return images
        return_images = []
        for image in images:
            image = torch.unsqueeze(image.data, 0)
            if self.num_imgs < self.pool_size:
                self.num_imgs += 1
                self.images.append(image)
                return_images.append(image)
            else:
                p = random.uniform(0, 1)
                if p > 0.5:
                    random_id = random.randint(0, self.pool_size - 1)
                    tmp = self.images[random_id].clone()
                    self.images[random_id] = image
                    return_images.append(tmp)
                else:
                    return_images.append(image)
        return torch.cat(return_images, 0)


class GANLoss(nn.Module):
    """``networks.GANLoss('lsgan')``: MSE against a target tensor expanded to the prediction's shape."""

    def __init__(self):
        super().__init__()
        self.register_buffer("real_label", torch.tensor(1.0))
        self.register_buffer("fake_label", torch.tensor(0.0))
        self.loss = nn.MSELoss()

    def __call__(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        target = (self.real_label if target_is_real else self.fake_label).expand_as(prediction)
        return self.loss(prediction, target)


def set_requires_grad(nets, requires_grad: bool) -> None:
    for net in nets:
        for param in net.parameters():
            param.requires_grad = requires_grad


def as_plain_torch_layers(net: nn.Module) -> nn.Module:
    """``net`` with specgan's faster layer classes turned back into the torch layers the reference code uses
    (``nn.Conv2d``, ``nn.InstanceNorm2d``, ``nn.ReflectionPad2d``), in place. Each subclass has its base class's
    parameters and computes the same function (tests/test_one_channel_conv.py, tests/test_instance_norm.py), so
    only the speed changes: the architecture stays specgan's, and the layers' speed-ups count on specgan's side.
    (Before this, the reference ran specgan's OneChannelConv2d too.)"""
    for module in net.modules():
        for plain in (nn.Conv2d, nn.InstanceNorm2d, nn.ReflectionPad2d):
            if isinstance(module, plain) and type(module) is not plain:
                module.__class__ = plain
    return net


class CycleGanReference:
    """``CycleGANModel``: netG_A (A→B), netG_B (B→A), netD_A (judges B), netD_B (judges A); specgan's builders
    for the networks (``cyclegan``: ResNet generator, 70×70 PatchGAN)."""

    def __init__(self, *, image_shape: tuple[int, int, int], channels: int, n_blocks: int, device: torch.device,
                 lr_g: float = 2e-4, lr_d: float = 1e-4, betas=(0.5, 0.999), pool_size: int = 50,
                 lambda_cycle: float = 10.0, lambda_identity: float = 0.5, seed: int = 0):
        torch.manual_seed(seed)
        self.device = device
        self.netG_A, self.netD_A = build_model("cyclegan", image_shape=image_shape, channels=channels,
                                               n_blocks=n_blocks)
        self.netG_B, self.netD_B = build_model("cyclegan", image_shape=image_shape, channels=channels,
                                               n_blocks=n_blocks)
        for net in (self.netG_A, self.netG_B, self.netD_A, self.netD_B):
            as_plain_torch_layers(net).to(device)
        self.fake_A_pool, self.fake_B_pool = ImagePool(pool_size), ImagePool(pool_size)
        self.criterionGAN = GANLoss().to(device)
        self.criterionCycle, self.criterionIdt = nn.L1Loss(), nn.L1Loss()
        self.lambda_A = self.lambda_B = lambda_cycle
        self.lambda_idt = lambda_identity
        self.optimizer_G = torch.optim.Adam(itertools.chain(self.netG_A.parameters(), self.netG_B.parameters()),
                                            lr=lr_g, betas=tuple(betas))
        self.optimizer_D = torch.optim.Adam(itertools.chain(self.netD_A.parameters(), self.netD_B.parameters()),
                                            lr=lr_d, betas=tuple(betas))

    def set_input(self, batch: dict[str, Tensor]) -> None:
        self.real_A = batch["A"].to(self.device)
        self.real_B = batch["B"].to(self.device)

    def forward(self) -> None:
        self.fake_B = self.netG_A(self.real_A)
        self.rec_A = self.netG_B(self.fake_B)
        self.fake_A = self.netG_B(self.real_B)
        self.rec_B = self.netG_A(self.fake_A)

    def backward_D_basic(self, netD, real, fake) -> Tensor:
        loss_D_real = self.criterionGAN(netD(real), True)
        loss_D_fake = self.criterionGAN(netD(fake.detach()), False)
        loss_D = (loss_D_real + loss_D_fake) * 0.5
        loss_D.backward()
        return loss_D

    def backward_G(self) -> None:
        if self.lambda_idt > 0:
            self.idt_A = self.netG_A(self.real_B)
            self.loss_idt_A = self.criterionIdt(self.idt_A, self.real_B) * self.lambda_B * self.lambda_idt
            self.idt_B = self.netG_B(self.real_A)
            self.loss_idt_B = self.criterionIdt(self.idt_B, self.real_A) * self.lambda_A * self.lambda_idt
        else:
            self.loss_idt_A = self.loss_idt_B = 0
        self.loss_G_A = self.criterionGAN(self.netD_A(self.fake_B), True)
        self.loss_G_B = self.criterionGAN(self.netD_B(self.fake_A), True)
        self.loss_cycle_A = self.criterionCycle(self.rec_A, self.real_A) * self.lambda_A
        self.loss_cycle_B = self.criterionCycle(self.rec_B, self.real_B) * self.lambda_B
        self.loss_G = (self.loss_G_A + self.loss_G_B + self.loss_cycle_A + self.loss_cycle_B + self.loss_idt_A
                       + self.loss_idt_B)
        self.loss_G.backward()

    def optimize_parameters(self) -> None:
        self.forward()
        set_requires_grad([self.netD_A, self.netD_B], False)
        self.optimizer_G.zero_grad()
        self.backward_G()
        self.optimizer_G.step()
        set_requires_grad([self.netD_A, self.netD_B], True)
        self.optimizer_D.zero_grad()
        self.loss_D_A = self.backward_D_basic(self.netD_A, self.real_B, self.fake_B_pool.query(self.fake_B))
        self.loss_D_B = self.backward_D_basic(self.netD_B, self.real_A, self.fake_A_pool.query(self.fake_A))
        self.optimizer_D.step()

    def step(self, batch: dict[str, Tensor]) -> None:
        self.set_input(batch)
        self.optimize_parameters()


def run_cyclegan_reference(a: Tensor, b: Tensor, *, steps: int, batch_size: int, crop: int, channels: int,
                           n_blocks: int, device: torch.device, workers: int = 0, warmup: int = 10,
                           window: int = 10, seed: int = 0, lambda_identity: float = 0.5,
                           pool_size: int = 50) -> list[float]:
    """Train ``steps`` steps on chunks ``a``, ``b`` ``(N, 1, n_mels, frames)`` (CPU tensors); images/s of each
    window after ``warmup`` steps (images = A images per step, as specgan counts them)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the reference code does for fixed-size crops
    random.seed(seed)
    shape = (1, a.shape[2], crop or a.shape[3])
    model = CycleGanReference(image_shape=shape, channels=channels, n_blocks=n_blocks, device=device,
                              lambda_identity=lambda_identity, pool_size=pool_size, seed=seed)
    loader = DataLoader(UnalignedChunks(a, b, crop=crop), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers)
    timer = WindowTimer(device=device, images_per_step=batch_size, warmup=warmup, window=window)
    step = 0
    while step < steps:
        for batch in loader:
            model.step(batch)
            step += 1
            timer.after(step)
            if step == steps:
                break
    return timer.rates

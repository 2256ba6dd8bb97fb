"""The ``generate`` task: a GAN (DCGAN, optionally class-conditional) trained on ImageData.

:class:`GenerateTask` owns the models, optimizers and the moving average of G; :meth:`GenerateTask.step` is one
generator update (after ``n_critic`` discriminator updates) and returns named scalars. The training loop
(:mod:`specgan.train.loop`) does everything else.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from specgan.cuda_graph import GraphedCall
from specgan.data.image_data import ImageData
from specgan.images import save_grid
from specgan.losses import d_accuracy, d_loss, g_loss, gradient_penalty
from specgan.models import build_model
from specgan.models.ema import EMA, standing_statistics
from specgan.sample import render_audio
from specgan.train.acceleration import Acceleration
from specgan.train.config import Recipe
from specgan.train.distributed import Distributed
from specgan.train.optim import adam, linear_decay, make_capturable, match_layouts, portable_state, set_lr


class Batches:
    """Shuffled mini-batches from a dataset held whole on the device: one random permutation per epoch, kept on
    the device, so a batch is one index gather with no host round trip.

    ``batch_size`` is the global batch; with several ranks, :meth:`next` returns this rank's shard of it. Its
    state (generator, permutation, position) goes into checkpoints so that a resumed run draws the same batches
    as an uninterrupted one, at any number of ranks.
    """

    def __init__(self, data: ImageData, *, batch_size: int, seed: int, device: torch.device,
                 distributed: Distributed = Distributed(), what: str = "images"):
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        usable = len(data) - len(data) % distributed.world_size  # every rank gets an equal shard
        self.batch_size = min(batch_size, usable)
        #: For the user when the data holds fewer than a batch (``what`` names them), else None.
        self.note = (f"train.batch_size = {batch_size}, but there are only {len(data)} {what}: each batch takes "
                     f"{self.batch_size}" if self.batch_size < batch_size else None)
        self.distributed = distributed
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long, device=device)
        self.position = 0

    def next_index(self) -> Tensor:
        """This rank's shard ``(n,)`` of the next global batch's indices, on the device."""
        if self.position + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.images), generator=self.generator).to(self.images.device)
            self.position = 0
        index = self.distributed.shard(self.order[self.position:self.position + self.batch_size])
        self.position += self.batch_size
        return index

    def gather(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(images (n, C, H, W), labels (n,))`` at ``index``."""
        return self.images[index], self.labels[index]

    def next(self) -> tuple[Tensor, Tensor]:
        """This rank's ``(images (n, C, H, W), labels (n,))`` of the next global batch."""
        return self.gather(self.next_index())

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order.cpu(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())  # RNG states are CPU byte tensors, whatever the device
        self.order, self.position = state["order"].to(self.images.device), int(state["position"])


class GenerateTask:
    """Models, optimizers and one training step of a GAN."""

    def __init__(self, recipe: Recipe, data: ImageData, *, device: torch.device,
                 distributed: Distributed = Distributed()):
        self.recipe, self.device, self.distributed = recipe, device, distributed
        self.class_names, self.audio = data.class_names, data.audio
        m, t = recipe.model, recipe.train
        self.accel = Acceleration.for_recipe(recipe, device=device, one_process=not distributed.active)
        self.loss = recipe.adversarial_loss
        self.n_classes = data.n_classes if m.conditional else 0
        self.z_dim = m.z_dim
        torch.manual_seed(t.seed)
        self.G, self.D = build_model(m.name, image_shape=data.image_shape, n_classes=self.n_classes, z_dim=m.z_dim,
                                     channels=m.channels, spectral_norm=m.spectral_norm, embed_dim=m.embed_dim,
                                     # batch norm in the critic breaks the per-sample gradient penalty
                                     batch_norm_d=t.gp_weight == 0)
        self.accel.place(self.G)
        self.accel.place(self.D)
        self.ema = EMA(self.G, decay=t.ema_decay, warmup=True) if t.ema_decay > 0 else None
        if distributed.active and device.type == "cuda":
            # Batch statistics over the global batch, as in one process (the average above keeps plain BN).
            self.G = nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            self.D = nn.SyncBatchNorm.convert_sync_batchnorm(self.D)
        # What the step calls: synced (DDP) and compiled as the recipe asks. D_local is D without DDP's wrapper,
        # for the generator's update (D frozen) and the gradient penalty's double backward; D's gradients are
        # still averaged, by the hooks of D_step's forward passes in the same backward.
        self.G_step = self.accel.compiled(distributed.wrap(self.G, device=device))
        self.D_step = self.accel.compiled(distributed.wrap(self.D, device=device))
        self.D_local = self.accel.compiled(self.D) if distributed.active else self.D_step
        self.opt_g = adam(self.G.parameters(), lr=t.lr_g, betas=t.betas)
        self.opt_d = adam(self.D.parameters(), lr=t.lr_d, betas=t.betas)
        self.batches = Batches(data, batch_size=t.batch_size, seed=t.seed, device=device, distributed=distributed)
        self.images_per_step = self.batches.batch_size * t.n_critic
        #: Lines for the user about how the recipe meets the data.
        one_class = (f"model.conditional = true, but the data has one class ({self.class_names[0]}): the condition "
                     f"tells the networks nothing" if m.conditional and data.n_classes == 1 else None)
        self.notes = [note for note in (self.batches.note, one_class) if note]
        self.noise = torch.Generator(device=device).manual_seed(t.seed + 1)
        self._lr_factor: float | None = None
        # One process only: DDP's gradient hooks do not record as they are.
        self._graphed_update = GraphedCall(self._update, device=device,
                                           enabled=self.accel.cuda_graphs and not distributed.active,
                                           generators=(self.noise,), before_capture=self._make_capturable)
        self.z_fixed, self.labels_fixed, self.nrow = fixed_latents(n_classes=self.n_classes, z_dim=m.z_dim,
                                                                   seed=t.seed)

    # -- one step ------------------------------------------------------------------------------------------
    def _latents(self) -> Tensor:
        """This rank's shard of a global batch of latents ``(n, z_dim)``."""
        z = torch.randn(self.batches.batch_size, self.z_dim, device=self.device, generator=self.noise)
        return self.distributed.shard(z)

    def step(self, step: int) -> dict[str, Tensor]:
        """Training step ``step`` (1-based): ``n_critic`` D updates then one G update. Returns detached scalars
        named ``loss/D``, ``loss/G``, ...

        The host-side part happens here (learning rates, which batches); the tensor work is :meth:`_update`, which
        on CUDA is recorded once and replayed as a CUDA graph (``train.cuda_graphs``).
        """
        t = self.recipe.train
        factor = linear_decay(step, steps=t.steps, start=t.lr_decay_start)
        if factor != self._lr_factor:  # a tensor learning rate costs a launch to set, so only on a change
            set_lr(self.opt_g, t.lr_g * factor)
            set_lr(self.opt_d, t.lr_d * factor)
            self._lr_factor = factor
        index = torch.stack([self.batches.next_index() for _ in range(t.n_critic)])
        scalars = self._graphed_update(index)
        if self.ema is not None:
            self.ema.update(self.G)
        return dict(zip(self.SCALARS, scalars.unbind()))

    #: Names of the scalars :meth:`_update` returns, in order.
    SCALARS = ("loss/D", "loss/G", "loss/D/gp", "D/real", "D/fake", "D/accuracy")

    def _update(self, index: Tensor) -> Tensor:
        """The tensor work of one step: ``index`` ``(n_critic, n)`` holds the batch indices of each D update.
        Returns the :attr:`SCALARS` stacked, ``(6,)`` float32.

        The fakes of the last D update keep their graph and are reused for the G update (as in the DCGAN
        reference code): one generator forward per step instead of two. D is frozen during the G update (its
        gradients there would be thrown away). Nothing here reads back to the host or keeps Python state, so that
        it can be recorded as a CUDA graph.
        """
        t = self.recipe.train
        for critic_step in range(t.n_critic):
            last = critic_step == t.n_critic - 1
            real, labels = self.batches.gather(index[critic_step])
            real = self.accel.images(real)
            cond = labels if self.n_classes else None
            with torch.set_grad_enabled(last), self.accel.autocast():
                fake = self.G_step(self._latents(), cond)
            with self.accel.autocast():
                real_logits = self.D_step(real, cond).float()
                fake_logits = self.D_step(fake.detach(), cond).float()
                loss_d = d_loss(self.loss, real_logits, fake_logits)
            gp = torch.zeros((), device=self.device)
            if t.gp_weight > 0:
                # One mixing weight per sample of the global batch, so the stream does not depend on the ranks.
                eps = self.distributed.shard(torch.rand(self.batches.batch_size, *(1,) * (real.dim() - 1),
                                                        generator=self.noise, device=self.device))
                gp = gradient_penalty(self.D_local, real, fake.detach().float(), cond, weight=t.gp_weight,
                                      eps=eps)
            self.opt_d.zero_grad(set_to_none=True)
            (loss_d + gp).backward()
            self.opt_d.step()

        self.D.requires_grad_(False)
        with self.accel.autocast():
            loss_g = g_loss(self.loss, self.D_local(fake, cond).float())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)
        real_logits, fake_logits = real_logits.detach(), fake_logits.detach()
        return torch.stack([loss_d.detach(), loss_g.detach(), gp.detach(), real_logits.mean(), fake_logits.mean(),
                            d_accuracy(self.loss, real_logits, fake_logits)])

    def _make_capturable(self) -> None:
        make_capturable(self.opt_g)
        make_capturable(self.opt_d)

    @property
    def models(self) -> dict[str, nn.Module]:
        """The networks trained (the moving average aside)."""
        return {"G": self.G, "D": self.D}

    # -- sampling ------------------------------------------------------------------------------------------
    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.G

    def refresh_sampler(self, *, seed: int, batches: int = 16, batch_size: int = 256) -> None:
        """Give the moving-average generator batch-norm statistics of its own (see
        :func:`~specgan.models.ema.standing_statistics`) from ``batches × batch_size`` latents drawn with their
        own seeded generator, so training's random streams are untouched (resume stays exact)."""
        if self.ema is None:
            return
        g = torch.Generator(device=self.device).manual_seed(seed)

        def inputs():
            for _ in range(batches):
                z = torch.randn(batch_size, self.z_dim, device=self.device, generator=g)
                labels = torch.randint(0, self.n_classes, (batch_size,), device=self.device, generator=g) \
                    if self.n_classes else None
                yield z, labels

        with self.accel.autocast():
            standing_statistics(self.ema.module, inputs())

    def write_samples(self, folder: Path, step: int) -> None:
        """``samples/step_XXXXXX.png``: a grid from the run's fixed latents (one row per class when conditional),
        and for spectrogram models four of them as ``.wav``."""
        sampler, z, labels = self.sampler, self.z_fixed, self.labels_fixed
        was_training = sampler.training
        sampler.eval()
        with torch.no_grad():
            images = sampler(z.to(self.device), labels.to(self.device) if labels is not None else None).float()
        sampler.train(was_training)
        save_grid(images, folder / f"step_{step:06d}.png", nrow=self.nrow, low_at_bottom=self.audio is not None)
        if self.audio is not None:
            picks = list(range(0, len(images), max(1, len(images) // 4)))[:4]
            names = [f"step_{step:06d}_{i}" + (f"_{self.class_names[int(labels[i])]}" if labels is not None else "")
                     for i in picks]
            render_audio(images[picks], audio=self.audio, paths=[folder / f"{n}.wav" for n in names],
                         seed=self.recipe.train.seed)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"models": {"G": self.G.state_dict(), "D": self.D.state_dict(),
                           **({"G_ema": self.ema.state_dict()} if self.ema is not None else {})},
                "optimizers": {"G": portable_state(self.opt_g), "D": portable_state(self.opt_d)},
                "batches": self.batches.state_dict(), "noise": self.noise.get_state(),
                "ema_updates": self.ema.updates if self.ema is not None else 0}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["models"]["G"])
        self.D.load_state_dict(state["models"]["D"])
        if self.ema is not None:
            self.ema.load_state_dict(state["models"]["G_ema"])
            self.ema.updates = int(state["ema_updates"])
        self.opt_g.load_state_dict(state["optimizers"]["G"])
        self.opt_d.load_state_dict(state["optimizers"]["D"])
        match_layouts(self.opt_g)
        match_layouts(self.opt_d)
        self.batches.load_state_dict(state["batches"])
        self.noise.set_state(state["noise"].cpu())


def fixed_latents(*, n_classes: int, z_dim: int, seed: int, n: int = 64) -> tuple[Tensor, Tensor | None, int]:
    """The latent batch every sample grid of a run uses, so grids are comparable across steps.

    Conditional models get one row per class (8 samples each, up to 16 classes). Returns ``(z, labels, nrow)``.
    """
    g = torch.Generator().manual_seed(seed + 12345)
    if n_classes and n_classes <= 16:
        per = 8
        labels = torch.arange(n_classes).repeat_interleave(per)
        return torch.randn(len(labels), z_dim, generator=g), labels, per
    labels = torch.arange(n) % n_classes if n_classes else None
    return torch.randn(n, z_dim, generator=g), labels, 8


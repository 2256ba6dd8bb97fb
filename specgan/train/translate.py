"""The ``translate`` task: a CycleGAN between two domains of spectrogram chunks, trained from unpaired examples.

Two generators, ``G_AB`` (A → B) and ``G_BA`` (B → A), and two PatchGAN discriminators, ``D_A`` and ``D_B``
(Zhu et al. 2017; CycleGAN-VC2, Kaneko et al. 2019, for the gated generator). One step is::

    G update (D frozen): adversarial   g_loss(D_B(G_AB(a))) + g_loss(D_A(G_BA(b)))
                         cycle         cycle_weight    · (|G_BA(G_AB(a)) - a|₁ + |G_AB(G_BA(b)) - b|₁)
                         identity      identity_weight · (|G_BA(a) - a|₁ + |G_AB(b) - b|₁), up to identity_until
    D update:            d_loss(D_A(a), D_A(pool_A(G_BA(b)))) + d_loss(D_B(b), D_B(pool_B(G_AB(a))))

with Adam on each pair and the learning rates decaying linearly after ``train.lr_decay_start``. Every term is
returned under its own name (``loss/G/cycle_a`` …) for the log. Batches are random time crops of
``train.crop_frames`` taken on the device; the frequency axis is never altered.

Note on the balance of terms: the ``lsgan`` losses of :mod:`specgan.losses` halve each squared term (Mao et
al.), so the G adversarial term is half of the reference code's plain MSE; weights are as the recipe says.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from specgan.cuda_graph import GraphedCall
from specgan.data.image_data import ImageData
from specgan.errors import ConfigError
from specgan.images import save_grid
from specgan.losses import d_accuracy, d_loss, g_loss
from specgan.models import build_model
from specgan.models.cyclegan import MIN_SIDE
from specgan.sample import render_audio
from specgan.train.acceleration import Acceleration
from specgan.train.config import Recipe
from specgan.train.distributed import Distributed
from specgan.train.generate import Batches
from specgan.train.optim import adam, linear_decay, make_capturable, match_layouts, portable_state, set_lr

#: Fixed examples per direction in each sample grid (rows of real | translated | reconstructed).
SAMPLE_EXAMPLES = 4
#: Of those, how many are also rendered as audio.
SAMPLE_AUDIO = 2


def crop_starts(n: int, *, frames: int, width: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """``(n,)`` random first frames of ``width``-frame windows in ``frames``-frame images."""
    return torch.randint(0, frames - width + 1, (n,), generator=generator, device=device)


def crop_windows(images: Tensor, *, starts: Tensor, width: int) -> Tensor:
    """``(N, C, H, W)`` images → ``(N, C, H, width)`` windows starting at frames ``starts`` ``(N,)``."""
    n, c, h, _ = images.shape
    index = starts[:, None] + torch.arange(width, device=images.device)
    return images.gather(3, index[:, None, None, :].expand(n, c, h, width))


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al. 2017): D sees a mix of the newest fakes and
    older ones, which damps oscillation between G and D.

    Until the pool holds ``size`` images, each new image is stored and passed through. After that, each new
    image is, with probability 1/2, swapped for a random stored one (which is returned instead), else passed
    through. Decisions for a batch are drawn at once on the device, and the images of one batch pick distinct
    slots (the reference code handles them in turn and may pick one slot twice).
    """

    def __init__(self, size: int, *, generator: torch.Generator):
        self.size, self.generator = size, generator
        self.images: Tensor | None = None
        self.count = 0

    @property
    def full(self) -> bool:
        """Whether the pool holds ``size`` images (from then on a query does the same work every time)."""
        return self.count >= self.size

    def query(self, images: Tensor) -> Tensor:
        """``(N, ...)`` new fakes → ``(N, ...)`` fakes for D (detached)."""
        images = images.detach()
        if self.size == 0:
            return images
        if self.images is None:
            self.images = images.new_zeros(self.size, *images.shape[1:])
        elif self.images.dtype != images.dtype:  # a run continued with another train.precision
            self.images = self.images.to(images.dtype)
        fill = min(self.size - self.count, len(images))
        if fill:
            self.images[self.count:self.count + fill] = images[:fill]
            self.count += fill
        out = [images[:fill]]
        for rest in images[fill:].split(self.size):
            # Distinct slots within a group: a write to one slot twice in one indexed assignment would be
            # resolved in an unspecified order, and runs must be repeatable.
            slots = torch.randperm(self.size, generator=self.generator, device=images.device)[:len(rest)]
            swap = torch.rand(len(rest), generator=self.generator, device=images.device) < 0.5
            swap = swap.view(-1, *([1] * (rest.dim() - 1)))
            old = self.images[slots]
            self.images[slots] = torch.where(swap, rest, old)
            out.append(torch.where(swap, old, rest))
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"images": self.images if self.images is not None else torch.empty(0), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        self.images = state["images"] if state["images"].numel() else None


class TranslateTask:
    """Models, optimizers and one training step of a CycleGAN between ``data.domains = [A, B]``."""

    def __init__(self, recipe: Recipe, data: ImageData, *, device: torch.device,
                 distributed: Distributed = Distributed()):
        self.recipe, self.device, self.distributed = recipe, device, distributed
        m, t = recipe.model, recipe.train
        self.accel = Acceleration.for_recipe(recipe, device=device, one_process=not distributed.active)
        if data.n_classes != 2:
            raise ConfigError(f"{data.source}: task = 'translate' needs exactly two domains, got "
                              f"{', '.join(data.class_names) or 'none'}")
        channels, n_mels, frames = data.image_shape
        if channels != 1:
            raise ConfigError(f"data.channels = {channels}: {m.name} translates one-channel images (spectrograms, "
                              f"grayscale images); set data.channels = 1")
        if t.crop_frames > frames:
            raise ConfigError(f"train.crop_frames = {t.crop_frames}: the chunks of {data.source} are only {frames} "
                              f"frames wide")
        # The networks' own check would name the image shape; name the key or the data instead.
        if 0 < t.crop_frames < MIN_SIDE:
            raise ConfigError(f"train.crop_frames = {t.crop_frames}: {m.name} needs at least {MIN_SIDE} frames")
        for key, what, size in (("n_mels", "mel bands", n_mels), ("frames", "frames", frames)):
            if size < MIN_SIDE:
                raise ConfigError(f"{data.source}: its chunks have {size} {what}; {m.name} needs at least "
                                  f"{MIN_SIDE} (prep them again with audio.{key} >= {MIN_SIDE})")
        self.domains = data.class_names
        self.audio = data.audio
        self.loss = recipe.adversarial_loss
        self.crop = t.crop_frames if 0 < t.crop_frames < frames else 0
        shape = (1, n_mels, self.crop or frames)

        torch.manual_seed(t.seed)
        self.G_AB, self.D_B = build_model(m.name, image_shape=shape, channels=m.channels, n_blocks=m.n_blocks)
        self.G_BA, self.D_A = build_model(m.name, image_shape=shape, channels=m.channels, n_blocks=m.n_blocks)
        for module in self.models.values():
            self.accel.place(module)
        # What the step calls: synced (DDP) and compiled as the recipe asks; the discriminators also without DDP's
        # wrapper, for the generators' update, which freezes them.
        self.step_modules = {name: self.accel.compiled(distributed.wrap(module, device=device))
                             for name, module in self.models.items()}
        self.frozen_discriminators = {name: self.accel.compiled(self.models[name]) if distributed.active
                                      else self.step_modules[name] for name in ("D_A", "D_B")}
        self.opt_g = adam(itertools.chain(self.G_AB.parameters(), self.G_BA.parameters()), lr=t.lr_g, betas=t.betas)
        self.opt_d = adam(itertools.chain(self.D_A.parameters(), self.D_B.parameters()), lr=t.lr_d, betas=t.betas)

        def domain(label: int) -> ImageData:
            keep = data.labels == label
            return ImageData(images=data.images[keep], labels=data.labels[keep], class_names=data.class_names,
                             audio=data.audio, source=data.source)

        a, b = domain(0), domain(1)
        for name, part in zip(self.domains, (a, b)):
            if len(part) < distributed.world_size:
                # Caught here, not as a NaN loss at step 1: every file of a domain can be too short for a chunk.
                noun = "chunk" if data.audio is not None else "image"
                why = (f" for {distributed.world_size} processes" if len(part) else
                       " (prep skipped all of its files; its manifest.json says why)" if data.audio is not None else "")
                raise ConfigError(f"{data.source}: domain {name} has {len(part) or 'no'} {noun}"
                                  f"{'' if len(part) == 1 else 's'}{why}; nothing to translate from")
        self.batches_a = Batches(a, batch_size=t.batch_size, seed=t.seed, device=device, distributed=distributed,
                                 what=f"chunks of domain {self.domains[0]}")
        self.batches_b = Batches(b, batch_size=t.batch_size, seed=t.seed + 1, device=device, distributed=distributed,
                                 what=f"chunks of domain {self.domains[1]}")
        self.images_per_step = self.batches_a.batch_size
        #: Lines for the user about how the recipe meets the data.
        self.notes = [note for note in (self.batches_a.note, self.batches_b.note) if note]
        self.noise = torch.Generator(device=device).manual_seed(t.seed + 2)
        self.pool_a = ImagePool(t.pool_size, generator=self.noise)
        self.pool_b = ImagePool(t.pool_size, generator=self.noise)
        self._lr_factor: float | None = None
        self._identity_on = True
        # One process only: DDP's gradient hooks and the pools' all_gather do not record as they are.
        self._graphed_update = GraphedCall(self._update, device=device,
                                           enabled=self.accel.cuda_graphs and not distributed.active,
                                           generators=(self.noise,), before_capture=self._make_capturable)
        # Whole chunks, evenly spread over each domain: the generators are fully convolutional along time.
        self.examples = {
            name: part.images[torch.linspace(0, len(part) - 1, min(SAMPLE_EXAMPLES, len(part))).long()].to(device)
            for name, part in zip(("A", "B"), (a, b))}

    @property
    def models(self) -> dict[str, nn.Module]:
        return {"G_AB": self.G_AB, "G_BA": self.G_BA, "D_A": self.D_A, "D_B": self.D_B}

    def _crop(self, batches: Batches, index: Tensor) -> Tensor:
        """The images of ``batches`` at ``index`` (this rank's shard of a global batch), each cropped to a random
        window (crop starts are drawn for the global batch, so the stream does not depend on the number of
        ranks)."""
        images = batches.gather(index)[0]
        if self.crop:
            starts = crop_starts(batches.batch_size, frames=images.shape[-1], width=self.crop,
                                 generator=self.noise, device=self.device)
            images = crop_windows(images, starts=self.distributed.shard(starts), width=self.crop)
        return self.accel.images(images)

    @staticmethod
    def _real_and_fake(discriminator, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """D's fp32 logits for ``real`` and ``fake`` from one batched call."""
        logits = discriminator(torch.cat([real, fake.to(real.dtype)])).float()
        return logits.split([len(real), len(fake)])

    def _from_pool(self, pool: ImagePool, fakes: Tensor) -> Tensor:
        """This rank's shard of the pool's answer to the global batch of ``fakes``."""
        return self.distributed.shard(pool.query(self.distributed.all_gather(fakes.detach())))

    # -- one step ------------------------------------------------------------------------------------------
    #: Names of the scalars :meth:`_update` returns, in order (``lr/G`` and ``lr/D`` are added by :meth:`step`).
    SCALARS = ("loss/G", "loss/G/adv_a", "loss/G/adv_b", "loss/G/cycle_a", "loss/G/cycle_b", "loss/G/identity_a",
               "loss/G/identity_b", "loss/D", "loss/D/a", "loss/D/b", "D/real", "D/fake", "D/accuracy")

    def step(self, step: int) -> dict[str, Tensor]:
        """Training step ``step`` (1-based): one update of both generators, then of both discriminators.

        The host-side part happens here (learning rates, which batches, whether the identity loss is on); the
        tensor work is :meth:`_update`, which on CUDA is recorded once the history pools are full and replayed
        as a CUDA graph (``train.cuda_graphs``), recorded again when the identity loss switches off.
        """
        t, w = self.recipe.train, self.recipe.loss
        factor = linear_decay(step, steps=t.steps, start=t.lr_decay_start)
        if factor != self._lr_factor:  # a tensor learning rate costs a launch to set, so only on a change
            set_lr(self.opt_g, t.lr_g * factor)
            set_lr(self.opt_d, t.lr_d * factor)
            self._lr_factor = factor
        index_a, index_b = self.batches_a.next_index(), self.batches_b.next_index()
        self._identity_on = w.identity_weight > 0 and step <= w.identity_until
        if self.pool_a.full and self.pool_b.full:
            scalars = self._graphed_update(index_a, index_b, key=self._identity_on)
        else:  # the pools' fill level is host state that changes every step until they are full
            scalars = self._update(index_a, index_b)
        out = dict(zip(self.SCALARS, scalars.unbind()))
        out["lr/G"] = torch.full((), t.lr_g * factor, device=self.device)
        out["lr/D"] = torch.full((), t.lr_d * factor, device=self.device)
        return out

    def _update(self, index_a: Tensor, index_b: Tensor) -> Tensor:
        """The tensor work of one step on the batches at ``index_a`` and ``index_b`` (this rank's shards), with
        the identity loss as :attr:`_identity_on` says. Returns the :attr:`SCALARS` stacked, ``(13,)``."""
        w = self.recipe.loss
        real_a = self._crop(self.batches_a, index_a)
        real_b = self._crop(self.batches_b, index_b)
        identity_on = self._identity_on
        zero = torch.zeros((), device=self.device)
        G_AB, G_BA, D_A, D_B = (self.step_modules[k] for k in ("G_AB", "G_BA", "D_A", "D_B"))

        # Generators, with the discriminators frozen (no gradients computed for their weights).
        self.D_A.requires_grad_(False)
        self.D_B.requires_grad_(False)
        # Calls that share a network share one batch: instance norm keeps no batch statistics, so this is exact,
        # and it halves the kernel launches (4 generator and 2 discriminator calls per step instead of 6 and 4).
        with self.accel.autocast():
            if identity_on:
                fake_b, same_b = G_AB(torch.cat([real_a, real_b])).split([len(real_a), len(real_b)])
                fake_a, same_a = G_BA(torch.cat([real_b, real_a])).split([len(real_b), len(real_a)])
            else:
                fake_b, fake_a = G_AB(real_a), G_BA(real_b)
            adv_b = g_loss(self.loss, self.frozen_discriminators["D_B"](fake_b).float())
            adv_a = g_loss(self.loss, self.frozen_discriminators["D_A"](fake_a).float())
            cycle_a = F.l1_loss(G_BA(fake_b).float(), real_a)
            cycle_b = F.l1_loss(G_AB(fake_a).float(), real_b)
            identity_a = F.l1_loss(same_a.float(), real_a) if identity_on else zero
            identity_b = F.l1_loss(same_b.float(), real_b) if identity_on else zero
        loss_g = (adv_a + adv_b + w.cycle_weight * (cycle_a + cycle_b)
                  + (w.identity_weight * (identity_a + identity_b) if identity_on else zero))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.D_A.requires_grad_(True)
        self.D_B.requires_grad_(True)

        # Discriminators, on real images and on fakes drawn through the history pools.
        with self.accel.autocast():
            real_logits_a, fake_logits_a = self._real_and_fake(D_A, real_a, self._from_pool(self.pool_a, fake_a))
            real_logits_b, fake_logits_b = self._real_and_fake(D_B, real_b, self._from_pool(self.pool_b, fake_b))
            loss_d_a = d_loss(self.loss, real_logits_a, fake_logits_a)
            loss_d_b = d_loss(self.loss, real_logits_b, fake_logits_b)
        self.opt_d.zero_grad(set_to_none=True)
        (loss_d_a + loss_d_b).backward()
        self.opt_d.step()

        scalars = [loss_g, adv_a, adv_b, cycle_a, cycle_b, identity_a, identity_b, loss_d_a + loss_d_b, loss_d_a,
                   loss_d_b, (real_logits_a.mean() + real_logits_b.mean()) / 2,
                   (fake_logits_a.mean() + fake_logits_b.mean()) / 2,
                   (d_accuracy(self.loss, real_logits_a, fake_logits_a)
                    + d_accuracy(self.loss, real_logits_b, fake_logits_b)) / 2]
        return torch.stack([v.detach().float() for v in scalars])

    def _make_capturable(self) -> None:
        make_capturable(self.opt_g)
        make_capturable(self.opt_d)

    # -- samples -------------------------------------------------------------------------------------------
    def refresh_sampler(self, *, seed: int) -> None:
        """Nothing to do: the generators use instance norm, which has no running statistics."""

    def write_samples(self, folder: Path, step: int) -> None:
        """Per direction, ``samples/step_XXXXXX_A-to-B.png`` (A and B: the domains' names): rows of real |
        translated | translated back, on fixed whole chunks; for spectrograms also ``step_XXXXXX_A-to-B_i.wav`` of
        the first translations (and, once, ``real_A_i.wav`` of their sources)."""
        directions = [("A", self.G_AB, self.G_BA, 0, 1), ("B", self.G_BA, self.G_AB, 1, 0)]
        for key, forward, backward, src, dst in directions:
            real = self.examples[key]
            with torch.no_grad(), self.accel.autocast():
                forward.eval()
                backward.eval()
                fake = forward(real).float()
                rec = backward(fake).float()
                forward.train()
                backward.train()
            name = f"{self.domains[src]}-to-{self.domains[dst]}"
            rows = torch.stack([real, fake, rec], dim=1).flatten(0, 1)
            save_grid(rows, folder / f"step_{step:06d}_{name}.png", nrow=3, low_at_bottom=self.audio is not None)
            if self.audio is None:
                continue
            n = min(SAMPLE_AUDIO, len(real))
            render_audio(fake[:n], audio=self.audio, seed=self.recipe.train.seed,
                         paths=[folder / f"step_{step:06d}_{name}_{i}.wav" for i in range(n)])
            sources = [folder / f"real_{self.domains[src]}_{i}.wav" for i in range(n)]
            if not all(p.exists() for p in sources):
                render_audio(real[:n], audio=self.audio, paths=sources, seed=self.recipe.train.seed)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"models": {name: module.state_dict() for name, module in self.models.items()},
                "optimizers": {"G": portable_state(self.opt_g), "D": portable_state(self.opt_d)},
                "batches": {"A": self.batches_a.state_dict(), "B": self.batches_b.state_dict()},
                "pools": {"A": self.pool_a.state_dict(), "B": self.pool_b.state_dict()},
                "noise": self.noise.get_state()}

    def load_state_dict(self, state: dict) -> None:
        for name, module in self.models.items():
            module.load_state_dict(state["models"][name])
        self.opt_g.load_state_dict(state["optimizers"]["G"])
        self.opt_d.load_state_dict(state["optimizers"]["D"])
        match_layouts(self.opt_g)
        match_layouts(self.opt_d)
        self.batches_a.load_state_dict(state["batches"]["A"])
        self.batches_b.load_state_dict(state["batches"]["B"])
        self.pool_a.load_state_dict(state["pools"]["A"])
        self.pool_b.load_state_dict(state["pools"]["B"])
        self.noise.set_state(state["noise"].cpu())

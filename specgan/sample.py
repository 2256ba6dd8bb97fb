"""Samples from a trained generator: rebuilt from its checkpoint alone (no recipe file needed)."""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from specgan.audio.inverse import MelInverter
from specgan.audio.io import refuse_existing, save_audio
from specgan.audio.params import AudioParams
from specgan.errors import CheckpointError, ConfigError
from specgan.folders import made_parent
from specgan.models import build_model
from specgan.recipe import from_mapping
from specgan.train.checkpoint import load_model_checkpoint


@dataclass(frozen=True)
class TrainedGenerator:
    """A generator ready to sample, with what its checkpoint says about the data."""

    generator: nn.Module
    z_dim: int
    class_names: tuple[str, ...]
    conditional: bool
    image_shape: tuple[int, int, int]
    audio: AudioParams | None
    step: int
    checkpoint: Path
    device: torch.device

    def __call__(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """``(N, z_dim)`` latents (and ``(N,)`` labels for conditional models) → ``(N, C, H, W)`` in [-1, 1]."""
        with torch.no_grad():
            return self.generator(z.to(self.device), labels.to(self.device) if labels is not None else None)

    def label_index(self, label: str) -> int:
        """A class given by name ("7", "jazz") or, where no class is named by a number, by index ("0": the first
        class; with folders named 2, 10 and 3, "0" could only be a mistake)."""
        if label in self.class_names:
            return self.class_names.index(label)
        numbered = any(name.isdigit() for name in self.class_names)
        # ASCII digits only: "²" is a digit to str.isdigit but no number to int()
        if label.isascii() and label.isdigit() and int(label) < len(self.class_names) and not numbered:
            return int(label)
        alike = [i for i, name in enumerate(self.class_names) if name.casefold() == label.casefold()]
        if len(alike) == 1:  # "sandal" for "Sandal"; names that differ only in case must be given exactly
            return alike[0]
        raise ConfigError(f"--label {label}: not a class of this model (classes: {', '.join(self.class_names)})")


def load_generator(run_or_checkpoint: str | Path, *, device: torch.device | str = "cpu", use_ema: bool = True,
                   on_warning: Callable[[str], None] | None = None) -> TrainedGenerator:
    """Rebuild the generator of a ``generate`` run from a checkpoint (or a run folder's newest intact one; each
    damaged newer one is passed over with a line to ``on_warning``)."""
    path, state = load_model_checkpoint(run_or_checkpoint, on_warning=on_warning)
    return generator_from_checkpoint(path, state, device=device, use_ema=use_ema)


def generator_from_checkpoint(path: Path, state: dict, *, device: torch.device | str = "cpu",
                              use_ema: bool = True) -> TrainedGenerator:
    """The generator of the checkpoint ``state`` read from ``path`` (see :func:`load_generator`)."""
    recipe, data = state["recipe"], state["data"]
    if recipe.get("task", "generate") != "generate":
        raise ConfigError(f"{path}: sample draws images from a generate run; this is a {recipe['task']} run, "
                          f"which converts recordings: specgan convert FILE --to DOMAIN --model RUN")
    model = recipe["model"]
    n_classes = len(data["class_names"]) if model["conditional"] else 0
    try:
        generator, _ = build_model(model["name"], image_shape=tuple(data["image_shape"]), n_classes=n_classes,
                                   z_dim=model["z_dim"], channels=model["channels"],
                                   spectral_norm=model["spectral_norm"], batch_norm_d=True,
                                   embed_dim=model["embed_dim"])
    except ConfigError as e:  # a recipe this specgan cannot build (another version's model name, say)
        raise CheckpointError(f"{path}: cannot rebuild its generator ({e})") from None
    models = state["task"]["models"]
    try:
        generator.load_state_dict(models["G_ema"] if use_ema and "G_ema" in models else models["G"])
    except RuntimeError as e:  # "Error(s) in loading state_dict ...:" then one line per mismatch
        detail = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e).strip())
        raise CheckpointError(f"{path}: task.models.G does not fit model {model['name']!r} of its recipe "
                              f"({detail})") from None
    generator.to(device).eval()
    audio = from_mapping(AudioParams, data["audio"], source=str(path), prefix="data.audio.") \
        if data.get("audio") else None
    return TrainedGenerator(generator, model["z_dim"], tuple(data["class_names"]), bool(model["conditional"]),
                            tuple(data["image_shape"]), audio, int(state["step"]), path, torch.device(device))


#: Spectrogram images :func:`render_audio` inverts together: Griffin-Lim's complex frames of a whole ``sample -n
#: 4096 --audio`` at once had taken 2.6 GB for 64×64 images at n_fft 256, and would be about 8 times that at the
#: default 80×128 and n_fft 1024.
RENDER_BATCH = 64


def render_audio(images: Tensor, *, audio: AudioParams, paths: list[Path], n_iter: int = 32, seed: int = 0) -> None:
    """Write spectrogram images ``(N, 1, n_mels, frames)`` as audio files through Griffin-Lim, ``RENDER_BATCH``
    images at a time."""
    inverter = MelInverter(audio).to(images.device)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    for first in range(0, len(images), RENDER_BATCH):
        waves = inverter(images[first:first + RENDER_BATCH, 0].float(), n_iter=n_iter, generator=generator)
        peak = waves.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)
        waves = waves / peak.clamp_min(1.0)  # never clip; leave quiet samples quiet
        for wave, path in zip(waves, paths[first:first + RENDER_BATCH]):
            save_audio(path, wave, sample_rate=audio.sample_rate)


@dataclass(frozen=True)
class SampleReport:
    grid: Path
    n: int
    step: int
    checkpoint: Path
    audio: list[Path]
    #: ``.wav`` files beside the grid named as its samples, left by an earlier, larger or --audio call: not these.
    stale: list[Path] = field(default_factory=list)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` ``(z_dim,)`` at fractions ``t`` ``(k,)`` → ``(k,
    z_dim)``; Gaussian latents keep their typical norm along the way (a straight line would pass near 0)."""
    omega = torch.arccos(torch.clamp(torch.dot(a / a.norm(), b / b.norm()), -1.0, 1.0))
    if omega.abs() < 1e-6:
        return torch.lerp(a[None], b[None], t[:, None])
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / torch.sin(omega)


def latents_and_labels(model: TrainedGenerator, *, n: int, label: str | None, seed: int,
                       interpolate: bool) -> tuple[Tensor, Tensor | None, int]:
    """The latents ``(n, z_dim)``, labels and row length of a sample grid."""
    if interpolate and n < 2:
        raise ConfigError(f"--n {n}: a latent walk (--interpolate) needs at least 2 samples, one at each end")
    g = torch.Generator().manual_seed(seed)
    nrow = min(8, n) if interpolate else 8 if n >= 16 else n
    if interpolate:
        rows = n // nrow
        ends = torch.randn(rows, 2, model.z_dim, generator=g)
        z = torch.cat([slerp(a, b, torch.linspace(0, 1, nrow)) for a, b in ends])
    else:
        z = torch.randn(n, model.z_dim, generator=g)
    labels = None
    if label is not None and not model.conditional:
        raise ConfigError(f"--label {label}: {model.checkpoint} is not a conditional model")
    if model.conditional:
        if label is not None:
            labels = torch.full((len(z),), model.label_index(label), dtype=torch.long)
        elif interpolate or math.ceil(len(z) / nrow) >= len(model.class_names):  # one class per row, cycling
            labels = (torch.arange(len(z)) // nrow) % len(model.class_names)
        else:  # fewer rows than classes: one class per sample in turn, so that every class is drawn (n permitting)
            labels = torch.arange(len(z)) % len(model.class_names)
    return z, labels, nrow


def draw(run_or_checkpoint: str | Path, *, output: Path, n: int = 64, label: str | None = None, seed: int = 0,
         interpolate: bool = False, audio: bool = False, n_iter: int = 32, device: torch.device | str = "cpu",
         overwrite: bool = False, on_warning: Callable[[str], None] | None = None) -> SampleReport:
    """``specgan sample``: a PNG grid of samples (and, for spectrogram models, one audio file per sample);
    files that exist are refused before any work unless ``overwrite``; ``on_warning`` gets a line for each
    damaged checkpoint passed over."""
    from specgan.images import save_grid

    model = load_generator(run_or_checkpoint, device=device, on_warning=on_warning)
    if output.suffix.lower() != ".png":
        raise ConfigError(f"{output}: the grid is written as PNG; give a .png file name")
    if audio and model.audio is None:
        raise ConfigError(f"--audio: {model.checkpoint} is an image model, not a spectrogram model")
    z, labels, nrow = latents_and_labels(model, n=n, label=label, seed=seed, interpolate=interpolate)
    written = []
    if audio:
        names = [f"{output.stem}_{i:03d}" + (f"_{model.class_names[int(labels[i])]}" if labels is not None else "")
                 for i in range(len(z))]
        written = [output.with_name(f"{name}.wav") for name in names]
    refuse_existing([output, *written], overwrite=overwrite)
    with made_parent(output):
        images = model(z, labels)
        save_grid(images, output, nrow=nrow, low_at_bottom=model.audio is not None)
        if audio:
            render_audio(images, audio=model.audio, paths=written, n_iter=n_iter, seed=seed)
    stale = sorted(set(output.parent.glob(f"{glob.escape(output.stem)}_[0-9][0-9][0-9]*.wav")) - set(written))
    return SampleReport(output, len(images), model.step, model.checkpoint, written, stale)

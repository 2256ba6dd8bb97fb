"""The one shape every dataset takes for training: a whole dataset as tensors.

MNIST IDX files, image folders and prepped spectrogram datasets all load into :class:`ImageData`; the trainer
moves it to the training device once and indexes batches from it, so no per-item Python loader sits in the hot
path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from specgan.audio.params import AudioParams


@dataclass(frozen=True)
class ImageData:
    """A dataset held whole.

    Attributes:
        images: float32 ``(N, C, H, W)`` in [-1, 1]. For spectrograms ``C = 1``, ``H = n_mels``, ``W = frames``.
        labels: int64 ``(N,)``, indices into ``class_names``.
        class_names: one name per class (digits "0".."9", folder names, or spectrogram domains).
        audio: the audio parameters of a spectrogram dataset (``None`` for images).
        source: where it came from (a path), for messages and run metadata.
    """

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    audio: AudioParams | None = None
    source: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.images.shape[0]


def data_fingerprint(data: ImageData) -> str:
    """A cheap identity of a dataset: sha256 over its shape, the first and last MiB of the image bytes, and all
    labels. Any other dataset (MNIST vs Fashion-MNIST, a subset, another normalisation) gives another value."""
    images = data.images.detach().to("cpu", torch.float32).contiguous()
    raw = images.view(-1).view(torch.uint8)
    mib = 1 << 20
    h = hashlib.sha256()
    h.update(repr(tuple(images.shape)).encode())
    h.update(raw[:mib].numpy().tobytes())
    h.update(raw[-mib:].numpy().tobytes())
    h.update(data.labels.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()

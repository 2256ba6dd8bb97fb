"""Prepped spectrogram datasets (``specgan prep``) as training images: one log-mel chunk per image."""

from __future__ import annotations

import os
import shlex
import warnings
from pathlib import Path

import numpy as np
import torch

from specgan.data.dataset_dir import check_values_in_range, open_dataset
from specgan.data.image_data import ImageData
from specgan.errors import DatasetError, SpecganWarning


def load_spectrogram_data(path: str | os.PathLike, *, domains: tuple[str, ...] = ()) -> ImageData:
    """Load the dataset folder ``path`` written by ``specgan prep``.

    Args:
        path: the dataset folder.
        domains: keep only these domains, relabelled ``0..k-1`` in the order given; empty keeps all, with the
            dataset's own labels.

    Returns:
        ImageData with images float32 ``(N, 1, n_mels, frames)``: normalised log-mel in [-1, 1] (see
        :class:`~specgan.audio.params.AudioParams`), labels int64 ``(N,)``, class names = domain names, and the
        dataset's audio parameters. A dataset an interrupted prep left unfinished loads with a SpecganWarning.

    Raises:
        DatasetError: no dataset at ``path``, an unknown or repeated domain (listing the available ones), or no
            chunks to train on.
    """
    path = Path(path)
    ds = open_dataset(path)
    available = ds.domains
    labels = np.array(ds.labels, dtype=np.int64)
    if len(labels) != len(ds.chunks) or (len(labels) and not 0 <= labels.min() <= labels.max() < len(available)):
        raise DatasetError(f"{path}: damaged dataset ({len(ds.chunks)} chunks, {len(labels)} labels, "
                           f"{len(available)} domains); make it again with 'specgan prep'")
    if domains:
        for i, name in enumerate(domains):
            if name not in available:
                raise DatasetError(f"data.domains = {list(domains)}: {path} has no domain {name!r} (available: "
                                   f"{', '.join(available) or 'none'})")
            if name in domains[:i]:
                raise DatasetError(f"{path}: domain {name!r} is listed twice in data.domains")
        relabel = np.full(len(available), -1, dtype=np.int64)
        for new, name in enumerate(domains):
            relabel[available.index(name)] = new
        new_labels = relabel[labels]
        keep = new_labels >= 0
        chunks = np.asarray(ds.chunks[keep], dtype=np.float32)
        labels, class_names = new_labels[keep], tuple(domains)
    else:
        chunks = np.asarray(ds.chunks, dtype=np.float32)
        class_names = available
    if len(labels) == 0:
        which = f" of domains {', '.join(domains)}" if domains else ""
        raise DatasetError(f"{path}: holds no chunks{which} to train on")
    # prep writes values in [-1, 1]; anything else is a damaged file, which training would meet as a NaN loss
    check_values_in_range(ds, chunks, remedy=f"make the dataset again with: specgan prep SRC -o "
                                              f"{shlex.quote(str(path))} --overwrite")
    unfinished = ds.manifest.get("unfinished")
    if unfinished:
        warnings.warn(f"{path}: an interrupted prep left {unfinished} file(s) of its source out; run the same prep "
                      f"command again to add them", SpecganWarning, stacklevel=2)
    images = torch.from_numpy(chunks).unsqueeze(1)
    return ImageData(images=images, labels=torch.from_numpy(labels), class_names=class_names, audio=ds.audio,
                     source=str(path))

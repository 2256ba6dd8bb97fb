"""The dataset kinds a recipe can name (``data.kind``), each a function that loads a whole dataset as ImageData.

Every loader takes ``(path, *, split, domains, image_size, channels)``. An option that a kind has no use for is an
error rather than ignored: ``split = "test"`` on a kind without a test split, ``domains`` on anything but
spectrograms, ``image_size`` and ``channels = 3`` on anything but image folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from specgan.data.idx import load_idx_set
from specgan.data.image_data import ImageData
from specgan.data.image_folder import load_image_folder
from specgan.data.spectrogram_data import load_spectrogram_data
from specgan.errors import ConfigError, DatasetError

SPLITS = ("train", "test")

Loader = Callable[..., ImageData]


def _only(kind: str, *, split: str = "train", domains: tuple[str, ...] = (),
          image_size: tuple[int, int] | None = None, channels: int = 1, allowed: tuple[str, ...] = ()) -> None:
    """Reject options that ``kind`` does not use."""
    if channels != 1 and "channels" not in allowed:
        raise ConfigError(f"data.channels = {channels}: only image folders can be loaded in colour "
                          f"(data.kind = {kind!r} has one channel)")
    if split != "train" and "split" not in allowed:
        raise ConfigError(f"data.split = {split!r}: data.kind = {kind!r} has no test split (only the IDX sets do)")
    if domains and "domains" not in allowed:
        raise ConfigError(f"data.domains = {list(domains)}: only spectrogram datasets have domains "
                          f"(data.kind = {kind!r})")
    if image_size and "image_size" not in allowed:
        raise ConfigError(f"data.image_size = {list(image_size)}: only image folders are resized "
                          f"(data.kind = {kind!r})")


def _idx(name: str) -> Loader:
    def load(path: Path, *, split: str, domains: tuple[str, ...], image_size: tuple[int, int] | None,
             channels: int) -> ImageData:
        _only(name, split=split, domains=domains, image_size=image_size, channels=channels, allowed=("split",))
        return load_idx_set(path, name=name, split=split)

    load.__doc__ = f"{name}: one split of the four IDX files in ``path``, 1×28×28 images."
    return load


def _image_folder(path: Path, *, split: str, domains: tuple[str, ...], image_size: tuple[int, int] | None,
                  channels: int) -> ImageData:
    """image-folder: PNG/JPEG images, one class per sub-folder, grayscale or RGB (``channels``)."""
    _only("image-folder", split=split, domains=domains, image_size=image_size, channels=channels,
          allowed=("image_size", "channels"))
    return load_image_folder(path, image_size=image_size, channels=channels)


def _spectrogram(path: Path, *, split: str, domains: tuple[str, ...], image_size: tuple[int, int] | None,
                 channels: int) -> ImageData:
    """spectrogram: a dataset made by ``specgan prep``, 1×n_mels×frames images, one class per domain."""
    _only("spectrogram", split=split, domains=domains, image_size=image_size, channels=channels,
          allowed=("domains",))
    return load_spectrogram_data(path, domains=domains)


#: ``data.kind`` → loader ``(path, *, split, domains, image_size, channels) -> ImageData``.
DATA_KINDS: dict[str, Loader] = {
    "mnist": _idx("mnist"),
    "fashion-mnist": _idx("fashion-mnist"),
    "image-folder": _image_folder,
    "spectrogram": _spectrogram,
}


def load_data(kind: str, path: str | os.PathLike, *, split: str = "train", domains: tuple[str, ...] = (),
              image_size: tuple[int, int] | None = None, channels: int = 1) -> ImageData:
    """Load the dataset of kind ``kind`` (a key of :data:`DATA_KINDS`) from ``path``, whole.

    Raises:
        ConfigError: an unknown kind or split (listing the valid names), or an option the kind does not use.
        DatasetError: from the loader, naming the missing or bad file.
    """
    if kind not in DATA_KINDS:
        raise ConfigError(f"data.kind = {kind!r}: must be one of {', '.join(DATA_KINDS)}")
    if split not in SPLITS:
        raise ConfigError(f"data.split = {split!r}: must be one of {', '.join(SPLITS)}")
    if Path(path).is_file():  # every kind is a folder; a file here would only be reported as files missing in it
        raise DatasetError(f"{path}: a file, not a folder; the dataset is the folder that holds its files")
    return DATA_KINDS[kind](Path(path), split=split, domains=tuple(domains),
                            image_size=tuple(image_size) if image_size else None, channels=channels)

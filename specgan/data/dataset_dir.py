"""The on-disk format of a prepped spectrogram dataset, and reading it back.

A dataset folder holds ``manifest.json`` and three ``.npy`` arrays whose names carry a generation id::

    chunks-<gen>.npy     float16 (n_chunks, n_mels, frames), normalised log-mel in [-1, 1]
    labels-<gen>.npy     int64   (n_chunks,), index into manifest["domains"]
    positions-<gen>.npy  int64   (n_chunks, 2), (index into manifest["sources"], start sample): the sample, at
                         the dataset's sample rate and before any trimming, on which the chunk's first frame
                         is centred

The manifest names the generation it belongs to and is replaced atomically last: it is the commit point. A
crash before that leaves the previous dataset as it was (the new arrays are orphans, removed by the next prep);
a crash after it leaves the new one complete.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specgan import __version__
from specgan.atomic import atomic_path
from specgan.audio.params import AudioParams
from specgan.errors import DatasetError, check_format
from specgan.recipe import from_mapping, to_mapping

MANIFEST = "manifest.json"
FORMAT = "specgan-dataset"
FORMAT_VERSION = 1
ARRAYS = ("chunks", "labels", "positions")


@dataclass(frozen=True)
class PreppedDataset:
    """A dataset folder opened for reading; ``chunks`` is memory-mapped."""

    path: Path
    manifest: dict[str, Any]
    audio: AudioParams
    chunks: np.ndarray
    labels: np.ndarray
    positions: np.ndarray

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(d["name"] for d in self.manifest["domains"])


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of dataset folder ``path``, or None when there is none. A damaged one is a DatasetError."""
    file = Path(path) / MANIFEST
    if not file.exists():
        return None
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{file}: unreadable manifest ({e})") from None
    check_format(manifest, path=file, expected=FORMAT, version=FORMAT_VERSION, what="dataset manifest",
                 error=DatasetError)
    return manifest


def open_dataset(path: str | os.PathLike) -> PreppedDataset:
    """Open a dataset folder written by ``specgan prep``."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise DatasetError(f"{path}: no {MANIFEST}; make the dataset with 'specgan prep SRC -o {path}'")
    audio = from_mapping(AudioParams, manifest["audio"], source=str(path / MANIFEST), prefix="audio.")
    arrays = {}
    for name in ARRAYS:
        file = path / manifest["files"][name]
        try:
            arrays[name] = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DatasetError(f"{file}: missing or damaged dataset array ({e})") from None
    return PreppedDataset(path=path, manifest=manifest, audio=audio, **arrays)


def write_dataset(path: Path, *, audio: AudioParams, chunks: list[np.ndarray], labels: list[np.ndarray],
                  positions: list[np.ndarray], manifest: dict[str, Any]) -> dict[str, Any]:
    """Write a new generation of the dataset at ``path`` and commit it by replacing the manifest.

    ``chunks``, ``labels`` and ``positions`` are per-source pieces, concatenated in order. ``manifest`` holds the
    descriptive fields (domains, sources, skipped); the format fields, audio parameters and file names are added
    here. Returns the manifest written. Arrays of the previous generation are removed after the commit.
    """
    path.mkdir(parents=True, exist_ok=True)
    generation = uuid.uuid4().hex[:12]
    n_mels, frames = audio.n_mels, audio.frames
    pieces = {"chunks": (chunks, np.float16, (n_mels, frames)), "labels": (labels, np.int64, ()),
              "positions": (positions, np.int64, (2,))}
    files = {}
    for name, (parts, dtype, tail) in pieces.items():
        files[name] = f"{name}-{generation}.npy"
        total = sum(len(p) for p in parts)
        out = np.lib.format.open_memmap(path / files[name], mode="w+", dtype=dtype, shape=(total, *tail))
        row = 0
        for part in parts:
            out[row:row + len(part)] = part
            row += len(part)
        out.flush()
        del out
    full = {"format": FORMAT, "version": FORMAT_VERSION, "specgan_version": __version__,
            "audio": to_mapping(audio),
            "normalization": {"scale": "10*log10(max(mel_power, 1e-10)) dB, mapped linearly from "
                                       "[min_db, max_db] to [-1, 1] and clipped",
                              "min_db": audio.min_db, "max_db": audio.max_db},
            "shape": [sum(len(c) for c in chunks), n_mels, frames], "dtype": "float16",
            "files": files, **manifest}
    with atomic_path(path / MANIFEST) as tmp:
        tmp.write_text(json.dumps(full, indent=1))
    remove_orphans(path, keep=files.values())
    return full


def remove_orphans(path: Path, *, keep) -> None:
    """Delete array files of other generations (left by an interrupted prep or superseded by a commit)."""
    keep = set(keep)
    for name in ARRAYS:
        for file in path.glob(f"{name}-*.npy"):
            if file.name not in keep:
                file.unlink(missing_ok=True)
    for file in path.glob(f".{MANIFEST}.*.tmp"):
        file.unlink(missing_ok=True)

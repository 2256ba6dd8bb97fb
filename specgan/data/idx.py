"""MNIST-style IDX files: reading them, the known sets (MNIST, Fashion-MNIST), and fetching them with checksums.

An IDX file is a big-endian header — two zero bytes, a dtype code (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions, then one uint32 per dimension —
followed by the values in C order. The sets are published gzip-compressed (``*.gz``); both forms are read.

A fetched file is accepted when the md5 of the published ``.gz`` matches, or when the md5 of its uncompressed
content matches the published content (so a raw copy, or a re-compressed one such as Debian's
``dataset-fashion-mnist`` package, is accepted too). Nothing is downloaded at import.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import math
import os
import shlex
import shutil
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from specgan.atomic import atomic_path, temp_files
from specgan.data.image_data import ImageData
from specgan.errors import ConfigError, DatasetError
from specgan.folders import outermost_missing, remove_made

#: IDX dtype code → numpy dtype (big-endian as stored).
IDX_DTYPES: dict[int, np.dtype] = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
                                   0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

GZIP_MAGIC = b"\x1f\x8b"
_BLOCK = 1 << 20


@dataclass(frozen=True)
class IdxFile:
    """One published file of a set.

    Attributes:
        name: the published file name, e.g. ``train-images-idx3-ubyte.gz``.
        md5: md5 of the published ``.gz`` file.
        raw_md5: md5 of its uncompressed IDX content.
    """

    name: str
    md5: str
    raw_md5: str

    @property
    def raw_name(self) -> str:
        """The uncompressed file's name (``name`` without ``.gz``)."""
        return self.name.removesuffix(".gz")


@dataclass(frozen=True)
class IdxSet:
    """An MNIST-like set: four IDX files at ``url``, and its class names (label ``i`` is ``class_names[i]``)."""

    url: str
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    class_names: tuple[str, ...]

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    def split(self, split: str) -> tuple[IdxFile, IdxFile]:
        """``(images, labels)`` of ``split`` ("train" or "test")."""
        if split == "train":
            return self.train_images, self.train_labels
        if split == "test":
            return self.test_images, self.test_labels
        raise ConfigError(f"data.split = {split!r}: must be one of train, test")


#: The known sets. MNIST's checksums are those of torchvision (and of the shared mirror); Fashion-MNIST's are the
#: ones its README and torchvision publish. Debian's dataset-fashion-mnist re-compresses the files (other .gz md5s)
#: but its uncompressed content matches ``raw_md5``.
IDX_SETS: dict[str, IdxSet] = {
    "mnist": IdxSet(
        url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        train_images=IdxFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                             "6bbc9ace898e44ae57da46a324031adb"),
        train_labels=IdxFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                             "a25bea736e30d166cdddb491f175f624"),
        test_images=IdxFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                            "2646ac647ad5339dbf082846283269ea"),
        test_labels=IdxFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                            "27ae3e4e09519cfbb04c329615203637"),
        class_names=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": IdxSet(
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        train_images=IdxFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                             "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        train_labels=IdxFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                             "9018921c3c673c538a1fc5bad174d6f9"),
        test_images=IdxFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                            "8181f5470baa50b63fa0f6fddb340f0a"),
        test_labels=IdxFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                            "15d484375f8d13e6eb1aabb0c3f46965"),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"),
    ),
}


def idx_set(name: str) -> IdxSet:
    """The table entry of ``name``; an unknown name is a ConfigError listing the known ones."""
    try:
        return IDX_SETS[name]
    except KeyError:
        raise ConfigError(f"dataset {name!r}: must be one of {', '.join(IDX_SETS)}") from None


# -- reading -------------------------------------------------------------------------------------------------------

def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it is gzip (recognised by its magic bytes, not its name)."""
    try:
        if _is_gzip(path):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; truncation is an EOFError
        raise DatasetError(f"{path}: damaged gzip file ({e or type(e).__name__})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw.

    Returns:
        The array with the file's shape (e.g. ``(60000, 28, 28)`` uint8 images, ``(60000,)`` uint8 labels) in
        native byte order.

    Raises:
        DatasetError: the file is missing, not IDX, or shorter/longer than its header says.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'none'})")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DatasetError(f"{path}: unknown IDX dtype code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes, the header needs {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize  # Python integers: a damaged header cannot overflow
    if len(data) != expected:
        raise DatasetError(f"{path}: {len(data)} bytes, but its IDX header {list(shape)} needs {expected} "
                           f"(the file is truncated or damaged)")
    values = np.frombuffer(data, dtype=dtype, offset=header)
    return values.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


# -- checksums and fetching ----------------------------------------------------------------------------------------

def _md5(path: Path, *, decompress: bool = False) -> str:
    digest = hashlib.md5()
    opener = gzip.open if decompress else open
    with opener(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, entry: IdxFile, *, label: str | None = None) -> None:
    """Check ``path`` (the published ``.gz``, a re-compressed ``.gz`` or the raw IDX) against ``entry``.

    ``label`` names the file in the message (default: ``path``), e.g. a URL when ``path`` is a temporary file.

    Raises:
        DatasetError: naming the file, the md5 found and the md5 expected.
    """
    label = label or str(path)
    gz = _is_gzip(path)
    got = _md5(path)
    if gz and got == entry.md5:
        return
    try:
        content = _md5(path, decompress=True) if gz else got
    except (OSError, EOFError, zlib.error):
        content = None
    if content == entry.raw_md5:
        return
    if gz:
        raise DatasetError(f"{label}: md5 {got}, expected {entry.md5} (uncompressed content: md5 "
                           f"{content or 'unreadable'}, expected {entry.raw_md5}); the file is damaged or not "
                           f"{entry.name}")
    raise DatasetError(f"{label}: md5 {got}, expected {entry.raw_md5} (the uncompressed {entry.raw_name}); the "
                       f"file is damaged or not {entry.raw_name}")


def _verified(path: Path, entry: IdxFile) -> bool:
    try:
        verify_file(path, entry)
        return True
    except (DatasetError, OSError):
        return False


def idx_files_in(folder: Path) -> list[Path]:
    """The files of any set of :data:`IDX_SETS` (``.gz`` or raw) in ``folder``, sorted."""
    names = {name for spec in IDX_SETS.values() for entry in spec.files for name in (entry.name, entry.raw_name)}
    return sorted(folder / name for name in names if (folder / name).exists())


def find_file(folder: Path, entry: IdxFile) -> Path | None:
    """``folder/name.gz`` or else ``folder/name`` (raw), whichever exists first; None when neither does."""
    for name in (entry.name, entry.raw_name):
        if (folder / name).is_file():
            return folder / name
    return None


#: ``on_progress(file_name, bytes_done, bytes_total_or_None)``
ProgressFn = Callable[[str, int, int | None], None]


def _download(url: str, out: Path, *, entry: IdxFile, on_progress: ProgressFn | None) -> None:
    """Stream ``url`` into ``out`` (a temporary file) and verify it."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(out, "wb") as f:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            while block := response.read(_BLOCK):
                f.write(block)
                done += len(block)
                if on_progress is not None:
                    on_progress(entry.name, done, total)
        if total is not None and done < total:  # urllib's read() ends quietly when the server closes early
            raise DatasetError(f"{url}: download incomplete ({done} of {total} bytes; the connection closed early); "
                               f"run the same command again")
    except urllib.error.HTTPError as e:
        raise DatasetError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DatasetError(f"{url}: download failed ({reason}); copy the files by hand or use --mirror") from None
    verify_file(out, entry, label=url)


def fetch_idx(name: str, dest: str | os.PathLike, *, mirror: Path | None = None, base_url: str | None = None,
              on_progress: ProgressFn | None = None) -> Path:
    """Put the four IDX files of set ``name`` into folder ``dest`` and return ``dest``.

    Args:
        name: a key of :data:`IDX_SETS` ("mnist", "fashion-mnist").
        dest: the folder to fill (created when missing).
        mirror: copy from this local folder (``.gz`` or raw files) instead of downloading.
        base_url: download from here instead of the set's public URL (file names are appended).
        on_progress: ``on_progress(file_name, bytes_done, bytes_total_or_None)`` while downloading.

    A file already in ``dest`` with the right checksum is kept; every new file is verified in a temporary file
    and renamed into place only when its checksum matches, so a failure leaves no file behind.

    Raises:
        ConfigError: unknown ``name``.
        DatasetError: a file missing from the mirror, a failed download, or a checksum mismatch (naming the file
            and both checksums).
    """
    spec = idx_set(name)
    dest = Path(dest)
    if mirror is not None and not Path(mirror).is_dir():
        raise DatasetError(f"{mirror}: mirror folder does not exist" if not Path(mirror).exists() else
                           f"{mirror}: not a folder; give the mirror folder that holds the {name} files")
    if dest.exists() and not dest.is_dir():
        raise DatasetError(f"{dest}: is a file; give a folder for the {name} files")
    if (dest / "manifest.json").is_file():  # load_idx_set refuses such a folder: two datasets in one
        raise DatasetError(f"{dest}: holds a dataset made by specgan prep (manifest.json); fetch {name} into a "
                           f"folder of its own")
    for entry in spec.files:  # a folder in the way is found before anything is copied
        for in_the_way in (dest / entry.name, dest / entry.raw_name):
            if in_the_way.exists() and not in_the_way.is_file():
                raise DatasetError(f"{in_the_way}: not a file, where {name}'s file of that name goes")
    made = outermost_missing(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"{dest}: cannot create the folder ({e.strerror or e})") from None
    _remove_stale_downloads(spec, dest)
    try:
        _fetch_files(name, spec, dest, mirror=mirror, base_url=base_url, on_progress=on_progress)
    except BaseException:
        remove_made(dest, made=made)  # a failed first fetch leaves no empty folder behind, nor parents made for it
        raise
    return dest


#: Seconds after which a download's temporary file no longer written to is a dead one's (a fetch that was killed;
#: a live download writes every block, and gives up after 60 s without one).
STALE_DOWNLOAD_S = 600


def _remove_stale_downloads(spec: IdxSet, dest: Path) -> None:
    """Remove the temporary files of downloads into ``dest`` that were killed (``kill -9``, a power loss): atomic
    writes leave no partial file under a real name, but a hidden ``.NAME.*.tmp`` of up to 30 MB had stayed."""
    now = time.time()
    for name in (n for entry in spec.files for n in (entry.name, entry.raw_name)):
        for stale in temp_files(dest, glob.escape(name)):
            try:
                if now - stale.stat().st_mtime > STALE_DOWNLOAD_S:
                    stale.unlink()
            except OSError:
                pass


def _fetch_files(name: str, spec: IdxSet, dest: Path, *, mirror: Path | None, base_url: str | None,
                 on_progress: ProgressFn | None) -> None:
    """The files of set ``name`` (:func:`fetch_idx`), into the existing folder ``dest``."""
    base = base_url if base_url is not None else spec.url
    if not base.endswith("/"):
        base += "/"
    needed = []
    for entry in spec.files:
        present = find_file(dest, entry)
        if present is None or not _verified(present, entry):
            needed.append((entry, present))
    sources = {}
    # All found and verified before any is copied: a mirror missing or damaging one file leaves no half-filled folder.
    for entry, _ in needed if mirror is not None else ():
        sources[entry.name] = find_file(Path(mirror), entry)
        if sources[entry.name] is None:
            for odd in (Path(mirror) / entry.name, Path(mirror) / entry.raw_name):
                if odd.exists():  # a folder, a pipe: find_file takes regular files only
                    raise DatasetError(f"{odd}: not a regular file")
            inside = find_file(Path(mirror) / name, entry)
            hint = f"; it is in {Path(mirror) / name}: give that folder as the mirror" if inside else ""
            raise DatasetError(f"{Path(mirror) / entry.name}: missing from the mirror (also looked for "
                               f"{entry.raw_name}){hint}")
        verify_file(sources[entry.name], entry)
    for entry, present in needed:
        if mirror is not None:
            source = sources[entry.name]
            target = dest / source.name
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
                verify_file(tmp, entry, label=str(source))
        else:
            target = dest / entry.name
            with atomic_path(target) as tmp:
                _download(base + entry.name, tmp, entry=entry, on_progress=on_progress)
        if present is not None and present != target:  # a damaged copy under the other name
            present.unlink(missing_ok=True)


# -- loading -------------------------------------------------------------------------------------------------------

def _published_by_another_set(labels: np.ndarray, *, name: str, split: str) -> str | None:
    """The name of the other set in :data:`IDX_SETS` whose ``split`` labels are ``labels`` (their raw IDX content,
    a 60 kB hash), or None."""
    raw = hashlib.md5(b"\x00\x00\x08\x01" + len(labels).to_bytes(4, "big") + labels.tobytes()).hexdigest()
    return next((other for other, spec in IDX_SETS.items()
                 if other != name and spec.split(split)[1].raw_md5 == raw), None)


def load_idx_set(path: str | os.PathLike, *, name: str, split: str = "train") -> ImageData:
    """Load one split of an IDX set from folder ``path`` (``.gz`` or raw files).

    Returns:
        ImageData with images float32 ``(N, 1, H, W)`` (28×28 for MNIST) scaled linearly from [0, 255] to [-1, 1],
        labels int64 ``(N,)`` and the set's class names.

    Raises:
        DatasetError: a missing or damaged file (with the command that fetches the set), or images and labels
            that do not fit together.
    """
    spec = idx_set(name)
    path = Path(path)
    if (path / "manifest.json").is_file():  # fetching the set into it would mix two datasets in one folder
        raise DatasetError(f"{path}: a dataset made by specgan prep, not the {name} IDX files")
    images_entry, labels_entry = spec.split(split)
    files = []
    for entry in (images_entry, labels_entry):
        found = find_file(path, entry)
        if found is None:
            raise DatasetError(f"{path / entry.name}: missing (also looked for {entry.raw_name}); fetch the set "
                               f"with: specgan data fetch {name} -o {shlex.quote(str(path))}")
        files.append(found)
    images, labels = read_idx(files[0]), read_idx(files[1])
    other = _published_by_another_set(labels, name=name, split=split)
    if other is not None:  # the same shapes: nothing else would tell a learner that the digits are not clothes
        raise DatasetError(f"{path}: holds {other}'s files, not {name}'s; fetch {name} with: specgan data fetch "
                           f"{name} -o <another folder>, or set data.kind = {other!r}")
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{files[0]}: expected uint8 images (N, H, W), got {images.dtype} {list(images.shape)}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(f"{files[1]}: expected uint8 labels (N,), got {labels.dtype} {list(labels.shape)}")
    if len(images) != len(labels):
        raise DatasetError(f"{files[1]}: {len(labels)} labels for the {len(images)} images of {files[0]}")
    if len(labels) and labels.max() >= len(spec.class_names):
        raise DatasetError(f"{files[1]}: label {labels.max()} is out of range for {name}'s "
                           f"{len(spec.class_names)} classes")
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32)
    x.div_(127.5).sub_(1.0)
    return ImageData(images=x, labels=torch.from_numpy(labels.astype(np.int64)), class_names=spec.class_names,
                     source=str(path))

"""Image-folder datasets: PNG/JPEG files whose sub-folders are the classes.

As in ``specgan prep``, each immediate sub-folder of the dataset folder is a class (sorted by name; images in
deeper folders belong to their first sub-folder), and images directly in the folder form one class named after
it. Hidden files and folders are ignored. Every image must be readable: training data should be clean, so a bad
file is an error naming it (one error names them all, up to :data:`MAX_PROBLEMS_NAMED`), never skipped silently.
Transparent pixels are composited onto black, with a warning.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from specgan.data.image_data import ImageData
from specgan.errors import ConfigError, DatasetError, SpecganWarning
from specgan.file_scan import FileScan, scan_files

#: File name suffixes read as images (case-insensitive).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})

_MODES = {1: "L", 3: "RGB"}
#: The images a single error names, when several cannot be used.
MAX_PROBLEMS_NAMED = 5


def _folder_class(path: Path) -> str:
    """The class of the pictures directly in the folder ``path``: its name."""
    return path.resolve().name or "images"


def find_images(path: Path) -> tuple[list[tuple[Path, str]], FileScan]:
    """``(file, class name)`` of every image under ``path``, and the scan that found them (what it passed over).

    A class folder may be a link to where the pictures are (see :func:`~specgan.file_scan.scan_files`). The order
    is that of a walk of sorted folders, each folder's files before its sub-folders (the images' order in the
    data, which a continued run checks)."""
    scan = scan_files(path, suffixes=IMAGE_SUFFIXES)

    def walk_order(relative: str) -> list[tuple[int, str]]:
        *folders, name = relative.split(os.sep)
        return [(1, folder) for folder in folders] + [(0, name)]

    top_class = _folder_class(path)
    return [(Path(path, relative), relative.split(os.sep)[0] if os.sep in relative else top_class)
            for relative in sorted(scan.files, key=walk_order)], scan


def _read(file: Path, *, mode: str, size: tuple[int, int] | None) -> tuple[np.ndarray, bool]:
    """One image as uint8 ``(H, W, C)``, turned upright as its EXIF orientation says (a phone stores a portrait
    photo as landscape pixels and a tag; viewers show it upright), converted to ``mode`` and resized to ``size`` =
    (height, width), and whether it had transparent pixels (composited onto black: converting alone would drop the
    alpha and keep whatever colour a transparent pixel happens to store)."""
    try:
        _check_regular(file)
        with warnings.catch_warnings(record=True) as said, Image.open(file) as img:
            warnings.simplefilter("always")
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            if img.mode.startswith("I;16"):  # 16-bit grayscale: scale to 8 bits rather than clip
                img = Image.fromarray((np.asarray(img, dtype=np.uint32) // 257).astype(np.uint8), mode="L")
            rgba = _rgba_if_transparent(img)
            transparent = rgba is not None
            if transparent:
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
            img = img.convert(mode)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, NotImplementedError, Image.DecompressionBombError) as e:
        # (NotImplementedError: a kind Pillow's plugin cannot decode, e.g. a DDS texture named .png)
        raise DatasetError(f"{file}: unreadable image ({e})") from None
    for warning in said:  # Pillow's (corrupt EXIF data, a very large picture) named after the file, one line each
        warnings.warn(SpecganWarning(f"{file}: {str(warning.message).rstrip('.')}"), stacklevel=2)
    return array.reshape(array.shape[0], array.shape[1], -1), transparent


def _check_regular(file: Path) -> None:
    """A ValueError unless ``file`` is a regular file (an OSError where it cannot be opened). It is opened without
    blocking, so that a named pipe called ``x.png`` is an error naming it, where Pillow's ``open()`` of it had hung
    a training run forever."""
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
    finally:
        os.close(fd)


def _rgba_if_transparent(img: Image.Image) -> Image.Image | None:
    """``img`` as RGBA when it has an alpha channel or a transparent palette entry and a pixel below full opacity,
    else None."""
    if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
        return None
    rgba = img.convert("RGBA")
    return rgba if rgba.getchannel("A").getextrema()[0] < 255 else None


def load_image_folder(path: str | os.PathLike, *, image_size: tuple[int, int] | None = None,
                      channels: int = 1) -> ImageData:
    """Load every PNG/JPEG image under ``path``.

    Args:
        path: the dataset folder; its sub-folders are the classes.
        image_size: ``(height, width)`` in pixels to resize every image to (bicubic); ``None`` keeps the files'
            size, which must then be the same for all of them.
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        ImageData with images float32 ``(N, channels, H, W)`` scaled linearly from [0, 255] to [-1, 1], labels
        int64 ``(N,)`` and the class (folder) names.

    Raises:
        DatasetError: no folder, no images, an unreadable image, or (without ``image_size``) an image whose size
            differs from the first one's.
    """
    path = Path(path)
    if channels not in _MODES:
        raise ConfigError(f"channels = {channels}: must be 1 (grayscale) or 3 (RGB)")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ConfigError(f"image_size = {list(image_size)}: expected (height, width), each >= 1")
    if not path.is_dir():
        raise DatasetError(f"{path}: image folder does not exist" if not path.exists() else
                           f"{path}: not a folder (an image-folder dataset is a folder of class folders)")
    found, scan = find_images(path)
    if not found:
        raise DatasetError(f"{path}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if scan.ignored:  # e.g. .bmp, .gif or .webp pictures, which would otherwise be left out without a word
        warnings.warn(f"{path}: passed over {len(scan.ignored)} file(s) not named as pictures "
                      f"({scan.ignored_counts()}); "
                      f"only {', '.join(sorted(IMAGE_SUFFIXES))} files are read", SpecganWarning, stacklevel=2)
    class_names = tuple(sorted({name for _, name in found}))
    top_class = _folder_class(path)
    loose = scan.loose_beside(top_class)
    if loose:
        warnings.warn(f"{path}: its {loose} picture(s) outside class folders are class {top_class}, as are those of "
                      f"its folder {top_class}; move them into a folder of their own to keep them apart",
                      SpecganWarning, stacklevel=2)
    repeated = {folder: same for folder, same in scan.repeated if os.sep not in folder}
    for folder, same in sorted(repeated.items()):
        warnings.warn(f"{path / folder}: the same folder as {path / same} (through a link), so its pictures count "
                      f"once, as {path / same}'s", SpecganWarning, stacklevel=2)
    empty = sorted(entry.name for entry in os.scandir(path) if entry.is_dir() and not entry.name.startswith(".")
                   and entry.name not in class_names and entry.name not in repeated)
    if empty:
        warnings.warn(f"{path}: {len(empty)} folder(s) hold no images ({', '.join(empty[:5])}"
                      f"{', ...' if len(empty) > 5 else ''}), so they are no classes", SpecganWarning, stacklevel=2)
    index = {name: i for i, name in enumerate(class_names)}
    resize = tuple(image_size) if image_size is not None else None
    size, first = resize, None
    images, transparent, problems, other_sizes = [], [], [], False
    for file, _ in found:  # every problem is gathered, so that one run names them all
        try:
            array, has_alpha = _read(file, mode=_MODES[channels], size=resize)
        except DatasetError as e:
            problems.append(str(e))
            continue
        if has_alpha:
            transparent.append(file)
        if size is None:
            first, size = file, array.shape[:2]
        elif array.shape[:2] != size:
            h, w = array.shape[:2]
            problems.append(f"{file}: {h}x{w} pixels (height x width), but {first} is {size[0]}x{size[1]}")
            other_sizes = True
            continue
        images.append(array)
    if problems:
        remedy = "; resize them all with data.image_size = [height, width]" if other_sizes else ""
        if len(problems) == 1:
            raise DatasetError(problems[0] + remedy)
        raise DatasetError(f"{path}: {len(problems)} of {len(found)} images cannot be used: "
                           f"{'; '.join(problems[:MAX_PROBLEMS_NAMED])}"
                           f"{'; ...' if len(problems) > MAX_PROBLEMS_NAMED else ''}{remedy}")
    if transparent:
        warnings.warn(f"{path}: {len(transparent)} image(s) have transparent pixels (first: {transparent[0]}); "
                      f"they are composited onto black", SpecganWarning, stacklevel=2)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(torch.float32).contiguous()
    x.div_(127.5).sub_(1.0)
    labels = torch.tensor([index[name] for _, name in found], dtype=torch.int64)
    return ImageData(images=x, labels=labels, class_names=class_names, source=str(path))

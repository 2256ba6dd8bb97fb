"""Image grids as PNG files (samples during training, ``specgan sample``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from specgan.atomic import atomic_path


def grid_array(images: Tensor, *, nrow: int | None = None, padding: int = 2, low_at_bottom: bool = False) -> np.ndarray:
    """Tile ``(N, C, H, W)`` images in [-1, 1] into one uint8 ``(rows·(H+p)+p, cols·(W+p)+p, C)`` array.

    ``low_at_bottom`` flips each tile vertically: spectrograms store the lowest mel band in row 0, but are read
    with low frequencies at the bottom.
    """
    x = images.detach().float().cpu().clamp(-1, 1)
    if low_at_bottom:
        x = x.flip(-2)
    n, c, h, w = x.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), dtype=np.uint8)
    tiles = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top:top + h, left:left + w] = tiles[i]
    return grid


def save_grid(images: Tensor, path: str | Path, *, nrow: int | None = None, low_at_bottom: bool = False) -> Path:
    """Write a PNG grid of ``(N, C, H, W)`` images in [-1, 1] atomically (see :func:`grid_array`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = grid_array(images, nrow=nrow, low_at_bottom=low_at_bottom)
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path

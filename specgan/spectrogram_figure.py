"""Log-mel spectrograms as a readable figure: panels stacked top to bottom, each with a title, a frequency axis in
kHz and a time axis in seconds, on a black → red → yellow colour map (loud is bright), for ``convert --plot``.

Drawn with Pillow (already a dependency for PNG grids) rather than matplotlib, which would add about 40 MB and a
second of import time to a command that needs one picture. Pixels are exact nearest-neighbour enlargements of
the log-mel values, so a test can read them back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from specgan.atomic import atomic_path
from specgan.audio.features import hz_to_mel
from specgan.audio.params import AudioParams

#: Colour-map anchors (R, G, B), evenly spaced from the quietest value (-1) to the loudest (1): black through
#: purple, red and orange to pale yellow, each brighter than the last, so loudness reads also in grey.
ANCHORS = ((0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21), (250, 193, 39),
           (252, 255, 164))
#: Panel height to aim for, in pixels (80 mel bands are drawn 3 pixels high), and the narrowest panel.
TARGET_HEIGHT = 240
MIN_WIDTH = 480
#: Margins around a panel, in pixels: labels on the left, a title above, time labels below.
LEFT, RIGHT, TITLE, BOTTOM = 44, 16, 18, 30
#: Tick frequencies considered for the frequency axis, in Hz, and time steps for the time axis, in seconds.
FREQUENCY_TICKS = (100, 250, 500, 1000, 2000, 4000, 8000, 16000)
TIME_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
#: Fonts tried first for the text, by file name: DejaVu Sans has Latin, Greek and Cyrillic letters.
FONTS = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "Arial Unicode.ttf", "Arial.ttf")
#: At most this many time ticks per panel.
MAX_TIME_TICKS = 10
#: Least vertical distance between two frequency labels, in pixels.
LABEL_SPACING = 13


def colour_table() -> np.ndarray:
    """``(256, 3)`` uint8: the colour of each quantised value (index ``round((v + 1) · 127.5)`` for ``v`` in
    [-1, 1]), linear between :data:`ANCHORS`."""
    anchors = np.asarray(ANCHORS, dtype=np.float64)
    at = np.linspace(0, 255, len(anchors))
    return np.stack([np.interp(np.arange(256), at, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


def frequency_ticks(audio: AudioParams) -> list[tuple[float, float]]:
    """``(Hz, band)`` of each :data:`FREQUENCY_TICKS` value inside the mel range, ``band`` the fractional index of
    the mel band centred there (band ``i`` is centred at the ``i + 1``-th of ``n_mels + 2`` points evenly spaced on
    the mel scale from ``f_min`` to ``f_max``, as librosa's filters are)."""
    low, high, *ticks = hz_to_mel(torch.tensor([audio.f_min, audio.mel_f_max, *FREQUENCY_TICKS],
                                                dtype=torch.float64)).tolist()
    spacing = (high - low) / (audio.n_mels + 1)
    bands = [(mel - low) / spacing - 1 for mel in ticks]
    return [(float(hz), band) for hz, band in zip(FREQUENCY_TICKS, bands) if 0 <= band <= audio.n_mels - 1]


def time_ticks(seconds: float) -> list[float]:
    """Tick times from 0 for a panel ``seconds`` long: multiples of the smallest :data:`TIME_STEPS` step that gives
    at most :data:`MAX_TIME_TICKS` of them."""
    step = next((s for s in TIME_STEPS if seconds / s < MAX_TIME_TICKS), TIME_STEPS[-1])
    return [round(i * step, 6) for i in range(int(seconds / step + 1e-9) + 1)]


@dataclass(frozen=True)
class Layout:
    """Where each panel's pixels are: panel ``k``'s image is ``[top(k), top(k) + height)`` by
    ``[LEFT, LEFT + width)``; each of its ``columns`` is ``x_scale`` pixels wide and each band ``y_scale`` high."""
    columns: int
    n_mels: int
    x_scale: int
    y_scale: int
    panels: int

    @property
    def width(self) -> int:
        return self.columns * self.x_scale

    @property
    def height(self) -> int:
        return self.n_mels * self.y_scale

    def top(self, panel: int) -> int:
        return TITLE + panel * (TITLE + self.height + BOTTOM)

    @property
    def size(self) -> tuple[int, int]:
        return LEFT + self.width + RIGHT, self.panels * (TITLE + self.height + BOTTOM)


def figure_layout(*, columns: int, n_mels: int, panels: int) -> Layout:
    """The layout of ``panels`` panels of ``n_mels × columns`` values: bands about :data:`TARGET_HEIGHT` pixels
    high in all, columns widened to at least :data:`MIN_WIDTH` pixels (whole multiples, so pixels stay exact)."""
    return Layout(columns=columns, n_mels=n_mels, x_scale=max(1, math.ceil(MIN_WIDTH / columns)),
                  y_scale=max(1, round(TARGET_HEIGHT / n_mels)), panels=panels)


def _font(size: int) -> ImageFont.ImageFont:
    """The first of :data:`FONTS` found on this system (Pillow searches the system's font folders), else Pillow's
    own (Latin letters without accents only), else, without FreeType, its small bitmap font."""
    for name in FONTS:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def _drawable(text: str, font: ImageFont.ImageFont) -> str:
    """``text`` with each character the font has no glyph for (it would draw the same box as a character no font
    has) replaced by "?": a file name in another script reads as "???.wav", not as boxes that look like letters."""
    try:
        missing = font.getmask("\U0010FFFD")
    except (AttributeError, UnicodeEncodeError):
        return text.encode("ascii", "replace").decode()
    box = (missing.size, bytes(missing))

    def has_glyph(ch: str) -> bool:
        mask = font.getmask(ch)
        return ch.isspace() or (mask.size, bytes(mask)) != box

    return "".join(ch if has_glyph(ch) else "?" for ch in text)


def _fitted(text: str, *, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, width: float) -> str:
    """``text``, shortened in the middle with "…" until it is at most ``width`` pixels wide (a long file name)."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        short = f"{text[:keep // 2]}…{text[len(text) - (keep - keep // 2):]}"
        if draw.textlength(short, font=font) <= width:
            return short
    return "…"


def save_spectrogram_figure(panels: Sequence[tuple[str, Tensor]], path: str | Path, *, audio: AudioParams,
                            seconds_per_column: float) -> Path:
    """Write ``panels`` (title, normalised log-mel ``(n_mels, columns)`` in [-1, 1], all the same shape) as one
    PNG, top to bottom, low bands at the bottom, atomically. ``seconds_per_column``: the time one column covers
    (``hop_length / sample_rate``, times the frames averaged into each column)."""
    path = Path(path)
    n_mels, columns = panels[0][1].shape
    layout = figure_layout(columns=columns, n_mels=n_mels, panels=len(panels))
    image = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(12), _font(11)
    table = colour_table()
    for k, (title, logmel) in enumerate(panels):
        top = layout.top(k)
        levels = ((logmel.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        pixels = table[levels[::-1]]                                      # low bands at the bottom
        pixels = np.repeat(np.repeat(pixels, layout.y_scale, axis=0), layout.x_scale, axis=1)
        image.paste(Image.fromarray(np.ascontiguousarray(pixels)), (LEFT, top))
        draw.rectangle((LEFT - 1, top - 1, LEFT + layout.width, top + layout.height), outline="black")
        draw.text((LEFT, top - TITLE + 2),
                  _fitted(_drawable(title, font), draw=draw, font=font, width=layout.width + RIGHT),
                  fill="black", font=font)
        labelled = math.inf
        for hz, band in frequency_ticks(audio):
            y = top + layout.height - (band + 0.5) * layout.y_scale
            if labelled - y < LABEL_SPACING or y - top < LABEL_SPACING / 2:
                continue  # too close to the label below it (low ticks crowd on the mel scale), or to the unit above
            labelled = y
            draw.line((LEFT - 4, y, LEFT - 1, y), fill="black")
            label = f"{hz / 1000:g}k" if hz >= 1000 else f"{hz:g}"
            draw.text((LEFT - 6, y), label, fill="black", font=small, anchor="rm")
        bottom = top + layout.height
        for t in time_ticks(columns * seconds_per_column):
            x = LEFT + t / seconds_per_column * layout.x_scale
            draw.line((x, bottom, x, bottom + 3), fill="black")
            draw.text((x, bottom + 4), f"{t:g}", fill="black", font=small, anchor="mt")
        draw.text((LEFT + layout.width, bottom + 17), "time (s)", fill="black", font=small, anchor="rt")
        draw.text((LEFT - 6, top - 3), "Hz", fill="black", font=small, anchor="rb")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path

"""Fixed-width windows over a spectrogram's time axis, and their cross-faded reassembly."""

from __future__ import annotations

import torch
from torch import Tensor


def window_starts(n_frames: int, *, frames: int, hop: int) -> list[int]:
    """Start frames of windows of width ``frames`` every ``hop`` frames that together cover ``n_frames``.

    The last window is aligned to the end, so no frame is left out. Requires ``n_frames >= frames``.
    """
    if n_frames < frames:
        raise ValueError(f"{n_frames} frames is shorter than one window of {frames}")
    starts = list(range(0, n_frames - frames + 1, hop))
    if starts[-1] != n_frames - frames:
        starts.append(n_frames - frames)
    return starts


def crossfade_weights(frames: int, fade: int, *, device=None) -> Tensor:
    """Trapezoid of length ``frames``: linear ramps of ``fade`` frames at both ends, 1 in between, never 0."""
    w = torch.ones(frames, device=device)
    if fade > 0:
        ramp = (torch.arange(fade, device=device) + 0.5) / fade
        w[:fade] = torch.minimum(w[:fade], ramp)
        w[frames - fade:] = torch.minimum(w[frames - fade:], ramp.flip(0))
    return w


class WindowStitcher:
    """Joins windows ``(..., frames)`` of a spectrogram (``(..., n_frames)``) by cross-fading their overlaps; the
    windows arrive a batch at a time, so that they never need to exist all at once.

    A weighted overlap-add (:func:`crossfade_weights`) normalised by the summed weights: where windows agree (e.g.
    an identity model), the result equals the original spectrogram, overlaps included, up to float rounding; where
    they differ, each overlap blends linearly over ``fade`` frames. The sums do not depend on how the windows are
    split into batches.

    Args:
        shape: a window's shape without its last (time) dimension, e.g. ``(1, n_mels)``.
        n_frames: frames of the joined result; ``frames``: a window's width; ``fade``: frames of each ramp.
    """

    def __init__(self, shape: tuple[int, ...], *, n_frames: int, frames: int, fade: int, device=None,
                 dtype=torch.float32):
        self.frames = frames
        self.weights = crossfade_weights(frames, fade, device=device).to(dtype)
        self.sum = torch.zeros(*shape, n_frames, device=device, dtype=dtype)
        self.total = torch.zeros(n_frames, device=device, dtype=dtype)

    def add(self, windows: Tensor, *, starts: list[int]) -> None:
        """Add windows ``(n, *shape, frames)`` that start at frames ``starts``."""
        for window, start in zip(windows, starts):
            self.sum[..., start:start + self.frames] += window * self.weights
            self.total[start:start + self.frames] += self.weights

    def result(self) -> Tensor:
        """``(*shape, n_frames)``: the weighted mean of the windows at every frame."""
        return self.sum / self.total

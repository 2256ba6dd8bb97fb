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


def split_windows(spec: Tensor, *, frames: int, hop: int) -> tuple[Tensor, list[int]]:
    """Cut ``spec`` of shape ``(..., n_mels, n_frames)`` into windows ``(n_windows, ..., n_mels, frames)``.

    Returns the windows (a copy) and their start frames (see :func:`window_starts`).
    """
    starts = window_starts(spec.shape[-1], frames=frames, hop=hop)
    return torch.stack([spec[..., s:s + frames] for s in starts]), starts


def crossfade_weights(frames: int, fade: int, *, device=None) -> Tensor:
    """Trapezoid of length ``frames``: linear ramps of ``fade`` frames at both ends, 1 in between, never 0."""
    w = torch.ones(frames, device=device)
    if fade > 0:
        ramp = (torch.arange(fade, device=device) + 0.5) / fade
        w[:fade] = torch.minimum(w[:fade], ramp)
        w[frames - fade:] = torch.minimum(w[frames - fade:], ramp.flip(0))
    return w


def stitch_windows(windows: Tensor, *, starts: list[int], n_frames: int, fade: int) -> Tensor:
    """Join windows ``(n_windows, ..., n_mels, frames)`` into ``(..., n_mels, n_frames)`` by cross-fading overlaps.

    A weighted overlap-add normalised by the summed weights: where windows agree (e.g. an identity model), the
    result equals the original spectrogram exactly, overlaps included; where they differ, each overlap blends
    linearly over ``fade`` frames.
    """
    frames = windows.shape[-1]
    w = crossfade_weights(frames, fade, device=windows.device).to(windows.dtype)
    out = windows.new_zeros(*windows.shape[1:-1], n_frames)
    total = windows.new_zeros(n_frames)
    for window, start in zip(windows, starts):
        out[..., start:start + frames] += window * w
        total[start:start + frames] += w
    return out / total

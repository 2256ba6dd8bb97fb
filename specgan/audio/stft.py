"""A frames-major STFT pair for iterative phase reconstruction.

``torch.stft`` returns ``(..., freqs, frames)`` as a transposed view, and elementwise work on that strided
layout is several times slower on CPU than on contiguous memory. Griffin-Lim does that work every iteration,
so it uses these two functions, which keep spectra as contiguous ``(..., frames, freqs)`` and are equal to
``torch.stft``/``torch.istft`` (centred, reflect padding, window-square normalisation) up to float rounding, with
``1 + samples // hop_length`` frames also for an odd n_fft (:func:`centred_padding`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def padded_window(*, n_fft: int, win_length: int, device=None, dtype=torch.float32) -> Tensor:
    """Periodic Hann window of ``win_length`` centred in ``n_fft`` zeros, as torch.stft pads it."""
    window = torch.hann_window(win_length, device=device, dtype=dtype)
    left = (n_fft - win_length) // 2
    return F.pad(window, (left, n_fft - win_length - left))


def centred_padding(n_fft: int) -> tuple[int, int]:
    """Samples a centred STFT reflects in before and after a signal: a frame reads ``n_fft // 2`` samples left of
    its centre and ``n_fft - n_fft // 2`` right of it (one more for an odd n_fft), so a signal of ``samples`` has
    ``1 + samples // hop_length`` frames whatever the parity. (``torch.stft`` pads ``n_fft // 2`` on both sides:
    the same frames, except that for an odd n_fft it leaves out the last one when the hop divides the length.)"""
    return n_fft // 2, n_fft - n_fft // 2


def padded_to_one_window(wave: Tensor, *, n_fft: int) -> Tensor:
    """``wave`` ``(..., samples)``, with zeros appended up to ``n_fft`` samples when it is shorter. A centred STFT
    reflects ``n_fft // 2`` samples at each end, which needs more samples than that: a clip of a few samples is
    framed as itself followed by silence (cut back to its length after the inverse)."""
    return F.pad(wave, (0, max(0, n_fft - wave.shape[-1])))


def centred_segment(wave: Tensor, *, start: int, end: int, n_fft: int, hop_length: int) -> Tensor:
    """The samples that frames ``[start, end)`` of a centred STFT of ``wave`` ``(samples,)`` read, reflected at the
    signal's ends as the centred STFT pads them: ``(end - start - 1) * hop_length + n_fft`` samples, whose STFT
    with ``center=False`` is those frames. ``wave`` must have at least ``n_fft - n_fft // 2 + 1`` samples
    (``AudioParams.min_samples``)."""
    samples, (half, reach) = wave.shape[-1], centred_padding(n_fft)
    index = torch.arange(start * hop_length - half, (end - 1) * hop_length + reach, device=wave.device)
    index = index.abs()                                                      # reflect at the first sample ...
    index = torch.where(index >= samples, 2 * (samples - 1) - index, index)  # ... and at the last
    return wave[index]


def stft_frames(wave: Tensor, *, n_fft: int, hop_length: int, window: Tensor, frames_out: Tensor | None = None,
                out: Tensor | None = None) -> Tensor:
    """``(batch, samples)`` → complex ``(batch, frames, n_fft // 2 + 1)``, contiguous.

    ``frames_out`` (real, ``(batch, frames, n_fft)``) and ``out`` are optional preallocated buffers: in a loop
    they spare the allocator, whose fresh multi-megabyte blocks page-fault on first touch.
    """
    padded = F.pad(wave.unsqueeze(1), centred_padding(n_fft), mode="reflect").squeeze(1)
    frames = torch.mul(padded.unfold(-1, n_fft, hop_length), window, out=frames_out)
    return torch.fft.rfft(frames, dim=-1, out=out)


def overlap_add(frames: Tensor, *, hop_length: int) -> Tensor:
    """Sum frames ``(batch, n_frames, n_fft)`` placed every ``hop_length`` samples → ``(batch, samples)``.

    ``samples = (n_frames - 1) * hop_length + n_fft``.
    """
    batch, n_frames, n_fft = frames.shape
    if n_fft % hop_length == 0:  # common case: a few slice-adds instead of a scatter
        r = n_fft // hop_length
        parts = frames.reshape(batch, n_frames, r, hop_length)
        out = frames.new_zeros(batch, n_frames + r - 1, hop_length)
        for j in range(r):
            out[:, j:j + n_frames] += parts[:, :, j]
        return out.reshape(batch, -1)
    length = (n_frames - 1) * hop_length + n_fft
    return F.fold(frames.transpose(1, 2), output_size=(1, length), kernel_size=(1, n_fft),
                  stride=(1, hop_length)).reshape(batch, length)


def istft_frames(spec: Tensor, *, n_fft: int, hop_length: int, window: Tensor, envelope: Tensor | None = None,
                 length: int | None = None, frames_out: Tensor | None = None) -> Tensor:
    """Complex ``(batch, frames, n_fft // 2 + 1)`` → ``(batch, samples)``, the least-squares inverse of
    :func:`stft_frames`.

    ``envelope`` is :func:`window_envelope` for this frame count (pass it to avoid recomputing it per call);
    ``frames_out`` is an optional preallocated ``(batch, frames, n_fft)`` buffer.
    """
    frames = torch.fft.irfft(spec, n=n_fft, dim=-1, out=frames_out).mul_(window)
    wave = overlap_add(frames, hop_length=hop_length)
    if envelope is None:
        envelope = window_envelope(spec.shape[-2], n_fft=n_fft, hop_length=hop_length, window=window)
    wave = wave / envelope
    start = n_fft // 2
    end = wave.shape[-1] - n_fft // 2 if length is None else start + length
    wave = wave[:, start:end]
    if length is not None and wave.shape[-1] < length:
        wave = F.pad(wave, (0, length - wave.shape[-1]))
    return wave


def window_envelope(n_frames: int, *, n_fft: int, hop_length: int, window: Tensor) -> Tensor:
    """Overlap-added squared window ``(samples,)``, floored where it vanishes at the padded ends."""
    squared = window.square().expand(1, n_frames, n_fft)
    return overlap_add(squared, hop_length=hop_length)[0].clamp_min(1e-11)

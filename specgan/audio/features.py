"""Waveform → normalised log-mel spectrogram.

Pure functions with torchaudio/librosa parameter names, plus :class:`LogMel`, a module that holds the mel
filterbank as a buffer so it moves with ``.to(device)``.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

from specgan.audio.params import AudioParams

#: Floor for mel power before the logarithm (librosa's ``amin``): -100 dB.
AMIN = 1e-10


def mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """Slaney-scale, slaney-normalised triangular filters, as ``librosa.filters.mel`` builds them by default.

    Returns:
        float32 tensor of shape ``(n_fft // 2 + 1, n_mels)`` (torchaudio's layout; librosa's is the transpose).
    """
    return torchaudio.functional.melscale_fbanks(
        n_freqs=n_fft // 2 + 1, f_min=f_min, f_max=f_max if f_max is not None else sample_rate / 2,
        n_mels=n_mels, sample_rate=sample_rate, norm="slaney", mel_scale="slaney")


def power_to_db(power: Tensor, *, amin: float = AMIN) -> Tensor:
    """``10·log10(max(power, amin))`` with reference 1.0 (no per-signal reference, no top_db clipping)."""
    return 10.0 * torch.log10(power.clamp_min(amin))


def db_to_power(db: Tensor) -> Tensor:
    """Inverse of :func:`power_to_db` (above ``amin``)."""
    return torch.pow(10.0, db / 10.0)


def normalize_db(db: Tensor, *, min_db: float, max_db: float) -> Tensor:
    """Map dB linearly from the fixed range ``[min_db, max_db]`` to ``[-1, 1]``, clipping outside it."""
    return ((db - min_db) / (max_db - min_db) * 2.0 - 1.0).clamp(-1.0, 1.0)


def denormalize_db(x: Tensor, *, min_db: float, max_db: float) -> Tensor:
    """Inverse of :func:`normalize_db` on ``[-1, 1]``."""
    return (x.clamp(-1.0, 1.0) + 1.0) / 2.0 * (max_db - min_db) + min_db


class LogMel(nn.Module):
    """Waveform ``(..., samples)`` → normalised log-mel ``(..., n_mels, frames)`` in [-1, 1].

    ``frames = 1 + samples // hop_length`` (centred, reflect-padded STFT with a periodic Hann window), power
    spectrogram, slaney mel filterbank from torchaudio: the definition of ``torchaudio.transforms.MelSpectrogram``
    and of librosa's ``melspectrogram``. The power is computed as ``re² + im²`` rather than ``|X|²`` because
    the complex ``abs`` is the slowest step on CPU (prep spends a third less time here). Batched input gives the
    same result as each signal alone. The window and filterbank are buffers, so the module follows ``.to()``.
    """

    def __init__(self, params: AudioParams):
        super().__init__()
        self.params = params
        self.register_buffer("window", torch.hann_window(params.window_length), persistent=False)
        self.register_buffer("fbank_t", mel_filterbank(
            sample_rate=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels, f_min=params.f_min,
            f_max=params.mel_f_max).T.contiguous(), persistent=False)  # (n_mels, n_freqs)

    def mel_power(self, wave: Tensor) -> Tensor:
        """Mel power spectrogram ``(..., n_mels, frames)``, before the logarithm."""
        p = self.params
        shape = wave.shape
        spec = torch.stft(wave.reshape(-1, shape[-1]), n_fft=p.n_fft, hop_length=p.hop_length,
                          win_length=p.window_length, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True)
        power = spec.real.square() + spec.imag.square()
        mel = self.fbank_t @ power
        return mel.reshape(*shape[:-1], *mel.shape[-2:])

    def normalize(self, mel_power: Tensor) -> Tensor:
        """Mel power → normalised log-mel in [-1, 1] (the fixed dB range of ``params``)."""
        return normalize_db(power_to_db(mel_power), min_db=self.params.min_db, max_db=self.params.max_db)

    def forward(self, wave: Tensor) -> Tensor:
        return self.normalize(self.mel_power(wave))

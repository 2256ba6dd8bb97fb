"""``specgan reconstruct``: audio → normalised log-mel → audio, to hear the ceiling Griffin-Lim puts on any
conversion."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from specgan.audio.inverse import MelInverter, centred_stft_frames, invert_logmel, logmel_of_clip, \
    spectral_convergence_blocks
from specgan.audio.io import load_audio, save_audio
from specgan.audio.params import AudioParams
from specgan.audio.stft import padded_to_one_window
from specgan.folders import made_parent


@dataclass(frozen=True)
class ReconstructReport:
    output: Path
    seconds: float               # audio duration
    source_rate: int
    sample_rate: int
    n_iter: int
    spectral_convergence: float  # of the result's STFT magnitude against the input's (resampled) one; NaN: silent
    elapsed: float               # wall seconds for the inverse (mel → linear → Griffin-Lim)
    device: str


def reconstruct_file(src: Path, dst: Path, *, params: AudioParams, n_iter: int = 32, seed: int = 0,
                     device: str = "cpu") -> ReconstructReport:
    """Run the front end and the inverse on one file and write the result to ``dst`` at ``params.sample_rate``.

    The spectral convergence compares the result's linear STFT magnitude with the input's: it measures everything
    lost on the way (mel compression, the fixed dB range, phase reconstruction). Griffin-Lim starts from random
    phases (``seed``); a long input is inverted in blocks (:func:`~specgan.audio.inverse.invert_logmel`), so
    memory follows the block size, not the length.
    """
    wave, source_rate = load_audio(src, sample_rate=params.sample_rate)
    # The folder is made before the work, so that one that cannot be made does not cost it.
    with made_parent(dst):
        length = wave.numel()
        wave = padded_to_one_window(wave.to(device), n_fft=params.n_fft)  # as convert frames a clip of a few samples
        spec = logmel_of_clip(wave, params=params)
        inverter = MelInverter(params).to(device)
        started = time.perf_counter()
        rebuilt = invert_logmel(spec, inverter=inverter, length=wave.numel(), n_iter=n_iter, seed=seed).wave
        if wave.is_cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        spec_args = dict(n_fft=params.n_fft, hop_length=params.hop_length, win_length=params.window_length)
        sc = spectral_convergence_blocks(
            rebuilt, lambda start, end: centred_stft_frames(wave, start=start, end=end, **spec_args).abs(),
            n_frames=spec.shape[-1], **spec_args)
        save_audio(dst, rebuilt[:length], sample_rate=params.sample_rate)
    return ReconstructReport(dst, length / params.sample_rate, source_rate, params.sample_rate, n_iter,
                             sc, elapsed, str(wave.device))

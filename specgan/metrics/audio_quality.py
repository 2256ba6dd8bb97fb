"""Objective distances between a reference utterance and an estimate of it (voice / style conversion, vocoding):
mel-cepstral distortion (MCD) and log-spectral distance (LSD), both after dynamic time warping.

Every figure uses one FIXED analysis, independent of any model's :class:`~specgan.audio.params.AudioParams`, so
numbers are comparable across runs, models and datasets. To reproduce a figure:

Analysis (module constants)
    Both waves are mono and resampled to ``ANALYSIS_RATE`` = 16 kHz with soxr at "HQ" quality (as
    :func:`specgan.audio.io.load_audio` does) when their rate differs. Power spectrogram ``P = re² + im²`` of a
    centred, reflect-padded STFT (:func:`specgan.audio.inverse.stft`) with a periodic Hann window of
    ``WIN_LENGTH`` = 400 samples (25 ms, the usual speech-analysis window, short enough not to smear phones)
    zero-padded to ``N_FFT`` = 1024 points, every ``HOP_LENGTH`` = 80 samples (5 ms, the frame shift of the
    WORLD/SPTK analyses MCD figures are usually quoted with). The 1024-point grid (15.6 Hz bins) gives the narrow
    low filters of the 80-band filterbank (about 74 Hz wide below 1 kHz) several bins each. Mel power
    ``M = P · F`` with ``F`` the ``N_MELS`` = 80 slaney-scale, slaney-normalised filters over 0-8 kHz
    (:func:`specgan.audio.features.mel_filterbank`, librosa's default filterbank).

Mel cepstrum (:func:`mel_cepstrum`)
    ``x_m = ln sqrt(max(M_m, AMIN))`` (natural log of mel *amplitude*, floor ``AMIN`` = 1e-10 on power, i.e.
    -100 dB), and ``c_k = (1/N) Σ_m x_m cos(π k (m + ½) / N)`` for ``k = 1 .. n_coeffs`` (default 24), with
    ``N = N_MELS``: the DCT-II of the log mel amplitude in the *cepstral* normalisation, for which
    ``x_m = c_0 + 2 Σ_{k≥1} c_k cos(π k (m + ½) / N)``: the discrete form of the (two-sided) real cepstrum,
    ``ln|X(ω)| = c_0 + 2 Σ_{k≥1} c_k cos(kω)``. It is computed as the orthonormal DCT-II in float64
    (``scipy.fft.dct(x, type=2, norm="ortho")``, the transform of ``torchaudio.functional.create_dct(...,
    norm="ortho")``, which builds its matrix in float32) times ``CEPSTRUM_SCALE = 1 / sqrt(2 N)``. ``c_0``
    (overall level) is excluded, so the distances ignore gain. This is the scale the project's reference figure
    (about 4.3 dB for unconverted VCC2016 SF1 vs TM3) is quoted on. Two other scales are in use, so compare
    figures only within one: the plain orthonormal DCT (``librosa.feature.mfcc``'s scale) gives ``sqrt(2 N)`` ≈
    12.6 times larger figures (55.7 dB for SF1 vs TM3), and the one-sided minimum-phase convention of SPTK's
    mel-cepstra (``ln|X| = c_0 + Σ_{k≥1} c̃_k cos(kω)``, ``c̃_k = 2 c_k``) twice larger ones (8.8 dB), on
    which full-order MCD is the RMS over bands of the (mean-removed) level difference in dB.

Silence
    Frames whose energy ``10 log10 Σ_f P`` is more than ``SILENCE_DB`` = 40 dB below the utterance's loudest
    frame are dropped from each utterance (separately) before alignment, the way MCD tools drop silent frames by a
    relative power threshold (e.g. sprocket, the VCC2018 baseline); leading, trailing and inner pauses all go, so
    the figures measure speech, not how much silence each recording holds. The threshold is relative, so gain does
    not change which frames are kept. ``silence_db=None`` keeps every frame.

Alignment (:func:`dtw_path`)
    ``librosa.sequence.dtw`` on the two cepstrum sequences (kept frames) with the Euclidean metric, steps
    (1, 1), (1, 0), (0, 1), unit weights, no band constraint: the path minimising the sum of cepstral distances,
    which is the sum MCD averages. Memory and time grow with ``frames_ref · frames_est`` (about 30 MB for two
    10-s utterances); these are utterance-level metrics.

MCD (:func:`mel_cepstral_distortion`)
    ``MCD = mean over the path pairs (i, j) of (10 / ln 10) · sqrt(2 Σ_{k=1}^{n_coeffs} (c_k[i] - c'_k[j])²)``
    in dB, the standard constant. With all ``N - 1`` coefficients the per-frame value equals (Parseval) the
    standard deviation across mel bands of ``10 log10`` of the mel amplitude ratio, i.e. half that of the mel level
    difference in dB; 24 coefficients keep the spectral envelope and drop the harmonic ripple. Reference figure:
    unconverted VCC2016 evaluation SF1 vs TM3, all 55 parallel sentences, mean 4.41 dB (sd 0.33 over sentences).

LSD (:func:`log_spectral_distance`)
    ``LSD = mean over the same path pairs (i, j) of sqrt(mean_f (10 log10 max(P[i, f], AMIN) -
    10 log10 max(P'[j, f], AMIN))²)`` in dB, over all ``N_FFT / 2 + 1`` bins of the linear (not mel) power
    spectrum. It always uses the cepstral DTW path, also for equal-length waves (one definition for reconstructions
    and for conversions compared with a parallel target; an undistorted copy aligns along the diagonal anyway).
    Unlike MCD it counts gain: halving the amplitude gives 6.02 dB.

Computation runs on the CPU in float64 whatever the inputs' device and dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.fft
import soxr
import torch
from torch import Tensor

from specgan.audio.features import AMIN, mel_filterbank
from specgan.audio.inverse import stft

#: Analysis rate in Hz; other rates are resampled to it (soxr HQ).
ANALYSIS_RATE = 16_000
#: FFT size: 1024 points (15.6 Hz bins) at 16 kHz.
N_FFT = 1024
#: Frame shift: 80 samples = 5 ms.
HOP_LENGTH = 80
#: Hann window: 400 samples = 25 ms, zero-padded to ``N_FFT``.
WIN_LENGTH = 400
#: Slaney mel bands over 0 .. ANALYSIS_RATE / 2.
N_MELS = 80
#: Frames more than this many dB below the utterance's loudest frame are silence.
SILENCE_DB = 40.0
#: DCT-II scale of the cepstral convention ``x_m = c_0 + 2 Σ c_k cos(π k (m + ½) / N)``, from the orthonormal DCT.
CEPSTRUM_SCALE = 1.0 / math.sqrt(2 * N_MELS)
#: ``(10 / ln 10) · sqrt(2)``: MCD in dB is this times the Euclidean distance between cepstra c1..cn.
MCD_CONSTANT = 10.0 / math.log(10.0) * math.sqrt(2.0)


@dataclass(frozen=True)
class AudioDistances:
    """Both distances from one alignment (see the module docstring).

    Attributes:
        mcd_db: mel-cepstral distortion in dB.
        lsd_db: log-spectral distance in dB.
        path_length: number of aligned frame pairs averaged over.
        reference_frames, estimate_frames: frames kept (not silent) in each utterance.
    """

    mcd_db: float
    lsd_db: float
    path_length: int
    reference_frames: int
    estimate_frames: int


def _analysis_wave(wave: Tensor | np.ndarray, sample_rate: int, name: str) -> Tensor:
    """A mono wave as a float64 CPU tensor at ``ANALYSIS_RATE``."""
    wave = torch.as_tensor(wave).detach()
    if wave.ndim != 1:
        raise ValueError(f"{name} must be a mono wave of shape (samples,), got {tuple(wave.shape)}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    wave = wave.to("cpu", torch.float64)
    if sample_rate != ANALYSIS_RATE:
        wave = torch.from_numpy(np.ascontiguousarray(
            soxr.resample(wave.numpy(), sample_rate, ANALYSIS_RATE, quality="HQ"), dtype=np.float64))
    if wave.shape[0] <= N_FFT // 2:
        raise ValueError(f"{name} is too short: {wave.shape[0]} samples at {ANALYSIS_RATE} Hz, "
                         f"at least {N_FFT // 2 + 1} needed")
    if not torch.isfinite(wave).all():
        raise ValueError(f"{name} holds NaN or infinite samples")
    return wave


def _power(wave: Tensor) -> Tensor:
    """Power spectrogram ``(frames, N_FFT // 2 + 1)`` of an analysis wave."""
    window = torch.hann_window(WIN_LENGTH, dtype=torch.float64)
    spec = stft(wave, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=window)
    return (spec.real.square() + spec.imag.square()).T.contiguous()


def _filterbank() -> Tensor:
    return mel_filterbank(sample_rate=ANALYSIS_RATE, n_fft=N_FFT, n_mels=N_MELS).to(torch.float64)


def _cepstrum(power: Tensor, n_coeffs: int, fbank: Tensor | None = None) -> Tensor:
    """Mel cepstrum c1..c_n ``(frames, n_coeffs)`` from a power spectrogram ``(frames, freqs)``."""
    if not 1 <= n_coeffs < N_MELS:
        raise ValueError(f"n_coeffs must be in 1 .. {N_MELS - 1}, got {n_coeffs}")
    fbank = _filterbank() if fbank is None else fbank
    log_amplitude = 0.5 * torch.log((power @ fbank).clamp_min(AMIN))          # (frames, n_mels)
    # float64 DCT: torchaudio's create_dct matrix is float32, whose ~1e-7 errors leak c0 (gain) into c1..cn.
    dct = scipy.fft.dct(log_amplitude.numpy(), type=2, norm="ortho", axis=1)[:, 1:n_coeffs + 1]
    return torch.from_numpy(np.ascontiguousarray(dct)) * CEPSTRUM_SCALE


def _speech_mask(power: Tensor, silence_db: float | None) -> Tensor:
    """Frames whose energy is within ``silence_db`` of the loudest frame (all frames when ``None``)."""
    if silence_db is None:
        return torch.ones(power.shape[0], dtype=torch.bool)
    energy_db = 10.0 * torch.log10(power.sum(dim=1).clamp_min(AMIN))
    return energy_db >= energy_db.max() - silence_db


def mel_cepstrum(wave: Tensor, *, sample_rate: int, n_coeffs: int = 24) -> Tensor:
    """Mel cepstrum c1..c_n of every frame (silent ones included), as defined in the module docstring.

    Args:
        wave: mono wave ``(samples,)`` at ``sample_rate`` (resampled to 16 kHz when different).
        n_coeffs: coefficients after c0, 1 .. 79.

    Returns:
        float64 CPU tensor ``(frames, n_coeffs)``, ``frames = 1 + samples_16k // HOP_LENGTH``.
    """
    return _cepstrum(_power(_analysis_wave(wave, sample_rate, "wave")), n_coeffs)


def speech_frames(wave: Tensor, *, sample_rate: int, silence_db: float = SILENCE_DB) -> Tensor:
    """Boolean mask ``(frames,)`` of the frames within ``silence_db`` dB of the loudest frame's energy."""
    return _speech_mask(_power(_analysis_wave(wave, sample_rate, "wave")), silence_db)


def dtw_path(reference: Tensor | np.ndarray, estimate: Tensor | np.ndarray) -> tuple[np.ndarray, float]:
    """Dynamic time warping of two feature sequences with the Euclidean metric (``librosa.sequence.dtw``).

    Args:
        reference: ``(frames_ref, dims)``.
        estimate: ``(frames_est, dims)``.

    Returns:
        ``(path, cost)``: ``path`` an int array ``(length, 2)`` of (reference frame, estimate frame) pairs from
        (0, 0) to the last frames, in order; ``cost`` the sum of the Euclidean distances along it (the minimum
        over monotone paths with steps (1, 1), (1, 0), (0, 1)).
    """
    x = torch.as_tensor(reference).detach().to("cpu", torch.float64).numpy()
    y = torch.as_tensor(estimate).detach().to("cpu", torch.float64).numpy()
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(f"need two non-empty (frames, dims) sequences of equal dims, got {x.shape} and {y.shape}")
    accumulated, path = librosa.sequence.dtw(X=x.T, Y=y.T, metric="euclidean")
    return np.ascontiguousarray(path[::-1]), float(accumulated[-1, -1])


def audio_distances(reference: Tensor, estimate: Tensor, *, sample_rate: int, n_coeffs: int = 24,
                    silence_db: float | None = SILENCE_DB) -> AudioDistances:
    """MCD and LSD of ``estimate`` against ``reference`` from one alignment (both mono at ``sample_rate``)."""
    ref_power = _power(_analysis_wave(reference, sample_rate, "reference"))
    est_power = _power(_analysis_wave(estimate, sample_rate, "estimate"))
    ref_power = ref_power[_speech_mask(ref_power, silence_db)]
    est_power = est_power[_speech_mask(est_power, silence_db)]
    fbank = _filterbank()
    ref_cep, est_cep = _cepstrum(ref_power, n_coeffs, fbank), _cepstrum(est_power, n_coeffs, fbank)
    path, _ = dtw_path(ref_cep, est_cep)
    i, j = torch.from_numpy(path[:, 0]), torch.from_numpy(path[:, 1])
    mcd = MCD_CONSTANT * torch.linalg.vector_norm(ref_cep[i] - est_cep[j], dim=1).mean()
    ref_db = 10.0 * torch.log10(ref_power.clamp_min(AMIN))
    est_db = 10.0 * torch.log10(est_power.clamp_min(AMIN))
    lsd = (ref_db[i] - est_db[j]).square().mean(dim=1).sqrt().mean()
    return AudioDistances(mcd_db=float(mcd), lsd_db=float(lsd), path_length=len(path),
                          reference_frames=len(ref_cep), estimate_frames=len(est_cep))


def mel_cepstral_distortion(reference: Tensor, estimate: Tensor, *, sample_rate: int, n_coeffs: int = 24,
                            silence_db: float | None = SILENCE_DB) -> float:
    """Mel-cepstral distortion in dB after dropping silent frames and DTW (module docstring); 0 for equal waves."""
    return audio_distances(reference, estimate, sample_rate=sample_rate, n_coeffs=n_coeffs,
                           silence_db=silence_db).mcd_db


def log_spectral_distance(reference: Tensor, estimate: Tensor, *, sample_rate: int,
                          silence_db: float | None = SILENCE_DB) -> float:
    """Log-spectral distance in dB on the MCD's aligned, non-silent frame pairs (module docstring)."""
    return audio_distances(reference, estimate, sample_rate=sample_rate, silence_db=silence_db).lsd_db

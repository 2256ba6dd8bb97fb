"""Mel-cepstral distortion and log-spectral distance: the cepstrum against librosa + scipy, the cepstral scale against
Parseval, DTW against a naive dynamic programme, the whole metrics against an oracle built from those, invariances
(identity, gain, delay, time stretch), and the scale on real VCC2016 speech."""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import scipy.fft
import soxr
import torch

from specgan.audio.io import load_audio
from specgan.metrics.audio_quality import (
    HOP_LENGTH,
    MCD_CONSTANT,
    N_MELS,
    audio_distances,
    dtw_path,
    log_spectral_distance,
    mel_cepstral_distortion,
    mel_cepstrum,
    speech_frames,
)

SR = 16_000
#: The analysis written out independently of the module's constants.
STFT_ARGS = dict(n_fft=1024, hop_length=80, win_length=400, window="hann", center=True, pad_mode="reflect")


# -- signals and references ----------------------------------------------------------------------------------------

#: Formants (Hz) of distinct vowel-like "phones", so that two different segments have clearly different envelopes.
PHONES = [(300, 2300, 3000), (700, 1200, 2600), (400, 800, 2400), (550, 1800, 2500), (250, 600, 2200)]


def _phones(seconds: list[float], *, seed: int = 0, order: list[int] | None = None, sample_rate: int = SR,
            noise: float = 1e-3, gap_noise: float = 3e-5) -> torch.Tensor:
    """Concatenated vowel-like segments: 120 Hz harmonics up to 7.9 kHz shaped by three formants (every mel band
    carries deterministic energy), plus white noise of amplitude ``noise`` (distinct frames, no DTW ties).

    ``order`` picks the phone of each segment (default 0, 1, 2, ...); phone -1 is a near-silent gap (noise of
    amplitude ``gap_noise``, about 80 dB below the phones)."""
    rng = np.random.default_rng(seed)
    order = list(range(len(seconds))) if order is None else order
    parts = []
    for dur, k in zip(seconds, order):
        t = np.arange(int(round(dur * sample_rate))) / sample_rate
        if k < 0:
            parts.append(gap_noise * rng.standard_normal(t.size))
            continue
        f = 120.0 * np.arange(1, int(7900 / 120) + 1)
        gain = sum(1.0 / (1.0 + ((f - formant) / 80.0) ** 2) for formant in PHONES[k]) * (f / 1000.0) ** -0.5 + 1e-3
        phase = np.random.default_rng(100 + k).uniform(0, 2 * np.pi, f.size)   # fixed per phone
        vowel = (gain[:, None] * np.sin(2 * np.pi * f[:, None] * t + phase[:, None])).sum(axis=0)
        parts.append(0.3 * vowel / np.abs(vowel).max() + noise * rng.standard_normal(t.size))
    return torch.from_numpy(np.concatenate(parts))


def _reference_power(wave: np.ndarray) -> np.ndarray:
    """librosa's power spectrogram ``(freqs, frames)`` with the metric's analysis parameters."""
    return np.abs(librosa.stft(np.asarray(wave, dtype=np.float64), **STFT_ARGS)) ** 2


def _reference_log_amplitude(power: np.ndarray) -> np.ndarray:
    """Natural log of slaney mel amplitude ``(n_mels, frames)``, floor 1e-10 on power."""
    mel = librosa.feature.melspectrogram(S=power, sr=SR, n_mels=80, htk=False, norm="slaney")
    return 0.5 * np.log(np.maximum(mel, 1e-10))


def _reference_cepstrum(power: np.ndarray, n_coeffs: int) -> np.ndarray:
    """c1..c_n ``(frames, n_coeffs)``: orthonormal DCT-II (scipy) of the log mel amplitude, in the cepstral scale
    ``x_m = c_0 + 2 Σ c_k cos(π k (m + ½) / N)``, i.e. divided by sqrt(2 N)."""
    x = _reference_log_amplitude(power)
    c = scipy.fft.dct(x, type=2, norm="ortho", axis=0) / np.sqrt(2 * x.shape[0])
    return c[1:n_coeffs + 1].T


def _reference_speech(power: np.ndarray, silence_db: float = 40.0) -> np.ndarray:
    energy = 10 * np.log10(np.maximum(power.sum(axis=0), 1e-10))
    return energy >= energy.max() - silence_db


def _naive_dtw(x: np.ndarray, y: np.ndarray) -> tuple[list[tuple[int, int]], float]:
    """Textbook O(N·M) DTW with Euclidean local cost and steps (1,1), (1,0), (0,1); path by backtracking."""
    n, m = len(x), len(y)
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = math.sqrt(sum((a - b) ** 2 for a, b in zip(x[i - 1], y[j - 1])))
            acc[i, j] = cost + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    path, i, j = [(n - 1, m - 1)], n, m
    while (i, j) != (1, 1):
        i, j = min([(i - 1, j - 1), (i - 1, j), (i, j - 1)], key=lambda ij: acc[ij])
        path.append((i - 1, j - 1))
    return path[::-1], float(acc[n, m])


def _framewise_mcd(a: torch.Tensor, b: torch.Tensor) -> float:
    """MCD without alignment: frame t against frame t over the common length, every frame kept."""
    ca, cb = mel_cepstrum(a, sample_rate=SR), mel_cepstrum(b, sample_rate=SR)
    n = min(len(ca), len(cb))
    return float(MCD_CONSTANT * torch.linalg.vector_norm(ca[:n] - cb[:n], dim=1).mean())


def _with_noise(wave: torch.Tensor, snr_db: float, seed: int) -> torch.Tensor:
    noise = torch.randn(wave.shape, generator=torch.Generator().manual_seed(seed), dtype=wave.dtype)
    return wave + noise * (wave.norm() / noise.norm() * 10 ** (-snr_db / 20))


# -- the cepstrum ----------------------------------------------------------------------------------------------------


def test_mel_cepstrum_matches_librosa_and_scipy():
    wave = _phones([0.2, 0.15, 0.25, 0.2], seed=1)
    ours = mel_cepstrum(wave, sample_rate=SR, n_coeffs=24)
    ref = _reference_cepstrum(_reference_power(wave.numpy()), 24)
    assert ours.shape == (1 + len(wave) // HOP_LENGTH, 24) == ref.shape
    # float32 filterbanks on both sides (torchaudio's and librosa's): ~1e-7 relative in mel power.
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=2e-6)
    # float32 input, another device's dtype: the same numbers.
    np.testing.assert_allclose(mel_cepstrum(wave.float(), sample_rate=SR).numpy(), ref, rtol=0, atol=1e-5)


def test_mel_cepstrum_resamples_other_rates_with_soxr():
    wave = _phones([0.3, 0.3], seed=2, sample_rate=22_050)
    ours = mel_cepstrum(wave, sample_rate=22_050, n_coeffs=12)
    ref = _reference_cepstrum(_reference_power(soxr.resample(wave.numpy(), 22_050, SR, quality="HQ")), 12)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=2e-6)


def test_cepstral_scale_reference_is_the_cosine_series():
    # The reference's scale is the docstring's definition c_k = (1/N) Σ_m x_m cos(π k (m + ½) / N).
    x = _reference_log_amplitude(_reference_power(_phones([0.1, 0.1], seed=3).numpy()))
    m, k = np.arange(N_MELS), np.arange(1, 25)
    explicit = (np.cos(np.pi * np.outer(k, m + 0.5) / N_MELS) @ x).T / N_MELS
    np.testing.assert_allclose(_reference_cepstrum(_reference_power(_phones([0.1, 0.1], seed=3).numpy()), 24),
                               explicit, rtol=0, atol=1e-12)


def test_full_order_mcd_is_the_spread_of_the_log_amplitude_difference():
    # Parseval: with all N-1 coefficients, (10/ln 10)·sqrt(2 Σ Δc²) is the standard deviation over mel bands of
    # 10·log10 of the amplitude ratio. Checks the 1/sqrt(2N) scale and the MCD constant together.
    a, b = _phones([0.3, 0.3], seed=4), _phones([0.3, 0.3], seed=5, order=[2, 3])
    per_frame = MCD_CONSTANT * torch.linalg.vector_norm(
        mel_cepstrum(a, sample_rate=SR, n_coeffs=N_MELS - 1) - mel_cepstrum(b, sample_rate=SR, n_coeffs=N_MELS - 1),
        dim=1)
    diff = (_reference_log_amplitude(_reference_power(a.numpy()))
            - _reference_log_amplitude(_reference_power(b.numpy())))
    expected = (10 / np.log(10)) * diff.std(axis=0)
    np.testing.assert_allclose(per_frame.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert MCD_CONSTANT == pytest.approx(10 / np.log(10) * np.sqrt(2), rel=1e-15)


# -- DTW ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,m,seed", [(17, 23, 0), (23, 17, 1), (1, 9, 2), (12, 12, 3), (30, 8, 4)])
def test_dtw_matches_naive_dynamic_programme(n, m, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 24)), rng.normal(size=(m, 24))
    path, cost = dtw_path(torch.from_numpy(x), y)
    naive_path, naive_cost = _naive_dtw(x, y)
    assert cost == pytest.approx(naive_cost, rel=1e-12)
    assert [tuple(p) for p in path] == naive_path  # random costs: no ties, the optimal path is unique
    assert path.shape[1] == 2 and tuple(path[0]) == (0, 0) and tuple(path[-1]) == (n - 1, m - 1)
    assert {tuple(s) for s in np.diff(path, axis=0)} <= {(1, 1), (1, 0), (0, 1)}
    assert np.linalg.norm(x[path[:, 0]] - y[path[:, 1]], axis=1).sum() == pytest.approx(cost, rel=1e-12)


def test_dtw_rejects_mismatched_features():
    with pytest.raises(ValueError, match="equal dims"):
        dtw_path(np.zeros((3, 4)), np.zeros((3, 5)))


# -- the metrics ----------------------------------------------------------------------------------------------------


def test_metrics_match_an_oracle_from_references():
    # Near-silent gaps (noise 80 dB down) in both, phones of different lengths: the silence rule and DTW matter.
    a = _phones([0.15, 0.1, 0.2, 0.1, 0.15], order=[0, -1, 1, 2, -1], seed=6)
    b = _phones([0.08, 0.25, 0.1, 0.12, 0.05], order=[-1, 0, 3, -1, 2], seed=7)
    pa, pb = _reference_power(a.numpy()), _reference_power(b.numpy())
    ka, kb = _reference_speech(pa), _reference_speech(pb)
    assert 0 < ka.sum() < len(ka) and 0 < kb.sum() < len(kb)
    np.testing.assert_array_equal(speech_frames(a, sample_rate=SR).numpy(), ka)
    ca, cb = _reference_cepstrum(pa, 24)[ka], _reference_cepstrum(pb, 24)[kb]
    path, cost = _naive_dtw(ca, cb)
    i, j = np.array(path).T
    expected_mcd = 10 / np.log(10) * np.sqrt(2) * cost / len(path)
    da, db = 10 * np.log10(np.maximum(pa[:, ka], 1e-10)), 10 * np.log10(np.maximum(pb[:, kb], 1e-10))
    expected_lsd = np.sqrt(((da[:, i] - db[:, j]) ** 2).mean(axis=0)).mean()

    d = audio_distances(a, b, sample_rate=SR)
    assert (d.reference_frames, d.estimate_frames, d.path_length) == (ka.sum(), kb.sum(), len(path))
    assert d.mcd_db == pytest.approx(expected_mcd, rel=1e-4)
    assert d.lsd_db == pytest.approx(expected_lsd, rel=1e-4)
    assert mel_cepstral_distortion(a, b, sample_rate=SR) == d.mcd_db
    assert log_spectral_distance(a, b, sample_rate=SR) == d.lsd_db
    assert d.mcd_db > 1.0  # one phone differs: not a trivially small number


def test_identity_gain_and_symmetry():
    a = _phones([0.2, 0.2, 0.2], seed=8)
    b = _phones([0.25, 0.1, 0.3], seed=9, order=[1, 0, 3])
    assert mel_cepstral_distortion(a, a, sample_rate=SR) == 0.0
    assert log_spectral_distance(a, a, sample_rate=SR) == 0.0
    # c0 is excluded and the silence threshold is relative: gain changes LSD by exactly 20·log10(2), not MCD.
    d = audio_distances(a, 0.5 * a, sample_rate=SR)
    assert d.mcd_db == pytest.approx(0.0, abs=1e-9)
    assert d.lsd_db == pytest.approx(20 * math.log10(2), rel=1e-9)
    assert d.path_length == d.reference_frames == d.estimate_frames
    ab, ba = mel_cepstral_distortion(a, b, sample_rate=SR), mel_cepstral_distortion(b, a, sample_rate=SR)
    assert ab > 2.0 and ab == pytest.approx(ba, rel=0.02)


def test_delayed_copy_is_close_only_with_alignment():
    a = _phones([0.2, 0.15, 0.2, 0.15], seed=10)
    delayed = torch.cat([torch.zeros(int(0.2 * SR), dtype=a.dtype), a])
    # Not exactly 0: the few onset frames that straddle the inserted zeros are kept (within 40 dB of the peak).
    assert mel_cepstral_distortion(a, delayed, sample_rate=SR) < 0.3
    assert _framewise_mcd(a, delayed) > 3.0


def test_time_stretched_copy_is_close_only_with_dtw():
    # Same phones, different durations, no silence (the silence rule cannot help): only DTW lines them up.
    a = _phones([0.2, 0.2, 0.2, 0.2, 0.2], seed=11, noise=0.0)
    b = _phones([0.35, 0.1, 0.3, 0.12, 0.25], seed=11, noise=0.0)
    assert speech_frames(a, sample_rate=SR).all() and speech_frames(b, sample_rate=SR).all()
    with_dtw, without = mel_cepstral_distortion(a, b, sample_rate=SR), _framewise_mcd(a, b)
    assert with_dtw < 0.2  # only the frames across the four phone boundaries differ
    assert without > 2.0


def test_lsd_grows_with_noise_level():
    a = _phones([0.2, 0.2, 0.2], seed=12)
    lsd = [log_spectral_distance(a, _with_noise(a, snr, seed=13), sample_rate=SR) for snr in (50, 40, 30, 20, 10, 0)]
    assert lsd[0] > 0.0
    assert all(x < y for x, y in zip(lsd, lsd[1:])), lsd


def test_bad_inputs_are_refused():
    wave = _phones([0.1], seed=14)
    with pytest.raises(ValueError, match="mono"):
        mel_cepstrum(torch.stack([wave, wave]), sample_rate=SR)
    with pytest.raises(ValueError, match="too short"):
        mel_cepstral_distortion(wave, wave[:400], sample_rate=SR)
    with pytest.raises(ValueError, match="n_coeffs"):
        mel_cepstrum(wave, sample_rate=SR, n_coeffs=N_MELS)
    with pytest.raises(ValueError, match="NaN"):
        mel_cepstrum(torch.full_like(wave, float("nan")), sample_rate=SR)
    # The shortest wave a centred STFT of 1024 points can reflect is 513 samples; 512 is a ValueError, not torch's.
    with pytest.raises(ValueError, match="too short: 512 samples"):
        mel_cepstrum(wave[:512], sample_rate=16000)
    assert mel_cepstrum(wave[:513], sample_rate=16000).shape == (1 + 513 // 80, 24)


# -- real speech ----------------------------------------------------------------------------------------------------


def test_cross_speaker_mcd_on_vcc2016(vcc):
    root = vcc / "evaluation_all"
    for k, name in enumerate(("200001.flac", "200002.flac", "200003.flac")):
        source, _ = load_audio(root / "SF1" / name, sample_rate=SR)
        target, _ = load_audio(root / "TM3" / name, sample_rate=SR)
        cross = mel_cepstral_distortion(source, target, sample_rate=SR)
        noisy = mel_cepstral_distortion(source, _with_noise(source, 30.0, seed=k), sample_rate=SR)
        assert 2.0 < cross < 10.0, (name, cross)
        assert noisy < cross, (name, noisy, cross)

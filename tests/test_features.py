"""The front end against librosa, the reference implementation of the same definitions."""

import librosa
import numpy as np
import pytest
import torch

from specgan.audio.features import LogMel, db_to_power, denormalize_db, hz_to_mel, mel_filterbank, mel_to_hz, \
    normalize_db, power_to_db
from specgan.audio.io import load_audio
from specgan.audio.params import AudioParams
from specgan.errors import AudioError


@pytest.mark.parametrize("sample_rate,n_fft,n_mels,f_min,f_max", [
    (22050, 1024, 80, 0.0, None), (16000, 512, 64, 50.0, 7600.0), (8000, 256, 40, 0.0, 4000.0),
    # An odd n_fft and an odd rate, where torchaudio's melscale_fbanks puts the FFT bins at the wrong frequencies.
    (22050, 1023, 80, 0.0, None), (16000, 511, 64, 50.0, 7600.0), (11025, 512, 64, 0.0, None),
    (44100, 2048, 128, 20.0, None)])
def test_filterbank_matches_librosa(sample_rate, n_fft, n_mels, f_min, f_max):
    ours = mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max)
    ref = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
    assert ours.shape == (n_fft // 2 + 1, n_mels)
    # Tolerance: float32 against librosa's float64-computed weights, relative to the largest weight.
    np.testing.assert_allclose(ours.T.numpy(), ref, rtol=0, atol=1e-6 * ref.max())


def test_mel_scale_matches_librosa():
    hz = np.array([0.0, 10.0, 500.0, 999.9, 1000.0, 1000.1, 4000.0, 11025.0, 24000.0])
    np.testing.assert_allclose(hz_to_mel(torch.from_numpy(hz)).numpy(), librosa.hz_to_mel(hz), rtol=1e-12)
    mels = librosa.hz_to_mel(hz)
    np.testing.assert_allclose(mel_to_hz(torch.from_numpy(mels)).numpy(), librosa.mel_to_hz(mels), rtol=1e-12,
                               atol=1e-9)


def _chirp(sample_rate: int, seconds: float) -> torch.Tensor:
    """A rising chirp over a noise floor, so that every mel band carries energy."""
    chirp = 0.5 * librosa.chirp(fmin=60, fmax=sample_rate / 2.5, sr=sample_rate, duration=seconds)
    noise = 0.01 * np.random.default_rng(0).standard_normal(chirp.size)
    return torch.from_numpy((chirp + noise).astype(np.float32))


def _librosa_db(wave: torch.Tensor, p: AudioParams) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=wave.numpy(), sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length,
                                         win_length=p.window_length, n_mels=p.n_mels, fmin=p.f_min, fmax=p.mel_f_max,
                                         power=2.0, center=True, pad_mode="reflect")
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)


@pytest.mark.parametrize("params", [{}, {"win_length": 800}, {"n_fft": 1023},
                                    {"sample_rate": 11025, "n_fft": 512, "n_mels": 64}])
def test_logmel_matches_librosa_on_a_chirp_in_noise(params):
    p = AudioParams(**params)
    wave = _chirp(p.sample_rate, 1.5)
    ours_db = power_to_db(LogMel(p).mel_power(wave)).numpy()
    ref_db = _librosa_db(wave, p)
    assert ours_db.shape == ref_db.shape == (p.n_mels, 1 + wave.numel() // p.hop_length)
    # Bins well above the -100 dB floor agree to 0.01 dB (float32 STFT vs float64 weights).
    loud = ref_db > -60
    assert loud.mean() > 0.9
    np.testing.assert_allclose(ours_db[loud], ref_db[loud], atol=0.01)


def test_logmel_matches_librosa_on_speech(vcc):
    p = AudioParams()
    wave, _ = load_audio(vcc / "vcc2016_training" / "SF1" / "100001.flac", sample_rate=p.sample_rate)
    ours = LogMel(p)(wave).numpy()
    ref = np.clip((_librosa_db(wave, p) - p.min_db) / (p.max_db - p.min_db) * 2 - 1, -1, 1)
    # Normalised units: 1e-3 is 0.06 dB. Near the -100 dB floor float32 rounding grows, so compare loud bins.
    loud = ref > -0.5
    assert loud.mean() > 0.2
    np.testing.assert_allclose(ours[loud], ref[loud], atol=1e-3)


@pytest.mark.parametrize("win_length", [None, 800])
@pytest.mark.parametrize("grad", [False, True])
def test_odd_fft_frames_are_torch_stft_s(win_length, grad):
    """An odd n_fft's frame reaches one sample further right than left of its centre: the edge frames were cut one
    sample short until that was counted. Oracle: ``torch.stft`` (centred, reflect) through the same filterbank;
    with a gradient the signal takes the padded path."""
    p = AudioParams(n_fft=1023, win_length=win_length)
    wave = _chirp(p.sample_rate, 1.5)
    assert wave.numel() % p.hop_length   # torch.stft makes 1 + (samples - 1) // hop frames for an odd n_fft
    logmel = LogMel(p)
    ours = logmel.mel_power(wave.clone().requires_grad_(grad)).detach()
    spec = torch.stft(wave, n_fft=1023, hop_length=p.hop_length, win_length=p.window_length,
                      window=torch.hann_window(p.window_length), center=True, pad_mode="reflect", return_complex=True)
    want = logmel.fbank_t @ spec.abs().square()
    assert ours.shape == want.shape
    torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-6)


def test_normalisation_is_fixed_and_invertible():
    db = torch.linspace(-120, 60, 1000)
    x = normalize_db(db, min_db=-80, max_db=40)
    assert x.min() == -1 and x.max() == 1
    inside = (db >= -80) & (db <= 40)
    torch.testing.assert_close(denormalize_db(x, min_db=-80, max_db=40)[inside], db[inside], atol=1e-4, rtol=0)
    # Fixed range: a quieter copy of a signal maps lower, not to the same values (no per-clip normalisation).
    p = AudioParams()
    wave = _chirp(p.sample_rate, 0.5)
    loud, quiet = LogMel(p)(wave), LogMel(p)(wave * 0.1)
    assert torch.allclose((loud - quiet)[loud > -0.5].mean(), torch.tensor(20 / 120 * 2), atol=1e-3)
    torch.testing.assert_close(db_to_power(power_to_db(torch.tensor([1e-3, 1.0, 50.0]))),
                               torch.tensor([1e-3, 1.0, 50.0]))


def test_logmel_batch_equals_single():
    p = AudioParams(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40)
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(3, 8000, generator=g) * 0.1
    batch = LogMel(p)(waves)
    for i in range(3):
        torch.testing.assert_close(batch[i], LogMel(p)(waves[i]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_fft,hop,win", [(256, 64, 256), (255, 50, 200)])
@pytest.mark.parametrize("block_frames", [1, 7, 32, 10_000])
def test_logmel_in_blocks_is_the_whole_signal_s(n_fft, hop, win, block_frames):
    params = AudioParams(sample_rate=8000, n_fft=n_fft, hop_length=hop, win_length=win, n_mels=32)
    wave = torch.randn(6401, generator=torch.Generator().manual_seed(0)) * 0.1
    logmel = LogMel(params)
    whole = logmel(wave)
    blocked = logmel.in_blocks(wave, block_frames=block_frames)
    assert blocked.shape == whole.shape == (32, 1 + 6400 // hop)
    torch.testing.assert_close(blocked, whole, atol=1e-5, rtol=0)


def test_logmel_in_blocks_refuses_what_forward_refuses():
    params = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32)
    with pytest.raises(AudioError, match="too short"):
        LogMel(params).in_blocks(torch.zeros(128), block_frames=4)


def test_power_to_db_floors_at_librosa_amin():
    """The -100 dB floor (amin 1e-10) is librosa's: silent and near-silent bins land where librosa puts them.
    Oracle: ``librosa.power_to_db(ref=1.0, amin=1e-10, top_db=None)``'s definition, written out."""
    power = np.array([0.0, 1e-12, 1e-10, 3e-9, 1e-4, 1.0, 50.0])
    ours = power_to_db(torch.from_numpy(power)).numpy()
    np.testing.assert_allclose(ours, 10 * np.log10(np.maximum(power, 1e-10)), atol=1e-9)
    assert ours[0] == -100.0


def test_denormalize_clips_outside_the_unit_range():
    """A generator's output beyond [-1, 1] is read as the range's ends: no louder than max_db, no quieter than
    min_db (the inverse of normalize_db's clipping)."""
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.5])
    torch.testing.assert_close(denormalize_db(x, min_db=-80, max_db=40),
                               torch.tensor([-80.0, -80.0, -20.0, 40.0, 40.0]))


@pytest.mark.parametrize("n_fft", [256, 255])
def test_logmel_takes_the_shortest_signal_min_samples_allows(n_fft):
    """``min_samples`` samples are enough for a centred STFT (reflecting needs one more than a frame's reach, which
    for an odd n_fft is one more than half); one fewer is an AudioError. Oracle: ``torch.stft`` (centred, reflect)
    through the same filterbank."""
    p = AudioParams(sample_rate=8000, n_fft=n_fft, hop_length=64, n_mels=32)
    logmel = LogMel(p)
    wave = torch.randn(p.min_samples, generator=torch.Generator().manual_seed(0)) * 0.1
    spec = torch.stft(wave, n_fft=n_fft, hop_length=64, window=torch.hann_window(n_fft), center=True,
                      pad_mode="reflect", return_complex=True)
    torch.testing.assert_close(logmel.mel_power(wave), logmel.fbank_t @ spec.abs().square(), rtol=1e-4, atol=1e-6)
    with pytest.raises(AudioError, match="too short"):
        logmel.mel_power(wave[:-1])


@pytest.mark.parametrize("n_fft,hop,win", [(256, 64, 256), (255, 50, 200)])
@pytest.mark.parametrize("sizes", [[6401], [3000, 3401], [1, 128, 6272], [500] * 12 + [401], [6000, 0, 1, 400],
                                   [129, 6272], [6272, 129], [100, 29, 0, 6272]])
def test_streamed_mel_power_is_the_whole_signal_s(n_fft, hop, win, sizes):
    """prep streams a long file's blocks through ``stream_mel_power``: the pieces, joined, are ``mel_power`` of the
    whole signal, whatever the block sizes (tiny, empty, a tail shorter than a frame's reach)."""
    params = AudioParams(sample_rate=8000, n_fft=n_fft, hop_length=hop, win_length=win, n_mels=32)
    logmel = LogMel(params)
    for cut in (0, 1):  # 6401 samples, and 6400, which the hop divides (the last frame reaches furthest)
        sizes = sizes[:-1] + [sizes[-1] - cut]
        wave = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(0)) * 0.1
        streamed = torch.cat(list(logmel.stream_mel_power(list(torch.split(wave, sizes)))), dim=-1)
        whole = logmel.mel_power(wave)
        assert streamed.shape == whole.shape == (32, 1 + wave.numel() // hop)
        torch.testing.assert_close(streamed, whole, rtol=1e-4, atol=1e-7)


def test_streamed_mel_power_refuses_a_signal_too_short_to_frame():
    params = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32)
    with pytest.raises(ValueError, match="too short"):
        list(LogMel(params).stream_mel_power([np.zeros(60, np.float32), np.zeros(68, np.float32)]))

"""Mel → audio: each stage against its reference (torch.stft, scipy's NNLS, librosa's Griffin-Lim), and the
whole inverse against librosa's ``mel_to_audio`` on real speech."""

import librosa
import numpy as np
import pytest
import scipy.optimize
import torch

from specgan.audio.features import LogMel, db_to_power, denormalize_db, mel_filterbank
from specgan.audio.inverse import MelInverter, band_blocks, griffinlim, mel_to_linear, spectral_convergence, \
    stft, with_magnitude
from specgan.audio.io import load_audio
from specgan.audio.params import AudioParams
from specgan.audio.stft import istft_frames, padded_window, stft_frames, window_envelope


def _noise(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_fft,hop,win", [(256, 64, 256), (512, 128, 400), (1024, 256, 1024)])
def test_frames_major_stft_matches_torch(n_fft, hop, win):
    wave = _noise(5000)
    window = padded_window(n_fft=n_fft, win_length=win)
    ours = stft_frames(wave[None], n_fft=n_fft, hop_length=hop, window=window)[0].T     # (freqs, frames)
    ref = torch.stft(wave, n_fft=n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win),
                     center=True, pad_mode="reflect", return_complex=True)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    env = window_envelope(ref.shape[-1], n_fft=n_fft, hop_length=hop, window=window)
    back = istft_frames(ours.T[None].contiguous(), n_fft=n_fft, hop_length=hop, window=window, envelope=env,
                        length=wave.numel())[0]
    ref_back = torch.istft(ref, n_fft=n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win),
                           center=True, length=wave.numel())
    torch.testing.assert_close(back, ref_back, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back, wave, atol=1e-5, rtol=1e-5)


def test_griffinlim_matches_librosa_from_zero_phase(fsdd):
    wave, _ = load_audio(fsdd / "0_george_0.wav")
    mag = stft(wave, n_fft=256, hop_length=64).abs()
    for n_iter in (1, 8, 32):
        ours = griffinlim(mag, n_fft=256, hop_length=64, n_iter=n_iter, momentum=0.99, init="zeros",
                          length=wave.numel()).numpy()
        ref = librosa.griffinlim(mag.double().numpy(), n_iter=n_iter, hop_length=64, n_fft=256, init=None,
                                 momentum=0.99, length=wave.numel(), pad_mode="reflect")
        # Same algorithm, float32 vs float64: differences grow slowly with iterations (measured 2e-5 at 32).
        np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max() * n_iter ** 0.5 + 1e-5)


def test_with_magnitude_keeps_the_phase_and_sets_the_magnitude():
    """Against complex arithmetic: ``magnitude · z / (|z| + 1e-16)``, zeros staying zero, on a non-square batch."""
    gen = torch.Generator().manual_seed(0)
    z = torch.complex(torch.randn(3, 7, 5, generator=gen), torch.randn(3, 7, 5, generator=gen))
    z[0, 0, :2] = 0
    magnitude = torch.rand(3, 7, 5, generator=gen) * 4
    want = magnitude * z / (z.abs() + 1e-16)
    pairs = torch.view_as_real(z).clone()
    assert with_magnitude(pairs, magnitude) is pairs
    torch.testing.assert_close(torch.view_as_complex(pairs), want, rtol=1e-6, atol=1e-6)
    assert torch.equal(pairs[0, 0, :2], torch.zeros(2, 2))


def test_griffinlim_is_batched_and_follows_given_phase():
    wave = _noise(4000) * 0.1
    spec = stft(torch.stack([wave, wave.flip(0)]), n_fft=256, hop_length=64)
    batch = griffinlim(spec.abs(), n_fft=256, hop_length=64, n_iter=5, init="zeros")
    for i in range(2):
        single = griffinlim(spec[i].abs(), n_fft=256, hop_length=64, n_iter=5, init="zeros")
        torch.testing.assert_close(batch[i], single, atol=1e-5, rtol=0)
    # Starting from the true phase with no iterations gives back the signal.
    exact = griffinlim(spec[0].abs(), n_fft=256, hop_length=64, n_iter=0, init=spec[0], length=wave.numel())
    torch.testing.assert_close(exact, wave, atol=1e-5, rtol=0)


def test_mel_to_linear_reaches_the_nnls_optimum(fsdd):
    p = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=40)
    wave, _ = load_audio(fsdd / "3_theo_7.wav", sample_rate=p.sample_rate)
    mel = LogMel(p).mel_power(wave).double()
    fbank = mel_filterbank(sample_rate=8000, n_fft=256, n_mels=40).double()
    a = fbank.T.numpy()

    def residual(x):
        return np.linalg.norm(a @ x - mel.numpy()) / np.linalg.norm(mel.numpy())

    reference = np.stack([scipy.optimize.nnls(a, m)[0] for m in mel.numpy().T], axis=1)
    start = mel_to_linear(mel, fbank=fbank, n_iter=0).numpy()
    default = mel_to_linear(mel, fbank=fbank).numpy()
    converged = mel_to_linear(mel, fbank=fbank, n_iter=2000).numpy()
    assert (default >= 0).all() and (converged >= 0).all()
    assert residual(reference) < 1e-8
    assert residual(converged) < 1e-6                     # the same optimum as scipy's active-set solver
    assert residual(default) < 0.2 * residual(start)      # 30 iterations already remove most of the error


def plain_fista(mel: torch.Tensor, a: torch.Tensor, n_iter: int) -> torch.Tensor:
    """The slow reference: FISTA for min ||a x - mel||², x >= 0, written out with dense products, one frame set."""
    step = 1.0 / torch.linalg.matrix_norm(a, ord=2) ** 2
    x = (torch.linalg.pinv(a) @ mel).clamp_min(0.0)
    y, t = x.clone(), 1.0
    for _ in range(n_iter):
        x_next = (y - step * (a.T @ (a @ y - mel))).clamp_min(0.0)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        y = x_next + (t - 1.0) / t_next * (x_next - x)
        x, t = x_next, t_next
    return x


@pytest.mark.parametrize("n_iter", [1, 2, 7, 30])
@pytest.mark.parametrize("rows_per_block", [1, 3, 8, 40])
def test_mel_to_linear_is_plain_fista(n_iter, rows_per_block):
    """The banded, fused, buffer-swapping loop computes the textbook iteration, for odd and even counts and any
    block size, on a batch of items (float64, so that only the order of additions differs)."""
    fbank = mel_filterbank(sample_rate=16000, n_fft=512, n_mels=40, f_min=50.0, f_max=7000.0).double()
    a = fbank.T
    mel = a @ torch.rand(2, 257, 19, generator=torch.Generator().manual_seed(0), dtype=torch.float64) ** 3
    got = mel_to_linear(mel, fbank=fbank, n_iter=n_iter, rows_per_block=rows_per_block)
    assert got.shape == (2, 257, 19) and got.is_contiguous()
    for item in range(2):
        torch.testing.assert_close(got[item], plain_fista(mel[item], a, n_iter), rtol=1e-9, atol=1e-12)


def test_band_blocks_cover_every_non_zero_entry():
    fbank = mel_filterbank(sample_rate=22050, n_fft=1024, n_mels=80)
    a = torch.cat([fbank.T, torch.zeros(5, fbank.shape[0])])  # and a block of rows that are all zero
    blocks = band_blocks(a, rows_per_block=5)
    assert blocks[-1][1] == slice(0, 0)
    assert sum(b.numel() for _, _, b in blocks) < a.numel() / 5  # most of the dense matrix is left out
    rebuilt = torch.zeros_like(a)
    for rows, columns, block in blocks:
        rebuilt[rows, columns] = block
    assert torch.equal(rebuilt, a)


def _sc_of(rebuilt: torch.Tensor, wave: torch.Tensor, p: AudioParams) -> float:
    args = dict(n_fft=p.n_fft, hop_length=p.hop_length, win_length=p.window_length)
    return float(spectral_convergence(reference=stft(wave, **args).abs(), estimate=stft(rebuilt, **args).abs()))


@pytest.mark.parametrize("corpus,name,params", [
    ("fsdd", "7_jackson_12.wav", AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=40)),
    ("fsdd", "2_yweweler_30.wav", AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=40)),
    ("vcc", "vcc2016_training/TM3/100010.flac", AudioParams()),
])
def test_inverse_is_no_worse_than_librosa_mel_to_audio(request, corpus, name, params):
    root = request.getfixturevalue(corpus)
    p, n_iter = params, 32
    wave, _ = load_audio(root / name, sample_rate=p.sample_rate)
    logmel = LogMel(p)(wave)
    ours = MelInverter(p)(logmel, n_iter=n_iter, length=wave.numel(), generator=torch.Generator().manual_seed(0))
    # librosa gets exactly the same information: the mel power that the normalised log-mel encodes.
    mel_power = db_to_power(denormalize_db(logmel, min_db=p.min_db, max_db=p.max_db)).double().numpy()
    np.random.seed(0)  # librosa's random initial phase comes from numpy's global generator
    ref = librosa.feature.inverse.mel_to_audio(
        mel_power, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, win_length=p.window_length,
        fmin=p.f_min, fmax=p.mel_f_max, power=2.0, n_iter=n_iter, length=wave.numel(), pad_mode="reflect")
    ours_sc, ref_sc = _sc_of(ours, wave, p), _sc_of(torch.from_numpy(ref).float(), wave, p)
    print(f"{name}: spectral convergence ours {ours_sc:.3f}, librosa {ref_sc:.3f}")
    assert ours_sc <= ref_sc, (ours_sc, ref_sc)
    assert ours_sc < 0.5


def test_mel_inverter_batch_equals_single():
    p = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=40, frames=32)
    logmel = LogMel(p)(torch.stack([_noise(4000, 1), _noise(4000, 2)]) * 0.1)
    inverter = MelInverter(p)
    batch = inverter(logmel, n_iter=4, init="zeros")
    for i in range(2):
        torch.testing.assert_close(batch[i], inverter(logmel[i], n_iter=4, init="zeros"), atol=1e-5, rtol=0)


def test_magnitude_in_frame_blocks_equals_the_whole_clip_at_once():
    p = AudioParams(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40)
    # In float64: in float32 the matrix products' rounding depends on how many frames share one product, and the
    # underdetermined NNLS amplifies it (a frame solved alone differs from the same frame in a batch just as much).
    logmel = torch.rand(2, 40, 53, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    inverter = MelInverter(p).double()
    whole = inverter.magnitude(logmel, block_frames=10**6)
    blocks = inverter.magnitude(logmel, block_frames=7)  # 7 blocks of 7 frames and one of 4
    assert blocks.shape == whole.shape == (2, 257, 53)
    torch.testing.assert_close(blocks, whole, rtol=1e-9, atol=1e-9)


def test_sample_audio_is_rendered_in_batches_that_give_what_one_batch_gives(tmp_path, monkeypatch):
    """``specgan sample --audio`` inverts RENDER_BATCH images at a time (memory); the files are those one batch
    of all the images writes, the random initial phases being drawn in the same order."""
    import soundfile as sf

    from specgan import sample as sample_module
    from specgan.audio.params import AudioParams

    audio = AudioParams(sample_rate=8000, n_fft=128, hop_length=32, n_mels=16, frames=16)
    images = torch.rand(7, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    written = {}
    for batch in (3, 100):
        monkeypatch.setattr(sample_module, "RENDER_BATCH", batch)
        paths = [tmp_path / f"{batch}_{i}.wav" for i in range(len(images))]
        sample_module.render_audio(images, audio=audio, paths=paths, n_iter=2, seed=5)
        written[batch] = [sf.read(p)[0] for p in paths]
    for a, b in zip(written[3], written[100]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(written[3][0], written[3][1])

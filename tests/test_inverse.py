"""Mel → audio: each stage against its reference (torch.stft, scipy's NNLS, librosa's Griffin-Lim), and the
whole inverse against librosa's ``mel_to_audio`` on real speech."""

import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specgan.audio.features import LogMel, db_to_power, denormalize_db, mel_filterbank
from specgan.audio import inverse
from specgan.audio.inverse import MelInverter, band_blocks, block_size, centred_stft_frames, frame_blocks, \
    griffinlim, griffinlim_blocks, invert_logmel, mel_to_linear, spectral_convergence, spectral_convergence_blocks, \
    stft, with_magnitude
from specgan.audio.io import load_audio, save_audio
from specgan.audio.params import AudioParams
from specgan.reconstruct import reconstruct_file
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


@pytest.mark.filterwarnings("error")   # PyTorch warns when a preallocated buffer had the wrong frame count
@pytest.mark.parametrize("n_fft,hop,win", [(1023, 128, 1023), (255, 50, 200), (1024, 128, 1024)])
@pytest.mark.parametrize("samples", [128_000, 128_001])
def test_griffinlim_gives_back_the_signal_from_its_own_phase_whatever_the_parity(n_fft, hop, win, samples):
    """An odd n_fft's frame reads one sample more right of its centre than left; with only n_fft // 2 reflected on
    the right, a signal whose length the hop divides lost its last frame, and Griffin-Lim its last samples
    (measured 0.4% of the signal on speech at n_fft 1023). Oracle: zero iterations from the true phase give back
    the signal; ``torch.stft``'s frames are ours."""
    wave = demo_speech(samples / 16000)
    spec = stft(wave, n_fft=n_fft, hop_length=hop, win_length=win)
    assert spec.shape[-1] == 1 + samples // hop
    ref = torch.stft(wave, n_fft=n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win), center=True,
                     pad_mode="reflect", return_complex=True)
    torch.testing.assert_close(spec[:, :ref.shape[-1]], ref, atol=1e-4, rtol=1e-4)   # torch.stft may have one less
    back = griffinlim(spec.abs(), n_fft=n_fft, hop_length=hop, win_length=win, n_iter=0, init=spec, length=samples)
    torch.testing.assert_close(back, wave, atol=1e-5, rtol=0)
    again = griffinlim(spec.abs(), n_fft=n_fft, hop_length=hop, win_length=win, n_iter=2, init=spec, length=samples)
    torch.testing.assert_close(again, wave, atol=1e-4, rtol=0)


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


def test_sample_audio_is_scaled_down_only_when_it_would_clip(tmp_path):
    """render_audio divides a wave by its peak only where the peak is above 1: a loud sample peaks at full scale,
    unclipped; a quiet one is written as Griffin-Lim gave it, not raised to full scale."""
    import soundfile as sf

    from specgan import sample as sample_module
    from specgan.audio.params import AudioParams

    audio = AudioParams(sample_rate=8000, n_fft=128, hop_length=32, n_mels=16, frames=16)
    images = torch.stack([torch.full((1, 16, 16), 1.0), torch.full((1, 16, 16), -0.6)])  # loud, quiet
    paths = [tmp_path / "loud.wav", tmp_path / "quiet.wav"]
    sample_module.render_audio(images, audio=audio, paths=paths, n_iter=2, seed=5)
    waves = MelInverter(audio)(images[:, 0], n_iter=2, generator=torch.Generator().manual_seed(5))
    peaks = waves.abs().amax(dim=-1)
    assert peaks[0] > 1.0 and peaks[1] < 0.5, peaks
    loud, quiet = (sf.read(p, dtype="float32")[0] for p in paths)
    np.testing.assert_allclose(loud, (waves[0] / peaks[0]).numpy(), atol=1e-4)
    np.testing.assert_allclose(quiet, waves[1].numpy(), atol=1e-4)


# -- long signals in blocks ------------------------------------------------------------------------------------

DEMO_VOICE = Path(__file__).resolve().parents[1] / "data" / "demo" / "voices" / "kal"


def demo_speech(seconds: float, *, sample_rate: int = 16000) -> torch.Tensor:
    """The demo corpus's kal clips (in git, 16 kHz speech) joined end to end and cut to ``seconds``."""
    waves = [load_audio(f, sample_rate=sample_rate)[0] for f in sorted(DEMO_VOICE.glob("*.flac"))[:20]]
    wave = torch.cat(waves)[: int(seconds * sample_rate)]
    assert wave.numel() == int(seconds * sample_rate)
    return wave


@pytest.mark.parametrize("n_fft,hop,win", [(256, 64, 256), (1024, 128, 1024), (255, 50, 200)])
def test_centred_stft_frames_are_slices_of_the_whole_stft(n_fft, hop, win):
    wave = _noise(3001)
    whole = stft(wave, n_fft=n_fft, hop_length=hop, win_length=win)
    frames = whole.shape[-1]
    for start, end in [(0, 1), (0, 5), (3, 17), (frames - 4, frames), (0, frames), (frames - 1, frames)]:
        part = centred_stft_frames(wave, start=start, end=end, n_fft=n_fft, hop_length=hop, win_length=win)
        assert torch.equal(part, whole[:, start:end]), (start, end)


@settings(deadline=None, max_examples=200)
@given(n_frames=st.integers(1, 5000), margin=st.integers(0, 40), extra=st.integers(0, 300))
def test_frame_blocks_tile_the_frames_and_overlap_by_their_margins(n_frames, margin, extra):
    block_frames = 4 * max(margin, 1) + extra
    blocks = frame_blocks(n_frames, block_frames=block_frames, margin=margin)
    assert len(blocks) == max(1, -(-n_frames // block_frames))
    assert blocks[0].core_start == 0 and blocks[-1].core_end == n_frames
    sizes = [b.core_end - b.core_start for b in blocks]
    assert max(sizes) <= block_frames and max(sizes) - min(sizes) <= 1
    for left, right in zip(blocks, blocks[1:]):
        assert left.core_end == right.core_start
        assert left.end == left.core_end + margin and right.start == right.core_start - margin
    assert blocks[0].start == 0 and blocks[-1].end == n_frames


def test_frame_blocks_need_cores_longer_than_their_margins():
    with pytest.raises(ValueError, match="block_frames"):
        frame_blocks(1000, block_frames=63, margin=16)


def test_one_block_is_one_griffinlim_pass_exactly():
    wave = demo_speech(3.0)
    mag = stft(wave, n_fft=1024, hop_length=128).abs()
    phase = stft(wave.flip(0), n_fft=1024, hop_length=128)
    whole = griffinlim(mag, n_fft=1024, hop_length=128, n_iter=4, init=phase, length=wave.numel())
    blocked = griffinlim_blocks(lambda a, b: mag[:, a:b], n_frames=mag.shape[-1], length=wave.numel(),
                                n_fft=1024, hop_length=128, n_iter=4, init_of=lambda a, b: phase[:, a:b])
    assert torch.equal(blocked, whole)


def _seams_against_one_pass(wave, mag, init, *, margin):
    """Griffin-Lim of speech in blocks of 256 frames against one pass: (spectral convergence of each over all
    frames, of each over the frames within a margin of a seam, relative waveform difference)."""
    args = dict(n_fft=1024, hop_length=128)
    n_frames, length = mag.shape[-1], wave.numel()
    whole = griffinlim(mag, **args, n_iter=32, init=init, length=length)
    asked = []

    def magnitude_of(start, end):
        asked.append((start, end))
        return mag[:, start:end]

    blocked = griffinlim_blocks(magnitude_of, n_frames=n_frames, length=length, **args, n_iter=32,
                                init_of=lambda a, b: init[:, a:b], block_frames=256, margin=margin)
    blocks = frame_blocks(n_frames, block_frames=256, margin=margin)
    assert asked == [(b.start, b.end) for b in blocks] and len(blocks) > 5   # never the whole spectrogram
    seams = torch.tensor([f for b in blocks[1:] for f in range(b.core_start - margin, b.core_start + margin)])

    def sc(out, frames=slice(None)):
        return float(spectral_convergence(reference=mag[:, frames], estimate=stft(out, **args).abs()[:, frames]))

    return (sc(whole), sc(blocked)), (sc(whole, seams), sc(blocked, seams)), \
        float(torch.linalg.norm(blocked - whole) / torch.linalg.norm(whole))


@pytest.mark.parametrize("init", ["source", "random"])
def test_blocks_join_without_seams_on_speech(init):
    """The oracle is one Griffin-Lim pass over the whole signal. With the default margin (8 windows), the blocks
    give its waveform to within 1e-4 (measured: 3e-6) and its consistency, at the seams and overall; with a margin
    of one window (too little context), the seams show, so the comparison can fail."""
    wave = demo_speech(20.0)
    mag = stft(wave, n_fft=1024, hop_length=128).abs()
    if init == "source":   # what convert starts from: the input's phase, under a magnitude that differs from it
        mag = mag * (1 + 0.3 * torch.rand(mag.shape, generator=torch.Generator().manual_seed(1)))
        start = stft(wave, n_fft=1024, hop_length=128)
    else:
        phase = torch.rand(mag.shape, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
        start = torch.polar(torch.ones_like(phase), phase)
    _, margin = block_size(n_fft=1024, hop_length=128)
    assert margin == 64
    (whole, blocked), (whole_seams, blocked_seams), difference = _seams_against_one_pass(wave, mag, start,
                                                                                         margin=margin)
    assert difference < 1e-4
    assert blocked == pytest.approx(whole, rel=1e-3) and blocked_seams == pytest.approx(whole_seams, rel=1e-3)
    _, (whole_seams, thin_seams), difference = _seams_against_one_pass(wave, mag, start, margin=8)
    assert thin_seams > whole_seams * 1.03 and difference > 0.01


def test_spectral_convergence_in_blocks_is_the_whole_signal_s(monkeypatch):
    monkeypatch.setattr(inverse, "BLOCK_VALUES", 128 * 256)               # blocks of 128 frames at n_fft 256
    wave = demo_speech(5.0, sample_rate=8000)
    noisy = wave + 0.05 * _noise(wave.numel())
    reference = stft(wave, n_fft=256, hop_length=64).abs()
    asked = []

    def reference_of(start, end):
        asked.append(end - start)
        return reference[:, start:end]

    blocked = spectral_convergence_blocks(noisy, reference_of, n_frames=reference.shape[-1], n_fft=256, hop_length=64)
    whole = spectral_convergence(reference=reference.double(), estimate=stft(noisy.double(), n_fft=256,
                                                                             hop_length=64).abs())
    assert blocked == pytest.approx(float(whole), rel=1e-5)
    assert len(asked) == 5 and max(asked) <= 128


def test_invert_logmel_in_one_block_is_one_griffinlim_pass_from_the_given_phase():
    params = AudioParams(sample_rate=16000, n_fft=1024, hop_length=128, n_mels=80)
    wave = demo_speech(3.0)
    inverter = MelInverter(params)
    logmel = LogMel(params)(wave)
    inversion = invert_logmel(logmel, inverter=inverter, length=wave.numel(), n_iter=4, phase_from=wave)
    want = griffinlim(inverter.magnitude(logmel), n_fft=1024, hop_length=128, n_iter=4,
                      init=stft(wave, n_fft=1024, hop_length=128), length=wave.numel())
    assert torch.equal(inversion.wave, want)
    assert torch.equal(inversion.magnitude_of(0, logmel.shape[-1]), inverter.magnitude(logmel))


def test_reconstruct_of_a_recording_above_full_scale_scales_it_down_instead_of_clipping(tmp_path):
    """A float recording peaking at 3 (valid input) had its rebuilt waveform clipped at 1 by save_audio, flat tops
    that the printed spectral convergence knew nothing of; it is scaled down as a whole, as convert's output is."""
    import soundfile as sf

    params = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=40)
    loud = demo_speech(3.0, sample_rate=8000)
    sf.write(tmp_path / "loud.wav", (loud / loud.abs().max() * 3.0).numpy(), 8000, subtype="FLOAT")
    reconstruct_file(tmp_path / "loud.wav", tmp_path / "out.wav", params=params, n_iter=8)
    out = np.abs(sf.read(tmp_path / "out.wav")[0])
    assert out.max() > 0.999 and np.sum(out > 1 - 2 / 32768) <= 2  # one peak at full scale, no run of them


def test_reconstruct_of_a_long_file_in_blocks_is_as_good_as_one_pass(tmp_path, monkeypatch):
    params = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=40)
    src = tmp_path / "speech.wav"
    save_audio(src, demo_speech(12.0, sample_rate=8000), sample_rate=8000)
    monkeypatch.setattr(inverse, "BLOCK_VALUES", 1 << 40)
    one = reconstruct_file(src, tmp_path / "one.wav", params=params, n_iter=16)
    monkeypatch.setattr(inverse, "BLOCK_VALUES", 128 * 256)               # 12 blocks
    blocked = reconstruct_file(src, tmp_path / "blocked.wav", params=params, n_iter=16)
    assert blocked.spectral_convergence < 1.05 * one.spectral_convergence
    # The figure is the whole output's against the whole input's magnitude (float64 oracle).
    out, _ = load_audio(tmp_path / "blocked.wav")
    wave, _ = load_audio(src)
    oracle = spectral_convergence(reference=stft(wave.double(), n_fft=256, hop_length=64).abs(),
                                  estimate=stft(out.double(), n_fft=256, hop_length=64).abs())
    assert blocked.spectral_convergence == pytest.approx(float(oracle), rel=1e-3)


@pytest.mark.filterwarnings("ignore:The length of signal is shorter than the length parameter")
@pytest.mark.parametrize("n_fft,hop", [(256, 64), (255, 50)])
def test_istft_frames_pads_to_a_length_beyond_its_frames_as_torch_istft(n_fft, hop):
    """Asked for more samples than its frames reach, the inverse appends zeros (torch.istft's ``length``), as
    Griffin-Lim needs when the hop exceeds half a window."""
    wave = _noise(3000)
    window = padded_window(n_fft=n_fft, win_length=n_fft)
    spec = stft_frames(wave[None], n_fft=n_fft, hop_length=hop, window=window)
    reach = (spec.shape[1] - 1) * hop + n_fft - n_fft // 2   # samples the frames cover after the left padding
    length = reach + 37
    ours = istft_frames(spec, n_fft=n_fft, hop_length=hop, window=window, length=length)[0]
    assert ours.shape == (length,)
    ref = torch.istft(spec[0].T, n_fft=n_fft, hop_length=hop, window=window, center=True, length=length)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours[:wave.numel()], wave, atol=1e-4, rtol=1e-4)
    assert (ours[reach:] == 0).all()


def test_istft_frames_stays_finite_where_no_window_covers_a_sample():
    """With the hop a whole window (allowed: hop <= win_length), every hop-th sample falls on the periodic Hann
    window's zero: the least-squares inverse there is 0, not 0/0."""
    wave = _noise(4096)
    window = padded_window(n_fft=256, win_length=256)
    spec = stft_frames(wave[None], n_fft=256, hop_length=256, window=window)
    back = istft_frames(spec, n_fft=256, hop_length=256, window=window, length=wave.numel())[0]
    assert torch.isfinite(back).all()
    offset = (torch.arange(wave.numel()) - 128) % 256   # frame t's zero is its first sample, t * 256 - 128
    assert (back[offset == 0] == 0).all()
    well_covered = (offset >= 16) & (offset <= 240)     # away from the zero, where float rounding is not amplified
    torch.testing.assert_close(back[well_covered], wave[well_covered], atol=1e-4, rtol=1e-4)

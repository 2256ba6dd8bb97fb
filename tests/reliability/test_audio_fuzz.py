"""Fuzzing the audio front end at the level of arrays: any finite signal of any length (0 included) at any
supported sample rate, in any channel count and split into blocks anywhere, either becomes a valid spectrogram
(finite, the right shape and dtype, in [-1, 1]) or raises a one-line AudioError; never any other exception.

The functions fuzzed are the ones prep and convert run on every decoded file: :func:`mono_blocks` (checks,
mix-down, streaming resampler), :func:`clip_logmel` and :func:`chunk_logmel` (prep), and :class:`LogMel` on the
joined waveform (convert, reconstruct, evaluate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from specgan.audio.features import LogMel
from specgan.audio.io import SOURCE_RATES, mono_blocks, peak_amplitude, resample_whole
from specgan.audio.params import AudioParams
from specgan.data.prep import ClipLogMel, chunk_logmel, clip_logmel, clip_logmels
from specgan.errors import AudioError

# Target parameters: the defaults, and small ones under which even short signals give whole chunks.
PARAMS = [
    AudioParams(),
    AudioParams(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40, frames=16),
    AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=8, pad_short=True),
    AudioParams(sample_rate=48000, n_fft=2048, hop_length=480, win_length=1920, n_mels=64, f_min=50.0, frames=8,
                trim_silence=False, min_active=0.0),
    # An odd n_fft: a frame reads one sample more right of its centre than left.
    AudioParams(sample_rate=8000, n_fft=255, hop_length=50, win_length=200, n_mels=32, frames=8),
]
LOGMELS = [LogMel(p) for p in PARAMS]


def shortest(params: AudioParams) -> int:
    """The most samples that are still too short for a centred STFT (reflection needs more): for an even n_fft,
    half a window; for an odd one, one sample more."""
    return params.n_fft // 2 + params.n_fft % 2
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])


@st.composite
def signals(draw) -> tuple[np.ndarray, int, list[np.ndarray]]:
    """``(signal, source_rate, blocks)``: a finite float array ``(samples,)`` or ``(samples, channels)`` at a
    supported rate, and the same signal cut into blocks at random places."""
    length = draw(st.integers(0, 40) | st.sampled_from([127, 128, 129, 511, 512, 513]) | st.integers(1000, 8000))
    channels = draw(st.sampled_from([None, 1, 2, 3]))
    shape = (length,) if channels is None else (length, channels)
    wide = st.floats(allow_nan=False, allow_infinity=False)                       # any finite float64
    audio = st.floats(-1.5, 1.5, allow_nan=False, width=32)                       # audio-like float32
    dtype, elements = draw(st.sampled_from([(np.float32, audio), (np.float64, audio), (np.float64, wide)]))
    signal = draw(arrays(dtype, shape, elements=elements))
    if length and draw(st.integers(0, 3)):  # mostly a loud sine under the drawn values, so that not all is silence
        t = np.arange(length) / 4.0
        signal = signal * 0.1 + (0.5 * np.sin(t)).reshape((length,) + (1,) * (signal.ndim - 1))
    rate = draw(st.integers(*SOURCE_RATES) | st.sampled_from([8000, 16000, 22050, 44100, 48000, 192000]))
    cuts = sorted(draw(st.lists(st.integers(0, length), max_size=4)))
    return signal, rate, np.split(signal, cuts)


def check_message(error: AudioError) -> None:
    message = str(error)
    assert message and "\n" not in message
    event(f"AudioError: {message.split(' (')[0].split(':')[0].split(' reach')[0]}")


@FUZZ
@given(data=signals(), which=st.integers(0, len(PARAMS) - 1))
def test_prep_front_end_gives_valid_chunks_or_an_audio_error(data, which):
    signal, rate, blocks = data
    params, logmel = PARAMS[which], LOGMELS[which]
    try:
        clip = clip_logmel(mono_blocks(blocks, source_rate=rate, sample_rate=params.sample_rate), logmel=logmel)
    except AudioError as e:
        check_message(e)
        return
    assert clip.spec.dtype == torch.float16 and clip.frame_db.dtype == torch.float32
    assert clip.spec.shape == (params.n_mels, 1 + clip.samples // params.hop_length)
    assert clip.frame_db.shape == (clip.spec.shape[1],)
    assert torch.isfinite(clip.spec).all() and torch.isfinite(clip.frame_db).all()
    assert clip.spec.abs().max() <= 1
    assert 0 < clip.peak <= 200  # inputs above 100 are refused; resampling may overshoot a little
    try:
        chunks, starts = chunk_logmel(clip, params=params)
    except AudioError as e:
        check_message(e)
        return
    assert chunks.dtype == np.float16 and chunks.shape[1:] == (params.n_mels, params.frames) and len(chunks) > 0
    assert np.isfinite(chunks).all() and np.abs(chunks).max() <= 1
    assert starts.dtype == np.int64 and starts.shape == (len(chunks),)
    assert (starts % params.hop_length == 0).all() and (starts >= 0).all()
    # Positions are on the untrimmed timeline: every chunk starts inside the clip, and ends inside it too, except
    # the one padded chunk of a clip shorter than a chunk after trimming (pad_short), whose padding is -1.
    first_frames = starts // params.hop_length
    assert (first_frames < clip.spec.shape[1]).all()
    ends_inside = (first_frames + params.frames <= clip.spec.shape[1]).all()
    assert ends_inside or (params.pad_short and len(chunks) == 1 and (chunks[0][:, -1] == -1).all())
    event("chunks")


@FUZZ
@given(data=signals(), which=st.integers(0, len(PARAMS) - 1))
def test_convert_front_end_gives_a_valid_log_mel_or_an_audio_error(data, which):
    signal, rate, blocks = data
    params, logmel = PARAMS[which], LOGMELS[which]
    try:
        pieces = list(mono_blocks(blocks, source_rate=rate, sample_rate=params.sample_rate))
        wave = torch.from_numpy(np.concatenate(pieces)) if pieces else torch.zeros(0)
        spec = logmel(wave)
    except AudioError as e:
        check_message(e)
        return
    assert spec.dtype == torch.float32 and spec.shape == (params.n_mels, 1 + wave.numel() // params.hop_length)
    assert torch.isfinite(spec).all() and spec.abs().max() <= 1


@FUZZ
@given(data=signals())
def test_the_streamed_resampler_equals_resampling_whole(data):
    signal, rate, blocks = data
    try:
        streamed = list(mono_blocks(blocks, source_rate=rate, sample_rate=22050))
        whole = list(mono_blocks([signal], source_rate=rate, sample_rate=22050))
    except AudioError as e:
        check_message(e)
        return
    joined = np.concatenate(streamed) if streamed else np.zeros(0, np.float32)
    assert joined.dtype == np.float32 and np.isfinite(joined).all()
    np.testing.assert_array_equal(joined, np.concatenate(whole) if whole else np.zeros(0, np.float32))


@settings(max_examples=60, deadline=None)
@given(samples=st.integers(0, 5000) | st.sampled_from([100, 128, 129, 6400]),
       cuts=st.lists(st.integers(0, 5000), max_size=6), which=st.integers(0, len(PARAMS) - 1))
def test_streamed_mel_power_equals_the_whole_signals(samples, cuts, which):
    logmel, params = LOGMELS[which], PARAMS[which]
    wave = torch.from_numpy(np.random.default_rng(samples).standard_normal(samples).astype(np.float32))
    blocks = np.split(wave.numpy(), sorted(c for c in cuts if c <= samples))
    if samples <= shortest(params):
        with pytest.raises(ValueError):
            list(logmel.stream_mel_power(blocks))
        with pytest.raises(AudioError):
            logmel.mel_power(wave)
        return
    streamed = torch.cat(list(logmel.stream_mel_power(blocks)), dim=-1)
    whole = logmel.mel_power(wave)
    assert streamed.shape == whole.shape == (params.n_mels, 1 + samples // params.hop_length)
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-6 * float(whole.max()))


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 3000) | st.sampled_from([1, 2, 127, 128]), min_size=1, max_size=5),
       rate=st.integers(*SOURCE_RATES) | st.sampled_from([8000, 16000, 44100, 48000]),
       target=st.sampled_from([8000, 16000, 22050]))
def test_resampling_a_group_equals_resampling_each_alone(lengths, rate, target):
    """prep resamples short files of one rate together (one filter design per group): each result must be the
    file's own resampling, bit for bit."""
    rng = np.random.default_rng(sum(lengths) + rate)
    signals = [rng.uniform(-1, 1, n).astype(np.float32) for n in lengths]
    grouped = resample_whole(signals, source_rate=rate, sample_rate=target)
    for signal, result in zip(signals, grouped, strict=True):
        alone = list(mono_blocks([signal], source_rate=rate, sample_rate=target)) if len(signal) else []
        np.testing.assert_array_equal(result, np.concatenate(alone) if alone else np.zeros(0, np.float32))


@settings(max_examples=60, deadline=None)
@given(samples=st.integers(0, 6000), which=st.integers(0, len(PARAMS) - 1))
def test_centred_frames_cut_from_the_signal_equal_padding_it_first(samples, which):
    """mel_power frames a centred STFT without copying the padded signal; the padded copy (still used for inputs
    that need gradients) must give the same numbers."""
    logmel, params = LOGMELS[which], PARAMS[which]
    wave = torch.from_numpy(np.random.default_rng(samples).standard_normal(samples).astype(np.float32))
    if samples <= shortest(params):
        with pytest.raises(AudioError):
            logmel.mel_power(wave)
        return
    padded_first = logmel.mel_power(wave.clone().requires_grad_()).detach()
    assert torch.equal(logmel.mel_power(wave), padded_first)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 5000) | st.sampled_from([128, 129, 256, 257, 1024, 1025]), min_size=1,
                        max_size=6),
       which=st.integers(0, len(PARAMS) - 1))
def test_mel_power_of_many_signals_equals_each_alone(lengths, which):
    """prep computes the log-mel of a batch of short files with one FFT: each signal's columns must be its own
    mel power, bit for bit (including signals short enough that their frames are cut from a padded copy)."""
    logmel, params = LOGMELS[which], PARAMS[which]
    rng = np.random.default_rng(sum(lengths) + which)
    waves = [torch.from_numpy(rng.standard_normal(n).astype(np.float32)) for n in lengths]
    if any(n <= shortest(params) for n in lengths):
        with pytest.raises(AudioError, match="too short"):
            logmel.mel_power_many(waves)
        waves = [w for w in waves if w.numel() > shortest(params)]
        if not waves:
            return
    mel, frames = logmel.mel_power_many(waves)
    assert frames == [1 + w.numel() // params.hop_length for w in waves]
    assert mel.shape == (params.n_mels, sum(frames))
    for wave, piece in zip(waves, torch.split(mel, frames, dim=1), strict=True):
        assert torch.equal(piece, logmel.mel_power(wave))


@settings(max_examples=40, deadline=None)
@given(kinds=st.lists(st.sampled_from(["speech", "empty", "silent", "short", "long"]), min_size=1, max_size=6),
       which=st.integers(0, len(PARAMS) - 1))
def test_log_mels_of_many_clips_equal_each_alone(kinds, which):
    """clip_logmels (prep's batched path) gives each clip what clip_logmel gives it alone, or the same error."""
    logmel, params = LOGMELS[which], PARAMS[which]
    rng = np.random.default_rng(len(kinds) + which)
    sizes = {"speech": 3000, "empty": 0, "silent": 4000, "short": shortest(params), "long": 200_000}
    waves = [(rng.standard_normal(sizes[k]) * (1e-6 if k == "silent" else 0.3)).astype(np.float32) for k in kinds]
    for wave, many in zip(waves, clip_logmels(waves, logmel=logmel), strict=True):
        try:
            alone = clip_logmel([wave], logmel=logmel)
        except AudioError as e:
            assert isinstance(many, AudioError) and str(many) == str(e)
            continue
        assert isinstance(many, ClipLogMel) and (many.samples, many.peak) == (alone.samples, alone.peak)
        assert torch.equal(many.spec, alone.spec) and torch.equal(many.frame_db, alone.frame_db)


@settings(max_examples=100, deadline=None)
@given(signal=arrays(st.sampled_from([np.float32, np.float64]), st.tuples(st.integers(0, 300), st.integers(1, 3)),
                     elements=st.floats(width=32)),
       step=st.sampled_from([1, 2, -1]))
def test_peak_amplitude_is_numpys_largest_absolute_sample(signal, step):
    """The peak from the minimum and maximum against numpy's abs-max, on any shape and strides, NaN and infinities included."""
    signal = signal[::step]
    expected = float(np.abs(signal).max()) if signal.size else 0.0
    for got in (peak_amplitude(signal), peak_amplitude(torch.from_numpy(signal.copy()))):
        assert (math.isnan(got) and math.isnan(expected)) or got == expected

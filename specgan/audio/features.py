"""Waveform → normalised log-mel spectrogram.

Pure functions with torchaudio/librosa parameter names, plus :class:`LogMel`, a module that holds the mel
filterbank as a buffer so it moves with ``.to(device)``.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from specgan.audio.params import AudioParams
from specgan.audio.stft import centred_padding, centred_segment
from specgan.errors import AudioError, SpecganWarning

#: Floor for mel power before the logarithm (librosa's ``amin``): -100 dB.
AMIN = 1e-10


#: The Slaney mel scale (librosa's default, ``htk=False``): linear below 1 kHz at 3 mels per 200 Hz, logarithmic
#: above, 27 mels per factor of 6.4.
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: Tensor) -> Tensor:
    """Frequencies (Hz) → Slaney mels, as ``librosa.hz_to_mel(htk=False)``."""
    linear = hz / _SLANEY_HZ_PER_MEL
    above = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL + torch.log(hz.clamp_min(_SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) \
        / _SLANEY_LOG_STEP
    return torch.where(hz >= _SLANEY_BREAK_HZ, above, linear)


def mel_to_hz(mels: Tensor) -> Tensor:
    """Slaney mels → frequencies (Hz), the inverse of :func:`hz_to_mel` (``librosa.mel_to_hz(htk=False)``)."""
    break_mel = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
    above = _SLANEY_BREAK_HZ * torch.exp(_SLANEY_LOG_STEP * (mels.clamp_min(break_mel) - break_mel))
    return torch.where(mels >= break_mel, above, mels * _SLANEY_HZ_PER_MEL)


def mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """Slaney-scale, slaney-normalised triangular filters, as ``librosa.filters.mel`` builds them by default.

    Built here in float64 rather than by ``torchaudio.functional.melscale_fbanks``, which places the FFT bins at
    ``linspace(0, sample_rate // 2, n_fft // 2 + 1)``: right only for an even ``n_fft`` and an even rate. Bin ``k``
    is at ``k · sample_rate / n_fft`` Hz; with an odd ``n_fft`` torchaudio's filters were off by up to 2% of the
    largest weight (n_fft 1023), and at 11025 Hz by 0.2%. (librosa itself costs about a second to import.)

    Returns:
        float32 tensor of shape ``(n_fft // 2 + 1, n_mels)`` (torchaudio's layout; librosa's is the transpose).

    Warns (:class:`~specgan.errors.SpecganWarning`) when some filters fall between two FFT bins and stay empty:
    those mel bands are always at the floor.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (sample_rate / n_fft)                   # (F,)
    low, high = hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64)).tolist()
    edges = mel_to_hz(torch.linspace(low, high, n_mels + 2, dtype=torch.float64))                      # (M + 2,)
    widths = edges.diff()                                                                              # (M + 1,)
    ramps = edges[:, None] - bins[None, :]                                                             # (M + 2, F)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    fbank = torch.minimum(rising, falling).clamp_min(0.0)                                               # (M, F)
    fbank *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # slaney normalisation: each filter's area is the same
    empty = int((fbank.amax(dim=1) == 0).sum())
    if empty:
        warnings.warn(SpecganWarning(
            f"n_mels = {n_mels}: {empty} of the mel bands get no FFT bin at n_fft = {n_fft} and {sample_rate} Hz, so "
            f"they stay at the floor; use fewer mels or a larger n_fft"), stacklevel=2)
    return fbank.T.to(torch.float32).contiguous()


def power_to_db(power: Tensor, *, amin: float = AMIN) -> Tensor:
    """``10·log10(max(power, amin))`` with reference 1.0 (no per-signal reference, no top_db clipping)."""
    return torch.log10(power.clamp_min(amin)).mul_(10.0)


def db_to_power(db: Tensor) -> Tensor:
    """Inverse of :func:`power_to_db` (above ``amin``)."""
    return torch.pow(10.0, db / 10.0)


def normalize_db(db: Tensor, *, min_db: float, max_db: float) -> Tensor:
    """Map dB linearly from the fixed range ``[min_db, max_db]`` to ``[-1, 1]``, clipping outside it."""
    return ((db - min_db) / (max_db - min_db) * 2.0 - 1.0).clamp(-1.0, 1.0)


def denormalize_db(x: Tensor, *, min_db: float, max_db: float) -> Tensor:
    """Inverse of :func:`normalize_db` on ``[-1, 1]``."""
    return (x.clamp(-1.0, 1.0) + 1.0) / 2.0 * (max_db - min_db) + min_db


def stft_segments(blocks: Iterable[Tensor | np.ndarray], *, n_fft: int, hop_length: int) -> Iterator[Tensor]:
    """Re-cut a signal that arrives in blocks into segments for a streaming, centred STFT.

    Args:
        blocks: consecutive pieces ``(samples,)`` of one signal (any sizes, empty ones included).
        n_fft, hop_length: the STFT's frame size and hop, in samples.

    Yields:
        1-D float tensors. Their STFTs with ``center=False`` (frame ``t`` of a segment starts at sample
        ``t * hop_length`` of it), concatenated along time, are the STFT of the whole signal with ``center=True``
        and reflect padding: ``1 + samples // hop_length`` frames in all. A segment holds whole frames only; it
        overlaps the next one by ``n_fft - hop_length`` samples, and at most about ``n_fft`` samples are held
        back between blocks, so memory follows the block size, not the signal's length.

    Raises:
        ValueError: the signal has ``n_fft - n_fft // 2`` samples or fewer (reflect padding needs more).
    """
    half, reach = centred_padding(n_fft)  # frame t reads samples [t * hop - half, t * hop + reach)
    head: list[Tensor] = []   # the first samples, until there are enough to reflect the left edge
    buf: Tensor | None = None  # padded signal from the next frame's first sample on
    tail: Tensor | None = None  # the last reach + 1 samples, to reflect the right edge
    pieces = (t for t in (torch.as_tensor(b).reshape(-1) for b in blocks) if t.numel())
    for block, last in _with_last(pieces):
        tail = block[-(reach + 1):] if tail is None or block.numel() > reach else \
            torch.cat([tail, block])[-(reach + 1):]
        if buf is None:
            head.append(block)
            samples = sum(b.numel() for b in head)
            if samples <= reach:
                if not last:
                    continue
                raise ValueError(f"{samples} samples is too short for a centred STFT of n_fft={n_fft} "
                                 f"(needs more than {reach})")
            signal = torch.cat(head) if len(head) > 1 else head[0]
            if last:  # the whole signal at once: one segment, the same numbers as an STFT of it whole
                yield nn.functional.pad(signal[None, None], (half, reach), mode="reflect")[0, 0]
                return
            buf = torch.cat([signal[1:half + 1].flip(0), signal])
        else:
            buf = torch.cat([buf, block])
        if last:
            buf = torch.cat([buf, tail[:-1].flip(0)])
        segment, buf = _whole_frames(buf, n_fft=n_fft, hop_length=hop_length)
        if segment is not None:
            yield segment
    if buf is None and not head:
        raise ValueError(f"0 samples is too short for a centred STFT of n_fft={n_fft} (needs more than {reach})")


def _with_last(items: Iterator) -> Iterator[tuple[Tensor, bool]]:
    """``(item, is_last)`` for each item."""
    previous = next(items, None)
    for item in items:
        yield previous, False
        previous = item
    if previous is not None:
        yield previous, True


def _whole_frames(buf: Tensor, *, n_fft: int, hop_length: int) -> tuple[Tensor | None, Tensor]:
    """Split ``buf`` into ``(the samples of every whole frame in it, or None; what the next frame starts with)``."""
    if buf.numel() < n_fft:
        return None, buf
    frames = 1 + (buf.numel() - n_fft) // hop_length
    return buf[:(frames - 1) * hop_length + n_fft], buf[frames * hop_length:]


class LogMel(nn.Module):
    """Waveform ``(..., samples)`` → normalised log-mel ``(..., n_mels, frames)`` in [-1, 1].

    ``frames = 1 + samples // hop_length`` (centred, reflect-padded STFT with a periodic Hann window), power
    spectrogram, librosa's slaney mel filterbank (:func:`mel_filterbank`): the definition of
    ``torchaudio.transforms.MelSpectrogram`` and of librosa's ``melspectrogram``, and ``torch.stft``'s numbers. The
    frames are windowed and transformed with one real FFT, squared in place as ``re² + im²`` (the complex ``abs`` is
    the slowest way to a power on CPU), laid out ``(n_freqs, frames)`` and projected on the mel filters as a sparse
    matrix on the CPU: prep spends about 30% less time here than with ``torch.stft`` and a dense projection. Batched
    input gives the same result as each signal alone. The window and filterbank are buffers, so the module follows
    ``.to()``.
    """

    def __init__(self, params: AudioParams):
        super().__init__()
        self.params = params
        window = torch.hann_window(params.window_length)
        left = (params.n_fft - params.window_length) // 2  # torch.stft centres a shorter window in the frame
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("frame_window", nn.functional.pad(window, (left, params.n_fft - params.window_length
                                                                        - left)), persistent=False)  # (n_fft,)
        self.register_buffer("fbank_t", mel_filterbank(
            sample_rate=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels, f_min=params.f_min,
            f_max=params.mel_f_max).T.contiguous(), persistent=False)  # (n_mels, n_freqs)
        # The same filters as a sparse matrix, for the CPU: each frequency bin feeds at most two mel bands, so the
        # projection is about 2 * n_freqs products per frame instead of n_mels * n_freqs (a quarter of mel_power's
        # time saved).
        self.register_buffer("fbank_t_sparse", self.fbank_t.to_sparse().coalesce(), persistent=False)

    def mel_power(self, wave: Tensor, *, center: bool = True) -> Tensor:
        """Mel power spectrogram ``(..., n_mels, frames)``, before the logarithm.

        ``center=False`` takes frames from ``wave`` as it is, without padding (``1 + (samples - n_fft) //
        hop_length`` frames): the form :func:`stft_segments` prepares for a streamed signal.
        Raises AudioError when ``center`` and the signal is shorter than ``params.min_samples`` (too little to
        reflect).
        """
        p = self.params
        shape = wave.shape
        if center:
            self._check_length(shape[-1])
        x = wave.reshape(-1, shape[-1])
        if center and not x.requires_grad:
            frames = self._centered_frames(x)
        else:
            if center:
                x = nn.functional.pad(x[:, None], centred_padding(p.n_fft), mode="reflect")[:, 0]
            frames = x.unfold(-1, p.n_fft, p.hop_length) * self.frame_window     # (batch, frames, n_fft)
        mel = self._mel_of_frames(frames)                                          # (n_mels, batch * frames)
        batch, n_frames = x.shape[0], mel.shape[1] // x.shape[0]
        mel = mel.reshape(p.n_mels, batch, n_frames).transpose(0, 1)               # (batch, n_mels, frames)
        return mel.reshape(*shape[:-1], p.n_mels, n_frames) if batch == 1 else \
            mel.contiguous().reshape(*shape[:-1], p.n_mels, n_frames)

    def mel_power_many(self, waves: Sequence[Tensor]) -> tuple[Tensor, list[int]]:
        """Centred mel power of several 1-D signals of any lengths, side by side along time.

        Returns ``(mel, frames)``: ``mel`` is ``(n_mels, sum(frames))``, and its columns ``sum(frames[:i])`` to
        ``sum(frames[:i + 1])`` are :meth:`mel_power` of ``waves[i]`` alone, the same numbers. The frames of all
        the signals go through one FFT and one mel projection, which saves the per-call cost of many short clips
        (prep's usual files). Raises AudioError when a signal is shorter than ``params.min_samples``.
        """
        p = self.params
        for wave in waves:
            self._check_length(wave.shape[-1])
        counts = [1 + wave.shape[-1] // p.hop_length for wave in waves]
        frames = waves[0].new_empty(1, sum(counts), p.n_fft,
                                    dtype=torch.promote_types(waves[0].dtype, self.frame_window.dtype))
        start = 0
        for wave, count in zip(waves, counts):
            self._centered_frames(wave.reshape(1, -1), out=frames[:, start:start + count])
            start += count
        return self._mel_of_frames(frames), counts

    def _check_length(self, samples: int) -> None:
        """Raise AudioError when a signal of ``samples`` is too short for a centred STFT (nothing to reflect)."""
        p = self.params
        if samples < p.min_samples:
            raise AudioError(f"too short: {samples} samples at {p.sample_rate} Hz, less than half an FFT window "
                             f"(n_fft {p.n_fft})")

    def _mel_of_frames(self, frames: Tensor) -> Tensor:
        """Mel power ``(n_mels, batch * frames)`` of windowed frames ``(batch, frames, n_fft)``."""
        power = self._power_of_frames(frames)                                      # (n_freqs, batch * frames)
        if power.is_cpu:
            return torch.sparse.mm(self.fbank_t_sparse, power)
        return self.fbank_t @ power  # GPUs multiply dense matrices faster than sparse ones

    def _centered_frames(self, x: Tensor, *, out: Tensor | None = None) -> Tensor:
        """The windowed frames ``(batch, frames, n_fft)`` of a centred, reflect-padded STFT of ``x`` ``(batch,
        samples)``, written into ``out`` when given. Without copying the whole padded signal: only the few frames
        that reach into the padding are cut from small padded pieces of each end; the others are windowed straight
        from ``x``. The same numbers as padding first (which is done when ``x`` is too short for that)."""
        p = self.params
        half, reach = centred_padding(p.n_fft)  # frame t reads samples [t * hop - half, t * hop + reach) of x
        hop, n = p.hop_length, x.shape[-1]
        n_frames = 1 + n // hop
        window = self.frame_window
        if out is None:
            out = x.new_empty(x.shape[0], n_frames, p.n_fft, dtype=torch.promote_types(x.dtype, window.dtype))
        first = -(-half // hop)          # the first frame that starts inside x (t * hop >= half)
        last = (n - reach) // hop        # the last frame that ends inside x (t * hop + reach <= n)
        head_end = (first - 1) * hop + reach  # samples of x that the frames before ``first`` reach
        tail_start = (last + 1) * hop - half
        if last < first or head_end <= half or n - tail_start <= reach:
            padded = nn.functional.pad(x[:, None], (half, reach), mode="reflect")[:, 0]
            return torch.mul(padded.unfold(-1, p.n_fft, hop)[:, :n_frames], window, out=out)
        if first > 0:
            head = nn.functional.pad(x[:, None, :head_end], (half, 0), mode="reflect")[:, 0]
            torch.mul(head.unfold(-1, p.n_fft, hop), window, out=out[:, :first])
        inner = x[:, first * hop - half:last * hop + reach].unfold(-1, p.n_fft, hop)
        torch.mul(inner, window, out=out[:, first:last + 1])
        if last + 1 < n_frames:
            tail = nn.functional.pad(x[:, None, tail_start:], (0, reach), mode="reflect")[:, 0]
            torch.mul(tail.unfold(-1, p.n_fft, hop)[:, :n_frames - last - 1], window, out=out[:, last + 1:])
        return out

    def _power_of_frames(self, frames: Tensor) -> Tensor:
        """Power spectra ``re² + im²`` of windowed frames ``(batch, frames, n_fft)``, laid out
        ``(n_freqs, batch * frames)``: frame ``t`` of signal ``b`` is column ``b * frames + t``."""
        spec = torch.view_as_real(torch.fft.rfft(frames))                          # (batch, frames, n_freqs, 2)
        spec = spec.reshape(-1, spec.shape[-2], 2)                                 # (batch * frames, n_freqs, 2)
        if spec.requires_grad:
            squared = spec.square()
            return (squared[..., 0] + squared[..., 1]).T
        squared = spec.square_()  # in place, then summed straight into the layout the mel product wants
        return torch.add(squared[..., 0].T, squared[..., 1].T, out=spec.new_empty(spec.shape[1], spec.shape[0]))

    def stream_mel_power(self, blocks: Iterable[Tensor | np.ndarray]) -> Iterator[Tensor]:
        """Mel power of a signal that arrives in blocks ``(samples,)``: pieces ``(n_mels, frames_i)`` that
        concatenate to :meth:`mel_power` of the whole signal (see :func:`stft_segments`, which raises ValueError
        for a signal shorter than ``params.min_samples``)."""
        pieces = (t for t in (torch.as_tensor(b).reshape(-1) for b in blocks) if t.numel())
        ahead = [t for t in (next(pieces, None),) if t is not None]
        if ahead:
            ahead += [t for t in (next(pieces, None),) if t is not None]
        if len(ahead) == 1 and ahead[0].numel() >= self.params.min_samples:
            # The whole signal in one block (prep's usual case): centred frames straight from it, without the
            # padded copy stft_segments would make. The same numbers.
            yield self.mel_power(ahead[0])
            return
        for segment in stft_segments(itertools.chain(ahead, pieces), n_fft=self.params.n_fft,
                                     hop_length=self.params.hop_length):
            yield self.mel_power(segment, center=False)

    def in_blocks(self, wave: Tensor, *, block_frames: int) -> Tensor:
        """:meth:`forward` of a 1-D signal ``(samples,)``, taken ``block_frames`` frames at a time from the samples
        each block reads (:func:`~specgan.audio.stft.centred_segment`), so that the frames and spectra of a long
        signal never exist whole. The same numbers as :meth:`forward`, up to float rounding. Raises AudioError
        when the signal is shorter than ``params.min_samples``."""
        p = self.params
        self._check_length(wave.shape[-1])
        n_frames = 1 + wave.shape[-1] // p.hop_length
        return self.normalize(torch.cat([
            self.mel_power(centred_segment(wave, start=start, end=min(start + block_frames, n_frames),
                                           n_fft=p.n_fft, hop_length=p.hop_length), center=False)
            for start in range(0, n_frames, block_frames)], dim=-1))

    def normalize(self, mel_power: Tensor) -> Tensor:
        """Mel power → normalised log-mel in [-1, 1] (the fixed dB range of ``params``)."""
        p = self.params  # normalize_db's arithmetic, in place on the new dB tensor
        return power_to_db(mel_power).sub_(p.min_db).div_(p.max_db - p.min_db).mul_(2.0).sub_(1.0).clamp_(-1.0, 1.0)

    def forward(self, wave: Tensor) -> Tensor:
        return self.normalize(self.mel_power(wave))

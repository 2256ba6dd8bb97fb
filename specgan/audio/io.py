"""Reading and writing audio files with soundfile (libsndfile: wav, flac, ogg, mp3, ...); a FLAC file read whole
is decoded by dr_flac (:mod:`specgan.audio.flac`, the same samples, faster), and prep decodes plain FLAC and
16-bit PCM WAV files from their bytes without libsndfile (:func:`decode_bytes`, :mod:`specgan.audio.wav`).

Files are decoded in blocks (:class:`AudioFile`), mixed down to mono and resampled with a streaming resampler
(:func:`mono_blocks`), so that a long file never has to be held whole: prep turns a 30-minute recording into
log-mel block by block. :func:`load_audio` joins the same blocks into one waveform for the commands that need it
whole (convert, reconstruct, evaluate). Every way a file can be unusable is an :class:`~specgan.errors.AudioError`
with a one-line reason.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
import soundfile as sf
import soxr
import torch

from specgan.atomic import atomic_path
from specgan.audio.flac import decode_flac, stream_info
from specgan.audio.unsized import PatchedFile, length_patches
from specgan.audio.wav import pcm16_samples, pcm16_wav, riff_data_chunk
from specgan.errors import AudioError, ConfigError, SpecganError, WriteError
from specgan.file_scan import FileScan, scan_files

#: File name suffixes that prep and convert look for (libsndfile's common formats).
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".bwf", ".w64", ".rf64", ".flac", ".ogg", ".oga", ".opus", ".mp3",
                            ".aiff", ".aif", ".aifc", ".au", ".snd", ".caf", ".sph", ".nist", ".voc"})
#: Output suffix → libsndfile format that :func:`save_audio` writes.
OUTPUT_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
#: The highest sample rate (Hz) of a format, where it is below what the commands accept: libvorbis takes up to
#: 200 kHz, and libsndfile crashed the process (a segmentation fault) writing Vorbis at 200001 Hz and above.
MAX_OUTPUT_RATES = {"OGG": 200_000}
#: Samples per call when writing a file (see :func:`_write_in_blocks`).
WRITE_BLOCK_SAMPLES = 1 << 16
#: Tries at an Ogg Vorbis file whose decoded peaks stay within [-1, 1] (see :func:`save_audio`).
LOSSY_TRIES = 8
#: A recording whose peak is below this amplitude (-80 dBFS) is silent: prep skips it, eval --pairs does not score it.
SILENCE_PEAK = 1e-4
#: Sample rates (Hz) accepted from a file; outside this a header is broken (a rate of 1 Hz would make
#: resampling to 22050 Hz multiply the samples 22050 times).
SOURCE_RATES = (1000, 768000)
#: Sample values beyond this magnitude (+40 dBFS) are not audio: a float file scaled like integers, or garbage.
#: Anything louder than full scale is clipped by the log-mel's dB range anyway; this bound also keeps the
#: power spectrum far from float32 overflow.
MAX_PEAK = 100.0
#: A file of up to this many samples at the output rate (47 s at 22050 Hz) is decoded and resampled in one piece,
#: which gives exactly the numbers of processing it whole.
WHOLE_SAMPLES = 1 << 20
#: A longer file streams in blocks of about this many samples at the output rate (3 s at 22050 Hz): decoding,
#: resampling and the STFT then hold a few MB at a time, however long the file is.
BLOCK_SAMPLES = 1 << 16
#: How the formats of :data:`AUDIO_SUFFIXES` begin (WAV/RF64/W64/BW64, AIFF, AU, FLAC, Ogg, MP3 with an ID3 tag,
#: CAF, NIST SPHERE, Creative VOC). A file starting otherwise (and not with an MPEG frame) is not handed to
#: libsndfile, whose MP3 probe would print resync notes on stderr and report random bytes as "not a regular file".
MAGIC = (b"RIFF", b"RIFX", b"RF64", b"riff", b"BW64", b"FORM", b".snd", b"dns.", b"fLaC", b"OggS", b"ID3", b"caff",
         b"NIST", b"Crea")


def audio_files(folder: str | os.PathLike) -> list[Path]:
    """Every audio file under ``folder`` (by suffix, see :data:`AUDIO_SUFFIXES`), recursively, sorted by path.

    Hidden files and folders are skipped. Symbolic links to folders are followed (a domain folder may be a link
    to where the recordings live), each folder once: a link back to a folder already searched, as in a link
    loop, is passed over.
    """
    return [Path(folder, relative) for relative in relative_audio_files(folder)]


def scan_audio_files(folder: str | os.PathLike, *, skip: str | os.PathLike | None = None) -> FileScan:
    """The audio files under ``folder`` (by suffix, :data:`AUDIO_SUFFIXES`) and what was passed over, leaving out
    the folder ``skip`` (prep's output, when it lies inside); see :func:`~specgan.file_scan.scan_files`."""
    return scan_files(folder, suffixes=AUDIO_SUFFIXES, skip=skip)


def relative_audio_files(folder: str | os.PathLike) -> list[str]:
    """:func:`audio_files` as paths relative to ``folder``, in the same order (see :func:`scan_audio_files`)."""
    return scan_audio_files(folder).files


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for binary reading, only if it is a regular file.

    The file is opened without blocking first, so that a named pipe called ``x.wav`` is reported instead of
    hanging ``open()`` forever. Raises AudioError naming ``path`` (cannot open: the system's reason, e.g.
    permission denied or a symbolic link loop; not a regular file).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise AudioError(f"{path}: cannot open ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AudioError(f"{path}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)  # unbuffered: its position is the descriptor's
    except BaseException:
        os.close(fd)
        raise


class AudioFile:
    """An audio file opened for decoding in blocks; a context manager.

    On entry the file is checked (regular, not empty, a known audio header, not a truncated WAV, a sample rate
    in :data:`SOURCE_RATES`); ``sample_rate`` (Hz), ``channels``, ``frames`` (as the header declares, or as it
    would have where a streaming writer left the length out: :mod:`specgan.audio.unsized`) and ``format``
    (libsndfile's name: "WAV", "FLAC", ...) are then set. Every problem is an AudioError naming the file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = path

    def __enter__(self) -> "AudioFile":
        self._raw = open_regular(self.path)
        try:
            self._check_header()
            self._raw.seek(0)
            fd = self._raw.fileno()
            patches = length_patches(fd)
            self._sf = sf.SoundFile(PatchedFile(fd, patches) if patches else fd, closefd=False)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
            self._raw.close()
            raise AudioError(f"{self.path}: not readable audio ({_short(e)})") from None
        except OSError as e:
            self._raw.close()
            raise AudioError(f"{self.path}: cannot read ({e.strerror or e})") from None
        except BaseException:
            self._raw.close()
            raise
        self.sample_rate, self.channels, self.frames = int(self._sf.samplerate), self._sf.channels, self._sf.frames
        self.format = self._sf.format
        if not SOURCE_RATES[0] <= self.sample_rate <= SOURCE_RATES[1]:
            self.__exit__()
            raise AudioError(f"{self.path}: unsupported sample rate {self.sample_rate} Hz (supported: "
                             f"{SOURCE_RATES[0]}-{SOURCE_RATES[1]} Hz)")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._sf.close()
        finally:
            self._raw.close()

    def _check_header(self) -> None:
        size = os.fstat(self._raw.fileno()).st_size
        if size == 0:
            raise AudioError(f"{self.path}: empty file (0 bytes)")
        head = self._raw.read(4)
        mpeg_frame = len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
        if not (head.startswith(MAGIC) or mpeg_frame):
            raise AudioError(f"{self.path}: not readable audio (no known audio header; starts with "
                             f"{head.hex(' ') or 'nothing'})")
        missing = riff_missing_bytes(self._raw)
        if missing:
            raise AudioError(f"{self.path}: truncated WAV file ({missing} bytes of audio data missing)")

    def blocks(self, *, block_frames: int) -> Iterator[np.ndarray]:
        """The decoded samples, float32 ``(frames, channels)`` in about [-1, 1], ``block_frames`` at a time.

        A FLAC file read in one block is decoded by dr_flac (:func:`~specgan.audio.flac.decode_flac`: the same
        samples, 1.6× as fast) when it decodes to the frames its header declares; otherwise, and for every other
        format, libsndfile decodes it."""
        if self.format == "FLAC" and 0 < self.frames < block_frames:
            whole = self._whole_flac()
            if whole is not None:
                yield whole
                return
        while True:
            try:
                block = self._sf.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError) as e:
                raise AudioError(f"{self.path}: not readable audio ({_short(e)})") from None
            except OSError as e:
                raise AudioError(f"{self.path}: cannot read ({e.strerror or e})") from None
            if not len(block):
                return
            yield block
            if len(block) < block_frames:
                return

    def _whole_flac(self) -> np.ndarray | None:
        """:func:`~specgan.audio.flac.decode_flac` of the file's bytes (read without moving libsndfile's
        position), or None."""
        fd = self._raw.fileno()
        try:
            data = os.pread(fd, os.fstat(fd).st_size, 0)
        except OSError:
            return None  # libsndfile's read then reports it
        return decode_flac(data, frames=self.frames, channels=self.channels)

    def mono_blocks(self, *, sample_rate: int | None,
                    resamplers: Resamplers | None = None) -> Iterator[np.ndarray]:
        """The file as checked float32 mono blocks ``(samples,)`` at ``sample_rate`` Hz (``None``: the file's
        rate), in one piece or :data:`BLOCK_SAMPLES` at a time (see :func:`block_frames_for` and
        :func:`mono_blocks`). Raises AudioError naming the file."""
        frames = block_frames_for(source_rate=self.sample_rate, sample_rate=sample_rate, channels=self.channels,
                                  frames=self.frames)
        try:
            yield from mono_blocks(self.blocks(block_frames=frames), source_rate=self.sample_rate,
                                   sample_rate=sample_rate, resamplers=resamplers)
        except AudioError as e:
            if str(e).startswith(f"{self.path}: "):
                raise
            raise AudioError(f"{self.path}: {e}") from None


#: FLAC bit depths that :func:`decode_bytes` decodes without libsndfile: those libsndfile reads, and that
#: ``tests/test_flac.py`` checks dr_flac against it on.
FLAC_BITS = (8, 16, 24)


def decode_bytes(data: bytes, *, sample_rate: int | None) -> tuple[np.ndarray, int] | None:
    """``(samples, source_rate)`` of a whole file's bytes, decoded without opening libsndfile: float32 ``(frames,
    channels)``, the same as :class:`AudioFile` gives in one block for that file.

    Two kinds of file: FLAC (:func:`~specgan.audio.flac.stream_info`, a STREAMINFO of :data:`FLAC_BITS` bits,
    decoded by dr_flac to exactly the frames and channels it declares) and 16-bit PCM WAV
    (:func:`~specgan.audio.wav.pcm16_wav`). Only when :class:`AudioFile` would read the file in one block anyway:
    a rate in :data:`SOURCE_RATES`, short enough at ``sample_rate`` for :func:`block_frames_for`. Otherwise None,
    and the caller opens the file with :class:`AudioFile`, whose checks and errors then decide.
    """
    flac = stream_info(data)
    if flac is not None:
        if flac.bits_per_sample not in FLAC_BITS:
            return None
        rate, channels, frames = flac.sample_rate, flac.channels, flac.frames
    else:
        wav = pcm16_wav(data)
        if wav is None:
            return None
        rate, channels, frames = wav.sample_rate, wav.channels, wav.frames
    if (frames <= 0 or not SOURCE_RATES[0] <= rate <= SOURCE_RATES[1]
            or block_frames_for(source_rate=rate, sample_rate=sample_rate, channels=channels,
                                frames=frames) <= frames):
        return None
    samples = decode_flac(data, frames=frames, channels=channels) if flac is not None else pcm16_samples(data, wav)
    return None if samples is None else (samples, rate)


def block_frames_for(*, source_rate: int, sample_rate: int | None, channels: int = 1, frames: int = 0) -> int:
    """Frames to decode at a time from a file of ``frames`` frames (as its header declares) at ``source_rate`` Hz.

    All of them when the file is at most :data:`WHOLE_SAMPLES` long at ``sample_rate`` (and at most 16 times that
    many decoded samples over all channels); otherwise about :data:`BLOCK_SAMPLES` samples' worth at
    ``sample_rate``, and at most ``16 * BLOCK_SAMPLES`` decoded samples over all ``channels`` (a 192 kHz 8-channel
    file), never fewer than 1024.
    """
    ratio = (sample_rate or source_rate) / source_rate
    if 0 < frames and frames * ratio <= WHOLE_SAMPLES and frames * channels <= 16 * WHOLE_SAMPLES:
        return frames + 1  # one read; the +1 makes the short read that ends the file come at once
    return int(max(min(BLOCK_SAMPLES / ratio, 16 * BLOCK_SAMPLES // max(channels, 1)), 1024))


class Resamplers:
    """soxr "HQ" streams by ``(source_rate, sample_rate)``, each reused for one signal after another.

    A new stream designs its filter, which costs about half as much as resampling a 3 s clip; resetting one
    (``clear``) costs less, so prep keeps one per rate pair and thread for the long files it streams and resets it
    between them (short files go through :func:`resample_whole`). The output is the same, bit for bit, as a new
    stream's. Not thread-safe: one per thread.
    """

    def __init__(self) -> None:
        self._streams: dict[tuple[int, int], soxr.ResampleStream] = {}

    def stream(self, *, source_rate: int, sample_rate: int) -> soxr.ResampleStream:
        """A stream from ``source_rate`` to ``sample_rate`` (Hz), in its initial state."""
        stream = self._streams.get((source_rate, sample_rate))
        if stream is None:
            stream = soxr.ResampleStream(source_rate, sample_rate, 1, dtype="float32", quality="HQ")
            self._streams[source_rate, sample_rate] = stream
        else:
            stream.clear()
        return stream


def resample_whole(signals: list[np.ndarray], *, source_rate: int, sample_rate: int) -> list[np.ndarray]:
    """Resample whole float32 mono signals ``(samples,)`` of one rate with soxr "HQ"; each result is the same, bit
    for bit, as :func:`mono_blocks` of that signal alone (one stream, flushed at its end).

    The signals go through one multi-channel ``soxr.resample`` call, zero-padded to the longest: soxr filters each
    channel on its own with the same filter, and the end of a signal is flushed with zeros anyway, so a channel's
    first ``output_length(n)`` samples are that signal's. The filter is designed once for the group instead of once
    per signal (about half the cost of resampling a 3 s clip). The padded signals are laid out channel by channel,
    so each result is a contiguous slice of soxr's output, and unlike a stream's reset the call releases the GIL.
    """
    lengths = [len(s) for s in signals]
    if not any(lengths):
        return [np.zeros(0, np.float32) for _ in signals]
    if len(signals) == 1:
        return [soxr.resample(signals[0], source_rate, sample_rate, quality="HQ")]
    padded = np.zeros((len(signals), max(lengths)), dtype=np.float32)  # (channels, samples): channel-major memory
    for i, signal in enumerate(signals):
        padded[i, :len(signal)] = signal
    out = soxr.resample(padded.T, source_rate, sample_rate, quality="HQ")  # (samples, channels), channel-major
    if len(out) != output_length(max(lengths), source_rate=source_rate, sample_rate=sample_rate):
        # libsoxr rounded otherwise than output_length: the padding's share cannot be cut off, so one at a time
        return [resample_whole([signal], source_rate=source_rate, sample_rate=sample_rate)[0] for signal in signals]
    return [out[:output_length(n, source_rate=source_rate, sample_rate=sample_rate), i]
            for i, n in enumerate(lengths)]


def output_length(samples: int, *, source_rate: int, sample_rate: int) -> int:
    """Samples that a whole soxr stream gives for ``samples`` input samples (libsoxr's own rounding, in double:
    ``(int64)(samples_in / io_ratio + .5)``)."""
    return int(samples / (source_rate / sample_rate) + 0.5)


def mono_blocks(blocks: Iterable[np.ndarray], *, source_rate: int, sample_rate: int | None,
                resamplers: Resamplers | None = None) -> Iterator[np.ndarray]:
    """Decoded blocks → checked float32 mono blocks at ``sample_rate``.

    Args:
        blocks: consecutive pieces of one signal, float arrays ``(frames, channels)`` or ``(frames,)`` at
            ``source_rate`` Hz.
        source_rate, sample_rate: in Hz; ``sample_rate=None`` keeps ``source_rate``.
        resamplers: where to take the resampler from (a new one when None).

    Yields:
        float32 arrays ``(samples,)``: channels averaged, then resampled with soxr "HQ" (librosa's default
        resampler, so ``librosa.load`` gives the same samples) as one stream. The blocks joined equal resampling
        the whole signal at once (bit for bit); their sizes follow the resampler, and some may be empty.

    Raises:
        AudioError (without a file name) for NaN or infinite samples, or samples beyond :data:`MAX_PEAK`.
    """
    stream = None
    if sample_rate is not None and sample_rate != source_rate:
        stream = (resamplers or Resamplers()).stream(source_rate=source_rate, sample_rate=sample_rate)
    for block, last in _mark_last(blocks):
        data = np.asarray(block)
        check_samples(data)  # before float32, where a finite 1e300 would turn into inf
        data = data.astype(np.float32, copy=False)
        if data.ndim == 2:
            data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        mono = np.ascontiguousarray(data)
        if stream is not None:
            mono = stream.resample_chunk(mono, last=last)
        yield np.ascontiguousarray(mono, dtype=np.float32)


def peak_amplitude(data: np.ndarray | torch.Tensor) -> float:
    """The largest absolute sample of float samples of any shape, 0 when there are none; NaN when one is NaN.
    Their minimum and maximum, without the temporary array of ``abs`` (twice as quick on a clip)."""
    if isinstance(data, torch.Tensor):
        if not data.numel():
            return 0.0
        low, high = torch.aminmax(data)
    else:
        data = np.asarray(data)
        if not data.size:
            return 0.0
        low, high = data.min(), data.max()
    return max(-float(low), float(high))  # a NaN makes both NaN


def check_samples(data: np.ndarray) -> None:
    """Raise AudioError unless every sample is finite and within ±:data:`MAX_PEAK`."""
    peak = peak_amplitude(data)  # a NaN or an infinity makes the peak one too
    if not math.isfinite(peak):
        raise AudioError("holds NaN or infinite samples")
    if peak > MAX_PEAK:
        raise AudioError(f"sample values reach {peak:.6g}, over {MAX_PEAK:g} (+40 dB above full scale): not "
                         f"audio scaled to [-1, 1]")


def _mark_last(items: Iterable) -> Iterator[tuple[object, bool]]:
    """``(item, is_last)`` for each item."""
    iterator = iter(items)
    try:
        previous = next(iterator)
    except StopIteration:
        return
    for item in iterator:
        yield previous, False
        previous = item
    yield previous, True


def load_audio(path: str | os.PathLike, *, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Read a file, mix it down to mono and resample it.

    Args:
        path: any file libsndfile reads.
        sample_rate: target rate in Hz; ``None`` keeps the file's rate.

    Returns:
        ``(waveform, source_rate)``: float32 tensor of shape ``(samples,)`` in [-1, 1] at ``sample_rate`` (or the
        file's rate), and the file's own rate in Hz.

    Raises:
        AudioError: the file is unreadable, not audio, empty, or holds NaN/inf or out-of-range samples.
    """
    with AudioFile(path) as audio:
        pieces = list(audio.mono_blocks(sample_rate=sample_rate))
    wave = pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if wave.size == 0 and audio.frames > 0:  # a sample or two at 48 kHz round to none at 22.05 kHz
        raise AudioError(f"{path}: too short: {audio.frames} sample(s) at {audio.sample_rate} Hz, none at "
                         f"{sample_rate} Hz")
    if wave.size == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    return torch.from_numpy(wave), audio.sample_rate


def riff_missing_bytes(file: BinaryIO) -> int:
    """How many bytes of a RIFF/WAVE file's ``data`` chunk are missing from the file (0 when complete or not WAV).

    ``file`` is a binary file open for reading. libsndfile reads a truncated WAV without complaint (it shortens the
    data to what is there), so a file cut off by a failed copy, or whose header claims more frames than it holds,
    would pass as a shorter clip; this catches it by comparing the declared chunk size with the bytes present.
    Streaming writers that leave the size at 0 or 0xFFFFFFFF are not flagged (see :mod:`specgan.audio.unsized`).
    """
    fd = file.fileno()
    found = riff_data_chunk(fd)
    if found is None or found[1] in (0, 0xFFFFFFFF):
        return 0
    at, declared = found
    return max(0, declared - (os.fstat(fd).st_size - (at + 8)))


def _short(error: Exception) -> str:
    """The gist of a libsndfile error, without the file name the caller already reports."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"^(Error opening .*?: |Error : )", "", text)
    return text.strip(" :.") or type(error).__name__


def refuse_existing(outputs: list[Path], *, overwrite: bool = False) -> None:
    """SpecganError naming the first of ``outputs`` that exists (and how many more do): an output file is replaced
    only with ``overwrite`` (``--overwrite``), so that no recording is replaced by mistake. A folder in an output's
    place is refused either way, before any work (writing there would fail only after it), as is a name too long
    for a file (:func:`check_output_name`)."""
    for path in outputs:
        check_output_name(path)
    folder = next((path for path in outputs if path.is_dir()), None)
    if folder is not None:
        raise SpecganError(f"{folder}: is a folder, where an output file is to be written; choose another output")
    if overwrite:
        return
    taken = [path for path in outputs if path.exists()]
    if taken:
        more = f" (and {len(taken) - 1} more output(s))" if len(taken) > 1 else ""
        raise SpecganError(f"{taken[0]}: exists{more}; use --overwrite to replace, or choose another output")


def save_audio(path: str | os.PathLike, wave: torch.Tensor | np.ndarray, *, sample_rate: int,
               comment: str | None = None) -> Path:
    """Write a mono waveform atomically (temporary file in the same folder, then rename).

    Args:
        wave: shape ``(samples,)``, float; a peak above 1 (full scale) scales the whole waveform down to 1, so
            that it is never clipped (Griffin-Lim's output can exceed the input's level).
        sample_rate: in Hz.
        comment: the file's comment tag (WAV's INFO ICMT, a FLAC or Vorbis COMMENT), read back by
            :func:`audio_comment`.

    The format follows the suffix (``.wav`` is written as 16-bit PCM, ``.flac`` as 16-bit FLAC, ``.ogg`` as Vorbis).
    A lossy encoder's output overshoots the peaks it was given (speech converted to a peak of 1.0 decoded at
    1.024, clipped by any player), so an ``.ogg`` file is decoded once written and, while its peak exceeds 1,
    written again from the waveform scaled down by that overshoot and a little more (an AudioError after
    :data:`LOSSY_TRIES` tries, which no signal measured needed: a 3 kHz square wave took three).
    """
    path = Path(path)
    data = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    data = data.astype(np.float32)
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > 1.0:
        data = data / np.float32(peak)
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: unsupported output format (use .wav, .flac or .ogg)")
    check_output_rate(path, sample_rate)
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    with atomic_path(path) as tmp:
        try:
            _write_in_blocks(tmp, data, sample_rate=sample_rate, format=fmt, subtype=subtype, comment=comment)
            if fmt == "OGG":
                _keep_vorbis_within_full_scale(tmp, data, sample_rate=sample_rate, name=path, comment=comment)
        except sf.LibsndfileError as e:
            raise _write_failure(path, tmp, e) from None
    return path


#: Free bytes below which a failed write is put down to a full disk (libsndfile says only "System error").
FULL_DISK_BYTES = 1 << 16


def _write_failure(path: Path, tmp: Path, error: sf.LibsndfileError) -> WriteError:
    """The one-line error for libsndfile's failure to write ``tmp`` (``path``'s temporary file, not yet removed):
    libsndfile reports an OSError as "System error" without its cause, so a disk left with next to no free space
    (the temporary file took it) is named as full, as :class:`~specgan.atomic.atomic_path` names it when Python
    writes. A training run catches the WriteError and saves its step before it stops."""
    try:
        stats = os.statvfs(tmp.parent)
        full = stats.f_bavail * stats.f_frsize < FULL_DISK_BYTES
    except OSError:
        full = False
    return WriteError(path, os.strerror(errno.ENOSPC) if full else f"libsndfile: {error.error_string.rstrip('.')}")


def audio_comment(path: str | os.PathLike) -> str | None:
    """The comment tag of an audio file (as :func:`save_audio` writes it), or None when it has none or cannot be
    read as audio."""
    try:
        with open(path, "rb") as raw, sf.SoundFile(raw) as file:
            return file.comment or None
    except (OSError, RuntimeError):  # (sf.LibsndfileError is a RuntimeError)
        return None


def silence_reason(peak: float) -> str | None:
    """Why a recording whose largest absolute sample is ``peak`` counts as silent (``"silent (peak -96 dBFS)"``),
    or None when it does not (see :data:`SILENCE_PEAK`)."""
    if peak < SILENCE_PEAK:
        return f"silent (peak {20 * math.log10(max(peak, 1e-12)):.0f} dBFS)"
    return None


#: The longest file name, in bytes, that common file systems hold (ext4, XFS, Btrfs; APFS and NTFS in characters).
MAX_NAME_BYTES = 255


def check_output_name(path: str | os.PathLike) -> None:
    """A one-line ConfigError when the name of the output ``path``, or of a folder in it, is longer than
    :data:`MAX_NAME_BYTES` (a long input's ``<stem>.to-DOMAIN.wav``): checking whether it exists had been an
    internal error ("File name too long"). Commands call it before they look at the output."""
    parts = Path(path).parts
    size, at = max(((len(os.fsencode(part)), i) for i, part in enumerate(parts)), default=(0, 0))
    if size > MAX_NAME_BYTES:
        what = "output file name" if at == len(parts) - 1 else "name of a folder in it"
        raise ConfigError(f"{path}: {what} too long ({size} bytes, at most {MAX_NAME_BYTES}); choose a shorter one "
                          f"with -o")


def check_output_rate(path: Path, sample_rate: int) -> None:
    """A one-line SpecganError when ``path``'s format cannot hold ``sample_rate`` Hz (see :data:`MAX_OUTPUT_RATES`);
    commands call it before their work, and :func:`save_audio` before it writes."""
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    limit = MAX_OUTPUT_RATES.get(fmt)
    if limit is not None and sample_rate > limit:
        raise SpecganError(f"{path}: an .{fmt.lower()} file holds at most {limit} Hz, not {sample_rate}; write .wav or "
                           f".flac, or choose a lower --sample-rate")


def _keep_vorbis_within_full_scale(tmp: Path, data: np.ndarray, *, sample_rate: int, name: Path,
                                   comment: str | None) -> None:
    """Decode the Vorbis file ``tmp`` made from ``data`` and, while its peak exceeds 1, write it again from ``data``
    scaled down (see :func:`save_audio`); an AudioError naming ``name`` after :data:`LOSSY_TRIES` files."""
    for attempt in range(1, LOSSY_TRIES + 1):
        with open(tmp, "rb") as file:  # by file object: libsndfile takes names as UTF-8 only (see below)
            decoded_peak = float(np.abs(sf.read(file, dtype="float32")[0]).max(initial=0.0))
        if decoded_peak <= 1.0:
            return
        if attempt == LOSSY_TRIES:
            raise AudioError(f"{name}: Vorbis still decodes this waveform to a peak of {decoded_peak:.3f} after "
                             f"{attempt} tries; write .wav or .flac instead")
        # The overshoot is not quite proportional to the level: ask for a little more headroom each time.
        data = data * np.float32((1.0 - 0.01 * attempt) / decoded_peak)
        _write_in_blocks(tmp, data, sample_rate=sample_rate, format="OGG", subtype="VORBIS", comment=comment)


def _write_in_blocks(path: Path, data: np.ndarray, *, sample_rate: int, format: str, subtype: str,
                     comment: str | None = None) -> None:
    """Write mono ``data`` to ``path`` in blocks of :data:`WRITE_BLOCK_SAMPLES`: libvorbis allocates its whole
    input on the stack, so one write of about 2.1M samples or more (about 48 s at 44.1 kHz) crashed the process
    with a segmentation fault (libsndfile/libsndfile#1095, bastibe/python-soundfile#233)."""
    # Through a file descriptor: soundfile encodes a name as strict UTF-8, and a file name that is not (legal on
    # Linux, kept by Python as surrogate escapes) had been an internal error after all the work was done.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with sf.SoundFile(fd, "w", samplerate=sample_rate, channels=1, format=format, subtype=subtype,
                          closefd=False) as file:
            if comment:
                file.comment = comment  # (before the samples: WAV puts it in the header)
            for start in range(0, len(data), WRITE_BLOCK_SAMPLES):
                file.write(data[start:start + WRITE_BLOCK_SAMPLES])
    finally:
        os.close(fd)

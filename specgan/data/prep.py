"""``specgan prep``: a folder of recordings → a dataset of fixed-size normalised log-mel chunks.

Each immediate sub-folder of the source is a domain (label); files directly in it form one domain named after
the source folder. Files are processed in parallel threads; unchanged files (same content hash, same audio
parameters) are re-used from the existing dataset instead of being processed again. Bad files (unreadable, not
audio, truncated, non-finite, silent, too short) are skipped and reported with a reason; they never abort the run
or enter the dataset. A file is decoded, resampled and turned into log-mel block by block, so a long recording
needs memory for its spectrogram, not for its waveform. One prep at a time may write a dataset folder (a lock),
and the dataset is committed only at the end, so an interrupted or failed run leaves the previous one intact.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import re
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from specgan.audio.chunks import window_starts
from specgan.audio.features import LogMel, power_to_db
from specgan.audio.io import (AUDIO_SUFFIXES, SILENCE_PEAK, AudioFile, Resamplers, block_frames_for,
                              decode_bytes, mono_blocks, open_regular, peak_amplitude, resample_whole,
                              scan_audio_files, silence_reason)
from specgan.audio.params import AudioParams, resolved_values
from specgan.data.dataset_dir import (FEATURES_VERSION, GENERATION_FILE, PreppedDataset, check_values_in_range,
                                     domains_table, open_dataset, read_manifest, remove_orphans, write_dataset)
from specgan.data.idx import idx_files_in
from specgan.errors import AudioError, DatasetError, InterruptedWithWorkKept
from specgan.file_scan import FileScan
from specgan.folder_lock import FolderLock
from specgan.folders import outermost_missing
from specgan.recipe import as_written, to_mapping

@dataclass(frozen=True)
class SourceFile:
    path: Path
    relpath: str  # posix path relative to the source folder, as stored in the manifest (see printable)
    domain: str


@dataclass
class ChunkedFile:
    """What prep keeps of one good file."""

    chunks: np.ndarray  # float16 (n, n_mels, frames)
    starts: np.ndarray  # int64 (n,), first sample of each chunk in the resampled, untrimmed file
    seconds: float      # duration after resampling, before trimming
    source_rate: int


@dataclass
class ClipLogMel:
    """A clip's normalised log-mel and the loudness of each frame, as :func:`clip_logmel` computes them."""

    spec: torch.Tensor      # float16 (n_mels, frames), normalised log-mel in [-1, 1]
    frame_db: torch.Tensor  # float32 (frames,), the frame's mel power averaged over bands, in dB
    samples: int            # length of the clip at params.sample_rate
    peak: float             # largest absolute sample


@dataclass
class PrepReport:
    """What a prep run did. Every file found is in exactly one of: processed (decoded this run and in the
    dataset), reused (unchanged, copied from the previous dataset), skipped (with its reason)."""

    out: Path
    manifest: dict
    found: int = 0
    processed: int = 0
    reused: int = 0
    up_to_date: bool = False
    skipped: list[dict] = field(default_factory=list)
    #: Sources of the previous dataset that this one no longer holds (deleted, or left out by --domains), and the
    #: domains that went with them.
    removed: list[str] = field(default_factory=list)
    removed_domains: list[str] = field(default_factory=list)
    #: What discovery passed over (see :func:`discover`), for the user.
    notes: list[str] = field(default_factory=list)
    #: Files not reached before an interruption (see :class:`~specgan.errors.InterruptedWithWorkKept`): left out of the
    #: dataset, which records their number as ``unfinished``; the next prep processes them.
    unfinished: int = 0


def discover(src: Path, *, domains: tuple[str, ...] | None = None, domain_pattern: str | None = None,
             notes: list[str] | None = None, skip: Path | None = None) -> list[SourceFile]:
    """Audio files under ``src`` (recursive, sorted, hidden files and folders ignored), with their domains.

    The domain is the first sub-folder, or, with ``domain_pattern``, the first group of that regular expression
    searched in the file name (e.g. ``^(\\d+)_`` labels FSDD's ``7_jackson_3.wav`` as domain ``7``); a file
    the pattern does not match is an error naming it. ``notes`` gets a line for what was passed over: files not
    named as audio, and domain folders that hold none or are another folder again (through a link). The folder
    ``skip`` (the dataset being written, when it lies inside ``src``) is left out; if it holds recordings, it is
    a DatasetError.
    """
    try:
        pattern = re.compile(domain_pattern) if domain_pattern else None
    except re.error as e:
        raise DatasetError(f"--domain-pattern '{domain_pattern}': not a regular expression ({e})") from None
    if pattern is not None and pattern.groups < 1:
        raise DatasetError(f"--domain-pattern '{domain_pattern}': needs a (group) that captures the domain")
    if not src.exists():
        raise DatasetError(f"{src}: source folder does not exist")
    if not src.is_dir():
        raise DatasetError(f"{src}: not a folder (prep reads a folder of audio files)")
    found = []
    folder_domain = src.resolve().name or "audio"  # for files directly in src
    scan = scan_audio_files(src, skip=skip)
    if scan.skipped is not None:
        _refuse_output_among_recordings(src, skip, met_as=scan.skipped)
    if notes is not None:
        notes += _passed_over(src, scan, by_folder=pattern is None, domains=domains, folder_domain=folder_domain,
                              skip=skip)
        loose = scan.loose_beside(folder_domain) if pattern is None else 0
        if loose:
            notes.append(f"{src}: its {loose} recording(s) outside sub-folders are domain {folder_domain}, as are "
                         f"those of its sub-folder {folder_domain}; move them into a sub-folder of their own to keep "
                         f"them apart")
    for relative in scan.files:
        parts = relative.split(os.sep)
        path = Path(src, relative)
        domain = parts[0] if len(parts) > 1 else folder_domain
        if pattern is not None:
            match = pattern.search(parts[-1])
            if not match:
                raise DatasetError(f"{printable(str(path))}: --domain-pattern '{domain_pattern}' does not match "
                                   f"this name")
            if not match.group(1):  # it matched: it had said "does not match" all the same
                raise DatasetError(f"{printable(str(path))}: --domain-pattern '{domain_pattern}' matches this name, "
                                   f"but its first group, the domain, captures nothing")
            domain = match.group(1)
        found.append(SourceFile(path, printable("/".join(parts)), printable(domain)))
    if domains:
        present = sorted({f.domain for f in found})
        missing = [d for d in domains if d not in present]
        if missing:
            why = ""
            if (src / missing[0]).is_dir():
                same = dict(scan.repeated).get(missing[0])
                why = (f"; hidden folders are passed over: rename {src / missing[0]} without its leading dot"
                       if missing[0].startswith(".") else
                       f"; {src / missing[0]} is the folder {src / same} (through a link), whose files count as "
                       f"domain {same}" if same is not None else f"; {src / missing[0]} holds no audio files")
            raise DatasetError(f"{src}: no domain '{missing[0]}' (domains found: {', '.join(present) or 'none'}"
                               f"{why})")
        found = [f for f in found if f.domain in domains]
    if not found:
        raise DatasetError(f"{src}: no audio files found (looked for {', '.join(sorted(AUDIO_SUFFIXES))})")
    return found


#: Suffixes of audio formats that libsndfile does not read, for the advice to convert them first.
OTHER_AUDIO_SUFFIXES = frozenset({".m4a", ".aac", ".mp4", ".wma", ".webm", ".amr", ".3gp", ".ape", ".wv", ".mka",
                                  ".alac", ".mpc", ".ac3"})


def _passed_over(src: Path, scan: FileScan, *, by_folder: bool, domains: tuple[str, ...] | None,
                 folder_domain: str, skip: Path | None = None) -> list[str]:
    """Lines about what :func:`discover` leaves out (see its ``notes``); with ``domains`` and domains by folder,
    only the files in those domains count (``folder_domain``: that of the files directly in ``src``)."""
    lines = []
    kept = scan.top_folders(lambda folder: (folder or folder_domain) in domains) if by_folder and domains else scan
    if kept.ignored:
        other = sorted(set(kept.ignored_suffixes()) & OTHER_AUDIO_SUFFIXES)
        advice = f"; convert {', '.join(other)} files to .wav or .flac to use them" if other else ""
        lines.append(f"{src}: passed over {len(kept.ignored)} file(s) not named as audio ({kept.ignored_counts()})"
                     f"{advice}")
    for folder, same in scan.repeated:
        lines.append(f"{src / folder}: the same folder as {src / same} (through a link), so its files count once, "
                     f"as {src / same}'s")
    for folder in kept.hidden:
        lines.append(f"{src / folder}: a hidden folder, passed over with the audio files in it; rename it without "
                     f"its leading dot to use them")
    if by_folder:
        with_files = {relative.split(os.sep)[0] for relative in scan.files}
        repeated = {folder for folder, _ in scan.repeated}
        for entry in sorted(os.scandir(src), key=lambda e: e.name):
            if (entry.is_dir() and not entry.name.startswith(".") and entry.name not in with_files
                    and entry.name not in repeated and (not domains or entry.name in domains)
                    and not (skip is not None and os.path.samefile(entry.path, skip))):
                lines.append(f"{src / entry.name}: no audio files in it, so no domain {entry.name}")
    return lines


def printable(name: str) -> str:
    """``name`` as valid Unicode: bytes of a file name that are not UTF-8 (kept by Python as surrogate escapes)
    become ``\\xNN``. The manifest stores names this way, so that it is valid JSON for any reader and every name
    in it can be printed."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes. Raises AudioError naming it when it cannot be read (see
    :func:`~specgan.audio.io.open_regular`)."""
    with open_regular(path) as f:
        try:
            return hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            raise AudioError(f"{path}: cannot read ({e.strerror or e})") from None


#: Files up to this size are read into memory once, for both their hash and their decoding (see
#: :func:`read_small`); a larger one is hashed as it is read and decoded from the file.
SMALL_FILE_BYTES = 16 << 20


def read_small(path: Path) -> bytes | None:
    """The bytes of a file of at most :data:`SMALL_FILE_BYTES`, or None for a larger one, or for one that grew
    while it was read. Raises AudioError naming it when it cannot be read (the same reasons as
    :func:`file_sha256`)."""
    with open_regular(path) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            if size > SMALL_FILE_BYTES:  # not read at all: hashed and decoded as a stream
                return None
            # Exactly the declared size (+ 1 to see growth): asking for SMALL_FILE_BYTES made Python allocate a
            # 16 MB buffer per file, mapped fresh from the system and faulted page by page (see
            # docs/architecture.md, Performance).
            data = f.read(size + 1)
            while 0 < len(data) <= size:  # to the end, should a read stop short (some network file systems)
                more = f.read(size + 1 - len(data))
                if not more:
                    break
                data += more
        except OSError as e:
            raise AudioError(f"{path}: cannot read ({e.strerror or e})") from None
    return data if len(data) <= size else None


def clip_logmel(blocks: Iterable[np.ndarray | torch.Tensor], *, logmel: LogMel) -> ClipLogMel:
    """The log-mel of a mono clip that arrives in blocks (float32 ``(samples,)`` at ``logmel.params.sample_rate``).

    Each block is turned into mel power as it arrives (:meth:`LogMel.stream_mel_power`); only the float16
    log-mel and the per-frame loudness are kept, about ``n_mels * 2 / hop_length`` bytes per sample. A clip in one
    block gives exactly :class:`LogMel` of the whole clip.
    Raises AudioError (no file name) when the clip is empty, silent, or too short for one STFT frame.
    """
    samples, peak = 0, 0.0

    def measured() -> Iterator[torch.Tensor]:
        nonlocal samples, peak
        for block in blocks:
            block = torch.as_tensor(block)
            if block.numel():
                samples += block.numel()
                peak = max(peak, peak_amplitude(block))
            yield block

    specs, frame_dbs = [], []
    too_short = False
    try:
        for mel_power in logmel.stream_mel_power(measured()):  # (n_mels, frames of this block)
            frame_dbs.append(power_to_db(mel_power.mean(dim=-2)))
            specs.append(logmel.normalize(mel_power).to(torch.float16))
    except ValueError:
        if samples >= logmel.params.min_samples:
            raise
        too_short = True
    if samples == 0:
        raise AudioError("empty audio (0 samples)")
    silent = silence_reason(peak)
    if silent:
        raise AudioError(silent)
    if too_short:
        raise AudioError(f"too short: {samples} samples at {logmel.params.sample_rate} Hz, less than half an FFT "
                         f"window (n_fft {logmel.params.n_fft})")
    spec = torch.cat(specs, dim=-1) if len(specs) > 1 else specs[0]
    frame_db = torch.cat(frame_dbs) if len(frame_dbs) > 1 else frame_dbs[0]
    return ClipLogMel(spec, frame_db, samples, peak)


def chunk_logmel(clip: ClipLogMel, *, params: AudioParams) -> tuple[np.ndarray, np.ndarray]:
    """Cut a clip's log-mel into the chunks prep keeps.

    Trimming drops leading and trailing frames quieter than the loudest frame minus ``trim_top_db``; a frame is
    active when it is within ``silence_top_db`` of the loudest and above ``min_db``; a chunk is kept when at least
    ``min_active`` of its frames are active. Chunks are therefore exact slices of the clip's log-mel.

    Returns ``(chunks, starts)``: float16 ``(n, n_mels, frames)``, and int64 ``(n,)`` the sample of the clip (at
    ``params.sample_rate``) on which each chunk's first frame is centred (a multiple of ``hop_length``).
    Raises AudioError (no file name) when the clip is too short or has no chunk with enough sound.
    """
    # Small per-frame vectors: numpy is several times quicker than torch's per-operation overhead here.
    frame_db = clip.frame_db.numpy()
    first, last = 0, len(frame_db)
    if params.trim_silence:
        loud = np.flatnonzero(frame_db >= frame_db.max() - np.float32(params.trim_top_db))
        first, last = int(loud[0]), int(loud[-1]) + 1
    spec = clip.spec.numpy()[:, first:last]
    frame_db = frame_db[first:last]
    active = (frame_db >= frame_db.max() - np.float32(params.silence_top_db)) & (frame_db > params.min_db)
    n_frames = spec.shape[-1]
    if n_frames < params.frames:
        if not params.pad_short:
            trimmed = " after trimming" if params.trim_silence else ""
            raise AudioError(f"too short: {n_frames} frames{trimmed}, one chunk is {params.frames} "
                             f"({params.chunk_seconds:.2f} s; --pad-short, or audio.pad_short = true, pads it)")
        # One chunk, judged by the clip's own frames: counted with the padding, a clip shorter than min_active of a
        # chunk could never be kept (FSDD's shortest spoken digits were all skipped so).
        if active.mean() < params.min_active:
            raise AudioError("no chunk with enough sound (the clip, padded to one chunk, is near-silent)")
        padded = np.pad(spec, ((0, 0), (0, params.frames - n_frames)), constant_values=-1.0)
        return padded[None], np.array([first * params.hop_length], dtype=np.int64)
    starts = np.asarray(window_starts(n_frames, frames=params.frames, hop=params.hop_frames), dtype=np.int64)
    counts = np.concatenate([[0], np.cumsum(active)])                       # active frames before each frame
    fraction = (counts[starts + params.frames] - counts[starts]).astype(np.float32) / np.float32(params.frames)
    kept = starts[fraction >= np.float32(params.min_active)]
    if not len(kept):
        raise AudioError(f"no chunk with enough sound (all {len(starts)} chunks near-silent)")
    chunks = np.stack([spec[:, s:s + params.frames] for s in kept])
    return chunks, (first + kept) * params.hop_length


#: Whole clips whose log-mels :func:`clip_logmels` computes together hold up to this many samples in all (5.9 s
#: at 22050 Hz: 2 MB of windowed frames at the default FFT size). The FFT's cost per frame grows past about 660
#: frames, as its buffers leave the cache (see docs/architecture.md, Performance).
MEL_BATCH_SAMPLES = 1 << 17


def clip_logmels(waves: list[np.ndarray | torch.Tensor], *, logmel: LogMel) -> list[ClipLogMel | AudioError]:
    """:func:`clip_logmel` of each whole clip (float32 ``(samples,)``), or the AudioError it raises: the same
    numbers, but the usable clips go through the FFT, the mel projection and the normalisation together, up to
    :data:`MEL_BATCH_SAMPLES` at a time (fewer, larger operations than one clip at a time)."""
    results: list[ClipLogMel | AudioError | None] = [None] * len(waves)
    usable: list[tuple[int, torch.Tensor, float]] = []
    for i, wave in enumerate(waves):
        peak = peak_amplitude(wave)  # before as_tensor: numpy's min and max are twice as quick as torch's aminmax
        wave = torch.as_tensor(wave)
        if wave.numel() >= logmel.params.min_samples and peak >= SILENCE_PEAK:
            usable.append((i, wave, peak))
            continue
        try:  # empty, silent or too short: clip_logmel says which
            results[i] = clip_logmel([wave], logmel=logmel)
        except AudioError as e:
            results[i] = e
    batch: list[tuple[int, torch.Tensor, float]] = []
    samples = 0
    for k, item in enumerate(usable):
        batch.append(item)
        samples += item[1].numel()
        if k + 1 < len(usable) and samples + usable[k + 1][1].numel() <= MEL_BATCH_SAMPLES:
            continue
        mel_power, counts = logmel.mel_power_many([wave for _, wave, _ in batch])  # (n_mels, all frames)
        # Each clip's mean over bands from its own columns: a reduction's rounding may depend on the tensor's width
        frame_dbs = [power_to_db(piece.mean(dim=-2)) for piece in torch.split(mel_power, counts, dim=-1)]
        spec = logmel.normalize(mel_power).to(torch.float16)
        for (i, wave, peak), piece, frame_db in zip(batch, torch.split(spec, counts, dim=-1), frame_dbs):
            results[i] = ClipLogMel(piece, frame_db, wave.numel(), peak)
        batch, samples = [], 0
    return results


def chunk_file(path: Path, *, params: AudioParams, logmel: LogMel,
               resamplers: Resamplers | None = None) -> ChunkedFile:
    """Decode one file block by block and cut it into chunks (see :func:`chunk_logmel`).

    ``resamplers`` (one per thread) lets files of the same rate share a resampler. Raises AudioError naming the
    file, with the reason it cannot be used.
    """
    try:
        with AudioFile(path) as audio:
            blocks = audio.mono_blocks(sample_rate=params.sample_rate, resamplers=resamplers)
            clip = clip_logmel(blocks, logmel=logmel)
        chunks, starts = chunk_logmel(clip, params=params)
    except AudioError as e:
        if str(e).startswith(f"{path}: "):
            raise
        raise AudioError(f"{path}: {e}") from None
    return ChunkedFile(chunks, starts, clip.samples / params.sample_rate, audio.sample_rate)


def _chunk_or_reason(path: Path, params: AudioParams, logmel: LogMel,
                     resamplers: Resamplers | None = None) -> ChunkedFile | str:
    """A ChunkedFile, or the reason the file was skipped."""
    try:
        return chunk_file(path, params=params, logmel=logmel, resamplers=resamplers)
    except AudioError as e:
        return _reason(e, path)


def _reason(error: AudioError, path: Path) -> str:
    """The reason the manifest records for a skipped file: the error's message without the file name."""
    return str(error).removeprefix(f"{path}: ")


#: A worker's task takes files, largest first, until they hold TASK_BYTES bytes or BATCH_FILES files (see
#: :func:`_batches`): some fifteen 3 s FLAC files, or sixty short WAVs, whose resampling and log-mels then go
#: together (see :func:`_chunk_batch`). Measured on 2 cores against tasks of 4 files (medians of 7 interleaved
#: runs): FSDD's 3000 half-second WAVs 1.39× quicker, VCC2016's 648 3 s FLACs 1.10×; 512 KB and 2 MB did as well.
BATCH_FILES = 64
TASK_BYTES = 1 << 20
#: Files up to this many samples at the output rate (12 s at 22050 Hz) are resampled together with the others of
#: their task's rate (see :func:`_chunk_batch`); a longer one alone, where one filter design hardly matters and
#: padding the others to its length would waste the most. A group is bounded by its task (TASK_BYTES of encoded
#: audio: a few MB of float32 signal for PCM or FLAC, more for lossy formats).
GROUP_SAMPLES = 1 << 18
#: What one more ``soxr.resample`` call costs, in input samples of one channel: its filter design and set-up took
#: about 0.2 ms (16 → 22.05 kHz, "HQ", 2-core AMD Zen 4 VM), and each further sample of a padded multi-channel
#: signal about 7.3 ns. :func:`resample_groups` weighs the padding a group adds against this.
RESAMPLE_CALL_SAMPLES = 27_000


def resample_groups(lengths: list[int]) -> list[list[int]]:
    """The indices of signals of ``lengths`` samples (one source rate) split into the groups that are resampled
    together, each zero-padded to its longest (see :func:`~specgan.audio.io.resample_whole`), so that the
    padded samples plus :data:`RESAMPLE_CALL_SAMPLES` per group are fewest: one group for signals of about one
    length, several when lengths differ (one 6 s file among 3 s files nearly doubled their padded length; in
    VCC2016's tasks, one group each, 23% of the samples soxr filtered were padding).

    The best split of the signals sorted longest first into runs, by dynamic programming: a group of sorted
    signals ``i..j-1`` costs ``RESAMPLE_CALL_SAMPLES + lengths[i] * (j - i)``.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    longest = [lengths[k] for k in order]
    best = [0] * (len(order) + 1)  # best[j]: the least cost of the first j sorted signals
    start = [0] * (len(order) + 1)  # where the last group of that best split begins
    for j in range(1, len(order) + 1):
        best[j], start[j] = min((best[i] + RESAMPLE_CALL_SAMPLES + longest[i] * (j - i), i) for i in range(j))
    groups, j = [], len(order)
    while j:
        groups.append(order[start[j]:j])
        j = start[j]
    return groups[::-1]


def decode_whole(path: Path, *, sample_rate: int, data: bytes | None = None) -> tuple[np.ndarray | None, int]:
    """``(wave, source_rate)``: the file decoded whole as checked float32 mono ``(samples,)`` at its own rate, or
    ``wave`` None when it is to be streamed (long, empty, or longer than its header says; see
    :func:`~specgan.audio.io.block_frames_for`). Raises AudioError naming the file.

    ``data``, the file's bytes when the caller has read them (:func:`read_small`), lets a plain FLAC or 16-bit
    PCM WAV file be decoded without opening it with libsndfile (:func:`~specgan.audio.io.decode_bytes`: the same
    samples)."""
    whole = decode_bytes(data, sample_rate=sample_rate) if data is not None else None
    if whole is not None:
        samples, rate = whole
        return next(mono_blocks([samples], source_rate=rate, sample_rate=None)), rate
    with AudioFile(path) as audio:
        rate = audio.sample_rate
        frames = block_frames_for(source_rate=rate, sample_rate=sample_rate, channels=audio.channels,
                                  frames=audio.frames)
        if frames <= audio.frames:
            return None, rate
        block = next(audio.blocks(block_frames=frames), None)
        if block is None or len(block) >= frames:
            return None, rate
        return next(mono_blocks([block], source_rate=rate, sample_rate=None)), rate


def _chunk_batch(paths: list[Path], params: AudioParams, logmel: LogMel, resamplers: Resamplers,
                 contents: dict[Path, bytes | None]) -> dict[Path, ChunkedFile | str]:
    """:func:`_chunk_or_reason` of each file, with the same results, with fewer and larger operations.
    ``contents`` holds the bytes of the files already read (see :func:`decode_whole`).

    Files decoded whole share work: those of one source rate, up to :data:`GROUP_SAMPLES` long, are resampled
    together in groups of similar lengths (:func:`resample_groups`; :func:`~specgan.audio.io.resample_whole`
    designs the filter once per group), and all of them go
    through one FFT and mel projection (:func:`clip_logmels`). Long files (see
    :func:`~specgan.audio.io.block_frames_for`) are streamed by :func:`chunk_file` one by one, as are files whose
    decoding does not end where their header says."""
    results: dict[Path, ChunkedFile | str] = {}
    decoded: list[tuple[Path, np.ndarray, int]] = []  # (path, whole signal at params.sample_rate, source rate)
    pending: dict[int, list[tuple[Path, np.ndarray]]] = {}
    for path in paths:
        try:
            wave, rate = decode_whole(path, sample_rate=params.sample_rate, data=contents.get(path))
        except AudioError as e:
            results[path] = _reason(e, path)
            continue
        if wave is None:
            results[path] = _chunk_or_reason(path, params, logmel, resamplers)
        elif rate == params.sample_rate:
            decoded.append((path, wave, rate))
        elif len(wave) * params.sample_rate > GROUP_SAMPLES * rate:
            decoded.append((path, resample_whole([wave], source_rate=rate, sample_rate=params.sample_rate)[0], rate))
        else:
            pending.setdefault(rate, []).append((path, wave))
    for rate, items in pending.items():
        for group in resample_groups([len(wave) for _, wave in items]):
            waves = resample_whole([items[k][1] for k in group], source_rate=rate, sample_rate=params.sample_rate)
            decoded += [(items[k][0], wave, rate) for k, wave in zip(group, waves)]
    clips = clip_logmels([wave for _, wave, _ in decoded], logmel=logmel)
    for (path, _, rate), clip in zip(decoded, clips):
        if isinstance(clip, AudioError):
            results[path] = str(clip)
            continue
        try:
            chunks, starts = chunk_logmel(clip, params=params)
        except AudioError as e:
            results[path] = str(e)
            continue
        results[path] = ChunkedFile(chunks, starts, clip.samples / params.sample_rate, rate)
    return results


def _batches(paths: list[Path], *, max_files: int, max_bytes: int) -> list[list[Path]]:
    """``paths`` in batches of at most ``max_files`` files, and of at most ``max_bytes`` bytes unless one file is
    larger, largest files first (so that the last tasks are the quickest, and a batch holds files of similar
    lengths: less padding when they are resampled together)."""
    def nbytes(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0
    sizes = {path: nbytes(path) for path in paths}
    batches: list[list[Path]] = []
    batch: list[Path] = []
    total = 0
    for path in sorted(paths, key=sizes.__getitem__, reverse=True):
        if batch and (len(batch) == max_files or total + sizes[path] > max_bytes):
            batches.append(batch)
            batch, total = [], 0
        batch.append(path)
        total += sizes[path]
    return batches + [batch] if batch else batches


def _process(paths: list[Path], params: AudioParams, workers: int, *,
             hash_files: bool = False) -> Iterator[tuple[Path, str | None, ChunkedFile | str]]:
    """Yield ``(path, sha256, result)`` as files finish, ``workers`` batches of files at a time.

    Each worker reads its files' bytes once (:func:`read_small`). With ``hash_files`` it hashes them before
    decoding them (the digest is None when a file cannot be read, and the result is then the reason); otherwise
    the digest is None. A fresh dataset hashes this way, in parallel with the decoding, since no file can be
    re-used anyway.

    Threads, not processes: decoding (libsndfile), resampling (soxr) and the torch ops release the GIL. On 2 cores
    (AMD EPYC, 648 VCC2016 files) a bare per-file loop scales 1.5x with two threads and 1.8x with two forked
    processes, yet a whole prep with a forked process pool measured the same as with threads (within 4%, either
    way): the chunks (60 MB here) go back through a pipe, and forking a process that has run torch is fragile.
    Each file uses one intra-op thread; batches of files (:data:`TASK_BYTES`, see :func:`_chunk_batch`) are
    the unit of parallelism. Each thread keeps its own resamplers (see :class:`~specgan.audio.io.Resamplers`).
    """
    logmel = LogMel(params)
    local = threading.local()

    def work(batch: list[Path]) -> list[tuple[Path, str | None, ChunkedFile | str]]:
        if not hasattr(local, "resamplers"):
            local.resamplers = Resamplers()
        contents: dict[Path, bytes | None] = {}  # read once: hashed, then decoded from memory
        digests: dict[Path, str | None] = dict.fromkeys(batch)
        results: dict[Path, ChunkedFile | str] = {}
        for path in batch:
            try:
                contents[path] = data = read_small(path)
                if hash_files:
                    digests[path] = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)
            except AudioError as e:
                results[path] = _reason(e, path)
        results.update(_chunk_batch([p for p in batch if p not in results], params, logmel, local.resamplers,
                                    contents))
        return [(path, digests[path], results[path]) for path in batch]

    batches = _batches(paths, max_files=BATCH_FILES, max_bytes=TASK_BYTES)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers <= 1 or len(batches) <= 1:
            for batch in batches:
                yield from work(batch)
            return
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="specgan-prep") as pool:
            futures = [pool.submit(work, batch) for batch in batches]
            try:
                for future in cf.as_completed(futures):
                    yield from future.result()
            except BaseException:
                wait_for_workers(pool, futures)
                raise
    finally:
        torch.set_num_threads(threads_before)


#: Further Ctrl-C (or SIGTERM) while prep waits for its workers after the first that stop it at once instead.
STOP_AT_ONCE_AFTER = 2


def wait_for_workers(pool: cf.ThreadPoolExecutor, futures: list[cf.Future]) -> None:
    """Cancel the batches not started and wait for the workers to finish theirs (``futures`` done) before prep
    commits what was done: a second Ctrl-C had cut the wait short, and the process then exited with workers still
    inside libsndfile, soxr or torch (an abort or a segmentation fault, exit 134 or 139).

    The futures are polled, not joined: on Python 3.11 a Ctrl-C inside ``Thread.join`` marks the thread finished
    while it runs on. A further Ctrl-C is said to be waited out; :data:`STOP_AT_ONCE_AFTER` of them (a worker stuck
    on a hung file system) end the process at once with the signal's exit code, committing nothing of this run
    (the dataset stays as it was; ``os._exit`` does not finalise the interpreter under the workers)."""
    pool.shutdown(wait=False, cancel_futures=True)
    more = 0
    while True:
        try:
            while not all(future.done() for future in futures):
                time.sleep(0.05)
            return
        except KeyboardInterrupt as e:  # (SIGTERM too, as Terminated)
            more += 1
            if more >= STOP_AT_ONCE_AFTER:
                sys.stderr.write("stopped at once: nothing of this prep was kept\n")
                sys.stderr.flush()
                os._exit(getattr(e, "exit_code", 130))
            sys.stderr.write("waiting for the files in progress to finish, to keep what was done (Ctrl-C again "
                             "to stop at once, keeping nothing of this prep)\n")
            sys.stderr.flush()


def prep(src: str | os.PathLike, out: str | os.PathLike, *, params: AudioParams,
         domains: tuple[str, ...] | None = None, domain_pattern: str | None = None,
         workers: int | None = None, overwrite: bool = False,
         on_start: Callable[[int], None] | None = None, on_file: Callable[[Path], None] | None = None) -> PrepReport:
    """Build or update the dataset at ``out`` from the audio under ``src``.

    ``on_start(n_to_process)`` and ``on_file(path)`` report progress. Returns what was done; the dataset is
    committed only at the end (see :mod:`specgan.data.dataset_dir`). Raises DatasetError when no file could be
    used, when another prep holds ``out``, when the dataset cannot be written (the previous one is then kept), or
    when the update would drop recordings as a by-product (see the checks below; ``overwrite`` allows it). A
    KeyboardInterrupt (Ctrl-C, SIGTERM) while files are processed commits those finished and raises
    InterruptedWithWorkKept; one before any was finished leaves the dataset as it was.
    """
    src, out = Path(src), Path(out)
    _refuse_output_as_source(src, out)
    notes: list[str] = []
    sources = discover(src, domains=domains, domain_pattern=domain_pattern, notes=notes,
                       skip=Path(out) if Path(out).is_dir() else None)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder")
    image_set = idx_files_in(out) if out.is_dir() else []
    if image_set:  # a dataset beside them would stop them loading (load_idx_set refuses a prep dataset's folder)
        raise DatasetError(f"{out}: holds an image set's IDX files ({image_set[0].name}); write the dataset to a "
                           f"folder of its own")
    made = outermost_missing(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"{out}: cannot create the dataset folder ({e.strerror or e})") from None
    with FolderLock(out, error=DatasetError, busy="another specgan prep is writing this dataset; wait for it to finish",
                    made=made, elsewhere="choose another -o"):
        current = _current_manifest(out, overwrite=overwrite)
        # --overwrite rebuilds from the recordings and re-uses nothing: the way out of a damaged dataset.
        old = None if overwrite else _reusable(current, out, params=params)
        if old is not None and domains:
            dropped = [d["name"] for d in old["domains"] if d["name"] not in domains]
            if dropped:  # a selection is easily meant as "update these"; dropping the others is for --overwrite
                raise DatasetError(f"{out}: holds domain(s) {', '.join(dropped)}, which --domains "
                                   f"{','.join(domains)} leaves out; to update it, prep without --domains (or with "
                                   f"all of its domains); to keep only {','.join(domains)}, add --overwrite")
        if old is not None and old.get("domain_pattern") and domain_pattern is None:
            # Run again without it to add recordings, it had relabelled every file by folder (often one domain),
            # reporting the files as re-used unchanged. (Another pattern relabels them, with a note: asked for.)
            raise DatasetError(f"{out}: was made with --domain-pattern {shlex.quote(old['domain_pattern'])} (domains "
                               f"{', '.join(d['name'] for d in old['domains'])}); to update it, give it again; to "
                               f"take the domains from the folders instead, add --overwrite")
        source_folder = printable(str(src.resolve()))
        if old is not None and old.get("source", source_folder) != source_folder:
            found = {s.relpath for s in sources}
            gone = [row["path"] for row in old["sources"] if row["path"] not in found]
            if gone:  # another folder (a typo, a disk not mounted) would replace the dataset as a by-product
                raise DatasetError(f"{out}: was made from {old['source']}, and {src} lacks {len(gone)} of its "
                                   f"{len(old['sources'])} recordings (e.g. {gone[0]}); to replace it with a dataset "
                                   f"of {src}, add --overwrite")
        if old is not None and _features_changed(old, params):
            notes.append(f"{out}: its chunks were made by an older specgan, whose mel filterbank differed at "
                         f"n_fft {params.n_fft} and {params.sample_rate} Hz; rebuilt from the recordings")
            old = None
        previous = _open_previous(out) if old is not None else None
        if current is not None:
            # Space left by an interrupted prep. The current dataset stays whole until the new one is committed,
            # even when --overwrite replaces it: a failed or interrupted rebuild leaves it usable.
            remove_orphans(out, keep=current["files"].values())
        done_rows = {s["sha256"]: s for s in old["sources"]} if old else {}
        done_skips = {s["sha256"]: s["reason"] for s in old["skipped"] if s.get("sha256")} if old else {}

        workers = workers or os.cpu_count() or 1
        if old is None:  # nothing to re-use: the workers hash each file as they decode it
            hashes, results = {}, {}
            to_process = [s.path for s in sources]
        else:
            hashes, results = _hash_all(sources, workers=workers)
            to_process = [s.path for s in sources if s.path in hashes and hashes[s.path] not in done_rows
                          and hashes[s.path] not in done_skips]
        if on_start:
            on_start(len(to_process))
        interrupted = None
        done_now = 0  # files processed by this run (``results`` also holds those _hash_all could not read)
        try:
            for path, digest, result in _process(to_process, params, workers, hash_files=old is None):
                if digest is not None:
                    hashes[path] = digest
                results[path] = result
                done_now += 1
                if on_file:
                    on_file(path)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: commit the files done so far (below), then stop
            if not done_now:  # nothing new to keep: the dataset stays as it was
                raise
            if overwrite and current is not None:
                # A rebuild replaces the dataset whole or not at all: committing part of it would lose the complete
                # dataset, and the same command would re-use none of the part anyway.
                raise InterruptedWithWorkKept(
                    f"{out} holds the dataset it held before (an interrupted --overwrite replaces nothing); run the "
                    f"same command again to rebuild it", exit_code=getattr(e, "exit_code", 130)) from None
            interrupted = e

        domain_names = sorted({s.domain for s in sources})
        label_of = {name: i for i, name in enumerate(domain_names)}
        chunks, labels, positions, entries, skipped = [], [], [], [], []
        total_chunks = 0
        report = PrepReport(out=out, manifest=old or {}, found=len(sources), skipped=skipped, notes=notes)
        for source in sources:
            digest = hashes.get(source.path)
            result = results.get(source.path)
            if result is None and digest in done_skips:
                result = done_skips[digest]
            if isinstance(result, str):
                skipped.append({"path": source.relpath, "domain": source.domain, "sha256": digest, "reason": result})
                continue
            if result is None and digest not in done_rows:  # not reached before an interruption
                report.unfinished += 1
                continue
            if result is None:  # unchanged: copy its rows out of the previous generation
                entry = done_rows[digest]
                rows = slice(entry["first_chunk"], entry["first_chunk"] + entry["chunks"])
                result = ChunkedFile(np.asarray(previous.chunks[rows]), np.asarray(previous.positions[rows, 1]),
                                     entry["seconds"], entry["sample_rate"])
                report.reused += 1
            else:
                report.processed += 1
            n = len(result.chunks)
            entries.append({"path": source.relpath, "domain": source.domain, "sha256": digest,
                            "sample_rate": result.source_rate, "seconds": round(result.seconds, 4),
                            "chunks": n, "first_chunk": total_chunks})
            total_chunks += n
            chunks.append(result.chunks)
            labels.append(np.full(n, label_of[source.domain], dtype=np.int64))
            positions.append(np.stack([np.full(n, len(entries) - 1), result.starts], axis=1))

        _note_recordings_in_several_domains(entries, notes)
        if old is not None and not interrupted:
            kept = {e["path"] for e in entries} | {s["path"] for s in skipped}
            report.removed = [s["path"] for s in old["sources"] if s["path"] not in kept]
            report.removed_domains = [d["name"] for d in old["domains"] if d["name"] not in domain_names]
            was_in = {row["path"]: row["domain"] for row in (*old["sources"], *old["skipped"])}
            moved = [(s.relpath, was_in[s.relpath], s.domain) for s in sources
                     if s.relpath in was_in and was_in[s.relpath] != s.domain]
            if moved:  # e.g. another --domain-pattern: the same recordings, labelled anew
                path, before, now = moved[0]
                notes.append(f"{len(moved)} file(s) changed domain since the previous dataset (first: {path}: "
                             f"{before} → {now}); their chunks are relabelled")
        if (old is not None and not to_process and _same(old, entries, skipped) and not old.get("unfinished")
                and old.get("source") == source_folder):
            report.up_to_date = True
            return report
        if not entries:
            if interrupted:
                raise interrupted
            raise DatasetError(f"{src}: none of the {len(sources)} audio files could be used "
                               f"(first: {skipped[0]['path']}: {skipped[0]['reason']})")
        del previous  # release the memory map before old arrays are removed
        report.manifest = write_dataset(
            out, audio=params, chunks=chunks, labels=labels, positions=positions,
            manifest={"source": source_folder, "domain_pattern": domain_pattern,
                      "domains": domains_table(domain_names, entries, skipped), "sources": entries, "skipped": skipped,
                      **({"unfinished": report.unfinished} if report.unfinished else {})})
        if interrupted:
            # As the summary counts them: usable files processed; those found unusable are said apart.
            unusable = f"; {done_now - report.processed} more found unusable" if done_now > report.processed else ""
            raise InterruptedWithWorkKept(
                f"kept the {report.processed} file(s) processed so far in {out} ({report.unfinished} not yet"
                f"{unusable}); run "
                f"the same command again{' without --overwrite' if overwrite else ''} to finish it",
                exit_code=getattr(interrupted, "exit_code", 130),
                report=report) from None
        return report


def _note_recordings_in_several_domains(entries: list[dict], notes: list[str]) -> None:
    """Add a line to ``notes`` when the same recording (by content) is in two or more domains: a copy or a link
    that makes it an example of both voices or styles, which a translator cannot tell apart."""
    first_of: dict[str, dict] = {}
    crossings = []
    for entry in entries:
        earlier = first_of.setdefault(entry["sha256"], entry)
        if earlier["domain"] != entry["domain"]:
            crossings.append((earlier, entry))
    if crossings:
        a, b = crossings[0]
        notes.append(f"{len(crossings)} recording(s) are in more than one domain (first: {a['path']} in {a['domain']} "
                     f"and {b['path']} in {b['domain']} hold the same audio)")


def _refuse_output_as_source(src: Path, out: Path) -> None:
    """A DatasetError when the dataset folder ``out`` is the source folder (discovery would find nothing in it)."""
    if src.is_dir() and out.is_dir() and out.resolve() == src.resolve():
        raise DatasetError(f"{out}: is the source folder; the dataset needs a folder of its own (e.g. -o "
                           f"{src.parent / (src.resolve().name + '-dataset')})")


def _refuse_output_among_recordings(src: Path, out: Path, *, met_as: str) -> None:
    """A DatasetError when the dataset folder ``out``, which discovery met under ``src`` as ``met_as`` (itself or,
    through a link, a domain folder that lies elsewhere) and left out, holds recordings: they would be left out of
    the dataset without a word (a whole domain, for ``-o SRC/DOMAIN``), and its files would lie among them."""
    recordings = scan_audio_files(out).files
    if recordings:
        met = Path(src, met_as)
        through = "" if os.path.abspath(met) == os.path.abspath(out) else f" (as {printable(str(met))})"
        raise DatasetError(f"{out}: holds {len(recordings)} recording(s) of {src}{through} (e.g. "
                           f"{printable(recordings[0])}), which the dataset would leave out; write it to a folder "
                           f"of its own")


def _current_manifest(out: Path, *, overwrite: bool) -> dict | None:
    """The manifest of the dataset at ``out``, or None when there is none, or when it is damaged and ``overwrite``
    rebuilds the dataset (without ``overwrite`` a damaged one is a DatasetError saying to use it). A
    ``manifest.json`` that cannot be read as a dataset's, in a folder without a dataset's arrays, is someone
    else's: a DatasetError either way, since ``--overwrite`` would replace it."""
    try:
        return read_manifest(out)
    except DatasetError as e:
        if not any(GENERATION_FILE.fullmatch(name) for name in os.listdir(out)):
            raise DatasetError(f"{e}; {out} holds no specgan dataset, so the file is not prep's to replace: write "
                               f"the dataset to a folder of its own") from None
        if overwrite:
            return None
        raise DatasetError(f"{e}; to rebuild the dataset from the recordings, run the same command with "
                           f"--overwrite") from None


def _reusable(old: dict | None, out: Path, *, params: AudioParams) -> dict | None:
    """``old``, the manifest of the dataset at ``out``, when it can be updated with ``params``; None when there is
    none. A dataset made with other parameters is a DatasetError (``--overwrite`` rebuilds it instead)."""
    # Unset values as what they stand for: f_max unset and f_max = sample_rate / 2 make the same dataset.
    if old is None:
        return None
    given = to_mapping(params)
    before, wanted = resolved_values(old["audio"]), resolved_values(given)
    if before == wanted:
        return old
    # (a key left unset on both sides that follows another, as win_length follows n_fft, is that key's change; a
    # key this version no longer has is listed as unset now)
    keys = [*wanted, *(k for k in before if k not in wanted)]
    changed = ", ".join(f"{k}: {as_written(old['audio'].get(k))} → {as_written(given.get(k))}" for k in keys
                        if before.get(k) != wanted.get(k) and old["audio"].get(k) != given.get(k))
    raise DatasetError(f"{out}: holds a dataset made with other audio parameters ({changed}); to add to it, "
                       f"prep with the parameters it was made with (the same --recipe or flags), or use "
                       f"--overwrite to rebuild it with these")


def _features_changed(old: dict, params: AudioParams) -> bool:
    """Whether the dataset of manifest ``old`` holds chunks that this code would compute otherwise: before
    :data:`~specgan.data.dataset_dir.FEATURES_VERSION` 2 the filterbank's bins were wrong for an odd n_fft or an odd
    rate (and right, to float32 rounding, otherwise)."""
    return old.get("features", 1) < FEATURES_VERSION and (params.n_fft % 2 == 1 or params.sample_rate % 2 == 1)


def _open_previous(out: Path) -> PreppedDataset:
    """The dataset at ``out``, whose unchanged files' chunks an update copies; one whose arrays are missing or
    damaged is a DatasetError that says how to rebuild it."""
    try:
        previous = open_dataset(out)
    except DatasetError as e:
        raise DatasetError(f"{e}; to rebuild the dataset from the recordings, run the same command with "
                           f"--overwrite") from None
    # Its rows would be copied again, and the update called up to date.
    check_values_in_range(previous, previous.chunks, remedy="to rebuild the dataset from the recordings, run the same "
                                                            "command with --overwrite")
    return previous


#: Files one hashing task takes (one task per file costs more in thread hand-offs than hashing a short file).
HASH_BATCH_FILES = 32


def _digest_or_reason(path: Path) -> tuple[str | None, str | None]:
    """``(sha256, None)``, or ``(None, the reason the file cannot be read)``."""
    try:
        return file_sha256(path), None
    except AudioError as e:
        return None, _reason(e, path)


def _hash_all(sources: list[SourceFile], *, workers: int = 1) -> tuple[dict[Path, str], dict[Path, str]]:
    """``(hashes, unreadable)``: the SHA-256 of each readable file, and the reason for each other one.

    ``workers`` threads share the files, :data:`HASH_BATCH_FILES` at a time (reading and hashlib release the
    GIL)."""
    paths = [source.path for source in sources]
    batches = [paths[i:i + HASH_BATCH_FILES] for i in range(0, len(paths), HASH_BATCH_FILES)]

    def digests(batch: list[Path]) -> list[tuple[str | None, str | None]]:
        return [_digest_or_reason(path) for path in batch]

    if workers > 1 and len(batches) > 1:
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="specgan-hash") as pool:
            results = [r for batch in pool.map(digests, batches) for r in batch]
    else:
        results = [r for batch in batches for r in digests(batch)]
    hashes, unreadable = {}, {}
    for path, (sha, reason) in zip(paths, results):
        if sha is not None:
            hashes[path] = sha
        else:
            unreadable[path] = reason
    return hashes, unreadable


def _same(old: dict, entries: list[dict], skipped: list[dict]) -> bool:
    def key(rows):
        return [(r["path"], r["domain"], r["sha256"], r.get("reason")) for r in rows]
    return key(old["sources"]) == key(entries) and key(old["skipped"]) == key(skipped)

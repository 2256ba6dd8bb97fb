"""``specgan convert``: audio of one domain → audio of the other, through a trained translator (a ``translate``
run) rebuilt from its checkpoint alone.

The whole input becomes one normalised log-mel; it is cut into the model's chunk width (``audio.frames``) every
``hop`` frames, translated a batch of windows at a time (memory stays bounded however long the input), stitched
back with a cross-fade over each overlap, and inverted in one Griffin-Lim pass over the whole clip, started from
the input's own phase. The output has exactly the input's length.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from specgan.audio.chunks import WindowStitcher, window_starts
from specgan.audio.inverse import MelInverter, invert_logmel, logmel_of_clip, spectral_convergence_blocks
from specgan.audio.io import AUDIO_SUFFIXES, OUTPUT_FORMATS, AudioFile, audio_comment, audio_files, \
    check_output_name, check_output_rate, load_audio, output_length, refuse_existing, save_audio
from specgan.audio.params import AudioParams
from specgan.audio.stft import padded_to_one_window
from specgan.errors import AudioError, CheckpointError, ConfigError, InterruptedWithWorkKept, SpecganError
from specgan.folders import made_parent
from specgan.recipe import from_mapping
from specgan.train.checkpoint import list_checkpoints, load_model_checkpoint, run_folders

PHASE_INITS = ("source", "random")
#: The widest ``--plot``: a longer input's frames are averaged in runs down to at most this many columns (a
#: 20-minute input at hop 128 would be 150000 pixels wide, which image viewers refuse; 4096 frames are 33 s).
PLOT_MAX_COLUMNS = 4096


# ---------------------------------------------------------------------------------------------------------------
# The model

@dataclass(frozen=True)
class Translator:
    """The two generators of a ``translate`` run, in eval mode on ``device``, with what the checkpoint says about
    the data. ``g_ab`` maps domain ``domains[0]`` → ``domains[1]``; ``g_ba`` the other way. ``weights`` identifies
    the generators' weights whatever the checkpoint's path (:func:`weights_fingerprint`)."""

    domains: tuple[str, str]
    audio: AudioParams
    step: int
    checkpoint: Path
    device: torch.device
    g_ab: nn.Module = field(repr=False)
    g_ba: nn.Module = field(repr=False)
    weights: str = ""

    def generator_to(self, domain: str) -> nn.Module:
        """The generator whose output is in ``domain``: ``g_ab`` for the second domain, ``g_ba`` for the first."""
        if domain == self.domains[1]:
            return self.g_ab
        if domain == self.domains[0]:
            return self.g_ba
        raise ConfigError(f"--to {domain}: {self.checkpoint} translates between {self.domains[0]} and "
                          f"{self.domains[1]}")


def _translate_domains(state: dict, path: Path) -> tuple[str, str]:
    """The two domain names of a ``translate`` checkpoint; CheckpointError for any other task or a damaged one."""
    task = state.get("recipe", {}).get("task")
    if task != "translate":
        raise CheckpointError(f"{path}: a {task!r} run, not a translator (a run trained with task = "
                              f"\"translate\")")
    names = state.get("data", {}).get("class_names")
    if not isinstance(names, (list, tuple)) or len(names) != 2:
        raise CheckpointError(f"{path}: data.class_names = {names!r}; a translator has exactly two domains")
    return str(names[0]), str(names[1])


def load_translator(run_or_checkpoint: str | os.PathLike, *, device: torch.device | str = "cpu",
                    on_warning: Callable[[str], None] | None = None) -> Translator:
    """Rebuild both generators of a ``translate`` run from a checkpoint (or a run folder's newest intact one; each
    damaged newer one is passed over with a line to ``on_warning``).

    Raises:
        CheckpointError: no such run or checkpoint, not a translate run, or weights that do not fit the model the
            checkpoint's recipe describes.
    """
    from specgan.models import build_model

    path, state = load_model_checkpoint(run_or_checkpoint, on_warning=on_warning)
    domains = _translate_domains(state, path)
    model, data = state["recipe"].get("model", {}), state["data"]
    if not data.get("audio"):
        raise CheckpointError(f"{path}: data.audio is missing; convert needs a model trained on spectrograms")
    audio = from_mapping(AudioParams, data["audio"], source=str(path), prefix="data.audio.")
    models = state.get("task", {}).get("models", {})
    generators = {}
    for key in ("G_AB", "G_BA"):
        if key not in models:
            raise CheckpointError(f"{path}: task.models.{key} is missing")
        try:
            generator, _ = build_model(model["name"], image_shape=tuple(data["image_shape"]),
                                       channels=model["channels"], n_blocks=model["n_blocks"])
        except KeyError as e:
            raise CheckpointError(f"{path}: recipe.model.{e.args[0]} is missing") from None
        except (ConfigError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot rebuild model {model['name']!r} ({e})".splitlines()[0]) from None
        try:
            generator.load_state_dict(models[key])
        except RuntimeError as e:
            raise CheckpointError(f"{path}: task.models.{key} does not fit model {model['name']!r} "
                                  f"({str(e).strip().splitlines()[0]})") from None
        generators[key] = generator.to(device).eval()
    return Translator(domains, audio, int(state["step"]), path, torch.device(device), generators["G_AB"],
                      generators["G_BA"], weights_fingerprint([models["G_AB"], models["G_BA"]]))


def weights_fingerprint(state_dicts: list[dict[str, Tensor]]) -> str:
    """16 hex digits of a SHA-256 over the names, dtypes, shapes and values of the tensors in ``state_dicts``:
    the same weights give the same fingerprint in any checkpoint file, on any device."""
    digest = hashlib.sha256()
    for state in state_dicts:
        for name, tensor in state.items():
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


#: How an output names the model that converted it (its comment tag), and how that is read back.
PROVENANCE = "specgan convert --to {to}: model {checkpoint}, step {step}, weights {weights}"
_PROVENANCE = re.compile(r"^specgan convert --to .*: model (?P<checkpoint>.*), step (?P<step>\d+), "
                         r"weights (?P<weights>[0-9a-f]{16})$")


def provenance(translator: Translator, *, to: str) -> str:
    """The comment tag :func:`convert_file` gives an output: the command, the checkpoint, its step and weights."""
    checkpoint = str(translator.checkpoint).encode("utf-8", "backslashreplace").decode()  # (any file name)
    return PROVENANCE.format(to=to, checkpoint=checkpoint, step=translator.step, weights=translator.weights)


def check_kept_outputs(outputs: list[Path], *, translator: Translator) -> None:
    """ConfigError for the first of the ``outputs`` kept by ``--skip-existing`` whose comment tag says another
    model converted it, so that a folder's conversion is not finished by a different model (a run trained since,
    which the automatic choice takes, or another ``--model``). Outputs without specgan's tag are not judged, nor
    is anything for a translator built without its fingerprint."""
    for path in outputs if translator.weights else ():
        made_by = _PROVENANCE.match(audio_comment(path) or "")
        if made_by and made_by["weights"] != translator.weights:
            raise ConfigError(
                f"--skip-existing: {path} was converted by another model ({made_by['checkpoint']}, step "
                f"{made_by['step']}) than {translator.checkpoint} (step {translator.step}); give that model with "
                f"--model to finish with it, or --overwrite to convert every file with this one")


def find_translator(domain: str, *, runs_dir: Path = Path("runs"),
                    on_warning: Callable[[str], None] | None = None) -> Path:
    """The newest run folder under ``runs_dir``, at any depth (by the time its newest checkpoint was written), that
    is a ``translate`` run with a domain named ``domain``, judged by its newest intact checkpoint. Other tasks are
    passed over, and so are runs with no intact checkpoint: each of those newer than the run found is a line to
    ``on_warning`` (it may have been the model meant).

    Raises:
        ConfigError: no such run; the message lists the domains the translators there do have, and the runs that
            could not be read.
    """
    runs_dir = Path(runs_dir)
    candidates = []
    for run in run_folders(runs_dir):
        checkpoints = list_checkpoints(run)
        if checkpoints:
            candidates.append((checkpoints[-1].stat().st_mtime, run))
    seen: list[str] = []
    unreadable: list[tuple[Path, str]] = []
    for _, run in sorted(candidates, key=lambda c: (c[0], str(c[1])), reverse=True):
        try:
            path, state = load_model_checkpoint(run)
        except CheckpointError as e:
            unreadable.append((run, str(e)))
            continue
        try:
            domains = _translate_domains(state, path)
        except CheckpointError:  # another task's run
            continue
        if domain in domains:
            for bad, why in unreadable if on_warning else ():
                on_warning(f"passed over {bad}, newer than {run} but unreadable ({why})")
            return run
        seen += [d for d in domains if d not in seen]
    where = f"{runs_dir}/" if runs_dir.is_dir() else f"{runs_dir}/ (no such folder)"
    there = f"domains there: {', '.join(sorted(seen))}" if seen else "no translate runs there"
    if unreadable:
        there += f"; could not read: {', '.join(str(run) for run, _ in unreadable)}"
    raise ConfigError(f"no model under {where} converts to {domain!r} ({there}); give one with --model")


# ---------------------------------------------------------------------------------------------------------------
# Log-mel → log-mel

def _module_device(module: nn.Module, default: torch.device) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return default


def translate_logmel(logmel: Tensor, *, generator: nn.Module, frames: int, hop: int | None = None,
                     batch_size: int = 16) -> Tensor:
    """Translate a whole normalised log-mel ``(n_mels, n_frames)`` in [-1, 1] window by window.

    The input is padded at its end with silence (-1) to one window plus a whole number of hops, cut into windows
    at :func:`~specgan.audio.chunks.window_starts`, translated ``batch_size`` windows at a time, joined by a
    :class:`~specgan.audio.chunks.WindowStitcher` cross-fading over each whole overlap (``frames - hop`` frames;
    only one batch of windows exists at a time), and trimmed back. Padding rather than an end-aligned last window
    keeps every overlap the same length, so every cross-fade is the same linear ramp (a last window shifted by only
    a few frames would blend over a few frames).

    Args:
        generator: maps ``(N, 1, n_mels, frames)`` → the same shape (run under ``torch.no_grad``).
        frames: window width (the model's chunk width).
        hop: frames between window starts (default ``frames // 2``).
        batch_size: at most this many windows go through the generator at once (memory stays bounded).

    Returns:
        ``(n_mels, n_frames)`` on the generator's device; where the generator is the identity, exactly the input.
    """
    if logmel.dim() != 2:
        raise ValueError(f"logmel must be (n_mels, n_frames), not {tuple(logmel.shape)}")
    hop = hop or max(1, frames // 2)
    if not 0 < hop <= frames or batch_size < 1:
        raise ValueError(f"need 0 < hop <= frames and batch_size >= 1 (hop {hop}, frames {frames}, "
                         f"batch_size {batch_size})")
    device = _module_device(generator, logmel.device)
    x = logmel.to(device=device, dtype=torch.float32)
    n_frames = x.shape[-1]
    padded = frames + math.ceil(max(0, n_frames - frames) / hop) * hop
    x = F.pad(x, (0, padded - n_frames), value=-1.0)[None]                 # (1, n_mels, padded)
    starts = window_starts(padded, frames=frames, hop=hop)
    stitcher = WindowStitcher(x.shape[:-1], n_frames=padded, frames=frames, fade=frames - hop, device=device)
    with torch.no_grad():
        for i in range(0, len(starts), batch_size):
            batch = starts[i:i + batch_size]
            translated = generator(torch.stack([x[..., s:s + frames] for s in batch]))  # (n, 1, n_mels, frames)
            if len(starts) == 1:
                return translated[0, 0, :, :n_frames]
            stitcher.add(translated, starts=batch)
    return stitcher.result()[0, :, :n_frames]


# ---------------------------------------------------------------------------------------------------------------
# Waveform → waveform

@dataclass(frozen=True)
class Conversion:
    wave: Tensor                 # (samples,) at audio.sample_rate, as long as the input; not normalised
    logmel_in: Tensor            # (n_mels, frames), normalised log-mel of the input
    logmel_out: Tensor           # (n_mels, frames), the translation
    spectral_convergence: float  # of |STFT(wave)| against the magnitude Griffin-Lim was given (0 is perfect)


def convert_waveform(wave: Tensor, *, generator: nn.Module, audio: AudioParams, hop: int | None = None,
                     n_iter: int = 32, phase_init: str = "source", batch_size: int = 16, seed: int = 0) -> Conversion:
    """Translate a mono waveform ``(samples,)`` at ``audio.sample_rate``; runs on the generator's device.

    Log-mel of the input (:class:`~specgan.audio.features.LogMel`) → :func:`translate_logmel` with windows of
    ``audio.frames`` → :class:`~specgan.audio.inverse.MelInverter`'s magnitude and ``n_iter`` Griffin-Lim
    iterations. ``phase_init="source"`` starts Griffin-Lim from the input's STFT phase (bins where the input is
    exactly silent get a random phase, else they could never gain energy); ``"random"`` from a random phase.
    ``seed`` seeds every random phase.

    Memory follows the block size, not the input's length: the log-mel is taken
    (:meth:`~specgan.audio.features.LogMel.in_blocks`), and the inversion done
    (:func:`~specgan.audio.inverse.invert_logmel`), a block at a time; up to one block (about a minute of audio),
    that is one Griffin-Lim pass over the whole clip. Only the waveforms and the log-mels grow with the length.
    """
    if phase_init not in PHASE_INITS:
        raise ConfigError(f"--phase-init {phase_init}: must be one of {', '.join(PHASE_INITS)}")
    if wave.dim() != 1:
        raise ValueError(f"wave must be mono (samples,), not {tuple(wave.shape)}")
    device = _module_device(generator, wave.device)
    length = wave.numel()
    x = padded_to_one_window(wave.to(device=device, dtype=torch.float32), n_fft=audio.n_fft)
    logmel_in = logmel_of_clip(x, params=audio)
    logmel_out = translate_logmel(logmel_in, generator=generator, frames=audio.frames, hop=hop,
                                  batch_size=batch_size)
    inversion = invert_logmel(logmel_out, inverter=MelInverter(audio).to(device), length=x.numel(), n_iter=n_iter,
                              phase_from=x if phase_init == "source" else None, seed=seed)
    sc = spectral_convergence_blocks(inversion.wave, inversion.magnitude_of, n_frames=logmel_out.shape[-1],
                                     n_fft=audio.n_fft, hop_length=audio.hop_length, win_length=audio.window_length)
    return Conversion(inversion.wave[:length], logmel_in, logmel_out, sc)


# ---------------------------------------------------------------------------------------------------------------
# Files

@dataclass(frozen=True)
class ConvertedFile:
    source: Path
    output: Path
    plot: Path | None
    seconds: float               # audio duration
    spectral_convergence: float
    elapsed: float               # wall seconds: load, translate, invert, write
    kept_output: bool = False    # ``output`` existed and was kept (--skip-existing); only ``plot`` was written

    @property
    def real_time_factor(self) -> float:
        """Seconds of processing per second of audio."""
        return self.elapsed / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class FailedFile:
    source: Path
    reason: str                  # the one-line AudioError message


@dataclass(frozen=True)
class ConvertReport:
    checkpoint: Path
    step: int
    domains: tuple[str, str]
    to: str
    picked: bool                 # the model was found under runs/ rather than given
    output: Path                 # the output file, or the output folder for a folder input
    sample_rate: int
    converted: list[ConvertedFile]
    failed: list[FailedFile]
    kept: list[Path] = field(default_factory=list)          # outputs that existed, left as they were
    passed_over: list[Path] = field(default_factory=list)   # inputs named as conversions to ``to`` already
    plotted: list[ConvertedFile] = field(default_factory=list)  # kept outputs given their missing plot only

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.converted)

    @property
    def elapsed(self) -> float:
        return sum(c.elapsed for c in self.converted)

    @property
    def real_time_factor(self) -> float:
        return self.elapsed / max(self.seconds, 1e-9)


def _mirrored(files: list[Path], *, src: Path, dst: Path) -> list[Path]:
    """Output paths under ``dst`` keeping each file's path relative to ``src``, as ``.wav``; files whose names
    differ only in the suffix (``a.wav``, ``a.flac``) keep it in the name (``a.wav.wav``, ``a.flac.wav``)."""
    plain = [dst / f.relative_to(src).with_suffix(".wav") for f in files]
    clashes = {p for p in plain if plain.count(p) > 1}
    outputs = [dst / f.relative_to(src).with_name(f.name + ".wav") if p in clashes else p
               for f, p in zip(files, plain)]
    writer: dict[Path, Path] = {}
    for file, path in zip(files, outputs):  # a kept suffix can meet another file's plain name (a.wav, a.wav.flac)
        if path in writer:
            raise SpecganError(f"{writer[path]} and {file} would both be written as {path}; rename one of them")
        writer[path] = file
    return outputs


def _check_writable(folder: Path) -> None:
    """One-line SpecganError unless ``folder`` (or the nearest existing folder above it) is writable."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SpecganError(f"{folder}: cannot create the output folder ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecganError(f"{folder}: output folder is not writable" if existing == folder else
                           f"{folder}: cannot create the output folder ({existing} is not writable)")


@dataclass
class ConvertPlan:
    """What a convert call will do, decided before any model is loaded: ``output`` (the file, or the folder of a
    folder input), the ``(input, output)`` ``jobs``, the outputs ``kept`` as they are (``skip_existing``: jobs
    whose every output exists), the ``existing`` outputs of the jobs left, which ``skip_existing`` keeps too (the
    audio of a job whose plot is missing, or the other way round), and the inputs ``passed_over`` because their
    names say they are conversions to the target already."""

    output: Path
    jobs: list[tuple[Path, Path]]
    kept: list[Path] = field(default_factory=list)
    existing: set[Path] = field(default_factory=set)
    passed_over: list[Path] = field(default_factory=list)


def _plan(src: Path, *, to: str, output: Path | None, into_folder: bool = False, plot: bool = False,
          overwrite: bool = False, skip_existing: bool = False) -> ConvertPlan:
    """The output (file or folder) and the (input, output) pairs, checked before any model is loaded.
    ``into_folder``: ``output`` names a folder even if it does not exist yet (it was given with a trailing /).
    Outputs that exist (with ``plot``, their ``.png`` too) are refused unless ``overwrite``; with
    ``skip_existing``, a job whose outputs all exist is left out (a folder's conversion continued, or extended)."""
    if overwrite and skip_existing:
        raise ConfigError("--overwrite and --skip-existing: choose one (replace outputs that exist, or keep them)")
    dst, jobs = _plan_outputs(src, to=to, output=output, into_folder=into_folder)
    plan = ConvertPlan(dst, jobs)
    if src.is_dir():  # name.to-B.wav beside its input: converting it to B again would convert a conversion
        plan.passed_over = [s for s, _ in jobs if s.stem.endswith(f".to-{to}")]
        plan.jobs = [(s, o) for s, o in jobs if not s.stem.endswith(f".to-{to}")]
        if not plan.jobs:
            raise AudioError(f"{src}: its {len(jobs)} audio file(s) are all named as conversions to {to} "
                             f"(*.to-{to}.*)")

    def outputs(out: Path) -> list[Path]:
        return [out, out.with_suffix(".png")] if plot else [out]

    if plot and src.is_file():  # (a folder's outputs lie outside it)
        picture = dst.with_suffix(".png")
        if picture.exists() and os.path.samefile(picture, src):  # e.g. a recording named take.png
            raise SpecganError(f"{picture}: the plot's name, is the input file; choose another output so the "
                               f"original is kept")

    if skip_existing:
        done = [all(p.exists() for p in outputs(o)) for _, o in plan.jobs]
        plan.kept = [o for (_, o), d in zip(plan.jobs, done) if d]
        plan.jobs = [job for job, d in zip(plan.jobs, done) if not d]
        plan.existing = {path for _, out in plan.jobs for path in outputs(out) if path.exists()}
    refuse_existing([path for _, out in plan.jobs for path in outputs(out)], overwrite=overwrite or skip_existing)
    return plan


def _plan_outputs(src: Path, *, to: str, output: Path | None,
                  into_folder: bool) -> tuple[Path, list[tuple[Path, Path]]]:
    """:func:`_plan`'s output and pairs, before checking which exist."""
    if output is not None:
        check_output_name(output)  # (a name too long for a file is no folder either)
    if src.is_file():
        if output is None:
            dst = src.with_name(f"{src.stem}.to-{to}.wav")
        elif output.is_dir() or into_folder:
            dst = output / f"{src.stem}.to-{to}.wav"
        else:
            dst = output
        if dst.suffix.lower() not in OUTPUT_FORMATS:
            folder = f"; to write into a folder, end it with {os.sep}: {dst}{os.sep}" if not dst.suffix else ""
            raise ConfigError(f"{dst}: unsupported output format (use .wav, .flac or .ogg){folder}")
        check_output_name(dst)
        if dst.exists() and os.path.samefile(dst, src):  # (a hard link to it too)
            raise SpecganError(f"{dst}: is the input file; choose another output so the original is kept")
        _check_writable(dst.parent)
        return dst, [(src, dst)]
    if not src.is_dir():
        raise SpecganError(f"{src}: not a regular file or folder" if src.exists() else  # a pipe, a device
                           f"{src}: no such file or folder")
    named = src if src.name not in ("", "..") else Path(os.path.abspath(src))  # "." and ".." name no folder
    dst = output if output is not None else named.with_name(f"{named.name}.to-{to}")
    check_output_name(dst)
    if (dst.exists() and not dst.is_dir()) or (not dst.exists() and dst.suffix.lower() in AUDIO_SUFFIXES):
        raise ConfigError(f"{dst}: {'is a file' if dst.exists() else 'looks like a file name'}; for a folder of "
                          f"inputs give an output folder")
    # (realpath: Path.resolve raised on a link that loops, an internal error; the folder's making names it instead)
    if Path(os.path.realpath(dst)).is_relative_to(os.path.realpath(src)):  # the input folder itself, or inside it
        raise SpecganError(f"{dst}: is inside the input folder {src}; choose another output so the originals "
                           f"are kept")
    files = audio_files(src)
    if not files:
        raise AudioError(f"{src}: no audio files found (looked for {', '.join(sorted(AUDIO_SUFFIXES))})")
    _check_writable(dst)
    outputs = _mirrored(files, src=src, dst=dst)
    for path in outputs:
        check_output_name(path)
    return dst, list(zip(files, outputs))


def _finish(wave: Tensor, *, rate: int, sample_rate: int, length: int | None = None) -> np.ndarray:
    """Resample (soxr HQ, as :func:`~specgan.audio.io.load_audio`) to ``length`` samples (cut, or zero-padded at the
    end, when given). (:func:`~specgan.audio.io.save_audio` scales down a peak above 1, never clips.)"""
    import soxr

    data = wave.detach().cpu().numpy().astype(np.float32)
    if sample_rate != rate:
        data = soxr.resample(data, rate, sample_rate, quality="HQ").astype(np.float32)
    if length is not None:
        data = np.pad(data[:length], (0, max(0, length - len(data))))
    return data


def convert_file(src: Path, dst: Path, *, translator: Translator, to: str, sample_rate: int | None = None,
                 n_iter: int = 32, phase_init: str = "source", batch_size: int = 16, seed: int = 0,
                 plot: bool = False, keep_output: bool = False) -> ConvertedFile:
    """Convert one file to domain ``to`` and write it to ``dst`` (mono, at ``sample_rate`` or the model's rate);
    with ``plot``, also ``dst`` with suffix ``.png`` (:func:`plot_conversion`).

    ``keep_output``: ``dst`` exists and is kept (``--skip-existing``), and only the plot is written, of that file
    as it is (its log-mel): nothing is converted, so the picture shows the audio that is there, whichever model
    wrote it. Its spectral convergence is not measured (NaN). Raises AudioError for an unusable input (or kept
    output)."""
    started = time.perf_counter()
    audio = translator.audio
    wave, source_rate = load_audio(src, sample_rate=audio.sample_rate)
    if keep_output:
        kept, _ = load_audio(dst, sample_rate=audio.sample_rate)
        logmel_in, logmel_out = (logmel_of_clip(clip.to(translator.device), params=audio) for clip in (wave, kept))
        frames = logmel_in.shape[-1]  # the kept file, made at another rate, can differ by a frame's rounding
        logmel_out = F.pad(logmel_out[:, :frames], (0, frames - min(frames, logmel_out.shape[-1])), value=-1.0)
        image = plot_conversion(logmel_in, logmel_out, dst.with_suffix(".png"), audio=audio,
                                titles=(f"input: {src.name}", f"kept output: {dst.name} (not converted again)"))
        return ConvertedFile(src, dst, image, wave.numel() / audio.sample_rate, math.nan,
                             time.perf_counter() - started, kept_output=True)
    result = convert_waveform(wave.to(translator.device), generator=translator.generator_to(to), audio=audio,
                              n_iter=n_iter, phase_init=phase_init, batch_size=batch_size, seed=seed)
    rate = sample_rate or audio.sample_rate
    length = None
    if rate != audio.sample_rate:  # the input's length at the output rate, rounded once, not twice via the model's
        with AudioFile(src) as source:
            length = output_length(source.frames, source_rate=source_rate, sample_rate=rate)
    image = None
    with made_parent(dst):  # (removed again, with the parents made for it, if the writes fail)
        save_audio(dst, _finish(result.wave, rate=audio.sample_rate, sample_rate=rate, length=length),
                   sample_rate=rate, comment=provenance(translator, to=to))
        if plot:
            image = plot_conversion(result.logmel_in, result.logmel_out, dst.with_suffix(".png"), audio=audio,
                                    titles=(f"input: {src.name}", f"converted to {to}"))
    return ConvertedFile(src, dst, image, wave.numel() / audio.sample_rate, result.spectral_convergence,
                         time.perf_counter() - started)


def plot_conversion(logmel_in: Tensor, logmel_out: Tensor, path: Path, *, audio: AudioParams,
                    titles: tuple[str, str]) -> Path:
    """Write ``path``, a PNG of the input (top) and output (bottom) normalised log-mels ``(n_mels, frames)``, with
    time and frequency axes (:func:`~specgan.spectrogram_figure.save_spectrogram_figure`): a column per frame, or
    per run of frames averaged when there are more than :data:`PLOT_MAX_COLUMNS`."""
    from specgan.spectrogram_figure import save_spectrogram_figure

    logmels = torch.stack([logmel_in, logmel_out])[:, None]     # (2, 1, n_mels, frames)
    squeeze = math.ceil(logmels.shape[-1] / PLOT_MAX_COLUMNS)
    if squeeze > 1:  # the mean of each run of `squeeze` frames, the last run possibly shorter
        logmels = F.avg_pool2d(logmels, kernel_size=(1, squeeze), ceil_mode=True)
    return save_spectrogram_figure([(titles[0], logmels[0, 0]), (titles[1], logmels[1, 0])], path, audio=audio,
                                   seconds_per_column=squeeze * audio.hop_length / audio.sample_rate)


def convert_path(src: str | os.PathLike, *, to: str, model: str | os.PathLike | None = None,
                 output: str | os.PathLike | None = None, sample_rate: int | None = None, n_iter: int = 32,
                 phase_init: str = "source", batch_size: int = 16, seed: int = 0, plot: bool = False,
                 overwrite: bool = False, skip_existing: bool = False, device: torch.device | str = "cpu",
                 runs_dir: Path = Path("runs"),
                 on_model: Callable[[Translator, bool], None] | None = None,
                 on_file: Callable[[ConvertedFile | FailedFile], None] | None = None,
                 on_warning: Callable[[str], None] | None = None) -> ConvertReport:
    """``specgan convert``: a file, or every audio file under a folder, to domain ``to``.

    Outputs: a file becomes ``<stem>.to-<to>.wav`` beside it, a folder ``<folder>.to-<to>/`` beside it with the
    same relative paths (as ``.wav``); ``output`` chooses instead (a .wav/.flac/.ogg file, or a folder: one that
    exists, or a string ending in /). Outputs that exist are refused (before any work) unless ``overwrite``
    replaces them or ``skip_existing`` keeps them and converts the rest (``kept`` in the report; a file whose
    audio exists but not its plot gets the plot, drawn from that audio, in ``plotted``, and one whose plot exists
    but not its audio is converted, the plot kept). In a folder,
    files named as conversions to ``to`` already (``*.to-<to>.*``) are passed over (``passed_over``). Ctrl-C
    after some of a folder's files were written raises InterruptedWithWorkKept, which says how to go on.
    Without ``model``, the newest translator under ``runs_dir`` with domain ``to`` (:func:`find_translator`).
    ``on_model(translator, picked)`` is called once the model is loaded, ``on_file`` after each file, and
    ``on_warning`` with a line for each damaged checkpoint passed over, and one for the inputs passed over.

    In a folder, a file that cannot be read (AudioError) is listed in ``failed`` and the rest go on; for a single
    file, the error is raised.
    """
    src = Path(src)
    if phase_init not in PHASE_INITS:
        raise ConfigError(f"--phase-init {phase_init}: must be one of {', '.join(PHASE_INITS)}")
    if not src.exists():
        raise SpecganError(f"{src}: no such file or folder")
    into_folder = isinstance(output, str) and output.endswith(("/", os.sep))
    plan = _plan(src, to=to, output=Path(output) if output is not None else None, into_folder=into_folder,
                 plot=plot, overwrite=overwrite, skip_existing=skip_existing)
    dst, jobs = plan.output, plan.jobs
    if plan.passed_over and on_warning:
        on_warning(f"passed over {len(plan.passed_over)} file(s) named as conversions to {to} already (e.g. "
                   f"{plan.passed_over[0]})")
    picked = model is None
    translator = load_translator(find_translator(to, runs_dir=runs_dir, on_warning=on_warning) if picked else model,
                                 device=device, on_warning=on_warning)
    translator.generator_to(to)  # an unknown domain fails before any work
    for _, target in jobs:
        check_output_rate(target, sample_rate or translator.audio.sample_rate)
    check_kept_outputs(plan.kept + sorted(p for p in plan.existing if p.suffix.lower() in OUTPUT_FORMATS),
                       translator=translator)
    if on_model:
        on_model(translator, picked)
    converted, failed, plotted = [], [], []
    try:
        for source, target in jobs:
            try:
                item = convert_file(source, target, translator=translator, to=to, sample_rate=sample_rate,
                                    n_iter=n_iter, phase_init=phase_init, batch_size=batch_size, seed=seed,
                                    plot=plot and target.with_suffix(".png") not in plan.existing,
                                    keep_output=target in plan.existing)
            except AudioError as e:
                if src.is_file():
                    raise
                item = FailedFile(source, str(e))
            (failed if isinstance(item, FailedFile) else plotted if item.kept_output else converted).append(item)
            if on_file:
                on_file(item)
    except KeyboardInterrupt as e:  # each file written is whole (atomic): say how to convert the rest
        if not converted:
            raise
        raise InterruptedWithWorkKept(
            f"{len(converted)} of {len(jobs)} file(s) converted into {dst}; the same command with --skip-existing "
            f"converts the rest", exit_code=getattr(e, "exit_code", 130)) from None
    return ConvertReport(translator.checkpoint, translator.step, translator.domains, to, picked, dst,
                         sample_rate or translator.audio.sample_rate, converted, failed, plan.kept,
                         plan.passed_over, plotted)

"""``specgan eval``: measure a trained model.

- A ``generate`` run on MNIST-like images: label accuracy, Fréchet distance, class entropy and within-class
  diversity of its samples
  (:func:`evaluate_run`; definitions in :mod:`specgan.metrics.generative`).
- A ``translate`` run against parallel recordings: each source utterance is converted and compared with the
  target utterance of the same name, next to the unconverted source against the same target, the baseline any
  conversion must beat (:func:`evaluate_translation`; definitions in :mod:`specgan.metrics.audio_quality`).

``specgan eval`` prints the result, then appends it as one JSON line to ``RUN/eval.jsonl``
(:func:`record_result`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from specgan.atomic import atomic_path
from specgan.data.image_data import ImageData, data_fingerprint
from specgan.data.loaders import load_data
from specgan.errors import AudioError, ConfigError, SpecganError, WriteError
from specgan.metrics.classifier import load_or_train_classifier
from specgan.metrics.generative import evaluate_generator
from specgan.sample import generator_from_checkpoint
from specgan.train.checkpoint import checkpoint_dir, load_model_checkpoint

#: ``--direction`` values: A2B converts the run's first domain into its second.
DIRECTIONS = ("A2B", "B2A")

#: Data kinds the reference classifier understands.
EVALUABLE = ("mnist", "fashion-mnist")


def evaluate_run(run_or_checkpoint: str | Path, *, n: int = 10000, seed: int = 0, device: torch.device,
                 data_path: Path | None = None, cache_dir: Path | None = None,
                 on_stage: Callable[[str], None] | None = None,
                 on_progress: Callable[[int, int], None] | None = None,
                 on_warning: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate a ``generate`` run on its own data (or ``data_path``); :func:`record_result` keeps the result.
    A run folder is measured at its newest intact checkpoint (``on_warning`` gets a line for each damaged one
    passed over).

    ``on_stage(text)`` announces each stage (loading data, training the classifier once, sampling) and
    ``on_progress(done, total)`` reports progress inside it, so a caller can show that work is going on.
    """
    checkpoint, state = load_model_checkpoint(run_or_checkpoint, on_warning=on_warning)
    if state["recipe"].get("task", "generate") == "translate":
        raise ConfigError(f"{run_or_checkpoint}: a translate run is measured against parallel recordings: "
                          f"specgan eval RUN --pairs SOURCE_DIR TARGET_DIR")
    model = generator_from_checkpoint(checkpoint, state, device=device)
    kind = state["recipe"]["data"]["kind"]
    if kind not in EVALUABLE:
        raise ConfigError(f"{model.checkpoint}: eval measures MNIST-like runs ({', '.join(EVALUABLE)}); this run "
                          f"trained on data.kind = {kind!r}")
    path = Path(data_path or state["recipe"]["data"]["path"])
    stage = on_stage or (lambda _text: None)
    stage(f"loading {kind} from {path}")
    train = load_data(kind, path, split="train")
    test = load_data(kind, path, split="test")
    if data_path is not None:
        _check_trained_on(state, {"train": train, "test": test}, data_path=data_path)
    stage("reference classifier (trained once, then cached)")
    classifier, info = load_or_train_classifier(path, kind=kind, train=train, test=test, cache_dir=cache_dir,
                                                device=device, on_progress=on_progress)
    if info["trained_now"] and info["reason"] != "missing" and on_warning:
        on_warning(f"{info['path']}: the cached reference classifier was {info['reason']} (damaged, or made for "
                   f"other data or code); it was trained again ({info['seconds']:.0f} s) and cached anew")
    stage(f"sampling and classifying {n} images")
    noise = torch.Generator().manual_seed(seed)

    def sample(k: int, labels: torch.Tensor | None) -> torch.Tensor:
        return model(torch.randn(k, model.z_dim, generator=noise), labels)

    started = time.perf_counter()
    metrics = evaluate_generator(sample, classifier=classifier, real_test=test, n=n, conditional=model.conditional,
                                 seed=seed, on_progress=on_progress)
    result = {"checkpoint": str(model.checkpoint), "step": model.step, "kind": kind, "data": str(path), "seed": seed,
              "classifier_test_accuracy": info["accuracy"], "seconds": round(time.perf_counter() - started, 2),
              **metrics}
    return result


def _check_trained_on(state: dict[str, Any], splits: dict[str, ImageData], *, data_path: Path) -> None:
    """A run is measured against the data it trained on, wherever that is now: the images of ``data_path``'s split
    the run trained on must be the run's (:func:`~specgan.data.image_data.data_fingerprint`; checkpoints written
    before it was kept are not checked). MNIST and Fashion-MNIST share file names, shapes and ten classes."""
    saved = state.get("data", {}).get("fingerprint")
    split = state["recipe"]["data"].get("split", "train")
    if saved and split in splits and data_fingerprint(splits[split]) != saved:
        raise ConfigError(f"--data {data_path}: not the data this run trained on (data.path = "
                          f"{state['recipe']['data']['path']!r}; the {split} images differ); eval measures a run "
                          f"against its own data")


def results_log(checkpoint: Path) -> Path:
    """Where the results of ``checkpoint`` are kept: ``RUN/eval.jsonl`` for a checkpoint in its run's checkpoints
    folder, else ``eval.jsonl`` beside the checkpoint (never in a folder above it that is no run)."""
    folder = Path(checkpoint).parent
    run = folder.parent
    return (run if checkpoint_dir(run) == folder else folder) / "eval.jsonl"


def record_result(result: dict[str, Any]) -> Path:
    """Append ``result`` (from :func:`evaluate_run` or :func:`evaluate_translation`) as one JSON line to
    :func:`results_log` of its checkpoint, atomically; returns that file."""
    log = results_log(Path(result["checkpoint"]))
    if log.exists() and not log.is_file():
        raise SpecganError(f"{log}: not a file; the result above was not recorded")
    # Two evals of one run (several checkpoints measured at once) each read, then replace, the log: one at a time,
    # or the second had dropped the first's line. The lock is on the folder itself: train's is on its .lock file.
    try:
        folder = os.open(log.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:  # e.g. a file where the run folder was
        raise WriteError(log, e.strerror or str(e)) from None
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        previous = log.read_bytes() if log.exists() else b""  # as bytes: whatever else is in it is kept as it is
        if previous and not previous.endswith(b"\n"):  # a line cut short by someone else: this one starts anew
            previous += b"\n"
        with atomic_path(log) as tmp:
            tmp.write_bytes(previous + json.dumps(result).encode() + b"\n")
    finally:
        os.close(folder)  # (which releases the lock)
    return log


def parallel_pairs(source_dir: Path, target_dir: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Source files under ``source_dir`` paired with the target file at the same relative path and stem under
    ``target_dir`` (any audio suffix): ``evaluation_all/SF1/200001.flac`` ↔ ``evaluation_all/TM3/200001.flac``.

    Returns ``(pairs, unmatched sources)``; both sorted.
    """
    from specgan.audio.io import audio_files

    for folder in (source_dir, target_dir):
        if not Path(folder).is_dir():
            raise ConfigError(f"--pairs: {folder}: " + ("a file; --pairs takes two folders of same-named recordings"
                                                        if Path(folder).exists() else "no such folder"))
    targets = _by_name(audio_files(target_dir), folder=target_dir)
    pairs, unmatched = [], []
    for key, source in _by_name(audio_files(source_dir), folder=source_dir).items():
        (pairs.append((source, targets[key])) if key in targets else unmatched.append(source))
    return pairs, unmatched


def _by_name(files: list[Path], *, folder: Path) -> dict[Path, Path]:
    """``files`` under ``folder`` by their path relative to it without the suffix, the name that pairs them; two
    files of one name (``x.wav`` and ``x.flac``) are a ConfigError naming both: one had been taken silently."""
    named: dict[Path, Path] = {}
    for file in files:
        key = file.relative_to(folder).with_suffix("")
        if key in named:
            raise ConfigError(f"--pairs: {named[key]} and {file}: two recordings of one name; keep the one that is "
                              f"the sentence's, so that each pair is one source and one target")
        named[key] = file
    return named


def _unscorable(wave: torch.Tensor, *, sample_rate: int) -> str | None:
    """Why a recording ``(samples,)`` at ``sample_rate`` Hz cannot be scored by :mod:`specgan.metrics.audio_quality`,
    or None: shorter than one analysis frame, or silent (the distances of silence measure nothing)."""
    from specgan.audio.io import output_length, peak_amplitude, silence_reason
    from specgan.metrics.audio_quality import ANALYSIS_RATE, N_FFT

    if output_length(wave.shape[-1], source_rate=sample_rate, sample_rate=ANALYSIS_RATE) <= N_FFT // 2:
        return (f"too short to score ({wave.shape[-1] / sample_rate * 1000:.0f} ms; one analysis frame is "
                f"{N_FFT / ANALYSIS_RATE * 1000:.0f} ms)")
    silent = silence_reason(peak_amplitude(wave))  # (load_audio refused NaN and infinite samples)
    return f"{silent}, nothing to score" if silent else None


def evaluate_translation(run_or_checkpoint: str | Path, *, source_dir: Path, target_dir: Path,
                         direction: str = "A2B", n_iter: int = 32, device: torch.device | str = "cpu",
                         on_progress: Callable[[int, int], None] | None = None,
                         on_warning: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Convert every source utterance that has a parallel target and measure both against the target.

    A pair whose source or target cannot be read is left out and listed in ``failed`` with the reason.
    Per pair: MCD and LSD of the conversion against the target, the same for the unconverted source (the
    baseline), the spectral convergence of Griffin-Lim against the magnitude it was given, and the MCD of the
    target itself passed through log-mel and Griffin-Lim (the floor this inversion puts under any conversion).
    Returns means over pairs, the ratio converted / baseline MCD (below 1 means the conversion moved towards the
    target; it does not depend on the cepstrum's scaling constant) and the per-pair figures (:func:`record_result`
    keeps them).
    """
    from specgan.audio.io import load_audio
    from specgan.convert import convert_waveform, load_translator
    from specgan.metrics.audio_quality import audio_distances

    if direction not in DIRECTIONS:
        raise ConfigError(f"--direction {direction}: must be one of {', '.join(DIRECTIONS)}")
    translator = load_translator(run_or_checkpoint, device=device, on_warning=on_warning)
    src_domain, dst_domain = translator.domains if direction == "A2B" else translator.domains[::-1]
    # Folders named after the domains the other way round: the source recordings are in the target's voice, so the
    # scores would measure nothing, and would be appended to the run's eval.jsonl as if they did.
    # (Absolute: "." names no folder; links are taken by the names given.)
    if (Path(os.path.abspath(source_dir)).name, Path(os.path.abspath(target_dir)).name) == (dst_domain, src_domain):
        other = "B2A" if direction == "A2B" else "A2B"
        raise ConfigError(f"--pairs {source_dir} {target_dir}: the folders are named {dst_domain} and {src_domain}, "
                          f"but --direction {direction} converts {src_domain} → {dst_domain}; --direction {other} "
                          f"converts {dst_domain} → {src_domain}, or give the folders the other way round")
    # (realpath: Path.resolve raised on a link that loops, which parallel_pairs names as no such folder)
    if os.path.realpath(source_dir) == os.path.realpath(target_dir):  # every conversion scored against its own input
        raise ConfigError(f"--pairs {source_dir} {target_dir}: the same folder twice; give the source speaker's "
                          f"recordings and the target speaker's same sentences")
    pairs, unmatched = parallel_pairs(Path(source_dir), Path(target_dir))
    if not pairs:
        raise ConfigError(f"--pairs {source_dir} {target_dir}: no source file has a target of the same name")
    rate = translator.audio.sample_rate
    generator = translator.generator_to(dst_domain)
    rows = []
    started = time.perf_counter()
    failed = []
    for i, (source, target) in enumerate(pairs):
        try:
            wave, _ = load_audio(source, sample_rate=rate)
            reference, _ = load_audio(target, sample_rate=rate)
            for path, recording in ((source, wave), (target, reference)):
                reason = _unscorable(recording, sample_rate=rate)
                if reason:
                    raise AudioError(f"{path}: {reason}")
        except AudioError as e:  # one unusable recording costs its pair, not the whole measurement
            failed.append({"source": str(source), "target": str(target), "reason": str(e)})
            continue
        conversion = convert_waveform(wave.to(translator.device), generator=generator, audio=translator.audio,
                                      n_iter=n_iter)
        converted = audio_distances(reference, conversion.wave.cpu(), sample_rate=rate)
        baseline = audio_distances(reference, wave, sample_rate=rate)
        resynthesis = convert_waveform(reference.to(translator.device), generator=nn.Identity(),
                                       audio=translator.audio, n_iter=n_iter)
        floor = audio_distances(reference, resynthesis.wave.cpu(), sample_rate=rate)
        rows.append({"source": str(source), "target": str(target), "mcd_db": converted.mcd_db,
                     "baseline_mcd_db": baseline.mcd_db, "lsd_db": converted.lsd_db,
                     "baseline_lsd_db": baseline.lsd_db, "resynthesis_mcd_db": floor.mcd_db,
                     "spectral_convergence": conversion.spectral_convergence})
        if on_progress:
            on_progress(i + 1, len(pairs))

    if not rows:
        raise AudioError(f"--pairs {source_dir} {target_dir}: none of the {len(pairs)} pairs could be read "
                         f"(first: {failed[0]['reason']})")

    def mean(key: str) -> float:
        return round(sum(r[key] for r in rows) / len(rows), 4)

    result = {"checkpoint": str(translator.checkpoint), "step": translator.step, "task": "translate",
              "direction": f"{src_domain}->{dst_domain}", "source_dir": str(source_dir),
              "target_dir": str(target_dir), "pairs": len(rows), "unmatched": len(unmatched),
              "unmatched_sources": [str(path) for path in unmatched], "failed": failed,
              "griffinlim_iters": n_iter, "mcd_db": mean("mcd_db"), "baseline_mcd_db": mean("baseline_mcd_db"),
              "lsd_db": mean("lsd_db"), "baseline_lsd_db": mean("baseline_lsd_db"),
              "resynthesis_mcd_db": mean("resynthesis_mcd_db"),
              "spectral_convergence": mean("spectral_convergence"),
              "seconds": round(time.perf_counter() - started, 2), "per_pair": rows}
    # None when every source already is its target (a baseline of 0 dB leaves nothing to improve on)
    result["mcd_ratio"] = round(result["mcd_db"] / result["baseline_mcd_db"], 4) if result["baseline_mcd_db"] else None
    return result

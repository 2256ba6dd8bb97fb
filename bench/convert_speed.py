"""``specgan convert`` real-time factor (wall seconds / audio seconds; below 1 is faster than real time) on a
60 s input, with its breakdown; optionally against the naive way (each window through the generator and then
through librosa's ``mel_to_audio`` on its own, windows joined end to end).

The input is the demo corpus's ``data/demo/voices/kal`` clips (in git, 16 kHz) joined end to end and cut to
``--seconds``. The translator is a 1-step training run of ``recipes/voice_convert.toml`` on a few demo clips of
kal and slt (the weights do not matter for speed): the recipe's model size on a GPU, ``CPU_SIZE`` on a CPU.

    python bench/convert_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import ROOT, machine, result_name, set_threads, sync, versions, write_json
from specgan.audio.features import LogMel, db_to_power, denormalize_db
from specgan.audio.inverse import MelInverter, block_size, griffinlim, spectral_convergence_blocks, stft
from specgan.audio.io import load_audio, save_audio
from specgan.audio.params import resolve_audio_params
from specgan.convert import _finish, convert_path, load_translator, translate_logmel
from specgan.data.prep import prep
from specgan.train.config import load_recipe
from specgan.train.loop import train

RECIPE = ROOT / "recipes" / "voice_convert.toml"
VOICES = ROOT / "data" / "demo" / "voices"
CPU_SIZE = ["model.channels=16", "model.n_blocks=3", "train.batch_size=8"]
TINY_SIZE = ["model.channels=4", "model.n_blocks=1", "train.batch_size=2"]
#: Real-time factor goals (wall / audio; lower is better) — none set by the issue; reported only.
SOURCE, TARGET = "kal", "slt"


def build_input(path: Path, *, seconds: float, sample_rate: int) -> float:
    """Join the source speaker's clips up to ``seconds`` and write them to ``path``; returns the duration."""
    pieces, total = [], 0
    for f in sorted((VOICES / SOURCE).glob("*.flac")):
        wave, _ = load_audio(f, sample_rate=sample_rate)
        pieces.append(wave)
        total += wave.numel()
        if total >= seconds * sample_rate:
            break
    wave = torch.cat(pieces)[: int(seconds * sample_rate)]
    save_audio(path, wave.numpy(), sample_rate=sample_rate)
    return wave.numel() / sample_rate


def build_translator(work: Path, *, device: torch.device, size: list[str], clips: int = 4) -> Path:
    """A translate run (1 step) on ``clips`` demo clips per speaker; returns the run folder."""
    src = work / "voices"
    for speaker in (SOURCE, TARGET):
        (src / speaker).mkdir(parents=True)
        for f in sorted((VOICES / speaker).glob("*.flac"))[:clips]:
            shutil.copy(f, src / speaker / f.name)
    dataset, run = work / "dataset", work / "run"
    prep(src, dataset, params=resolve_audio_params(recipe=RECIPE), domains=(SOURCE, TARGET), workers=1)
    recipe = load_recipe(RECIPE, overrides=[f"data.path={dataset}", f'data.domains=["{SOURCE}", "{TARGET}"]',
                                            f"output.dir={run}", "train.steps=1", *size])
    train(recipe, device=device)
    return run


def breakdown(src: Path, *, translator, device: torch.device, n_iter: int, out: Path) -> dict[str, float]:
    """Wall seconds of each stage of ``convert_file``, timed apart: for an input of one Griffin-Lim block (60 s at
    16 kHz is), the work ``convert_waveform`` does through ``invert_logmel``."""
    audio = translator.audio
    generator = translator.generator_to(TARGET)
    times = {}

    def stage(name, fn):
        sync(device)
        started = time.perf_counter()
        value = fn()
        sync(device)
        times[name] = time.perf_counter() - started
        return value

    wave = stage("load", lambda: load_audio(src, sample_rate=audio.sample_rate)[0].to(device))
    block_frames, _ = block_size(n_fft=audio.n_fft, hop_length=audio.hop_length)
    assert 1 + wave.numel() // audio.hop_length <= block_frames, "breakdown times inputs of one block"
    logmel = stage("log-mel", lambda: LogMel(audio).to(device).in_blocks(wave, block_frames=block_frames))
    translated = stage("generator (windows + stitching)",
                       lambda: translate_logmel(logmel, generator=generator, frames=audio.frames))
    inverter = MelInverter(audio).to(device)
    magnitude = stage("mel -> linear (NNLS)", lambda: inverter.magnitude(translated))
    spec_args = dict(n_fft=audio.n_fft, hop_length=audio.hop_length, win_length=audio.window_length)
    rng = torch.Generator(device=device).manual_seed(0)
    init = stage("source phase (STFT)", lambda: stft(wave, **spec_args))
    result = stage("Griffin-Lim", lambda: griffinlim(magnitude, **spec_args, n_iter=n_iter, init=init,
                                                     length=wave.numel(), generator=rng))
    stage("spectral convergence", lambda: spectral_convergence_blocks(
        result, lambda start, end: magnitude[:, start:end], n_frames=magnitude.shape[-1], **spec_args))
    stage("write", lambda: save_audio(out, _finish(result, rate=audio.sample_rate, sample_rate=audio.sample_rate),
                                      sample_rate=audio.sample_rate))
    return times


def naive(src: Path, *, translator, device: torch.device, seconds: float, n_iter: int) -> float:
    """Wall seconds of the naive way on the first ``seconds`` of ``src``: non-overlapping windows, each through
    the generator alone and then through ``librosa.feature.inverse.mel_to_audio`` alone, joined end to end."""
    import librosa

    audio = translator.audio
    generator = translator.generator_to(TARGET)
    started = time.perf_counter()
    wave, _ = load_audio(src, sample_rate=audio.sample_rate)
    wave = wave[: int(seconds * audio.sample_rate)]
    logmel = LogMel(audio)(wave)
    pieces = []
    for start in range(0, logmel.shape[-1] - audio.frames + 1, audio.frames):
        window = logmel[None, None, :, start:start + audio.frames].to(device)
        with torch.no_grad():
            out = generator(window)[0, 0].float().cpu()
        power = db_to_power(denormalize_db(out, min_db=audio.min_db, max_db=audio.max_db)).double().numpy()
        pieces.append(librosa.feature.inverse.mel_to_audio(
            power, sr=audio.sample_rate, n_fft=audio.n_fft, hop_length=audio.hop_length,
            win_length=audio.window_length, power=2.0, n_iter=n_iter, fmin=audio.f_min, fmax=audio.f_max))
    if not pieces:
        raise SystemExit(f"--naive-seconds {seconds:g}: shorter than one window of the model ({audio.frames} frames)")
    np.concatenate(pieces)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=32, help="Griffin-Lim iterations (convert's default)")
    parser.add_argument("--naive-seconds", type=float, default=None,
                        help="seconds of input for the naive reference (0: skip; default 10 on a CPU, 0 on a GPU)")
    parser.add_argument("--tiny", action="store_true", help="tiny model, 1 repeat: checks the code paths only")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    size = TINY_SIZE if args.tiny else ([] if device.type == "cuda" else CPU_SIZE)
    naive_seconds = args.naive_seconds if args.naive_seconds is not None else (10.0 if device.type == "cpu" else 0)
    work = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        started = time.perf_counter()
        run = build_translator(work, device=device, size=size)
        setup_s = time.perf_counter() - started
        audio = load_translator(run).audio
        src = work / "input.wav"
        seconds = build_input(src, seconds=args.seconds, sample_rate=audio.sample_rate)
        print(f"convert: {seconds:.1f} s input, translator {run} ({setup_s:.1f} s to make), device {device}")

        calls, files = [], []
        for i in range(args.repeats + 1):  # the first is an untimed warm-up
            sync(device)
            t0 = time.perf_counter()
            report = convert_path(src, to=TARGET, model=run, output=work / "out.wav", device=device,
                                  n_iter=args.iters, overwrite=True)  # each repeat writes the same file
            sync(device)
            if i:
                calls.append(time.perf_counter() - t0)
                files.append(report.converted[0].elapsed)
                print(f"  repeat {i}: convert_path {calls[-1]:.3f} s, file {files[-1]:.3f} s "
                      f"(RTF {files[-1] / seconds:.4f})")
        translator = load_translator(run, device=device)
        stages = [breakdown(src, translator=translator, device=device, n_iter=args.iters, out=work / "b.wav")
                  for _ in range(max(1, args.repeats))]
        stage_s = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
        model = load_recipe(run / "recipe.toml").model
        result = {
            "benchmark": "convert_speed", "device": str(device), "machine": machine(), "versions": versions(),
            "threads": torch.get_num_threads(),
            "input": f"data/demo/voices/{SOURCE} clips joined, {seconds:.1f} s at {audio.sample_rate} Hz",
            "audio_seconds": seconds, "griffinlim_iters": args.iters, "repeats": args.repeats,
            "model": {"name": model.name, "channels": model.channels, "n_blocks": model.n_blocks},
            "frames": audio.frames, "hop": audio.frames // 2,
            "file_s": files, "call_s": calls,
            "median_file_s": statistics.median(files), "median_call_s": statistics.median(calls),
            "rtf": statistics.median(files) / seconds, "x_realtime": seconds / statistics.median(files),
            "rtf_with_model_load": statistics.median(calls) / seconds,
            "stages_s": stage_s,
            "note": "file_s: convert_file (read, log-mel, windows through the generator, stitching, NNLS, "
                    "Griffin-Lim from the source phase, write); call_s: the whole convert_path call, which also "
                    "loads the checkpoint. Stages timed apart in a separate pass (device synchronised around each).",
        }
        if naive_seconds:
            t = naive(src, translator=translator, device=device, seconds=min(naive_seconds, seconds),
                      n_iter=args.iters)
            result["naive"] = {"seconds": min(naive_seconds, seconds), "wall_s": t,
                               "rtf": t / min(naive_seconds, seconds),
                               "how": "non-overlapping windows, generator one window at a time, librosa "
                                      "mel_to_audio per window (same iterations), joined end to end"}
            print(f"  naive: RTF {result['naive']['rtf']:.3f} on {min(naive_seconds, seconds):.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"convert: RTF {result['rtf']:.4f} ({result['x_realtime']:.0f}x real time) on {device}; stages "
          + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in stage_s.items()))
    path = write_json(result_name("convert_speed", device) + ("_tiny" if args.tiny else ""), result,
                      Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

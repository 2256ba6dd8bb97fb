"""``specgan convert``'s peak memory and time on long inputs: Griffin-Lim in blocks (the default, see
``inverse.griffinlim_blocks``) against one Griffin-Lim pass over the whole clip (the same convert with the block
size patched to infinity, which is what convert did before), on the same inputs in the same run.

Each measurement is a fresh child process, so that its peak resident memory (``VmHWM``) is its own: it loads the
translator, reads the input, and converts it with ``convert_file``. Memory is reported as the peak and as the
growth over the process's resident memory just before the conversion (Python, torch and the model). The two
outputs are compared too: the relative difference of the waveforms (how far the blocks are from one pass).

The input is the demo corpus's kal clips (in git, 16 kHz) repeated to each duration; the translator is a 1-step
run of ``recipes/voice_convert.toml`` at ``convert_speed.CPU_SIZE`` (the weights do not matter here).

    python bench/convert_memory.py --minutes 1,5,20
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from common import machine, result_name, set_threads, versions, write_json
from convert_speed import CPU_SIZE, SOURCE, TARGET, TINY_SIZE, VOICES, build_translator

VARIANTS = ("blocks", "one_pass")


def build_long_input(path: Path, *, minutes: float, sample_rate: int) -> float:
    """The source speaker's demo clips joined, repeated to ``minutes``, written to ``path``; returns seconds."""
    from specgan.audio.io import load_audio

    clips = torch.cat([load_audio(f, sample_rate=sample_rate)[0] for f in sorted((VOICES / SOURCE).glob("*.flac"))])
    samples = int(minutes * 60 * sample_rate)
    wave = clips.repeat(-(-samples // clips.numel()))[:samples]
    sf.write(path, wave.numpy(), sample_rate)
    return samples / sample_rate


def _resident_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(args) -> None:
    """One conversion in this process; prints its JSON line."""
    from specgan.audio import inverse
    from specgan.convert import convert_file, load_translator

    set_threads(args.threads)
    if args.variant == "one_pass":
        inverse.BLOCK_VALUES = 1 << 62   # one block, however long the input: one pass over the whole clip
    translator = load_translator(args.run)
    before = _resident_mb("VmRSS")
    started = time.perf_counter()
    result = convert_file(Path(args.input), Path(args.output), translator=translator, to=TARGET)
    wall = time.perf_counter() - started
    peak = _resident_mb("VmHWM")
    print(json.dumps({"variant": args.variant, "wall_s": wall, "peak_mb": peak, "before_mb": before,
                      "growth_mb": peak - before, "spectral_convergence": result.spectral_convergence}))


def measure(run: Path, src: Path, out: Path, *, variant: str, threads: int | None) -> dict:
    command = [sys.executable, __file__, "--child", "--variant", variant, "--run", str(run), "--input", str(src),
               "--output", str(out)] + (["--threads", str(threads)] if threads else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{variant} on {src.name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="1,5,20", help="comma-separated input durations in minutes")
    parser.add_argument("--repeats", type=int, default=1, help="measurements of each variant per duration")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tiny", action="store_true", help="tiny model: checks the code paths only")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return None
    set_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_convert_memory_"))
    rows = []
    try:
        run = build_translator(work, device=torch.device("cpu"), size=TINY_SIZE if args.tiny else CPU_SIZE)
        from specgan.convert import load_translator

        audio = load_translator(run).audio
        for minutes in (float(m) for m in args.minutes.split(",")):
            src = work / f"input_{minutes:g}min.wav"
            seconds = build_long_input(src, minutes=minutes, sample_rate=audio.sample_rate)
            runs = {v: [] for v in VARIANTS}
            for _ in range(args.repeats):   # interleaved: blocks, one pass, blocks, ...
                for variant in VARIANTS:
                    runs[variant].append(measure(run, src, work / f"{variant}.wav", variant=variant,
                                                 threads=args.threads))
                    print(f"convert_memory: {minutes:g} min, {variant}: {runs[variant][-1]}")
            outputs = {v: sf.read(work / f"{v}.wav", dtype="float64")[0] for v in VARIANTS}
            difference = float(np.linalg.norm(outputs["blocks"] - outputs["one_pass"])
                               / max(np.linalg.norm(outputs["one_pass"]), 1e-12))
            row = {"minutes": minutes, "audio_seconds": seconds, "waveform_difference": difference}
            for variant in VARIANTS:
                row[variant] = {key: statistics.median(r[key] for r in runs[variant])
                                for key in ("wall_s", "peak_mb", "growth_mb", "before_mb", "spectral_convergence")}
                row[variant]["runs"] = runs[variant]
            row["peak_ratio"] = row["one_pass"]["peak_mb"] / row["blocks"]["peak_mb"]
            row["speedup"] = row["one_pass"]["wall_s"] / row["blocks"]["wall_s"]
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "convert_memory", "device": "cpu", "machine": machine(), "versions": versions(),
              "threads": torch.get_num_threads(), "model": "tiny" if args.tiny else CPU_SIZE,
              "input": f"data/demo/voices/{SOURCE} clips joined and repeated, {audio.sample_rate} Hz",
              "n_fft": audio.n_fft, "hop_length": audio.hop_length, "repeats": args.repeats, "rows": rows}
    path = write_json(result_name("convert_memory", "cpu") + ("_tiny" if args.tiny else ""), result,
                      Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

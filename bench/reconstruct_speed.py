"""Mel → audio: specgan's inverse (NNLS mel→linear + fast Griffin-Lim) against librosa's ``mel_to_audio`` at
the same iteration count, on the same real clips: wall time, how many times faster than real time (audio seconds
per wall second), and spectral convergence against the original STFT magnitude (lower is better).

Clips: the first ``--clips / 2`` (sorted) of ``vcc2016/evaluation_all/SF1`` and ``.../TM3`` in the data mirror.
On a GPU the result goes to ``reconstruct_speed_cuda.json`` (librosa still runs on the CPU)."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from common import data_mirror, machine, result_name, set_threads, timed, versions, write_json
from specgan.audio.features import LogMel, db_to_power, denormalize_db
from specgan.audio.inverse import MelInverter, spectral_convergence, stft
from specgan.audio.io import load_audio
from specgan.audio.params import AudioParams


#: Goal on a GPU: at least this many times faster than real time.
GOAL_X_REALTIME_GPU = 500.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--iters", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--librosa-repeats", type=int, default=None, help="default: --repeats; 0 skips librosa")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="folder for the JSON (default bench/out)")
    parser.add_argument("--suffix", default="", help="added to the JSON's name (_tiny for a check of the code "
                                                      "paths, which must not pass for a result)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    librosa_repeats = args.repeats if args.librosa_repeats is None else args.librosa_repeats
    note = None
    if librosa_repeats:
        try:
            import librosa
        except ImportError as e:  # the GPU figure does not need it
            librosa_repeats, note = 0, f"librosa not importable ({e}); its side was skipped"
            print(note)
    root = data_mirror() / "vcc2016" / "evaluation_all"
    files = [f for s in ("SF1", "TM3") for f in sorted((root / s).glob("*.flac"))[: -(-args.clips // 2)]]
    if not files:
        raise SystemExit(f"no clips under {root}/SF1 and {root}/TM3")
    p = AudioParams()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    logmel, inverter = LogMel(p).to(device), MelInverter(p).to(device)
    spec_args = dict(n_fft=p.n_fft, hop_length=p.hop_length)
    rows = []
    for f in files:
        wave, _ = load_audio(f, sample_rate=p.sample_rate)
        wave = wave.to(device)
        normalized = logmel(wave)
        mel_power = db_to_power(denormalize_db(normalized, min_db=p.min_db, max_db=p.max_db)).cpu().double().numpy()

        def ours():
            out = inverter(normalized, n_iter=args.iters, length=wave.numel(),
                           generator=torch.Generator(device=device).manual_seed(0))
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        def reference():
            np.random.seed(0)
            return librosa.feature.inverse.mel_to_audio(
                mel_power, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, power=2.0, n_iter=args.iters,
                length=wave.numel(), pad_mode="reflect")

        ours_t, _, ours_wave = timed(ours, repeats=args.repeats)
        target = stft(wave, **spec_args).abs()

        def sc(x):
            return float(spectral_convergence(reference=target, estimate=stft(x, **spec_args).abs()))

        seconds = wave.numel() / p.sample_rate
        row = {"file": f"{f.parent.name}/{f.name}", "seconds": seconds, "specgan_s": ours_t,
               "specgan_x_realtime": seconds / ours_t, "specgan_sc": sc(ours_wave)}
        if librosa_repeats:
            ref_t, _, ref_wave = timed(reference, repeats=librosa_repeats)
            row.update({"librosa_s": ref_t, "speedup": ref_t / ours_t, "librosa_x_realtime": seconds / ref_t,
                        "librosa_sc": sc(torch.from_numpy(ref_wave).float().to(device))})
        rows.append(row)
        print(f"{row['file']}: {seconds:.1f} s, specgan {ours_t * 1000:.1f} ms ({row['specgan_x_realtime']:.0f}x "
              f"real time, SC {row['specgan_sc']:.3f})" + (f", librosa {row['librosa_s'] * 1000:.0f} ms (SC "
                                                           f"{row['librosa_sc']:.3f})" if librosa_repeats else ""))
    result = {
        "benchmark": "reconstruct_speed", "machine": machine(), "versions": versions(), "device": device,
        "threads": torch.get_num_threads(), "n_iter": args.iters, "repeats": args.repeats,
        "librosa_repeats": librosa_repeats,
        "source": "VCC2016 evaluation clips, resampled to 22050 Hz, default audio parameters", "clips": rows,
        "median_specgan_x_realtime": statistics.median(r["specgan_x_realtime"] for r in rows),
        "median_specgan_sc": statistics.median(r["specgan_sc"] for r in rows),
        "goal_speedup": 10.0,
    }
    if device.startswith("cuda"):
        result["goal_x_realtime"] = GOAL_X_REALTIME_GPU
    if note:
        result["note"] = note
    if librosa_repeats:
        result.update({"median_speedup": statistics.median(r["speedup"] for r in rows),
                       "median_librosa_sc": statistics.median(r["librosa_sc"] for r in rows),
                       "median_librosa_x_realtime": statistics.median(r["librosa_x_realtime"] for r in rows)})
        print(f"reconstruct: median speed-up {result['median_speedup']:.1f}×, median SC specgan "
              f"{result['median_specgan_sc']:.3f} vs librosa {result['median_librosa_sc']:.3f}")
    print(f"reconstruct on {device}: median {result['median_specgan_x_realtime']:.0f}x faster than real time")
    write_json(result_name("reconstruct_speed", device) + args.suffix, result, Path(args.out) if args.out else None)
    return result


if __name__ == "__main__":
    main()

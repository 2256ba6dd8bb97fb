"""Mel → audio: specgan's inverse (NNLS mel→linear + fast Griffin-Lim) against librosa's ``mel_to_audio`` at
the same iteration count, on the same real clips: wall time and spectral convergence against the original STFT
magnitude (lower is better)."""

from __future__ import annotations

import argparse
import statistics

import librosa
import numpy as np
import torch

from common import data_mirror, machine, timed, write_json
from specgan.audio.features import LogMel, db_to_power, denormalize_db
from specgan.audio.inverse import MelInverter, spectral_convergence, stft
from specgan.audio.io import load_audio
from specgan.audio.params import AudioParams


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--iters", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = data_mirror() / "vcc2016" / "evaluation_all"
    files = [f for s in ("SF1", "TM3") for f in sorted((root / s).glob("*.flac"))[: -(-args.clips // 2)]]
    p = AudioParams()
    device = "cuda" if torch.cuda.is_available() else "cpu"
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
        ref_t, _, ref_wave = timed(reference, repeats=args.repeats)
        target = stft(wave, **spec_args).abs()

        def sc(x):
            return float(spectral_convergence(reference=target, estimate=stft(x, **spec_args).abs()))

        rows.append({"file": f"{f.parent.name}/{f.name}", "seconds": wave.numel() / p.sample_rate,
                     "specgan_s": ours_t, "librosa_s": ref_t, "speedup": ref_t / ours_t,
                     "specgan_sc": sc(ours_wave), "librosa_sc": sc(torch.from_numpy(ref_wave).float().to(device))})
        print(f"{rows[-1]['file']}: {rows[-1]['seconds']:.1f} s, specgan {ours_t * 1000:.0f} ms "
              f"(SC {rows[-1]['specgan_sc']:.3f}), librosa {ref_t * 1000:.0f} ms (SC {rows[-1]['librosa_sc']:.3f})")
    result = {
        "benchmark": "reconstruct_speed", "machine": machine(), "device": device, "n_iter": args.iters,
        "source": "VCC2016 evaluation clips, resampled to 22050 Hz, default audio parameters", "clips": rows,
        "median_speedup": statistics.median(r["speedup"] for r in rows),
        "median_specgan_sc": statistics.median(r["specgan_sc"] for r in rows),
        "median_librosa_sc": statistics.median(r["librosa_sc"] for r in rows),
        "goal_speedup": 10.0,
    }
    print(f"reconstruct: median speed-up {result['median_speedup']:.1f}×, median SC specgan "
          f"{result['median_specgan_sc']:.3f} vs librosa {result['median_librosa_sc']:.3f}")
    write_json("reconstruct_speed", result)
    return result


if __name__ == "__main__":
    main()

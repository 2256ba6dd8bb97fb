"""prep throughput (seconds of audio per wall second): ``specgan prep`` against a plain single-process librosa
pipeline (``librosa.load`` at the target rate + ``melspectrogram`` + ``power_to_db``) on the same real files.

specgan's figure is the whole command: discovery, hashing, worker start-up, trimming, chunking and the atomic
write of the dataset. The librosa pipeline only computes the spectrograms.

The machine may be shared, so the three pipelines run in interleaved rounds (librosa, specgan with all cores,
specgan with one worker, then again): a busy spell slows all three alike. Reported: medians of each side over the
rounds, their ratios, the ratio within each round, the load average before and after, and the share of CPU time
the hypervisor stole during each run (``/proc/stat``): a spell that takes one of two cores slows the two-worker
prep and not the single-threaded librosa pipeline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import librosa
import soundfile as sf

from common import cpu_jiffies, data_mirror, machine, stolen_fraction, write_json
from specgan.audio.params import AudioParams
from specgan.data.prep import prep


def corpus(root: Path, n_files: int) -> list[Path]:
    speakers = ["SF1", "SM1", "TF2", "TM3"]
    per = -(-n_files // len(speakers))
    files = [f for s in speakers for f in sorted((root / "vcc2016" / "vcc2016_training" / s).glob("*.flac"))[:per]]
    return files[:n_files]


def librosa_pipeline(files: list[Path], params: AudioParams) -> None:
    for f in files:
        y, sr = librosa.load(f, sr=params.sample_rate)
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=params.n_fft, hop_length=params.hop_length,
                                             n_mels=params.n_mels)
        librosa.power_to_db(mel)


def interleaved(runs: dict[str, callable], *, rounds: int) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Wall seconds of each run, ``rounds`` times, the runs taking turns (after one untimed warm-up each), and the
    share of the machine's CPU time stolen by the hypervisor during each (None where unknown)."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    stolen: dict[str, list] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            before = cpu_jiffies()
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
            stolen[name].append(stolen_fraction(before, cpu_jiffies()))
    return times, stolen


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=648, help="VCC2016 training files (648: all four speakers)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    files = corpus(data_mirror(), args.files)
    seconds = sum(sf.info(f).duration for f in files)
    params = AudioParams()
    workers = os.cpu_count() or 1
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for f in files:
            (src / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, src / f.parent.name / f.name)
        counter = iter(range(10**6))
        reports = {}

        def specgan_prep(n_workers: int):
            def run():
                out = Path(tmp) / f"out{next(counter)}"
                reports[n_workers] = prep(src, out, params=params, workers=n_workers)
                shutil.rmtree(out)
            return run

        times, stolen = interleaved({"librosa": lambda: librosa_pipeline(files, params),
                                     "workers": specgan_prep(workers), "one": specgan_prep(1)}, rounds=args.repeats)
    load_after = os.getloadavg()
    med = {name: statistics.median(t) for name, t in times.items()}
    per_round = [lib / ours for lib, ours in zip(times["librosa"], times["workers"])]
    result = {
        "benchmark": "prep_throughput", "machine": machine(), "files": len(files), "audio_seconds": round(seconds, 2),
        "source": "VCC2016 training, 16 kHz FLAC, resampled to 22050 Hz",
        "params": "defaults (n_fft 1024, hop 256, 80 mels)",
        "method": f"{args.repeats} interleaved rounds after a warm-up; medians",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_before": load_before, "load_average_after": load_after,
        "librosa_single_process": {"median_s": med["librosa"], "times_s": times["librosa"],
                                   "audio_s_per_s": seconds / med["librosa"]},
        f"specgan_prep_workers_{workers}": {"median_s": med["workers"], "times_s": times["workers"],
                                            "audio_s_per_s": seconds / med["workers"],
                                            "chunks": reports[workers].manifest["shape"][0]},
        "specgan_prep_workers_1": {"median_s": med["one"], "times_s": times["one"],
                                   "audio_s_per_s": seconds / med["one"]},
        "ratio": med["librosa"] / med["workers"], "ratio_workers_1": med["librosa"] / med["one"],
        "ratio_per_round": per_round, "goal_ratio": 3.0,
        "stolen_per_round": {"librosa": stolen["librosa"], f"specgan_prep_workers_{workers}": stolen["workers"],
                             "specgan_prep_workers_1": stolen["one"]},
    }
    print(f"prep: {seconds:.0f} s of audio in {len(files)} files; librosa {seconds / med['librosa']:.0f}× real time, "
          f"specgan ({workers} workers) {seconds / med['workers']:.0f}× real time: {result['ratio']:.2f}× "
          f"(1 worker: {result['ratio_workers_1']:.2f}×; per round {', '.join(f'{r:.2f}' for r in per_round)}; "
          f"load {load_before[0]:.1f} → {load_after[0]:.1f}; CPU time stolen during the {workers}-worker runs: "
          f"{_percents(stolen['workers'])})")
    write_json("prep_throughput", result)
    return result


def _percents(fractions: list) -> str:
    return ", ".join("?" if f is None else f"{100 * f:.0f}%" for f in fractions)


if __name__ == "__main__":
    main()

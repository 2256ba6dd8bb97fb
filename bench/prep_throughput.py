"""prep throughput (seconds of audio per wall second): ``specgan prep`` against a plain single-process librosa
pipeline (``librosa.load`` at the target rate + ``melspectrogram`` + ``power_to_db``) on the same real files.

specgan's figure is the whole command: discovery, hashing, worker start-up, trimming, chunking and the atomic
write of the dataset. The librosa pipeline only computes the spectrograms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import librosa
import soundfile as sf

from common import data_mirror, machine, timed, write_json
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


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=648, help="VCC2016 training files (648: all four speakers)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = corpus(data_mirror(), args.files)
    seconds = sum(sf.info(f).duration for f in files)
    params = AudioParams()
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for f in files:
            (src / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, src / f.parent.name / f.name)
        counter = iter(range(10**6))

        def specgan_prep(n_workers: int):
            return lambda: prep(src, Path(tmp) / f"out{next(counter)}", params=params, workers=n_workers)

        ref_median, ref_times, _ = timed(lambda: librosa_pipeline(files, params), repeats=args.repeats)
        ours_median, ours_times, report = timed(specgan_prep(workers), repeats=args.repeats)
        one_median, one_times, _ = timed(specgan_prep(1), repeats=args.repeats)
    result = {
        "benchmark": "prep_throughput", "machine": machine(), "files": len(files), "audio_seconds": round(seconds, 2),
        "source": "VCC2016 training, 16 kHz FLAC, resampled to 22050 Hz", "params": "defaults (n_fft 1024, hop 256, 80 mels)",
        "librosa_single_process": {"median_s": ref_median, "times_s": ref_times,
                                   "audio_s_per_s": seconds / ref_median},
        f"specgan_prep_workers_{workers}": {"median_s": ours_median, "times_s": ours_times,
                                            "audio_s_per_s": seconds / ours_median,
                                            "chunks": report.manifest["shape"][0]},
        "specgan_prep_workers_1": {"median_s": one_median, "times_s": one_times, "audio_s_per_s": seconds / one_median},
        "ratio": ref_median / ours_median, "ratio_workers_1": ref_median / one_median, "goal_ratio": 3.0,
    }
    print(f"prep: {seconds:.0f} s of audio in {len(files)} files; librosa {seconds / ref_median:.0f}× real time, "
          f"specgan ({workers} workers) {seconds / ours_median:.0f}× real time: {result['ratio']:.2f}× "
          f"(1 worker: {result['ratio_workers_1']:.2f}×)")
    write_json("prep_throughput", result)
    return result


if __name__ == "__main__":
    main()

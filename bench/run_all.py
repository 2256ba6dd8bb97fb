"""Run every benchmark and write ``bench/results.md`` (committed, linked from the README) plus JSON under
``bench/out/``. Timings live here, never in tests."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, machine  # noqa: E402

import prep_throughput  # noqa: E402
import reconstruct_speed  # noqa: E402


def main() -> None:
    sys.argv = sys.argv[:1]  # each benchmark parses its own defaults
    prep = prep_throughput.main()
    recon = reconstruct_speed.main()
    m = machine()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    workers_key = next(k for k in prep if k.startswith("specgan_prep_workers_") and not k.endswith("_1"))
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {datetime.date.today()} at commit `{commit}`.",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, device {recon['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "") + ".",
        "Each figure is the median of the timed runs after one untimed warm-up; both sides run on the same input "
        "in the same process.",
        "",
        "## prep throughput",
        "",
        f"{prep['files']} files, {prep['audio_seconds']:.0f} s of audio ({prep['source']}; {prep['params']}).",
        "specgan's time is the whole `prep`: discovery, hashing, decoding, resampling, log-mel, chunking and the "
        "atomic dataset write. librosa's is `librosa.load(sr=22050)` + `melspectrogram` + `power_to_db` only.",
        "",
        "| pipeline | median wall s | audio s per wall s | ratio to librosa |",
        "|---|---:|---:|---:|",
        f"| librosa, single process | {prep['librosa_single_process']['median_s']:.2f} | "
        f"{prep['librosa_single_process']['audio_s_per_s']:.0f} | 1.00 |",
        f"| specgan prep, 1 worker | {prep['specgan_prep_workers_1']['median_s']:.2f} | "
        f"{prep['specgan_prep_workers_1']['audio_s_per_s']:.0f} | {prep['ratio_workers_1']:.2f} |",
        f"| specgan prep, {workers_key.rsplit('_', 1)[1]} workers | {prep[workers_key]['median_s']:.2f} | "
        f"{prep[workers_key]['audio_s_per_s']:.0f} | {prep['ratio']:.2f} |",
        "",
        f"Goal: {prep['goal_ratio']:.0f}× librosa's throughput. "
        + ("Met." if prep["ratio"] >= prep["goal_ratio"] else "Not met; see docs/architecture.md (Performance)."),
        "",
        "## Mel → audio (reconstruction)",
        "",
        f"{len(recon['clips'])} clips ({recon['source']}), {recon['n_iter']} Griffin-Lim iterations on both sides. "
        "SC is the spectral convergence of the result's STFT magnitude against the original's (lower is better).",
        "",
        "| clip | seconds | specgan ms | librosa `mel_to_audio` ms | speed-up | specgan SC | librosa SC |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in recon["clips"]:
        lines.append(f"| {r['file']} | {r['seconds']:.1f} | {r['specgan_s'] * 1000:.0f} | {r['librosa_s'] * 1000:.0f} "
                     f"| {r['speedup']:.1f}× | {r['specgan_sc']:.3f} | {r['librosa_sc']:.3f} |")
    lines += [
        f"| **median** | | | | **{recon['median_speedup']:.1f}×** | **{recon['median_specgan_sc']:.3f}** "
        f"| **{recon['median_librosa_sc']:.3f}** |",
        "",
        f"Goal: {recon['goal_speedup']:.0f}× faster with equal or better SC. "
        + ("Met." if recon["median_speedup"] >= recon["goal_speedup"]
           and recon["median_specgan_sc"] <= recon["median_librosa_sc"] else "Not met."),
        "",
        "Raw figures: `bench/out/*.json` (not committed).",
        "",
    ]
    (ROOT / "bench" / "results.md").write_text("\n".join(lines))
    print(f"wrote {ROOT / 'bench' / 'results.md'}")


if __name__ == "__main__":
    main()

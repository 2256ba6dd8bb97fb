"""Run every benchmark and write ``bench/results.md`` (committed, linked from the README) plus JSON under
``bench/out/``. Timings live here, never in tests."""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import OUT, ROOT  # noqa: E402

import gan_mnist  # noqa: E402
import prep_throughput  # noqa: E402
import reconstruct_speed  # noqa: E402
import voice_convert  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gan", choices=("auto", "yes", "no"), default="auto",
                        help="run the GAN benchmark (auto: only with a GPU; on 2 CPU cores it takes about 40 min)")
    parser.add_argument("--voice", choices=("auto", "yes", "no"), default="auto",
                        help="run the voice-conversion benchmark (auto: only with a GPU, where the full recipe runs; "
                             "on 2 CPU cores a reduced model takes about half an hour)")
    parser.add_argument("--render-only", action="store_true", help="rewrite results.md from bench/out/*.json")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # each benchmark parses its own defaults
    if args.render_only:
        prep, recon = (json.loads((OUT / f"{n}.json").read_text()) for n in ("prep_throughput", "reconstruct_speed"))
    else:
        prep = prep_throughput.main()
        recon = reconstruct_speed.main()
        if args.gan == "yes" or (args.gan == "auto" and torch.cuda.is_available()):
            sys.argv = [sys.argv[0], "--channels", "64", "--batch-size", "128", "--steps", "3000"]
            gan_mnist.main()
        if args.voice == "yes" or (args.voice == "auto" and torch.cuda.is_available()):
            sys.argv = sys.argv[:1]
            voice_convert.main()
    gan = json.loads((OUT / "gan_mnist.json").read_text()) if (OUT / "gan_mnist.json").exists() else None
    voice = json.loads((OUT / "voice_convert.json").read_text()) if (OUT / "voice_convert.json").exists() else None
    m = prep["machine"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    workers_key = next(k for k in prep if k.startswith("specgan_prep_workers_") and not k.endswith("_1"))
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {datetime.date.today()} at commit `{commit}`.",
        f"Prep and reconstruction machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, device {recon['device']}"
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
    ]
    lines += gan_section(gan) if gan else ["## Conditional MNIST GAN", "", "Not run yet (`make bench` runs it when a "
                                           "GPU is present; `python bench/run_all.py --gan yes` forces it).", ""]
    lines += voice_section(voice) if voice else ["## Voice conversion", "", "Not run yet (`make bench` runs it when "
                                                 "a GPU is present; `python bench/run_all.py --voice yes` forces it).",
                                                 ""]
    lines += ["Raw figures: `bench/out/*.json` (not committed).", ""]
    (ROOT / "bench" / "results.md").write_text("\n".join(lines))
    print(f"wrote {ROOT / 'bench' / 'results.md'}")


def gan_section(g: dict) -> list[str]:
    s, r = g["specgan"], g["reference"]
    where = g["machine"].get("gpu", g["machine"]["cpu"])
    return [
        "## Conditional MNIST GAN",
        "",
        f"`recipes/mnist_cgan.toml` for {g['steps']} steps (batch {g['batch_size']}, {g['channels']} channels) on "
        f"{g['device']} ({where}, torch {g['machine']['torch']}), against the same architecture, loss and optimiser "
        "in a plain reference loop (per-item `Dataset` + `DataLoader`, the usual DCGAN example code; "
        "`bench/gan_mnist.py`). Both measured by `specgan eval`'s metrics with the same classifier on "
        f"{g['n_eval']} samples. specgan samples from the moving average of G with standing batch-norm "
        "statistics; the reference from its G in eval mode. Steady = after the first 50 steps; overall = the "
        "whole training call including data loading and checkpoints.",
        "",
        "| loop | wall s | images/s overall | images/s steady | label accuracy | Fréchet distance | class entropy |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| specgan train | {s['wall_s']:.1f} | {s['images_per_s']:.0f} | {s.get('steady_images_per_s', 0):.0f} | "
        f"{s['label_accuracy']:.3f} | {s['fd']:.2f} | {s['class_entropy']:.3f} |",
        f"| reference loop | {r['wall_s']:.1f} | {r['images_per_s']:.0f} | {r.get('steady_images_per_s', 0):.0f} | "
        f"{r['label_accuracy']:.3f} | {r['fd']:.2f} | {r['class_entropy']:.3f} |",
        "",
        f"Goal: label accuracy ≥ 0.95 ({'met' if s['label_accuracy'] >= 0.95 else 'not met'}), Fréchet distance no "
        f"worse than the reference ({'met' if s['fd'] <= r['fd'] else 'not met'}), higher throughput "
        f"({'met' if s.get('steady_images_per_s', 0) > r.get('steady_images_per_s', 0) else 'not met'} in steady "
        f"state: {s.get('steady_images_per_s', 0) / max(r.get('steady_images_per_s', 1), 1):.2f}×; overall "
        f"{s['images_per_s'] / r['images_per_s']:.2f}×).",
        "",
    ]


def voice_section(v: dict) -> list[str]:
    where = v["machine"].get("gpu", f"{v['machine']['cpu']}, {v['machine']['cores']} cores")
    size = ("the recipe as written" if not any(o.startswith("model.") for o in v["overrides"]) else
            "reduced for the CPU: " + ", ".join(f"`{o}`" for o in v["overrides"]
                                                if o.startswith(("model.", "train.batch", "loss."))))
    met = v["mcd_ratio"] <= v["goal_ratio"]
    return [
        "## Voice conversion",
        "",
        f"`recipes/voice_convert.toml` (VCC2016 SF1 → TM3, unpaired training on the 162 training sentences of each "
        f"speaker) for {v['steps']} steps, {size}; trained on {v['device']} ({where}, {v['machine']['torch_threads']} torch "
        f"thread(s), torch {v['machine']['torch']}) "
        f"in {v['train_s'] / 60:.1f} min (prep {v['prep_s']:.0f} s). Scored on the {v['pairs']} parallel "
        f"`evaluation_all` sentences with `specgan eval --pairs` ({v['griffinlim_iters']} Griffin-Lim "
        f"iterations, {v['eval_s']:.0f} s): mel-cepstral distortion after DTW (cepstrum and constant in "
        "`specgan/metrics/audio_quality.py`) and log-spectral distance, converted vs the unconverted source.",
        "",
        "| | MCD dB | LSD dB |",
        "|---|---:|---:|",
        f"| unconverted SF1 vs TM3 (baseline) | {v['baseline_mcd_db']:.3f} | {v['baseline_lsd_db']:.2f} |",
        f"| converted SF1 → TM3 vs TM3 | {v['mcd_db']:.3f} | {v['lsd_db']:.2f} |",
        f"| ratio converted / baseline | **{v['mcd_ratio']:.3f}** | {v['lsd_db'] / v['baseline_lsd_db']:.3f} |",
        *([f"| target through log-mel + Griffin-Lim, no conversion (the floor) | {v['resynthesis_mcd_db']:.3f} | |"]
          if "resynthesis_mcd_db" in v else []),
        "",
        f"Goal: converted MCD at most {v['goal_ratio']}× the baseline. {'Met.' if met else 'Not met.'} Spectral "
        f"convergence of Griffin-Lim against the translated magnitude: {v['spectral_convergence']:.3f}.",
        *([f"Note: {v['note']}.", ""] if v.get("note") else [""]),
    ]


if __name__ == "__main__":
    main()

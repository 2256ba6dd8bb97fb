"""Run every benchmark and write ``bench/results.md`` (committed, linked from the README) plus JSON under
``bench/out/``. Timings live here, never in tests. The JSON that a committed results.md was rendered from is kept
in ``bench/cpu/`` (and ``bench/gpu/``), so ``--render-only`` works in a fresh checkout."""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULT_FOLDERS, ROOT, read_json, result_name  # noqa: E402
from specgan.train.acceleration import native_bf16  # noqa: E402

import convert_memory  # noqa: E402
import convert_speed  # noqa: E402
import edge_convolutions  # noqa: E402
import gan_mnist  # noqa: E402
import prep_throughput  # noqa: E402
import reconstruct_speed  # noqa: E402
import train_throughput  # noqa: E402
import voice_convert  # noqa: E402


def _cpu(machine: dict) -> str:
    """The CPU's model name, with its instruction sets where the JSON recorded them (since they were recorded)."""
    return machine["cpu"] + (f" ({machine['cpu_features']})" if machine.get("cpu_features") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gan", choices=("auto", "yes", "no"), default="auto",
                        help="run the GAN benchmark (auto: only with a GPU; on 2 CPU cores it takes about 40 min)")
    parser.add_argument("--voice", choices=("auto", "yes", "no"), default="auto",
                        help="run the voice-conversion benchmark (auto: only with a GPU, where the full recipe runs; "
                             "on 2 CPU cores a reduced model takes about half an hour)")
    parser.add_argument("--throughput", choices=("yes", "no"), default="yes",
                        help="run the training-throughput benchmarks (DCGAN and CycleGAN step; a few minutes each "
                             "on 2 CPU cores, at reduced sizes there)")
    parser.add_argument("--convert", choices=("yes", "no"), default="yes",
                        help="run the convert benchmarks (real-time factor; memory on long inputs)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite results.md from the JSON in bench/out, else bench/cpu (committed), else bench/gpu")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # each benchmark parses its own defaults
    if args.render_only:
        prep, recon = (read_json(n) for n in ("prep_throughput", "reconstruct_speed"))
        if prep is None or recon is None:
            raise SystemExit("--render-only needs prep_throughput.json and reconstruct_speed.json in bench/out or "
                             "bench/cpu; run make bench first")
    else:
        prep = prep_throughput.main()
        recon = reconstruct_speed.main(["--device", "cpu"])
        if torch.cuda.is_available():  # the GPU figure goes to reconstruct_speed_cuda.json
            reconstruct_speed.main(["--device", "cuda"])
        if args.throughput == "yes":
            train_throughput.main(["dcgan"])
            train_throughput.main(["cyclegan"])
            edge_convolutions.main([])
            if torch.cuda.is_available():
                write_flops()
        if args.convert == "yes":
            convert_speed.main([])
            convert_memory.main([])
        if args.gan == "yes" or (args.gan == "auto" and torch.cuda.is_available()):
            sys.argv = [sys.argv[0], "--channels", "64", "--batch-size", "128", "--steps", "3000"]
            gan_mnist.main()
        if args.voice == "yes" or (args.voice == "auto" and torch.cuda.is_available()):
            sys.argv = sys.argv[:1]
            voice_convert.main()
    gan = read_json("gan_mnist")
    voice = read_json("voice_convert")
    m = prep["machine"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    workers_key = next(k for k in prep if k.startswith("specgan_prep_workers_") and not k.endswith("_1"))
    lines = [
        "# Benchmark results",
        "",
        (f"Rendered by `bench/run_all.py --render-only` on {datetime.date.today()} at commit `{commit}` from the JSON "
         "of earlier runs (`make bench` here; `bench/gpu_session.py` for the GPU figures; each JSON names its commit "
         "when it recorded one: " + _measured_at() + ")." if args.render_only else
         f"Written by `make bench` on {datetime.date.today()} at commit `{commit}`."),
        f"Prep and reconstruction machine: {_cpu(m)}, {m['cores']} cores, torch {m['torch']}, device {recon['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "") + ".",
        "Unless a section says otherwise, each figure is the median of the timed runs after one untimed warm-up, "
        "and both sides run on the same input in the same process; the sections say how many runs (some are one "
        "run, or a child process per run, and the training references load data in worker processes on a GPU).",
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
        *([f"Ratio within each of the {len(prep['ratio_per_round'])} interleaved rounds: median "
           f"{statistics.median(prep['ratio_per_round']):.2f}, range {min(prep['ratio_per_round']):.2f}–"
           f"{max(prep['ratio_per_round']):.2f}.", ""] if prep.get("ratio_per_round") else []),
        *_stolen_lines(prep, workers_key),
        f"Goal: {prep['goal_ratio']:.0f}× librosa's throughput. "
        + ("Met." if prep["ratio"] >= prep["goal_ratio"] else "Not met; see docs/architecture.md (Performance)."),
        "",
        "## Mel → audio (reconstruction)",
        "",
        f"{len(recon['clips'])} clips ({recon['source']}), {recon['n_iter']} Griffin-Lim iterations on both sides. "
        "SC is the spectral convergence of the result's STFT magnitude against the original's (lower is better).",
        "",
        "| clip | seconds | specgan ms | librosa `mel_to_audio` ms | speed-up | specgan × real time | specgan SC "
        "| librosa SC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in recon["clips"]:
        lines.append(f"| {r['file']} | {r['seconds']:.1f} | {r['specgan_s'] * 1000:.0f} | {r['librosa_s'] * 1000:.0f} "
                     f"| {r['speedup']:.1f}× | {r['seconds'] / r['specgan_s']:.0f}× | {r['specgan_sc']:.3f} "
                     f"| {r['librosa_sc']:.3f} |")
    lines += [
        f"| **median** | | | | **{recon['median_speedup']:.1f}×** | "
        f"**{statistics.median(r['seconds'] / r['specgan_s'] for r in recon['clips']):.0f}×** | "
        f"**{recon['median_specgan_sc']:.3f}** | **{recon['median_librosa_sc']:.3f}** |",
        "",
        f"Goal: {recon['goal_speedup']:.0f}× faster with equal or better SC. "
        + ("Met." if recon["median_speedup"] >= recon["goal_speedup"]
           and recon["median_specgan_sc"] <= recon["median_librosa_sc"] else "Not met."),
        "",
    ]
    lines += reconstruct_gpu_section(read_json(result_name("reconstruct_speed", "cuda")))
    lines += gan_section(gan) if gan else ["## Conditional MNIST GAN", "", "Not run yet (`make bench` runs it when a "
                                           "GPU is present; `python bench/run_all.py --gan yes` forces it).", ""]
    lines += voice_section(voice) if voice else ["## Voice conversion", "", "Not run yet (`make bench` runs it when "
                                                 "a GPU is present; `python bench/run_all.py --voice yes` forces it).",
                                                 ""]
    lines += throughput_sections()
    lines += edge_convolutions_section(read_json("edge_convolutions"))
    lines += convert_section()
    lines += scaling_section(read_json(result_name("scaling", "cuda")))
    lines += ["Raw figures: `bench/out/*.json` (not committed); the CPU figures rendered here are kept in `bench/cpu/` "
              "(copied there from `bench/out/` when results.md is committed); GPU figures `NAME_cuda.json`, from "
              "`bench/out/` or, when fetched from a GPU machine (`bench/gpu_session.py`), `bench/gpu/`.", ""]
    (ROOT / "bench" / "results.md").write_text("\n".join(lines))
    print(f"wrote {ROOT / 'bench' / 'results.md'}")


def _stolen_lines(prep: dict, workers_key: str) -> list[str]:
    """The share of CPU time the hypervisor stole during the multi-worker prep runs, round by round, beside each
    round's ratio (recorded since the prep benchmark measured it)."""
    stolen = (prep.get("stolen_per_round") or {}).get(workers_key)
    if not stolen or any(f is None for f in stolen):
        return []
    rounds = ", ".join(f"{r:.2f}× ({100 * f:.0f}%)" for r, f in zip(prep["ratio_per_round"], stolen))
    return [f"CPU time stolen by the hypervisor during each round's {workers_key.rsplit('_', 1)[1]}-worker run "
            f"(`/proc/stat`), beside that round's ratio: {rounds}.", ""]


def _measured_at() -> str:
    """"commit (files), ..." for the result files that name the commit they were measured at."""
    by_commit: dict[str, list[str]] = {}
    shown: set[str] = set()
    for folder in RESULT_FOLDERS:
        for path in sorted(folder.glob("*.json")):
            if path.name in shown:  # read_json takes the first folder's
                continue
            shown.add(path.name)
            machine = json.loads(path.read_text()).get("machine")
            if isinstance(machine, dict) and machine.get("commit"):
                by_commit.setdefault(machine["commit"], []).append(path.stem)
    return "; ".join(f"`{c}` ({', '.join(names)})" for c, names in by_commit.items()) or "none"


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
        *([f"Note: {g['note']}.", ""] if g.get("note") else [""]),
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


def write_flops() -> None:
    """train_flops_cuda.json from the two throughput results of this machine's GPU."""
    from common import write_json

    results = {k: read_json(result_name(f"train_{k}", "cuda")) for k in ("dcgan", "cyclegan")}
    write_json(result_name("train_flops", "cuda"), train_throughput.tflops_report(results, "cuda"))


def _fmt(value, spec: str, none: str = "–") -> str:
    return none if value is None else format(value, spec)


def _rate(value) -> str:
    return "–" if value is None else format(value, ".1f" if value < 100 else ".0f")


def _where(r: dict) -> str:
    m = r["machine"]
    if r["device"].startswith("cuda"):
        return f"{m.get('gpu', 'GPU')}, torch {m['torch']}"
    return f"{_cpu(m)}, {r.get('threads', m['torch_threads'])} torch thread(s), torch {m['torch']}"


def _size(kind: str, r: dict) -> str:
    z = r["size"]
    if kind == "dcgan":
        return f"batch {z['batch_size']}, {z['channels']} channels, {z['steps']} steps per run"
    return (f"batch {z['batch_size']}, {z['channels']} channels, {z['n_blocks']} blocks, "
            f"{z['n_mels']}×{z['crop']} crops, {z['warmup'] + z['window'] * z['windows']} steps per run")


THROUGHPUT_TEXT = {
    "dcgan": ("Training throughput: DCGAN on MNIST",
              "`recipes/mnist_dcgan.toml` on the real MNIST training set through `specgan.train.loop.train` (the "
              "whole loop: metrics.jsonl, TensorBoard, the moving average of G), steady state = the loop's own "
              "images/s over windows of 25 steps after the first 50, against the same architecture, loss, optimiser "
              "and batch in the PyTorch DCGAN example's loop (per-item `Dataset` + `DataLoader`, fp32; "
              "`bench/reference.py`). The reference's `DataLoader` workers: the example's default (2) on the GPU, "
              "none on the CPU (they would take the cores the step computes on)."),
    "cyclegan": ("Training throughput: CycleGAN translate step",
                 "The translate step of `recipes/voice_convert.toml` (ResNet generators, PatchGAN discriminators, "
                 "LSGAN, cycle and identity losses; `TranslateTask.step` in windows of steps after a warm-up) on "
                 "synthetic random 80-band chunks, against a step written as junyanz/pytorch-CycleGAN-and-pix2pix "
                 "writes it (two Adam optimisers, the image pool as a Python list queried per image, an unaligned "
                 "per-item `Dataset` with a random crop per item, `set_requires_grad`, D loss 0.5·(real + fake) MSE, "
                 "fp32; `bench/reference.py`), same networks and batch. The reference's `DataLoader` workers: the "
                 "reference code's default (4) on the GPU, none on the CPU."),
}


def throughput_sections() -> list[str]:
    lines = []
    for kind in ("dcgan", "cyclegan"):
        title, text = THROUGHPUT_TEXT[kind]
        cpu, gpu = read_json(f"train_{kind}"), read_json(result_name(f"train_{kind}", "cuda"))
        lines += [f"## {title}", ""]
        if not cpu and not gpu:
            lines += ["Not run yet (`python bench/train_throughput.py " + kind + "`; on a GPU machine "
                      "`bench/gpu_session.py`).", ""]
            continue
        lines += [text, ""]
        runs = [(label, train_throughput.summarize(r)) for label, r in (("CPU", cpu), ("GPU", gpu)) if r]
        for label, r in runs:
            later = [f"{', '.join(m['variants'])} in {m['rounds']} later round(s)"
                     + (" with reference runs" if m["reference"] else "")
                     + (f" at {m['machine']['commit']}" if (m.get("machine") or {}).get("commit") else "")
                     for m in r.get("merged", [])]
            if r.get("compile_note"):
                later.append(r["compile_note"])
            lines.append(f"- {label}: {_where(r)}; {_size(kind, r)} ({r['size_name']} size); {r['rounds']} "
                         f"interleaved round(s), median of runs, each run the median of its windows"
                         + (f" ({'; '.join(later)})" if later else "") + ".")
        if not gpu:
            lines.append("- GPU: not run (`bench/gpu_session.py` on a GPU machine writes `train_" + kind +
                         "_cuda.json`).")
        lines += ["", "images/s: median of the runs. × reference: median over rounds of a run's images/s over the "
                  "reference run of the same round (the machine's speed drifts between rounds; where rounds were "
                  "not recorded, the ratio of the medians). The range is over rounds.",
                  "", "| loop | " + " | ".join(f"{label} images/s | {label} × reference" for label, _ in runs) + " |",
                  "|---|" + "---:|---:|" * len(runs)]
        lines.append("| reference loop | " + " | ".join(
            f"{_rate(r['reference'].get('images_per_s'))} | 1.00" for _, r in runs) + " |")
        names = []
        for _, r in runs:
            names += [v for v in r["variants"] if v not in names and r["variants"][v].get("images_per_s")]
        for v in names:
            # What was measured: the overrides the result records (a variant's name may have meant something
            # else when it ran), else today's.
            recorded = next((r["variants"][v]["overrides"] for _, r in runs
                             if v in r["variants"] and "overrides" in r["variants"][v]), None)
            listed = recorded if recorded is not None else train_throughput.VARIANTS.get(v, [])
            overrides = ", ".join(f"`{o}`" for o in listed) or (
                "a patch no recipe key reaches: `PATCHES` in bench/train_throughput.py" if v in train_throughput.PATCHES
                else "defaults: `precision = auto`, bf16 on AMD CPUs with AVX512-BF16 (this CPU: "
                + ("bf16" if native_bf16(torch.device("cpu")) else "fp32") + ") and on CUDA, for the DCGAN too when "
                "its GPU figures were measured (auto picks fp32 for it now: the fp32 row); `channels_last = auto`, "
                "on a CPU "
                "for DCGAN, and for the ResNet CycleGAN in bf16 only; on CUDA only inside the compiled ResNet "
                "CycleGAN's networks; `compile = auto`, on for the ResNet CycleGAN on one GPU; "
                "`cuda_graphs = true`, the step replayed as a CUDA graph")
            cells = []
            for _, r in runs:
                d = r["variants"].get(v, {})
                ratios = d.get("round_speedups") or []
                spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
                cells.append(f"{_rate(d.get('images_per_s'))} | {_fmt(train_throughput.goal_speedup(d), '.2f')}"
                             f"{spread}")
            lines.append(f"| specgan {v} ({overrides}) | " + " | ".join(cells) + " |")
        lines.append("")
        for label, r in runs:
            d = r["variants"].get("default", {})
            speedup = train_throughput.goal_speedup(d)
            if speedup:
                lines.append(f"Goal on the {label}: ≥ {r['goal_speedup']:.1f}× the reference with the defaults: "
                             f"{'met' if speedup >= r['goal_speedup'] else 'not met'} ({speedup:.2f}×). ")
            problems = {**r.get("errors", {})}
            if problems:
                lines.append(f"{label} errors: " + "; ".join(f"{k}: {str(e).splitlines()[-1][:160]}"
                                                            for k, e in problems.items()) + ". ")
            if r.get("skipped"):
                lines.append(f"{label} runs skipped for time: {', '.join(r['skipped'])}. ")
            if r.get("note"):
                lines.append(f"{label} note: {r['note']} ")
        lines.append("")
    flops = read_json(result_name("train_flops", "cuda"))
    lines += ["## Achieved TFLOP/s of a training step (GPU)", ""]
    if not flops or not flops.get("rows"):
        lines += ["Not run yet (`bench/gpu_session.py` on a GPU machine).", ""]
        return lines
    peak = flops.get("peak_bf16_tflops")
    lines += [f"{flops.get('gpu')}; dense bf16 peak {_fmt(peak, '.0f', 'unknown')} TFLOP/s. {flops['note']} "
              "Step time = batch / median images/s above.", "",
              "| model | loop | GFLOP per step | step ms | TFLOP/s | % of bf16 peak |", "|---|---|---:|---:|---:|---:|"]
    for row in flops["rows"]:
        frac = row.get("fraction_of_peak")
        lines.append(f"| {row['model']} | {row['side']} | {row['flops_per_step'] / 1e9:.1f} | {row['step_ms']:.2f} | "
                     f"{row['tflops']:.2f} | {_fmt(frac * 100 if frac is not None else None, '.2f')} |")
    lines.append("")
    return lines


def edge_convolutions_section(r: dict | None) -> list[str]:
    lines = ["## One-channel edge layers (CPU)", ""]
    if not r:
        return lines + ["Not run yet (`python bench/edge_convolutions.py`).", ""]
    m = r["machine"]
    lines += [f"The generators' layers with one channel on a side, as a training step runs them (float32, "
              f"{r['output'][0]}×{r['output'][1]} outputs, forward and backward with weight and bias gradients, the "
              f"input's gradient as stated): `OneChannelConv2d` against `nn.Conv2d` (oneDNN) with the same weights, "
              f"fresh operands each call, the sides alternating; medians of {r['repeats']} calls "
              f"(`bench/edge_convolutions.py`).", "",
              f"- CPU: {_cpu(m)}, {m['torch_threads']} torch thread(s), torch {m['torch']}.", "",
              "| layer | channels | kernel | batch | input gradient | nn.Conv2d ms | OneChannelConv2d ms | speed-up |",
              "|---|---|---|---:|---|---:|---:|---:|"]
    for row in r["rows"]:
        kh, kw = row["kernel"]
        lines.append(f"| {row['layer']} | {row['in_channels']} → {row['out_channels']} | {kh}×{kw} | {row['batch']} | "
                     f"{'yes' if row['input_gradient'] else 'no'} | {row['library_ms']:.2f} | {row['specgan_ms']:.2f} | "
                     f"{row['speedup']:.2f}× |")
    return lines + [""]


def reconstruct_gpu_section(r: dict | None) -> list[str]:
    if not r:
        return ["GPU: not run yet (`bench/gpu_session.py` on a GPU machine writes `reconstruct_speed_cuda.json`).",
                ""]
    lines = [f"On the GPU ({_where(r)}), same clips and iterations; librosa still runs on that machine's CPU:", "",
             "| clip | seconds | specgan ms | × real time | specgan SC |" + (" librosa ms |" if "median_speedup" in r
                                                                             else ""),
             "|---|---:|---:|---:|---:|" + ("---:|" if "median_speedup" in r else "")]
    for c in r["clips"]:
        lines.append(f"| {c['file']} | {c['seconds']:.1f} | {c['specgan_s'] * 1000:.1f} | {c['specgan_x_realtime']:.0f}× "
                     f"| {c['specgan_sc']:.3f} |" + (f" {c['librosa_s'] * 1000:.0f} |" if "librosa_s" in c else ""))
    goal = r.get("goal_x_realtime", 500.0)
    lines += [f"| **median** | | | **{r['median_specgan_x_realtime']:.0f}×** | **{r['median_specgan_sc']:.3f}** |"
              + (" |" if "median_speedup" in r else ""), "",
              f"Goal on a GPU: ≥ {goal:.0f}× real time. "
              + ("Met." if r["median_specgan_x_realtime"] >= goal else "Not met.")
              + (f" Speed-up over librosa on the CPU: {r['median_speedup']:.0f}×." if "median_speedup" in r else ""),
              ""]
    return lines


def convert_section() -> list[str]:
    runs = [(label, r) for label, r in (("CPU", read_json("convert_speed")),
                                        ("GPU", read_json(result_name("convert_speed", "cuda")))) if r]
    lines = ["## convert real-time factor", ""]
    if not runs:
        return lines + ["Not run yet (`python bench/convert_speed.py`).", ""]
    lines += ["`specgan convert` of a 60 s input (the demo corpus's kal clips joined; 16 kHz) through a translator "
              "checkpoint of `recipes/voice_convert.toml`'s architecture (1 training step: weights do not change the "
              "speed): read, log-mel, 128-frame windows every 64 frames through the generator, cross-faded "
              "stitching, NNLS mel → linear, Griffin-Lim from the source phase, write. RTF = wall seconds / audio "
              "seconds (lower is better); medians of the timed repeats after one warm-up. Stages were timed apart "
              "in a separate pass.", ""]
    for label, r in runs:
        m = r["model"]
        lines.append(f"- {label}: {_where(r)}; model {m['name']} {m['channels']} channels, {m['n_blocks']} blocks; "
                     f"{r['griffinlim_iters']} Griffin-Lim iterations; {r['repeats']} repeats.")
    lines += ["", "| | " + " | ".join(label for label, _ in runs) + " |", "|---|" + "---:|" * len(runs),
              "| RTF (convert_file) | " + " | ".join(f"{r['rtf']:.4f}" for _, r in runs) + " |",
              "| × real time | " + " | ".join(f"{r['x_realtime']:.0f}×" for _, r in runs) + " |",
              "| RTF with checkpoint loading (whole convert_path) | "
              + " | ".join(f"{r['rtf_with_model_load']:.4f}" for _, r in runs) + " |"]
    stages = []
    for _, r in runs:
        stages += [k for k in r["stages_s"] if k not in stages]
    for k in stages:
        lines.append(f"| stage: {k}, ms | " + " | ".join(_fmt(r["stages_s"].get(k, None) and r["stages_s"][k] * 1000,
                                                                  ".0f") for _, r in runs) + " |")
    naive = [(label, r["naive"]) for label, r in runs if "naive" in r]
    lines.append("")
    for label, n in naive:
        lines.append(f"Naive reference on the {label} ({n['how']}; first {n['seconds']:.0f} s of the input): RTF "
                     f"{n['rtf']:.3f}, {n['rtf'] / dict(runs)[label]['rtf']:.0f}× slower than specgan convert.")
    lines.append("")
    return lines + convert_memory_section(read_json("convert_memory"))


def convert_memory_section(r: dict | None) -> list[str]:
    """Long inputs: Griffin-Lim in blocks against one pass over the whole clip (``bench/convert_memory.py``)."""
    lines = ["### convert on long inputs: memory", ""]
    if not r:
        return lines + ["Not run yet (`python bench/convert_memory.py`).", ""]
    lines += [f"`specgan convert` (`convert_file`) of {r['input']} (n_fft {r['n_fft']}, hop {r['hop_length']}) on "
              f"{_where(r)}, through a 1-step translator of `recipes/voice_convert.toml`'s architecture at "
              f"{', '.join(f'`{o}`' for o in r['model']) if isinstance(r['model'], list) else r['model']}: "
              "Griffin-Lim in blocks (the default) against one Griffin-Lim pass over the whole clip (what convert "
              "did before: the same code with the block size patched to infinity). Each figure is one child "
              f"process's (median of {r['repeats']}); peak = its peak resident memory (`VmHWM`), growth = the peak "
              "less its resident memory just before the conversion (Python, torch, the model). Difference = "
              "‖blocks − one pass‖ / ‖one pass‖ of the written waveforms. An input of at most one block (8192 frames "
              "at n_fft 1024, 65 s here) runs the same code either way, so its row shows how much single "
              "measurements vary.", "",
              "| input | blocks: peak MB | growth MB | wall s | one pass: peak MB | growth MB | wall s | peak ratio "
              "| speed-up | difference |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        b, o = row["blocks"], row["one_pass"]
        lines.append(f"| {row['minutes']:g} min | {b['peak_mb']:.0f} | {b['growth_mb']:.0f} | {b['wall_s']:.1f} | "
                     f"{o['peak_mb']:.0f} | {o['growth_mb']:.0f} | {o['wall_s']:.1f} | {row['peak_ratio']:.2f}× | "
                     f"{row['speedup']:.2f}× | {row['waveform_difference']:.1e} |")
    return lines + [""]


def scaling_section(r: dict | None) -> list[str]:
    """Several GPUs under torchrun (``bench/scaling.py``; ``gpu_session.py`` runs it on a machine with two or
    more)."""
    lines = ["## Several GPUs (`torchrun`)", ""]
    if not r:
        return lines + ["Not measured yet: every GPU machine lent so far had one GPU. `bench/gpu_session.py` runs "
                        "`bench/scaling.py` on a machine with two or more (`specgan train` under `torchrun` on 1, 2, "
                        "4, ... GPUs, the recipe's global batch kept); the two-process training itself is tested on "
                        "the CPU (tests/test_distributed.py) and, with two GPUs, by `pytest -m gpu`.", ""]
    lines += [f"`specgan train` under `torchrun --standalone --nproc_per_node N` on {_where(r)} ({r['gpus']} GPUs), "
              f"the recipe's global batch kept (strong scaling); images/s = rank 0's over windows of "
              f"{r['log_every']} steps after the warm-up, median of {r['rounds']} interleaved round(s). One process "
              "runs the single-process defaults (CUDA graphs, compile = auto); several run DistributedDataParallel "
              "without them. Speed-up: against the one-process run of the same round.", "",
              "| model | processes | images/s | speed-up | efficiency |", "|---|---:|---:|---:|---:|"]
    for kind, entry in r["kinds"].items():
        for n, s in entry["summary"].items():
            lines.append(f"| {kind} ({entry['recipe']}) | {n} | {_rate(s['images_per_s'])} | "
                         f"{_fmt(s['speedup'], '.2f')} | {_fmt(s['efficiency'], '.2f')} |")
    if r.get("errors"):
        lines += ["", "Failed: " + "; ".join(f"{k}: {v.splitlines()[-1] if v else ''}" for k, v in r["errors"].items())]
    return lines + [""]


if __name__ == "__main__":
    main()

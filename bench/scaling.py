"""Scaling over processes: ``specgan train`` under ``torchrun`` on one machine with 1, 2, 4, ... processes (one per
GPU; gloo processes with the ``--device cpu`` check), the recipe's global batch kept (strong scaling), against the
same command with one process.

Each run is the whole command a user types (``torchrun --standalone --nproc_per_node N -m specgan train RECIPE
--set ...``): its figure is the median of rank 0's ``images_per_s`` (the global batch's images over windows of
``LOG_EVERY`` steps, from ``metrics.jsonl``) after the warm-up. One process trains with the single-process defaults
(CUDA graphs; ``compile = auto``); several train with DistributedDataParallel (neither, see README). Speed-up is a
run's images/s over the one-process run of the same round; efficiency is the speed-up over the process count.

- ``dcgan``: ``recipes/mnist_dcgan.toml`` on MNIST from the data mirror.
- ``cyclegan``: ``recipes/voice_convert.toml`` on a dataset of random chunks written in prep's format (the speed
  does not depend on the values).

    python bench/scaling.py                                  # every GPU here: 1, 2, 4, ... and all of them
    python bench/scaling.py --device cpu --ranks 1,2 --size tiny   # that the runs work (gloo on the CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import ROOT, data_mirror, machine, result_name, versions, write_json
from specgan.data.dataset_dir import domains_table, write_dataset
from specgan.train.config import load_recipe
from specgan.train.loop import LOG_EVERY

RECIPES = {"dcgan": ROOT / "recipes" / "mnist_dcgan.toml", "cyclegan": ROOT / "recipes" / "voice_convert.toml"}
#: Steps, warm-up steps (not timed), and recipe overrides per size; "gpu" keeps the recipes' models and batches.
SIZES = {
    "gpu": {"dcgan": dict(steps=400, warmup=100, set=[]),
            "cyclegan": dict(steps=200, warmup=75, set=[])},
    "tiny": {"dcgan": dict(steps=2 * LOG_EVERY, warmup=LOG_EVERY, set=["model.channels=4", "train.batch_size=8"]),
             "cyclegan": dict(steps=2 * LOG_EVERY, warmup=LOG_EVERY,
                              set=["model.channels=4", "model.n_blocks=1", "train.batch_size=4"])},
}
#: Random chunks per domain of the CycleGAN's dataset.
CHUNKS = 256


def default_ranks(device: str) -> list[int]:
    """1, 2, 4, ... up to the GPU count, and the count itself (CPU: 1 and 2)."""
    most = torch.cuda.device_count() if device == "cuda" else 2
    ranks = [1]
    while ranks[-1] * 2 <= most:
        ranks.append(ranks[-1] * 2)
    return ranks if ranks[-1] == most else [*ranks, most]


def random_chunks_dataset(path: Path, recipe_path: Path) -> None:
    """A two-domain dataset of ``CHUNKS`` random chunks each, in prep's format, with the recipe's audio parameters
    and domain names."""
    recipe = load_recipe(recipe_path)
    audio, domains = recipe.audio, list(recipe.data.domains)
    g = np.random.default_rng(0)
    chunks = [g.uniform(-1, 1, (CHUNKS, audio.n_mels, audio.frames)) for _ in domains]
    labels = [np.full(CHUNKS, i) for i in range(len(domains))]
    positions = [np.zeros((CHUNKS, 2)) for _ in domains]
    seconds = round(CHUNKS * audio.chunk_hop * audio.hop_length / audio.sample_rate, 3)
    sources = [{"path": f"{d}/random.wav", "domain": d, "sha256": "0" * 64, "sample_rate": audio.sample_rate,
                "seconds": seconds, "chunks": CHUNKS, "first_chunk": i * CHUNKS} for i, d in enumerate(domains)]
    write_dataset(path, audio=audio, chunks=chunks, labels=labels, positions=positions,
                  manifest={"source": "random chunks (bench/scaling.py)", "sources": sources, "skipped": [],
                            "domains": domains_table(domains, sources, [])})


def descendants(pid: int) -> list[int]:
    """The process ids of ``pid``'s children, theirs, and so on (Linux ``/proc``; empty where it is not)."""
    try:
        children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [p for child in children for p in (child, *descendants(child))]


def run(kind: str, *, ranks: int, device: str, size: dict, data: Path, work: Path,
        timeout_s: float | None = None) -> dict:
    """One ``torchrun ... specgan train`` of ``kind`` with ``ranks`` processes (killed after ``timeout_s``): its
    images/s windows after the warm-up, their median and the wall time of the whole command."""
    run_dir = work / f"{kind}_{ranks}_{time.monotonic_ns()}"
    steps = size["steps"]
    overrides = [f"data.path={data}", f"output.dir={run_dir}", f"train.steps={steps}",
                 f"train.sample_every={steps}", f"train.checkpoint_every={steps}", "train.keep_checkpoints=1",
                 *size["set"]]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "specgan", "train", str(RECIPES[kind]), "--device", device, "--quiet"]
    for item in overrides:
        command += ["--set", item]
    env = dict(os.environ)
    if device == "cpu":
        env["OMP_NUM_THREADS"] = "1"  # a core per process, whatever the count
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        # torchrun starts each rank in a session of its own: killing torchrun alone would leave them on the GPUs
        # (and holding the pipes read above).
        for pid in [*descendants(process.pid), process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.communicate()
        raise RuntimeError(f"{kind} on {ranks} process(es): killed at the end of the budget ({timeout_s:.0f} s)")
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{kind} on {ranks} process(es) exited {process.returncode}: {stderr[-1500:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = sorted({r["step"]: r["images_per_s"] for r in records if r["step"] - LOG_EVERY >= size["warmup"]
                    and r["step"] % LOG_EVERY == 0}.items())
    windows = [rate for _, rate in rates]
    return {"rates": windows, "images_per_s": statistics.median(windows) if windows else None, "wall_s": wall}


def measure(kinds: list[str], *, device: str, ranks: list[int], size_name: str, rounds: int,
            budget_s: float | None = None, log=print) -> dict:
    """Interleaved rounds of every process count for each kind; the result dict (failures recorded in it). With
    ``budget_s``, a run that would not fit in what is left (judged by the longest run so far) is skipped, and one
    still going when the budget ends is killed."""
    ends = time.monotonic() + budget_s if budget_s is not None else None
    longest = 0.0
    result = {"benchmark": "scaling", "device": device, "machine": machine(), "versions": versions(),
              "size_name": size_name, "ranks": ranks, "rounds": rounds, "log_every": LOG_EVERY,
              "gpus": torch.cuda.device_count() if device == "cuda" else 0, "kinds": {}, "errors": {}, "skipped": []}
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        work = Path(tmp)
        for kind in kinds:
            size = SIZES[size_name][kind]
            if kind == "dcgan":
                data = data_mirror() / "mnist"
            else:
                data = work / "random_chunks"
                random_chunks_dataset(data, RECIPES[kind])
            entry = result["kinds"][kind] = {"recipe": str(RECIPES[kind].relative_to(ROOT)), "size": size,
                                             "runs": {str(n): [] for n in ranks}}
            for r in range(rounds):
                for n in ranks:
                    left = ends - time.monotonic() if ends is not None else None
                    if left is not None and left < 1.2 * longest:
                        result["skipped"].append(f"{kind}/{n}/round {r}")
                        log(f"  {kind} x{n}, round {r}: skipped ({left:.0f} s of budget left)")
                        continue
                    try:
                        out = run(kind, ranks=n, device=device, size=size, data=data, work=work, timeout_s=left)
                    except Exception as e:  # one failing count must not stop the others
                        result["errors"][f"{kind}/{n}"] = str(e)[-2000:]
                        log(f"  {kind} x{n}: FAILED {str(e).splitlines()[0]}")
                        continue
                    longest = max(longest, out["wall_s"])
                    entry["runs"][str(n)].append({"round": r, **out})
                    log(f"  {kind} x{n}, round {r}: {out['images_per_s']} images/s, {out['wall_s']:.0f} s")
            entry["summary"] = summarise(entry["runs"])
    return result


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per process count: median images/s, and the median over rounds of the speed-up against the one-process run
    of the same round, with the efficiency (speed-up / count)."""
    single = {run["round"]: run["images_per_s"] for run in runs.get("1", []) if run["images_per_s"]}
    summary = {}
    for n, its in runs.items():
        rates = [run["images_per_s"] for run in its if run["images_per_s"]]
        ups = [run["images_per_s"] / single[run["round"]] for run in its
               if run["images_per_s"] and run["round"] in single]
        up = statistics.median(ups) if ups else None
        summary[n] = {"images_per_s": statistics.median(rates) if rates else None, "speedup": up,
                      "efficiency": up / int(n) if up else None}
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="dcgan,cyclegan")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--ranks", default=None, help="comma-separated process counts (default: 1, 2, 4, ... and "
                                                      "every GPU here)")
    parser.add_argument("--size", default="gpu", choices=sorted(SIZES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=None, help="wall seconds for all runs")
    parser.add_argument("--out", default=None, help="folder for the JSON (default bench/out)")
    args = parser.parse_args(argv)
    ranks = [int(n) for n in args.ranks.split(",")] if args.ranks else default_ranks(args.device)
    if 1 not in ranks:
        ranks = [1, *ranks]  # the speed-ups are against one process
    result = measure(args.kinds.split(","), device=args.device, ranks=ranks, size_name=args.size,
                     rounds=args.rounds, budget_s=args.budget_s)
    path = write_json(result_name("scaling", args.device), result, Path(args.out) if args.out else None)
    print(f"wrote {path}")
    for kind, entry in result["kinds"].items():
        for n, s in entry["summary"].items():
            print(f"  {kind} x{n}: {s['images_per_s']} images/s, speed-up {s['speedup']}, efficiency "
                  f"{s['efficiency']}")
    return result


if __name__ == "__main__":
    main()

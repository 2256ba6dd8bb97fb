"""Where a CycleGAN translate step spends its time: ``torch.profiler`` over a few steps run without CUDA graphs
(compiled where ``train.compile`` says so), the top operators (CPU) or kernels (CUDA) by self time, as a table and
as JSON. A tool for speed work, not a benchmark (it compares
nothing); sizes are those of ``train_throughput.py``.

    python bench/profile_step.py --size cpu --threads 2
    python bench/profile_step.py --size gpu --out bench/out --set train.channels_last=true
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from common import machine, set_threads, sync
from specgan.data.image_data import ImageData
from specgan.train.translate import TranslateTask
from train_throughput import SIZES, VARIANTS, cyclegan_recipe, synthetic_chunks, variant_context


def profile_translate(*, size_name: str, device: torch.device, variant: str = "default", extra: list[str] = (),
                      steps: int = 5, top: int = 30) -> dict:
    """Top ``top`` entries by self device time (CUDA kernels) or self CPU time (CPU operators) over ``steps``
    steps, not recorded as CUDA graphs (the profiler sees their kernels), after a warm-up that fills the history
    pools (and compiles, when the recipe compiles). ``variant`` names one of ``train_throughput.VARIANTS`` (its
    recipe overrides and its patches), ``extra`` more recipe overrides."""
    with variant_context(variant):
        return _profile_translate(size_name=size_name, device=device, overrides=[*VARIANTS[variant], *extra],
                                  steps=steps, top=top)


def _profile_translate(*, size_name: str, device: torch.device, overrides: list[str], steps: int, top: int) -> dict:
    size = SIZES["cyclegan"][size_name]
    a, b = synthetic_chunks(size)
    with tempfile.TemporaryDirectory() as work:
        recipe = cyclegan_recipe(size, "default", Path(work), extra=["train.cuda_graphs=false", *overrides])
    data = ImageData(images=torch.cat([a, b]), labels=torch.cat([torch.zeros(len(a)), torch.ones(len(b))]).long(),
                     class_names=("A", "B"))
    task = TranslateTask(recipe, data, device=device)
    cuda = device.type == "cuda"
    step = 1
    with task.accel.backend_settings():
        for step in range(1, size["warmup"] + 1):
            task.step(step)
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for step in range(step + 1, step + 1 + steps):
                task.step(step)
            sync(device)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = [e for e in prof.key_averages() if getattr(e, key) > 0 and (not cuda or e.device_type.name == "CUDA")]
    rows.sort(key=lambda e: -getattr(e, key))
    total = sum(getattr(e, key) for e in rows)
    table = [{"name": e.key, "calls_per_step": e.count / steps, "ms_per_step": getattr(e, key) / 1000 / steps,
              "share": getattr(e, key) / total} for e in rows[:top]]
    return {"device": str(device), "machine": machine(), "size": size, "overrides": overrides, "steps": steps,
            "measured": "CUDA kernel time" if cuda else "CPU operator self time",
            "ms_per_step_total": total / 1000 / steps, "top": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("gpu", "cpu", "tiny"), default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="default")
    parser.add_argument("--set", action="append", default=[], help="more recipe overrides, KEY=VALUE")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="folder for profile_translate_<device>.json")
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)
    device = torch.device(args.device)
    result = profile_translate(size_name=args.size, device=device, variant=args.variant, extra=args.set,
                               steps=args.steps)
    print(f"{result['measured']} per step: {result['ms_per_step_total']:.1f} ms ({device}, {args.variant} "
          f"{' '.join(args.set)})")
    for row in result["top"]:
        print(f"{row['ms_per_step']:8.2f} ms {100 * row['share']:5.1f}% {row['calls_per_step']:6.1f}x  "
              f"{row['name'][:110]}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"profile_translate_{device.type}_{args.variant}.json"
        (args.out / name).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

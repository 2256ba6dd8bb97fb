"""Training throughput (images/s), specgan against a plain reference loop on the same device in the same run.

- ``dcgan``: ``recipes/mnist_dcgan.toml`` on real MNIST through :func:`specgan.train.loop.train` (the whole loop:
  metrics, TensorBoard, the moving average of G), steady state from the loop's own ``images_per_s`` windows of
  ``LOG_EVERY`` steps after a warm-up; against :func:`reference.run_dcgan_reference` (PyTorch DCGAN example
  structure) timed over windows of the same length.
- ``cyclegan``: the translate step of ``recipes/voice_convert.toml`` (:class:`TranslateTask` on synthetic random
  chunks ``(N, 1, 80, frames)``, random time crops on the device), windows of ``task.step`` calls; against
  :class:`reference.CycleGanReference` (junyanz/pytorch-CycleGAN-and-pix2pix structure).

specgan is measured with each option combination (``VARIANTS``). Sides run interleaved (reference, variants,
reference, variants, ...); each run's figure is the median of its windows, each side's the median of its runs.
One step's FLOPs (forward + backward, ``torch.utils.flop_counter``) are counted for the default variant and the
reference, so achieved TFLOP/s can be derived (see :func:`tflops_report`).

    python bench/train_throughput.py dcgan --size cpu --threads 1
    python bench/train_throughput.py cyclegan --size cpu --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from unittest import mock
from typing import Sequence

import torch

from common import OUT, ROOT, data_mirror, machine, result_name, set_threads, sync, versions, write_json
from reference import CycleGanReference, DcganReference, WindowTimer, run_cyclegan_reference, \
    run_dcgan_reference
from specgan.data.image_data import ImageData
from specgan.models import MODELS
from specgan.models.instance_norm import InstanceNorm2d
from specgan.train.acceleration import Acceleration, cpu_has_bf16_instructions
from specgan.train.config import TrainConfig, load_recipe
from specgan.train.loop import LOG_EVERY, train
from specgan.train.translate import TranslateTask

DCGAN_RECIPE = ROOT / "recipes" / "mnist_dcgan.toml"
CYCLEGAN_RECIPE = ROOT / "recipes" / "voice_convert.toml"

#: specgan's option combinations: name → recipe overrides.
VARIANTS = {
    "default": [],
    "channels_last": ["train.channels_last=true"],
    "no_channels_last": ["train.channels_last=false"],
    "fp32": ["train.precision=fp32"],
    "bf16": ["train.precision=bf16"],
    "no_cudnn_benchmark": ["train.cudnn_benchmark=false"],
    "no_cuda_graphs": ["train.cuda_graphs=false"],
    "compile": ["train.compile=true"],
    "no_compile": ["train.compile=false"],
    "compile_channels_last": ["train.compile=true", "train.channels_last=true"],
    "native_instance_norm": [],
}


#: Variants that switch what no recipe key reaches: name → the context a run of it is made in.
#: native_instance_norm: compiled GPU code keeps PyTorch's instance norm (models/instance_norm.py). (The
#: ResNet CycleGAN's compiled channels-last default was first measured as such a variant, with Inductor's
#: ``force_layout_optimization`` patched on.)
PATCHES = {
    "native_instance_norm": lambda: mock.patch.object(InstanceNorm2d, "moments_under_compile", False),
}


@contextlib.contextmanager
def variant_context(variant: str):
    """What a run of ``variant`` is made in: its :data:`PATCHES` entry, with TorchDynamo's caches cleared before, so
    that a compiled network is compiled for this run's settings and never reuses another variant's code."""
    torch._dynamo.reset()
    with PATCHES.get(variant, contextlib.nullcontext)():
        yield


#: What each benchmark measures on each device by default. The CycleGAN's default is compiled on CUDA, and each
#: other precision or memory order compiles again (about 45-60 s each), so fewer variants are measured there;
#: no_channels_last is its compiled step without channels-last inside the compiled code.
DEFAULT_VARIANTS = {("dcgan", "cuda"): ["default", "compile", "no_cuda_graphs", "other_precision", "channels_last"],
                    ("cyclegan", "cuda"): ["default", "no_channels_last", "other_precision", "no_cuda_graphs",
                                           "no_compile"],
                    ("dcgan", "cpu"): ["default", "other_precision", "other_layout"],
                    ("cyclegan", "cpu"): ["default", "other_precision", "other_layout"]}
COMPILE_VARIANTS = ["compile", "compile_channels_last"]
#: The model family each benchmark trains (its "auto" choices decide what other_layout means).
FAMILY = {"dcgan": "dcgan", "cyclegan": "cyclegan"}


def default_variants(kind: str, device_type: str) -> list[str]:
    """The variants measured for ``kind`` on ``device_type`` unless asked otherwise, so that a run shows what each
    ``auto`` choice gains. ``other_precision`` is the precision ``train.precision = auto`` does not choose for the
    benchmark's model family on this device (bf16 where auto is fp32, and the other way round); it is left out on a CPU without bf16 instructions,
    which emulates it (the DCGAN step ran about 12x slower so on an AMD Zen 3, and the CycleGAN runs would take
    most of an hour). ``other_layout`` is the memory order ``train.channels_last = auto`` does not choose for the
    benchmark's model family at auto's precision."""
    device = torch.device(device_type)
    family = MODELS[FAMILY[kind]]
    auto = Acceleration(TrainConfig(), device=device, channels_last_on_cpu=family.channels_last_on_cpu,
                        bf16_on_cuda=family.bf16_on_cuda)
    other_precision = "fp32" if auto.bf16 else "bf16"
    other_layout = "no_channels_last" if auto.memory_format == torch.channels_last else "channels_last"
    chosen = {"other_precision": other_precision, "other_layout": other_layout}
    return [chosen.get(v, v) for v in DEFAULT_VARIANTS[(kind, device_type)]
            if not (v == "other_precision" and other_precision == "bf16" and device_type == "cpu"
                    and not cpu_has_bf16_instructions())]

#: Sizes per benchmark: "gpu" is the recipe's size; "cpu" runs in a couple of minutes on 2 cores; "tiny" only
#: checks that every code path runs.
SIZES = {
    "dcgan": {
        "gpu": dict(batch_size=128, channels=64, steps=300, warmup=50, workers=2),
        "cpu": dict(batch_size=64, channels=32, steps=150, warmup=50, workers=0),
        "tiny": dict(batch_size=8, channels=4, steps=75, warmup=25, workers=0),
    },
    "cyclegan": {
        "gpu": dict(batch_size=16, channels=64, n_blocks=6, n_mels=80, frames=160, crop=128, chunks=1024,
                    warmup=10, window=10, windows=5, workers=4),
        "cpu": dict(batch_size=8, channels=16, n_blocks=3, n_mels=80, frames=128, crop=64, chunks=256,
                    warmup=3, window=5, windows=3, workers=0),
        "tiny": dict(batch_size=2, channels=4, n_blocks=1, n_mels=80, frames=48, crop=32, chunks=16,
                     warmup=2, window=2, windows=2, workers=0),
    },
}
#: Speed-up goals over the reference.
GOALS = {"cpu": 1.5, "cuda": 3.0}

#: Dense bf16 peak TFLOP/s by GPU name (first matching key, most specific first).
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0), ("L4", 121.0)]


def peak_tflops(name: str | None) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if name and key in name:
            return value
    return None


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else None


class Deadline:
    """Wall-clock budget: a run starts only if its expected duration fits."""

    def __init__(self, seconds: float | None):
        self.end = time.perf_counter() + seconds if seconds else None

    def left(self) -> float:
        return float("inf") if self.end is None else self.end - time.perf_counter()

    def fits(self, expected: float) -> bool:
        return self.left() > expected


# -- DCGAN -------------------------------------------------------------------------------------------------------

def run_specgan_dcgan(folder: Path, *, variant: str, size: dict, device: torch.device, work: Path,
                      flops: bool = False) -> dict:
    steps = size["steps"]
    run_dir = work / f"dcgan_{variant}_{time.monotonic_ns()}"
    overrides = [f"data.path={folder}", f"output.dir={run_dir}", f"train.steps={steps}",
                 f"train.batch_size={size['batch_size']}", f"model.channels={size['channels']}",
                 f"train.sample_every={steps}", f"train.checkpoint_every={steps}", "train.keep_checkpoints=1",
                 *VARIANTS[variant]]
    recipe = load_recipe(DCGAN_RECIPE, overrides=overrides)
    rates = []

    def on_step(record: dict) -> None:
        # images_per_s covers the LOG_EVERY steps that end at record["step"]; keep windows after the warm-up.
        if record["step"] - LOG_EVERY >= size["warmup"]:
            rates.append(record["images_per_s"])

    started = time.perf_counter()
    with variant_context(variant):
        result = train(recipe, device=device, on_step=on_step)
    wall = time.perf_counter() - started
    out = {"rates": rates, "images_per_s": _median(rates), "wall_s": wall}
    if flops:
        out["flops_per_step"] = count_flops_eagerly(result.task, step=steps + 1, device=device)
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


def run_reference_dcgan(folder: Path, *, size: dict, device: torch.device) -> dict:
    started = time.perf_counter()
    _, rates, steady = run_dcgan_reference(folder, steps=size["steps"], batch_size=size["batch_size"],
                                           channels=size["channels"], z_dim=100, n_classes=0, seed=0, device=device,
                                           workers=size["workers"] if device.type == "cuda" else 0,
                                           warmup=size["warmup"], window=LOG_EVERY)
    return {"rates": rates, "images_per_s": _median(rates), "steady_images_per_s": steady,
            "wall_s": time.perf_counter() - started}


def count_flops_eagerly(task, *, step: int, device: torch.device) -> int:
    """FLOPs of one step of ``task``, run eagerly: a replayed CUDA graph is invisible to the counter."""
    task._graphed_update.enabled = False
    with torch.compiler.set_stance("force_eager"):  # compiled networks run their eager code, which the counter sees
        return count_flops(lambda: (task.step(step), sync(device)))


def reference_dcgan_flops(size: dict, device: torch.device) -> int:
    ref = DcganReference(n_classes=0, z_dim=100, channels=size["channels"], seed=0, device=device)
    real = torch.rand(size["batch_size"], 1, 28, 28) * 2 - 1
    labels = torch.zeros(size["batch_size"], dtype=torch.long)
    return count_flops(lambda: (ref.step(real, labels), sync(device)))


# -- CycleGAN ----------------------------------------------------------------------------------------------------

def synthetic_chunks(size: dict, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two domains of random "log-mel chunks" ``(chunks, 1, n_mels, frames)`` in [-1, 1] (speed does not depend
    on the values)."""
    g = torch.Generator().manual_seed(seed)
    shape = (size["chunks"], 1, size["n_mels"], size["frames"])
    return torch.rand(shape, generator=g) * 2 - 1, torch.rand(shape, generator=g) * 2 - 1


def cyclegan_recipe(size: dict, variant: str, work: Path, *, extra: Sequence[str] = ()):
    steps = size["warmup"] + size["window"] * size["windows"]
    return load_recipe(CYCLEGAN_RECIPE, overrides=[
        f"model.channels={size['channels']}", f"model.n_blocks={size['n_blocks']}",
        f"train.batch_size={size['batch_size']}", f"train.crop_frames={size['crop']}", f"train.steps={steps}",
        f"output.dir={work / 'cyclegan'}", f"data.path={work / 'unused'}", *VARIANTS[variant], *extra])


def run_specgan_cyclegan(a: torch.Tensor, b: torch.Tensor, *, variant: str, size: dict, device: torch.device,
                         work: Path, flops: bool = False) -> dict:
    with variant_context(variant):
        return _run_specgan_cyclegan(a, b, variant=variant, size=size, device=device, work=work, flops=flops)


def _run_specgan_cyclegan(a: torch.Tensor, b: torch.Tensor, *, variant: str, size: dict, device: torch.device,
                          work: Path, flops: bool) -> dict:
    recipe = cyclegan_recipe(size, variant, work)
    data = ImageData(images=torch.cat([a, b]), labels=torch.cat([torch.zeros(len(a)), torch.ones(len(b))]).long(),
                     class_names=("A", "B"))
    started = time.perf_counter()
    task = TranslateTask(recipe, data, device=device)
    timer = WindowTimer(device=device, images_per_step=task.images_per_step, warmup=size["warmup"],
                        window=size["window"])
    steps = size["warmup"] + size["window"] * size["windows"]
    pending = []
    with task.accel.backend_settings():  # as the training loop runs its steps
        for step in range(1, steps + 1):
            pending.append(task.step(step))
            if step >= size["warmup"] and (step - size["warmup"]) % size["window"] == 0:
                # What the training loop does every LOG_EVERY steps: fetch the step scalars in one transfer.
                torch.stack([torch.stack([v.float() for v in s.values()]) for s in pending]).tolist()
                pending = []
            timer.after(step)
    out = {"rates": timer.rates, "images_per_s": _median(timer.rates), "wall_s": time.perf_counter() - started}
    if flops:
        with task.accel.backend_settings():
            out["flops_per_step"] = count_flops_eagerly(task, step=steps + 1, device=device)
    return out


def run_reference_cyclegan(a, b, *, size: dict, device: torch.device) -> dict:
    started = time.perf_counter()
    steps = size["warmup"] + size["window"] * size["windows"]
    rates = run_cyclegan_reference(a, b, steps=steps, batch_size=size["batch_size"], crop=size["crop"],
                                   channels=size["channels"], n_blocks=size["n_blocks"], device=device,
                                   workers=size["workers"] if device.type == "cuda" else 0, warmup=size["warmup"],
                                   window=size["window"])
    return {"rates": rates, "images_per_s": _median(rates), "wall_s": time.perf_counter() - started}


def reference_cyclegan_flops(a, b, size: dict, device: torch.device) -> int:
    model = CycleGanReference(image_shape=(1, size["n_mels"], size["crop"]), channels=size["channels"],
                              n_blocks=size["n_blocks"], device=device)
    n, crop = size["batch_size"], size["crop"]
    batch = {"A": a[:n, ..., :crop].contiguous(), "B": b[:n, ..., :crop].contiguous()}
    return count_flops(lambda: (model.step(batch), sync(device)))


# -- both --------------------------------------------------------------------------------------------------------

def measure(kind: str, *, device: torch.device, size_name: str, variants: list[str], rounds: int = 2,
            reference: bool = True, budget_s: float | None = None, log=print) -> dict:
    """Interleaved runs of the reference and each specgan variant; returns the result dict (errors recorded in
    it, never raised)."""
    size = SIZES[kind][size_name]
    deadline = Deadline(budget_s)
    result = {"benchmark": f"train_{kind}", "device": str(device), "machine": machine(), "versions": versions(),
              "size_name": size_name, "size": size, "rounds": rounds, "goal_speedup": GOALS[device.type],
              "reference": {"runs": []}, "variants": {v: {"overrides": VARIANTS[v], "runs": []} for v in variants},
              "errors": {}, "skipped": []}
    if kind == "dcgan":
        folder = data_mirror() / "mnist"
        result["data"] = f"MNIST train set (60000 images, 1x28x28), {folder.name}/ of the data mirror"
        result["recipe"] = "recipes/mnist_dcgan.toml"
    else:
        a, b = synthetic_chunks(size)
        result["data"] = (f"synthetic random chunks 2 x {size['chunks']} x (1, {size['n_mels']}, {size['frames']}), "
                          f"random {size['crop']}-frame crops")
        result["recipe"] = "recipes/voice_convert.toml"
    work = Path(tempfile.mkdtemp(prefix=f"bench_{kind}_"))
    expected: dict[str, float] = {}

    def attempt(name: str, fn):
        if not deadline.fits(expected.get(name, expected.get("any", 0.0)) * 1.2):
            result["skipped"].append(name)
            log(f"  {kind} {name}: skipped ({deadline.left():.0f} s of budget left)")
            return None
        try:
            out = fn()
        except Exception as e:  # one failing variant must not stop the others
            result["errors"][name] = "".join(traceback.format_exception_only(type(e), e)).strip()[-2000:]
            log(f"  {kind} {name}: FAILED {result['errors'][name].splitlines()[-1]}")
            traceback.print_exc()
            return None
        expected[name] = out["wall_s"]
        expected["any"] = max(expected.get("any", 0.0), out["wall_s"])
        rate = out["images_per_s"]
        log(f"  {kind} {name}: {rate:.1f} images/s (windows {[round(r, 1) for r in out['rates']]}), "
            f"{out['wall_s']:.1f} s" if rate else f"  {kind} {name}: no timed window, {out['wall_s']:.1f} s")
        return out

    try:
        for r in range(rounds):
            if reference:
                out = attempt("reference", (lambda: run_reference_dcgan(folder, size=size, device=device))
                              if kind == "dcgan" else (lambda: run_reference_cyclegan(a, b, size=size, device=device)))
                if out:
                    result["reference"]["runs"].append({**out, "round": r})
            for v in variants:
                flops = r == 0 and v == "default"
                out = attempt(v, (lambda v=v, flops=flops: run_specgan_dcgan(
                    folder, variant=v, size=size, device=device, work=work, flops=flops)) if kind == "dcgan" else
                    (lambda v=v, flops=flops: run_specgan_cyclegan(a, b, variant=v, size=size, device=device,
                                                                   work=work, flops=flops)))
                if out:
                    if "flops_per_step" in out:
                        result["flops_per_step_specgan"] = out.pop("flops_per_step")
                    result["variants"][v]["runs"].append({**out, "round": r})
        if reference:
            try:
                result["flops_per_step_reference"] = (reference_dcgan_flops(size, device) if kind == "dcgan"
                                                      else reference_cyclegan_flops(a, b, size, device))
            except Exception as e:
                result["errors"]["reference_flops"] = repr(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summarize(result)
    return result


def summarize(result: dict) -> dict:
    """Medians over runs, each variant's speed-up over the reference median, and its speed-ups over the reference
    run of the same round (``round_speedups``) with their median (``round_speedup``).

    A shared machine may run everything faster or slower for minutes at a time (the 2-core CPU VM did, by up to
    1.4x), so a variant's run is compared with the reference run next to it, and the goal is judged on the median
    of those per-round ratios when there are any (see :func:`goal_speedup`)."""
    ref = _median([run["images_per_s"] for run in result["reference"]["runs"] if run["images_per_s"]])
    if ref is not None or "images_per_s" not in result["reference"]:
        result["reference"]["images_per_s"] = ref
    ref = result["reference"].get("images_per_s")
    ref_by_round = {run["round"]: run["images_per_s"] for run in result["reference"]["runs"]
                    if run.get("images_per_s") and "round" in run}
    for v in result["variants"].values():
        rate = _median([run["images_per_s"] for run in v["runs"] if run["images_per_s"]])
        v["images_per_s"] = rate
        v["speedup"] = rate / ref if rate and ref else None
        v["round_speedups"] = [run["images_per_s"] / ref_by_round[run["round"]] for run in v["runs"]
                               if run.get("images_per_s") and run.get("round") in ref_by_round]
        v["round_speedup"] = _median(v["round_speedups"])
    return result


#: Paired rounds below which a goal is judged on the lower of the per-round median and the ratio of medians.
MIN_PAIRED_ROUNDS = 3


def goal_speedup(variant: dict) -> float | None:
    """The speed-up a goal is judged on: the median per-round ratio when at least :data:`MIN_PAIRED_ROUNDS` rounds
    were paired; with fewer, the lower of that and the ratio of medians (one H200 round of the CycleGAN step, whose
    reference ran slowest of four, had read 4.56×, the ratio of medians 3.76×); unpaired, the ratio of medians."""
    if len(variant.get("round_speedups") or []) >= MIN_PAIRED_ROUNDS:
        return variant["round_speedup"]
    known = [value for value in (variant.get("round_speedup"), variant.get("speedup")) if value]
    return min(known) if known else None


def tflops_report(results: dict[str, dict], device: torch.device | str) -> dict:
    """Achieved TFLOP/s of one training step for each measured side: FLOPs of one step / median step time,
    against the GPU's dense bf16 peak."""
    name = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else None
    peak = peak_tflops(name)
    rows = []
    for kind, r in results.items():
        if not r:
            continue
        size = r["size"]
        images_per_step = size["batch_size"]
        sides = [("reference", r["reference"], r.get("flops_per_step_reference"))]
        sides += [(v, data, r.get("flops_per_step_specgan")) for v, data in r["variants"].items()]
        for side, data, flops in sides:
            rate = data.get("images_per_s")
            if not rate or not flops:
                continue
            step_s = images_per_step / rate
            tflops = flops / step_s / 1e12
            rows.append({"model": kind, "side": side, "flops_per_step": flops, "step_ms": step_s * 1000,
                         "tflops": tflops, "fraction_of_peak": tflops / peak if peak else None})
    return {"benchmark": "train_flops", "device": str(device), "gpu": name, "peak_bf16_tflops": peak,
            "machine": machine(), "versions": versions(),
            "note": "FLOPs counted by torch.utils.flop_counter.FlopCounterMode over one eager training step "
                    "(forward + backward; convolutions and matrix products); specgan's count is for the default "
                    "variant and applies to every variant (the same arithmetic).", "rows": rows}


def merge_rounds(earlier: dict, later: dict, *, reference: bool) -> dict:
    """``later``'s runs added to ``earlier`` (both results of :func:`measure` for the same benchmark), summarised
    again: rounds are numbered after the earlier ones (a round pairs with its own reference run only), a variant
    measured in both pools its runs, and ``merged`` records what was added and on which machine and commit."""
    offset = earlier["rounds"] + sum(m["rounds"] for m in earlier.get("merged", []))
    for side in (later["reference"], *later["variants"].values()):
        for run in side["runs"]:
            run["round"] += offset
    earlier["reference"]["runs"] += later["reference"]["runs"]
    for variant_name, variant in later["variants"].items():
        if variant_name in earlier["variants"]:
            earlier["variants"][variant_name]["runs"] += variant["runs"]
        else:
            earlier["variants"][variant_name] = variant
    earlier["errors"].update(later["errors"])
    earlier["skipped"] += later["skipped"]
    earlier.setdefault("merged", []).append({"variants": list(later["variants"]), "rounds": later["rounds"],
                                             "reference": reference, "machine": later["machine"]})
    return summarize(earlier)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("dcgan", "cyclegan"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", choices=("gpu", "cpu", "tiny"), default=None,
                        help="default: gpu on CUDA, cpu otherwise")
    parser.add_argument("--variants", default=None, help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--compile", action="store_true", help="also measure the torch.compile variants")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds (default 7 on a CPU, 3 on a GPU). On the 2-core VM the machine's "
                             "speed swings by up to 1.4x within seconds: three 5-round DCGAN runs on one commit gave "
                             "per-round ratios from 1.37 to 1.98 and medians of 1.44, 1.47 and 1.59")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch and OMP)")
    parser.add_argument("--budget-s", type=float, default=None)
    parser.add_argument("--out", default=None, help="folder for the JSON (default bench/out)")
    parser.add_argument("--name", default=None, help="JSON name (default train_KIND, _cuda on a GPU)")
    parser.add_argument("--merge", action="store_true",
                        help="add these variants (and reference runs) to the existing JSON of the same name, e.g. "
                             "compile variants measured later; the runs of a variant already there are pooled with "
                             "the new ones (more rounds)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    size = args.size or ("gpu" if device.type == "cuda" else "cpu")
    args.rounds = args.rounds or (3 if device.type == "cuda" else 7)
    variants = args.variants.split(",") if args.variants else default_variants(args.kind, device.type)
    if args.compile:
        variants += [v for v in COMPILE_VARIANTS if v not in variants]
    print(f"train_{args.kind} on {device} ({size} size): reference + {', '.join(variants)}, {args.rounds} round(s)")
    result = measure(args.kind, device=device, size_name=size, variants=variants, rounds=args.rounds,
                     reference=not args.no_reference, budget_s=args.budget_s)
    result["threads"] = torch.get_num_threads()
    name = args.name or result_name(f"train_{args.kind}", device) + ("_tiny" if size == "tiny" else "")
    existing = (Path(args.out) if args.out else OUT) / f"{name}.json"
    if args.merge and existing.exists():
        result = merge_rounds(json.loads(existing.read_text()), result, reference=not args.no_reference)
    path = write_json(name, result, Path(args.out) if args.out else None)
    ref = result["reference"].get("images_per_s")
    for v, data in result["variants"].items():
        print(f"  {v}: {data['images_per_s'] or float('nan'):.1f} images/s, "
              f"{goal_speedup(data) or float('nan'):.2f}x the reference (median per-round ratio; reference median "
              f"{ref or float('nan'):.1f})")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

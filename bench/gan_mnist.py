"""Conditional MNIST GAN: ``specgan train`` (recipes/mnist_cgan.toml) against a plain reference loop — the
usual DCGAN example code with a per-item ``Dataset`` and a ``DataLoader`` — using the same architecture, loss,
optimiser, batch size and number of steps. Both are then measured with ``specgan eval``'s metrics (same
classifier, same number of samples).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import data_mirror, machine, write_json
from reference import run_dcgan_reference
from specgan.data.loaders import load_data
from specgan.device import resolve_device
from specgan.evaluate import evaluate_run
from specgan.metrics.classifier import load_or_train_classifier
from specgan.metrics.generative import evaluate_generator
from specgan.train.config import load_recipe
from specgan.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
#: Steps left out of the steady-state throughput (start-up, allocator warm-up).
WARMUP = 50


def reference_loop(folder: Path, *, steps: int, batch_size: int, channels: int, z_dim: int, seed: int,
                   device: torch.device):
    """The plain conditional reference loop (:mod:`reference`): its G in eval mode and its steady images/s, the
    median of its 25-step windows after the warm-up, as specgan's is of its logging windows. On a GPU its loader
    has the DCGAN example's 2 worker processes, as in ``train_throughput.py`` (it had none here)."""
    G, rates, _ = run_dcgan_reference(folder, steps=steps, batch_size=batch_size, channels=channels, z_dim=z_dim,
                                      n_classes=10, seed=seed, device=device, warmup=WARMUP,
                                      workers=2 if device.type == "cuda" else 0)
    return G, statistics.median(rates) if rates else float("nan")


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=10000, help="samples per evaluation")
    args = parser.parse_args()
    folder = data_mirror() / "mnist"
    device = resolve_device("auto")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        overrides = [f"train.steps={args.steps}", f"train.batch_size={args.batch_size}",
                     f"model.channels={args.channels}", f"data.path={folder}", f"output.dir={tmp}/run",
                     f"train.sample_every={args.steps}", f"train.checkpoint_every={args.steps}"]
        recipe = load_recipe(ROOT / "recipes" / "mnist_cgan.toml", overrides=overrides)
        started = time.perf_counter()
        train(recipe, device=device)
        ours_s = time.perf_counter() - started
        ours = evaluate_run(f"{tmp}/run", n=args.n, device=device, cache_dir=cache)

        records = [json.loads(line) for line in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()]
        # images_per_s is measured per logging window; the windows after the warm-up give the steady state.
        ours_steady = statistics.median(r["images_per_s"] for r in records if r["step"] > WARMUP)
        started = time.perf_counter()
        G, ref_steady = reference_loop(folder, steps=args.steps, batch_size=args.batch_size, channels=args.channels,
                           z_dim=recipe.model.z_dim, seed=0, device=device)
        ref_s = time.perf_counter() - started
        test = load_data("mnist", folder, split="test")
        classifier, _ = load_or_train_classifier(folder, kind="mnist", train=load_data("mnist", folder),
                                                 test=test, cache_dir=cache)
        noise = torch.Generator().manual_seed(0)
        with torch.no_grad():
            ref = evaluate_generator(
                lambda k, labels: G(torch.randn(k, recipe.model.z_dim, generator=noise).to(device),
                                    labels.to(device) if labels is not None else None),
                classifier=classifier.to(device), real_test=test, n=args.n, conditional=True)
    images = args.steps * args.batch_size
    result = {"benchmark": "gan_mnist", "machine": machine(), "device": str(device), "steps": args.steps,
              "batch_size": args.batch_size, "channels": args.channels, "n_eval": args.n,
              "specgan": {"wall_s": ours_s, "images_per_s": images / ours_s, "steady_images_per_s": ours_steady,
                          "label_accuracy": ours["label_accuracy"],
                          "fd": ours["fd"], "class_entropy": ours["class_entropy"]},
              "reference": {"wall_s": ref_s, "images_per_s": images / ref_s, "steady_images_per_s": ref_steady,
                            "label_accuracy": ref["label_accuracy"],
                            "fd": ref["fd"], "class_entropy": ref["class_entropy"]}}
    print(f"mnist_cgan, {args.steps} steps on {device}: specgan {result['specgan']['images_per_s']:.0f} img/s "
          f"overall, {ours_steady:.0f} steady, label acc {ours['label_accuracy']:.3f}, FD {ours['fd']:.2f}; reference "
          f"{result['reference']['images_per_s']:.0f} img/s overall, {ref_steady:.0f} steady, label acc "
          f"{ref['label_accuracy']:.3f}, FD {ref['fd']:.2f}")
    write_json("gan_mnist", result)
    return result


if __name__ == "__main__":
    main()

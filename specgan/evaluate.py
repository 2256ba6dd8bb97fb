"""``specgan eval``: measure a trained generator of MNIST-like images (see :mod:`specgan.metrics.generative`
for exactly how each number is computed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from specgan.atomic import atomic_path
from specgan.data.loaders import load_data
from specgan.errors import ConfigError
from specgan.metrics.classifier import load_or_train_classifier
from specgan.metrics.generative import evaluate_generator
from specgan.sample import load_generator
from specgan.train.checkpoint import load_checkpoint

#: Data kinds the reference classifier understands.
EVALUABLE = ("mnist", "fashion-mnist")


def evaluate_run(run_or_checkpoint: str | Path, *, n: int = 10000, seed: int = 0, device: torch.device,
                 data_path: Path | None = None, cache_dir: Path | None = None,
                 on_stage: Callable[[str], None] | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Evaluate a ``generate`` run on its own data (or ``data_path``); append the result to ``RUN/eval.jsonl``.

    ``on_stage(text)`` announces each stage (loading data, training the classifier once, sampling) and
    ``on_progress(done, total)`` reports progress inside it, so a caller can show that work is going on.
    """
    model = load_generator(run_or_checkpoint, device=device)
    state = load_checkpoint(model.checkpoint)
    kind = state["recipe"]["data"]["kind"]
    if kind not in EVALUABLE:
        raise ConfigError(f"{model.checkpoint}: eval measures MNIST-like runs ({', '.join(EVALUABLE)}); this run "
                          f"trained on data.kind = {kind!r}")
    path = Path(data_path or state["recipe"]["data"]["path"])
    stage = on_stage or (lambda _text: None)
    stage(f"loading {kind} from {path}")
    train = load_data(kind, path, split="train")
    test = load_data(kind, path, split="test")
    stage("reference classifier (trained once, then cached)")
    classifier, info = load_or_train_classifier(path, kind=kind, train=train, test=test, cache_dir=cache_dir,
                                                on_progress=on_progress)
    classifier.to(device)
    stage(f"sampling and classifying {n} images")
    noise = torch.Generator().manual_seed(seed)

    def sample(k: int, labels: torch.Tensor | None) -> torch.Tensor:
        return model(torch.randn(k, model.z_dim, generator=noise), labels)

    started = time.perf_counter()
    metrics = evaluate_generator(sample, classifier=classifier, real_test=test, n=n, conditional=model.conditional,
                                 seed=seed, on_progress=on_progress)
    result = {"checkpoint": str(model.checkpoint), "step": model.step, "kind": kind, "seed": seed,
              "classifier_test_accuracy": info["accuracy"], "seconds": round(time.perf_counter() - started, 2),
              **metrics}
    log = model.checkpoint.parent.parent / "eval.jsonl"
    if log.parent.is_dir():
        previous = log.read_text() if log.exists() else ""
        with atomic_path(log) as tmp:
            tmp.write_text(previous + json.dumps(result) + "\n")
    return result

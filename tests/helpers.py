"""Helpers shared by several test modules: a tiny image dataset, state comparison, one-line CLI errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from specgan.train.checkpoint import load_checkpoint


def make_two_tone_folder(root: Path, *, n: int = 48, size: int = 16) -> Path:
    """A two-class image folder: dark images are class "dark", bright ones class "light"."""
    rng = np.random.default_rng(0)
    for name, level in (("dark", 40), ("light", 215)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(level + rng.normal(0, 12, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def flat(value, prefix: str = "") -> dict:
    """Every leaf of a nested state (tensors, numbers) by its dotted path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def assert_same_training_state(a: Path, b: Path, *, models: tuple[str, ...] = ("G",)) -> None:
    """Models, optimisers, batch order, noise and RNG of two checkpoints are exactly equal (and ``models`` are
    among them)."""
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"]
    fa, fb = flat({"task": sa["task"], "rng": sa["rng"]}), flat({"task": sb["task"], "rng": sb["rng"]})
    assert fa.keys() == fb.keys()
    for model in models:
        assert any(k.startswith(f"task.models.{model}.") for k in fa), model
    for key in fa:
        if isinstance(fa[key], torch.Tensor):
            assert torch.equal(fa[key], fb[key]), key
        else:
            assert fa[key] == fb[key], key


def one_line_error(code: int, stderr: str, *fragments: str) -> None:
    """A user error: exit code 2, one line starting "error: ", no traceback, naming every fragment."""
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, stderr)

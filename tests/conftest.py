"""Shared fixtures. Real data comes from the read-only mirror named by SPECGAN_DATA_MIRROR (default
``../shared/datasets`` from the project root); tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from specgan.data.idx import load_idx_set
from specgan.data.image_data import ImageData
from specgan.metrics.classifier import load_or_train_classifier

ROOT = Path(__file__).resolve().parents[1]


def data_mirror() -> Path:
    return Path(os.environ.get("SPECGAN_DATA_MIRROR", ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = data_mirror()
    if not path.is_dir():
        pytest.skip(f"real-data mirror {path} is absent (set SPECGAN_DATA_MIRROR)")
    return path


def _corpus(mirror: Path, name: str) -> Path:
    path = mirror / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def vcc(mirror) -> Path:
    return _corpus(mirror, "vcc2016")


@pytest.fixture(scope="session")
def fsdd(mirror) -> Path:
    return _corpus(mirror, "fsdd")


@pytest.fixture(scope="session")
def mnist(mirror) -> Path:
    return _corpus(mirror, "mnist")


@pytest.fixture(scope="session")
def mnist_sets(mnist) -> tuple[ImageData, ImageData]:
    return load_idx_set(mnist, name="mnist", split="train"), load_idx_set(mnist, name="mnist", split="test")


@pytest.fixture(scope="session")
def mnist_classifier(mnist, mnist_sets, tmp_path_factory):
    """Trained once per session with the defaults, into a temporary cache folder (the mirror is read-only)."""
    train, test = mnist_sets
    cache = tmp_path_factory.mktemp("classifier-cache")
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    try:
        model, info = load_or_train_classifier(mnist, kind="mnist", train=train, test=test, cache_dir=cache)
    finally:
        torch.set_num_threads(before)
    return model, info, cache


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests run on 2-core CI machines; keep intra-op threads bounded and restore afterwards.
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)

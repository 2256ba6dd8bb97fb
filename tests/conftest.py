"""Shared fixtures. Real data comes from the read-only mirror named by SPECGAN_DATA_MIRROR (default
``../shared/datasets`` from the project root); tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from specgan.audio.params import AudioParams
from specgan.data.idx import load_idx_set
from specgan.data.prep import prep
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


#: Audio parameters of the ``tones`` dataset.
TONES_AUDIO = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=32, trim_silence=False)


@pytest.fixture(scope="session")
def tones(tmp_path_factory) -> Path:
    """A tiny prepped two-domain spectrogram dataset: "low" tones (200-500 Hz) and "high" tones (1.8-3 kHz), six
    1.2 s files each, at TONES_AUDIO."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    t = np.arange(int(1.2 * TONES_AUDIO.sample_rate)) / TONES_AUDIO.sample_rate
    for name, (lo, hi) in {"low": (200, 500), "high": (1800, 3000)}.items():
        (root / "wavs" / name).mkdir(parents=True)
        for i in range(6):
            f = rng.uniform(lo, hi)
            wave = 0.5 * np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
            sf.write(root / "wavs" / name / f"{i}.wav", wave.astype(np.float32), TONES_AUDIO.sample_rate)
    prep(root / "wavs", root / "prepped", params=TONES_AUDIO, workers=1)
    return root / "prepped"

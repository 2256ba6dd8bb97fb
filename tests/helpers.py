"""Helpers shared by several test modules: a tiny image dataset, state comparison, one-line CLI errors, test
signals and prep's decoding of a file's bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from specgan.audio.params import AudioParams
from specgan.data.prep import decode_whole
from specgan.errors import AudioError
from specgan.models import build_model
from specgan.recipe import to_mapping
from specgan.train.checkpoint import load_checkpoint, rng_state, save_checkpoint

#: Audio parameters of the tiny translator checkpoints that :func:`write_run` makes.
TINY_AUDIO = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=32)


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


def write_run(run_dir: Path, *, domains=("A", "B"), task="translate", step=1, seed=0,
              params: AudioParams = TINY_AUDIO) -> Path:
    """A real ``translate`` checkpoint of a tiny untrained CycleGAN (2 channels, 1 block) in ``run_dir``, written
    without training (a ``generate`` one with no weights when ``task`` says so)."""
    torch.manual_seed(seed)
    image_shape = (1, params.n_mels, params.frames)
    model = {"name": "cyclegan", "channels": 2, "n_blocks": 1, "conditional": False, "z_dim": 100,
             "spectral_norm": False}
    models = {}
    if task == "translate":
        for g, d in (("G_AB", "D_B"), ("G_BA", "D_A")):
            generator, discriminator = build_model("cyclegan", image_shape=image_shape, channels=2, n_blocks=1)
            models[g], models[d] = generator.state_dict(), discriminator.state_dict()
    else:
        model["name"] = "dcgan"
    state = {"task": {"models": models}, "recipe": {"name": run_dir.name, "task": task, "model": model},
             "data": {"kind": "spectrogram", "class_names": list(domains), "image_shape": list(image_shape),
                      "audio": to_mapping(params)}, "rng": rng_state()}
    return save_checkpoint(run_dir, state, step=step, keep=1)


def noise(frames: int, channels: int, *, seed: int = 0) -> np.ndarray:
    """Gaussian noise ``(frames, channels)`` in [-1, 1] that starts at full scale both ways (the ends of the
    integer range of a PCM or FLAC file)."""
    signal = np.clip(np.random.default_rng(seed).normal(0, 0.3, (frames, channels)), -1, 1)
    signal[: min(frames, 7)] = 1.0
    signal[min(frames, 7): min(frames, 14)] = -1.0
    return signal


def decoded_whole_or_error(path: Path, data: bytes | None) -> tuple[bytes, int] | str | None:
    """What prep's :func:`~specgan.data.prep.decode_whole` makes of ``path`` (given its bytes ``data``, or None to
    open the file): ``(samples' bytes, source rate)``, None when it is to be streamed, or the error's message."""
    try:
        wave, rate = decode_whole(path, sample_rate=22050, data=data)
        return wave if wave is None else (wave.tobytes(), rate)
    except AudioError as e:
        return str(e)

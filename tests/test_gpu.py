"""The CUDA paths, end to end on tiny models: training both tasks with every speed switch, and converting.

Skipped without a CUDA device (CI has none); the same code paths run on CPU in test_acceleration.py,
test_translate.py and test_convert.py. Run on a GPU machine with ``pytest -m gpu``.
"""

from __future__ import annotations

import json

import pytest
import torch

from specgan.convert import convert_file, load_translator
from specgan.train.loop import train
from test_train import make_two_tone_folder, tiny_recipe
from test_translate import tiny_recipe as translate_recipe

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")
SWITCHES = [{}, {"channels_last": True}, {"precision": "fp32", "cudnn_benchmark": False},
            {"compile": True, "channels_last": True}]


@pytest.mark.parametrize("switches", SWITCHES, ids=["default", "channels_last", "fp32", "compile"])
def test_generate_trains_on_cuda(tmp_path, switches):
    run = train(tiny_recipe(make_two_tone_folder(tmp_path / "img", n=16), tmp_path / "run", steps=6, **switches),
                device=CUDA)
    assert run.step == 6 and all(v == v for v in run.last.values())  # every logged scalar finite
    assert next(run.task.G.parameters()).device.type == "cuda"
    assert (tmp_path / "run" / "samples" / "step_000006.png").exists()


@pytest.mark.parametrize("switches", SWITCHES, ids=["default", "channels_last", "fp32", "compile"])
def test_translate_trains_and_converts_on_cuda(tones, tmp_path, switches):
    run = train(translate_recipe(tones, tmp_path / "run", steps=4, **switches), device=CUDA)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert all(v == v for r in lines for v in r.values())
    # A run continues on the GPU (GPU kernels are not bitwise deterministic, so weights are not compared here;
    # exact resume is tested on CPU).
    train(translate_recipe(tones, tmp_path / "again", steps=2, **switches), device=CUDA)
    again = train(translate_recipe(tones, tmp_path / "again", steps=4, **switches), device=CUDA)
    assert again.resumed_from == 2 and all(v == v for v in again.last.values())
    translator = load_translator(run.checkpoint, device=CUDA)
    wav = next((tones.parent / "wavs" / "low").glob("*.wav"))
    convert_file(wav, tmp_path / "out.wav", translator=translator, to="high", n_iter=4)
    assert (tmp_path / "out.wav").stat().st_size > 1000

"""The CUDA paths, end to end on tiny models: training both tasks with every speed switch, converting, and the
CUDA graphs (recorded training steps and Griffin-Lim/NNLS iterations against their eager runs).

Skipped without a CUDA device (CI has none); the same code paths run on CPU in test_acceleration.py,
test_translate.py, test_convert.py and test_cuda_graph.py (the recording logic, with a stand-in recorder). Run on
a GPU machine with ``pytest -m gpu``.
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


def test_torch_compile_is_usable_on_this_gpu():
    """train.compile = "auto" finds the toolchain complete here (its test kernel compiles and runs)."""
    from specgan.train.acceleration import compile_unavailable

    assert compile_unavailable(CUDA) is None


# -- CUDA graphs -------------------------------------------------------------------------------------------------
GRAPH_CASES = [{}, {"loss": "wgan", "gp_weight": 10.0, "n_critic": 2}]


@pytest.fixture
def deterministic_cudnn():
    saved = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    yield
    torch.backends.cudnn.deterministic = saved


def _weights(task) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.float().cpu() for name, module in (("G", task.G), ("D", task.D), ("G_ema", task.sampler))
            for k, v in module.state_dict().items()}


def _assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())
    assert worst <= atol, worst


@pytest.mark.parametrize("overrides", GRAPH_CASES, ids=["bce", "wgan-gp"])
def test_graphed_generate_step_matches_the_eager_one(tmp_path, deterministic_cudnn, overrides):
    """The recorded step replays the kernels the eager step runs: 10 steps (3 eager, then recorded and replayed,
    with samples and checkpoints in between) end at the eager run's weights."""
    data = make_two_tone_folder(tmp_path / "img", n=16)
    common = dict(steps=10, precision="fp32", cudnn_benchmark=False, lr_decay_start=0.5, **overrides)
    graphed = train(tiny_recipe(data, tmp_path / "graphed", cuda_graphs=True, **common), device=CUDA)
    eager = train(tiny_recipe(data, tmp_path / "eager", cuda_graphs=False, **common), device=CUDA)
    assert graphed.task._graphed_update.recorded and not eager.task._graphed_update.recorded
    _assert_close(_weights(graphed.task), _weights(eager.task), atol=1e-5)
    metrics = [(tmp_path / r / "metrics.jsonl").read_text().splitlines() for r in ("graphed", "eager")]
    assert len(metrics[0]) == len(metrics[1]) == 10


def test_graphed_generate_run_continues(tmp_path, deterministic_cudnn):
    """A checkpoint written between replays continues (recording again after the resumed run's warm-up) to the
    weights of an uninterrupted graphed run, in bf16 (autocast inside a recorded step; the DCGAN default on CUDA is
    fp32, measured faster there)."""
    data = make_two_tone_folder(tmp_path / "img", n=16)
    straight = train(tiny_recipe(data, tmp_path / "straight", steps=12, precision="bf16"), device=CUDA)
    train(tiny_recipe(data, tmp_path / "resumed", steps=6, precision="bf16"), device=CUDA)
    resumed = train(tiny_recipe(data, tmp_path / "resumed", steps=12, precision="bf16"), device=CUDA, resume=True)
    assert resumed.resumed_from == 6 and resumed.task._graphed_update.recorded
    _assert_close(_weights(straight.task), _weights(resumed.task), atol=1e-4)


def test_graphed_griffinlim_and_nnls_match_eager():
    from specgan.audio.inverse import griffinlim, mel_to_linear
    from specgan.audio.features import mel_filterbank

    g = torch.Generator(device=CUDA).manual_seed(0)
    magnitude = torch.rand(2, 513, 300, device=CUDA, generator=g)
    runs = [griffinlim(magnitude, n_fft=1024, hop_length=256, n_iter=n, length=70000, graph=graph,
                       generator=torch.Generator(device=CUDA).manual_seed(1))
            for n in (31, 32) for graph in (True, False)]
    assert torch.allclose(runs[0], runs[1], atol=1e-5) and torch.allclose(runs[2], runs[3], atol=1e-5)
    fbank = mel_filterbank(sample_rate=22050, n_fft=1024, n_mels=80, f_min=0.0, f_max=11025.0).to(CUDA)
    mel = torch.rand(3, 80, 500, device=CUDA, generator=g)
    linear = [mel_to_linear(mel, fbank=fbank, n_iter=30, graph=graph) for graph in (True, False)]
    assert torch.allclose(linear[0], linear[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("phase_init", ["source", "random"])
def test_a_long_input_converts_in_blocks_on_cuda_as_on_the_cpu(monkeypatch, phase_init):
    """Griffin-Lim in blocks (PhaseNoise drawn on the GPU, blocks cross-faded there), and the blocked log-mel and
    spectral convergence: on CUDA, as on the CPU. Random phases come from each device's own generator, so from a
    random phase only the quality is compared."""
    from torch import nn

    from specgan.audio import inverse
    from specgan.convert import convert_waveform
    from test_convert import PARAMS, speech_like

    monkeypatch.setattr(inverse, "BLOCK_VALUES", 128 * PARAMS.n_fft)      # 8 s at 8 kHz: 8 blocks
    wave = speech_like(8.0)
    wave[8000:12000] = 0                                                  # silent bins: PhaseNoise on the GPU
    kwargs = dict(audio=PARAMS, n_iter=16, phase_init=phase_init)
    cpu = convert_waveform(wave, generator=nn.Identity(), **kwargs)
    gpu = convert_waveform(wave.to(CUDA), generator=nn.Identity(), **kwargs)  # no weights: the wave's device
    assert gpu.wave.device.type == "cuda" and gpu.wave.shape == wave.shape
    torch.testing.assert_close(gpu.logmel_in.cpu(), cpu.logmel_in, atol=1e-4, rtol=0)
    assert gpu.spectral_convergence == pytest.approx(cpu.spectral_convergence, rel=0.05)
    if phase_init == "source":   # the silent bins' random phases differ by device; everything else is the same
        difference = torch.linalg.norm(gpu.wave.cpu() - cpu.wave) / torch.linalg.norm(cpu.wave)
        assert difference < 1e-2


def _translate_weights(task) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.float().cpu() for name, module in task.models.items()
            for k, v in module.state_dict().items()}


def _worst(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())


def _assert_like_rerun(graphed, eager, rerun) -> None:
    """``graphed`` drew exactly the random numbers ``eager`` drew (crops, pool choices), and its weights are as
    close to ``eager``'s as a rerun of the eager run is (the ResNet generator's reflection padding adds gradients
    with atomics on CUDA, so two eager runs differ too, and Adam amplifies it)."""
    assert torch.equal(graphed.task.noise.get_state(), eager.task.noise.get_state())
    assert graphed.task.pool_a.count == eager.task.pool_a.count
    noise = _worst(_translate_weights(eager.task), _translate_weights(rerun.task))
    worst = _worst(_translate_weights(graphed.task), _translate_weights(eager.task))
    assert worst <= max(1e-5, 10 * noise), (worst, noise)


@pytest.mark.parametrize("model, switches", [("cyclegan", {"compile": False}), ("cyclegan-vc2", {}),
                                             ("cyclegan", {"compile": True})],
                         ids=["cyclegan", "cyclegan-vc2", "cyclegan-compiled"])
def test_graphed_translate_step_matches_the_eager_one(tones, tmp_path, deterministic_cudnn, model, switches):
    """Pools full after step 2, then 3 eager steps and a recording; the identity loss switches off after step 7,
    which records again. 14 steps end where the eager run ends (compiled: where the compiled eager run ends)."""
    common = dict(model=model, loss={"identity_until": 7}, steps=14, precision="fp32", cudnn_benchmark=False,
                  lr_decay_start=0.5, checkpoint_every=5, sample_every=5, **switches)
    graphed = train(translate_recipe(tones, tmp_path / "graphed", cuda_graphs=True, **common), device=CUDA)
    eager = train(translate_recipe(tones, tmp_path / "eager", cuda_graphs=False, **common), device=CUDA)
    rerun = train(translate_recipe(tones, tmp_path / "rerun", cuda_graphs=False, **common), device=CUDA)
    assert graphed.task._graphed_update.recorded and graphed.task._graphed_update.key is False
    assert not eager.task._graphed_update.recorded
    _assert_like_rerun(graphed, eager, rerun)


def test_graphed_translate_run_continues(tones, tmp_path, deterministic_cudnn):
    common = dict(loss={"identity_until": 20}, checkpoint_every=4, sample_every=100)
    straight = train(translate_recipe(tones, tmp_path / "straight", steps=12, **common), device=CUDA)
    again = train(translate_recipe(tones, tmp_path / "again", steps=12, **common), device=CUDA)
    train(translate_recipe(tones, tmp_path / "resumed", steps=8, **common), device=CUDA)
    resumed = train(translate_recipe(tones, tmp_path / "resumed", steps=12, **common), device=CUDA, resume=True)
    assert resumed.resumed_from == 8 and straight.task._graphed_update.recorded
    _assert_like_rerun(resumed, straight, again)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (the GPU machines lent so far had "
                                                          "one; the same training runs on two CPU processes in "
                                                          "test_distributed.py)")
@pytest.mark.parametrize("task", ["generate", "translate"])
def test_two_gpus_train_their_shards_over_nccl_and_a_checkpoint_continues_on_one(tones, tmp_path, task):
    """torchrun on two GPUs (NCCL; the DCGAN's batch norms synchronised): each rank trains on its half of every
    batch, both end with the same weights, only rank 0 writes the run folder, and its checkpoint continues in one
    process on one GPU."""
    from test_distributed import torchrun

    def recipe(steps):
        if task == "generate":
            return tiny_recipe(make_two_tone_folder(tmp_path / "img", n=16), tmp_path / "run", steps=steps,
                               checkpoint_every=4)
        return translate_recipe(tones, tmp_path / "run", steps=steps, batch_size=4, checkpoint_every=4)

    ranks = torchrun(recipe(4), tmp_path / "run", device="cuda")
    assert [r["shard"] * 2 for r in ranks] == [r["global_batch"] for r in ranks]
    for name, state in ranks[0]["models"].items():
        for key, value in state.items():
            assert torch.equal(value, ranks[1]["models"][name][key]), f"{name}.{key} differs between the ranks"
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == \
        [1, 2, 3, 4]
    continued = train(recipe(6), device=CUDA)
    assert continued.resumed_from == 4 and continued.step == 6 and all(v == v for v in continued.last.values())

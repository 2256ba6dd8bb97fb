"""The speed options (train.channels_last, train.compile, train.precision) change how a step runs, not what it
computes: a tiny seeded run gives the same weights with them as without (compared in fp32; bf16 only rounds)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import pytest
import torch

import specgan.train.acceleration as acceleration
from specgan.models import MODELS
from specgan.train.acceleration import Acceleration, native_bf16
from specgan.train.config import TrainConfig
from specgan.train.loop import train
from test_distributed import adam_drift_bound, assert_same, normalised_biases
from test_train import make_two_tone_folder, tiny_recipe
from test_translate import tiny_recipe as translate_recipe


def g_weights(result) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in result.task.G.state_dict().items()}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_two_tone_folder(tmp_path_factory.mktemp("images"), n=16)


def test_compiled_cyclegan_computes_channels_last_on_cuda(monkeypatch):
    """What was measured faster on an H200: the ResNet CycleGAN compiled with Inductor's layout optimisation forced
    on (837 against 715 images/s). Only under channels_last = auto, only compiled on CUDA, only for that family; the
    weights and images stay contiguous, and torch.compile gets the option."""
    import specgan.train.acceleration as acceleration
    from specgan.models import MODELS

    monkeypatch.setattr(acceleration, "compile_unavailable", lambda device: None)

    def accel(device="cuda", model="cyclegan", **train):
        family = MODELS[model]
        return Acceleration(TrainConfig(**train), device=torch.device(device), compile_on_cuda=family.compile_on_cuda,
                            channels_last_on_cpu=family.channels_last_on_cpu,
                            channels_last_compiled_on_cuda=family.channels_last_compiled_on_cuda)

    forced = {"force_layout_optimization": True}
    assert accel().compile_options == forced and accel().memory_format == torch.contiguous_format
    assert accel(compile=True).compile_options == forced
    assert accel(channels_last=False).compile_options == {}              # the recipe says: nowhere
    assert accel(channels_last=True).compile_options == {}               # the recipe's own layout, Inductor's choice
    assert accel(compile=False).compile_options == {}                    # eager
    assert accel("cpu", compile=True).compile_options == {}
    assert accel(model="cyclegan-vc2", compile=True).compile_options == {}
    assert accel(model="dcgan", compile=True).compile_options == {}
    assert [name for name, f in MODELS.items() if f.channels_last_compiled_on_cuda] == ["cyclegan"]

    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: calls.append(kwargs) or module)
    net = torch.nn.Linear(2, 2)
    assert accel().compiled(net) is net and accel(channels_last=False).compiled(net) is net
    assert accel(compile=False).compiled(net) is net
    assert calls == [{"dynamic": False, "options": forced}, {"dynamic": False, "options": None}]


@pytest.fixture(scope="module")
def plain(images, tmp_path_factory):
    torch.set_num_threads(1)
    return g_weights(train(tiny_recipe(images, tmp_path_factory.mktemp("plain"), steps=4, precision="fp32",
                                       channels_last=False), device=torch.device("cpu")))


@pytest.mark.parametrize("options", [{"channels_last": True}, {"compile": True, "channels_last": True}],
                         ids=["channels_last", "compile"])
def test_generate_options_give_the_same_weights(images, plain, tmp_path, options):
    torch.set_num_threads(1)
    fast = g_weights(train(tiny_recipe(images, tmp_path, steps=4, precision="fp32", **options),
                           device=torch.device("cpu")))
    assert fast.keys() == plain.keys()
    for key in plain:
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-4, atol=1e-6, msg=key)


def test_translate_channels_last_gives_the_same_weights(tones, tmp_path):
    torch.set_num_threads(1)
    recipes = [translate_recipe(tones, tmp_path / str(cl), steps=2, channels_last=cl, precision="fp32")
               for cl in (False, True)]
    runs = [train(recipe, device=torch.device("cpu")) for recipe in recipes]
    plain, fast = ({name: m.state_dict() for name, m in run.task.models.items()} for run in runs)
    assert_same(fast, plain, exact=False, loose=normalised_biases(runs[0].task.models),
                loose_atol=adam_drift_bound(recipes[0].train, steps=2))


def test_bf16_precision_is_autocast_and_changes_the_result_only_slightly(images, plain, tmp_path):
    accel = Acceleration(TrainConfig(precision="bf16"), device=torch.device("cpu"))
    with accel.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    # auto: bf16 where the CPU has bf16 instructions, else fp32; fp32 is always plain
    assert Acceleration(TrainConfig(), device=torch.device("cpu")).bf16 == native_bf16(torch.device("cpu"))
    assert not Acceleration(TrainConfig(precision="fp32"), device=torch.device("cpu")).bf16
    torch.set_num_threads(1)
    low = g_weights(train(tiny_recipe(images, tmp_path, steps=4, precision="bf16"), device=torch.device("cpu")))
    drift = max(float((low[k] - plain[k]).abs().max()) for k in plain)
    assert 0 < drift < 5e-3  # rounding differs, four Adam steps of 2e-4 cannot move a weight further than 1e-3


@pytest.mark.parametrize("vendor,avx512_bf16,expected", [("AuthenticAMD", True, True), ("AuthenticAMD", False, False),
                                                          ("GenuineIntel", True, False), (None, True, False)])
def test_bf16_is_auto_only_where_it_was_measured_faster(monkeypatch, vendor, avx512_bf16, expected):
    """AMD's AVX512-BF16 made both steps faster; an Intel Xeon with AVX512-BF16 and no AMX made them slower."""
    monkeypatch.setattr(acceleration, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert native_bf16(torch.device("cpu")) is expected
    assert Acceleration(TrainConfig(), device=torch.device("cpu")).bf16 is expected
    assert native_bf16(torch.device("cuda"))
    assert not native_bf16(torch.device("meta")) and not native_bf16(torch.device("mps"))  # neither measured


def test_bf16_on_cuda_follows_the_model_family():
    """On an H200 the launch-bound DCGAN step ran 11% slower in bf16 than in fp32 (with CUDA graphs); the CycleGAN
    step 1.6x faster. (Constructed, not run: no GPU is needed to decide.)"""
    from specgan.models import MODELS

    cuda = torch.device("cuda")
    dcgan = tiny_recipe(Path("data"), Path("run"))
    assert not Acceleration.for_recipe(dcgan, device=cuda).bf16
    # (the translators' recipes would ask torch.compile about the GPU: their family's flag alone)
    assert all(MODELS[name].bf16_on_cuda for name in ("cyclegan", "cyclegan-vc2"))
    assert Acceleration(TrainConfig(precision="bf16"), device=cuda, bf16_on_cuda=False).bf16  # asked for: bf16


def test_cpu_vendor_is_read_from_linux():
    vendor = acceleration.cpu_vendor()
    assert vendor is None or vendor in open("/proc/cpuinfo").read()


@pytest.mark.parametrize("avx512_bf16,amx", [(False, False), (True, False), (False, True)])
def test_bf16_asked_of_a_cpu_that_emulates_it_is_warned_about(monkeypatch, avx512_bf16, amx):
    """Without AVX512-BF16 or AMX, bf16 is emulated (the DCGAN step ran about 12x slower): the run warns."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    emulated = not (avx512_bf16 or amx)
    note = Acceleration(TrainConfig(precision="bf16"), device=torch.device("cpu")).precision_note
    assert (note is not None) == emulated
    if emulated:
        assert note.startswith("train.precision = bf16 on a CPU without bf16 instructions")
    assert Acceleration(TrainConfig(precision="fp32"), device=torch.device("cpu")).precision_note is None
    assert Acceleration(TrainConfig(precision="bf16"), device=torch.device("cuda")).precision_note is None


def test_channels_last_auto_is_on_for_cpus_and_off_for_cuda():
    """What was measured faster: channels-last on 2-core CPUs (DCGAN in both precisions, the ResNet CycleGAN in
    bf16 only), contiguous on an H200."""
    def layout(device, value="auto", model="dcgan", precision="fp32"):
        family = MODELS[model]
        return Acceleration(TrainConfig(channels_last=value, precision=precision), device=torch.device(device),
                            channels_last_on_cpu=family.channels_last_on_cpu).memory_format

    assert layout("cpu") == torch.channels_last and layout("cuda") == torch.contiguous_format
    assert layout("cpu", precision="bf16") == torch.channels_last
    assert layout("cpu", False) == torch.contiguous_format and layout("cuda", True) == torch.channels_last
    # The ResNet CycleGAN: channels-last in bf16; contiguous in fp32, where its instance norms run faster
    assert layout("cpu", model="cyclegan", precision="bf16") == torch.channels_last
    assert layout("cpu", model="cyclegan", precision="fp32") == torch.contiguous_format
    assert layout("cpu", True, model="cyclegan", precision="fp32") == torch.channels_last  # the recipe decides
    # CycleGAN-VC2 was slower channels-last on the CPU
    assert layout("cpu", model="cyclegan-vc2", precision="bf16") == torch.contiguous_format


def test_compile_auto_is_on_only_for_measured_families_in_one_cuda_process(monkeypatch):
    """What was measured faster: the ResNet CycleGAN compiled with its step recorded, on one GPU. Nothing else
    compiles unless the recipe says so, and auto never compiles where kernels cannot be built (and says why)."""
    import specgan.train.acceleration as acceleration

    def accel(device="cuda", value="auto", **family):
        return Acceleration(TrainConfig(compile=value), device=torch.device(device), **family)

    def compiles(*args, **kwargs):
        return accel(*args, **kwargs).compile

    monkeypatch.setattr(acceleration, "compile_unavailable", lambda device: None)
    assert compiles(compile_on_cuda=True)
    assert not compiles(compile_on_cuda=False)                          # dcgan, cyclegan-vc2
    assert not compiles("cpu", compile_on_cuda=True)
    assert not compiles(compile_on_cuda=True, one_process=False)        # torchrun
    assert not compiles(value=False, compile_on_cuda=True)
    assert compiles("cpu", value=True) and compiles(value=True, one_process=False)
    monkeypatch.setattr(acceleration, "compile_unavailable", lambda device: "Triton is not installed")
    skipped = accel(compile_on_cuda=True)
    assert not skipped.compile and skipped.compile_skipped == "Triton is not installed"
    assert accel(compile_on_cuda=False).compile_skipped is None         # nothing was skipped: it was not wanted
    from specgan.models import MODELS
    assert [name for name, family in MODELS.items() if family.compile_on_cuda] == ["cyclegan"]


def test_compile_unavailable_names_what_is_missing(monkeypatch):
    import specgan.train.acceleration as acceleration

    cuda = torch.device("cuda")
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(acceleration, "python_headers_installed", lambda: True)
    monkeypatch.setattr(acceleration.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(acceleration.shutil, "which", lambda name: "/usr/bin/gcc" if name == "gcc" else None)
    monkeypatch.setattr(acceleration.torch.cuda, "get_device_capability", lambda device: (9, 0))
    monkeypatch.setattr(acceleration, "_test_kernel", lambda device: None)
    assert acceleration.compile_unavailable(cuda) is None
    monkeypatch.setattr(acceleration.torch.cuda, "get_device_capability", lambda device: (6, 0))  # a P100
    assert acceleration.compile_unavailable(cuda) == ("the card's compute capability 6.0 is older than Triton "
                                                      "supports (7.0)")
    monkeypatch.setattr(acceleration.torch.cuda, "get_device_capability", lambda device: (7, 0))
    assert acceleration.compile_unavailable(cuda) is None
    monkeypatch.setattr(acceleration.shutil, "which", lambda name: None)
    assert "no C compiler" in acceleration.compile_unavailable(cuda)
    monkeypatch.setenv("CC", "/opt/cc")                     # Triton takes CC first
    assert acceleration.compile_unavailable(cuda) is None
    monkeypatch.setattr(acceleration, "python_headers_installed", lambda: False)  # no python3-dev
    assert "Python.h" in acceleration.compile_unavailable(cuda)
    monkeypatch.setattr(acceleration, "python_headers_installed", lambda: True)
    monkeypatch.setattr(acceleration, "_test_kernel", lambda device: "a test kernel did not compile (...)")
    assert acceleration.compile_unavailable(cuda) == "a test kernel did not compile (...)"  # the rest of the toolchain
    monkeypatch.setattr(acceleration.importlib.util, "find_spec", lambda name: None)
    assert acceleration.compile_unavailable(cuda) == "Triton is not installed"


def test_a_test_kernel_that_fails_to_compile_is_one_line(monkeypatch):
    import specgan.train.acceleration as acceleration

    def broken(fn, **kwargs):
        raise RuntimeError("ptxas fatal: Unsupported .version 8.7\nmore detail")

    run = acceleration._test_kernel.__wrapped__  # not the per-process cache
    monkeypatch.setattr(acceleration.torch, "compile", lambda fn, **kwargs: fn)
    assert run("cpu") is None
    monkeypatch.setattr(acceleration.torch, "compile", broken)
    assert run("cpu") == "a test kernel did not compile (RuntimeError: ptxas fatal: Unsupported .version 8.7)"


def test_python_headers_are_looked_for_where_triton_looks(monkeypatch, tmp_path):
    import specgan.train.acceleration as acceleration

    asked = []
    monkeypatch.setattr(acceleration.sysconfig, "get_default_scheme", lambda: "posix_local")
    monkeypatch.setattr(acceleration.sysconfig, "get_paths",
                        lambda scheme: asked.append(scheme) or {"include": str(tmp_path)})
    assert not acceleration.python_headers_installed()
    (tmp_path / "Python.h").write_text("")
    assert acceleration.python_headers_installed() and asked == ["posix_prefix", "posix_prefix"]


def test_optimizer_state_takes_the_layout_of_its_parameter():
    """A checkpoint of a contiguous run, continued channels-last (train.channels_last may change on resume). Fused
    Adam (CUDA's) pairs state and parameter elements by memory position, so the state must be re-laid out."""
    from specgan.train.optim import match_layouts

    def continued(*, fused: bool, fix: bool) -> torch.Tensor:
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(4, 3, 5, 5))
        opt = torch.optim.Adam([w], lr=0.1, fused=fused)
        w.grad = torch.randn(4, 3, 5, 5)
        opt.step()
        saved = copy.deepcopy(opt.state_dict())                    # contiguous state
        w_cl = torch.nn.Parameter(w.detach().contiguous(memory_format=torch.channels_last))
        again = torch.optim.Adam([w_cl], lr=0.1, fused=fused)
        again.load_state_dict(saved)
        if fix:
            match_layouts(again)
            assert again.state[w_cl]["exp_avg"].stride() == w_cl.stride()
        w_cl.grad = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
        again.step()
        return w_cl.detach()

    reference = continued(fused=False, fix=False)                  # the foreach update does not mind layouts
    assert not torch.allclose(continued(fused=True, fix=False), reference, atol=1e-3)  # the hazard is real
    torch.testing.assert_close(continued(fused=True, fix=True), reference)


def test_cudnn_benchmark_is_set_while_training_and_restored_after():
    """torch.backends.cudnn.benchmark is process-wide: a run sets it only while its loop runs (on CUDA)."""
    saved = torch.backends.cudnn.benchmark
    try:
        for wanted in (True, False):
            torch.backends.cudnn.benchmark = not wanted
            accel = Acceleration(TrainConfig(cudnn_benchmark=wanted), device=torch.device("cuda"))
            assert torch.backends.cudnn.benchmark is (not wanted)  # building the task changes nothing
            with accel.backend_settings():
                assert torch.backends.cudnn.benchmark is wanted
            assert torch.backends.cudnn.benchmark is (not wanted)
        for asked in (True, False):  # a CPU run leaves it alone, whichever way the recipe asks
            with Acceleration(TrainConfig(cudnn_benchmark=asked), device=torch.device("cpu")).backend_settings():
                assert torch.backends.cudnn.benchmark is (not wanted)
    finally:
        torch.backends.cudnn.benchmark = saved


def test_channels_last_places_weights_and_images_in_that_layout():
    """place() and images() put weights and batches in the run's memory format (the layout the option is for)."""
    for value, layout in ((True, torch.channels_last), (False, torch.contiguous_format)):
        accel = Acceleration(TrainConfig(channels_last=value), device=torch.device("cpu"))
        conv = accel.place(torch.nn.Conv2d(3, 4, 3))
        assert conv.weight.is_contiguous(memory_format=layout)
        assert accel.images(torch.randn(2, 3, 5, 6)).is_contiguous(memory_format=layout)
        assert accel.images(torch.randn(2, 3, 5, 6).contiguous(memory_format=torch.channels_last)).is_contiguous(
            memory_format=layout)


def test_autocast_is_bf16_with_its_weight_cache_off_under_cuda_graphs():
    """A cached bf16 copy of a weight would be frozen into a recorded CUDA graph and go stale after the optimizer
    step: recorded runs turn the cache off. (The context managers are built, not entered: no GPU needed.)"""
    def autocast(device, **train):
        return Acceleration(TrainConfig(precision="bf16", **train), device=torch.device(device)).autocast()

    graphed = autocast("cuda", cuda_graphs=True)
    assert graphed.fast_dtype == torch.bfloat16 and graphed.device == "cuda" and not graphed._cache_enabled
    assert autocast("cuda", cuda_graphs=False)._cache_enabled
    cpu = autocast("cpu", cuda_graphs=True)  # nothing is recorded on a CPU
    assert cpu.fast_dtype == torch.bfloat16 and cpu._cache_enabled
    assert isinstance(Acceleration(TrainConfig(precision="fp32"), device=torch.device("cpu")).autocast(),
                      contextlib.nullcontext)

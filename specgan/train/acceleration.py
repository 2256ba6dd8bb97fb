"""How a training step runs fast: the recipe's ``train.precision``, ``train.channels_last``, ``train.compile``,
``train.cudnn_benchmark`` and ``train.cuda_graphs`` (the recording itself is :mod:`specgan.cuda_graph`). None of
them changes what is computed, only how (bf16 changes the rounding).

Measured effects and the reasons for each default are in ``docs/architecture.md`` (Performance) and
``bench/results.md``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from specgan.models import MODELS
from specgan.train.config import Recipe, TrainConfig


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast was measured faster than fp32 on ``device``'s kind: CUDA, or an AMD CPU with
    AVX512-BF16 (``train.precision = auto`` follows it).

    Measured on 2-core VMs, bf16 autocast against fp32 (``bench/train_throughput.py``, images/s):
    - AMD EPYC with AVX512-BF16: DCGAN step 1.44x (1 thread) and 1.11x (2 threads), CycleGAN step 1.68x and 1.50x;
    - Intel Xeon with AVX512-BF16 (and AVX512-FP16) but no AMX: DCGAN step 0.81x, CycleGAN step 0.87x (2 threads,
      7 interleaved rounds): slower, so fp32 there.
    AMX (Intel's bf16 matrix tiles) has not been measured, so it does not make bf16 the default yet; CPUs without
    bf16 instructions emulate it and get slower.
    """
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return check is not None and check() and cpu_vendor() == "AuthenticAMD"


def cpu_has_bf16_instructions() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles); without either, bf16 is emulated."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def cpu_vendor() -> str | None:
    """The CPU's vendor string as Linux reports it (``GenuineIntel``, ``AuthenticAMD``, ...), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


#: The oldest CUDA compute capability Triton builds kernels for (Volta).
TRITON_MIN_CAPABILITY = (7, 0)


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot build kernels for the CUDA ``device`` here, or None when it can.

    Cheap checks first: Triton, a card it supports, and what its kernel launchers (C extension modules) are built
    with: the C compiler Triton looks for (``CC``, else gcc or clang) and Python's headers. Then one tiny kernel is
    compiled and run, which meets the rest of the toolchain (ptxas, the cache folders); its answer is kept for
    the process.
    """
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < TRITON_MIN_CAPABILITY:
        return f"the card's compute capability {major}.{minor} is older than Triton supports (7.0)"
    if not (os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")):
        return "no C compiler (gcc or clang, or CC) to build Triton's kernel launchers"
    if not python_headers_installed():
        return "Python's headers (Python.h, e.g. the python3-dev package) are not installed"
    return _test_kernel(str(device))


@functools.lru_cache(maxsize=None)
def _test_kernel(device: str) -> str | None:
    """Compile and run ``2 * x + 1`` on ``device``: None, or why it failed (one line)."""
    try:
        x = torch.arange(8.0, device=device)
        torch.compile(lambda t: 2 * t + 1, dynamic=False)(x).sum().item()
    except Exception as e:  # any failure of the toolchain means: do not compile automatically
        first = (str(e).strip().splitlines() or [""])[0][:200]
        return f"a test kernel did not compile ({type(e).__name__}{': ' + first if first else ''})"
    return None


def python_headers_installed() -> bool:
    """Whether ``Python.h`` is where Triton looks for it (distributions ship it apart, e.g. Debian's python3-dev)."""
    scheme = sysconfig.get_default_scheme()
    if scheme == "posix_local":  # Debian's; Triton reads the headers of posix_prefix instead
        scheme = "posix_prefix"
    return (Path(sysconfig.get_paths(scheme=scheme)["include"]) / "Python.h").exists()


class Acceleration:
    """The speed options of one run on one device."""

    def __init__(self, train: TrainConfig, *, device: torch.device,
                 channels_last_on_cpu: tuple[str, ...] = ("fp32", "bf16"), bf16_on_cuda: bool = True,
                 compile_on_cuda: bool = False, channels_last_compiled_on_cuda: bool = False,
                 one_process: bool = True):
        self.device = device
        # auto: bf16 where it was measured faster (native_bf16), on CUDA for the families measured faster so
        self.bf16 = train.precision == "bf16" or (train.precision == "auto" and native_bf16(device)
                                                   and (device.type != "cuda" or bf16_on_cuda))
        # A recipe may ask for bf16 on a CPU that can only emulate it: allowed, but said (specgan train prints it).
        self.precision_note = (
            "train.precision = bf16 on a CPU without bf16 instructions (AVX512-BF16 or AMX): it is emulated (on an "
            "AMD Zen 3 the DCGAN step ran about 12x slower than in fp32); train.precision = auto picks fp32 here"
            if self.bf16 and device.type == "cpu" and not cpu_has_bf16_instructions() else None)
        # auto: on a CPU as the model family says for the run's precision (specgan.models.MODELS: measured faster
        # for DCGAN, and for the ResNet CycleGAN in bf16 only; slower for CycleGAN-VC2); off on CUDA, where an H200
        # ran both benchmarked models slower.
        channels_last = train.channels_last is True or (
            train.channels_last == "auto" and device.type == "cpu"
            and ("bf16" if self.bf16 else "fp32") in channels_last_on_cpu)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # auto: on CUDA for the families measured faster compiled (specgan.models.MODELS), in one process (DDP's
        # compiled runs were not measured), and only where torch.compile can build kernels at all; if it cannot,
        # compile_skipped says why.
        wanted = train.compile == "auto" and device.type == "cuda" and compile_on_cuda and one_process
        self.compile_skipped = compile_unavailable(device) if wanted else None
        self.compile = train.compile is True or (wanted and self.compile_skipped is None)
        # auto, compiled on CUDA, for the families measured faster so: Inductor computes the convolutions
        # channels-last inside the compiled code (its layout optimisation, which its own heuristic leaves off for
        # networks whose last convolution has one output channel). The weights and images stay contiguous: the
        # conversions happen inside the compiled graphs, where cuDNN's own conversions around every convolution
        # (26% of the compiled CycleGAN step's kernel time on an H200) disappear.
        compiled_channels_last = (self.compile and device.type == "cuda" and train.channels_last == "auto"
                                   and channels_last_compiled_on_cuda)
        self.compile_options = {"force_layout_optimization": True} if compiled_channels_last else {}
        # Recorded steps need autocast's weight cache off (a cached cast would be frozen into the graph).
        self.cuda_graphs = train.cuda_graphs and device.type == "cuda"
        self.cudnn_benchmark = train.cudnn_benchmark if device.type == "cuda" else None

    @classmethod
    def for_recipe(cls, recipe: Recipe, *, device: torch.device, one_process: bool = True) -> Acceleration:
        """The options of ``recipe``'s run on ``device``, with the ``"auto"`` choices of its model family."""
        family = MODELS[recipe.model.name]
        return cls(recipe.train, device=device, channels_last_on_cpu=family.channels_last_on_cpu,
                   bf16_on_cuda=family.bf16_on_cuda, compile_on_cuda=family.compile_on_cuda,
                   channels_last_compiled_on_cuda=family.channels_last_compiled_on_cuda, one_process=one_process)

    @contextlib.contextmanager
    def backend_settings(self) -> Iterator[None]:
        """The process-wide switches the run asks for (cuDNN's algorithm search, on CUDA), set while training and
        restored afterwards, so that code running later in the process is unaffected."""
        if self.cudnn_benchmark is None:
            yield
            return
        saved = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = saved

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when asked for (matmuls and convolutions in bf16, reductions and losses in fp32)."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.cuda_graphs)
        return contextlib.nullcontext()

    def place(self, module: nn.Module) -> nn.Module:
        """Move ``module`` to the device in the run's memory format (in place; returns it)."""
        return module.to(self.device, memory_format=self.memory_format)

    def images(self, images: Tensor) -> Tensor:
        """``(N, C, H, W)`` images in the run's memory format."""
        return images.contiguous(memory_format=self.memory_format)

    def compiled(self, module: nn.Module) -> Callable[..., Tensor]:
        """What a training step calls for ``module``: ``torch.compile(module)`` when asked for, else the module.

        The compiled wrapper shares the module's parameters; checkpoints and samples use the module itself. Shapes
        are static (``dynamic=False``): a step calls a network at two or three batch sizes that never change, and
        kernels specialised to each size beat one symbolic-size kernel. Compiled calls record into the step's CUDA
        graph like eager ones (the warm-up steps compile them). ``compile_options`` go to TorchInductor.
        """
        if not self.compile:
            return module
        return torch.compile(module, dynamic=False, options=self.compile_options or None)

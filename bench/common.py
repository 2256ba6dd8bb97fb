"""Helpers shared by the benchmarks: where the real data is, what machine this is, and medians."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
#: Where GPU results fetched from another machine may be kept under version control (``NAME_cuda.json``);
#: run_all.py reads ``bench/out`` first, then this folder.
GPU_RESULTS = ROOT / "bench" / "gpu"
#: The CPU results that bench/results.md was last rendered from, kept under version control (bench/out is not), so
#: that a fresh checkout can render it again: run_all.py reads ``bench/out`` first, then this folder, then
#: ``GPU_RESULTS``.
CPU_RESULTS = ROOT / "bench" / "cpu"
#: Where read_json looks, in order.
RESULT_FOLDERS = (OUT, CPU_RESULTS, GPU_RESULTS)

# The benchmarks run from a checkout where specgan may not be installed (the GPU machine): import it from here.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def data_mirror() -> Path:
    path = Path(os.environ.get("SPECGAN_DATA_MIRROR", ROOT.parent / "shared" / "datasets"))
    if not path.is_dir():
        raise SystemExit(f"benchmarks need the real-data mirror; {path} is absent (set SPECGAN_DATA_MIRROR)")
    return path


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_features": cpu_features(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_count"] = torch.cuda.device_count()
    # A snapshot without .git (git archive, as copied to a GPU machine) says its commit in SPECGAN_COMMIT; git
    # must not be asked there, or it answers for whatever repository encloses the snapshot.
    if os.environ.get("SPECGAN_COMMIT"):
        info["commit"] = os.environ["SPECGAN_COMMIT"]
    elif (ROOT / ".git").exists():
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
    return info


def cpu_features() -> str:
    """The vector and matrix instructions PyTorch's CPU kernels can use here, e.g. ``"AVX2"`` or ``"AVX2, AVX-512,
    AVX512-BF16"``: two CPUs of one model name (``AMD EPYC``) can differ in them, and so can their speed."""
    checks = [("AVX2", "_is_avx2_supported"), ("AVX-512", "_is_avx512_supported"),
              ("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported")]
    found = [name for name, check in checks if getattr(torch.cpu, check, lambda: False)()]
    return ", ".join(found) or "none of AVX2, AVX-512, AMX"


def cpu_jiffies() -> tuple[int, int] | None:
    """``(stolen, total)`` CPU time of the whole machine since boot, in clock ticks (``/proc/stat``'s first line);
    None where there is no /proc/stat. Stolen time is what the hypervisor gave to other guests while this one
    wanted to run: on a shared VM it is why a two-worker run can be slow in one round and not in the next."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def stolen_fraction(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of CPU time stolen between two :func:`cpu_jiffies` readings (None when unknown)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def timed(fn: Callable[[], object], *, repeats: int) -> tuple[float, list[float], object]:
    """Median wall seconds of ``repeats`` calls (after one untimed warm-up call), all times, last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def result_name(name: str, device: torch.device | str) -> str:
    """The JSON name of a benchmark's result on ``device``: ``NAME`` on the CPU, ``NAME_cuda`` on a GPU (so one
    folder can hold both, and run_all.py renders them side by side)."""
    return f"{name}_cuda" if torch.device(device).type == "cuda" else name


def write_json(name: str, data: dict, out: Path | None = None) -> Path:
    out = Path(out) if out is not None else OUT
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def read_json(name: str) -> dict | None:
    """``NAME.json`` from the first of :data:`RESULT_FOLDERS` that holds it (``bench/out``, ``bench/cpu``,
    ``bench/gpu``), else None."""
    for folder in RESULT_FOLDERS:
        path = folder / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
    return None


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def set_threads(n: int | None) -> None:
    """Pin the CPU thread count (torch and OMP), so that runs on a shared machine are comparable."""
    if n:
        os.environ["OMP_NUM_THREADS"] = str(n)
        torch.set_num_threads(n)


def versions() -> dict:
    """Versions and numeric settings that a throughput figure depends on."""
    import numpy

    info = {"torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
            else None, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info

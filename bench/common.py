"""Helpers shared by the benchmarks: where the real data is, what machine this is, and medians."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


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
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def timed(fn: Callable[[], object], *, repeats: int) -> tuple[float, list[float], object]:
    """Median wall seconds of ``repeats`` calls (after one untimed warm-up call), all times, last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def write_json(name: str, data: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(data, indent=1))
    return path

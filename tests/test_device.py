"""Device choice and CPU thread fitting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from specgan import device
from specgan.device import fit_cpu_threads, resolve_device
from specgan.errors import ConfigError


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    torch.set_num_threads(4)


@pytest.mark.parametrize("load, world, expected", [(0.1, "1", 4), (1.2, "1", 3), (3.9, "1", 1), (7.0, "1", 1),
                                                   (0.0, "2", 2)])
def test_threads_fit_the_free_cores(four_cores, monkeypatch, load, world, expected):
    monkeypatch.setattr(device, "busy_cores", lambda: load)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", world)
    note = fit_cpu_threads()
    assert torch.get_num_threads() == expected
    assert (note is None) == (expected == 4)
    if note:
        assert f"using {expected} thread(s)" in note and "OMP_NUM_THREADS" in note
        assert note.startswith(f"{min(load, 4):g} of 4 cores are busy")  # never more busy cores than there are


def test_omp_num_threads_is_the_users_choice(four_cores, monkeypatch):
    monkeypatch.setattr(device, "busy_cores", lambda: 3.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert fit_cpu_threads() is None and torch.get_num_threads() == 4


@pytest.mark.parametrize("looks, busy", [(["2/83", "3/83", "2/90", "3/83", "2/83"], 1.0), (["1/80"] * 5, 0.0),
                                         (["4/80"] * 5, 3.0), (["3/80", "1/80", "3/80", "3/80", "3/80"], 0.0)])
def test_busy_cores_are_the_fewest_other_tasks_runnable_over_the_looks(tmp_path, monkeypatch, looks, busy):
    """The kernel's runnable count less this process, at its lowest over the looks: a task that wants a core all
    the time is runnable in every look, a short one is not. The 1-minute load average is not read: it remembers
    the command before this one."""
    files = iter(looks)
    loadavg = tmp_path / "loadavg"

    def sleep(_seconds):
        loadavg.write_text(f"0.60 0.50 0.40 {next(files)} 8005\n")

    sleep(0)
    monkeypatch.setattr(device, "LOADAVG", str(loadavg))
    monkeypatch.setattr(device.time, "sleep", sleep)
    monkeypatch.setattr(os, "getloadavg", lambda: pytest.fail("read the load average"))
    assert device.busy_cores() == busy


def test_busy_cores_see_a_program_that_keeps_a_core_busy():
    if not Path(device.LOADAVG).exists():
        pytest.skip("no /proc/loadavg")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)   # started and spinning
        assert device.busy_cores() >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device tpu"):
        resolve_device("tpu")


def test_auto_prefers_cuda_then_mps_then_the_cpu_and_a_missing_device_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1", "mps"):
        with pytest.raises(ConfigError, match=f"--device {name}: "):
            resolve_device(name)
    with pytest.raises(ConfigError, match="--device meta: expected auto"):
        resolve_device("meta")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps") and resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")

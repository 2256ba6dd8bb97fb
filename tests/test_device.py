"""Device choice and CPU thread fitting."""

from __future__ import annotations

import os

import pytest
import torch

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
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", world)
    note = fit_cpu_threads()
    assert torch.get_num_threads() == expected
    assert (note is None) == (expected == 4)
    if note:
        assert f"using {expected} thread(s)" in note and "OMP_NUM_THREADS" in note


def test_omp_num_threads_is_the_users_choice(four_cores, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert fit_cpu_threads() is None and torch.get_num_threads() == 4


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device tpu"):
        resolve_device("tpu")

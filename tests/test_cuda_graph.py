"""specgan.cuda_graph's bookkeeping and the optimizer helpers that recorded steps need, on the CPU.

Recording itself needs a CUDA device: tests/test_gpu.py checks there that recorded training steps and Griffin-Lim
give what the eager code gives. Here the recording functions are replaced by stand-ins that run the function at
replay, so the logic around them (warm-up count, fixed inputs, copied outputs) is checked without a GPU.
"""

from __future__ import annotations

import pytest
import torch

from specgan import cuda_graph
from specgan.cuda_graph import GraphedCall
from specgan.train.optim import make_capturable, portable_state, set_lr

CPU = torch.device("cpu")


@pytest.mark.parametrize("times", [0, 1, 2, 5])
def test_repeat_calls_the_body_the_given_number_of_times(times):
    calls = []
    cuda_graph.repeat(lambda: calls.append(1), times, device=CPU)
    assert len(calls) == times


@pytest.mark.parametrize("times", [0, 1, 2, 3, 6])
def test_repeat_as_on_cuda_warms_up_once_then_replays_the_rest(monkeypatch, times):
    """With graphs usable, the eager warm-up is the first call and the replays the others: ``times`` in all."""
    class Replayed:
        def __init__(self, fn):
            self.fn = fn

        def replay(self):
            self.fn()

    monkeypatch.setattr(cuda_graph, "usable", lambda device: True)
    monkeypatch.setattr(cuda_graph, "_warm_up", lambda fn: fn())
    monkeypatch.setattr(cuda_graph, "_capture", lambda fn, generators: (Replayed(fn), None))  # a capture runs none
    calls = []
    cuda_graph.repeat(lambda: calls.append(1), times, device=CPU)
    assert len(calls) == times


@pytest.mark.parametrize("times", [0, 1, 2, 3, 6])
def test_repeat_swapping_alternates_the_buffers(times):
    a, b = torch.zeros(1), torch.ones(1)
    calls = []
    order = cuda_graph.repeat_swapping(lambda first, second: calls.append((first, second)), times, (a, b),
                                       device=CPU)
    assert [(first is a, second is b) for first, second in calls] == [(k % 2 == 0, k % 2 == 0) for k in range(times)]
    assert all({id(first), id(second)} == {id(a), id(b)} for first, second in calls)
    assert order[0] is (b if times % 2 else a) and order[1] is (a if times % 2 else b)  # what the next call gets


def test_graphed_call_is_plain_off_cuda():
    f = GraphedCall(lambda x: x * 2, device=CPU)
    for k in range(6):
        assert torch.equal(f(torch.tensor([float(k)])), torch.tensor([2.0 * k]))
    assert not f.recorded and not f.enabled


class _ReplayedLater:
    """Stands in for a CUDA graph: records nothing, and runs the function at each replay into its output."""

    def __init__(self, fn, output):
        self.fn, self.output = fn, output

    def replay(self):
        self.output.copy_(self.fn())


def test_graphed_call_warms_up_then_replays_on_fixed_tensors(monkeypatch):
    captured = {}

    def fake_capture(fn, generators):
        captured["generators"] = generators
        output = torch.full((2,), float("nan"))  # a capture computes nothing: only the replay fills it
        return _ReplayedLater(fn, output), output

    monkeypatch.setattr(cuda_graph, "_warm_up", lambda fn: fn())
    monkeypatch.setattr(cuda_graph, "_capture", fake_capture)
    seen, prepared = [], []

    def fn(x):
        seen.append(x)
        return torch.stack([x.sum(), x.max()])

    generator = torch.Generator()
    f = GraphedCall(fn, device=CPU, warmup=2, generators=(generator,), before_capture=lambda: prepared.append(1))
    f.enabled = True  # as on a CUDA device
    results = [f(torch.tensor([1.0, float(k)])) for k in range(5)]
    for k, r in enumerate(results):  # each result is its own copy, not overwritten by later calls
        assert torch.equal(r, torch.tensor([1.0 + k, max(1.0, k)]))
    assert f.recorded and prepared == [1] and captured["generators"] == (generator,)
    # After the warm-up, the function only ever sees the one fixed input tensor, refilled before each replay.
    assert len({id(x) for x in seen[2:]}) == 1 and all(x is not seen[2] for x in seen[:2])


def test_capturable_optimizer_state_is_saved_portably():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=0.1)
    make_capturable(opt)
    group = opt.param_groups[0]
    assert group["capturable"] and isinstance(group["lr"], torch.Tensor)
    lr = group["lr"]
    set_lr(opt, 0.05)
    assert group["lr"] is lr and lr.item() == pytest.approx(0.05)  # filled in place: what a graph reads
    state = portable_state(opt)
    assert state["param_groups"][0]["lr"] == pytest.approx(0.05) and not state["param_groups"][0]["capturable"]
    fresh = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=1.0)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["lr"] == pytest.approx(0.05)
    set_lr(fresh, 0.2)  # a plain number again
    assert fresh.param_groups[0]["lr"] == 0.2


def test_graphed_call_records_again_for_a_new_key(monkeypatch):
    monkeypatch.setattr(cuda_graph, "_warm_up", lambda fn: fn())

    def fake_capture(fn, generators):
        output = torch.zeros(1)
        return _ReplayedLater(fn, output), output

    monkeypatch.setattr(cuda_graph, "_capture", fake_capture)
    recordings = []
    f = GraphedCall(lambda x: x + 1, device=CPU, warmup=1, before_capture=lambda: recordings.append((f.key, f.calls)))
    f.enabled = True
    outputs = [f(torch.tensor([float(k)]), key=k >= 3).item() for k in range(6)]
    assert outputs == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # key False: step 0 warms up, step 1 records; key True from step 3: step 3 warms up again, step 4 records
    assert recordings == [(False, 2), (True, 2)] and f.recorded and f.key is True

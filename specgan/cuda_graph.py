"""CUDA graphs: record a sequence of kernels once and replay it with one launch.

Small GAN steps and Griffin-Lim iterations are bound by kernel launches on a GPU, not by arithmetic: a DCGAN step
on 28x28 images launches hundreds of kernels of a few microseconds each, and the CPU cannot issue them as fast as
the GPU runs them. A CUDA graph replays the recorded kernels from the GPU side, so the per-kernel CPU cost goes.

Rules for what may be recorded (PyTorch's "CUDA Graphs" notes): the same kernels on the same memory every time,
so inputs are copied into fixed tensors before a replay and outputs are read from fixed tensors after it; no host
synchronisation; no Python-side state that changes from one call to the next (it would be frozen at its recorded
value). Random numbers from the default CUDA generator, and from generators passed in ``generators``, advance
at every replay as they would eagerly.

On other devices everything here runs the function eagerly, so CPU tests exercise the same code.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor


#: Iterative DSP (Griffin-Lim, NNLS) is recorded only for arrays up to this many elements. Small ones are bound by
#: launches: on an H200, clips of 4-8 s (at most 360k STFT bins) went from 486x to 845x real time. Large ones are
#: bound by arithmetic, and a recording's private memory pool allocates its buffers afresh: a 60 s conversion
#: (7.7M bins, 4 NNLS blocks of 2.1M) took 84 ms recorded against 62 ms eager. The crossover between the two was
#: not measured; this limit sits between them (about 23 s at hop 256 and 22.05 kHz).
SMALL_ENOUGH = 1 << 20


def usable(device: torch.device) -> bool:
    """Whether graphs can be recorded on ``device`` now (CUDA, and not already inside a capture)."""
    return device.type == "cuda" and not torch.cuda.is_current_stream_capturing()


def _warm_up(fn: Callable[[], object]) -> object:
    """Run ``fn`` eagerly on a side stream, as the PyTorch notes ask before a capture (lazy initialisation such
    as cuFFT plans, cuDNN algorithm choice and autograd's streams must not happen inside it)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        result = fn()
    torch.cuda.current_stream().wait_stream(side)
    if isinstance(result, Tensor):
        result.record_stream(torch.cuda.current_stream())  # the caller uses it on its own stream
    return result


def _capture(fn: Callable[[], object], generators: Sequence[torch.Generator]) -> tuple[torch.cuda.CUDAGraph, object]:
    """Record ``fn`` on a side stream. ``torch.cuda.graph`` would also empty the allocator's cache first, which
    costs a synchronisation and fresh allocations afterwards: a 60 s conversion, which recorded a graph per NNLS
    block and one for Griffin-Lim, took 98 ms with it and 84 ms without (H200)."""
    graph = torch.cuda.CUDAGraph()
    for generator in generators:
        graph.register_generator_state(generator)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        graph.capture_begin()
        try:
            result = fn()
        finally:
            graph.capture_end()
    torch.cuda.current_stream().wait_stream(side)
    return graph, result


def repeat(body: Callable[[], None], times: int, *, device: torch.device, graph: bool = True) -> None:
    """Call ``body()`` ``times`` times; on CUDA (with ``graph``) the first call runs eagerly, the second is
    recorded and replayed for the rest.

    ``body`` must work in place on tensors that exist before the first call (its results must land in them), and
    must do the same thing every call. The arithmetic is the same as calling it ``times`` times.
    """
    if times <= 0:
        return
    if not (graph and usable(device)) or times < 3:
        for _ in range(times):
            body()
        return
    _warm_up(body)
    recorded, _ = _capture(body, ())
    for _ in range(times - 1):
        recorded.replay()


def repeat_swapping(iteration: Callable[[Tensor, Tensor], None], times: int, buffers: tuple[Tensor, Tensor], *,
                    device: torch.device, graph: bool = True) -> tuple[Tensor, Tensor]:
    """Call ``iteration(first, second)`` ``times`` times, the two buffers trading places after each call: for loops
    whose buffers swap roles every iteration (the one written becomes the one read). A pair of calls leaves them
    where it found them, so pairs are what :func:`repeat` runs and replays. Returns the buffers in the order the
    next call would get them."""
    first, second = buffers

    def pair() -> None:
        iteration(first, second)
        iteration(second, first)

    repeat(pair, times // 2, device=device, graph=graph)
    if times % 2:
        iteration(first, second)
        return second, first
    return first, second


class GraphedCall:
    """``fn(*inputs) -> Tensor``, replayed as a CUDA graph after ``warmup`` eager calls.

    Each call copies ``inputs`` into the recorded input tensors, replays, and returns a copy of the recorded output,
    so the caller may keep results of several calls. ``key`` names the variant of ``fn`` that runs (for Python
    branches that change rarely, such as a loss switched off after some step): a new key drops the recording and
    starts again with the warm-up. ``before_capture`` runs once just before recording (e.g. to
    make optimizers capturable). Off CUDA, or with ``enabled`` false, every call is ``fn(*inputs)``.

    ``fn`` must meet the module's rules: in particular its Python control flow must not depend on the call.
    """

    def __init__(self, fn: Callable[..., Tensor], *, device: torch.device, enabled: bool = True, warmup: int = 3,
                 generators: Sequence[torch.Generator] = (), before_capture: Callable[[], None] | None = None):
        self.fn, self.device, self.warmup = fn, device, warmup
        self.enabled = enabled and device.type == "cuda"
        self.generators, self.before_capture = tuple(generators), before_capture
        self.calls = 0
        self.key: object = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple[Tensor, ...] = ()
        self.static_output: Tensor | None = None

    @property
    def recorded(self) -> bool:
        return self.graph is not None

    def __call__(self, *inputs: Tensor, key: object = None) -> Tensor:
        if not self.enabled:
            return self.fn(*inputs)
        if key != self.key:
            self.key, self.calls = key, 0
            self.graph, self.static_inputs, self.static_output = None, (), None
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            return _warm_up(lambda: self.fn(*inputs))
        if self.graph is None:
            if self.before_capture is not None:
                self.before_capture()
            self.static_inputs = tuple(x.clone() for x in inputs)
            self.graph, self.static_output = _capture(lambda: self.fn(*self.static_inputs), self.generators)
        else:
            for static, x in zip(self.static_inputs, inputs, strict=True):
                static.copy_(x)
        self.graph.replay()
        return self.static_output.clone()

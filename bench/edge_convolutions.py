"""The generators' one-channel edge layers on the CPU: ``OneChannelConv2d`` against ``nn.Conv2d`` (oneDNN) with the
same weights, on the same inputs, in the same run.

Each layer is timed over a forward and backward pass as a training step runs it (float32, contiguous, 80×64 output
maps): the weight and bias gradients always, the input's gradient when the input is a generated image (the
cycle pass) and not when it is a real one. A fresh input and output gradient are drawn before every call, since
oneDNN runs much faster on operands it has just seen. Sides alternate, call by call; each figure is a median.

    python bench/edge_convolutions.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from common import machine, set_threads, write_json
from specgan.models.one_channel_conv import OneChannelConv2d

#: (name, in_channels, out_channels, kernel, padding): the ResNet generator's first and last layers and
#: CycleGAN-VC2's, at the CPU benchmark's width (16 channels; VC2's first layer makes 4c).
LAYERS = [("ResNet first", 1, 16, (7, 7), (0, 0)), ("ResNet last", 16, 1, (7, 7), (0, 0)),
          ("CycleGAN-VC2 first", 1, 64, (5, 15), (2, 7)), ("CycleGAN-VC2 last", 16, 1, (5, 15), (2, 7))]
OUTPUT = (80, 64)


def step_call(conv: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    conv.zero_grad(set_to_none=True)
    conv(x).backward(grad)


def measure_layer(in_channels: int, out_channels: int, kernel: tuple[int, int], padding: tuple[int, int], *,
                  batch: int, input_gradient: bool, repeats: int) -> dict:
    torch.manual_seed(0)
    library = nn.Conv2d(in_channels, out_channels, kernel, padding=padding)
    ours = OneChannelConv2d(in_channels, out_channels, kernel, padding=padding)
    ours.load_state_dict(library.state_dict())
    shape = (batch, in_channels, OUTPUT[0] + kernel[0] - 1 - 2 * padding[0], OUTPUT[1] + kernel[1] - 1 - 2 * padding[1])
    times: dict[str, list[float]] = {"library": [], "specgan": []}
    for i in range(repeats + 1):
        for name, conv in (("library", library), ("specgan", ours)) if i % 2 else (("specgan", ours),
                                                                                    ("library", library)):
            x = torch.randn(shape).requires_grad_(input_gradient)
            grad = torch.randn(batch, out_channels, *OUTPUT)
            started = time.perf_counter()
            step_call(conv, x, grad)
            if i:  # the first round warms up
                times[name].append(time.perf_counter() - started)
    lib, own = (statistics.median(times[k]) * 1e3 for k in ("library", "specgan"))
    return {"batch": batch, "input_gradient": input_gradient, "library_ms": lib, "specgan_ms": own,
            "speedup": lib / own}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    rows = []
    for name, cin, cout, kernel, padding in LAYERS:
        for batch in (8, 16):
            for input_gradient in (False, True):
                row = measure_layer(cin, cout, kernel, padding, batch=batch, input_gradient=input_gradient,
                                    repeats=args.repeats)
                rows.append({"layer": name, "in_channels": cin, "out_channels": cout, "kernel": list(kernel), **row})
                print(f"{name:20s} {cin:3d} → {cout:3d} {kernel[0]}×{kernel[1]} batch {batch:2d} "
                      f"{'with' if input_gradient else 'without':7s} input gradient: nn.Conv2d "
                      f"{row['library_ms']:7.2f} ms, OneChannelConv2d {row['specgan_ms']:6.2f} ms, "
                      f"{row['speedup']:.2f}x")
    result = {"machine": machine(), "repeats": args.repeats, "output": list(OUTPUT), "rows": rows}
    write_json("edge_convolutions", result)
    return result


if __name__ == "__main__":
    main()

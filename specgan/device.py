"""Choosing the compute device: CUDA when present, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

from specgan.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` → cuda, mps or cpu (first available); otherwise the named device, checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available (use --device cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {name}: expected auto, cpu, cuda, cuda:N or mps")
    return device

"""Where the vision stages compute: ``--device cpu|cuda``, and how host memory meets the device.

On CUDA the host side of every copy is pinned (page-locked) memory, so the copy is a DMA the events of
timing.py can time, and copies are issued ``non_blocking``. On the CPU the same code runs and the copy
steps take no time (h2d/d2h columns stay near 0).
"""
from __future__ import annotations

import torch

from testbed.errors import ConfigError


def resolve(name: str) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda is not allowed here: no CUDA GPU is visible to torch; use --device cpu")
        return torch.device("cuda", 0)
    return torch.device("cpu")


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor -> device (pinned first on CUDA); no-op on the CPU."""
    if device.type == "cpu" or t.device == device:
        return t
    if not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def to_host(t: torch.Tensor) -> torch.Tensor:
    """Device tensor -> host (into pinned memory on CUDA); no-op for a host tensor."""
    if t.device.type == "cpu":
        return t
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t, non_blocking=True)
    return out

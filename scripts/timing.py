"""Timing for the benchmark scripts: wall-clock seconds of a call, with the GPU's queue drained on CUDA
(its kernels run asynchronously, so without a sync the clock would stop before they finish)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[float, Any]:
    """(seconds, result) of one call of `fn`."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out

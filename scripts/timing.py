"""Timing for the benchmark scripts: wall-clock seconds of a call, with the GPU's queue drained on CUDA
(its kernels run asynchronously, so without a sync the clock would stop before they finish)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


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


def alternating_rounds(calls: dict[str, Callable[[], Any]], rounds: int, device: str = "cpu") -> dict[str, list[float]]:
    """Seconds of every call in each round, the calls taking turns within a round (``in_turn``), so that machine
    noise (another process, a clock change) meets them all alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for turn in range(rounds):
        for name, fn in in_turn(calls.items(), turn):
            times[name].append(timed(fn, device)[0])
    return times


def in_turn(items: Iterable[T], turn: int) -> list[T]:
    """The order of round ``turn``: as given, and every other round reversed, since a call can run faster or
    slower for the one before it (docs/speed.md)."""
    items = list(items)
    return items if turn % 2 == 0 else items[::-1]


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """Best FLOP/s of a large square matmul here: the denominator of model FLOP utilisation (MFU)."""
    a = torch.randn(8192, 8192, device=device, dtype=dtype)
    for _ in range(3):
        a @ a
    best = min(timed(lambda: [a @ a for _ in range(10)], device)[0] for _ in range(3))
    return 10 * 2 * 8192 ** 3 / best

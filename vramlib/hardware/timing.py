"""The one timing helper: seconds per call of a function on a device, measured honestly
(warm-up, device synchronisation, CUDA events on CUDA, median of repeats).

Part III's microbenchmarks (:mod:`vramlib.hardware.bench`), Part II's pruning timings and the
GPU benchmark scripts all time through :func:`time_fn` (one function) or
:func:`time_interleaved` (candidates compared in turn, so a busy machine slows all alike).

Defined in Part III, "Measure your own device" (section "Timing a kernel honestly").
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..core.device import pick_device

__all__ = ["Timing", "sync", "time_fn", "time_interleaved"]


@dataclass
class Timing:
    """Seconds per call: ``median`` over ``repeats``, each the mean of ``inner`` calls."""

    median: float
    times: list[float]
    inner: int
    device: str

    @property
    def spread(self) -> float:
        """(max − min) / median of the repeats: how noisy the measurement was."""
        return (max(self.times) - min(self.times)) / self.median if self.median > 0 else 0.0


def sync(dev: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS); nothing on the CPU.
    Defined in Part III, "Measure your own device"."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def time_fn(fn: Callable[[], Any], device: str | torch.device | None = None, *, warmup: int = 2,
            repeats: int = 5, min_seconds: float = 0.02, max_inner: int = 1000) -> Timing:
    """Time ``fn()`` (no arguments) on ``device``: ``warmup`` calls, then ``repeats`` timed
    repeats of ``inner`` back-to-back calls, ``inner`` chosen so that a repeat lasts at least
    ``min_seconds``.  CUDA: CUDA events around each repeat; else ``time.perf_counter`` after a
    synchronise.  Returns the median seconds per call.

    Defined in Part III, "Measure your own device" (section "Timing a kernel honestly").
    """
    if not callable(fn):
        raise TypeError(f"time_fn needs a callable, got {type(fn).__name__}")
    for name, v in (("warmup", warmup), ("repeats", repeats), ("max_inner", max_inner)):
        _check_count(name, v, 0 if name == "warmup" else 1)
    if not (isinstance(min_seconds, (int, float)) and min_seconds >= 0):
        raise ValueError(f"min_seconds must be a non-negative number, got {min_seconds!r}")
    dev = pick_device(device)
    for _ in range(warmup):
        fn()
    sync(dev)
    t0 = time.perf_counter()
    fn()
    sync(dev)
    one = max(time.perf_counter() - t0, 1e-9)
    inner = int(min(max_inner, max(1, math.ceil(min_seconds / one))))
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            sync(dev)
            times.append((time.perf_counter() - t0) / inner)
    return Timing(statistics.median(times), times, inner, str(dev))


def _check_count(name: str, v: Any, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        kind = "non-negative" if minimum == 0 else "positive"
        raise ValueError(f"{name} must be a {kind} integer, got {v!r}")


def time_interleaved(fns: dict[str, Callable[[], Any]], device: str | torch.device | None = None,
                     *, warmup: int = 3, repeats: int = 20) -> dict[str, float]:
    """Median seconds of each ``fns[name]()``, timed **interleaved** (one call of each in
    turn, ``repeats`` rounds, synchronising the device around every call), so that a busy
    machine slows all candidates alike.

    Defined in Part II, "Pruning", section "Masks neither shrink nor speed up"."""
    if not fns:
        raise ValueError("fns is empty; pass {name: callable}")
    _check_count("warmup", warmup, 0)
    _check_count("repeats", repeats, 1)
    dev = pick_device(device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(dev)
            t0 = time.perf_counter()
            fn()
            sync(dev)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}

"""Out-of-memory, caught and explained: run a step under a memory budget, find the largest batch.

On a CUDA GPU the budget is the device itself: :func:`try_step` catches
``torch.cuda.OutOfMemoryError``, frees what the failed attempt left and reports it.  On the CPU
(or to rehearse a smaller GPU) :class:`BudgetTracker` emulates a device of ``budget`` bytes
with exact storage accounting: the moment live tensor bytes exceed the budget it raises
:class:`BudgetExceeded`, as the allocator would.

Defined in Part I, "Pretraining" (finding the largest batch that fits).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Callable

import torch

from ..estimate.solve import largest_fitting
from .tracker import StorageTracker
from ..core.units import fmt_bytes

__all__ = ["BudgetExceeded", "BudgetTracker", "StepOutcome", "try_step", "largest_batch"]


class BudgetExceeded(RuntimeError):
    """Raised by :class:`BudgetTracker` when live tensor bytes exceed the budget."""


class BudgetTracker(StorageTracker):
    """Exact storage accounting that fails like an allocator when ``budget`` bytes (counted
    from ``base`` bytes already in use) would be exceeded.  Defined in Part I, "Pretraining"."""

    def __init__(self, budget: int, base: int = 0, device_type: str | None = None) -> None:
        super().__init__(device_type)
        if budget <= 0:
            raise ValueError(f"budget must be a positive number of bytes, got {budget!r}")
        self.budget, self.base = int(budget), int(base)

    def on_alloc(self, key: int, nbytes: int, op: str, tensor: torch.Tensor) -> None:
        if self.base + self.current > self.budget:
            raise BudgetExceeded(
                f"out of memory (emulated): {op} asked for {fmt_bytes(nbytes)} with "
                f"{fmt_bytes(self.base + self.current - nbytes)} of {fmt_bytes(self.budget)} in use")


@dataclass
class StepOutcome:
    """What :func:`try_step` saw: whether the step fitted, its peak (if it did) and the error."""

    ok: bool
    peak: int | None
    error: str | None = None


def try_step(step: Callable[[], None], budget: int | None = None, base: int = 0,
             device: torch.device | str = "cpu") -> StepOutcome:
    """Run ``step()``; report ``ok=False`` with the message instead of crashing on
    out-of-memory.  On CUDA (``budget=None``) the real device is the budget; elsewhere
    ``budget`` bytes (with ``base`` already used) are emulated by :class:`BudgetTracker`.
    ``peak`` counts ``base`` in.  Defined in Part I, "Pretraining"."""
    dev = torch.device(device)
    if dev.type == "cuda" and budget is None:
        torch.cuda.reset_peak_memory_stats(dev)
        try:
            step()
            torch.cuda.synchronize(dev)
            return StepOutcome(True, torch.cuda.max_memory_allocated(dev))
        except torch.cuda.OutOfMemoryError as e:
            msg = str(e).splitlines()[0]
            gc.collect()
            torch.cuda.empty_cache()
            return StepOutcome(False, None, msg)
    if budget is None:
        raise ValueError("on a non-CUDA device give a budget in bytes to emulate")
    tracker = BudgetTracker(budget, base, dev.type)
    try:
        with tracker:
            step()
        return StepOutcome(True, base + tracker.peak)
    except BudgetExceeded as e:
        gc.collect()
        return StepOutcome(False, None, str(e))


def largest_batch(make_step: Callable[[int], Callable[[], None]], budget: int | None, base: int = 0,
                  device: torch.device | str = "cpu", start: int = 1, limit: int = 4096) -> tuple[int, list]:
    """The largest batch ``b`` (doubling, then bisection: :func:`vramlib.estimate.solve.largest_fitting`,
    the calculator's search) for which ``make_step(b)()`` fits,
    and the log of ``(batch, StepOutcome)`` tried.  Returns 0 if even ``start`` fails.
    Defined in Part I, "Pretraining"."""
    log: list = []

    def ok(b: int) -> bool:
        out = try_step(make_step(b), budget, base, device)
        log.append((b, out))
        return out.ok

    return largest_fitting(ok, limit, start), log

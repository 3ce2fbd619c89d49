"""Measuring how much memory a piece of torch code takes, on any device.

Two methods, one interface (:func:`track_memory` and :func:`measure`):

* **CUDA — the caching allocator's own statistics.**  ``torch.cuda.max_memory_allocated``
  counts every tensor block the allocator hands out, rounded up to its 512-byte blocks.
  This is the number a CUDA out-of-memory error is about (plus the reserved-but-free cache
  and the CUDA context, which are reported apart; see Part I, "Anatomy of memory").
* **Everywhere else — exact storage accounting.**  :class:`StorageTracker` is a
  ``TorchDispatchMode``: it sees every aten operator that runs while it is active, records
  the byte size of each *new* tensor storage an operator returns, and holds only a weak
  reference to it, so it learns the moment torch frees that storage.  Live bytes and their
  peak are therefore exact for tensor storage, to the byte, on the CPU, MPS and ``meta``
  devices alike — unlike process RSS, which mixes in the Python heap, libraries and
  memory the OS has not yet taken back.

What storage accounting cannot see (say so when you report its numbers): scratch buffers a
kernel allocates and frees *inside* one operator (e.g. the packing buffers of a CPU matrix
product), memory that C++ code allocates without returning it as a tensor, and allocator
rounding.  It counts storages created while it is active; memory allocated before the block
is the baseline, which it does not know (``baseline`` is 0 on the CPU).

Defined in Chapter 0, "Measuring memory: allocator statistics and exact storage accounting".
"""

from __future__ import annotations

import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..core.device import pick_device
from ..core.units import fmt_bytes

__all__ = ["StorageTracker", "MemoryReport", "track_memory", "measure", "warm_up",
           "tensor_bytes", "param_bytes", "grad_bytes", "optimizer_state_bytes"]

# Operators whose output aliases an input per their schema, but whose input storage was
# created outside the dispatcher (``torch.tensor([...])`` allocates, then lifts).
_FRESH_OPS = {"lift_fresh", "lift_fresh_copy"}


class StorageTracker(TorchDispatchMode):
    """Exact live-byte accounting of tensor storages created while active.

    ``device_type`` limits counting to storages on one device type (``"cpu"``, ``"cuda"``,
    ``"mps"``, ``"meta"``); ``None`` counts all.  ``timeline=True`` keeps one
    ``(event index, live bytes, operator)`` row per allocation and free.
    Subclasses may override :meth:`on_alloc` / :meth:`on_free` to attribute bytes.

    Defined in Chapter 0, "Measuring memory: allocator statistics and exact storage accounting".
    """

    def __init__(self, device_type: str | None = None, timeline: bool = False) -> None:
        super().__init__()
        self.device_type = device_type
        self.keep_timeline = timeline
        self.current = 0
        self.peak = 0
        self.timeline: list[tuple[int, int, str]] = []
        self._live: dict[int, tuple[weakref.ref, int]] = {}
        self._event = 0
        self._op = "start"

    # -- hooks for subclasses -------------------------------------------------------
    def on_alloc(self, key: int, nbytes: int, op: str, tensor: torch.Tensor) -> None:
        """Called once per new storage; ``key`` identifies it until :meth:`on_free`."""

    def on_free(self, key: int, nbytes: int) -> None:
        """Called when torch frees a storage counted by :meth:`on_alloc`."""

    # -- bookkeeping ----------------------------------------------------------------
    def _record(self, label: str) -> None:
        self._event += 1
        if self.current > self.peak:
            self.peak = self.current
        if self.keep_timeline:
            self.timeline.append((self._event, self.current, label))

    def _freed(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is None:
            return
        self.current -= entry[1]
        self.on_free(key, entry[1])
        self._record("free")

    def _count(self, t: torch.Tensor, op: str, fresh: bool) -> None:
        if self.device_type is not None and t.device.type != self.device_type:
            return
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse or nested tensors have no single storage
            return
        key = id(st)
        nbytes = st.nbytes()
        if key in self._live:
            ref, old = self._live[key]
            if ref() is st and nbytes != old:  # resized in place
                self._live[key] = (ref, nbytes)
                self.current += nbytes - old
                self._record(op)
            return
        if not fresh or nbytes == 0:
            return
        self._live[key] = (weakref.ref(st, lambda _r, k=key: self._freed(k)), nbytes)
        self.current += nbytes
        self.on_alloc(key, nbytes, op, t)
        self._record(op)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        op = func.overloadpacket.__name__
        returns = func._schema.returns
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for i, o in enumerate(outs):
            aliased = i < len(returns) and returns[i].alias_info is not None
            fresh = (not aliased) or op in _FRESH_OPS
            for t in tree_flatten(o)[0]:
                if isinstance(t, torch.Tensor):
                    self._count(t, op, fresh)
        return out


@dataclass
class MemoryReport:
    """What :func:`track_memory` / :func:`measure` found.

    ``peak`` and ``end`` are bytes *above the start of the block* (the highest point, and
    what is still allocated at the end).  ``baseline`` is what was allocated before (CUDA
    only; 0 where unknown).  ``exact`` says whether the figures are exact storage bytes
    (``True``) or allocator blocks with their rounding (``False``).
    """

    device: str
    method: str
    exact: bool
    peak: int = 0
    end: int = 0
    baseline: int = 0
    reserved_peak: int | None = None
    seconds: float = 0.0
    timeline: list[tuple[int, int, str]] = field(default_factory=list, repr=False)
    result: Any = field(default=None, repr=False)

    def summary(self) -> str:
        """One line: peak and end, with units."""
        text = f"peak {fmt_bytes(self.peak)} ({self.peak:,} B), end {fmt_bytes(self.end)} ({self.end:,} B) on {self.device} [{self.method}]"
        if self.reserved_peak is not None:
            text += f"; allocator reserved up to {fmt_bytes(self.reserved_peak)}"
        return text

    def __str__(self) -> str:
        return self.summary()

    def plot_timeline(self, ax=None, unit: str = "MiB", label: str | None = None):
        """Plot live bytes against allocation events (needs ``timeline=True``)."""
        import matplotlib.pyplot as plt

        from ..core.units import _UNITS

        if not self.timeline:
            raise ValueError("this report has no timeline; measure with timeline=True")
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3))
        xs = [e for e, _, _ in self.timeline]
        ys = [b / _UNITS[unit.lower()] for _, b, _ in self.timeline]
        ax.step(xs, ys, where="post", label=label)
        ax.set_xlabel("allocation / free event")
        ax.set_ylabel(f"live tensor memory ({unit})")
        return ax


@contextmanager
def track_memory(device: str | torch.device | None = None, timeline: bool = False) -> Iterator[MemoryReport]:
    """Measure the memory a ``with`` block takes on ``device`` (default: :func:`pick_device`).

    On CUDA the peak comes from the caching allocator (``max_memory_allocated`` minus what
    was allocated before); elsewhere from exact storage accounting (:class:`StorageTracker`).
    The yielded :class:`MemoryReport` is filled in when the block ends::

        with track_memory("cpu") as rep:
            x = torch.empty(1024, 1024)
        rep.peak  # 4194304

    Defined in Chapter 0, "Measuring memory: allocator statistics and exact storage accounting".
    """
    dev = pick_device(device)
    use_cuda = dev.type == "cuda"
    report = MemoryReport(device=str(dev), method="cuda-allocator" if use_cuda else "storage-tracking",
                          exact=not use_cuda)
    tracker = StorageTracker(dev.type, timeline=timeline) if (timeline or not use_cuda) else None
    if use_cuda:
        torch.cuda.synchronize(dev)
        report.baseline = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    try:
        if tracker is not None:
            with tracker:
                yield report
        else:
            yield report
    finally:
        if use_cuda:
            torch.cuda.synchronize(dev)
        report.seconds = time.perf_counter() - t0
        if use_cuda:
            report.peak = torch.cuda.max_memory_allocated(dev) - report.baseline
            report.end = torch.cuda.memory_allocated(dev) - report.baseline
            report.reserved_peak = torch.cuda.max_memory_reserved(dev)
        else:
            report.peak, report.end = tracker.peak, tracker.current
        if tracker is not None:
            report.timeline = tracker.timeline


def warm_up(device: str | torch.device | None = None) -> None:
    """Run one tiny matrix product forward and backward on ``device``.

    On a CUDA GPU the first matrix product of each thread makes cuBLAS allocate a workspace
    through torch's caching allocator (32 MiB per workspace on Hopper by default; a product
    with a fused bias goes through cuBLASLt, with a workspace of its own) — and the backward
    pass runs on a separate autograd thread with workspaces of its own.  They stay
    allocated for the life of the process.  Call this before a measurement so that this
    one-time overhead is counted in the baseline, not mistaken for the measured block's own
    memory (the estimator reports it as a separate *overhead* line).  A no-op elsewhere.

    Defined in Chapter 0, "Measuring memory: allocator statistics and exact storage accounting".
    """
    dev = pick_device(device)
    if dev.type != "cuda":
        return
    a = torch.randn(64, 64, device=dev, requires_grad=True)
    b = torch.zeros(64, device=dev, requires_grad=True)
    # a plain product (cuBLAS) and a product with bias (cuBLASLt, 1 MiB workspace by default)
    (a @ a + torch.nn.functional.linear(a, a, b)).sum().backward()
    torch.cuda.synchronize(dev)


def measure(fn: Callable[..., Any], *args: Any, device: str | torch.device | None = None,
            timeline: bool = False, **kwargs: Any) -> MemoryReport:
    """Call ``fn(*args, **kwargs)`` and return its :class:`MemoryReport` (``.result`` holds
    what ``fn`` returned, so memory it returns stays alive and counts in ``end``).
    ``device`` is the device to measure, not passed on to ``fn``: to give ``fn`` a device,
    wrap it (``measure(lambda: torch.zeros(8, device=dev), device=dev)``).

    Defined in Chapter 0, "Measuring memory: allocator statistics and exact storage accounting".
    """
    if not callable(fn):
        raise TypeError(f"measure() needs a callable, got {type(fn).__name__}")
    with track_memory(device, timeline=timeline) as rep:
        rep.result = fn(*args, **kwargs)
    return rep


# -- counting bytes by inspection ----------------------------------------------------

def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's elements: ``numel × element_size`` (a view counts its own elements).

    Defined in Chapter 0, "Before you start", section "Predicting bytes: a small model and its training state".
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")
    return t.numel() * t.element_size()


def _unique_storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        st = t.untyped_storage()
        if st.data_ptr() in seen and st.data_ptr() != 0:
            continue
        seen.add(st.data_ptr())
        total += st.nbytes()
    return total


def param_bytes(model: torch.nn.Module, trainable_only: bool = False, buffers: bool = False) -> int:
    """Bytes held by a module's parameters (shared/tied ones counted once), optionally its
    buffers too.  Defined in Chapter 0, "Before you start", section "Predicting bytes: a small model and its training state"."""
    params = [p for p in model.parameters() if p.requires_grad or not trainable_only]
    extra = list(model.buffers()) if buffers else []
    return _unique_storage_bytes(params + extra)


def grad_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the ``.grad`` tensors of a module's parameters.

    Defined in Chapter 0, "Before you start", section "Predicting bytes: a small model and its training state"."""
    return _unique_storage_bytes([p.grad for p in model.parameters()])


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in an optimizer's state (Adam's moments and step counters...).

    Defined in Chapter 0, "Before you start", section "Predicting bytes: a small model and its training state"."""
    tensors = [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return _unique_storage_bytes(tensors)

"""The CUDA context and the caching allocator, made visible (GPU only).

* :func:`cuda_context_bytes` — device memory in use before any tensor exists (the CUDA
  context: kernels, runtime and library state), from ``torch.cuda.mem_get_info``.  The
  estimator's default (``vramlib.estimate.CUDA_CONTEXT_BYTES``, 600 MiB) is a separate,
  fixed number; the measurement behind it is ``benchmarks/cuda_context.py``, recorded in
  ``benchmarks/results/cuda_context_h200.json``: on an H200, 527 MiB outside the allocator
  after CUDA initialisation, 749 MiB after the first cuBLAS matrix products and 767 MiB after
  the first SDPA attention.
* :func:`fragmentation_demo` — allocated vs reserved memory under a pattern that fragments
  the caching allocator's segments.
* :func:`snapshot_spans` — the lifetimes of the allocations in a memory snapshot
  (``torch.cuda.memory._snapshot()``), for drawing its timeline without a browser.

Defined in Part I, "Anatomy of memory".
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["cuda_context_bytes", "fragmentation_demo", "snapshot_spans"]


def cuda_context_bytes(device: torch.device | str = "cuda") -> dict:
    """Device memory used by the process's CUDA context: total − free − reserved, measured
    after initialising CUDA and allocating one small tensor — stage (1) of
    ``benchmarks/cuda_context.py``, which also measures the growth after the first cuBLAS and
    SDPA calls (``benchmarks/results/cuda_context_h200.json``: 527, 749 and 767 MiB on an H200).
    Defined in Part I, "Anatomy of memory"."""
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError("cuda_context_bytes needs a CUDA device")
    torch.empty(1, device=dev)
    torch.cuda.synchronize(dev)
    free, total = torch.cuda.mem_get_info(dev)
    reserved = torch.cuda.memory_reserved(dev)
    return {"total": total, "free": free, "reserved": reserved, "context_and_others": total - free - reserved}


def fragmentation_demo(device: torch.device | str = "cuda", n: int = 64, mib: int = 20) -> dict:
    """Allocate ``n`` tensors of ``mib`` MiB, free every other one, then ask for one tensor of
    twice the size.  Returns allocated/reserved bytes at each stage: the freed holes are
    ``n/2 × mib`` MiB in total but none fits the larger request, so reserved memory grows.
    Defined in Part I, "Anatomy of memory"."""
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError("fragmentation_demo needs a CUDA device")
    torch.cuda.empty_cache()
    torch.cuda.synchronize(dev)
    a0, r0 = torch.cuda.memory_allocated(dev), torch.cuda.memory_reserved(dev)
    elems = mib * 2**20 // 4
    ts = [torch.empty(elems, device=dev) for _ in range(n)]
    stages = {"after allocating": (torch.cuda.memory_allocated(dev) - a0, torch.cuda.memory_reserved(dev) - r0)}
    for i in range(0, n, 2):
        ts[i] = None
    stages["after freeing every other"] = (torch.cuda.memory_allocated(dev) - a0, torch.cuda.memory_reserved(dev) - r0)
    big = torch.empty(2 * elems, device=dev)
    stages["after one 2x request"] = (torch.cuda.memory_allocated(dev) - a0, torch.cuda.memory_reserved(dev) - r0)
    del big, ts
    torch.cuda.empty_cache()
    return {k: {"allocated": a, "reserved": r} for k, (a, r) in stages.items()}


def snapshot_spans(snapshot: dict[str, Any], device: int = 0) -> dict[str, Any]:
    """The allocations of a memory snapshot's trace, each as a span of events.

    Reads ``snapshot["device_traces"][device]``, keeps the ``alloc`` and ``free_completed``
    events in order, and pairs each allocation with the free of the same address.  Returns
    ``events`` (how many were kept), ``spans`` — ``(allocation event, index born, index
    freed)``, with ``events`` as the index of those never freed — and ``live``, the
    allocation events still live at the end of the trace (an OOM snapshot: what filled the
    memory).  Events are in order, not on a time scale.  Defined in Part I, "Debugging an
    out-of-memory error", section "The memory snapshot"."""
    traces = snapshot.get("device_traces") if isinstance(snapshot, dict) else None
    if not isinstance(traces, list) or not 0 <= device < len(traces):
        raise ValueError("snapshot must be the dict torch.cuda.memory._snapshot() returns, "
                         f"with a device_traces entry for device {device}; record it with "
                         "torch.cuda.memory._record_memory_history() enabled")
    trace = [e for e in traces[device] if e.get("action") in ("alloc", "free_completed")]
    born: dict[int, tuple[dict, int]] = {}
    spans = []
    for i, e in enumerate(trace):
        if e["action"] == "alloc":
            born[e["addr"]] = (e, i)
        elif e["addr"] in born:
            a, t0 = born.pop(e["addr"])
            spans.append((a, t0, i))
    spans += [(a, t0, len(trace)) for a, t0 in born.values()]
    return {"events": len(trace), "spans": spans, "live": [a for a, _ in born.values()]}

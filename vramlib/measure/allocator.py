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

Defined in Part I, "Anatomy of memory".
"""

from __future__ import annotations

import torch

__all__ = ["cuda_context_bytes", "fragmentation_demo"]


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

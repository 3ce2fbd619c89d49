"""How much more than the live tensors a run needs to fit: the caching allocator's reserve at the
limit, and the margin for the estimator's own error.

Far from the limit, torch's caching allocator keeps freed blocks for reuse, so the memory it
reserves runs 2–40 % above the live tensors (``benchmarks/results/estimator_gpu_fresh.json``,
median 9.4 %).  Near the limit it behaves differently: when ``cudaMalloc`` fails it frees every
cached block that is not in use and tries again, so a run fails only when the free pieces left
*inside* the segments that still hold live tensors cannot take the next request.  That residue
grows with the size of the largest single request (a block must be contiguous) and a little
with the number of segments, not with the total.  The model, per run:

    needed = peak × (1 + ESTIMATE_MARGIN[stage]) + RESERVE_LARGEST × largest + RESERVE_FLOOR

``largest`` is the biggest single tensor the step allocates (the fp32 logits, an MLP
intermediate, the embedding matrix's gradient, a KV-cache layer), reported by the estimator as
``Breakdown.largest``.  The constants are fitted on the "tuning" half of the bisection grid in
``benchmarks/results/fit_gpu.json`` (``benchmarks/validate_fit.py``) so that no tuning case is
predicted above its true largest batch, and checked on the held-out half.

Defined in Part I, "The calculator".
"""

from __future__ import annotations

from .breakdown import Breakdown

__all__ = ["ESTIMATE_MARGIN", "RESERVE_LARGEST", "RESERVE_FLOOR", "needed_bytes"]

#: Relative margin for the estimator's own error by stage: the largest underestimate of the
#: peak on the tuning half of ``fit_gpu.json`` (training leans low by a few per cent).
ESTIMATE_MARGIN = {"train": 0.03, "inference": 0.02}
#: Fragmentation at the limit, in units of the largest single allocation (fitted, see above).
RESERVE_LARGEST = 1.0
#: Fixed part: the allocator's 2 MiB rounding of the small pool and cuBLAS/cuDNN workspaces
#: allocated through it at the first step (128 MiB covers the 32 MiB cuBLAS workspace of each
#: of the forward and backward streams plus the rounding of a few hundred tensors).
RESERVE_FLOOR = 128 << 20


def needed_bytes(b: Breakdown, cuda_context: int) -> int:
    """Bytes a card must have for the run ``b`` to fit: its peak with the estimator's margin, the
    allocator's reserve at the limit, and the CUDA context.  Defined in Part I, "The calculator"."""
    margin = ESTIMATE_MARGIN["train" if b.stage == "train" else "inference"]
    return int(b.peak * (1 + margin) + RESERVE_LARGEST * b.largest + RESERVE_FLOOR + cuda_context)

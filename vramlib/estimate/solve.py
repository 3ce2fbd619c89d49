"""Solvers: the largest batch, or the longest context, that fits a GPU.

The estimate grows monotonically with batch and sequence length, so a doubling search then a
bisection finds the largest value whose ``total_reserved`` fits (about 20 estimates).

Defined in Part I, "The calculator".
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["max_batch", "max_context", "largest_fitting"]


def largest_fitting(fits: Callable[[int], bool], limit: int, start: int = 1) -> int:
    """The largest ``n`` in ``[start, limit]`` with ``fits(n)``, for a monotone ``fits``: try
    ``start``, double while it fits, then bisect (0 if ``start`` does not fit; ``start`` is
    returned untested further when ``start ≥ limit``).  Also the search behind
    :func:`vramlib.measure.budget.largest_batch`.  Defined in Part I, "The calculator"."""
    if not fits(start):
        return 0
    lo, hi = start, start * 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def max_batch(model: Any, gpu: Any, stage: str = "train", seq_len: int = 2048, headroom: float = 0.0,
              limit: int = 1 << 20, **scenario: Any) -> int:
    """Largest batch that fits ``gpu`` (0 if not even batch 1 fits).  ``stage`` is
    ``"train"`` (``seq_len`` per sample) or ``"inference"`` (``prompt_len``/``new_tokens`` in
    ``scenario``).  Defined in Part I, "The calculator"."""
    from . import estimate_inference, estimate_training
    from ..hardware.gpus import get_gpu

    g = get_gpu(gpu)
    if stage == "train":
        return largest_fitting(lambda b: estimate_training(model, b, seq_len, **scenario).fits(g, headroom=headroom), limit)
    if stage == "inference":
        return largest_fitting(lambda b: estimate_inference(model, b, **scenario).fits(g, headroom=headroom), limit)
    raise ValueError(f"stage must be 'train' or 'inference'; got {stage!r}")


def max_context(model: Any, gpu: Any, stage: str = "inference", batch: int = 1, headroom: float = 0.0,
                limit: int = 1 << 22, **scenario: Any) -> int:
    """Longest sequence that fits ``gpu``: the training ``seq_len``, or for inference the
    prompt length (with ``new_tokens`` from ``scenario``, default 128).  For models with
    learned positions the limit is their ``max_position_embeddings``.
    Defined in Part I, "The calculator"."""
    from . import estimate_inference, estimate_training, load_model_config
    from ..hardware.gpus import get_gpu

    g = get_gpu(gpu)
    spec = load_model_config(model)
    if spec.position == "learned":
        limit = min(limit, spec.max_position_embeddings - (scenario.get("new_tokens", 128) if stage == "inference" else 0))
    if stage == "train":
        return largest_fitting(lambda s: estimate_training(spec, batch, s, **scenario).fits(g, headroom=headroom), limit)
    if stage == "inference":
        return largest_fitting(lambda s: estimate_inference(spec, batch, prompt_len=s, **scenario).fits(g, headroom=headroom),
                        limit)
    raise ValueError(f"stage must be 'train' or 'inference'; got {stage!r}")

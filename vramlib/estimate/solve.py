"""Solvers: the largest batch, or the longest context, that fits a GPU — never an optimistic one.

A run fits when :func:`vramlib.estimate.reserve.needed_bytes` (the estimated peak with the
estimator's margin, the allocator's reserve at the limit and the CUDA context) is at most the
card's usable bytes (:attr:`vramlib.hardware.gpus.GPU.usable_bytes`, as the device reports them).  The
estimate grows monotonically with batch and sequence length (a property test checks it), so
a doubling search then a bisection finds the largest value (about 20 estimates).

Defined in Part I, "The calculator".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .reserve import needed_bytes

__all__ = ["max_batch", "max_context", "largest_fitting", "capacity_bytes", "fit", "FitAnswer"]


def capacity_bytes(gpu: Any) -> int:
    """Usable bytes of ``gpu``: a catalogue key or name (``"h100-sxm"``, ``"RTX 4090"``), a
    :class:`vramlib.hardware.gpus.GPU`, or a byte count (an emulated or partitioned card).
    Defined in Part I, "The calculator"."""
    if isinstance(gpu, int) and not isinstance(gpu, bool):
        if gpu <= 0:
            raise ValueError(f"a GPU capacity in bytes must be > 0; got {gpu!r}")
        return gpu
    from ..hardware.gpus import get_gpu

    return get_gpu(gpu).usable_bytes


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


def _estimator(model: Any, stage: str, vary: str, fixed: dict[str, Any]) -> Callable[[int], Any]:
    """``n -> Breakdown`` with ``n`` the batch (``vary="batch"``) or the sequence/prompt length."""
    from . import estimate_inference, estimate_training, load_model_config

    spec = load_model_config(model)
    if stage == "train":
        key = "batch" if vary == "batch" else "seq_len"
        return lambda n: estimate_training(spec, **{**fixed, key: n})
    if stage == "inference":
        key = "batch" if vary == "batch" else "prompt_len"
        return lambda n: estimate_inference(spec, **{**fixed, key: n})
    raise ValueError(f"stage must be 'train' or 'inference'; got {stage!r}")


def _safe_fits(est: Callable[[int], Any], cap: int, headroom: float, ctx: int) -> Callable[[int], bool]:
    if not isinstance(headroom, (int, float)) or not 0.0 <= headroom < 1.0:
        raise ValueError(f"headroom must be a fraction in [0, 1), got {headroom!r}")
    return lambda n: needed_bytes(est(n), ctx) <= cap * (1.0 - headroom)


def _context(cuda_context: int | None) -> int:
    from . import CUDA_CONTEXT_BYTES

    if cuda_context is None:
        return CUDA_CONTEXT_BYTES
    if isinstance(cuda_context, bool) or not isinstance(cuda_context, int) or cuda_context < 0:
        raise ValueError(f"cuda_context must be a byte count ≥ 0 or None; got {cuda_context!r}")
    return cuda_context


def max_batch(model: Any, gpu: Any, stage: str = "train", seq_len: int = 2048, headroom: float = 0.0,
              limit: int = 1 << 20, cuda_context: int | None = None, **scenario: Any) -> int:
    """Largest batch that safely fits ``gpu`` (0 if not even batch 1 fits).  ``stage`` is
    ``"train"`` (``seq_len`` per sample) or ``"inference"`` (``prompt_len``/``new_tokens`` in
    ``scenario``).  Never optimistic by design: see :mod:`vramlib.estimate.reserve`.
    Defined in Part I, "The calculator"."""
    fixed = dict(scenario, seq_len=seq_len) if stage == "train" else dict(scenario)
    est = _estimator(model, stage, "batch", fixed)
    return largest_fitting(_safe_fits(est, capacity_bytes(gpu), headroom, _context(cuda_context)), limit)


def _position_limit(spec: Any, stage: str, scenario: dict[str, Any]) -> int:
    """The longest prompt (inference, leaving room for ``new_tokens``) or sequence (training)
    the model's positions allow."""
    new = scenario.get("new_tokens", 128) if stage == "inference" else 0
    return spec.max_position_embeddings - new


def max_context(model: Any, gpu: Any, stage: str = "inference", batch: int = 1, headroom: float = 0.0,
                limit: int = 1 << 22, cuda_context: int | None = None, **scenario: Any) -> int:
    """Longest sequence that safely fits ``gpu``: the training ``seq_len``, or for inference
    the prompt length (with ``new_tokens`` from ``scenario``, default 128).  The answer never
    passes the model's ``max_position_embeddings``: learned positions end there, and a rotary
    model was not configured (or trained) for more.
    Defined in Part I, "The calculator"."""
    from . import load_model_config

    spec = load_model_config(model)
    limit = min(limit, _position_limit(spec, stage, scenario))
    est = _estimator(spec, stage, "length", dict(scenario, batch=batch))
    return largest_fitting(_safe_fits(est, capacity_bytes(gpu), headroom, _context(cuda_context)), limit)


@dataclass(frozen=True)
class FitAnswer:
    """What :func:`fit` found: the largest ``value`` of ``what`` (``"batch"`` or
    ``"context"``), the bytes it needs and the card's usable bytes, and the margin left.
    Defined in Part I, "The calculator"."""

    what: str
    value: int
    needed: int
    capacity: int
    next_needed: int

    @property
    def margin(self) -> int:
        """Bytes left free at ``value`` (negative never: ``value`` is 0 when nothing fits)."""
        return self.capacity - self.needed if self.value else 0

    def line(self) -> str:
        """One sentence for the CLI and the chapters."""
        from ..core.units import fmt_bytes, fmt_num

        if not self.value:
            return (f"does not fit: {self.what} 1 needs {fmt_bytes(self.next_needed)} of "
                    f"{fmt_bytes(self.capacity)}")
        free = fmt_num(self.margin / self.capacity, 1, pct=True)
        more = (f"{self.what} {self.value + 1:,} would need {fmt_bytes(self.next_needed)}" if self.next_needed
                else "the model's positions allow no more")
        return (f"largest {self.what}: {self.value:,} (needs {fmt_bytes(self.needed)} of {fmt_bytes(self.capacity)}, "
                f"{free} free; {more})")


def fit(model: Any, gpu: Any, stage: str = "train", what: str = "batch", *, batch: int = 1,
        seq_len: int = 2048, cuda_context: int | None = None, **scenario: Any) -> FitAnswer:
    """"Will it fit?": the largest batch (``what="batch"``, at ``seq_len`` or the scenario's
    ``prompt_len``) or context (``what="context"``, at ``batch``) on ``gpu``, with the bytes
    needed and the margin.  Defined in Part I, "The calculator"."""
    if what not in ("batch", "context"):
        raise ValueError(f"what must be 'batch' or 'context'; got {what!r}")
    ctx = _context(cuda_context)
    if what == "batch":
        n = max_batch(model, gpu, stage, seq_len=seq_len, cuda_context=ctx, **scenario)
        fixed = dict(scenario, seq_len=seq_len) if stage == "train" else dict(scenario)
        est = _estimator(model, stage, "batch", fixed)
    else:
        n = max_context(model, gpu, stage, batch=batch, cuda_context=ctx, **scenario)
        est = _estimator(model, stage, "length", dict(scenario, batch=batch))
    need = needed_bytes(est(n), ctx) if n else 0
    try:
        nxt = needed_bytes(est(n + 1), ctx)
    except ValueError:                  # n + 1 beyond the model's positions: nothing more to try
        nxt = 0
    from . import load_model_config
    if what == "context" and n >= _position_limit(load_model_config(model), stage, scenario):
        nxt = 0                         # bound by the model's positions, not by memory
    return FitAnswer(what=what, value=n, needed=need, capacity=capacity_bytes(gpu), next_needed=nxt)

"""The fit check: the solver's largest batch against the true one, recorded at the real
out-of-memory boundary by ``benchmarks/validate_fit.py`` (``benchmarks/results/fit_gpu.json``).

Pure arithmetic on the record (no GPU, no torch): each case's estimated peak against the
measured one at the largest batch that ran, and :func:`~vramlib.estimate.max_batch` on the
case's capacity against the bisected boundary, by split (``tuning``: what the reserve
constants were fitted on; ``held-out``: the rest).

Defined in Part I, "The calculator".
"""

from __future__ import annotations

import statistics
from typing import Any

from . import CUDA_CONTEXT_BYTES, estimate_inference, estimate_training, load_model_config, max_batch

__all__ = ["fit_case", "fit_check"]


def _model(case: dict):
    """The model as the run built it: the bundled config, GPT-2's dropout switched off."""
    spec = load_model_config(case["model"])
    return spec.replace(dropout=0.0) if spec.family == "gpt2" else spec


def _estimate(case: dict, batch: int):
    if case["recipe"].startswith("gen-"):
        return estimate_inference(_model(case), batch, prompt_len=case["length"], new_tokens=case["new_tokens"],
                                  **case["scenario"])
    return estimate_training(_model(case), batch, case["length"], **case["scenario"])


def fit_case(case: dict) -> dict[str, Any]:
    """One recorded case: true and predicted largest batch, their ratio, and the estimated
    peak's relative error at the largest batch that ran.  Defined in Part I, "The calculator"."""
    ctx = 0 if case["emulated"] else CUDA_CONTEXT_BYTES
    gen = case["recipe"].startswith("gen-")
    kw = dict(stage="inference", prompt_len=case["length"], new_tokens=case["new_tokens"]) if gen \
        else dict(stage="train", seq_len=case["length"])
    pred = max_batch(_model(case), case["capacity_bytes"], cuda_context=ctx, **kw, **case["scenario"])
    best = max((t for t in case["trials"] if not t["oom"]), key=lambda t: t["batch"])
    true = case["true_max_batch"]
    return dict(name=case["name"], split=case["split"], model=case["model"], recipe=case["recipe"], true=true,
                pred=pred, ratio=pred / true, peak_err=_estimate(case, best["batch"]).peak / best["peak_allocated"] - 1)


def fit_check(record: Any) -> dict[str, Any]:
    """Every case of a ``fit_gpu`` record (:func:`fit_case`) and, per split, the counts the
    targets are stated in: optimistic answers (goal 0), predicted/true (goal ≥ 0.9), peak
    |error| median (≤ 2 %) and largest (≤ 5 %), worst underestimate (≥ −3 %).
    Defined in Part I, "The calculator"."""
    rows = [fit_case(c) for c in record.results["cases"] if c.get("trials")]
    out: dict[str, Any] = {"rows": rows}
    for split in sorted({r["split"] for r in rows}):
        rs = [r for r in rows if r["split"] == split]
        e = [r["peak_err"] for r in rs]
        out[split] = dict(n=len(rs), optimistic=sum(r["pred"] > r["true"] for r in rs),
                          at_least_90=sum(r["ratio"] >= 0.9 for r in rs), min_ratio=min(r["ratio"] for r in rs),
                          median_ratio=statistics.median(r["ratio"] for r in rs),
                          peak_median_abs=statistics.median(abs(x) for x in e), peak_max_abs=max(abs(x) for x in e),
                          peak_worst_under=min(e))
    return out

"""Report a bisection record of ``benchmarks/validate_fit.py`` against the current estimator
(no GPU needed): per case the estimated peak against the measured one at every batch that
ran, and the predicted largest batch against the true one, by split.

Run: ``python benchmarks/validate_fit.py --from-json benchmarks/results/fit_gpu.json``.
Defined in Part I, "The calculator".
"""

from __future__ import annotations

import statistics
from typing import Any

from vramlib.estimate import (CUDA_CONTEXT_BYTES, estimate_inference, estimate_training, load_model_config,
                              max_batch, needed_bytes)


def model_of(case: dict):
    """The model as the run built it: the bundled config, GPT-2's dropout off (validate_fit.py)."""
    spec = load_model_config(case["model"])
    return spec.replace(dropout=0.0) if spec.family == "gpt2" else spec


def _estimate(case: dict, batch: int):
    sc = dict(case["scenario"])
    if case["recipe"].startswith("gen-"):
        return estimate_inference(model_of(case), batch, prompt_len=case["length"], new_tokens=case["new_tokens"], **sc)
    return estimate_training(model_of(case), batch, case["length"], **sc)


def case_rows(case: dict) -> dict[str, Any]:
    """Peak errors at every batch that ran, and predicted vs true largest batch, for one case."""
    ctx = 0 if case["emulated"] else CUDA_CONTEXT_BYTES
    errs = []
    for t in case["trials"]:
        if not t["oom"]:
            errs.append(_estimate(case, t["batch"]).peak / t["peak_allocated"] - 1)
    stage = "inference" if case["recipe"].startswith("gen-") else "train"
    kw = dict(prompt_len=case["length"], new_tokens=case["new_tokens"]) if stage == "inference" \
        else dict(seq_len=case["length"])
    pred = max_batch(model_of(case), case["capacity_bytes"], stage=stage, cuda_context=ctx, **kw, **case["scenario"])
    true = case["true_max_batch"]
    best = max((t for t in case["trials"] if not t["oom"]), key=lambda t: t["batch"])
    need = needed_bytes(_estimate(case, true), ctx)
    return dict(name=case["name"], split=case["split"], model=case["model"], recipe=case["recipe"],
                true=true, pred=pred, ratio=pred / true, peak_err=errs[-1] if errs else float("nan"),
                peak_errs=errs, need_over_cap=need / case["capacity_bytes"],
                measured_over_cap=(best["peak_allocated"] + ctx) / case["capacity_bytes"])


def summary(rows: list[dict]) -> dict[str, Any]:
    """Targets: predicted ≤ true and ≥ 90 % of it; peak median |error| ≤ 2 %, all within 5 %,
    no underestimate worse than 3 % (on the largest batch that ran)."""
    e = [r["peak_err"] for r in rows]
    return dict(n=len(rows), optimistic=sum(r["pred"] > r["true"] for r in rows),
                min_ratio=min(r["ratio"] for r in rows), median_ratio=statistics.median(r["ratio"] for r in rows),
                peak_median_abs=statistics.median(abs(x) for x in e), peak_max_abs=max(abs(x) for x in e),
                peak_worst_under=min(e))


def report(record: dict) -> dict[str, Any]:
    rows = [case_rows(c) for c in record["results"]["cases"] if "trials" in c]
    print(f"{'case':4s} {'model':15s} {'recipe':15s} {'true':>5s} {'pred':>5s} {'ratio':>6s} {'peak err':>9s}")
    for r in rows:
        print(f"{r['name']:4s} {r['model']:15s} {r['recipe']:15s} {r['true']:5d} {r['pred']:5d} "
              f"{r['ratio']:6.2f} {100 * r['peak_err']:+8.1f}%")
    out = {}
    for split in ("tuning", "held-out"):
        s = summary([r for r in rows if r["split"] == split])
        out[split] = s
        print(f"{split}: n={s['n']}, optimistic {s['optimistic']}, predicted/true min {s['min_ratio']:.2f} "
              f"median {s['median_ratio']:.2f}; peak |err| median {100 * s['peak_median_abs']:.1f} %, "
              f"max {100 * s['peak_max_abs']:.1f} %, worst under {100 * s['peak_worst_under']:+.1f} %")
    return {"rows": rows, "summary": out}

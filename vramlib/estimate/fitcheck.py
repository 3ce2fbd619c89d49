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
from .breakdown import Breakdown

__all__ = ["fit_case", "fit_check", "reserve_bracket", "reserve_brackets", "recipe_scenario", "recipe_estimate",
           "recipe_check", "merge_records"]


def merge_records(*records: Any, keep_repeats: bool = False) -> Any:
    """One record-like object whose ``results["cases"]`` are the cases of ``records`` by name,
    a later record's case replacing an earlier one's (a re-measurement with ``--cases``) —
    or, with ``keep_repeats``, kept beside it as ``"name (run 2)"`` (an out-of-memory boundary
    moves between runs; a safe answer must fit every run).  A skipped case never replaces a
    measured one.  ``None`` records are skipped, and
    the provenance is the last record's.  Defined in Part I, "The calculator"."""
    from types import SimpleNamespace

    recs = [r for r in records if r is not None]
    if not recs:
        raise ValueError("merge_records needs at least one record")
    cases: dict[str, dict] = {}
    for k, r in enumerate(recs):
        for c in r.results["cases"]:
            if "skipped" in c and c["name"] in cases:      # a re-run that did not get to it
                continue
            key = c["name"] if not (keep_repeats and c["name"] in cases) else f"{c['name']} (run {k + 1})"
            cases[key] = dict(c, name=key)
    return SimpleNamespace(name="+".join(r.name for r in recs), provenance=recs[-1].provenance,
                           config=recs[-1].config, results={"cases": list(cases.values())})


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


def reserve_bracket(case: dict) -> dict[str, Any]:
    """What one bisection says about the allocator's reserve at the limit.  The largest batch
    ``B`` ran and ``B + 1`` did not, on a cap of ``C`` bytes, so the bytes the allocator needed
    beyond the live peak lie in ``(C − P(B + 1), C − P(B)]``: ``P(B)`` is measured, ``P(B + 1)``
    is the estimate scaled by the estimate's error at ``B`` (the estimator's error is then no
    part of the bracket).  In units of the pattern's scale: the largest single tensor
    (training, generation with the dynamic cache) or the peak's non-weight bytes (generation
    with the static cache).  Defined in Part I, "The calculator"."""
    gen = case["recipe"].startswith("gen-")
    cap = case["capacity_bytes"] - (0 if case["emulated"] else CUDA_CONTEXT_BYTES)
    b = case["true_max_batch"]
    meas = next(t for t in case["trials"] if t["batch"] == b)["peak_allocated"]
    est, est1 = _estimate(case, b), _estimate(case, b + 1)
    lo, hi = cap - est1.peak * meas / est.peak, cap - meas
    ck = case["scenario"].get("cache") if gen else case["scenario"].get("checkpointing", "none")
    scale = est.peak - est.components["weights"] if ck == "static" else est.largest
    return dict(name=case["name"], split=case["split"], model=case["model"], recipe=case["recipe"],
                pattern=("generate, " if gen else "train, ") + ck, scale=scale, lo=lo / scale, hi=hi / scale,
                lo_bytes=int(lo), hi_bytes=int(hi))


def reserve_brackets(record: Any) -> list[dict[str, Any]]:
    """:func:`reserve_bracket` for every bisected case of a ``fit_gpu`` record.
    Defined in Part I, "The calculator"."""
    return [reserve_bracket(c) for c in record.results["cases"] if c.get("trials")]


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


#: The optimizers of ``benchmarks/validate_recipes.py`` in the estimator's vocabulary.
_RECIPE_OPTIMIZERS = {"adamw": "adamw", "sgd": "sgd", "adafactor": "adafactor", "adam8bit": "adam8bit",
                      "paged-adamw": "paged-adamw", "paged-adamw8bit": "paged-adam8bit"}
#: Generation weight formats: bitsandbytes int8 (LLM.int8, one fp32 scale per row), nf4 (fp32
#: absmax per 64 without double quantisation, bitsandbytes' default), torchao int8 (a bf16
#: scale per output channel) and int4 (groups of 128, a bf16 scale and zero each).
_RECIPE_WEIGHTS = {"bnb-int8": dict(weights="int8", scale_bytes=4, quant_library="bitsandbytes"),
                   "bnb-nf4": dict(weights="nf4", group_size=64, scale_bytes=4, quant_library="bitsandbytes"),
                   "ao-int8": dict(weights="int8", scale_bytes=2, quant_library="torchao"),
                   "ao-int4": dict(weights="int4", group_size=128, scale_bytes=4, quant_library="torchao")}


def recipe_scenario(recipe: str, optimizer: str | None = None, grad_accum: int = 1) -> dict[str, Any]:
    """A recipe of the validation scripts (``full-bf16``, ``full-amp``, ``lora``, ``qlora``,
    ``-ckpt``/``-nockpt``, ``gen-dynamic``, ``gen-static``, ``gen-bnb-nf4``, ...) as the
    estimator's keyword arguments.  Defined in Part I, "The calculator"."""
    if recipe.startswith("gen-"):
        fmt = recipe[4:]
        if fmt in ("dynamic", "static"):
            return dict(weights="bf16", cache=fmt)
        return dict(cache="dynamic", compute_dtype="bf16", **_RECIPE_WEIGHTS[fmt])
    sc: dict[str, Any] = dict(weights_dtype="bf16")
    if recipe == "full-amp":
        sc = dict(weights_dtype="fp32", autocast="bf16")
    if recipe.startswith(("lora", "qlora")):
        sc.update(trainable=recipe.split("-")[0], lora_rank=16, lora_targets="all-linear")
    ckpt = recipe.endswith("-ckpt") or recipe == "qlora"      # peft's prepare_...: on by default
    sc["checkpointing"] = "full" if ckpt else "none"
    if optimizer is not None:
        sc["optimizer"] = _RECIPE_OPTIMIZERS[optimizer]
    if grad_accum > 1:
        sc["grad_accum"] = grad_accum
    return sc


def recipe_estimate(case: dict) -> Breakdown:
    """The estimate for one measured case of ``recipes_gpu.json`` (its recorded config).
    Defined in Part I, "The calculator"."""
    spec = load_model_config(case["hf_config"])
    sc = recipe_scenario(case["recipe"], case.get("optimizer"), case.get("grad_accum", 1))
    if case["recipe"].startswith("gen-"):
        return estimate_inference(spec, case["batch"], prompt_len=case["length"], new_tokens=case["new_tokens"], **sc)
    return estimate_training(spec, case["batch"], case["length"], **sc)


def recipe_check(record: Any) -> dict[str, Any]:
    """Every measured case of a ``recipes_gpu`` record with the estimate and its relative
    error, and per split: n, median |error| (goal ≤ 2 %), largest |error| (≤ 5 %), worst
    underestimate (≥ −3 %); cases the estimator cannot describe are listed with the reason.
    Defined in Part I, "The calculator"."""
    rows = []
    for c in record.results["cases"]:
        if "peak" not in c:
            continue
        r = dict(c)
        try:
            r["estimate"] = recipe_estimate(c).peak
            r["err"] = r["estimate"] / c["peak"] - 1
        except (ValueError, KeyError, TypeError) as e:
            r["estimate"], r["estimate_error"] = None, str(e)
        rows.append(r)
    out: dict[str, Any] = {"rows": rows}
    for split in ("tuning", "held-out"):
        e = [r["err"] for r in rows if r["split"] == split and r.get("estimate")]
        if e:
            out[split] = dict(n=len(e), median_abs=statistics.median(abs(x) for x in e),
                              max_abs=max(abs(x) for x in e), worst_under=min(e),
                              unsupported=sum(1 for r in rows if r["split"] == split and not r.get("estimate")))
    return out

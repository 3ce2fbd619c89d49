"""The estimator against recorded GPU measurements: the validation grid's model configs,
the estimate of a recorded case (with the source article's rules beside it), and the
error summary per split (tuning, held-out, fresh) and kind (train, generate).

``benchmarks/validate_estimator.py`` measures the cases on a GPU and records them
(:mod:`vramlib.core.records`); the GPU-evidence appendix re-estimates the recorded cases
with the current estimator through this module.

Defined in Part I, "The calculator".
"""

from __future__ import annotations

import statistics
from typing import Any

from ..estimate import (article_inference_rule, article_quantized_rule, article_simple_rule,
                        article_training_rule, estimate_inference, estimate_training,
                        load_model_config, num_params)
from ..estimate.training import TrainScenario, activation_bytes_per_layer

__all__ = ["HF_MODELS", "HELD_OUT_MODELS", "spec_of", "estimate_case", "add_errors", "summarize"]

def _llama(name, d, L, h, kv, I, V=32000, tie=False, mt="llama", **kw):
    c = {"model_type": mt, "hidden_size": d, "num_hidden_layers": L, "num_attention_heads": h,
         "num_key_value_heads": kv, "intermediate_size": I, "vocab_size": V, "tie_word_embeddings": tie,
         "max_position_embeddings": 4096, "_name": name}
    c.update(kw)
    return c


def _bundled(name):
    from vramlib.estimate.config import _bundled as b
    return {**b()[name], "_name": name}


HF_MODELS = {
    "llama-0.3b": lambda: _llama("llama-0.3b", 1024, 16, 16, 4, 2816),
    "llama-3.2-1b": lambda: _bundled("llama-3.2-1b"),
    "qwen2-0.5b": lambda: _bundled("qwen2-0.5b"),
    "mistral-0.4b": lambda: _llama("mistral-0.4b", 1024, 12, 16, 8, 3584, mt="mistral", sliding_window=4096),
    "smollm2-135m": lambda: _bundled("smollm2-135m"),
    "gpt2": lambda: _bundled("gpt2"),
    "gpt2-medium": lambda: {**_bundled("gpt2-medium"), "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "qwen2-1.5b": lambda: _bundled("qwen2.5-1.5b"),
    "tinyllama-1.1b": lambda: _bundled("tinyllama-1.1b"),
    "pythia-160m": lambda: _bundled("pythia-160m"),
    "tiny-llama": lambda: _llama("tiny-llama", 64, 2, 4, 2, 176, V=512),
    "tiny-gpt2": lambda: {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 512,
                          "n_positions": 256, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                          "_name": "tiny-gpt2"},
    "tiny-qwen2": lambda: _llama("tiny-qwen2", 64, 2, 4, 1, 160, V=1024, tie=True, mt="qwen2"),
}
HELD_OUT_MODELS = {"llama-3.2-1b", "mistral-0.4b", "smollm2-135m", "gpt2-medium", "tiny-qwen2"}


def spec_of(case: dict[str, Any]):
    """The estimator's model of a validation case (the book's GPT or an HF config).
    Defined in Part I, "The calculator"."""
    if case["model"] == "book-gpt":
        from vramlib.models import GPTConfig
        return load_model_config(GPTConfig(**case["gpt"]))
    return load_model_config(HF_MODELS[case["model"]]())


def estimate_case(case: dict[str, Any]) -> dict[str, Any]:
    """Estimate a validation case with the current estimator: peak, phase, components, and
    the article's rule (A6 for training, with our activation count as its A; A9/A11 for
    inference) and A7.  Defined in Part I, "The calculator"."""
    spec = spec_of(case)
    sc = dict(case["scenario"])
    if case["kind"] == "train":
        b = estimate_training(spec, case["batch"], case["seq_len"], **sc)
        P = num_params(spec)
        A = activation_bytes_per_layer(spec, TrainScenario(batch=1, seq_len=case["seq_len"], device=sc.get("device", "cuda")))
        A_elems = spec.num_layers * case["seq_len"] * (A["per_token"] + A["per_token_s"] * case["seq_len"]) / 4
        rule = article_training_rule(P, case["batch"], A_elems)
        rule2 = article_simple_rule(P, case["batch"])
    else:
        b = estimate_inference(spec, case["batch"], case["prompt_len"], case["new_tokens"], **sc)
        P = num_params(spec)
        rule = article_inference_rule(P) if sc.get("weights", "bf16") in ("bf16", "fp16") else \
            article_quantized_rule(P, {"int8": 8, "int4": 4, "nf4": 4, "fp32": 32, "fp8": 8}[sc["weights"]])
        rule2 = rule
    return {"estimate": b.peak, "phase": b.peak_phase, "components": b.components, "rule": rule, "rule2": rule2}


def add_errors(row: dict[str, Any]) -> dict[str, Any]:
    """Relative errors of the estimate and of the two rules against the measured peak.
    Defined in Part I, "The calculator"."""
    for key, value in (("err", "estimate"), ("rule_err", "rule"), ("rule2_err", "rule2")):
        row[key] = (row[value] - row["peak"]) / row["peak"]
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median and largest |error| of the estimate and of the rules, per split and kind, over
    the measured rows.  Defined in Part I, "The calculator"."""
    ok = [add_errors(r) for r in rows if "peak" in r]
    summary = {}
    for split in ("tuning", "held-out", "fresh"):
        for kind in ("train", "generate"):
            sel = [r for r in ok if r["split"] == split and r["kind"] == kind]
            if not sel:
                continue
            e = [abs(r["err"]) for r in sel]
            re_ = [abs(r["rule_err"]) for r in sel]
            r2 = [abs(r["rule2_err"]) for r in sel]
            summary[f"{split}/{kind}"] = {"n": len(sel), "median_abs_err": statistics.median(e), "max_abs_err": max(e),
                                          "rule_median_abs_err": statistics.median(re_), "rule_max_abs_err": max(re_),
                                          "rule2_median_abs_err": statistics.median(r2), "rule2_max_abs_err": max(r2)}
    return summary

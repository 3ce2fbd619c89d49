"""The source article's rules of thumb (claims A6, A7, A9, A11 of ``SOURCES.md``) as named
functions, so chapters can put them beside the component-by-component estimate.

Defined in Part I, "Anatomy of memory" (A6, A7) and Part I, "Inference" (A9, A11).
"""

from __future__ import annotations

from typing import Any

__all__ = ["article_training_rule", "article_simple_rule", "article_inference_rule", "article_quantized_rule"]


def _n(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0:
        raise ValueError(f"{what} must be a number ≥ 0; got {x!r}")
    return float(x)


def _params(model: Any) -> float:
    if isinstance(model, (int, float)) and not isinstance(model, bool):
        return _n(model, "parameter count")
    from . import num_params

    return float(num_params(model))


def article_training_rule(params: Any, batch: int, activations_per_sample: float) -> float:
    """A6: ``(P + B·A + P + 2P) × 4`` bytes — weights, activations, gradients and Adam's two
    moments, all fp32.  ``activations_per_sample`` is the article's A (elements per sample).

    Defined in Part I, "Anatomy of memory"."""
    P = _params(params)
    return (P + _n(batch, "batch") * _n(activations_per_sample, "activations_per_sample") + P + 2 * P) * 4


def article_simple_rule(params: Any, batch: int) -> float:
    """A7: about ``4 × batch × P`` bytes.  Defined in Part I, "Anatomy of memory"."""
    return 4 * _n(batch, "batch") * _params(params)


def article_inference_rule(params: Any) -> float:
    """A9: ``P × 2`` bytes (16-bit weights), e.g. 7B → 14 GB.  Defined in Part I, "Inference"."""
    return 2 * _params(params)


def article_quantized_rule(params: Any, bits: int) -> float:
    """A11: ``P × bits / 8`` bytes, e.g. 7B in INT4 → 3.5 GB.  Defined in Part I, "Inference"."""
    if bits not in (4, 8, 16, 32):
        raise ValueError(f"bits must be 4, 8, 16 or 32; got {bits!r}")
    return quantized_bytes(params, bits)


def quantized_bytes(params: Any, bits: float) -> float:
    """The A11 formula without the check on ``bits``: ``P × bits / 8`` bytes (no scales).
    :func:`vramlib.measure.stagemem.rule_a11` uses it for 3- and 2-bit weights too.
    Defined in Part I, "Inference"."""
    return _params(params) * bits / 8

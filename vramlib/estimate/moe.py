"""Mixture-of-experts memory, in arithmetic (no torch): resident vs active parameters, the
router's and the dispatch's buffers, expert capacity, expert parallelism, and the saved
activations of the book's small MoE layer (:class:`vramlib.measure.serving.MoEMLP`).

Derived in Part I, "Mixture-of-experts memory".  The dense estimator already counts every
expert's parameters and the router (:func:`~vramlib.estimate.params.count_params`); what it
does not yet model — capacity, dispatch buffers, router activations, expert-parallel sharding —
lives here.
"""

from __future__ import annotations

import math
from typing import Any

from .config import load_model_config
from .params import count_params

__all__ = ["moe_params", "expert_capacity", "router_bytes", "dispatch_bytes",
           "expert_parallel_bytes", "moe_mlp_saved_bytes", "moe_prefill_transient_bytes"]


def _pos_int(v: Any, what: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{what} must be an integer ≥ {minimum}; got {v!r}")
    return v


def moe_params(model: Any) -> dict[str, int]:
    """``resident`` (every expert: what must sit in memory), ``active`` (what one token
    touches: shared parts + ``k`` experts + router), ``expert`` (one expert of one layer) and
    ``experts`` (all experts of all layers).  Defined in Part I, "Mixture-of-experts memory",
    section "Resident and active parameters"."""
    spec = load_model_config(model)
    pc = count_params(spec)
    router = spec.hidden_size * spec.num_experts if spec.num_experts > 1 else 0
    # Qwen-MoE's shared expert (and its gate) is part of the MLP but no routed expert
    one = (pc.mlp_per_layer - router - pc.shared_mlp_per_layer) // spec.num_experts
    return {"resident": pc.total, "active": pc.active, "expert": one,
            "experts": spec.num_layers * spec.num_experts * one, "router": spec.num_layers * router,
            "shared": spec.num_layers * pc.shared_mlp_per_layer}


def expert_capacity(tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """Slots per expert in a fixed-capacity dispatch (GShard, Switch):
    ``C = ⌈capacity_factor · tokens · k / E⌉``.  Tokens routed beyond ``C`` are dropped.
    Defined in Part I, "Mixture-of-experts memory", section "Capacity factor"."""
    _pos_int(tokens, "tokens")
    _pos_int(num_experts, "num_experts")
    _pos_int(top_k, "top_k")
    if top_k > num_experts:
        raise ValueError(f"top_k ({top_k}) cannot exceed num_experts ({num_experts})")
    if isinstance(capacity_factor, bool) or not isinstance(capacity_factor, (int, float)) or capacity_factor <= 0:
        raise ValueError(f"capacity_factor must be a positive number; got {capacity_factor!r}")
    return math.ceil(capacity_factor * tokens * top_k / num_experts - 1e-9)


def router_bytes(tokens: int, num_experts: int, top_k: int, bytes_per_elem: float = 4) -> float:
    """The router's tensors for ``tokens`` tokens: logits and probabilities (``N × E`` each),
    top-k weights (``N × k``) and int64 expert indices (``N × k × 8``).  Defined in Part I,
    "Mixture-of-experts memory", section "Router and dispatch buffers"."""
    _pos_int(tokens, "tokens")
    return tokens * (2 * num_experts * bytes_per_elem + top_k * bytes_per_elem + top_k * 8)


def dispatch_bytes(tokens: int, hidden: int, num_experts: int, top_k: int,
                   capacity_factor: float | None = None, bytes_per_elem: float = 2) -> float:
    """Dispatch + combine buffers of one MoE layer: a dropless dispatch (``capacity_factor``
    ``None``) copies each token once per chosen expert, ``2 · N · k · d``; a fixed-capacity one
    allocates ``2 · E · C · d`` whatever the routing (padding included).  Defined in Part I,
    "Mixture-of-experts memory", section "Router and dispatch buffers"."""
    _pos_int(hidden, "hidden")
    if capacity_factor is None:
        _pos_int(tokens, "tokens")
        return 2.0 * tokens * top_k * hidden * bytes_per_elem
    c = expert_capacity(tokens, num_experts, top_k, capacity_factor)
    return 2.0 * num_experts * c * hidden * bytes_per_elem


def expert_parallel_bytes(model: Any, ep: int, bytes_per_param: float = 2) -> dict[str, float]:
    """Weight bytes per GPU with expert parallelism of degree ``ep``: every GPU keeps the
    non-expert parameters (attention, embeddings, router, norms) and ``E / ep`` experts of each
    layer.  Defined in Part I, "Mixture-of-experts memory", section "Expert parallelism"."""
    spec = load_model_config(model)
    _pos_int(ep, "ep")
    if spec.num_experts % ep:
        raise ValueError(f"ep ({ep}) must divide num_experts ({spec.num_experts})")
    p = moe_params(spec)
    shared = p["resident"] - p["experts"]
    per_gpu = shared + p["experts"] / ep
    return {"shared": shared * bytes_per_param, "experts": p["experts"] / ep * bytes_per_param,
            "per_gpu": per_gpu * bytes_per_param}


def moe_mlp_saved_bytes(tokens: int, hidden: int, ffn: int, num_experts: int, top_k: int,
                        bytes_per_elem: float = 4, routed: int | None = None) -> int:
    """Bytes :class:`vramlib.measure.serving.MoEMLP` saves for backward (dropless, plain GELU experts),
    from its code: router probabilities ``N·E`` (softmax output), top-k weights and their sum,
    int64 top-k indices; per routed token-expert pair (``R = N·k`` unless tokens were dropped):
    its input row ``d``, the expert's ``fc`` output and GELU output ``2·f``, its output ``d``
    (saved by the gate multiplication), the weighted output ``d`` (kept by ``index_add``'s
    backward), its gate weight (1) and two int64 indices (token and slot).  Defined in Part I,
    "Mixture-of-experts memory", section "A small MoE, measured"."""
    _pos_int(tokens, "tokens")
    R = tokens * top_k if routed is None else routed
    b = bytes_per_elem
    router = tokens * num_experts * b + tokens * top_k * b + tokens * b + tokens * top_k * 8
    per_pair = (3 * hidden + 2 * ffn + 1) * b + 2 * 8
    return int(router + R * per_pair)


def moe_prefill_transient_bytes(batch: int, seq: int, hidden: int, ffn: int, num_experts: int,
                                top_k: int, max_count: int, bytes_per_elem: float = 4) -> int:
    """Peak above weights and cache of a no-grad prefill of the book's GPT with
    :class:`vramlib.measure.serving.MoEMLP` blocks (``N = batch · seq``), the larger of two moments:
    **attention** — residual, LayerNorm output, qkv output (``3·N·d``), attention output and
    projection (``7·N·d`` in all, plus the int64 positions); **MoE** — residual, LayerNorm
    output and the combined output (``3·N·d``), router probabilities ``N·E``, top-k weights
    before and after renormalising, int64 indices, and the busiest expert's ``max_count``
    tokens: their two int64 indices, and either their input row, ``fc`` and GELU outputs
    (``d + 2·f``) or, at the combine, their input row, output and weighted output (``3·d``)
    plus the new combined output ``N·d``.
    ``max_count`` comes from the router (``MoEMLP.last_counts``).  Defined in Part I,
    "Mixture-of-experts memory", section "A small MoE, measured"."""
    for what, v in (("batch", batch), ("seq", seq), ("max_count", max_count)):
        _pos_int(v, what, 0 if what == "max_count" else 1)
    N, b = batch * seq, bytes_per_elem
    attention = 7 * N * hidden * b + 8 * seq
    base = (3 * N * hidden + N * num_experts + 2 * N * top_k) * b + N * top_k * 8 + max_count * 2 * 8
    expert = max_count * (hidden + 2 * ffn) * b
    combine = N * hidden * b + max_count * 3 * hidden * b
    return int(max(attention, base + max(expert, combine)))

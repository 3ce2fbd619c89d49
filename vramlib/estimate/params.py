"""Exact parameter counts from a :class:`~vramlib.estimate.config.ModelSpec`.

Counts equal ``sum(p.numel() for p in model.parameters())`` of the real torch modules
(tied embeddings counted once): the book's GPT and the Hugging Face classes of every family
in :data:`~vramlib.estimate.config.FAMILIES` (checked in ``tests/test_estimate_params.py``).

Defined in Part I, "Anatomy of memory".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .config import ModelSpec

__all__ = ["ParamCount", "count_params"]


@dataclass(frozen=True)
class ParamCount:
    """Parameters by part.  ``per_layer`` is one decoder block (all experts included);
    ``linear_per_layer`` the matrices (+ biases) of one block that a LoRA/quantizer touches;
    ``active_per_layer`` counts only the experts a token uses (MoE); ``shared_mlp_per_layer``
    is the part of ``mlp_per_layer`` every token uses besides the router (Qwen-MoE's shared
    expert and its gate)."""

    embedding: int
    position: int
    per_layer: int
    attention_per_layer: int
    mlp_per_layer: int
    norms_per_layer: int
    final_norm: int
    lm_head: int
    num_layers: int
    active_mlp_per_layer: int
    shared_mlp_per_layer: int = 0

    @property
    def total(self) -> int:
        return (self.embedding + self.position + self.num_layers * self.per_layer + self.final_norm
                + self.lm_head)

    @property
    def active(self) -> int:
        """Parameters that touch one token (MoE: only the routed experts)."""
        return self.total - self.num_layers * (self.mlp_per_layer - self.active_mlp_per_layer)

    @property
    def linear_weights(self) -> int:
        """Elements of the decoder blocks' weight matrices (what quantization compresses)."""
        return self.num_layers * (self.attention_per_layer + self.mlp_per_layer)


@lru_cache(maxsize=256)
def count_params(spec: ModelSpec) -> ParamCount:
    """Exact parameter count by part.  Defined in Part I, "Anatomy of memory"."""
    d, kv, q = spec.hidden_size, spec.kv_dim, spec.q_dim
    attn = d * q + 2 * d * kv + q * d
    if spec.qkv_bias:
        attn += q + 2 * kv
    if spec.o_bias:
        attn += d
    I = spec.intermediate_size
    if spec.mlp == "gated":
        one = 3 * d * I + ((2 * I + d) if spec.mlp_bias else 0)
    else:
        one = 2 * d * I + ((I + d) if spec.mlp_bias else 0)
    router = d * spec.num_experts if spec.num_experts > 1 else 0
    S = spec.shared_expert_size                          # Qwen-MoE: shared expert + its gate d → 1
    shared = 3 * d * S + d if S else 0
    mlp = spec.num_experts * one + router + shared
    active_mlp = spec.experts_per_token * one + router + shared
    norm = d * (2 if (spec.norm == "layernorm" and spec.norm_bias) else 1)
    norms = spec.norms_per_layer * norm
    emb = spec.vocab_size * d
    pos = spec.max_position_embeddings * d if spec.position == "learned" else 0
    head = 0 if spec.tie_embeddings else spec.vocab_size * d + (spec.vocab_size if spec.lm_head_bias else 0)
    return ParamCount(embedding=emb, position=pos, per_layer=attn + mlp + norms, attention_per_layer=attn,
                      mlp_per_layer=mlp, norms_per_layer=norms, final_norm=norm, lm_head=head,
                      num_layers=spec.num_layers, active_mlp_per_layer=active_mlp, shared_mlp_per_layer=shared)

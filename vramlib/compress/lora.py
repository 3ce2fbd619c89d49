"""LoRA, small: a low-rank adapter around a frozen linear layer (Hu et al., 2022).

``LoRALinear(base, rank)`` computes ``base(x) + (alpha / rank) · x Aᵀ Bᵀ`` with
``A ∈ R^{r × d_in}`` (random) and ``B ∈ R^{d_out × r}`` (zeros, so training starts from the
base model).  Only ``A`` and ``B`` train: ``r · (d_in + d_out)`` parameters per adapted matrix.
The base may be an ``nn.Linear`` or a 4-bit :class:`vramlib.compress.qstore.Linear4bit` (QLoRA).
:meth:`LoRALinear.delta_weight` and :meth:`LoRALinear.merged` give the update ``ΔW = (alpha/rank)·B·A``
and a plain ``nn.Linear`` with ``W + ΔW``; Part II's :func:`vramlib.compress.lowrank.add_lora` builds on
this same class.

Defined in Part I, "Fine-tuning".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
import torch.nn as nn

from ..core.surgery import replace_linears

__all__ = ["LoRALinear", "apply_lora", "lora_param_count", "trainable_params"]


class LoRALinear(nn.Module):
    """A frozen ``base`` linear layer plus a trainable rank-``rank`` update.

    Defined in Part I, "Fine-tuning"."""

    def __init__(self, base: nn.Module, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if not hasattr(base, "in_features") or not hasattr(base, "out_features"):
            raise TypeError(f"LoRALinear wraps a linear layer (nn.Linear or Linear4bit), got {type(base).__name__}")
        if rank > min(base.in_features, base.out_features):
            raise ValueError(f"rank must be an integer in [1, {min(base.in_features, base.out_features)}], got {rank!r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.scaling = (alpha if alpha is not None else rank) / rank
        ref = next(iter(base.parameters()), None)
        if ref is None:
            ref = next(b for b in base.buffers() if b is not None and b.is_floating_point())
        dev, dt = ref.device, ref.dtype if ref.is_floating_point() else torch.float32
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha/rank) · B @ A`` (out × in), of rank at most ``rank``.

        Defined in Part II, "Low-rank factorization", section "The LoRA connection"."""
        return self.scaling * self.lora_B @ self.lora_A

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with ``W + ΔW`` (trainable again): no extra cost at inference.
        Needs an ``nn.Linear`` base (a 4-bit base would have to be re-quantized).

        Defined in Part II, "Low-rank factorization", section "The LoRA connection"."""
        if not isinstance(self.base, nn.Linear):
            raise TypeError(f"merged() needs an nn.Linear base, got {type(self.base).__name__}")
        lin = copy.deepcopy(self.base)
        with torch.no_grad():
            lin.weight.add_(self.delta_weight().to(lin.weight.dtype))
        for p in lin.parameters():
            p.requires_grad_(True)
        return lin


def lora_param_count(shapes: Iterable[tuple[int, int]], rank: int) -> int:
    """Reference formula: ``Σ r · (d_in + d_out)`` over the adapted ``(d_out, d_in)`` matrices.

    Defined in Part I, "Fine-tuning"."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    return sum(rank * (d_in + d_out) for d_out, d_in in shapes)


def trainable_params(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (shared ones once).  Defined in Part I, "Fine-tuning"."""
    seen, n = set(), 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def apply_lora(model: nn.Module, rank: int, targets: Iterable[str] = ("qkv", "proj", "fc"),
               alpha: float | None = None) -> list[str]:
    """Freeze every parameter of ``model``, then wrap each linear layer whose name ends in one
    of ``targets`` (e.g. ``"qkv"`` matches ``blocks.0.attn.qkv``) in a :class:`LoRALinear`.

    Returns the wrapped module names; raises ``ValueError`` if no layer matched.
    Defined in Part I, "Fine-tuning"."""
    targets = tuple(targets)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"targets must be non-empty module-name suffixes, got {targets!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    done = replace_linears(model, lambda lin: LoRALinear(lin, rank, alpha), targets,
                           is_linear=lambda m: hasattr(m, "in_features")
                           and not isinstance(m, LoRALinear))
    if not done:
        raise ValueError(f"no linear layer's name ends in any of {targets}")
    return done

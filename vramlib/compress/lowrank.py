"""Low-rank factorization: replace a weight ``W`` (out × in) by ``U_r · V_r`` (out × r, r × in),
two thinner ``nn.Linear`` layers, from its truncated SVD.

Eckart–Young: the truncated SVD is the best rank-``r`` approximation, with Frobenius error
``sqrt(σ_{r+1}² + … )`` and spectral error ``σ_{r+1}``.  It pays off in parameters and
FLOPs only when ``r · (in + out) < in · out``, i.e. ``r < in·out / (in + out)``.

:func:`add_lora` applies the same idea to the *change* of a weight; its layer is Part I's
:class:`vramlib.compress.lora.LoRALinear` (re-exported here), the book's one LoRA implementation.

Defined in Part II, "Low-rank factorization".
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn

from ..core.surgery import replace_linears
from .lora import LoRALinear  # the one LoRA layer (Part I, "Fine-tuning"); re-exported here

__all__ = ["spectrum", "energy", "rank_for_energy", "rank_for_param_ratio", "truncation_error",
           "lowrank_params", "lowrank_flops", "breakeven_rank", "LowRankLinear", "factorize_linear",
           "factorize_model", "LoRALinear", "add_lora"]


def _check_weight(w: torch.Tensor) -> torch.Tensor:
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise ValueError(f"expected a 2-D weight matrix, got {getattr(w, 'shape', type(w).__name__)}")
    return w.detach().float()


def spectrum(weight: torch.Tensor) -> torch.Tensor:
    """Singular values of a 2-D weight, largest first (``torch.linalg.svdvals``), as an fp32
    tensor on the CPU whatever the weight's device: a spectrum is a short vector that
    chapters plot and tabulate (matplotlib cannot read a CUDA tensor).

    Defined in Part II, "Low-rank factorization", section "Spectra of trained weights".
    """
    return torch.linalg.svdvals(_check_weight(weight).float()).cpu()


def energy(S: torch.Tensor) -> torch.Tensor:
    """Cumulative fraction of ``Σ σ²`` (the squared Frobenius norm) in the first r singular
    values, for r = 1 … len(S).  Defined in Part II, "Low-rank factorization"."""
    e = S.double().pow(2).cumsum(0)
    return (e / e[-1]).float()


def rank_for_energy(S: torch.Tensor, threshold: float) -> int:
    """Smallest rank whose singular values hold at least ``threshold`` of ``Σ σ²``.

    Defined in Part II, "Low-rank factorization", section "Spectra of trained weights".
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    return min(int((energy(S) < threshold - 1e-7).sum()) + 1, S.numel())


def lowrank_params(n_out: int, n_in: int, rank: int, bias: bool = False) -> int:
    """Parameters of the factored layer: ``rank · (n_in + n_out)`` (+ ``n_out`` bias).

    Defined in Part II, "Low-rank factorization", section "Parameters, FLOPs and the break-even rank"."""
    return rank * (n_in + n_out) + (n_out if bias else 0)


def lowrank_flops(n_out: int, n_in: int, rank: int | None, tokens: int = 1) -> int:
    """Multiply-add FLOPs (2 per MAC) for ``tokens`` inputs: ``2·tokens·rank·(n_in+n_out)``,
    or ``2·tokens·n_in·n_out`` dense (``rank=None``).  Defined in Part II, "Low-rank factorization"."""
    if rank is None:
        return 2 * tokens * n_in * n_out
    return 2 * tokens * rank * (n_in + n_out)


def breakeven_rank(n_out: int, n_in: int) -> float:
    """``n_in · n_out / (n_in + n_out)``: below this rank the factored layer is smaller.

    Defined in Part II, "Low-rank factorization", section "Parameters, FLOPs and the break-even rank"."""
    return n_in * n_out / (n_in + n_out)


def rank_for_param_ratio(n_out: int, n_in: int, ratio: float) -> int:
    """Largest rank whose factored weights hold at most ``ratio`` of the dense ``n_out·n_in``.

    Defined in Part II, "Low-rank factorization", section "Parameters, FLOPs and the break-even rank"."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    return max(1, int(ratio * n_in * n_out // (n_in + n_out)))


def truncation_error(S: torch.Tensor, rank: int) -> tuple[float, float]:
    """Eckart–Young: ``(‖W − W_r‖_F, ‖W − W_r‖_2) = (sqrt(Σ_{i>r} σ_i²), σ_{r+1})``.

    Defined in Part II, "Low-rank factorization", section "Eckart–Young: the best rank-$r$ approximation"."""
    if not 0 <= rank <= S.numel():
        raise ValueError(f"rank must be in [0, {S.numel()}], got {rank!r}")
    tail = S[rank:].double()
    return float(tail.pow(2).sum().sqrt()), float(tail[0]) if tail.numel() else 0.0


class LowRankLinear(nn.Module):
    """``x ↦ up(down(x))`` with ``down: in → rank`` (no bias) and ``up: rank → out`` (the
    original bias).  Defined in Part II, "Low-rank factorization", section "Eckart–Young: the best rank-$r$ approximation"."""

    def __init__(self, n_in: int, n_out: int, rank: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        self.down = nn.Linear(n_in, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, n_out, bias=bias, device=device, dtype=dtype)

    @property
    def rank(self) -> int:
        return self.down.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def factorize_linear(linear: nn.Linear, rank: int | None = None, energy_threshold: float | None = None,
                     method: str = "svd") -> LowRankLinear:
    """Factor ``linear`` into a :class:`LowRankLinear` from the truncated SVD
    ``W ≈ (U_r √Σ_r)(√Σ_r V_rᵀ)`` (the singular values split evenly between the two factors).
    Give ``rank`` or ``energy_threshold``.  ``method="svd"`` uses ``torch.linalg.svd``;
    ``"lowrank"`` the randomized ``torch.svd_lowrank`` (faster for large matrices, approximate).

    Defined in Part II, "Low-rank factorization", section "Eckart–Young: the best rank-$r$ approximation".
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
    if (rank is None) == (energy_threshold is None):
        raise ValueError("give exactly one of rank or energy_threshold")
    W = linear.weight.detach().float()
    if method == "svd":
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    elif method == "lowrank":
        if rank is None:
            raise ValueError("method='lowrank' needs an explicit rank")
        U, S, V = torch.svd_lowrank(W, q=min(rank + 8, min(W.shape)), niter=4)
        Vh = V.T
    else:
        raise ValueError(f"method must be 'svd' or 'lowrank', got {method!r}")
    if rank is None:
        rank = rank_for_energy(S, energy_threshold)
    if not 1 <= rank <= min(W.shape):
        raise ValueError(f"rank must be in [1, {min(W.shape)}], got {rank!r}")
    root = S[:rank].sqrt()
    out = LowRankLinear(linear.in_features, linear.out_features, rank, bias=linear.bias is not None,
                        device=W.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        out.down.weight.copy_(root[:, None] * Vh[:rank])
        out.up.weight.copy_(U[:, :rank] * root[None, :])
        if linear.bias is not None:
            out.up.bias.copy_(linear.bias.detach())
    return out


def _swap_named(model: nn.Module, names: Sequence[str], factory, freeze: bool = False) -> nn.Module:
    """A copy of ``model`` (all parameters frozen if ``freeze``) with each ``nn.Linear`` named
    in ``names`` replaced by ``factory(layer)``."""
    new = copy.deepcopy(model)
    for p in new.parameters() if freeze else ():
        p.requires_grad_(False)
    names = list(names)
    done = replace_linears(new, factory, targets=names)
    for name in names:
        if name not in done:
            raise ValueError(f"{name!r} is not an nn.Linear of the model")
    return new


def factorize_model(model: nn.Module, names: Sequence[str], rank: int | None = None,
                    param_ratio: float | None = None, energy_threshold: float | None = None) -> nn.Module:
    """A copy of ``model`` with each ``nn.Linear`` named in ``names`` replaced by a
    :class:`LowRankLinear`, its rank given directly, as a fraction of the dense parameters
    (``param_ratio``, via :func:`rank_for_param_ratio`) or by ``energy_threshold``.

    Defined in Part II, "Low-rank factorization", section "Rank sweep: parameters and FLOPs against quality".
    """
    if sum(x is not None for x in (rank, param_ratio, energy_threshold)) != 1:
        raise ValueError("give exactly one of rank, param_ratio or energy_threshold")
    def factorize(lin: nn.Linear) -> LowRankLinear:
        r = rank
        if param_ratio is not None:
            r = rank_for_param_ratio(lin.out_features, lin.in_features, param_ratio)
        return factorize_linear(lin, rank=r, energy_threshold=energy_threshold)

    return _swap_named(model, names, factorize)


def add_lora(model: nn.Module, names: Sequence[str], rank: int, alpha: float = 1.0) -> nn.Module:
    """A copy of ``model`` with every parameter frozen and each ``nn.Linear`` in ``names``
    wrapped in a :class:`~vramlib.compress.lora.LoRALinear` (Part I's class): only the adapters train.
    The update ``(alpha/rank)·B·A`` has the parameter count of a :class:`LowRankLinear` of that
    rank: low-rank factorization applied to the *change* of a weight rather than to the weight.

    Defined in Part II, "Low-rank factorization", section "The LoRA connection".
    """
    return _swap_named(model, names, lambda lin: LoRALinear(lin, rank, alpha), freeze=True)

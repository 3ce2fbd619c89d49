"""Pruning: remove weights (unstructured), whole neurons/heads (structured), or 2 of every 4
(semi-structured 2:4) — and measure what each one really saves.

The masks are computed here, in a few readable lines, and checked against
``torch.nn.utils.prune`` (same ``topk`` rule, hence the same masks); they are *applied* with
torch's own ``prune.custom_from_mask`` so that fine-tuning keeps pruned weights at zero.
Structured pruning builds new, physically smaller ``nn.Linear`` layers: that is the only
kind of pruning here that makes a dense model smaller and faster without sparse kernels.

Defined in Part II, "Pruning".
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import prune as tprune

__all__ = [
    "prunable_linears", "magnitude_mask", "channel_mask", "nm_mask", "is_nm_sparse",
    "layerwise_masks", "global_masks", "apply_masks", "remove_masks", "sparsity",
    "model_sparsity", "sensitivity_scan", "iterative_prune", "polynomial_schedule",
    "neuron_importance", "shrink_mlp", "shrink_sequential", "prune_gpt_mlp", "PrunedSelfAttention", "head_importance",
    "prune_heads", "prune_gpt_heads", "checkpoint_bytes", "sparse_storage_bytes",
    "to_semi_structured",
]


# -- which layers --------------------------------------------------------------------

def prunable_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` layers of ``model`` worth pruning: all of them except those whose
    weight is shared with an embedding (a tied LM head is pruned, if at all, as the embedding).

    Defined in Part II, "Pruning", section "Unstructured magnitude pruning".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and id(m.weight) not in tied]


def _check_fraction(name: str, x: float, allow_one: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1{']' if allow_one else ')'}, got {x!r}")
    if not (0.0 <= x <= 1.0 if allow_one else 0.0 <= x < 1.0):
        raise ValueError(f"{name} must be in [0, 1{']' if allow_one else ')'}, got {x!r}")
    return float(x)


# -- masks ---------------------------------------------------------------------------

def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask (``True`` = keep) that zeroes the ``round(sparsity · numel)`` smallest-|w|
    entries — the rule of ``torch.nn.utils.prune.l1_unstructured``.

    Defined in Part II, "Pruning", section "Unstructured magnitude pruning".
    """
    sparsity = _check_fraction("sparsity", sparsity, allow_one=True)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a tensor, got {type(weight).__name__}")
    k = round(sparsity * weight.numel())
    mask = torch.ones_like(weight, dtype=torch.bool)
    if k:
        idx = torch.topk(weight.detach().abs().flatten(), k, largest=False).indices
        mask.view(-1)[idx] = False
    return mask


def channel_mask(weight: torch.Tensor, amount: float, n: float = 2, dim: int = 0) -> torch.Tensor:
    """Keep-mask that removes the ``round(amount · size(dim))`` slices along ``dim`` with the
    smallest L``n`` norm — the rule of ``torch.nn.utils.prune.ln_structured``.

    Defined in Part II, "Pruning", section "Structured pruning: really smaller, really faster".
    """
    amount = _check_fraction("amount", amount, allow_one=True)
    if weight.dim() < 2:
        raise ValueError(f"channel_mask needs a weight with >= 2 dims, got shape {tuple(weight.shape)}")
    dim = dim % weight.dim()
    other = [d for d in range(weight.dim()) if d != dim]
    norms = torch.linalg.vector_norm(weight.detach(), ord=n, dim=other)
    k_keep = weight.shape[dim] - round(amount * weight.shape[dim])
    keep = torch.zeros(weight.shape[dim], dtype=torch.bool, device=weight.device)
    if k_keep:
        keep[torch.topk(norms, k_keep).indices] = True
    shape = [1] * weight.dim()
    shape[dim] = -1
    return keep.view(shape).expand_as(weight).clone()


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """N:M semi-structured keep-mask: in every group of ``m`` consecutive weights along the
    input dimension (the last), keep the ``n`` largest in magnitude.  2:4 is the pattern
    NVIDIA's sparse tensor cores run at twice the dense rate.

    Defined in Part II, "Pruning", section "2:4 semi-structured sparsity".
    """
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n <= m):
        raise ValueError(f"need integers 0 < n <= m, got n={n!r}, m={m!r}")
    if weight.shape[-1] % m:
        raise ValueError(f"the last dimension ({weight.shape[-1]}) must be a multiple of m={m}")
    groups = weight.detach().abs().reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
    return keep.reshape(weight.shape)


def is_nm_sparse(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """``True`` when every group of ``m`` consecutive weights along the last dimension has at
    most ``n`` non-zeros.  Defined in Part II, "Pruning", section "2:4 semi-structured sparsity"."""
    if weight.shape[-1] % m:
        return False
    return bool(((weight.reshape(-1, m) != 0).sum(dim=1) <= n).all())


def layerwise_masks(model: nn.Module, sparsity: float,
                    layers: Sequence[tuple[str, nn.Linear]] | None = None) -> dict[str, torch.Tensor]:
    """One :func:`magnitude_mask` per layer, each at the same ``sparsity``.

    Defined in Part II, "Pruning", section "One shot: layer-wise against global".
    """
    layers = prunable_linears(model) if layers is None else layers
    return {name: magnitude_mask(m.weight, sparsity) for name, m in layers}


def global_masks(model: nn.Module, sparsity: float,
                 layers: Sequence[tuple[str, nn.Linear]] | None = None) -> dict[str, torch.Tensor]:
    """Masks from one magnitude threshold over all layers together (the rule of
    ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``): layers with small
    weights lose more.  Defined in Part II, "Pruning", section "One shot: layer-wise against global".
    """
    sparsity = _check_fraction("sparsity", sparsity, allow_one=True)
    layers = prunable_linears(model) if layers is None else layers
    if not layers:
        raise ValueError("no layers to prune")
    scores = torch.cat([m.weight.detach().abs().flatten() for _, m in layers])
    k = round(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep[torch.topk(scores, k, largest=False).indices] = False
    out, i = {}, 0
    for name, m in layers:
        n = m.weight.numel()
        out[name] = keep[i:i + n].view_as(m.weight).clone()
        i += n
    return out


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Apply keep-masks with torch's ``prune.custom_from_mask`` (which stores ``weight_orig``
    and ``weight_mask`` and recomputes ``weight = weight_orig · mask`` before each forward, so
    pruned weights stay zero while fine-tuning).  Masks stack with earlier ones.  Returns
    ``model``.  Defined in Part II, "Pruning", section "Unstructured magnitude pruning".
    """
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        if name not in modules:
            raise ValueError(f"model has no module named {name!r}")
        m = modules[name]
        if mask.shape != m.weight.shape:
            raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, weight {tuple(m.weight.shape)}")
        tprune.custom_from_mask(m, "weight", mask.to(m.weight.device))
    return model


def remove_masks(model: nn.Module) -> nn.Module:
    """Make pruning permanent: fold every mask into a plain ``weight`` (``prune.remove``).
    The weight stays a dense tensor full of zeros.  Defined in Part II, "Pruning"."""
    for m in model.modules():
        if tprune.is_pruned(m) and hasattr(m, "weight_mask"):
            tprune.remove(m, "weight")
    return model


def sparsity(t: torch.Tensor) -> float:
    """Fraction of exact zeros in a tensor.  Defined in Part II, "Pruning"."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(t).__name__}")
    return float((t == 0).sum()) / max(t.numel(), 1)


def model_sparsity(model: nn.Module, layers: Sequence[tuple[str, nn.Linear]] | None = None) -> float:
    """Fraction of zeros over the weights of the prunable layers (``prunable_linears``).

    Defined in Part II, "Pruning"."""
    layers = prunable_linears(model) if layers is None else layers
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / max(sum(m.weight.numel() for _, m in layers), 1)


# -- sensitivity and the iterative loop ----------------------------------------------

@torch.no_grad()
def sensitivity_scan(model: nn.Module, evaluate: Callable[[nn.Module], float],
                     sparsities: Iterable[float],
                     layers: Sequence[str] | None = None) -> dict[str, list[float]]:
    """Prune one layer at a time (magnitude, each sparsity in turn), evaluate, restore.
    Returns ``{layer name: [metric at each sparsity]}``.  The model is left unchanged.

    Defined in Part II, "Pruning", section "Sensitivity scan".
    """
    sparsities = [_check_fraction("sparsity", s, allow_one=True) for s in sparsities]
    named = dict(prunable_linears(model))
    names = list(named) if layers is None else list(layers)
    out: dict[str, list[float]] = {}
    for name in names:
        if name not in named:
            raise ValueError(f"{name!r} is not a prunable layer; choose from {list(named)}")
        w = named[name].weight
        saved = w.detach().clone()
        out[name] = []
        for s in sparsities:
            w.mul_(magnitude_mask(saved, s))
            out[name].append(float(evaluate(model)))
            w.copy_(saved)
    return out


def polynomial_schedule(final: float, steps: int, power: float = 3.0) -> list[float]:
    """Sparsity after each of ``steps`` prune rounds, rising fast then slowly:
    ``s_t = final · (1 − (1 − t/steps)^power)`` (Zhu & Gupta's gradual schedule).

    Defined in Part II, "Pruning", section "Iterative prune and fine-tune".
    """
    final = _check_fraction("final", final, allow_one=True)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return [final * (1 - (1 - t / steps) ** power) for t in range(1, steps + 1)]


def iterative_prune(model: nn.Module, final_sparsity: float, rounds: int,
                    finetune: Callable[[nn.Module], None], evaluate: Callable[[nn.Module], float] | None = None,
                    scope: str = "global", power: float = 3.0) -> list[dict]:
    """Prune in ``rounds`` steps along :func:`polynomial_schedule`, calling ``finetune(model)``
    after each (masks held fixed by ``prune``'s hooks).  Masks are recomputed from the
    current surviving weights each round, so pruned weights stay pruned.  Returns one row
    per round: ``{"round", "sparsity", "metric"}``; the masks are made permanent at the end.

    Defined in Part II, "Pruning", section "Iterative prune and fine-tune".
    """
    if scope not in ("global", "layerwise"):
        raise ValueError(f"scope must be 'global' or 'layerwise', got {scope!r}")
    layers = prunable_linears(model)
    names = [n for n, _ in layers]
    history = []
    for r, s in enumerate(polynomial_schedule(final_sparsity, rounds, power), start=1):
        remove_masks(model)   # fold the previous masks in; zeros are the smallest magnitudes
        layers = [(n, dict(model.named_modules())[n]) for n in names]
        masks = global_masks(model, s, layers) if scope == "global" else layerwise_masks(model, s, layers)
        apply_masks(model, masks)
        finetune(model)
        row = {"round": r, "sparsity": model_sparsity(model, layers)}
        if evaluate is not None:
            row["metric"] = float(evaluate(model))
        history.append(row)
    remove_masks(model)
    return history


# -- structured pruning: physically smaller layers ------------------------------------

def neuron_importance(fc: nn.Linear, proj: nn.Linear) -> torch.Tensor:
    """Score of each hidden neuron of an ``fc → activation → proj`` MLP: the L2 norm of its
    incoming row of ``fc`` times the L2 norm of its outgoing column of ``proj``.

    Defined in Part II, "Pruning", section "Structured pruning: really smaller, really faster".
    """
    if fc.out_features != proj.in_features:
        raise ValueError(f"fc.out_features ({fc.out_features}) != proj.in_features ({proj.in_features})")
    w_in = fc.weight.detach()
    if fc.bias is not None:
        w_in = torch.cat([w_in, fc.bias.detach()[:, None]], dim=1)
    return w_in.norm(dim=1) * proj.weight.detach().norm(dim=0)


def _sub_linear(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = lin.weight.detach()
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach() if rows is None else lin.bias.detach()[rows])
    return new


def shrink_mlp(fc: nn.Linear, proj: nn.Linear, keep: torch.Tensor) -> tuple[nn.Linear, nn.Linear]:
    """New, smaller ``(fc, proj)`` keeping hidden neurons ``keep`` (indices, in order): fc
    loses rows, proj loses columns.  For an element-wise activation with ``act(0) = 0``
    (ReLU, GELU), dropping neurons whose fc row and bias are zero changes nothing.

    Defined in Part II, "Pruning", section "Structured pruning: really smaller, really faster".
    """
    keep = torch.as_tensor(keep, dtype=torch.long, device=fc.weight.device)
    if keep.dim() != 1 or keep.numel() == 0:
        raise ValueError("keep must be a non-empty 1-D list of neuron indices")
    if int(keep.max()) >= fc.out_features or int(keep.min()) < 0:
        raise ValueError(f"neuron indices must be in [0, {fc.out_features})")
    return _sub_linear(fc, rows=keep), _sub_linear(proj, cols=keep)


def shrink_sequential(model: nn.Sequential, keep: int,
                      pairs: Sequence[tuple[int, int]] = ((0, 2), (2, 4))) -> nn.Sequential:
    """A copy of an MLP ``nn.Sequential`` with each hidden layer cut to its ``keep`` most
    important neurons (:func:`neuron_importance`, kept in their original order):
    ``pairs`` gives the indices of each ``(fc, proj)`` pair, e.g. the digits classifier's
    ``Linear, ReLU, Linear, ReLU, Linear`` is ``((0, 2), (2, 4))``.

    Defined in Part II, "Pruning", section "Structured pruning: really smaller, really faster"."""
    m = copy.deepcopy(model)
    for a, b in pairs:
        idx = torch.topk(neuron_importance(m[a], m[b]), keep).indices.sort().values
        m[a], m[b] = shrink_mlp(m[a], m[b], idx)
    return m


def _keep_top(scores: torch.Tensor, ratio: float, multiple: int = 1) -> torch.Tensor:
    n = scores.numel()
    k = max(multiple, int(round((1 - ratio) * n / multiple)) * multiple)
    return torch.topk(scores, min(k, n)).indices.sort().values


def prune_gpt_mlp(model: nn.Module, ratio: float, multiple: int = 8) -> nn.Module:
    """Remove the fraction ``ratio`` of the hidden neurons of every ``block.mlp`` of a
    :class:`vramlib.models.GPT` (lowest :func:`neuron_importance` first; the number kept is
    rounded to a ``multiple`` that matrix kernels like).  Returns a new, smaller model.

    Defined in Part II, "Pruning", section "Structured pruning: really smaller, really faster".
    """
    ratio = _check_fraction("ratio", ratio)
    new = copy.deepcopy(model)
    for block in new.blocks:
        keep = _keep_top(neuron_importance(block.mlp.fc, block.mlp.proj), ratio, multiple)
        block.mlp.fc, block.mlp.proj = shrink_mlp(block.mlp.fc, block.mlp.proj, keep)
    return new


class PrunedSelfAttention(nn.Module):
    """Causal self-attention with any number of heads (``n_head · head_dim`` need not equal
    ``d_model``): what is left of a :class:`vramlib.models.nanogpt.CausalSelfAttention`
    after :func:`prune_heads`.  Defined in Part II, "Pruning", section "Structured pruning: really smaller, really faster"."""

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, n_head: int, head_dim: int) -> None:
        super().__init__()
        if qkv.out_features != 3 * n_head * head_dim or proj.in_features != n_head * head_dim:
            raise ValueError("qkv/proj shapes do not match n_head * head_dim")
        self.qkv, self.proj = qkv, proj
        self.n_head, self.head_dim = n_head, head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, s, _ = x.shape
        q, k, v = self.qkv(x).view(B, s, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, s, self.n_head * self.head_dim))


def head_importance(attn: nn.Module) -> torch.Tensor:
    """Score of each attention head: L2 norm of its q, k, v rows of ``qkv`` times the L2 norm
    of its columns of the output ``proj``.  Defined in Part II, "Pruning", section "Structured pruning: really smaller, really faster"."""
    h, hd = _heads_of(attn)
    w = attn.qkv.weight.detach().view(3, h, hd, -1)
    return w.pow(2).sum(dim=(0, 2, 3)).sqrt() * attn.proj.weight.detach().view(-1, h, hd).pow(2).sum(dim=(0, 2)).sqrt()


def _heads_of(attn: nn.Module) -> tuple[int, int]:
    if isinstance(attn, PrunedSelfAttention):
        return attn.n_head, attn.head_dim
    cfg = getattr(attn, "cfg", None)
    if cfg is None or not hasattr(attn, "qkv") or not hasattr(attn, "proj"):
        raise TypeError("expected the book's CausalSelfAttention or a PrunedSelfAttention")
    if cfg.n_kv_head != cfg.n_head:
        raise ValueError("head pruning here supports n_kv_head == n_head only")
    return cfg.n_head, cfg.head_dim


def prune_heads(attn: nn.Module, keep: Sequence[int]) -> PrunedSelfAttention:
    """A :class:`PrunedSelfAttention` keeping heads ``keep``: their q, k, v rows of ``qkv`` and
    their columns of ``proj``.  A head whose ``proj`` columns are zero contributes nothing,
    so removing it leaves the output unchanged.

    Defined in Part II, "Pruning", section "Structured pruning: really smaller, really faster".
    """
    h, hd = _heads_of(attn)
    keep = sorted(set(int(i) for i in keep))
    if not keep or keep[0] < 0 or keep[-1] >= h:
        raise ValueError(f"keep must list head indices in [0, {h}), got {keep!r}")
    dev = attn.qkv.weight.device
    per_head = torch.arange(hd, device=dev)
    cols = torch.cat([i * hd + per_head for i in keep])
    rows = torch.cat([part * h * hd + cols for part in range(3)])
    return PrunedSelfAttention(_sub_linear(attn.qkv, rows=rows), _sub_linear(attn.proj, cols=cols), len(keep), hd)


def prune_gpt_heads(model: nn.Module, n_remove: int) -> nn.Module:
    """Remove the ``n_remove`` least important heads (:func:`head_importance`) of every
    block of a :class:`vramlib.models.GPT`.  Returns a new model.

    Defined in Part II, "Pruning", section "Structured pruning: really smaller, really faster".
    """
    new = copy.deepcopy(model)
    for block in new.blocks:
        h, _ = _heads_of(block.attn)
        if not 0 <= n_remove < h:
            raise ValueError(f"n_remove must be in [0, {h}), got {n_remove!r}")
        keep = torch.topk(head_importance(block.attn), h - n_remove).indices.tolist()
        block.attn = prune_heads(block.attn, keep)
    return new


# -- what masks do and do not save ---------------------------------------------------

def checkpoint_bytes(obj: nn.Module | dict) -> int:
    """Bytes of ``torch.save(state_dict)`` — what a checkpoint file of the model would take.

    Defined in Part II, "Pruning", section "Masks neither shrink nor speed up".
    """
    sd = obj.state_dict() if isinstance(obj, nn.Module) else obj
    if not isinstance(sd, dict):
        raise TypeError(f"expected an nn.Module or a state dict, got {type(obj).__name__}")
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getbuffer().nbytes


def sparse_storage_bytes(t: torch.Tensor, layout: str = "csr") -> int:
    """Bytes of ``t`` stored sparse: ``"csr"`` (values + column indices + row pointers) or
    ``"coo"`` (values + one index per dimension per non-zero).  With int64 indices, CSR
    beats dense FP32 only above 2/3 sparsity.

    Defined in Part II, "Pruning", section "Masks neither shrink nor speed up".
    """
    if layout == "csr":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # "CSR support is in beta"
            s = t.detach().to_sparse_csr()
        parts = [s.values(), s.col_indices(), s.crow_indices()]
    elif layout == "coo":
        s = t.detach().to_sparse().coalesce()
        parts = [s.values(), s.indices()]
    else:
        raise ValueError(f"layout must be 'csr' or 'coo', got {layout!r}")
    return sum(p.numel() * p.element_size() for p in parts)


def to_semi_structured(weight: torch.Tensor):
    """``torch.sparse.to_sparse_semi_structured(weight)`` for a 2:4-sparse FP16/BF16 weight on
    a CUDA GPU with sparse tensor cores (compute capability ≥ 8.0); ``None`` elsewhere, so a
    caller can print a note and skip.  Defined in Part II, "Pruning", section "2:4 semi-structured sparsity".
    """
    if weight.device.type != "cuda":
        return None
    if torch.cuda.get_device_capability(weight.device)[0] < 8:
        return None
    if not is_nm_sparse(weight, 2, 4):
        raise ValueError("weight is not 2:4 sparse; apply nm_mask(weight, 2, 4) first")
    from torch.sparse import to_sparse_semi_structured
    return to_sparse_semi_structured(weight)

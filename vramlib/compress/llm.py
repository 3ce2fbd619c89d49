"""Post-training compression the way LLM practitioners do it: calibrated, layer by layer.

Round-to-nearest quantization (:func:`vramlib.compress.quant.fake_quantize`) and magnitude
pruning (:func:`vramlib.compress.prune.magnitude_mask`) look at a weight alone.  The methods
here also look at what the layer *computes*: a linear layer ``y = W x`` is judged by its output
error on calibration inputs ``X`` (tokens × in), ``‖(Ŵ − W) Xᵀ‖²_F = tr(ΔW H ΔWᵀ)`` with
``H = XᵀX``.  Everything below is a function of ``H`` (and, for AWQ, the mean |x| per input
channel), gathered once per layer by :func:`layer_stats`.

* **GPTQ** (Frantar et al., 2023): quantize one input column at a time and spread its rounding
  error over the columns not yet quantized, ``W[:, j+1:] −= e ⊗ U[j, j+1:] / U[j, j]``, with
  ``U`` the upper Cholesky factor of ``H⁻¹`` (:func:`gptq_weight`).
* **AWQ** (Lin et al., 2024): scale input channel j by ``s_j = mean|x_j|^α`` before
  round-to-nearest and undo it after, choosing α on the calibration output error
  (:func:`awq_weight`).
* **SmoothQuant** (Xiao et al., 2023): for weights *and* activations in 8 bits, move outliers
  from activations into weights, ``s_j = max|X_j|^α / max|W_{:,j}|^(1−α)``
  (:func:`smoothquant_scales`, :class:`SmoothLinear`).
* **Wanda** (Sun et al., 2024): prune by ``|W_ij| · ‖X_j‖₂`` within each output row
  (:func:`wanda_mask`); no weight update.
* **SparseGPT** (Frantar & Alistarh, 2023): GPTQ's error compensation with zeros instead of
  rounded values, the mask chosen by ``w² / U_jj²`` (:func:`sparsegpt_weight`).

:func:`compress_gpt` runs any of them over the book's GPT block by block, each block's inputs
coming from the blocks already compressed (GPTQ's reference order).  The result is a copy with
dense ``nn.Linear`` weights holding the quantized (fake-quantized) or pruned values.

Defined in Part II, "Compression at LLM scale".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from .prune import magnitude_mask, nm_mask
from .quant import fake_quantize, observe_range, qrange, quant_params, quantize, dequantize

METHODS = ("rtn", "gptq", "awq", "magnitude", "wanda", "sparsegpt")


@dataclass
class LayerStats:
    """Calibration statistics of one linear layer's input ``X`` (tokens × in): ``H = XᵀX``
    (float64), ``abs_mean`` and ``abs_max`` per input channel, and the token count.
    Defined in Part II, "Compression at LLM scale", section "One quantity: the layer's output error"."""

    H: torch.Tensor
    abs_mean: torch.Tensor
    abs_max: torch.Tensor
    tokens: int

    @classmethod
    def of(cls, x: torch.Tensor) -> "LayerStats":
        x = x.detach().reshape(-1, x.shape[-1]).double()
        return cls(x.T @ x, x.abs().mean(0), x.abs().amax(0), x.shape[0])

    def add(self, other: "LayerStats") -> "LayerStats":
        n = self.tokens + other.tokens
        mean = (self.abs_mean * self.tokens + other.abs_mean * other.tokens) / n
        return LayerStats(self.H + other.H, mean, torch.maximum(self.abs_max, other.abs_max), n)


def output_error(w: torch.Tensor, w_hat: torch.Tensor, H: torch.Tensor) -> float:
    """``‖(Ŵ − W) Xᵀ‖²_F = tr(ΔW H ΔWᵀ)``: the layer's summed squared output error on the
    calibration inputs.  Defined in Part II, "Compression at LLM scale", section "One quantity:
    the layer's output error"."""
    d = (w_hat.double() - w.double())
    return float(torch.einsum("oi,ij,oj->", d, H.to(d.device), d))


# =========================================================================== quantization
def rtn_weight(w: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Round-to-nearest baseline: symmetric min-max per output row (``group_size=None``) or per
    group of ``group_size`` input columns — :func:`~vramlib.compress.quant.fake_quantize`.
    Defined in Part II, "Compression at LLM scale", section "GPTQ: rounding with error feedback"."""
    if group_size is None:
        return fake_quantize(w, bits, True, "channel")
    return fake_quantize(w, bits, True, "group", group_size)


def _group_quantizer(w: torch.Tensor, bits: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Round-to-nearest onto the grid fitted (symmetric min-max, per row) to columns ``w``."""
    lo, hi = observe_range(w.float(), "minmax", bits, True)
    scale, zp = quant_params(lo, hi, bits, True)
    qmin, qmax = qrange(bits, True)
    return lambda col: dequantize(quantize(col.float().unsqueeze(1), scale, zp, qmin, qmax),
                                  scale, zp).squeeze(1).to(col.dtype)


def _inverse_hessian_factor(H: torch.Tensor, w: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``(H + λI)⁻¹``, λ = ``damp`` · mean diag(H); columns
    no input ever reached (diag 0) get H_jj = 1 (their weights are zeroed by the caller)."""
    H = H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H += damp * torch.diag(H).mean() * torch.eye(len(H), dtype=H.dtype, device=H.device)
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    return torch.linalg.cholesky(Hinv, upper=True).to(w.device)


def gptq_weight(w: torch.Tensor, H: torch.Tensor, bits: int, group_size: int | None = None,
                damp: float = 0.01) -> torch.Tensor:
    """GPTQ: the quantized weight (dequantized values, same shape).  Columns are quantized left
    to right; column j's error ``e = (w_j − q_j) / U_jj`` is spread over the later columns,
    ``W[:, j+1:] −= e ⊗ U[j, j+1:]``, which is the optimal (OBS) update of the remaining weights
    for ``tr(ΔW H ΔWᵀ)``.  Each group's grid is fitted to its columns when the group starts
    (after the updates so far), as in the reference code.  (The paper's lazy block updates
    compute the same result faster; one column at a time is easier to read.)
    Defined in Part II, "Compression at LLM scale", section "GPTQ: rounding with error feedback"."""
    W = w.detach().double().clone()
    dead = torch.diag(H) == 0
    W[:, dead] = 0.0
    U = _inverse_hessian_factor(H, W, damp)
    n_in = W.shape[1]
    group = group_size or n_in
    if n_in % group:
        raise ValueError(f"in_features {n_in} is not a multiple of group_size {group_size}")
    Q = torch.zeros_like(W)
    for j in range(n_in):
        if j % group == 0:
            quant = _group_quantizer(W[:, j:j + group], bits)
        Q[:, j] = quant(W[:, j])
        err = (W[:, j] - Q[:, j]) / U[j, j]
        W[:, j + 1:] -= err.unsqueeze(1) * U[j, j + 1:].unsqueeze(0)
    return Q.to(w.dtype)


def awq_weight(w: torch.Tensor, stats: LayerStats, bits: int, group_size: int | None = None,
               grid: int = 20) -> tuple[torch.Tensor, float]:
    """AWQ (activation-aware weight quantization), weight part: for α in ``0, 1/grid, ..., 1``
    scale input channel j by ``s_j = mean|x_j|^α`` (normalised so ``√(max s · min s) = 1``),
    round ``W·diag(s)`` to nearest and undo the scale; keep the α with the least
    :func:`output_error`.  A real kernel folds ``1/s`` into the previous operation; the
    effective weight returned, ``RTN(W·diag(s))·diag(s)⁻¹``, computes the same outputs.
    Returns ``(weight, alpha)``.  Defined in Part II, "Compression at LLM scale", section
    "AWQ: protect the channels that carry large activations"."""
    mean = stats.abs_mean.to(w.device).double().clamp(min=1e-8)
    best = (float("inf"), None, 0.0)
    for k in range(grid + 1):
        alpha = k / grid if grid else 0.0
        s = mean.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        w_hat = rtn_weight(w.double() * s, bits, group_size) / s
        err = output_error(w, w_hat, stats.H)
        if err < best[0]:
            best = (err, w_hat, alpha)
    return best[1].to(w.dtype), best[2]


# =========================================================================== pruning
def wanda_mask(w: torch.Tensor, stats: LayerStats, sparsity: float = 0.5,
               n_m: tuple[int, int] | None = None) -> torch.Tensor:
    """Wanda keep-mask: score ``|W_ij| · ‖X_j‖₂`` (``‖X_j‖₂ = √H_jj``); drop the lowest
    ``sparsity`` fraction *within each output row*, or with ``n_m=(2, 4)`` keep the 2 best of
    every 4 consecutive inputs.  Defined in Part II, "Compression at LLM scale", section
    "Wanda and SparseGPT: pruning by what the layer computes"."""
    score = w.detach().abs() * torch.diag(stats.H).sqrt().to(w.device, w.dtype)
    if n_m is not None:
        return nm_mask(score, *n_m)
    k = int(w.shape[1] * sparsity)
    keep = torch.ones_like(w, dtype=torch.bool)
    if k:
        keep.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, False)
    return keep


def _sparsegpt_block_mask(W: torch.Tensor, d: torch.Tensor, sparsity: float,
                          n_m: tuple[int, int] | None) -> torch.Tensor:
    """Keep-mask for a block of columns: drop the smallest ``w² / U_jj²`` (OBS saliency)."""
    score = W.pow(2) / d.pow(2).unsqueeze(0)
    if n_m is not None:
        return nm_mask(score, *n_m)
    return magnitude_mask(score, sparsity)


def sparsegpt_weight(w: torch.Tensor, H: torch.Tensor, sparsity: float = 0.5,
                     n_m: tuple[int, int] | None = None, block: int = 128,
                     damp: float = 0.01) -> torch.Tensor:
    """SparseGPT: the pruned weight (zeros where pruned, other weights updated).  For each
    block of ``block`` columns (``m`` columns for ``n_m=(n, m)``) choose the mask by the OBS
    saliency ``w²/U_jj²`` of the current weights, then walk the columns as GPTQ does, the
    "rounded" value being ``w·mask`` and the error spread over later columns.
    Defined in Part II, "Compression at LLM scale", section "Wanda and SparseGPT: pruning by
    what the layer computes"."""
    W = w.detach().double().clone()
    U = _inverse_hessian_factor(H, W, damp)
    n_in = W.shape[1]
    step = n_m[1] if n_m is not None else block
    keep = torch.ones_like(W, dtype=torch.bool)
    for j in range(n_in):
        if j % step == 0:
            cols = slice(j, min(j + step, n_in))
            keep[:, cols] = _sparsegpt_block_mask(W[:, cols], torch.diag(U)[cols], sparsity, n_m)
        q = W[:, j] * keep[:, j]
        err = (W[:, j] - q) / U[j, j]
        W[:, j + 1:] -= err.unsqueeze(1) * U[j, j + 1:].unsqueeze(0)
        W[:, j] = q
    return W.to(w.dtype)


# =========================================================================== SmoothQuant
def smoothquant_scales(w: torch.Tensor, act_abs_max: torch.Tensor, alpha: float = 0.5
                       ) -> torch.Tensor:
    """SmoothQuant's per-input-channel scales ``s_j = max|X_j|^α / max_i|W_ij|^(1−α)``
    (``X' = X/s``, ``W' = W·s``: the product is unchanged; α is the migration strength, 0
    leaves activations alone, 1 moves all of their range into the weights).
    Defined in Part II, "Compression at LLM scale", section "SmoothQuant: migrate the outliers"."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (migration strength) must be in [0, 1], got {alpha!r}")
    a = act_abs_max.to(w.device).float().clamp(min=1e-5)
    m = w.detach().abs().amax(0).float().clamp(min=1e-5)
    return a.pow(alpha) / m.pow(1 - alpha)


class SmoothLinear(nn.Module):
    """W8A8 linear layer with SmoothQuant scales: the input is divided by ``s`` and fake-
    quantized per tensor (dynamic, symmetric); the weight ``W·diag(s)`` per output channel.
    Defined in Part II, "Compression at LLM scale", section "SmoothQuant: migrate the outliers"."""

    def __init__(self, lin: nn.Linear, s: torch.Tensor, w_bits: int = 8, a_bits: int = 8) -> None:
        super().__init__()
        self.register_buffer("inv_s", (1.0 / s).to(lin.weight.dtype))
        w = lin.weight.detach() * s.to(lin.weight.dtype)
        self.register_buffer("weight", fake_quantize(w, w_bits, True, "channel"))
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().clone())
        self.a_bits = a_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = fake_quantize(x * self.inv_s, self.a_bits, True, "tensor")
        return nn.functional.linear(xq, self.weight, self.bias)


# =========================================================================== the model driver
def _block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


def _embedded_copy(model: nn.Module, calib: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """An eval-mode copy of the book's GPT, and the calibration windows embedded: the input
    of its first block."""
    m = copy.deepcopy(model).eval()
    dev = next(m.parameters()).device
    idx = calib.to(dev)
    return m, m.wte(idx) + m.wpe(torch.arange(idx.shape[1], device=dev))


def _through(block: nn.Module, x: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """``x`` run through ``block`` in batches of windows: the next block's input."""
    return torch.cat([block(x[i:i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def layer_stats(block: nn.Module, x: torch.Tensor, batch: int = 16) -> dict[str, LayerStats]:
    """Run ``x`` (windows × tokens × d) through ``block`` and gather :class:`LayerStats` of
    every linear layer's input, by name within the block.  Defined in Part II, "Compression
    at LLM scale", section "One quantity: the layer's output error"."""
    stats: dict[str, LayerStats] = {}

    def hook(name: str):
        def fn(mod, inp, out):
            s = LayerStats.of(inp[0])
            stats[name] = s if name not in stats else stats[name].add(s)
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in _block_linears(block).items()]
    try:
        for i in range(0, len(x), batch):
            block(x[i:i + batch])
    finally:
        for h in handles:
            h.remove()
    return stats


def compress_linear(lin: nn.Linear, stats: LayerStats, method: str, bits: int = 4,
                    group_size: int | None = 128, sparsity: float = 0.5,
                    n_m: tuple[int, int] | None = None) -> None:
    """Compress one linear layer in place with ``method`` (one of :data:`METHODS`).
    Defined in Part II, "Compression at LLM scale", section "One quantity: the layer's output error"."""
    w = lin.weight.data
    g = group_size if group_size and group_size < w.shape[1] else None
    if method == "rtn":
        new = rtn_weight(w, bits, g)
    elif method == "gptq":
        new = gptq_weight(w, stats.H, bits, g)
    elif method == "awq":
        new = awq_weight(w, stats, bits, g)[0]
    elif method == "magnitude":
        new = w * (nm_mask(w, *n_m) if n_m else magnitude_mask(w, sparsity))
    elif method == "wanda":
        new = w * wanda_mask(w, stats, sparsity, n_m)
    elif method == "sparsegpt":
        new = sparsegpt_weight(w, stats.H, sparsity, n_m)
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    lin.weight.data = new.to(w.dtype)


@torch.no_grad()
def compress_gpt(model: nn.Module, calib: torch.Tensor, method: str, **kwargs) -> nn.Module:
    """A compressed copy of the book's GPT: block by block, gather :func:`layer_stats` on the
    calibration windows ``calib`` (int tokens, windows × block_size) as they come out of the
    blocks already compressed, compress the block's linear layers with
    :func:`compress_linear` (``kwargs``: bits, group_size, sparsity, n_m), move on.  Embeddings
    and the tied LM head stay as they are.  Defined in Part II, "Compression at LLM scale",
    section "One quantity: the layer's output error"."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    m, x = _embedded_copy(model, calib)
    for block in m.blocks:
        stats = layer_stats(block, x)
        for name, lin in _block_linears(block).items():
            compress_linear(lin, stats[name], method, **kwargs)
        x = _through(block, x)
    return m


@torch.no_grad()
def smoothquant_gpt(model: nn.Module, calib: torch.Tensor, alpha: float = 0.5,
                    w_bits: int = 8, a_bits: int = 8) -> nn.Module:
    """A W8A8 copy of the book's GPT with :class:`SmoothLinear` layers in every block
    (``alpha=0`` is plain per-tensor W8A8 without smoothing).  Activation maxima come from the
    calibration windows through the float model.  Defined in Part II, "Compression at LLM
    scale", section "SmoothQuant: migrate the outliers"."""
    m, x = _embedded_copy(model, calib)
    for block in m.blocks:
        stats = layer_stats(block, x)
        x = _through(block, x)
        for name, lin in _block_linears(block).items():
            s = smoothquant_scales(lin.weight, stats[name].abs_max, alpha)
            parent, _, attr = name.rpartition(".")
            setattr(block.get_submodule(parent) if parent else block, attr,
                    SmoothLinear(lin, s, w_bits, a_bits))
    return m

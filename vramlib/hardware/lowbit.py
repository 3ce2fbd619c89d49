"""Weight-only int8 linear layers built on torch's own kernel, to measure what a quantized
model costs at run time (weights, activations, temporaries) — not to compete with a
quantization library.

``Int8WeightOnlyLinear`` stores ``W`` as int8 with one scale per output row
(``W ≈ q · s``) and computes ``y = x Wᵀ + b`` either with torch's fused kernel
``torch._weight_int8pack_mm`` (``fused=True``: dequantizes inside the kernel, no full-size
temporary) or by dequantizing the whole weight first (``fused=False``: a full-precision copy
of ``W`` exists for the duration of each call).  ``quantize_linears_int8`` swaps every
``nn.Linear`` of a model (except the ones named in ``skip``) for one.

Defined in Part III, "Runtime memory is not parameter count".
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.surgery import replace_linears

__all__ = ["Int8WeightOnlyLinear", "quantize_linears_int8", "fused_int8_available"]


def fused_int8_available(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> bool:
    """Whether ``torch._weight_int8pack_mm`` runs on ``device`` for activations of ``dtype``.
    Defined in Part III, "Runtime memory is not parameter count"."""
    fn = getattr(torch, "_weight_int8pack_mm", None)
    if fn is None:
        return False
    try:
        dev = torch.device(device)
        fn(torch.zeros(1, 64, device=dev, dtype=dtype), torch.zeros(8, 64, device=dev, dtype=torch.int8),
           torch.ones(8, device=dev, dtype=dtype))
        return True
    except (RuntimeError, NotImplementedError):
        return False


class Int8WeightOnlyLinear(nn.Module):
    """``nn.Linear`` with int8 weights and a per-output-row scale (symmetric, ``max|w| / 127``).

    Defined in Part III, "Runtime memory is not parameter count"."""

    def __init__(self, linear: nn.Linear, fused: bool | None = None) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        if w.shape[1] % 8:
            raise ValueError(f"in_features must be a multiple of 8 for the int8 kernel, got {w.shape[1]}")
        scale = (w.abs().amax(dim=1).float() / 127).clamp(min=1e-12)
        self.register_buffer("weight_int8", (w.float() / scale[:, None]).round().clamp(-128, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(w.dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.fused = fused_int8_available(w.device, w.dtype) if fused is None else bool(fused)

    def dequantized_weight(self) -> torch.Tensor:
        """``q · s`` as a full-precision tensor (what the unfused path builds on every call)."""
        return self.weight_int8.to(self.scale.dtype) * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features), self.weight_int8, self.scale)
            y = y.reshape(*x.shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.dequantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fused={self.fused}"


def quantize_linears_int8(model: nn.Module, fused: bool | None = None, skip: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Replace (in place) every ``nn.Linear`` of ``model`` whose name does not end with one of
    ``skip`` by an :class:`Int8WeightOnlyLinear`; returns ``model``.  The LM head is skipped
    by default: in the book's GPT it shares its weight with the token embedding.
    Defined in Part III, "Runtime memory is not parameter count"."""
    replace_linears(model, lambda lin: Int8WeightOnlyLinear(lin, fused=fused), exclude=skip)
    return model

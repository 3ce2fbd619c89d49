"""Quantized weight *storage*: INT8 per-row and packed 4-bit (INT4 / NF4) with group scales.

This is the minimum Part I needs to measure what quantized weights take in memory (claim A11)
and to build a QLoRA-style 4-bit base (Part I, "Fine-tuning").  It is storage, not speed:
``Linear4bit`` dequantizes its weight to the input's dtype on every call (INT8 layers are
the book's one :class:`~vramlib.hardware.lowbit.Int8WeightOnlyLinear`, unfused).  Two 4-bit values share one ``uint8`` byte (low nibble first); each
group of ``group_size`` consecutive weights of a row shares one scale (absmax / level max).
The primitives are Part II's (:mod:`vramlib.compress.quant`): the NF4 table (:func:`~vramlib.compress.quant.nf4_levels`),
nearest-level snapping (:func:`~vramlib.compress.quant.snap_to_levels`), nibble packing
(:func:`~vramlib.compress.quant.pack_int4`, code index ``i`` stored as ``i - 8``).

Bytes of a packed 4-bit matrix with ``n`` elements, group size ``g`` and scales of ``s``
bytes::

    n / 2  +  (n / g) * s      →  0.5 + s/g bytes per weight (0.5625 for g = 64, fp32 scales)

The NF4 code book is the 16-level "NormalFloat" of QLoRA (Dettmers et al., 2023).
Defined in Part I, "Fine-tuning" (QLoRA) and "Inference" (quantized weights).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..core.surgery import replace_linears
from ..hardware.lowbit import Int8WeightOnlyLinear
from .quant import nf4_levels, pack_int4, snap_to_levels, unpack_int4

__all__ = ["NF4_LEVELS", "quantize_4bit", "dequantize_4bit", "Linear4bit",
           "quantize_linears", "packed_4bit_bytes", "int8_bytes"]

#: The 16 NF4 levels of QLoRA (normalised to [-1, 1]); index 7 is exactly zero.  The table is
#: Part II's :func:`vramlib.compress.quant.nf4_levels`, computed once here.
NF4_LEVELS = nf4_levels()

_KINDS = ("int4", "nf4")


def _levels(kind: str) -> torch.Tensor:
    if kind == "nf4":
        return NF4_LEVELS
    if kind == "int4":
        return torch.arange(-8, 8, dtype=torch.float32) / 7.0   # symmetric levels -8/7 … 7/7
    raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")


def packed_4bit_bytes(numel: int, group_size: int = 64, scale_bytes: int = 4) -> int:
    """Bytes of ``numel`` weights stored as packed 4-bit codes plus one scale per group.

    Defined in Part I, "Inference" (quantized weights)."""
    if numel < 0 or group_size <= 0 or scale_bytes <= 0:
        raise ValueError("numel must be >= 0, group_size and scale_bytes > 0")
    return (numel + 1) // 2 + -(-numel // group_size) * scale_bytes


def int8_bytes(rows: int, cols: int, scale_bytes: int = 4) -> int:
    """Bytes of a ``rows × cols`` matrix in INT8 with one scale per row.

    Defined in Part I, "Inference" (quantized weights)."""
    if rows < 0 or cols < 0:
        raise ValueError("rows and cols must be >= 0")
    return rows * cols + rows * scale_bytes


def quantize_4bit(w: torch.Tensor, group_size: int = 64, kind: str = "nf4"):
    """Quantize ``w`` to packed 4-bit codes: returns ``(packed uint8, fp32 scales)``.

    ``w.numel()`` must be a multiple of ``group_size`` (and ``group_size`` even).
    Defined in Part I, "Fine-tuning" (QLoRA)."""
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError("quantize_4bit needs a floating-point tensor")
    if group_size <= 0 or group_size % 2 or w.numel() % group_size:
        raise ValueError(f"group_size must be even, positive and divide numel={w.numel()}, got {group_size}")
    levels = _levels(kind).to(w.device)
    codes, scales = snap_to_levels(w.reshape(-1, group_size), levels)
    packed = pack_int4(codes.reshape(-1) - 8)          # code index 0..15 stored as -8..7
    return packed, scales.reshape(-1)


def dequantize_4bit(packed: torch.Tensor, scales: torch.Tensor, shape, kind: str = "nf4",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of :func:`quantize_4bit`.  Defined in Part I, "Fine-tuning" (QLoRA)."""
    levels = _levels(kind).to(packed.device)
    codes = unpack_int4(packed.reshape(-1)).long() + 8
    vals = levels[codes].reshape(scales.numel(), -1) * scales[:, None]
    return vals.reshape(shape).to(dtype)


class _Matmul4bit(torch.autograd.Function):
    """``x @ dequant(W)ᵀ`` that saves only the packed codes and scales for backward and
    dequantizes again there (as QLoRA's kernels do), so no full-size weight copy stays alive."""

    @staticmethod
    def forward(ctx, x, packed, scales, shape, kind):
        ctx.save_for_backward(packed, scales)
        ctx.shape, ctx.kind = shape, kind
        return x @ dequantize_4bit(packed, scales, shape, kind, x.dtype).t()

    @staticmethod
    def backward(ctx, grad):
        packed, scales = ctx.saved_tensors
        w = dequantize_4bit(packed, scales, ctx.shape, ctx.kind, grad.dtype)
        return grad @ w, None, None, None, None


class Linear4bit(nn.Module):
    """A frozen linear layer whose weight is stored as packed 4-bit codes + group scales.

    Defined in Part I, "Fine-tuning" (QLoRA)."""

    def __init__(self, linear: nn.Linear, group_size: int = 64, kind: str = "nf4") -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Linear4bit wraps an nn.Linear, got {type(linear).__name__}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.kind, self.group_size, self.shape = kind, group_size, tuple(linear.weight.shape)
        packed, scales = quantize_4bit(linear.weight, group_size, kind)
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def weight_bytes(self) -> int:
        return self.packed.numel() + self.scales.numel() * self.scales.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _Matmul4bit.apply(x, self.packed, self.scales, self.shape, self.kind)
        return y if self.bias is None else y + self.bias.to(x.dtype)


def quantize_linears(model: nn.Module, kind: str = "nf4", group_size: int = 64,
                     skip: tuple[str, ...] = ("lm_head",)) -> list[str]:
    """Replace every ``nn.Linear`` of ``model`` (except names ending in ``skip``) in place by a
    :class:`Linear4bit` (``kind`` ``"nf4"``/``"int4"``) or :class:`~vramlib.hardware.lowbit.Int8WeightOnlyLinear` (``"int8"``, the
    book's one INT8 weight-only layer, unfused);
    returns the replaced module names.  Defined in Part I, "Fine-tuning" (QLoRA)."""
    if kind not in (*_KINDS, "int8"):
        raise ValueError(f"kind must be 'nf4', 'int4' or 'int8', got {kind!r}")
    def make(lin: nn.Linear) -> nn.Module:
        if kind == "int8":
            return Int8WeightOnlyLinear(lin, fused=False)
        return Linear4bit(lin, group_size, kind)

    return replace_linears(model, make, exclude=skip)

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

__all__ = ["Int8WeightOnlyLinear", "quantize_linears_int8", "fused_int8_available", "VARIANTS", "runtime_memory"]

#: Model variants :func:`runtime_memory` builds.
VARIANTS = ("float", "int8 fused", "int8 unfused", "int8 dynamic (CPU)")


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
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and not any(name == s or name.endswith("." + s) for s in skip)]
    for name, lin in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8WeightOnlyLinear(lin, fused=fused))
    return model


def runtime_memory(cfg, batch: int, variant: str = "float", device: str | torch.device | None = None,
                   dtype: torch.dtype = torch.float32, seq: int | None = None, seed: int = 0) -> dict:
    """Build the book's GPT (``vramlib.models.GPT(cfg)``) in ``variant`` (see :data:`VARIANTS`)
    on ``device`` and measure, with :func:`vramlib.track_memory`: the bytes the model keeps
    (``model_bytes``, what stays allocated after building it), the forward pass's peak above
    that (``forward_peak``, inference mode, ``batch × seq`` tokens, ``seq`` defaulting to
    ``cfg.block_size``) and, on CUDA,
    the allocator's reserved peak.  ``"int8 dynamic (CPU)"`` uses
    ``torch.ao.quantization.quantize_dynamic`` (CPU only), whose packed weights live outside
    torch tensors: its ``model_bytes`` come from the packed weights' own sizes.

    Defined in Part III, "Runtime memory is not parameter count"."""
    import warnings

    from .device import pick_device
    from .tracker import param_bytes, track_memory
    from .models import GPT

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {VARIANTS}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    dev = pick_device(device)
    if variant == "int8 dynamic (CPU)" and dev.type != "cpu":
        raise ValueError("quantize_dynamic runs on the CPU only; use 'int8 fused' or 'int8 unfused' on a GPU")
    torch.manual_seed(seed)
    with track_memory(dev) as build:
        model = GPT(cfg).to(dev, dtype).eval()
        if variant in ("int8 fused", "int8 unfused"):
            quantize_linears_int8(model, fused=(variant == "int8 fused"))
        elif variant == "int8 dynamic (CPU)":
            from torch.ao.quantization import quantize_dynamic
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    model_bytes = build.end
    packed = 0
    if variant == "int8 dynamic (CPU)":
        for m in model.modules():
            pp = getattr(m, "_packed_params", None)
            if pp is not None and hasattr(pp, "_weight_bias"):
                w, b = pp._weight_bias()
                packed += w.int_repr().numel() * 1 + (0 if b is None else b.numel() * b.element_size())
        model_bytes = param_bytes(model, buffers=True) + packed
    seq = cfg.block_size if seq is None else seq
    idx = torch.randint(0, cfg.vocab_size, (batch, seq), device=dev)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(idx)  # warm-up: one-off allocations (packing, cuBLAS workspace) happen here
        with track_memory(dev) as fwd:
            logits, _ = model(idx)
            del logits
    return {"variant": variant, "dtype": str(dtype).replace("torch.", ""), "batch": batch, "tokens": batch * seq,
            "params": sum(p.numel() for p in model.parameters()), "model_bytes": int(model_bytes),
            "forward_peak": int(fwd.peak), "reserved_peak": fwd.reserved_peak, "method": fwd.method,
            "logits_bytes": batch * seq * cfg.vocab_size * torch.tensor([], dtype=dtype).element_size()}

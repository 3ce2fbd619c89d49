"""What a model costs at run time, measured: weights, the forward pass's activations and
temporaries, for the float model and its int8 weight-only variants
(:mod:`vramlib.hardware.lowbit`).

Defined in Part III, "Runtime memory is not parameter count".
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from ..core.device import pick_device
from ..hardware.lowbit import quantize_linears_int8
from ..models import GPT
from .tracker import param_bytes, track_memory

__all__ = ["VARIANTS", "runtime_memory"]

#: Model variants :func:`runtime_memory` builds.
VARIANTS = ("float", "int8 fused", "int8 unfused", "int8 dynamic (CPU)")


def _build_gpt(cfg, dev: torch.device, dtype: torch.dtype) -> GPT:
    """The book's GPT in ``dtype`` on ``dev``.  On a GPU it is initialised there, in
    ``dtype``: the same tensors and bytes as building on the CPU and copying, without
    initialising every weight on one CPU core first (over a second per 100M parameters)."""
    if dev.type != "cuda":
        return GPT(cfg).to(dev, dtype)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):
            return GPT(cfg)
    finally:
        torch.set_default_dtype(old)


def runtime_memory(cfg, batch: int, variant: str = "float", device: str | torch.device | None = None,
                   dtype: torch.dtype = torch.float32, seq: int | None = None, seed: int = 0) -> dict:
    """Build the book's GPT (``vramlib.models.GPT(cfg)``) in ``variant`` (see :data:`VARIANTS`)
    on ``device`` and measure, with :func:`vramlib.track_memory`: the bytes the model keeps
    (``model_bytes``, what stays allocated after building it), the forward pass's peak above
    that (``forward_peak``, inference mode, ``batch × seq`` tokens, ``seq`` defaulting to
    ``cfg.block_size``) and, on CUDA,
    the allocator's reserved peak.  ``"int8 dynamic (CPU)"`` uses
    ``torch.ao.quantization.quantize_dynamic`` (CPU only; deprecated, its warnings silenced
    here — the successor is torchao's ``quantize_``), whose packed weights live outside
    torch tensors: its ``model_bytes`` come from the packed weights' own sizes.

    Defined in Part III, "Runtime memory is not parameter count"."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {VARIANTS}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    dev = pick_device(device)
    if variant == "int8 dynamic (CPU)" and dev.type != "cpu":
        raise ValueError("quantize_dynamic runs on the CPU only; use 'int8 fused' or 'int8 unfused' on a GPU")
    torch.manual_seed(seed)
    with track_memory(dev) as build:
        model = _build_gpt(cfg, dev, dtype).eval()
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
        # warm-up: one-off allocations (packing, cuBLAS workspace) happen here; one
        # sequence of the same length suffices, and spares a slow kernel a whole batch
        model(idx[:1])
        with track_memory(dev) as fwd:
            logits, _ = model(idx)
            del logits
    return {"variant": variant, "dtype": str(dtype).replace("torch.", ""), "batch": batch, "tokens": batch * seq,
            "params": sum(p.numel() for p in model.parameters()), "model_bytes": int(model_bytes),
            "forward_peak": int(fwd.peak), "reserved_peak": fwd.reserved_peak, "method": fwd.method,
            "logits_bytes": batch * seq * cfg.vocab_size * torch.tensor([], dtype=dtype).element_size()}

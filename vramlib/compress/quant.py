"""Quantization, small enough to read: number formats, the affine map, granularity,
calibration, fake quantization with a straight-through estimator, weight-only int8/int4
linear layers that really store fewer bytes, simulated weight+activation quantization and an
LLM.int8()-style outlier decomposition.

Everything is checked against torch where torch has the same thing
(``torch.fake_quantize_per_tensor_affine`` / ``_per_channel_affine``, ``torch.quantize_per_tensor``,
the float8 dtypes, the int8 GEMM ``torch._int_mm``) in ``tests/test_quant.py`` and in the
chapters.  ``torch.ao.quantization.quantize_dynamic`` is deprecated (its successor lives in the
separate torchao package) and is not used.

Conventions.  A quantizer with ``bits`` b maps a real x to an integer
``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` and back to ``(q - zero_point) * scale``.
*Symmetric* quantizers have ``zero_point = 0`` and the restricted signed range
``[-(2^{b-1}-1), 2^{b-1}-1]``; *affine* (asymmetric) ones use ``[0, 2^b - 1]`` and a zero point
chosen so that 0.0 is exactly representable.  Granularity: ``"tensor"`` (one scale),
``"channel"`` (one per row = output channel of a weight ``(out, in)``, or one per token for
activations), ``"group"`` (one per ``group_size`` consecutive values along the last dimension).

Defined in Part II, "Numbers and quantization math", "Post-training quantization" and
"Quantization-aware training".
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.surgery import replace_linears

GRANULARITIES = ("tensor", "channel", "group")
METHODS = ("minmax", "percentile", "mse")


# =========================================================================== number formats
@dataclass(frozen=True)
class NumberFormat:
    """One number format: its bit layout, largest finite value, smallest positive normal value
    (floats) or step (integers), and relative precision ``eps`` (gap above 1.0 for floats).
    Defined in Part II, "Numbers and quantization math"."""

    name: str
    bits: int
    kind: str                      # "float", "int" or "lookup"
    exponent_bits: int
    mantissa_bits: int
    max: float
    smallest_normal: float
    eps: float
    dtype: torch.dtype | None


def nf4_levels() -> torch.Tensor:
    """The 16 NF4 code values of QLoRA: quantiles of a standard normal, rescaled to [-1, 1],
    with an exact zero (8 positive, 7 negative levels).  Built as in the QLoRA reference code
    with offset 0.9677 (= (1 - 1/(2·15) + 1 - 1/(2·16)) / 2).
    Defined in Part II, "Numbers and quantization math"."""
    normal = torch.distributions.Normal(0.0, 1.0)
    offset = 0.9677083
    pos = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    v = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (v / v.abs().max()).float()


def number_formats() -> list[NumberFormat]:
    """FP32, FP16, BF16, FP8 E4M3, FP8 E5M2 (from ``torch.finfo``), INT32/16/8 (``torch.iinfo``),
    INT4 and NF4.  Defined in Part II, "Numbers and quantization math"."""
    out = []
    for name, dt, e, m in [("FP32", torch.float32, 8, 23), ("FP16", torch.float16, 5, 10),
                           ("BF16", torch.bfloat16, 8, 7), ("FP8 E4M3", torch.float8_e4m3fn, 4, 3),
                           ("FP8 E5M2", torch.float8_e5m2, 5, 2)]:
        fi = torch.finfo(dt)
        out.append(NumberFormat(name, fi.bits, "float", e, m, float(fi.max), float(fi.smallest_normal),
                                float(fi.eps), dt))
    for name, dt in [("INT32", torch.int32), ("INT16", torch.int16), ("INT8", torch.int8)]:
        ii = torch.iinfo(dt)
        out.append(NumberFormat(name, ii.bits, "int", 0, ii.bits - 1, float(ii.max), 1.0, 1.0, dt))
    out.append(NumberFormat("INT4", 4, "int", 0, 3, 7.0, 1.0, 1.0, None))
    lv = nf4_levels()
    out.append(NumberFormat("NF4", 4, "lookup", 0, 0, 1.0, float(lv[lv > 0].min()),
                            float((lv[lv > 0].min())), None))
    return out


def bit_layout(value: float, dtype: torch.dtype) -> str:
    """The bits of ``value`` stored as ``dtype``, grouped as sign|exponent|mantissa for floats
    (e.g. ``bit_layout(1.0, torch.bfloat16) == "0|01111111|0000000"``) and as two's complement
    for integers.  Defined in Part II, "Numbers and quantization math"."""
    layouts = {torch.float32: (8, 23, torch.int32), torch.float16: (5, 10, torch.int16),
               torch.bfloat16: (8, 7, torch.int16), torch.float8_e4m3fn: (4, 3, torch.uint8),
               torch.float8_e5m2: (5, 2, torch.uint8)}
    if dtype in layouts:
        e, m, as_int = layouts[dtype]
        raw = int(torch.tensor([value]).to(dtype).view(as_int).item())
        n = 1 + e + m
        s = format(raw & ((1 << n) - 1), f"0{n}b")
        return f"{s[0]}|{s[1:1 + e]}|{s[1 + e:]}"
    if dtype in (torch.int8, torch.int16, torch.int32):
        n = torch.iinfo(dtype).bits
        v = int(value)
        if not torch.iinfo(dtype).min <= v <= torch.iinfo(dtype).max:
            raise ValueError(f"{value} does not fit in {dtype}")
        return format(v & ((1 << n) - 1), f"0{n}b")
    raise TypeError(f"bit_layout supports float32/16, bfloat16, float8_e4m3fn/e5m2, int8/16/32; got {dtype}")


def round_to_float(x: torch.Tensor, exponent_bits: int, mantissa_bits: int,
                   max_value: float | None = None) -> torch.Tensor:
    """Round ``x`` to the nearest value of a binary float format with the given exponent and
    mantissa widths (IEEE bias, subnormals, round-half-to-even), saturating at ``max_value``
    (default: the IEEE largest finite value).  A readable model of what ``x.to(float16)``,
    ``bfloat16`` or ``float8_*`` casts do; the tests compare it with torch's casts.
    Defined in Part II, "Numbers and quantization math"."""
    if exponent_bits < 2 or mantissa_bits < 0:
        raise ValueError(f"need exponent_bits >= 2 and mantissa_bits >= 0, got {exponent_bits}, {mantissa_bits}")
    x = x.double()
    bias = 2 ** (exponent_bits - 1) - 1
    emin = 1 - bias
    if max_value is None:
        max_value = (2 - 2.0 ** -mantissa_bits) * 2.0 ** (2 ** exponent_bits - 2 - bias)
    _, e = torch.frexp(x)                      # x = f * 2^e with 0.5 <= |f| < 1, so floor(log2|x|) = e - 1
    exp = torch.clamp(e - 1, min=emin)         # subnormals share the smallest exponent's step
    step = torch.pow(2.0, (exp - mantissa_bits).double())
    y = torch.round(x / step) * step
    return y.clamp(-max_value, max_value).float()


# =========================================================================== the affine map
def qrange(bits: int, symmetric: bool = True) -> tuple[int, int]:
    """Integer range of a ``bits``-bit quantizer: symmetric ``[-(2^{b-1}-1), 2^{b-1}-1]``
    (restricted, so that ±amax map to ±qmax) or affine ``[0, 2^b - 1]``.
    Defined in Part II, "Numbers and quantization math"."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an integer in 1..16, got {bits!r}")
    if symmetric:
        if bits < 2:
            raise ValueError("a symmetric quantizer needs at least 2 bits (1 bit has no room for ±); use symmetric=False")
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def quant_params(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` that map the range ``[lo, hi]`` onto the integer range.
    Symmetric: ``scale = max(|lo|, |hi|) / qmax``, zero point 0.  Affine: the range is first
    widened to contain 0, ``scale = (hi - lo) / (qmax - qmin)``,
    ``zero_point = qmin - round(lo / scale)``.  Defined in Part II, "Numbers and quantization math"."""
    qmin, qmax = qrange(bits, symmetric)
    lo, hi = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
    tiny = torch.finfo(torch.float32).tiny * 2 ** 20
    if symmetric:
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = torch.clamp(amax / qmax, min=tiny)
        return scale, torch.zeros_like(scale)
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / (qmax - qmin), min=tiny)
    zp = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    return scale, zp


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``clamp(round(x / scale) + zero_point, qmin, qmax)`` as int32 (round half to even, like torch).
    Defined in Part II, "Numbers and quantization math"."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax).to(torch.int32)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``(q - zero_point) * scale``.  Defined in Part II, "Numbers and quantization math"."""
    return (q.float() - zero_point) * scale


def _rows(x: torch.Tensor, granularity: str, group_size: int) -> torch.Tensor:
    """View ``x`` as (slices, values per slice) for the granularity."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity == "tensor":
        return x.reshape(1, -1)
    if granularity == "channel":
        if x.dim() < 2:
            raise ValueError("per-channel quantization needs a tensor with at least 2 dimensions")
        return x.reshape(-1, x.shape[-1]) if x.dim() > 2 else x.reshape(x.shape[0], -1)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    if x.shape[-1] % group_size:
        raise ValueError(f"last dimension {x.shape[-1]} is not divisible by group_size {group_size}")
    return x.reshape(-1, group_size)


def observe_range(rows: torch.Tensor, method: str = "minmax", bits: int = 8, symmetric: bool = True,
                  percentile: float = 99.99, grid: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrate a clipping range ``(lo, hi)`` for each row of ``rows`` (shape ``(n, k)``).

    * ``"minmax"`` — the observed extremes: nothing is clipped, outliers stretch the step;
    * ``"percentile"`` — the ``100 - p`` and ``p`` percentiles: the tails are clipped;
    * ``"mse"`` — the min-max range shrunk by the factor in ``logspace(-2, 0, grid)`` (0.01 … 1) that
      minimises the mean squared quantization error of that row.

    Defined in Part II, "Post-training quantization"."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    rows = rows.detach().float()
    lo, hi = rows.amin(1, keepdim=True), rows.amax(1, keepdim=True)
    if method == "minmax":
        return lo, hi
    if method == "percentile":
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        src = rows if rows.shape[1] <= 2 ** 20 else rows[:, torch.randperm(rows.shape[1], generator=torch.Generator().manual_seed(0))[:2 ** 20]]
        q = torch.quantile(src, torch.tensor([1 - percentile / 100, percentile / 100]), dim=1, keepdim=True)
        return q[0], q[1]
    qmin, qmax = qrange(bits, symmetric)
    best_err = torch.full_like(lo, float("inf"))
    best_lo, best_hi = lo.clone(), hi.clone()
    for a in torch.logspace(-2, 0, grid).tolist():
        s, z = quant_params(lo * a, hi * a, bits, symmetric)
        err = (dequantize(quantize(rows, s, z, qmin, qmax), s, z) - rows).pow(2).mean(1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo, best_hi = torch.where(better, lo * a, best_lo), torch.where(better, hi * a, best_hi)
    return best_lo, best_hi


@dataclass
class QTensor:
    """A quantized tensor: integer codes, per-slice scale and zero point, and how to undo it.
    Defined in Part II, "Numbers and quantization math"."""

    q: torch.Tensor                # int32 codes, shape (slices, values per slice)
    scale: torch.Tensor            # (slices, 1)
    zero_point: torch.Tensor       # (slices, 1)
    shape: torch.Size
    bits: int
    symmetric: bool
    granularity: str

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.q, self.scale, self.zero_point).reshape(self.shape)

    def nbytes(self, scale_bytes: int = 2) -> int:
        """Storage if the codes were packed at ``bits`` per value and each scale (and zero
        point, for affine) took ``scale_bytes``."""
        codes = math.ceil(self.q.numel() * self.bits / 8)
        per_slice = scale_bytes * (1 if self.symmetric else 2)
        return codes + per_slice * self.scale.numel()


def quantize_tensor(x: torch.Tensor, bits: int = 8, symmetric: bool = True, granularity: str = "tensor",
                    group_size: int = 64, method: str = "minmax", percentile: float = 99.99) -> QTensor:
    """Quantize ``x`` with the given bits, mapping, granularity and calibration method.
    Defined in Part II, "Numbers and quantization math"."""
    rows = _rows(x.detach().float(), granularity, group_size)
    lo, hi = observe_range(rows, method, bits, symmetric, percentile)
    scale, zp = quant_params(lo, hi, bits, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    return QTensor(quantize(rows, scale, zp, qmin, qmax), scale, zp, x.shape, bits, symmetric, granularity)


def fake_quantize(x: torch.Tensor, bits: int = 8, symmetric: bool = True, granularity: str = "tensor",
                  group_size: int = 64, method: str = "minmax", percentile: float = 99.99) -> torch.Tensor:
    """Quantize then dequantize: ``x`` with the rounding error of the quantizer, same shape and dtype.
    Defined in Part II, "Numbers and quantization math"."""
    return quantize_tensor(x, bits, symmetric, granularity, group_size, method, percentile).dequantize().to(x.dtype)


def quantize_nf4(x: torch.Tensor, group_size: int = 64) -> torch.Tensor:
    """NF4 fake quantization: per group, divide by the group's absmax and snap to the nearest
    NF4 level.  Defined in Part II, "Numbers and quantization math"."""
    rows = _rows(x.detach().float(), "group", group_size)
    lv = nf4_levels().to(rows.device)
    idx, amax = snap_to_levels(rows, lv)
    return (lv[idx] * amax).reshape(x.shape).to(x.dtype)


def snap_to_levels(rows: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Code-book (absmax) quantization of each row of ``rows`` (shape ``(n, k)``): divide by the
    row's absmax (at least ``1e-12``) and take the index of the nearest of ``levels`` (values in
    [-1, 1], e.g. :func:`nf4_levels`).  Returns ``(indices (n, k) int64, absmax (n, 1))``; the
    dequantized rows are ``levels[indices] * absmax``.  Used by :func:`quantize_nf4` and by
    Part I's packed 4-bit store, :mod:`vramlib.compress.qstore`.
    Defined in Part II, "Numbers and quantization math"."""
    rows = rows.detach().float()
    amax = rows.abs().amax(1, keepdim=True).clamp(min=1e-12)
    idx = ((rows / amax).unsqueeze(-1) - levels.to(rows.device)).abs().argmin(-1)
    return idx, amax


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(Σx² / Σ(x - x̂)²)`` in dB (inf if exact).
    Defined in Part II, "Numbers and quantization math"."""
    x, x_hat = x.detach().double(), x_hat.detach().double()
    noise = (x - x_hat).pow(2).sum().item()
    return float("inf") if noise == 0 else 10 * math.log10(x.pow(2).sum().item() / noise)


# =========================================================================== STE / QAT
class FakeQuantSTE(torch.autograd.Function):
    """Fake quantization whose backward is the clipped straight-through estimator:
    the gradient passes unchanged where ``x`` fell inside the quantizer's range and is zero
    where it was clipped (as in ``torch.fake_quantize_per_tensor_affine``).
    Defined in Part II, "Quantization-aware training"."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int):  # type: ignore[override]
        q = torch.round(x / scale) + zero_point
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (torch.clamp(q, qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize_ste(x: torch.Tensor, bits: int, symmetric: bool = True, granularity: str = "channel",
                      group_size: int = 64, method: str = "minmax") -> torch.Tensor:
    """Differentiable fake quantization of ``x`` (range calibrated on the current values,
    treated as a constant; gradient by :class:`FakeQuantSTE`).
    Defined in Part II, "Quantization-aware training"."""
    rows = _rows(x, granularity, group_size)
    lo, hi = observe_range(rows, method, bits, symmetric)
    scale, zp = quant_params(lo, hi, bits, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    return FakeQuantSTE.apply(rows, scale, zp, qmin, qmax).reshape(x.shape)


class QATLinear(nn.Linear):
    """``nn.Linear`` whose weight is fake-quantized on every forward (STE backward), so that
    training sees — and learns around — the rounding.  Optional activation fake quantization
    with a running (EMA) min-max range.  Defined in Part II, "Quantization-aware training"."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, w_bits: int = 4,
                 a_bits: int | None = None, symmetric: bool = True, granularity: str = "channel",
                 group_size: int = 64, method: str = "minmax") -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.w_bits, self.a_bits, self.symmetric = w_bits, a_bits, symmetric
        self.granularity, self.group_size, self.method = granularity, group_size, method
        self.register_buffer("act_range", torch.tensor([0.0, 0.0]))
        self.register_buffer("act_seen", torch.tensor(False))

    @classmethod
    def from_linear(cls, lin: nn.Linear, **kw) -> "QATLinear":
        m = cls(lin.in_features, lin.out_features, lin.bias is not None, **kw)
        m.weight.data.copy_(lin.weight.data)
        if lin.bias is not None:
            m.bias.data.copy_(lin.bias.data)
        return m.to(lin.weight.device)

    def quantized_weight(self) -> torch.Tensor:
        return fake_quantize_ste(self.weight, self.w_bits, self.symmetric, self.granularity,
                                 self.group_size, self.method)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.a_bits is not None:
            if self.training:
                lo, hi = x.detach().min(), x.detach().max()
                if not bool(self.act_seen):
                    self.act_range.copy_(torch.stack([lo, hi]))
                    self.act_seen.fill_(True)
                else:
                    self.act_range.mul_(0.9).add_(0.1 * torch.stack([lo, hi]))
            s, z = quant_params(self.act_range[0], self.act_range[1], self.a_bits, symmetric=False)
            x = FakeQuantSTE.apply(x, s, z, *qrange(self.a_bits, False))
        return F.linear(x, self.quantized_weight(), self.bias)


def _replace_linears(model: nn.Module, make, skip: Iterable[str]) -> nn.Module:
    """Swap every plain ``nn.Linear`` (not a subclass such as :class:`QATLinear`) outside
    ``skip`` for ``make(layer)``, with :func:`vramlib.core.surgery.replace_linears`."""
    replace_linears(model, make, exclude=skip, is_linear=lambda m: type(m) is nn.Linear)
    return model


def prepare_qat(model: nn.Module, w_bits: int = 4, a_bits: int | None = None, symmetric: bool = True,
                granularity: str = "channel", group_size: int = 64, method: str = "minmax",
                skip: Iterable[str] = ("lm_head",)) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.Linear`` (except names in ``skip``) replaced by a
    :class:`QATLinear` with the same weights.  Defined in Part II, "Quantization-aware training"."""
    m = copy.deepcopy(model)
    return _replace_linears(m, lambda l: QATLinear.from_linear(
        l, w_bits=w_bits, a_bits=a_bits, symmetric=symmetric, granularity=granularity,
        group_size=group_size, method=method), skip)


# =========================================================================== weight-only layers
def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack signed 4-bit codes in [-8, 7] (last dimension even) two per byte: even index in the
    low nibble, odd index in the high nibble.  Defined in Part II, "Post-training quantization"."""
    if q.shape[-1] % 2:
        raise ValueError(f"last dimension must be even to pack int4, got {q.shape[-1]}")
    if q.min() < -8 or q.max() > 7:
        raise ValueError("int4 codes must lie in [-8, 7]")
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(p: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4` (returns int8).  Defined in Part II, "Post-training quantization"."""
    lo = (p & 0x0F).to(torch.int8) - 8
    hi = (p >> 4).to(torch.int8) - 8
    return torch.stack([lo, hi], dim=-1).reshape(*p.shape[:-1], p.shape[-1] * 2)


class QuantLinear(nn.Module):
    """Weight-only quantized linear layer that *stores* int8 codes, or int4 codes packed two per
    byte, plus one fp16 scale per output channel (``group_size=None``) or per group of
    ``group_size`` input columns.  The forward pass dequantizes the weight and calls
    ``F.linear`` — the memory saving is real (see :func:`vramlib.param_bytes` with
    ``buffers=True``), the speed is not (that needs fused low-bit kernels; Part III).
    Defined in Part II, "Post-training quantization"."""

    def __init__(self, lin: nn.Linear, bits: int = 8, group_size: int | None = None,
                 method: str = "minmax", scale_dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"QuantLinear stores 8- or 4-bit weights, got bits={bits!r}")
        self.in_features, self.out_features, self.bits = lin.in_features, lin.out_features, bits
        self.group_size = group_size or lin.in_features
        w = lin.weight.detach().float()
        rows = _rows(w, "group", self.group_size)                   # (out * n_groups, group_size)
        lo, hi = observe_range(rows, method, bits, symmetric=True)
        scale, _ = quant_params(lo, hi, bits, symmetric=True)
        scale = scale.to(scale_dtype)
        q = quantize(rows, scale.float(), torch.zeros(()), *qrange(bits, True)).reshape(w.shape)
        self.register_buffer("qweight", pack_int4(q) if bits == 4 else q.to(torch.int8))
        self.register_buffer("scales", scale.reshape(lin.out_features, -1))
        if lin.bias is not None:
            self.register_buffer("bias", lin.bias.detach().clone())
        else:
            self.bias = None

    def dequantized_weight(self) -> torch.Tensor:
        q = unpack_int4(self.qweight) if self.bits == 4 else self.qweight
        rows = q.float().reshape(-1, self.group_size) * self.scales.float().reshape(-1, 1)
        return rows.reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bits={self.bits}, group_size={self.group_size}"


def quantize_weights(model: nn.Module, bits: int = 8, group_size: int | None = None, method: str = "minmax",
                     skip: Iterable[str] = ("lm_head",)) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.Linear`` (except names in ``skip``; the book's GPT
    ties ``lm_head`` to the embedding) replaced by a :class:`QuantLinear`.
    Defined in Part II, "Post-training quantization"."""
    m = copy.deepcopy(model)
    return _replace_linears(m, lambda l: QuantLinear(l, bits, group_size, method), skip)


# =========================================================================== weights + activations
class SimQuantLinear(nn.Module):
    """Simulated integer linear layer: weight fake-quantized once (symmetric, per channel by
    default), input fake-quantized on every call — dynamically per token or per tensor, or with
    a *static* range calibrated beforehand (``calibrate=True`` collects inputs, then
    :meth:`freeze` picks the range with ``method``).  Integer codes times scales in float32 are
    exact here (sums stay below 2^24), so this computes what an int8 GEMM would.
    Defined in Part II, "Post-training quantization"."""

    def __init__(self, lin: nn.Linear, w_bits: int = 8, a_bits: int = 8, w_granularity: str = "channel",
                 a_mode: str = "dynamic-token", method: str = "minmax", percentile: float = 99.99,
                 group_size: int = 64) -> None:
        super().__init__()
        if a_mode not in ("dynamic-token", "dynamic-tensor", "static"):
            raise ValueError(f"a_mode must be 'dynamic-token', 'dynamic-tensor' or 'static', got {a_mode!r}")
        self.register_buffer("weight", fake_quantize(lin.weight.detach(), w_bits, True, w_granularity, group_size))
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().clone())
        self.a_bits, self.a_mode, self.method, self.percentile = a_bits, a_mode, method, percentile
        self.calibrating = a_mode == "static"
        self._seen: list[torch.Tensor] = []
        self.register_buffer("act_lo_hi", torch.zeros(2))

    def freeze(self) -> None:
        """End calibration: choose the static activation range from the collected inputs."""
        if not self._seen:
            raise RuntimeError("freeze() called before any calibration input was seen")
        allx = torch.cat(self._seen).reshape(1, -1)
        lo, hi = observe_range(allx, self.method, self.a_bits, symmetric=False, percentile=self.percentile)
        self.act_lo_hi = torch.stack([lo.squeeze(), hi.squeeze()])
        self._seen, self.calibrating = [], False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self._seen.append(x.detach().reshape(-1).float())
            return F.linear(x, self.weight, self.bias)
        if self.a_mode == "static":
            s, z = quant_params(self.act_lo_hi[0], self.act_lo_hi[1], self.a_bits, symmetric=False)
            qmin, qmax = qrange(self.a_bits, False)
            xq = dequantize(quantize(x, s, z, qmin, qmax), s, z)
        else:
            gran = "channel" if self.a_mode == "dynamic-token" else "tensor"
            xq = fake_quantize(x, self.a_bits, symmetric=False, granularity=gran)
        return F.linear(xq, self.weight, self.bias)


def quantize_sim(model: nn.Module, w_bits: int = 8, a_bits: int = 8, a_mode: str = "dynamic-token",
                 method: str = "minmax", calib: Iterable[torch.Tensor] | None = None,
                 w_granularity: str = "channel", percentile: float = 99.99,
                 skip: Iterable[str] = ("lm_head",)) -> nn.Module:
    """A deep copy of ``model`` with :class:`SimQuantLinear` layers (weights *and* activations
    quantized).  With ``a_mode="static"``, ``calib`` (model inputs) is run through the copy and
    each layer's activation range is then fixed with ``method``.
    Defined in Part II, "Post-training quantization"."""
    m = _replace_linears(copy.deepcopy(model), lambda l: SimQuantLinear(
        l, w_bits, a_bits, w_granularity, a_mode, method, percentile), skip)
    if a_mode == "static":
        if calib is None:
            raise ValueError("a_mode='static' needs calibration inputs (calib=...)")
        with torch.no_grad():
            for xb in calib:
                m(xb)
        for mod in m.modules():
            if isinstance(mod, SimQuantLinear):
                mod.freeze()
    return m.eval()


class Int8OutlierLinear(nn.Module):
    """LLM.int8()-style matrix multiplication: input columns (feature dimensions) whose magnitude
    exceeds ``threshold`` in any token are multiplied in floating point; the rest in int8 with
    per-token (activation) and per-output-channel (weight) absmax scales.  ``threshold=None``
    turns the decomposition off (plain vector-wise int8).  ``last_outlier_fraction`` records the
    fraction of columns that went the float path.  Defined in Part II, "Post-training quantization"."""

    def __init__(self, lin: nn.Linear, threshold: float | None = 6.0) -> None:
        super().__init__()
        self.register_buffer("weight", lin.weight.detach().clone())
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().clone())
        self.threshold = threshold
        self.last_outlier_fraction = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if self.threshold is None:
            outlier = torch.zeros(shape[-1], dtype=torch.bool, device=x.device)
        else:
            outlier = (x2.abs() > self.threshold).any(0)
        self.last_outlier_fraction = outlier.float().mean().item()
        xr = x2.masked_fill(outlier, 0.0)
        wr = self.weight.masked_fill(outlier, 0.0)
        sx = xr.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
        sw = wr.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
        y = (torch.round(xr / sx) @ torch.round(wr / sw).T) * sx * sw.T
        if outlier.any():
            y = y + x2[:, outlier] @ self.weight[:, outlier].T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], -1)


def llm_int8(model: nn.Module, threshold: float | None = 6.0, skip: Iterable[str] = ("lm_head",)) -> nn.Module:
    """A deep copy of ``model`` with :class:`Int8OutlierLinear` layers.
    Defined in Part II, "Post-training quantization"."""
    return _replace_linears(copy.deepcopy(model), lambda l: Int8OutlierLinear(l, threshold), skip).eval()


def linear_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` and return the input of every ``nn.Linear`` by module name (a real
    activation distribution to study).  Defined in Part II, "Numbers and quantization math"."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: seen.__setitem__(n, inp[0].detach()))
             for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen

"""Benchmarks of what the hardware does with low-bit numbers: matrix-multiply throughput per
data type, memory bandwidth, the roofline, quantize/dequantize overhead and weight-only
quantized matrix products — on whatever device the reader has.

Timing rules (Part III, "Measure your own device"): a warm-up, then several repeats, each of
``inner`` back-to-back calls long enough (``min_seconds``) that launch and timer overheads
vanish, and the **median** repeat is reported.  On CUDA the repeats are timed with CUDA
events and the device is synchronised; elsewhere with ``time.perf_counter``.  Every
benchmark returns a :class:`BenchResult` whose ``ok`` is ``False`` and whose ``note`` says
why when the device lacks the operation (e.g. FP8 before compute capability 8.9) — it never
raises for an unsupported data type.

Everything uses torch's own operators (``torch.matmul``, ``torch._int_mm``,
``torch._scaled_mm``, ``torch._weight_int8pack_mm``, ``torch._weight_int4pack_mm``,
``torch.sparse.to_sparse_semi_structured``, ``torch.ao.quantization.quantize_dynamic``);
no hand-written kernels.  ``quantize_dynamic`` is deprecated since torch 2.8 (``torch.ao.quantization``
warns that it "will be removed"; the successor is torchao's ``quantize_`` with
``Int8DynamicActivationInt8WeightConfig``, a separate package whose CPU path is not a tuned
int8 kernel): it is kept because it is torch's own FBGEMM/oneDNN int8 ``nn.Linear``, its
warnings are silenced here, and tests/test_quant.py fails the day a torch release drops it.
Defined in Part III, "Measure your own device".
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..core.device import pick_device
from .timing import Timing, sync, time_fn  # the one timing helper (re-exported for Part III)
from ..core.records import Record, load_records

__all__ = [
    "Timing", "BenchResult", "MATMUL_KINDS", "time_fn", "matmul_flops", "bench_matmul",
    "plain_matmul_rate", "copy_bandwidth", "arithmetic_intensity", "attainable_flops",
    "matmul_intensity", "plot_roofline", "cpu_features", "percent_of_peak", "quant_overhead",
    "weight_only_matmul", "catalog_dtype", "load_recorded_results",
    "KIND_BYTES", "result_intensity", "format_results",
]

#: Matrix-multiply kinds :func:`bench_matmul` knows, with the catalog dtype whose peak they use.
MATMUL_KINDS: dict[str, str | None] = {
    "fp32": "fp32",           # torch.matmul, float32, TF32 off
    "tf32": "tf32",           # torch.matmul, float32 inputs, TF32 tensor cores allowed
    "fp16": "fp16",           # torch.matmul, float16
    "bf16": "bf16",           # torch.matmul, bfloat16
    "int8": "int8",           # torch._int_mm, B column-major (B = W.t(), W row-major (N, K))
    "int8-rowmajor-b": "int8",  # torch._int_mm, B row-major (K, N) contiguous
    "fp8": "fp8",             # torch._scaled_mm, e4m3 inputs, bf16 output
    "sparse24-fp16": "fp16",  # 2:4 semi-structured sparse weight, F.linear, fp16
    "sparse24-bf16": "bf16",
    "int8-dynamic-linear": "int8",  # torch.ao.quantization.quantize_dynamic nn.Linear (CPU)
}


#: Bytes per element (inputs, output) each matmul kind reads and writes, for its intensity.
KIND_BYTES: dict[str, tuple[int, int]] = {
    "fp32": (4, 4), "tf32": (4, 4), "fp16": (2, 2), "bf16": (2, 2), "int8": (1, 4), "int8-rowmajor-b": (1, 4),
    "fp8": (1, 2), "sparse24-fp16": (2, 2), "sparse24-bf16": (2, 2), "int8-dynamic-linear": (4, 4),
}


def catalog_dtype(kind: str) -> str | None:
    """The catalog data type (``vramlib.hardware.gpus.DTYPES``) whose peak a benchmark kind is compared
    with.  Defined in Part III, "Measure your own device"."""
    if kind not in MATMUL_KINDS:
        raise ValueError(f"unknown matmul kind {kind!r}; known: {', '.join(MATMUL_KINDS)}")
    return MATMUL_KINDS[kind]


# -- results --------------------------------------------------------------------------

@dataclass
class BenchResult:
    """One benchmark: ``work`` (FLOP, integer OP, or bytes for a copy) done per call in
    ``seconds`` (median), ``rate = work / seconds``.  ``ok=False`` with a ``note`` when the
    device could not run it."""

    name: str
    kind: str
    shape: tuple = ()
    work: float = 0.0
    seconds: float = float("nan")
    ok: bool = True
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Work per second (FLOP/s, OP/s or B/s); NaN if the benchmark did not run."""
        return self.work / self.seconds if self.ok and self.seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["rate"] = self.rate
        return d


def _skip(name: str, kind: str, shape: tuple, why: str) -> BenchResult:
    return BenchResult(name=name, kind=kind, shape=shape, ok=False, note=why)


def matmul_flops(m: int, n: int, k: int) -> int:
    """Operations of an (m×k)·(k×n) product: one multiply and one add per term, ``2mnk``.

    Defined in Part III, "Measure your own device"."""
    for name, v in (("m", m), ("n", n), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return 2 * m * n * k


def _cuda_cc(dev: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(dev) if dev.type == "cuda" else (0, 0)


def _random(dev: torch.device):
    """Seeded random inputs on ``dev``, drawn there: on a GPU by its own generator (an
    8192² matrix drawn on one CPU core and copied over costs about half a second, on the
    GPU microseconds; the numbers differ from the CPU's, their distribution does not, and
    no timing depends on them), elsewhere by the CPU's."""
    g = torch.Generator(device=dev if dev.type == "cuda" else "cpu").manual_seed(0)
    gen_dev = g.device

    def randn(*s, dtype=torch.float32):
        return torch.randn(*s, generator=g, device=gen_dev).to(dev, dtype)

    def randint8(*s):
        return torch.randint(-64, 64, s, generator=g, device=gen_dev, dtype=torch.int8).to(dev)

    return randn, randint8


_Built = tuple[Callable[[], Any], str]


def _float_mm(kind: str, m: int, n: int, k: int, dev: torch.device) -> _Built:
    dtype = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[kind]
    cc = _cuda_cc(dev)
    if kind == "tf32" and dev.type != "cuda":
        raise RuntimeError("TF32 is a tensor-core mode of NVIDIA GPUs (compute capability ≥ 8.0); not on this device")
    if kind == "tf32" and cc < (8, 0):
        raise RuntimeError(f"TF32 needs compute capability ≥ 8.0 (Ampere); this GPU is {cc[0]}.{cc[1]}")
    randn, _ = _random(dev)
    a, b = randn(m, k, dtype=dtype), randn(k, n, dtype=dtype)
    tf32 = kind == "tf32"

    def fn():
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            return torch.matmul(a, b)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old

    if dev.type != "cuda" or kind in ("fp16", "bf16"):
        return (lambda: torch.matmul(a, b)), ""
    return fn, ("TF32 tensor cores" if tf32 else "TF32 off (true fp32)")


def _int8_mm(kind: str, m: int, n: int, k: int, dev: torch.device) -> _Built:
    cc = _cuda_cc(dev)
    if not hasattr(torch, "_int_mm"):
        raise RuntimeError(f"torch {torch.__version__} has no torch._int_mm")
    if dev.type == "cuda" and cc < (7, 5):
        raise RuntimeError(f"int8 tensor cores need compute capability ≥ 7.5 (Turing); this GPU is {cc[0]}.{cc[1]}")
    if m <= 16 or k % 8 or n % 8:
        raise RuntimeError("torch._int_mm needs m > 16 and k, n multiples of 8")
    _, randint8 = _random(dev)
    a = randint8(m, k)
    b = randint8(n, k).t() if kind == "int8" else randint8(k, n)
    torch._int_mm(a, b)  # raises here if the layout or device is unsupported
    return (lambda: torch._int_mm(a, b)), ("B column-major (W.t())" if kind == "int8" else "B row-major (K, N)")


def _fp8_mm(kind: str, m: int, n: int, k: int, dev: torch.device) -> _Built:
    cc = _cuda_cc(dev)
    if dev.type not in ("cuda", "cpu"):
        raise RuntimeError(f"FP8 matrix products (torch._scaled_mm) run on NVIDIA GPUs of compute capability ≥ 8.9 (and emulated on the CPU); not on {dev.type}")
    if dev.type == "cuda" and cc < (8, 9):
        raise RuntimeError(f"FP8 tensor cores need compute capability ≥ 8.9 (Ada/Hopper); this GPU is {cc[0]}.{cc[1]}")
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        raise RuntimeError(f"torch {torch.__version__} lacks float8_e4m3fn or _scaled_mm")
    randn, _ = _random(dev)
    a = randn(m, k).to(torch.float8_e4m3fn)
    b = randn(n, k).to(torch.float8_e4m3fn).t()
    one = torch.tensor(1.0, device=dev)
    torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    note = "e4m3 × e4m3 → bf16, per-tensor scales"
    if dev.type == "cpu":
        note += "; emulated in software on the CPU (no FP8 arithmetic instructions used)"
    return (lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)), note


def _sparse24_mm(kind: str, m: int, n: int, k: int, dev: torch.device) -> _Built:
    if dev.type != "cuda" or _cuda_cc(dev) < (8, 0):
        raise RuntimeError("2:4 semi-structured sparsity needs an NVIDIA GPU of compute capability ≥ 8.0 (sparse tensor cores)")
    to_sparse = getattr(torch.sparse, "to_sparse_semi_structured", None)
    if to_sparse is None:
        raise RuntimeError(f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured")
    dtype = torch.float16 if kind.endswith("fp16") else torch.bfloat16
    randn, _ = _random(dev)
    mask = torch.tensor([1, 1, 0, 0], dtype=torch.bool, device=dev).tile(n, k // 4)
    w = randn(n, k, dtype=dtype) * mask
    ws = to_sparse(w)
    x = randn(m, k, dtype=dtype)
    torch.nn.functional.linear(x, ws)
    return (lambda: torch.nn.functional.linear(x, ws)), "2:4 sparse weight (N, K), F.linear; work counted as the dense 2mnk"


def _dynamic_linear(kind: str, m: int, n: int, k: int, dev: torch.device) -> _Built:
    if dev.type != "cpu":
        raise RuntimeError("dynamic quantized nn.Linear (torch.ao.quantization.quantize_dynamic) runs on the CPU only")
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as e:  # pragma: no cover - depends on the torch build
        raise RuntimeError(f"torch.ao.quantization.quantize_dynamic unavailable: {e}") from None
    lin = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(lin, {torch.nn.Linear}, dtype=torch.qint8)
    randn, _ = _random(dev)
    x = randn(m, k)
    with torch.inference_mode():
        q(x)

    def fn():
        with torch.inference_mode():
            return q(x)
    return fn, f"fp32 in/out, int8 weights, activations quantized per call ({torch.backends.quantized.engine})"


_BUILDERS = {"fp32": _float_mm, "tf32": _float_mm, "fp16": _float_mm, "bf16": _float_mm,
             "int8": _int8_mm, "int8-rowmajor-b": _int8_mm, "fp8": _fp8_mm,
             "sparse24-fp16": _sparse24_mm, "sparse24-bf16": _sparse24_mm,
             "int8-dynamic-linear": _dynamic_linear}


def _matmul_fn(kind: str, m: int, n: int, k: int, dev: torch.device) -> _Built:
    """Build the closure for one kind; raise RuntimeError with a reason when unsupported."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown matmul kind {kind!r}; known: {', '.join(MATMUL_KINDS)}")
    return _BUILDERS[kind](kind, m, n, k, dev)


def bench_matmul(kind: str, m: int, n: int | None = None, k: int | None = None,
                 device: str | torch.device | None = None, **timing: Any) -> BenchResult:
    """Throughput of one (m×k)·(k×n) matrix product of ``kind`` (see :data:`MATMUL_KINDS`)
    on ``device``.  ``n`` and ``k`` default to ``m``.  Unsupported kinds return a result with
    ``ok=False`` and the reason in ``note``.  ``timing`` goes to :func:`time_fn`.

    Defined in Part III, "Measure your own device".
    """
    n = m if n is None else n
    k = m if k is None else k
    work = matmul_flops(m, n, k)
    if kind not in MATMUL_KINDS:
        raise ValueError(f"unknown matmul kind {kind!r}; known: {', '.join(MATMUL_KINDS)}")
    dev = pick_device(device)
    shape = (m, n, k)
    try:
        fn, note = _matmul_fn(kind, m, n, k, dev)
    except Exception as e:  # any refusal by torch (dtype, layout, shape, device) is a skip with its reason
        return _skip(f"matmul {kind}", kind, shape, f"skipped: {(str(e).splitlines() or [type(e).__name__])[0][:300]}")
    try:
        t = time_fn(fn, dev, **timing)
    except Exception as e:
        return _skip(f"matmul {kind}", kind, shape, f"failed: {str(e).splitlines()[0][:300]}")
    finally:
        fn = None
    return BenchResult(f"matmul {kind}", kind, shape, float(work), t.median, True, note,
                       {"inner": t.inner, "spread": round(t.spread, 4)})


def plain_matmul_rate(m: int, dtype: torch.dtype = torch.bfloat16, device: str | torch.device | None = None,
                      iters: int = 50) -> float:
    """FLOP/s of the plainest possible loop — ``for _ in range(iters): torch.matmul(a, b)``
    between two synchronisations — for the square size ``m``.  The reference
    :func:`bench_matmul` must reach (it must not be the bottleneck itself).

    Defined in Part III, "Measure your own device" (section "Timing a kernel honestly").
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive integer, got {iters!r}")
    dev = pick_device(device)
    a = torch.randn(m, m, device=dev, dtype=dtype)
    b = torch.randn(m, m, device=dev, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        torch.matmul(a, b)
    sync(dev)
    return matmul_flops(m, m, m) * iters / (time.perf_counter() - t0)


def copy_bandwidth(nbytes: int, device: str | torch.device | None = None, **timing: Any) -> BenchResult:
    """Memory bandwidth from a device-to-device copy of ``nbytes``: each copy reads and writes
    ``nbytes``, so ``work = 2·nbytes`` bytes moved.  Use a buffer much larger than the caches
    (the GPU's L2 is tens of MB).  Defined in Part III, "Measure your own device"."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1024:
        raise ValueError(f"nbytes must be an integer ≥ 1024, got {nbytes!r}")
    dev = pick_device(device)
    n = nbytes // 4
    try:
        src = torch.ones(n, device=dev)
        dst = torch.empty_like(src)
        t = time_fn(lambda: dst.copy_(src), dev, **timing)
    except (RuntimeError, torch.OutOfMemoryError) as e:
        return _skip("copy bandwidth", "copy", (n * 4,), f"failed: {str(e).splitlines()[0][:300]}")
    return BenchResult("copy bandwidth", "copy", (n * 4,), float(2 * n * 4), t.median, True,
                       "dst.copy_(src): bytes read + bytes written", {"inner": t.inner, "spread": round(t.spread, 4)})


# -- roofline -------------------------------------------------------------------------

def arithmetic_intensity(flops: float, bytes_moved: float) -> float:
    """Operations per byte moved to or from memory.  Defined in Part III, "Measure your own
    device" (section "Work, time and the roofline")."""
    if not (flops >= 0 and bytes_moved > 0):
        raise ValueError(f"need flops ≥ 0 and bytes_moved > 0, got {flops!r}, {bytes_moved!r}")
    return flops / bytes_moved


def matmul_intensity(m: int, n: int, k: int, bytes_a: float, bytes_b: float | None = None,
                     bytes_c: float | None = None) -> float:
    """Arithmetic intensity of an (m×k)·(k×n) product that reads A and B once and writes C
    once: ``2mnk / (mk·a + kn·b + mn·c)`` with ``a, b, c`` bytes per element (``b`` and ``c``
    default to ``a``).  Defined in Part III, "Measure your own device" (section "Work, time and the roofline")."""
    bytes_b = bytes_a if bytes_b is None else bytes_b
    bytes_c = bytes_a if bytes_c is None else bytes_c
    if min(bytes_a, bytes_b, bytes_c) <= 0:
        raise ValueError("bytes per element must be positive")
    return arithmetic_intensity(matmul_flops(m, n, k), m * k * bytes_a + k * n * bytes_b + m * n * bytes_c)


def attainable_flops(intensity: float, peak_flops: float, bandwidth: float) -> float:
    """The roofline: ``min(peak, intensity × bandwidth)`` — a kernel at ``intensity`` FLOP/B
    can go no faster than memory feeds it or than the arithmetic units compute.
    Defined in Part III, "Measure your own device" (section "Work, time and the roofline")."""
    if intensity < 0 or peak_flops <= 0 or bandwidth <= 0:
        raise ValueError("need intensity ≥ 0 and positive peak_flops and bandwidth")
    return min(peak_flops, intensity * bandwidth)


def plot_roofline(peaks: dict[str, float], bandwidth: float, points: Sequence[tuple[str, float, float]] = (),
                  ax=None, title: str = "", color: str | None = None, marker: str = "o"):
    """Draw the roofline(s) — one flat roof per entry of ``peaks`` (label → FLOP/s), one
    sloped line for ``bandwidth`` (B/s) — and measured ``points`` (label, intensity FLOP/B,
    achieved FLOP/s), log-log, in TFLOP/s.  Returns the axes.
    Defined in Part III, "Measure your own device" (section "Work, time and the roofline")."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    ais = [p[1] for p in points] or [1.0]
    lo = min(0.1, min(ais) / 2)
    hi = max(1e4, max(ais) * 2)
    x = np.logspace(math.log10(lo), math.log10(hi), 200)
    for i, (label, peak) in enumerate(sorted(peaks.items(), key=lambda kv: kv[1])):
        y = np.minimum(peak, x * bandwidth) / 1e12
        ax.plot(x, y, color=color, alpha=0.35 + 0.65 * (i + 1) / len(peaks), lw=1.3)
        ax.annotate(label, (hi, peak / 1e12), textcoords="offset points", xytext=(-4, 2), ha="right",
                    fontsize=8, color=color)
    for label, ai, y, y_text in _label_positions(points):
        ax.scatter([ai], [y], color=color, marker=marker, zorder=3, s=28)
        ax.annotate(label, (ai, y), xytext=(ai * 1.25, y_text), fontsize=7, color=color, va="center",
                    arrowprops=dict(arrowstyle="-", lw=0.5, color=color or "0.4") if y_text != y else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("throughput (TFLOP/s)")
    if title:
        ax.set_title(title)
    return ax


def _label_positions(points: Sequence[tuple[str, float, float]], gap: float = 0.09):
    """(label, intensity, TFLOP/s, label height) per point, for :func:`plot_roofline`: points
    within 2 % of each other share one label ("bf16, fp16"), and labels that would print over
    each other move down to ``gap`` decades apart (log axis), joined to their point by a line."""
    merged: list[list] = []
    for label, ai, achieved in sorted(points, key=lambda p: -p[2]):
        y = achieved / 1e12
        same = [m for m in merged if abs(m[1] / ai - 1) < 0.02 and abs(m[2] / y - 1) < 0.02]
        if same:
            same[0][0] += f", {label}"
        else:
            merged.append([label, ai, y])
    out, placed = [], []
    for label, ai, y in merged:
        ly = math.log10(y)
        for px, py in placed:     # a label near in x and y: go below it
            if abs(math.log10(ai / px)) < 0.8 and ly > py - gap:
                ly = py - gap
        placed.append((ai, ly))
        out.append((label, ai, y, 10 ** ly))
    return out


def _get(r, key):
    return r.get(key) if isinstance(r, dict) else (r.rate if key == "rate" else getattr(r, key))


def result_intensity(result) -> float | None:
    """Arithmetic intensity (FLOP/B) of a matmul result (a :class:`BenchResult` or its dict),
    from its shape and :data:`KIND_BYTES`; ``None`` for other kinds.  The dynamic int8
    Linear is counted with its fp32 inputs and weights as stored before packing.
    Defined in Part III, "Measure your own device" (section "Work, time and the roofline")."""
    kind, shape = _get(result, "kind"), tuple(_get(result, "shape") or ())
    if kind not in KIND_BYTES or len(shape) != 3:
        return None
    b_in, b_out = KIND_BYTES[kind]
    m, n, k = shape
    return matmul_intensity(m, n, k, b_in, b_in, b_out)


def format_results(results, gpu=None, unit: float = 1e9, unit_name: str = "GFLOP/s") -> str:
    """A fixed-width table of matmul results (:class:`BenchResult` objects or their dicts):
    kind, shape, rate, percent of the catalog peak where ``gpu`` is given, note.
    Defined in Part III, "Measure your own device"."""
    lines = [f"{'kind':20s} {'m×n×k':>16s} {unit_name:>11s} {'% peak':>7s}  note"]
    for r in results:
        shape = "×".join(str(v) for v in (_get(r, "shape") or ()))
        ok = _get(r, "ok")
        rate = _get(r, "rate") if ok else None
        pct = None
        if ok and gpu is not None:
            pct = percent_of_peak(r if isinstance(r, BenchResult) else BenchResult(
                r["name"], r["kind"], tuple(r["shape"]), r["work"], r["seconds"], True), gpu)
        elif isinstance(r, dict):
            pct = r.get("pct_of_peak")
        rate_s = f"{rate / unit:11.4g}" if rate else f"{'—':>11s}"
        pct_s = f"{pct:6.1f}%" if pct else f"{'':>7s}"
        lines.append(f"{_get(r, 'kind'):20s} {shape:>16s} {rate_s} {pct_s}  {_get(r, 'note')}")
    return "\n".join(lines)


def percent_of_peak(result: BenchResult, gpu) -> float | None:
    """``100 × rate / peak`` with the catalog peak (``vramlib.hardware.gpus.GPU``) of the benchmark's
    data type, or ``None`` where the catalog has no figure.  Copy benchmarks compare with the
    memory bandwidth.  Defined in Part III, "Measure your own device"."""
    if gpu is None or not result.ok:
        return None
    if result.kind == "copy":
        return 100.0 * result.rate / gpu.bandwidth
    dt = catalog_dtype(result.kind)
    peak = gpu.peak_flops.get(dt or "", 0.0)
    if result.kind.startswith("sparse24"):
        # rates count dense-equivalent FLOPs; the datasheet's 2:4 "with sparsity" peak is
        # twice the dense one the catalog stores, so compare with that
        peak *= 2
    return 100.0 * result.rate / peak if peak > 0 else None


# -- CPU features ---------------------------------------------------------------------

def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_features() -> dict[str, Any]:
    """What the CPU offers for low-bit arithmetic, as torch sees it: the SIMD level its
    kernels were dispatched to (``torch.backends.cpu.get_cpu_capability()``) and torch's own
    probes ``torch.cpu._is_avx2_supported``, ``_is_avx512_supported``,
    ``_is_avx512_vnni_supported``, ``_is_avx512_bf16_supported``, ``_is_amx_tile_supported``,
    ``_is_amx_fp16_supported``, ``_is_vnni_supported``... (each only where this torch has it;
    missing ones are ``None``), plus the quantized engine and, on Linux, the matching
    ``/proc/cpuinfo`` flags.  Defined in Part III, "Formats in silicon" (section "CPUs: what torch finds on yours")."""
    out: dict[str, Any] = {"torch": torch.__version__}
    try:
        out["capability"] = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        out["capability"] = None
    probes = ("avx2", "avx512", "avx512_vnni", "avx512_bf16", "vnni", "amx_tile", "amx_fp16", "arm_sve")
    for p in probes:
        f = getattr(torch.cpu, f"_is_{p}_supported", None)
        try:
            out[p] = bool(f()) if f is not None else None
        except (RuntimeError, TypeError):
            out[p] = None
    out["quantized_engine"] = torch.backends.quantized.engine
    flags = _cpuinfo_flags()
    out["cpuinfo_flags"] = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni")) or f in ("avx2", "fma", "f16c"))
    return out


# -- quantization overhead -------------------------------------------------------------

def quant_overhead(m: int, n: int, k: int, device: str | torch.device | None = None,
                   dtype: torch.dtype | None = None, **timing: Any) -> dict[str, BenchResult]:
    """The pieces of a *dynamically quantized* linear layer ``y = x Wᵀ`` (x: m×k, W: n×k),
    timed apart, written as plain torch operators (no fused kernel):

    * ``float`` — the reference ``x @ W.t()`` in ``dtype`` (bf16 on CUDA, fp32 elsewhere);
    * ``quantize x`` — ``s = max|x| / 127; q = round(x / s).clamp(-128, 127).to(int8)``;
    * ``int8 matmul`` — ``torch._int_mm(q, Wq.t())`` (int32 result);
    * ``dequantize y`` — ``acc.to(dtype) * (s_x · s_w)``;
    * ``cast x`` — ``x.to(float32).to(dtype)`` round trip (what mixed precision inserts);
    * ``int8 total`` — quantize + int8 matmul + dequantize in one call.

    Each is a :class:`BenchResult` (``work`` in FLOP for the matmuls, elements for the rest).
    Defined in Part III, "When low bits are not faster" (section "Quantize, dequantize, cast: the overhead (B12)").
    """
    dev = pick_device(device)
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    randn, _ = _random(dev)
    x = randn(m, k, dtype=dtype)
    w = randn(n, k, dtype=dtype)
    sw = w.abs().amax().float() / 127
    wq = (w.float() / sw).round().clamp(-128, 127).to(torch.int8)
    wqt = wq.t()
    shape = (m, n, k)

    def quantize():
        s = x.abs().amax().float() / 127
        return (x.float() / s).round().clamp(-128, 127).to(torch.int8), s

    q0, s0 = quantize()
    res: dict[str, BenchResult] = {}
    res["float"] = BenchResult("float matmul", "float", shape, float(matmul_flops(m, n, k)),
                               time_fn(lambda: x @ w.t(), dev, **timing).median, True, str(dtype).replace("torch.", ""))
    res["quantize x"] = BenchResult("quantize x", "quantize", shape, float(m * k), time_fn(quantize, dev, **timing).median)
    res["cast x"] = BenchResult("cast x", "cast", shape, float(m * k),
                                time_fn(lambda: x.to(torch.float32).to(dtype), dev, **timing).median, True,
                                f"{str(dtype).replace('torch.', '')} → float32 → back")
    try:
        acc0 = torch._int_mm(q0, wqt)
        res["int8 matmul"] = BenchResult("int8 matmul", "int8", shape, float(matmul_flops(m, n, k)),
                                         time_fn(lambda: torch._int_mm(q0, wqt), dev, **timing).median)
        scale = s0 * sw
        res["dequantize y"] = BenchResult("dequantize y", "dequantize", shape, float(m * n),
                                          time_fn(lambda: acc0.to(dtype) * scale, dev, **timing).median)

        def total():
            q, s = quantize()
            return torch._int_mm(q, wqt).to(dtype) * (s * sw)

        res["int8 total"] = BenchResult("int8 total", "int8", shape, float(matmul_flops(m, n, k)),
                                        time_fn(total, dev, **timing).median, True, "quantize + _int_mm + dequantize")
    except Exception as e:
        why = f"skipped: torch._int_mm unavailable here: {str(e).splitlines()[0][:200]}"
        for key in ("int8 matmul", "dequantize y", "int8 total"):
            res[key] = _skip(key, "int8", shape, why)
    return res


# -- weight-only quantization ----------------------------------------------------------

def _int4_pack(w: torch.Tensor, group: int, dev: torch.device):
    """Asymmetric 4-bit groupwise quantization of W (n×k) and torch's packed layout.
    Returns (packed, scales_and_zeros, mm) with mm(x) the built-in int4 matmul."""
    n, k = w.shape
    wg = w.float().reshape(n, k // group, group)
    lo, hi = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
    scale = ((hi - lo).clamp(min=1e-6) / 15)
    q = ((wg - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
    # torch's int4 kernels dequantize as (q - 8) * scale + zero
    zero = lo + 8 * scale
    sz = torch.stack([scale.squeeze(-1), zero.squeeze(-1)], dim=-1).transpose(0, 1).contiguous()  # (k/g, n, 2)
    if dev.type == "cpu":
        conv = getattr(torch, "_convert_weight_to_int4pack_for_cpu", None)
        mm = getattr(torch, "_weight_int4pack_mm_for_cpu", None)
        if conv is None or mm is None:
            raise RuntimeError(f"torch {torch.__version__} has no CPU int4 weight-only kernel")
        packed = conv(q.to(dev), 1)
    else:
        conv = getattr(torch, "_convert_weight_to_int4pack", None)
        mm = getattr(torch, "_weight_int4pack_mm", None)
        if conv is None or mm is None:
            raise RuntimeError(f"torch {torch.__version__} has no int4 weight-only kernel for {dev.type}")
        q8 = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8).to(dev)
        packed = conv(q8, 8)
    return packed, sz.to(dev, torch.bfloat16), mm


def weight_only_matmul(ms: Sequence[int], n: int, k: int, device: str | torch.device | None = None,
                       group: int = 128, **timing: Any) -> list[dict[str, Any]]:
    """Weight-only quantized linear layers ``y = x Wᵀ`` (W: n×k) for each batch size ``m`` in
    ``ms`` — the decode regime (m = 1..16, memory-bound: the time is reading W) and the
    prefill regime (large m, compute-bound) — with torch's built-in kernels:

    * ``bf16`` — dense ``F.linear`` in bfloat16 (and ``fp32`` on the CPU);
    * ``int8 weight-only`` — ``torch._weight_int8pack_mm`` (int8 W, per-row scale);
    * ``int4 weight-only`` — ``torch._weight_int4pack_mm`` (``_for_cpu`` on the CPU), 4-bit
      groups of ``group`` columns with scale and zero;
    * ``int8 dequant+matmul`` — the unfused path: ``F.linear(x, Wq.to(bf16) * s)`` per call.

    Returns one row per ``m``: seconds per call for each variant (NaN plus a ``notes`` entry
    where the device lacks the kernel), and the weight bytes each reads.
    Defined in Part III, "When low bits are not faster" (section "Weight-only int8/int4: decode versus prefill").
    """
    dev = pick_device(device)
    if k % group or n % 8:
        raise ValueError(f"k must be a multiple of group ({group}) and n a multiple of 8; got n={n}, k={k}")
    F = torch.nn.functional
    randn, _ = _random(dev)
    w = randn(n, k) * 0.02  # quantized and packed on the device, not on one CPU core
    wb = w.to(torch.bfloat16)
    wf = w if dev.type != "cuda" else None
    s8 = w.abs().amax(1) / 127
    w8 = (w / s8[:, None]).round().clamp(-128, 127).to(torch.int8)
    s8b = s8.to(torch.bfloat16)
    notes: dict[str, str] = {}
    try:
        packed4, sz4, mm4 = _int4_pack(w, group, dev)
    except Exception as e:
        packed4 = None
        notes["int4 weight-only"] = f"skipped: {str(e).splitlines()[0][:200]}"
    rows = []
    for m in ms:
        x = randn(m, k, dtype=torch.bfloat16)
        variants: dict[str, Callable[[], Any]] = {"bf16": lambda: F.linear(x, wb)}
        if wf is not None:
            xf = x.float()
            variants["fp32"] = lambda: F.linear(xf, wf)
        variants["int8 weight-only"] = lambda: torch._weight_int8pack_mm(x, w8, s8b)
        if packed4 is not None:
            variants["int4 weight-only"] = lambda: mm4(x, packed4, group, sz4)
        variants["int8 dequant+matmul"] = lambda: F.linear(x, w8.to(torch.bfloat16) * s8b[:, None])
        row: dict[str, Any] = {"m": m, "n": n, "k": k, "seconds": {}}
        for name, fn in variants.items():
            try:
                fn()
                row["seconds"][name] = time_fn(fn, dev, **timing).median
            except Exception as e:  # a kernel this device or torch lacks
                row["seconds"][name] = float("nan")
                notes.setdefault(name, f"skipped: {str(e).splitlines()[0][:200]}")
        rows.append(row)
    wbytes = {"bf16": n * k * 2, "fp32": n * k * 4, "int8 weight-only": n * k + n * 2,
              "int4 weight-only": n * k // 2 + (k // group) * n * 2 * 2, "int8 dequant+matmul": n * k + n * 2}
    for r in rows:
        r["weight_bytes"] = {v: wbytes[v] for v in r["seconds"]}
        r["notes"] = dict(notes)
    return rows


# -- recorded results --------------------------------------------------------------------

def load_recorded_results(prefix: str = "hardware", cuda_only: bool = True) -> list[Record]:
    """The recorded runs ``<prefix>_*`` shipped with the package (:func:`load_records`);
    with ``cuda_only`` only those recorded on a CUDA GPU.
    Defined in Part III, "Measure your own device"."""
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
    return load_records(prefix + "_", kind="cuda" if cuda_only else None)

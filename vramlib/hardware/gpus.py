"""A catalog of GPUs: memory, bandwidth and peak throughput per data type, each figure cited.

The data live in ``vramlib/data/gpus.json``; each GPU entry carries the source (datasheet
or whitepaper) of its figures.  Peak rates are **dense** tensor-core rates: datasheets often
quote 2:4-sparse rates ("with sparsity"), which are twice as high; the catalog stores the
dense figure and says where the source quoted a sparse one.

Used by the estimator's ``fits`` (Part I) and by the hardware chapters (Part III, "Formats in
silicon").  Defined in Part III, "Formats in silicon".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

__all__ = ["GPU", "gpu_catalog", "get_gpu", "match_gpu", "DTYPES", "VENDOR_SHORTFALL", "ECC_GDDR_FRACTION"]

#: Data-type keys used for ``GPU.peak_flops`` (FLOP/s, or OP/s for integer types).
DTYPES = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4", "fp4")

#: What a device reports below its vendor size read in GiB: the larger of the two recorded
#: readings, H100 80GB (80 GiB − 85,017,493,504 B = 881,852,416 B, 1.03 %) and T4 (15 GiB after
#: ECC − 14.56 GiB = 0.44 GiB); applied to catalogue entries with no device reading.
VENDOR_SHORTFALL = (0.0103, 472_446_402)
#: GDDR memory with ECC on (T4, A10G, L4, L40S) keeps 1/16 for the check bits: T4 16 GiB → 15 GiB.
ECC_GDDR_FRACTION = 1 / 16


@dataclass(frozen=True)
class GPU:
    """One GPU model.  ``memory_bytes``: capacity in bytes as the device reports it
    (``memory_kind="device-reported"``) or the vendor's size in GiB where no reading exists
    (``"vendor-binary"``); ``usable_bytes`` is what fits checks use.  ``memory_label`` is the
    marketing name ("80 GB HBM3").  ``bandwidth`` in bytes/s, ``peak_flops[dtype]`` dense
    tensor-core (or CUDA-core for fp32/fp64) FLOP/s; empty for capacity-only entries."""

    key: str
    name: str
    memory_bytes: int
    bandwidth: float
    peak_flops: dict[str, float]
    architecture: str = ""
    compute_capability: str = ""
    aliases: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    memory_label: str = ""
    memory_kind: str = "device-reported"
    ecc_gddr: bool = False

    @property
    def usable_bytes(self) -> int:
        """Bytes a process can use: the device's reading, or the vendor size less ECC and
        :data:`VENDOR_SHORTFALL`.  Defined in Chapter 0, "Bytes, GB and GiB"."""
        if self.memory_kind == "device-reported":
            return self.memory_bytes
        b = self.memory_bytes * (1 - ECC_GDDR_FRACTION) if self.ecc_gddr else self.memory_bytes
        frac, floor = VENDOR_SHORTFALL
        return int(b - max(b * frac, floor))

    @property
    def rates_known(self) -> bool:
        """Whether peak rates are catalogued (capacity-only entries have none)."""
        return bool(self.peak_flops)

    def supports(self, dtype: str) -> bool | None:
        """Whether the tensor cores (or CUDA cores, for fp32/fp64) run ``dtype`` natively;
        ``None`` (unknown) where the catalog has no figure that would say: fp32/fp64 (every
        GPU runs them, but a source may not quote them) or a capacity-only entry."""
        if dtype not in self.peak_flops and (dtype in ("fp32", "fp64") or not self.rates_known):
            return None
        return self.peak_flops.get(dtype, 0.0) > 0


def _validate(key: str, e: dict) -> GPU:
    missing = {"name", "memory_gb", "memory", "bandwidth_gb_s", "peak_tflops", "sources"} - set(e)
    if missing:
        raise ValueError(f"gpus.json entry {key!r} lacks {sorted(missing)}")
    flops = {}
    for dt, v in e["peak_tflops"].items():
        if dt not in DTYPES:
            raise ValueError(f"gpus.json entry {key!r}: unknown dtype {dt!r}; known: {DTYPES}")
        flops[dt] = float(v) * 1e12
    mem = e["memory"]
    if mem.get("kind") not in ("device-reported", "vendor-binary") or not isinstance(mem.get("bytes"), int):
        raise ValueError(f"gpus.json entry {key!r}: memory needs integer 'bytes' and kind "
                         "'device-reported' or 'vendor-binary'")
    return GPU(
        key=key, name=e["name"], memory_bytes=mem["bytes"], memory_label=mem.get("label", ""),
        memory_kind=mem["kind"], ecc_gddr=bool(mem.get("ecc_gddr", False)),
        bandwidth=float(e["bandwidth_gb_s"]) * 1e9, peak_flops=flops,
        architecture=e.get("architecture", ""), compute_capability=e.get("compute_capability", ""),
        aliases=tuple(e.get("aliases", ())), sources=dict(e["sources"]), notes=e.get("notes", ""),
    )


@lru_cache(maxsize=1)
def gpu_catalog() -> dict[str, GPU]:
    """All GPUs of the catalog by key (e.g. ``"h100-sxm"``).  Defined in Part III, "Formats in silicon"."""
    raw = json.loads(resources.files("vramlib").joinpath("data/gpus.json").read_text())
    return {k: _validate(k, v) for k, v in raw["gpus"].items()}


def _norm(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())


def get_gpu(name: str | GPU) -> GPU:
    """Look a GPU up by key, name or alias (case and punctuation ignored): ``get_gpu("H100")``.

    Raises ``ValueError`` listing the known keys.  Defined in Part III, "Formats in silicon".
    """
    if isinstance(name, GPU):
        return name
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"GPU name must be a non-empty string, got {name!r}")
    cat = gpu_catalog()
    want = _norm(name)
    for g in cat.values():
        if want in {_norm(g.key), _norm(g.name), *(_norm(a) for a in g.aliases)}:
            return g
    raise ValueError(f"unknown GPU {name!r}; known: {', '.join(sorted(cat))}")


def match_gpu(device_name: str) -> GPU | None:
    """The catalog entry for a name as ``torch.cuda.get_device_name()`` prints it
    (e.g. ``"NVIDIA H100 80GB HBM3"``), or ``None``.  Longest alias match wins."""
    text = _norm(device_name)
    best, best_len = None, 0
    for g in gpu_catalog().values():
        for cand in (g.key, g.name, *g.aliases):
            c = _norm(cand)
            if c and c in text and len(c) > best_len:
                best, best_len = g, len(c)
    return best

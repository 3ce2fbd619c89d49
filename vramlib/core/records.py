"""Recorded reference runs: one typed, versioned record, one writer, one reader.

Every benchmark under ``benchmarks/`` writes its result with :func:`write_record`; every
chapter, the GPU-evidence appendix, the status page and :mod:`vramlib.hardware.bench` read
it with :func:`load_record` (or :func:`load_records`) and print :func:`provenance_line`
beside their live result, or say that no recorded GPU run exists yet.  The files ship with
the package (``vramlib/data/records/<name>.json``), so a notebook opened alone finds them.

A file holds ``{"schema_version": 1, "name", "provenance": {...}, "config": {...},
"results": {...}}``; :class:`Provenance` names every field.  ``scripts/migrate_records.py``
converted the earlier, untyped files (version 0) with :func:`migrate_v0`.

Defined in Part I, "Anatomy of memory" (how recorded GPU runs are shown).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import re
import sys
import textwrap
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_VERSION", "Provenance", "Record", "provenance", "write_record", "load_record",
           "load_records", "read_record", "provenance_line", "records_dir", "migrate_v0"]

#: Version of the record layout this module writes and reads.
SCHEMA_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Provenance:
    """Where and when a result was measured.

    ``device`` is the device's name (``"NVIDIA H100 80GB HBM3"``, a CPU's model name);
    ``kind`` its type (``"cuda"``, ``"cpu"``, ``"mps"``); ``date`` ISO 8601 (UTC).
    ``versions`` holds other libraries' versions (``transformers``), ``host`` facts about
    the host (CPU, core count, platform), ``extra`` anything else the run wants kept.
    """

    device: str
    kind: str
    date: str
    torch: str | None = None
    cuda: str | None = None
    driver: str | None = None
    python: str | None = None
    capability: str | None = None
    memory_bytes: int | None = None
    command: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """One recorded run: ``name`` (the file's stem), :class:`Provenance`, the run's
    ``config`` and its ``results``."""

    name: str
    provenance: Provenance
    config: dict[str, Any]
    results: dict[str, Any]
    schema_version: int = SCHEMA_VERSION

    @property
    def file(self) -> str:
        """The file name the record is stored under."""
        return f"{self.name}.json"

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "name": self.name,
                "provenance": asdict(self.provenance), "config": self.config,
                "results": self.results}


def records_dir() -> Path:
    """The folder of the recorded runs shipped with the package.
    Defined in Part III, "Measure your own device"."""
    return Path(str(resources.files("vramlib").joinpath("data/records")))


def provenance(device: Any = None, **extra: Any) -> Provenance:
    """Provenance of a run happening now on ``device`` (default: the one
    :func:`vramlib.pick_device` picks), with ``extra`` fields kept under ``extra``.

    Defined in Part I, "Anatomy of memory" (how recorded GPU runs are shown) and Part III,
    "Measure your own device"."""
    import torch

    from .device import device_info

    info = device_info(device)
    return Provenance(
        device=info.get("name", info["kind"]), kind=info["kind"],
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__, cuda=info.get("cuda"), driver=info.get("driver"),
        python=platform.python_version(), capability=info.get("capability"),
        memory_bytes=info.get("memory_bytes"), command=" ".join(sys.argv),
        versions=_versions(), host={"cores": info["cores"]} if "cores" in info else {},
        extra=extra)


def _versions() -> dict[str, str]:
    mod = sys.modules.get("transformers")
    return {"transformers": mod.__version__} if mod is not None else {}


def write_record(path: str | Path, results: dict, config: dict, device: Any = None,
                 **extra: Any) -> Path:
    """Write ``results`` and ``config`` with :func:`provenance` as a :class:`Record` to
    ``path`` (its stem is the record's name); returns the path.
    Defined in Part I, "Anatomy of memory"."""
    if not isinstance(results, dict) or not isinstance(config, dict):
        raise TypeError("results and config must be dicts; put lists under a key, "
                        "e.g. results={'cases': rows}")
    path = Path(path)
    rec = Record(path.stem, provenance(device, **extra), config, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec.to_dict(), indent=1, default=str) + "\n")
    return path


def read_record(path: str | Path) -> Record:
    """Parse one record file (schema version 1).  Defined in Part I, "Anatomy of memory"."""
    data = json.loads(Path(path).read_text())
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version!r}, expected {SCHEMA_VERSION}; "
                         "convert it with scripts/migrate_records.py")
    known = {f.name for f in fields(Provenance)}
    prov = Provenance(**{k: v for k, v in data["provenance"].items() if k in known})
    return Record(data["name"], prov, data["config"], data["results"], version)


def load_record(name: str) -> Record | None:
    """The shipped record ``name`` (e.g. ``"part1_gpu"``), or ``None`` if there is none.

    Defined in Part I, "Anatomy of memory"."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be a record name such as 'part1_gpu', got {name!r}")
    path = records_dir() / (name if name.endswith(".json") else name + ".json")
    return read_record(path) if path.is_file() else None


def load_records(prefix: str = "", kind: str | None = None) -> list[Record]:
    """Every shipped record whose name starts with ``prefix``, sorted by name; with
    ``kind`` (e.g. ``"cuda"``) only those recorded on that kind of device.
    Defined in Part III, "Measure your own device"."""
    if not isinstance(prefix, str):
        raise ValueError(f"prefix must be a string such as 'hardware', got {prefix!r}")
    recs = [read_record(p) for p in sorted(records_dir().glob(f"{prefix}*.json"))]
    return [r for r in recs if kind is None or r.provenance.kind == kind]


def provenance_line(record: Record | None, short: bool = False, width: int = 100) -> str:
    """Where and when a record was made, or ``"no recorded GPU run yet"``, wrapped at
    ``width`` columns (the page's output width) so that a chapter can print it as it is;
    ``short``: device, torch, driver and day only.  Defined in Part I, "Anatomy of memory"."""
    if record is None:
        return "no recorded GPU run yet"
    p = record.provenance
    if short:
        line = f"{p.device}, torch {p.torch}, driver {p.driver or '?'}, {p.date[:10]}"
    else:
        line = (f"recorded on {p.device} (driver {p.driver or '?'}, torch {p.torch or '?'}, "
                f"CUDA {p.cuda or '?'}) on {p.date}")
    return textwrap.fill(line, width)


# -- version 0 (the untyped files before the schema) ----------------------------------------
_HOST_KEYS = ("cpu", "host_cpu", "machine", "processor", "cpus", "platform")
_VERSION_KEYS = ("transformers",)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _cuda_version_in_driver(p: dict) -> bool:
    """A version-0 ``driver`` holding a CUDA version (``"13.0"``: drivers read ``580.159.04``)."""
    d = p.get("driver")
    return isinstance(d, str) and p.get("cuda") is None and re.fullmatch(r"\d+\.\d+", d) is not None


def _provenance_v0(p: dict) -> Provenance:
    dev = p["device"] if isinstance(p.get("device"), dict) else {}
    flat = p.get("device") if isinstance(p.get("device"), str) else None
    name = _first(dev.get("name"), p.get("gpu"), p.get("device_name"), p.get("name"), flat)
    kind = _first(dev.get("kind"), p.get("kind"), p.get("device_type"),
                  "cuda" if (p.get("gpu") or p.get("cuda") or p.get("driver")) else "cpu")
    swapped = _cuda_version_in_driver(p)
    used = {"device", "gpu", "device_name", "name", "kind", "device_type", "date", "torch", "cuda",
            "driver", "python", "capability", "compute_capability", "memory_bytes", "total_memory",
            "command", *_HOST_KEYS, *_VERSION_KEYS}
    return Provenance(
        device=name, kind=kind, date=p["date"], torch=_first(p.get("torch"), dev.get("torch")),
        cuda=p["driver"] if swapped else _first(p.get("cuda"), dev.get("cuda")),
        driver=None if swapped else _first(p.get("driver"), dev.get("driver")),
        python=p.get("python"),
        capability=_first(p.get("capability"), p.get("compute_capability"), dev.get("capability")),
        memory_bytes=_first(p.get("memory_bytes"), p.get("total_memory"), dev.get("memory_bytes")),
        command=p.get("command"), versions={k: p[k] for k in _VERSION_KEYS if k in p},
        host={("cores" if k == "cpus" else k): p[k] for k in _HOST_KEYS if k in p},
        extra={k: v for k, v in p.items() if k not in used})


def migrate_v0(name: str, data: dict) -> Record:
    """Convert a version-0 result file (any of the eight layouts the benchmarks wrote before
    the schema) into a :class:`Record`: the provenance fields are named (a CUDA version
    written as ``driver`` becomes ``cuda``; a missing ``device`` is taken from ``name``/
    ``gpu``), ``config`` stays, and every other top-level key goes under ``results``
    unchanged (a bare list of rows as ``results["rows"]``).  Defined in Part I, "Anatomy of memory"."""
    if "schema_version" in data:
        raise ValueError(f"{name}: already schema version {data['schema_version']}")
    rest = {k: v for k, v in data.items() if k not in ("provenance", "config")}
    results = rest["results"] if set(rest) == {"results"} else rest
    if not isinstance(results, dict):          # a bare list of rows
        results = {"rows": results}
    return Record(name, _provenance_v0(data["provenance"]), data.get("config", {}), results)

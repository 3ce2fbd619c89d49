"""Recorded reference runs: write benchmark results with provenance, and load them in chapters.

Benchmarks under ``benchmarks/`` write ``{"provenance": {...}, "config": {...}, "results": {...}}``
with :func:`write_record`; chapters call :func:`load_record` and print :func:`provenance_line`
beside their live result, or say that no recorded GPU run exists yet.
Defined in Part I, "Anatomy of memory" (how recorded GPU runs are shown).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

import torch

from .device import device_info

__all__ = ["provenance", "write_record", "load_record", "provenance_line", "repo_root", "results_dir"]


def _find_up(start: Path, found) -> Path | None:
    """The nearest folder at or above ``start`` for which ``found(folder)`` is true, or ``None``."""
    for q in (start, *start.parents):
        if found(q):
            return q
    return None


def repo_root(start: str | Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working directory) that holds
    ``benchmarks/`` and ``pyproject.toml``, or ``None``."""
    return _find_up(Path(start or Path.cwd()).resolve(),
                    lambda q: (q / "pyproject.toml").exists() and (q / "benchmarks").is_dir())


def results_dir(start: str | Path | None = None) -> Path | None:
    """The nearest ``benchmarks/results`` folder at or above ``start`` (default: the working
    directory), or ``None``; :func:`vramlib.hardware.bench.find_recorded_results` lists it.
    Defined in Part III, "Measure your own device"."""
    q = _find_up(Path(os.path.abspath(start or os.getcwd())), lambda q: (q / "benchmarks" / "results").is_dir())
    return None if q is None else q / "benchmarks" / "results"


def provenance(device=None) -> dict:
    """Where and when a result was measured: ``{"device": device_info(device), "torch",
    "cuda", "python", "date"}`` (UTC, ISO 8601).  The one provenance builder: :func:`write_record`
    stores its fields flat, :func:`vramlib.hardware.bench.provenance` (Part III) returns it as is.

    Defined in Part I, "Anatomy of memory" (how recorded GPU runs are shown) and Part III,
    "Measure your own device"."""
    return {"device": device_info(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_record(path: str | Path, results: dict, config: dict, device=None) -> Path:
    """Write ``results`` and ``config`` with provenance (device, driver, torch, date, command)
    as JSON to ``path``.  Defined in Part I, "Anatomy of memory"."""
    if not isinstance(results, dict) or not isinstance(config, dict):
        raise TypeError("results and config must be dicts")
    p = provenance(device)
    prov = dict(p["device"])                           # flat: the device facts, then the run's
    prov.update(device=prov.get("name"), date=p["date"], python=p["python"], command=" ".join(sys.argv),
                torch=p["torch"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provenance": prov, "config": config, "results": results}, indent=1, default=str))
    return path


def load_record(name: str) -> dict | None:
    """Load ``benchmarks/results/<name>.json`` from the repository (``None`` if absent).

    Defined in Part I, "Anatomy of memory"."""
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string such as 'part1_gpu'")
    root = repo_root()
    if root is None:
        return None
    path = root / "benchmarks" / "results" / (name if name.endswith(".json") else name + ".json")
    if not path.exists():
        return None
    return json.loads(path.read_text())


def provenance_line(record: dict | None) -> str:
    """One line naming where and when a record was made, or ``"no recorded GPU run yet"``."""
    if not record:
        return "no recorded GPU run yet"
    p = record.get("provenance", {})
    return (f"recorded on {p.get('name', '?')} (driver {p.get('driver', '?')}, torch {p.get('torch', '?')}, "
            f"CUDA {p.get('cuda', '?')}) on {p.get('date', '?')}")

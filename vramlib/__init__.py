"""vramlib — the helper library of *GPU Memory and Model Compression, an executable book*.

Each public function's docstring names the section of the book that derives it.

The package imports lazily (PEP 562): ``import vramlib.estimate`` or ``vramlib --help``
loads neither torch nor matplotlib, so the estimator runs in a browser (Pyodide) and the
CLI answers at once.  The names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module (relative to the package) that defines it
_EXPORTS: dict[str, str] = {
    "describe_device": ".device", "device_info": ".device", "pick_device": ".device",
    "MemoryReport": ".tracker", "StorageTracker": ".tracker", "measure": ".tracker",
    "track_memory": ".tracker", "warm_up": ".tracker", "tensor_bytes": ".tracker",
    "param_bytes": ".tracker", "grad_bytes": ".tracker", "optimizer_state_bytes": ".tracker",
    "seed_everything": ".repro", "Scale": ".scale", "experiment_scale": ".scale",
    "COMPONENT_COLORS": ".style", "PALETTE": ".style", "use_book_style": ".style",
    "fmt_num": ".units", "table": ".report", "glue": ".report", "target": ".report",
    "GB": ".units", "GiB": ".units", "KB": ".units", "KiB": ".units", "MB": ".units",
    "MiB": ".units", "fmt_bytes": ".units", "parse_bytes": ".units", "to_gb": ".units",
    "to_gib": ".units",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load a public name's module on first access (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    try:  # a submodule, e.g. ``vramlib.models`` after ``import vramlib``
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module 'vramlib' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""vramlib — the helper library of *GPU Memory and Model Compression, an executable book*.

Each public function's docstring names the section of the book that derives it.

The package imports lazily (PEP 562): ``import vramlib.estimate`` or ``vramlib --help``
loads neither torch nor matplotlib, so the estimator runs in a browser (Pyodide) and the
CLI answers at once.  The names below load their module on first use.

The package is cut in layers, each importing only the layers above it in this list
(``tests/test_layers.py`` checks it)::

    core      units, component vocabulary, device, records, repro, style, scale, report,
              surgery
    hardware  gpus (catalogue), timing, bench, lowbit
    estimate  pure arithmetic on configs (no torch)
    models    nanogpt, zoo, stdlib_lm (the LLM-scale model)
    measure   tracker, simulate, allocator, budget, checkpointing, generate, distributed,
              stagemem, runtime
    compress  quant, qstore, prune, distill, lowrank, lora, surgery, llm (GPTQ, AWQ, ...)
    cli       the command line, on top
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module (relative to the package) that defines it.  ``measure`` is not
#: here: ``vramlib.measure`` is the measurement layer (a subpackage), and the function that
#: measures one call is ``vramlib.measure.measure``.
_EXPORTS: dict[str, str] = {
    "describe_device": ".core.device", "device_info": ".core.device",
    "pick_device": ".core.device", "seed_everything": ".core.repro",
    "Scale": ".core.scale", "experiment_scale": ".core.scale",
    "COMPONENT_COLORS": ".core.style", "PALETTE": ".core.style",
    "use_book_style": ".core.style",
    "GB": ".core.units", "GiB": ".core.units", "KB": ".core.units", "KiB": ".core.units",
    "MB": ".core.units", "MiB": ".core.units", "fmt_bytes": ".core.units",
    "parse_bytes": ".core.units", "to_gb": ".core.units", "to_gib": ".core.units",
    "fmt_num": ".core.units", "table": ".core.report", "glue": ".core.report",
    "target": ".core.report", "glued_values": ".core.report",
    "MemoryReport": ".measure.tracker", "StorageTracker": ".measure.tracker",
    "track_memory": ".measure.tracker", "warm_up": ".measure.tracker",
    "tensor_bytes": ".measure.tracker", "param_bytes": ".measure.tracker",
    "grad_bytes": ".measure.tracker", "optimizer_state_bytes": ".measure.tracker",
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

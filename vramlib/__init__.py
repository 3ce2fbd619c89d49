"""vramlib — the helper library of *GPU Memory and Model Compression, an executable book*.

Each public function's docstring names the section of the book that derives it.
"""

from . import models
from .device import describe_device, device_info, pick_device
from .measure import (MemoryReport, StorageTracker, grad_bytes, measure, optimizer_state_bytes,
                      param_bytes, tensor_bytes, track_memory, warm_up)
from .repro import seed_everything
from .scale import Scale, experiment_scale
from .style import COMPONENT_COLORS, PALETTE, use_book_style
from .units import GB, GiB, KB, KiB, MB, MiB, fmt_bytes, parse_bytes, to_gb, to_gib

__version__ = "0.1.0"

__all__ = [
    "describe_device", "device_info", "pick_device",
    "MemoryReport", "StorageTracker", "measure", "track_memory", "warm_up",
    "tensor_bytes", "param_bytes", "grad_bytes", "optimizer_state_bytes",
    "seed_everything", "Scale", "experiment_scale",
    "COMPONENT_COLORS", "PALETTE", "use_book_style",
    "GB", "GiB", "KB", "KiB", "MB", "MiB", "fmt_bytes", "parse_bytes", "to_gb", "to_gib",
]

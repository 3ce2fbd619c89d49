"""How experiments scale themselves to the reader's device — the one place the policy lives.

Every experiment in the book has two sizes:

* ``small`` — runs in seconds on two CPU cores (and in CI).  Chosen on the CPU and on
  Apple MPS.  The shapes are small but the *same code* runs, so every formula is still
  checked exactly; only absolute sizes shrink.
* ``full`` — the size the effect is meant to be seen at (larger batch, longer sequences,
  more training steps).  Chosen on a CUDA GPU.

``VRAMLIB_SCALE=small`` or ``full`` overrides the choice (e.g. ``full`` on a fast CPU
workstation, ``small`` to rehearse a GPU notebook quickly).  Chapters ask
``experiment_scale().pick(small=..., full=...)`` and never test for CUDA themselves.
Defined in Chapter 0, "Small on a CPU, full on a GPU".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch

from .device import pick_device

ENV_VAR = "VRAMLIB_SCALE"
SCALES = ("small", "full")
T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    """The scale an experiment runs at, and the device that decided it."""

    name: str
    device: torch.device

    @property
    def is_full(self) -> bool:
        return self.name == "full"

    def pick(self, small: T, full: T) -> T:
        """Return ``small`` or ``full`` according to the scale."""
        return full if self.is_full else small


def experiment_scale(device: str | torch.device | None = None) -> Scale:
    """The :class:`Scale` for this run: ``full`` on CUDA, ``small`` elsewhere, unless
    ``VRAMLIB_SCALE`` says otherwise.  Defined in Chapter 0, "Small on a CPU, full on a GPU"."""
    dev = pick_device(device)
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced not in SCALES:
            raise ValueError(f"{ENV_VAR}={forced!r} is not a scale; use 'small' or 'full' (or unset it)")
        return Scale(forced, dev)
    return Scale("full" if dev.type == "cuda" else "small", dev)

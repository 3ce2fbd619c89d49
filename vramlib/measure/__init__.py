"""Layer 5, ``measure``: exact storage tracking (:mod:`~vramlib.measure.tracker`), simulation
on fake tensors, the allocator, budgets, checkpointing, generation and the multi-GPU demo.
May import core, hardware, estimate and models.

``vramlib.measure`` is this package; the function that measures one call is
:func:`vramlib.measure.measure` (defined in :mod:`vramlib.measure.tracker`).
"""

from .tracker import measure

__all__ = ["measure"]

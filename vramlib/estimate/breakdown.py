"""The estimator's answer: memory by named component, the phase where the peak falls, and
whether it fits a GPU.

Components are the *live bytes at the peak* (what ``torch.cuda.max_memory_allocated``
counts), one named line each; framework overhead (the CUDA context, the caching
allocator's reserved-but-free memory) are separate lines that ``peak`` leaves out and
``total_reserved`` adds, so they are never folded into the tensors.

Defined in Part I, "Anatomy of memory" (the components) and Part I, "The calculator".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.units import fmt_bytes
from ..core.vocab import COMPONENTS, OVERHEADS  # the one component vocabulary

__all__ = ["Breakdown", "COMPONENTS", "OVERHEADS"]


@dataclass
class Breakdown:
    """Bytes per component at the peak, plus framework overhead.

    ``components`` maps each name of :data:`COMPONENTS` to bytes live at the peak;
    ``overhead`` maps :data:`OVERHEADS` to bytes outside the tensor accounting;
    ``peak_phase`` names when the peak happens (e.g. ``"backward (loss)"``, ``"prefill"``);
    ``phases`` holds the live tensor bytes at the start of every phase the estimator
    considered; ``scenario`` the inputs; ``largest`` the biggest single tensor allocated at
    any point (what the allocator's reserve at the limit scales with,
    :mod:`vramlib.estimate.reserve`).

    Defined in Part I, "The calculator".
    """

    components: dict[str, int]
    peak_phase: str
    phases: dict[str, int] = field(default_factory=dict)
    overhead: dict[str, int] = field(default_factory=dict)
    scenario: dict[str, Any] = field(default_factory=dict)
    stage: str = "train"
    largest: int = 0

    def __post_init__(self) -> None:
        for k, v in {**self.components, **self.overhead, "largest": self.largest}.items():
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{k} must be a byte count ≥ 0; got {v!r} (an estimator bug: please report it)")
        for k in self.components:
            if k not in COMPONENTS:
                raise ValueError(f"unknown component {k!r}; allowed: {COMPONENTS}")
        for k in self.overhead:
            if k not in OVERHEADS:
                raise ValueError(f"unknown overhead line {k!r}; allowed: {OVERHEADS}")
        self.components = {k: int(self.components.get(k, 0)) for k in COMPONENTS}

    def __getitem__(self, name: str) -> int:
        if name in self.components:
            return self.components[name]
        if name in self.overhead:
            return self.overhead[name]
        raise KeyError(f"{name!r}; components: {COMPONENTS}, overhead: {OVERHEADS}")

    @property
    def peak(self) -> int:
        """Peak bytes of live tensors (what ``torch.cuda.max_memory_allocated`` reports)."""
        return sum(self.components.values())

    @property
    def total_reserved(self) -> int:
        """Peak plus framework overhead: what ``nvidia-smi`` would show for the process."""
        return self.peak + sum(self.overhead.values())

    def fits(self, gpu: Any, headroom: float = 0.0) -> bool:
        """Whether ``total_reserved`` plus the estimator's margin fits the usable memory of ``gpu`` (a key like
        ``"h100-sxm"``, a name, a :class:`vramlib.hardware.gpus.GPU`, or a capacity in bytes), leaving
        ``headroom`` (a fraction) free.  Multi-GPU estimates are per GPU already.  For the
        largest batch that safely fits, use :func:`vramlib.estimate.fit`.

        Defined in Part I, "The calculator"."""
        from .reserve import estimate_margin
        from .solve import capacity_bytes

        if not isinstance(headroom, (int, float)) or not 0.0 <= headroom < 1.0:
            raise ValueError(f"headroom must be a fraction in [0, 1), got {headroom!r}")
        return self.total_reserved + estimate_margin(self) <= capacity_bytes(gpu) * (1.0 - headroom)

    def to_dict(self) -> dict[str, Any]:
        """Every component, the overhead, peak, phase and scenario as plain JSON types."""
        return {"stage": self.stage, "components": dict(self.components), "overhead": dict(self.overhead),
                "peak": self.peak, "total_reserved": self.total_reserved, "peak_phase": self.peak_phase,
                "phases": dict(self.phases), "scenario": dict(self.scenario), "largest": self.largest}

    def table(self, unit: str | None = None) -> str:
        """A plain-text table: one line per component with bytes and share of the peak."""
        rows = [(k, v) for k, v in self.components.items() if v]
        width = max([len(k) for k, _ in rows] + [len("allocator reserve"), 18])
        out = [f"{'component':<{width}}  {'bytes':>12}  {'share':>6}"]
        peak = max(self.peak, 1)
        for k, v in rows:
            out.append(f"{k:<{width}}  {fmt_bytes(v, unit) if unit else fmt_bytes(v):>12}  {100 * v / peak:5.1f}%")
        out.append(f"{'peak (tensors)':<{width}}  {fmt_bytes(self.peak, unit) if unit else fmt_bytes(self.peak):>12}"
                   f"  at {self.peak_phase}")
        for k, v in self.overhead.items():
            out.append(f"{'+ ' + k:<{width}}  {fmt_bytes(v, unit) if unit else fmt_bytes(v):>12}")
        if self.overhead:
            t = self.total_reserved
            out.append(f"{'total reserved':<{width}}  {fmt_bytes(t, unit) if unit else fmt_bytes(t):>12}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()

    def plot(self, ax=None, label: str | None = None, x: float = 0.0, unit: str = "GiB",
             with_overhead: bool = True, legend: bool = True):
        """Draw one stacked bar (components, then overhead hatched) at ``x`` on ``ax``.

        Colours come from :data:`vramlib.core.style.COMPONENT_COLORS`.  Defined in Part I, "The calculator"."""
        import matplotlib.pyplot as plt

        from ..core.style import COMPONENT_COLORS
        from ..core.units import _UNITS

        if unit.lower() not in _UNITS:
            raise ValueError(f"unit must be one of {sorted(_UNITS)}, got {unit!r}")
        scale = _UNITS[unit.lower()]
        if ax is None:
            _, ax = plt.subplots(figsize=(4, 4))
        bottom = 0.0
        for k, v in self.components.items():
            if v:
                ax.bar(x, v / scale, bottom=bottom, color=COMPONENT_COLORS.get(k, "#777777"), label=k, width=0.6)
                bottom += v / scale
        if with_overhead:
            for k, v in self.overhead.items():
                if v:
                    ax.bar(x, v / scale, bottom=bottom, color="white", edgecolor=COMPONENT_COLORS["overhead"],
                           hatch="//", label=k, width=0.6)
                    bottom += v / scale
        ax.set_ylabel(f"memory ({unit})")
        if label is not None:
            ticks = list(ax.get_xticks()) if ax.get_xticklabels() and any(t.get_text() for t in ax.get_xticklabels()) else []
            ax.set_xticks(ticks + [x] if ticks else [x])
            labels = [t.get_text() for t in ax.get_xticklabels()][:len(ticks)] if ticks else []
            ax.set_xticklabels(labels + [label] if ticks else [label])
        if legend:
            handles, names = ax.get_legend_handles_labels()
            seen = dict(zip(names, handles))
            ax.legend(seen.values(), seen.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return ax

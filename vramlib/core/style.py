"""One look for every figure of the book, readable in the site's light and dark themes.

Figures are drawn on their own white card (opaque background, dark text), so they keep
their contrast on a dark page, and use a colour-blind-safe palette (Okabe–Ito).
Defined in Chapter 0, "Before you start", section "How to run this book".
"""

from __future__ import annotations

import matplotlib as mpl

from .vocab import CATEGORIES, CATEGORY_COMPONENT, COMPONENTS

# Okabe & Ito (2008), colour-blind-safe.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

#: Fixed colour per memory component, so every stacked bar in the book reads the same.
COMPONENT_COLORS = {
    "weights": "#0072B2",
    "master weights": "#56B4E9",
    "gradients": "#E69F00",
    "optimizer states": "#D55E00",
    "activations": "#009E73",
    "logits": "#F0E442",
    "kv cache": "#CC79A7",
    "temporaries": "#999999",
    "overhead": "#000000",
}
assert set(COMPONENTS) <= set(COMPONENT_COLORS), "every component needs a colour"

#: The simulator's categories (:data:`vramlib.core.vocab.CATEGORIES`) in their components'
#: colours.
CATEGORY_COLORS = {c: COMPONENT_COLORS[CATEGORY_COMPONENT[c]] for c in CATEGORIES}


def use_book_style() -> None:
    """Apply the book's matplotlib style.  Defined in Chapter 0, "Before you start", section "How to run this book"."""
    mpl.rcParams.update({
        "figure.figsize": (7.0, 3.6),
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "figure.facecolor": "white",
        "axes.facecolor": "white",
        "savefig.facecolor": "white",
        "axes.edgecolor": "#333333",
        "axes.labelcolor": "#222222",
        "text.color": "#222222",
        "xtick.color": "#333333",
        "ytick.color": "#333333",
        "axes.grid": True,
        "grid.color": "#dddddd",
        "grid.linewidth": 0.8,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": mpl.cycler(color=PALETTE),
        "legend.frameon": False,
        "font.size": 10,
    })

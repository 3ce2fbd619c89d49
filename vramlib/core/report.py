"""How chapters show results: tables, numbers bound to prose, and verdict checks.

* :func:`table` turns rows into a :class:`Table` that renders as an HTML table in the
  notebook and on the site (units named in the headers, errors signed, targets marked), and
  as aligned plain text in a terminal, in nbval's comparison and in the PDF.
* :func:`glue` binds a value, formatted at the lesson's precision, to a name the prose cites
  with MyST-NB's ``{glue}`name``` role, so a number in a sentence is the number the code just
  produced.  Without MyST-NB (Colab, a bare Jupyter) it does nothing.
* :func:`target` marks a measured value against a target stated before the run.
* :func:`glued_values` reads back what a notebook glued (its committed outputs), so the
  claims ledger can check the chapters' verdicts on their own numbers.

Defined in Chapter 0, "How the book prints numbers".
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .units import fmt_num

__all__ = ["Table", "table", "glue", "target", "Text", "glued_values"]

Formatter = Callable[[Any], str]


class Text(str):
    """A string whose ``repr`` is itself: what :func:`glue` stores, so the prose shows
    ``3.79`` and not ``'3.79'``."""

    def __repr__(self) -> str:
        return str(self)


def _cell(value: Any, fmt: str | Formatter | None) -> str:
    if callable(fmt):
        return fmt(value)
    if fmt is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    if isinstance(value, float):
        return fmt_num(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


@dataclass
class Table:
    """Rows of formatted cells under named columns; see :func:`table`.
    Defined in Chapter 0, "How the book prints numbers"."""

    columns: list[str]
    cells: list[list[str]]
    caption: str | None = None
    numeric: list[bool] = field(default_factory=list)

    def _repr_html_(self) -> str:
        align = ["right" if n else "left" for n in self.numeric]
        head = "".join(f'<th style="text-align:{a}">{html.escape(c)}</th>'
                       for c, a in zip(self.columns, align))
        body = "".join("<tr>" + "".join(f'<td style="text-align:{a}">{html.escape(v)}</td>'
                                        for v, a in zip(row, align)) + "</tr>"
                       for row in self.cells)
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return (f'<table class="vramlib-table">{cap}<thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")

    def __str__(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.cells)) if self.cells else len(c)
                  for i, c in enumerate(self.columns)]

        def line(vals: Sequence[str]) -> str:
            return "  ".join(v.rjust(w) if n else v.ljust(w)
                             for v, w, n in zip(vals, widths, self.numeric)).rstrip()

        out = [self.caption] if self.caption else []
        out += [line(self.columns), line(["-" * w for w in widths])]
        out += [line(r) for r in self.cells]
        return "\n".join(out)

    __repr__ = __str__


def table(rows: Sequence[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str] | None = None,
          formats: Mapping[str, str | Formatter] | None = None,
          caption: str | None = None) -> Table:
    """A results table.  ``rows`` are dicts (``columns`` defaults to the first row's keys) or
    sequences (then ``columns`` is required).  ``formats`` maps a column to a format spec
    (``"+.1%"``) or a function; floats default to :func:`vramlib.fmt_num` (2 decimals), ints
    to thousands separators.  Name units in the column titles ("peak (MiB)").
    Defined in Chapter 0, "How the book prints numbers"."""
    if not rows and columns is None:
        raise ValueError("table() needs rows, or columns for an empty table")
    if columns is None:
        first = rows[0]
        if not isinstance(first, Mapping):
            raise ValueError("rows are sequences: pass columns=[...] to name them")
        columns = list(first)
    cols = list(columns)
    formats = dict(formats or {})
    unknown = set(formats) - set(cols)
    if unknown:
        raise ValueError(f"formats names columns that do not exist: {sorted(unknown)}; "
                         f"columns are {cols}")
    raw: list[list[Any]] = []
    for i, row in enumerate(rows):
        vals = [row.get(c) for c in cols] if isinstance(row, Mapping) else list(row)
        if len(vals) != len(cols):
            raise ValueError(f"row {i} has {len(vals)} values for {len(cols)} columns {cols}")
        raw.append(vals)
    numeric = [all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
                   for r in raw if r[i] is not None) and bool(raw) for i in range(len(cols))]
    cells = [[_cell(v, formats.get(c)) for v, c in zip(r, cols)] for r in raw]
    return Table(cols, cells, caption, numeric)


def target(value: float, limit: float, op: str = "<=") -> str:
    """``"met"`` or ``"MISSED"``: ``value`` against a ``limit`` stated before the run, with
    ``op`` one of ``"<="``, ``">="``, ``"<"``, ``">"``.
    Defined in Chapter 0, "How the book prints numbers"."""
    ops = {"<=": value <= limit, ">=": value >= limit, "<": value < limit, ">": value > limit}
    if op not in ops:
        raise ValueError(f"op must be one of {sorted(ops)}; got {op!r}")
    return "met" if ops[op] else "MISSED"


def glue(name: str, value: Any, digits: int | None = 2, *, pct: bool = False,
         signed: bool = False) -> Any:
    """Bind ``value`` to ``name`` for the prose (``{glue}`name```) or a figure block
    (``{glue:figure}``), and return what was bound.  A number is formatted by
    :func:`vramlib.fmt_num` (``digits``, ``pct``, ``signed``; ``digits=None`` keeps a string
    or an int as it is) and returned as text; any other object (a matplotlib figure, a
    :class:`Table`) is bound as it is.  Needs MyST-NB, installed with the book's build
    environment; without it (Colab, a bare Jupyter) nothing is bound and a figure is simply
    displayed, so the reader still sees it.
    Defined in Chapter 0, "How the book prints numbers"."""
    if not isinstance(name, str) or not name.replace("-", "_").isidentifier():
        raise ValueError(f"glue name must be an identifier-like string; got {name!r}")
    if isinstance(value, (int, float, str)) or hasattr(value, "__float__"):
        if digits is None or isinstance(value, str):
            bound: Any = Text(f"{value:,}" if isinstance(value, int)
                              and not isinstance(value, bool) else str(value))
        else:
            bound = Text(fmt_num(value, digits, pct=pct, signed=signed))
    else:
        bound = value
    try:
        from myst_nb import glue as _glue
    except ImportError:
        if bound is value and hasattr(value, "savefig"):  # a figure: show it
            from IPython.display import display

            display(value)
        return bound
    _glue(name, bound, display=False)
    return bound


_GLUE_MIME = "application/papermill.record/text/plain"


def glued_values(notebook: str | Path) -> dict[str, str]:
    """The text of every value a notebook glued (:func:`glue`), read from its committed
    outputs: ``{name: text}``, the text exactly as the notebook's prose shows it.  A notebook
    that was never executed, or glues nothing, gives ``{}``.
    Defined in Appendix, "Claims ledger"."""
    path = Path(notebook)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such notebook (pass the .ipynb file's path)")
    nb = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name and _GLUE_MIME in o.get("data", {}):
                text = o["data"][_GLUE_MIME]
                out[name] = ("".join(text) if isinstance(text, list) else text).strip("'\"")
    return out

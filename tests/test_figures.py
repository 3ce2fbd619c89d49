"""Every figure in the book is numbered and captioned (issue: "The page a reader sees").

A chapter shows a figure by gluing it (``vramlib.glue("fig-...", fig)``) and placing it with a
MyST ``{glue:figure}`` block that has a ``:name:`` (so the prose can refer to it with
``{numref}``) and a caption.  An image displayed straight from a code cell has neither.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "chapters").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
GLUED_PNG = "application/papermill.record/image/png"


def figure_problems(nb: dict) -> list[str]:
    """What is wrong with a notebook's figures: uncaptioned, unnamed or displayed raw."""
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    problems = []
    for i, cell in enumerate(nb["cells"]):
        tags = cell.get("metadata", {}).get("tags", [])
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data and not {"remove-output", "remove-cell"} & set(tags):
                problems.append(f"cell {i}: an image displayed without a figure block")
            if GLUED_PNG not in data:
                continue
            name = out.get("metadata", {}).get("scrapbook", {}).get("name", "")
            m = re.search(r"`{3,}\{glue:figure\}\s+" + re.escape(name)
                          + r"\s*\n((?::[^\n]*\n)*)(.*?)\n`{3,}", md, re.S)
            if not m:
                problems.append(f"cell {i}: figure {name!r} is glued but never placed")
            elif ":name:" not in m.group(1) or not m.group(2).strip():
                problems.append(f"cell {i}: figure {name!r} lacks a :name: or a caption")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_is_named_and_captioned(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert not figure_problems(nb), figure_problems(nb)


def test_the_check_finds_an_uncaptioned_figure() -> None:
    glued = {"output_type": "display_data", "data": {GLUED_PNG: "iVBOR"},
             "metadata": {"scrapbook": {"name": "fig-x"}}}
    code = {"cell_type": "code", "source": "", "metadata": {}, "outputs": [glued]}
    bare = {"cell_type": "markdown", "source": "```{glue:figure} fig-x\n```\n"}
    good = {"cell_type": "markdown",
            "source": "```{glue:figure} fig-x\n:name: \"fig-x\"\nA caption.\n```\n"}
    raw = {"cell_type": "code", "source": "", "metadata": {},
           "outputs": [{"output_type": "display_data", "data": {"image/png": "iVBOR"}}]}
    assert figure_problems({"cells": [code, bare]})
    assert figure_problems({"cells": [code]})
    assert figure_problems({"cells": [raw]})
    assert not figure_problems({"cells": [code, good]})

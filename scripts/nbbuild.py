"""Tiny helper for authors: build a notebook from a list of ("md"|"code", source[, tags]).

    from nbbuild import write
    write("chapters/x/y.ipynb", [("md", "# Title"), ("code", "1+1", ["nbval-ignore-output"])])

Then `make execute NB=chapters/x/y.ipynb` fills in the outputs that nbval checks.
`write` puts the book's Colab set-up cell (scripts/colab_setup.py) before the first code cell
unless the cells already start with it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colab_setup import is_setup_cell, setup_cell  # noqa: E402


def write(path: str, cells: list[tuple]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src, *rest in cells:
        tags = rest[0] if rest else []
        src = src.strip("\n")
        cell = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    if code and not is_setup_cell(nb.cells[code[0]]):
        nb.cells.insert(code[0], setup_cell())
    nbformat.validate(nb)
    nbformat.write(nb, path)

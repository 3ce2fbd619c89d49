"""Tiny helper for authors: build a notebook from a list of ("md"|"code", source[, tags]).

    from nbbuild import write
    write("chapters/x/y.ipynb", [("md", "# Title"), ("code", "1+1", ["nbval-ignore-output"])])

Then `make execute NB=chapters/x/y.ipynb` fills in the outputs that nbval checks.
"""

from __future__ import annotations

import nbformat


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
    nbformat.validate(nb)
    nbformat.write(nb, path)

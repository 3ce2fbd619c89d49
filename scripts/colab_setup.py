"""The one set-up cell that every notebook of the book starts with (its first code cell).

On Google Colab (and any kernel that lacks `vramlib`, if it is Colab) it installs the book's
library from the repository; everywhere else it does nothing and prints nothing, so nbval sees
no output.  A chapter that needs more than `vramlib` and what Colab ships appends its extra
packages to the same `%pip install` line.  tests/test_notebooks_policy.py checks that every
notebook in _toc.yml starts with this cell.

Usage: python scripts/colab_setup.py NOTEBOOK...   inserts the cell where it is missing
(then re-execute with `make execute NB=...`).  scripts/nbbuild.py's `write` adds it too.
"""

from __future__ import annotations

import sys

import nbformat

#: Must match the repository URL in _config.yml (REPLACE-ME placeholder until published).
REPO_URL = "https://github.com/REPLACE-ME/gpu-memory-book"

#: First lines of the set-up cell; tests check a notebook's first code cell starts with them.
SETUP_MARKER = "# Colab set-up: installs this book's library there; does nothing elsewhere."

SETUP_SOURCE = f'''{SETUP_MARKER}
import importlib.util, sys
if "google.colab" in sys.modules and importlib.util.find_spec("vramlib") is None:
    %pip install -q "vramlib @ git+{REPO_URL}"'''


def is_setup_cell(cell: dict) -> bool:
    """Whether ``cell`` is the book's set-up cell (a code cell starting with SETUP_SOURCE)."""
    return cell.get("cell_type") == "code" and "".join(cell.get("source", "")).startswith(SETUP_SOURCE)


def setup_cell() -> nbformat.NotebookNode:
    """A fresh set-up cell (its source folded away on the site: tag ``hide-input``)."""
    cell = nbformat.v4.new_code_cell(SETUP_SOURCE)
    cell.metadata["tags"] = ["hide-input"]
    return cell


def ensure(path: str) -> bool:
    """Insert the set-up cell before the first code cell of the notebook at ``path`` if missing.

    Returns True when the file was changed.
    """
    nb = nbformat.read(path, as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    if code and is_setup_cell(nb.cells[code[0]]):
        return False
    nb.cells.insert(code[0] if code else len(nb.cells), setup_cell())
    nbformat.write(nb, path)
    return True


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(("added set-up cell: " if ensure(p) else "already set up:   ") + p)

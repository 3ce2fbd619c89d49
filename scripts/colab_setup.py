"""The one set-up cell that every notebook of the book starts with (its first code cell), and
the one setting it is made from: the repository URL, ``repository.url`` in _config.yml.

With the URL set, the cell installs the book's library from that repository on Google Colab
(when the kernel lacks ``vramlib``); with it empty (no repository configured) the cell installs
nothing from anywhere and, on Colab only, stops with a message that says so.  Everywhere
else it does nothing and prints nothing, so nbval sees no output.  A chapter that needs more
than ``vramlib`` and what Colab ships appends its extra packages to the ``%pip install``
line; replacing the cell keeps them.  The site's launch buttons and repository links follow
the same setting (_ext/book_html.py): none while it is empty.

Usage:
  python scripts/colab_setup.py NOTEBOOK...   add the set-up cell, or bring an outdated one
                                              up to date in place (first code cell only)
  python scripts/colab_setup.py --all         the same for every notebook under chapters/
  python scripts/colab_setup.py --check       exit 1 if repository.url is a placeholder or any
                                              notebook's set-up cell is outdated (`make book`)
Outputs need no re-execution: the cell prints nothing outside Colab.
tests/test_notebooks_policy.py checks every notebook in _toc.yml; scripts/nbbuild.py adds
the cell too.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent

#: First line of the set-up cell: marks a notebook's first code cell as the set-up cell.
SETUP_MARKER = "# Colab set-up: installs this book's library there; does nothing elsewhere."

_HEAD = f'''{SETUP_MARKER}
import importlib.util, sys
if "google.colab" in sys.modules and importlib.util.find_spec("vramlib") is None:
'''
_NO_REPO = '''    raise ModuleNotFoundError("vramlib is missing, and this copy of the book names no "
                              "repository to install it from (see its README)")'''
_PIP = re.compile(r'^    %pip install -q "vramlib @ git\+[^"]*"(?P<extras>.*)$', re.M)

#: Parts of a URL that mark it as a placeholder, never a real repository ("REPLACE-ME" is a
#: valid GitHub account name that anyone could register: installing from it is a hole).
PLACEHOLDERS = ("replace-me", "replace_me", "replaceme", "your-", "your_", "<", ">", "example", "xxx")
_GITHUB = re.compile(r"https://github\.com/[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]+")


def url_problem(url: object) -> str | None:
    """Why ``url`` cannot be the book's repository URL, or None ('' means: none configured)."""
    if url is None or url == "":
        return None
    if not isinstance(url, str):
        return f"repository.url in _config.yml must be a string; got {url!r}"
    if any(p in url.lower() for p in PLACEHOLDERS):
        return (f"repository.url in _config.yml is a placeholder ({url!r}): set the book's real "
                "repository, https://github.com/OWNER/REPO, or leave it empty ('') for a site "
                "without launch buttons and repository links")
    if not _GITHUB.fullmatch(url.rstrip("/")):
        return (f"repository.url in _config.yml must be https://github.com/OWNER/REPO (Colab opens "
                f"notebooks from GitHub) or empty; got {url!r}")
    return None


def repository_url(root: Path = ROOT) -> str:
    """The configured repository URL ('' if none); ValueError naming the fix if it is bad."""
    import yaml

    cfg = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
    url = (cfg.get("repository") or {}).get("url") or ""
    problem = url_problem(url)
    if problem:
        raise ValueError(problem)
    return url.rstrip("/")


def setup_source(url: str, extras: str = "") -> str:
    """The set-up cell's source for repository ``url`` ('' = none configured)."""
    if not url:
        return _HEAD + _NO_REPO
    return _HEAD + f'    %pip install -q "vramlib @ git+{url}"{extras}'


def is_setup_cell(cell: dict) -> bool:
    """Whether ``cell`` is the book's set-up cell, current or outdated (it starts with the marker)."""
    return cell.get("cell_type") == "code" and "".join(cell.get("source", "")).startswith(SETUP_MARKER + "\n")


def current_source(cell: dict, url: str) -> str:
    """What set-up cell ``cell`` should be for ``url`` (keeping its extra packages)."""
    m = _PIP.search("".join(cell.get("source", "")))
    return setup_source(url, m.group("extras") if m else "")


def setup_cell(url: str | None = None) -> nbformat.NotebookNode:
    """A fresh set-up cell (its source folded away on the site: tag ``hide-input``)."""
    cell = nbformat.v4.new_code_cell(setup_source(repository_url() if url is None else url))
    cell.metadata["tags"] = ["hide-input"]
    return cell


def ensure(path: str | Path, url: str | None = None) -> bool:
    """Make the first code cell of the notebook at ``path`` the current set-up cell: replace
    an outdated one in place, or insert one before the first code cell.  True if changed."""
    url = repository_url() if url is None else url
    nb = nbformat.read(path, as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    if code and is_setup_cell(nb.cells[code[0]]):
        cell = nb.cells[code[0]]
        new = current_source(cell, url)
        if cell.source == new:
            return False
        cell.source = new
    else:
        nb.cells.insert(code[0] if code else len(nb.cells), setup_cell(url))
    nbformat.write(nb, path)
    return True


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def check(root: Path = ROOT) -> list[str]:
    """Problems: a placeholder URL, or notebooks whose set-up cell is missing or outdated."""
    try:
        url = repository_url(root)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    for p in notebooks(root):
        nb = nbformat.read(p, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        if not code or not is_setup_cell(code[0]):
            problems.append(f"{p.relative_to(root)}: no set-up cell")
        elif code[0].source != current_source(code[0], url):
            problems.append(f"{p.relative_to(root)}: set-up cell does not match repository.url {url!r}")
    if problems:
        problems.append("fix: python scripts/colab_setup.py --all")
    return problems


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        problems = check()
        for p in problems:
            print(f"colab_setup: {p}", file=sys.stderr)
        if not problems:
            url = repository_url()
            print(f"colab_setup: repository {url!r}, {len(notebooks())} notebooks' set-up cells match"
                  if url else f"colab_setup: no repository configured (no launch buttons); "
                              f"{len(notebooks())} notebooks' set-up cells match")
        return 1 if problems else 0
    try:
        url = repository_url()
    except ValueError as exc:
        print(f"colab_setup: {exc}", file=sys.stderr)
        return 1
    paths = notebooks() if argv == ["--all"] else [Path(a) for a in argv]
    for p in paths:
        print(("updated set-up cell: " if ensure(p, url) else "already set up:     ") + str(p))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The notebook policy of the README's contributing section, checked for every chapter.

- every notebook under chapters/ is listed in _toc.yml, and every notebook that _toc.yml lists
  exists;
- each one's first code cell is the Colab set-up cell of scripts/colab_setup.py;
- each one is committed with outputs, and none of them is an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from book_status import toc_files  # noqa: E402
from colab_setup import current_source, is_setup_cell, repository_url  # noqa: E402

TOC_DOCS = toc_files(ROOT / "_toc.yml")
TOC_NOTEBOOKS = sorted(d + ".ipynb" for d in TOC_DOCS if (ROOT / (d + ".ipynb")).exists())
ALL_NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "chapters").rglob("*.ipynb")
                       if ".ipynb_checkpoints" not in p.parts)


def test_toc_has_notebooks() -> None:
    assert TOC_NOTEBOOKS, "_toc.yml lists no notebook"


def test_every_toc_entry_exists() -> None:
    missing = [d for d in TOC_DOCS if not any((ROOT / (d + s)).exists() for s in (".ipynb", ".md", ""))]
    assert not missing, f"_toc.yml lists documents that do not exist: {missing}"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS)
def test_listed_in_toc(path: str) -> None:
    assert path in TOC_NOTEBOOKS, f"{path} is not listed in _toc.yml (add it under its part)"


@pytest.mark.parametrize("path", TOC_NOTEBOOKS)
def test_first_code_cell_is_colab_setup(path: str) -> None:
    nb = nbformat.read(ROOT / path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and is_setup_cell(code[0]), (
        f"{path}: the first code cell must be the set-up cell: run `python scripts/colab_setup.py {path}`")
    assert code[0].source == current_source(code[0], repository_url()), (
        f"{path}: the set-up cell does not match repository.url: run `python scripts/colab_setup.py --all`")
    assert not code[0].get("outputs"), f"{path}: the set-up cell must print nothing outside Colab"
    assert "scikit-learn" not in code[0].source, (
        f"{path}: the digits data ship with vramlib (vramlib/data/digits/); install no scikit-learn")


@pytest.mark.parametrize("path", TOC_NOTEBOOKS)
def test_committed_with_outputs_and_no_errors(path: str) -> None:
    nb = nbformat.read(ROOT / path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any(c.get("outputs") for c in code), f"{path} has no outputs: run `make execute NB={path}`"
    unexecuted = [i for i, c in enumerate(code) if c.get("execution_count") is None and c.source.strip()]
    assert not unexecuted, f"{path}: code cells {unexecuted} were not executed: run `make execute NB={path}`"
    errors = [o.get("ename") for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path} has error outputs {errors}"


def test_repository_url_is_real_or_empty() -> None:
    from colab_setup import url_problem

    repository_url()  # raises, naming the fix, on a placeholder
    assert url_problem("") is None and url_problem("https://github.com/vramlib-dev/gpu-memory-book") is None
    for bad in ("https://github.com/REPLACE-ME/gpu-memory-book", "https://github.com/<owner>/<repo>",
                "https://gitlab.com/a/b", "github.com/a/b", 42):
        assert url_problem(bad), bad


def test_colab_setup_replaces_an_outdated_cell_in_place(tmp_path: Path) -> None:
    import nbformat

    from colab_setup import ensure, setup_source

    old = setup_source("https://github.com/REPLACE-ME/gpu-memory-book", ' "transformers>=4.56"')
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell(old),
                                         nbformat.v4.new_code_cell("x = 1")])
    p = tmp_path / "t.ipynb"
    nbformat.write(nb, p)
    url = "https://github.com/vramlib-dev/gpu-memory-book"
    assert ensure(p, url) and not ensure(p, url)
    code = [c for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code"]
    assert [c.source for c in code] == [setup_source(url, ' "transformers>=4.56"'), "x = 1"]
    assert ensure(p, "")
    code = [c for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code"]
    assert len(code) == 2 and code[0].source == setup_source("") and "git+" not in code[0].source


def test_status_table_lists_every_notebook(tmp_path: Path) -> None:
    import book_status

    text = book_status.render(ROOT)
    for path in TOC_NOTEBOOKS:
        assert f"</{path[:-6]}>" in text
    assert "## Recorded GPU results" in text


@pytest.mark.parametrize("url", ["", "https://github.com/vramlib-dev/gpu-memory-book"])
def test_setup_cell_installs_only_on_colab_without_vramlib(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    import importlib.util
    import types

    from IPython.core.inputtransformer2 import TransformerManager

    from colab_setup import setup_source

    code = TransformerManager().transform_cell(setup_source(url))
    calls: list[tuple[str, str]] = []
    shell = types.SimpleNamespace(run_line_magic=lambda name, line: calls.append((name, line)))

    def run() -> list[tuple[str, str]]:
        calls.clear()
        exec(code, {"get_ipython": lambda: shell})  # noqa: S102 - the cell's own code
        return list(calls)

    assert run() == [], "outside Colab the cell must do nothing"
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert run() == [], "on Colab with vramlib already importable the cell must do nothing"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vramlib" else real_find_spec(name, *a))
    if url:
        assert run() == [("pip", f'install -q "vramlib @ git+{url}"')]
    else:  # no repository configured: nothing is installed from anywhere, and it says why
        with pytest.raises(ModuleNotFoundError, match="names no repository"):
            run()
        assert calls == []

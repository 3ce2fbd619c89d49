"""scripts/handouts.py: per-chapter handout, exercise and solution sheets."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import handouts  # noqa: E402

NB = ROOT / "chapters" / "part3-hardware" / "when-low-bits-are-not-faster.ipynb"


def test_three_sheets_in_two_page_sizes(tmp_path):
    files = handouts.build(NB, tmp_path, mathjax=None, pdf=False)
    names = sorted(p.name for p in files)
    assert len(names) == 6 and all(p.suffix == ".html" for p in files)
    text = {k: " ".join((tmp_path / NB.stem / f"{NB.stem}-{k}-a4.html").read_text().split())
            for k in ("handout", "exercises", "solutions")}
    letter = (tmp_path / NB.stem / f"{NB.stem}-handout-letter.html").read_text()
    assert "size: A4" in text["handout"] and "size: letter" in letter
    # key formulas first, on every sheet
    assert all(t.index("Key formulas") < t.index("</h1>") + 200 for t in text.values())
    # exercises without solutions; solutions separate
    assert "Exercise 1" in text["exercises"] and "Solution to exercise 1" in text["solutions"]
    assert "Solution to exercise" not in text["handout"] + text["exercises"]
    assert "compute-bound sooner" in text["solutions"]
    assert "compute-bound sooner" not in text["exercises"] + text["handout"]
    # MyST resolved: glued numbers, numbered figures, no raw roles or hidden checks
    for t in text.values():
        assert "{glue}" not in t and "{numref}" not in t and "{cite}" not in t
    assert "Figure 2" in text["handout"] and "data:image/png;base64" in text["handout"]
    assert "# Check (hidden)" not in text["handout"]


# --- every chapter keeps its handout (cheap: from the sources, no browser) ---------------

CHAPTERS = handouts.chapter_notebooks()


def _text(h: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", h).split())


def test_every_toc_chapter_is_handed_out():
    stems = {p.stem for p in CHAPTERS}
    assert len(CHAPTERS) >= 20 and "pretraining" in stems and "llm-scale" in stems
    assert not {"claims-ledger", "gpu-evidence"} & stems      # the appendix: no exercises


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_key_formulas_exercises_and_solutions(nb):
    ch = handouts.Chapter(nb)
    sheets = ch.sheets()
    assert ch.key_formulas(), f"{nb.stem}: no key formula (display equation or key-formulas.yml)"
    assert ch.exercises, f"{nb.stem}: the splitter finds no exercise"
    labels = [lab for lab, _ in ch.exercises]
    solved = [lab for lab, _ in ch.solutions]
    assert all(labels) and len(set(labels)) == len(labels), f"{nb.stem}: unlabelled exercise"
    assert sorted(solved) == sorted(labels), f"{nb.stem}: exercises {labels}, solutions {solved}"
    ex, sol, hand = (_text(sheets[k]) for k in ("exercises", "solutions", "handout"))
    for k in ("exercises", "solutions", "handout"):
        assert sheets[k].startswith('<div class="box formulas">'), f"{nb.stem}: {k} sheet"
    assert sol.count("Solution to exercise") == len(labels) and "exercise ?" not in sol
    for _, body in ch.solutions:                  # every solution on its sheet, on no other
        words = _text(body)
        assert words and words in sol, f"{nb.stem}: a solution is missing from its sheet"
        assert words not in ex and words not in hand, f"{nb.stem}: solution text leaks"


def test_key_formulas_file_names_real_chapters_and_sections():
    listed = handouts.listed_formulas()
    by_stem = {p.stem: p for p in CHAPTERS}
    for stem, entries in listed.items():
        assert stem in by_stem, f"key-formulas.yml: {stem} is no chapter of _toc.yml"
        ch = handouts.Chapter(by_stem[stem])
        ch.sheets()
        assert not ch.formulas, f"{stem} has display equations now: drop its yml entry"
        heads = {ln.lstrip("#").strip() for c in ch.nb.cells if c.cell_type == "markdown"
                 for ln in c.source.splitlines() if ln.startswith("#")}
        for e in entries:
            assert e["tex"].strip() and e["section"] in heads, f"{stem}: {e['section']!r}"


def test_key_formulas_come_from_the_prose_not_the_solutions(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# T\n\n$$a = 1$$\n\n```{exercise}\n:label: ex-t\nShow $$b = 2$$\n```\n\n"
        "```{solution} ex-t\nBecause $$c = 3$$.\n```\n")])
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    ch = handouts.Chapter(path)
    sheets = ch.sheets()
    assert ch.key_formulas() == ["a = 1"]
    assert "c = 3" in sheets["solutions"] and "c = 3" not in sheets["exercises"]


def test_a_chapter_without_formulas_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(handouts, "listed_formulas", lambda: {})
    with pytest.raises(SystemExit, match="key-formulas.yml"):
        handouts.Chapter(ROOT / "chapters" / "part1-stage-memory" / "debugging-oom.ipynb").sheets()


# --- the printed sheets (slow: headless Chromium) ----------------------------------------

SIZES_PT = {"a4": (595, 842), "letter": (612, 792)}


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("pdfinfo")),
                    reason="needs chromium and poppler-utils")
def test_printed_sheets_page_size_and_formulas_on_page_one(tmp_path):
    """Chromium prints each sheet at its paper size, nothing wider than the column."""
    nb = ROOT / "chapters" / "part2-compression" / "putting-it-together.ipynb"
    files = handouts.build(nb, tmp_path, mathjax=handouts.default_mathjax(), pdf=True)
    assert handouts.overflows([p.with_suffix(".html") for p in files]) == []
    for pdf in files:
        info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
        w, h = map(float, re.search(r"Page size:\s+([\d.]+) x ([\d.]+)", info).groups())
        size = "a4" if "-a4." in pdf.name else "letter"
        assert (round(w), round(h)) == SIZES_PT[size], pdf.name
        first = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(pdf), "-"],
                               capture_output=True, text=True).stdout
        assert "Key formulas" in first, pdf.name

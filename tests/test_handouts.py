"""scripts/handouts.py: per-chapter handout, exercise and solution sheets."""

import sys
from pathlib import Path

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

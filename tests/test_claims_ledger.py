"""The claims ledger (chapters/appendix/claims-ledger.md): every claim of the two source
articles has a row that quotes it, gives a verdict and links the section that checks it, and
every number the ledger takes from a chapter (a MyST substitution) equals what that chapter
glues in its committed outputs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import ledger_values  # noqa: E402

TEXT = ledger_values.LEDGER.read_text(encoding="utf-8")
ROWS = {m.group(1): m.group(0) for m in re.finditer(r"^\| ([AB]\d{1,2}) \|.*$", TEXT, re.M)}
VERDICTS = ("holds", "holds with caveats", "wrong", "not testable")


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split(" | ")]


def test_every_claim_has_a_row():
    assert sorted(ROWS) == sorted([f"A{i}" for i in range(1, 13)] + [f"B{i}" for i in range(1, 14)])


def test_each_row_quotes_the_claim_gives_a_verdict_and_links_its_check():
    for cid, row in ROWS.items():
        c = cells(row)
        assert len(c) == 5, (cid, len(c))
        assert c[1].startswith('"') and c[1].endswith('"'), f"{cid}: quote the article's claim"
        assert c[2].startswith(VERDICTS), f"{cid}: verdict {c[2]!r}"
        assert "{doc}" in c[4] or "{ref}" in c[4], f"{cid}: link the section that checks it"


def test_ledger_numbers_match_the_chapters_outputs():
    stale = ledger_values.stale()
    assert not stale, f"run `python scripts/ledger_values.py --write`: {stale}"


def test_every_substitution_used_is_bound():
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", TEXT))
    assert used and used <= set(ledger_values.BINDINGS), used - set(ledger_values.BINDINGS)
    assert set(ledger_values.ledger_substitutions(TEXT)) == set(ledger_values.BINDINGS)


def test_refs_point_at_labels_that_exist():
    labels = set()
    for nb in (ROOT / "chapters").rglob("*.ipynb"):
        labels |= set(re.findall(r"\((\w[\w-]*)\)=", nb.read_text(encoding="utf-8")))
    refs = set(re.findall(r"\{ref\}`([^`<]+)`", TEXT))
    assert refs and refs <= labels, refs - labels


def test_stale_detection_can_fail(tmp_path: Path):
    (tmp_path / "chapters" / "appendix").mkdir(parents=True)
    for nb in {v[0] for v in ledger_values.BINDINGS.values()}:
        (tmp_path / nb).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / nb).write_text((ROOT / nb).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "chapters/appendix/claims-ledger.md").write_text(
        TEXT.replace("qo_qdq: 177%", "qo_qdq: 61%"), encoding="utf-8")
    assert "qo_qdq" in ledger_values.stale(tmp_path)

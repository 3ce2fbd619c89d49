"""The claims ledger (chapters/appendix/claims-ledger.ipynb): every claim of the two source
articles has a row that quotes it, gives a verdict and links an existing section; every
number it shows is glued from a chapter's committed outputs (``BIND``), and its committed
numbers equal what those chapters glue now; a hidden check cell asserts each verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path

from vramlib import glued_values

ROOT = Path(__file__).resolve().parent.parent
LEDGER = ROOT / "chapters" / "appendix" / "claims-ledger.ipynb"
NB = json.loads(LEDGER.read_text(encoding="utf-8"))
MD = "\n".join("".join(c["source"]) for c in NB["cells"] if c["cell_type"] == "markdown")
ROWS = {m.group(1): m.group(0) for m in re.finditer(r"^\| ([AB]\d{1,2}) \|.*$", MD, re.M)}
VERDICTS = ("holds", "holds with caveats", "wrong", "not testable")
IDS = [f"A{i}" for i in range(1, 13)] + [f"B{i}" for i in range(1, 14)]


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split(" | ")]


def bind_table(nb: dict = NB) -> dict[str, tuple[str, str]]:
    """The ledger's BIND table: {ledger name: (chapter notebook, glue name)}, from the code
    cell that defines it (run without its last line, which reads the chapters)."""
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and "BIND = {" in src:
            scope: dict = {}
            exec(src.replace("v = bind(BIND)", ""), scope)
            return scope["BIND"]
    raise AssertionError("the ledger has no BIND table")


def stale(root: Path = ROOT, ledger: dict = NB) -> dict[str, tuple[str | None, str]]:
    """{ledger name: (what the ledger's outputs show, what the chapter glues now)}."""
    shown = {}
    for cell in ledger["cells"]:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            text = o.get("data", {}).get("application/papermill.record/text/plain")
            if name and text is not None:
                shown[name] = ("".join(text) if isinstance(text, list) else text).strip("'\"")
    out = {}
    for name, (nb, src) in bind_table(ledger).items():
        now = glued_values(root / "chapters" / nb)[src]
        if shown.get(name) != now:
            out[name] = (shown.get(name), now)
    return out


def test_every_claim_has_a_row():
    assert sorted(ROWS) == sorted(IDS)


def test_each_row_quotes_the_claim_gives_a_verdict_and_links_its_check():
    for cid, row in ROWS.items():
        c = cells(row)
        assert len(c) == 5, (cid, len(c))
        assert c[1].startswith('"') and c[1].endswith('"'), f"{cid}: quote the digest's claim"
        assert c[2].startswith(VERDICTS), f"{cid}: verdict {c[2]!r}"
        assert "{doc}" in c[4] or "{ref}" in c[4], f"{cid}: link the section that checks it"


def test_links_point_at_documents_and_labels_that_exist():
    labels = set()
    for nb in (ROOT / "chapters").rglob("*.ipynb"):
        labels |= set(re.findall(r"\((\w[\w-]*)\)=", nb.read_text(encoding="utf-8")))
    for cid, row in ROWS.items():
        refs = re.findall(r"\{ref\}`([^`<]+)`", row)
        assert set(refs) <= labels, (cid, set(refs) - labels)
        for doc in re.findall(r"\{doc\}`(?:[^`<]*<)?([^`>]+)>?`", row):
            target = (LEDGER.parent / doc).resolve()
            assert any(target.with_suffix(s).exists() for s in (".ipynb", ".md")), (cid, doc)


def test_every_number_shown_is_glued_and_every_bound_number_used():
    used = set(re.findall(r"\{glue(?::text)?\}`([\w-]+)`", MD))
    glued = set(glued_values(LEDGER))          # chapters' values (BIND), records, derived
    assert used and used <= glued, f"shown but not glued by the ledger: {used - glued}"
    bound = set(bind_table())
    code = "".join("".join(c["source"]) for c in NB["cells"] if c["cell_type"] == "code")
    checked = set(re.findall(r'v\["(\w+)"\]', code))
    assert bound <= used | checked, f"bound but neither shown nor checked: {bound - used}"


def test_ledger_numbers_match_the_chapters_outputs():
    bad = stale()
    assert not bad, f"re-execute chapters/appendix/claims-ledger.ipynb: {bad}"


def test_stale_detection_can_fail(tmp_path: Path):
    name, (nb, src) = next(iter(bind_table().items()))
    chapter = json.loads((ROOT / "chapters" / nb).read_text(encoding="utf-8"))
    for cell in chapter["cells"]:
        for o in cell.get("outputs", []):
            if o.get("metadata", {}).get("scrapbook", {}).get("name") == src:
                o["data"]["application/papermill.record/text/plain"] = "61%"
    for other in {b[0] for b in bind_table().values()}:
        dst = tmp_path / "chapters" / other
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text((ROOT / "chapters" / other).read_text(encoding="utf-8"))
    (tmp_path / "chapters" / nb).write_text(json.dumps(chapter), encoding="utf-8")
    assert name in stale(tmp_path)


def test_a_hidden_cell_asserts_every_verdict():
    checks = [c for c in NB["cells"] if c["cell_type"] == "code"
              and "".join(c["source"]).startswith("# Check (hidden)")]
    assert checks and all("remove-cell" in c["metadata"].get("tags", []) for c in checks)
    src = "".join(checks[0]["source"])
    assert "assert not failed" in src and "CHECKS" in src


def test_each_rows_verdict_is_the_one_its_conditions_check():
    code = "".join("".join(c["source"]) for c in NB["cells"] if c["cell_type"] == "code")
    checked = re.findall(r'\("([AB]\d{1,2})", "(holds|caveats|wrong)",', code)
    assert {cid for cid, _ in checked} == set(IDS) - {"B5"}
    words = {"holds": "holds", "caveats": "holds with caveats", "wrong": "wrong"}
    for cid, verdict in checked:
        cell = cells(ROWS[cid])[2]
        if verdict == "holds":   # plain "holds", not only as part of "holds with caveats"
            assert re.search(r"\bholds\b(?! with caveats)", cell), (cid, cell)
        else:
            assert words[verdict] in cell, (cid, verdict, cell)
    assert cells(ROWS["B5"])[2].startswith("not testable")

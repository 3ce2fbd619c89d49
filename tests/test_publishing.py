"""The publishing scripts: status table of recorded GPU results, and the internal link check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import book_status  # noqa: E402
import check_links  # noqa: E402


def test_result_rows_read_through_the_records_reader(tmp_path: Path) -> None:
    from vramlib.core.records import write_record
    write_record(tmp_path / "a.json", {"x": 1}, {}, "cpu")
    (tmp_path / "b.json").write_text(json.dumps({"provenance": {"device": "old layout"}}))
    (tmp_path / "c.json").write_text("{not json")
    rows = {r["file"]: r for r in book_status.result_rows(tmp_path)}
    assert rows["a.json"]["torch"] and rows["a.json"]["date"].startswith("20")
    assert rows["b.json"]["device"] == "unreadable: ValueError"          # schema version 0
    assert rows["c.json"]["device"] == "unreadable: JSONDecodeError"
    shipped = {r["file"]: r for r in book_status.result_rows()}
    assert shipped["part1_gpu.json"]["device"] == "NVIDIA H100 80GB HBM3"


def test_result_rows_without_results(tmp_path: Path) -> None:
    assert list(book_status.result_rows(tmp_path / "missing")) == []


def test_check_links_finds_each_kind_of_problem(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#here">ok</a> <a href="sub/page.html#nowhere">bad anchor</a>'
        '<a href="missing.html">bad file</a> <a href="https://example.org/">external link: fine</a>'
        '<script src="https://cdn.example.org/x.js"></script> <img src="sub/pic.png">'
        '<a href="#top" id="top">self</a>')
    (tmp_path / "sub" / "page.html").write_text('<h1 id="here">x</h1><link rel="stylesheet" href="../style.css">')
    (tmp_path / "sub" / "pic.png").write_bytes(b"\x89PNG")
    problems = check_links.check(tmp_path)
    assert sorted(problems) == sorted([
        "index.html: missing anchor #nowhere in sub/page.html",
        "index.html: broken link missing.html",
        "index.html: <script src> loads a remote asset https://cdn.example.org/x.js (not offline)",
        "sub/page.html: broken link ../style.css",
    ])


def test_status_tables_break_across_pdf_pages_and_show_gpu_beside_cpu() -> None:
    text = book_status.render(ROOT)
    # every table is a longtable (issue 18: the execution table ran off its PDF page)
    n_tables = sum(1 for line in text.splitlines() if line.startswith("|---"))
    assert n_tables and text.count(":class: longtable") == n_tables
    header = next(line for line in text.splitlines() if line.startswith("| chapter | CPU"))
    assert "GPU status" in header and "GPU (s)" in header
    assert "## Numbers in prose neither glued nor cited" in text


def test_status_reads_the_gpu_execution_record(tmp_path: Path) -> None:
    from vramlib.core.records import write_record
    assert book_status.gpu_execution(tmp_path) is None
    write_record(tmp_path / "gpu_execution.json",
                 {"chapters": {"a.ipynb": {"status": "ok", "seconds": 1.0}}}, {}, "cpu")
    assert book_status.gpu_execution(tmp_path).results["chapters"]["a.ipynb"]["status"] == "ok"
    shipped = book_status.gpu_execution()          # the package's record, via load_record
    assert shipped is not None and shipped.provenance.device.startswith(("NVIDIA H100",
                                                                         "NVIDIA H200"))
    (tmp_path / "gpu_execution.json").write_text(json.dumps({"provenance": {}, "results": {}}))
    with pytest.raises(ValueError, match="migrate_records"):   # version 0: says how to fix
        book_status.gpu_execution(tmp_path)

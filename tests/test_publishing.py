"""The publishing scripts: status table of recorded GPU results, and the internal link check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import book_status  # noqa: E402
import check_links  # noqa: E402


def test_result_rows_reads_provenance_wherever_it_is(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({
        "name": "kv_cache", "config": {"name": "not a device"},
        "provenance": {"device": {"name": "NVIDIA H100 80GB HBM3", "driver": "550.54", "torch": "2.4.0",
                                  "cuda": "12.4"}, "date": "2026-11-21T05:00:00Z"}}))
    (tmp_path / "b.json").write_text(json.dumps({"device_name": "NVIDIA H200", "driver_version": "560.1",
                                                 "torch_version": "2.5.1", "timestamp": "2026-11-20"}))
    (tmp_path / "c.json").write_text("{not json")
    rows = {r["file"]: r for r in book_status.result_rows(tmp_path)}
    assert rows["a.json"] == {"file": "a.json", "device": "NVIDIA H100 80GB HBM3", "driver": "550.54",
                              "torch": "2.4.0", "cuda": "12.4", "date": "2026-11-21T05:00:00Z"}
    assert (rows["b.json"]["device"], rows["b.json"]["driver"], rows["b.json"]["torch"],
            rows["b.json"]["date"]) == ("NVIDIA H200", "560.1", "2.5.1", "2026-11-20")
    assert rows["c.json"]["device"] == "unreadable: JSONDecodeError"


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
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("")
    assert book_status.gpu_execution(tmp_path) is None
    rec = {"provenance": {"name": "NVIDIA H200"}, "config": {},
           "results": {"chapters": {"a.ipynb": {"status": "ok", "seconds": 1.0}}}}
    (tmp_path / "benchmarks" / "results" / "gpu_execution.json").write_text(json.dumps(rec))
    assert book_status.gpu_execution(tmp_path)["results"]["chapters"]["a.ipynb"]["status"] == "ok"

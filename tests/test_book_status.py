"""The status page (scripts/book_status.py): every chapter's CPU and GPU runs side by side,
marked against the book's time budgets, and the check at which a GPU run stopped."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import book_status  # noqa: E402


def test_times_past_the_budget_are_marked():
    assert book_status._secs(59.9, 60) == "59.9"
    assert book_status._secs(60.1, 60) == "60.1 OVER"
    assert book_status._secs(None, 60) is None


def test_gpu_name_and_failed_check_are_short():
    assert book_status._gpu_name("CUDA GPU: NVIDIA H200, 139.80 GiB, cc 9.0") == "H200"
    assert book_status._gpu_name("") is None
    assert book_status._gpu_name("CUDA GPU: NVIDIA H100 80GB HBM3, 79.18 GiB") == "H100 80GB"
    err = ("Cell In[3], line 2\n      1 # Check (hidden): the peak is within 5 %.\n"
           "----> 2 assert err < 0.05, err\n\nAssertionError: 0.07")
    assert book_status._failed_check(err) == "the peak is within 5 %. → AssertionError: 0.07"
    err = "Cell In[3], line 9\n----> 9 assert a == b, (a, b)\n\nAssertionError: (1, 2)"
    assert book_status._failed_check(err) == "`assert a == b, (a, b)` → AssertionError: (1, 2)"


def test_the_page_shows_cpu_and_gpu_side_by_side_with_budgets():
    text = book_status.render(ROOT)
    header = next(line for line in text.splitlines() if line.startswith("| chapter | CPU"))
    for col in ("CPU status", "CPU (s)", "GPU status", "GPU (s)", "GPU peak (GiB)", "GPU; date"):
        assert col in header, col
    assert "| **the whole book** |" in text
    assert f"at most {book_status.CHAPTER_BUDGET_S:.0f} s" in text
    n_cols = header.count("|")
    lines = text.splitlines()
    first = lines[lines.index(header) + 2:]
    rows = first[:next(i for i, ln in enumerate(first) if not ln.startswith("|"))]
    assert len(rows) >= 2 and all(ln.count("|") == n_cols for ln in rows)


def test_the_book_time_is_one_runs_wall_clock_only_when_every_chapter_shares_it():
    run = {"started": "2026-11-28T00:00:00Z", "notebooks": 3, "jobs": 2,
           "threads_per_kernel": 1, "wall_seconds": 100.0}
    assert book_status._one_book_run([run, dict(run), dict(run)]) == run
    assert book_status._one_book_run([run, None, run]) is None           # one re-run alone
    assert book_status._one_book_run([run, {**run, "started": "x"}]) is None
    assert book_status._one_book_run([run] * 4) is None                  # run had 3 chapters
    assert book_status._one_book_run([]) is None

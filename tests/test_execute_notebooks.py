"""scripts/execute_notebooks.py: the order and arguments of a book run (issue 12)."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import execute_notebooks as ex  # noqa: E402


def _nb(path: Path, seconds: float | None) -> Path:
    nb = nbformat.v4.new_notebook()
    if seconds is not None:
        nb.metadata["vramlib"] = {"execution": {"seconds": seconds}}
    nbformat.write(nb, path)
    return path


def test_longest_chapters_first_and_the_claims_ledger_last(tmp_path):
    ledger = _nb(tmp_path / "claims-ledger.ipynb", 99.0)
    short, long_, new = (_nb(tmp_path / f"{n}.ipynb", s)
                         for n, s in (("short", 3.0), ("long", 40.0), ("new", None)))
    assert ex._longest_first([ledger, short, new, long_]) == [long_, short, new, ledger]


def test_jobs_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        ex.main(["--jobs", "0", "chapters"])
    assert "--jobs must be a positive number" in capsys.readouterr().err


def test_a_worker_limits_the_threads_its_kernels_inherit(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    ex._limit_threads(1)
    import os
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"

"""Functions a reader can hold: none in vramlib longer than 60 lines (signature, docstring and
body, as ``ast`` counts them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60


def lengths(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    return [(n.end_lineno - n.lineno + 1, n.name) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "vramlib").rglob("*.py"))


@pytest.mark.parametrize("rel", FILES)
def test_no_function_over_60_lines(rel):
    long = [f"{name} ({n} lines)" for n, name in lengths(ROOT / rel) if n > LIMIT]
    assert not long, f"{rel}: split {', '.join(long)} (limit {LIMIT} lines)"


def test_the_check_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    p = tmp_path / "long.py"
    p.write_text(f"def long():\n{body}\n")
    assert lengths(p) == [(LIMIT + 1, "long")]

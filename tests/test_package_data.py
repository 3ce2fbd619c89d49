"""Every data file under vramlib/ is package data (pyproject.toml), so `pip install .` — not
only an editable checkout — ships it: a file no pattern matches would be missing from the
wheel, and the chapters that read it would fail only for readers who install the package."""

from __future__ import annotations

import glob
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "vramlib"


def test_every_data_file_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["vramlib"]
    shipped = {f for p in patterns for f in glob.glob(p, root_dir=PKG, recursive=True)}
    files = {p.relative_to(PKG).as_posix() for p in (PKG / "data").rglob("*") if p.is_file()
             and "__pycache__" not in p.parts and p.suffix != ".py"}
    assert files, "no data files found under vramlib/data"
    assert files <= shipped, f"not package data (add a pattern to pyproject.toml): {sorted(files - shipped)}"
    assert "data/digits/digits_split_seed0.npz" in shipped

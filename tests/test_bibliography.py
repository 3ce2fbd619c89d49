"""Every bibliography key is defined once across the book's .bib files (a repeated key makes
sphinxcontrib-bibtex drop the file's entries, and the build fails on the missing citations)."""

import re
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_bib_files_listed_exist_and_keys_are_unique():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    files = cfg["bibtex_bibfiles"]
    keys = Counter()
    for f in files:
        text = (ROOT / f).read_text()
        keys.update(re.findall(r"^@\w+\{([^,\s]+),", text, flags=re.M))
    repeated = [k for k, n in keys.items() if n > 1]
    assert not repeated, f"bibliography keys defined more than once: {repeated}"
    assert sorted(str(p.name) for p in ROOT.glob("references*.bib")) == sorted(Path(f).name for f in files)

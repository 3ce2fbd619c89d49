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


def _bib_entries():
    """(file, key, fields) for every entry of every references*.bib file."""
    import pybtex.database

    for path in sorted(ROOT.glob("references*.bib")):
        for key, entry in pybtex.database.parse_file(str(path)).entries.items():
            yield path.name, key, {k.lower(): str(v) for k, v in entry.fields.items()}


def _norm_title(title: str) -> str:
    """A title without braces, case, punctuation or spaces: '{LoRA}: Low-Rank ...' -> 'loralowrank...'."""
    return re.sub(r"[^a-z0-9]", "", title.lower())


def _work_ids(fields: dict) -> list[str]:
    """What identifies the work: its normalised title, DOI and arXiv id, when present."""
    ids = []
    if fields.get("title"):
        ids.append("title:" + _norm_title(fields["title"]))
    if fields.get("doi"):
        ids.append("doi:" + fields["doi"].lower().removeprefix("https://doi.org/"))
    arxiv = fields.get("eprint") or "".join(re.findall(r"arXiv:(\d{4}\.\d{4,5})", fields.get("journal", "")))
    if arxiv:
        ids.append("arxiv:" + arxiv)
    return ids


def duplicate_works(entries) -> dict[str, list[str]]:
    """Works cited under more than one key: {identifier: ['file:key', ...]}."""
    seen: dict[str, list[str]] = {}
    for fname, key, fields in entries:
        for wid in _work_ids(fields):
            seen.setdefault(wid, []).append(f"{fname}:{key}")
    return {wid: where for wid, where in seen.items() if len(where) > 1}


def test_one_key_per_work():
    dups = duplicate_works(_bib_entries())
    assert not dups, (
        "the same work under several bibliography keys (keep one, delete the others and replace "
        f"the removed keys in the chapters' {{cite}} roles): {dups}")


def test_duplicate_detector_can_fail():
    entries = [("a.bib", "hu2021lora", {"title": "{LoRA}: Low-Rank Adaptation of Large Language Models"}),
               ("b.bib", "hu2022lora", {"title": "LoRA: low-rank adaptation of large language models."}),
               ("a.bib", "x", {"title": "One", "doi": "10.1/ABC"}),
               ("b.bib", "y", {"title": "Two", "doi": "https://doi.org/10.1/abc"})]
    dups = duplicate_works(entries)
    assert dups["title:loralowrankadaptationoflargelanguagemodels"] == ["a.bib:hu2021lora", "b.bib:hu2022lora"]
    assert dups["doi:10.1/abc"] == ["a.bib:x", "b.bib:y"]


def test_every_cited_key_is_defined():
    keys = {key for _, key, _ in _bib_entries()}
    used = set()
    for path in ROOT.joinpath("chapters").rglob("*"):
        if path.suffix in (".ipynb", ".md"):
            for group in re.findall(r"\{cite[a-z:]*\}`([^`]*)`", path.read_text(encoding="utf-8")):
                used |= {k.strip() for k in group.split(",") if k.strip()}
    assert not used - keys, f"cited but not in any references*.bib: {sorted(used - keys)}"

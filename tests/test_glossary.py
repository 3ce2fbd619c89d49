"""The glossary's links land: every {ref} names a `(label)=` target of a chapter, every {doc}
a chapter that exists, and the serving/scaling/debugging terms each link to the section that
defines them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "chapters" / "appendix" / "glossary.md"


def labels() -> set[str]:
    found = set()
    for p in (ROOT / "chapters").rglob("*"):
        if p.suffix in (".md", ".ipynb"):
            found |= set(re.findall(r"^\s*\"?\(([A-Za-z0-9_:-]+)\)=", p.read_text(), flags=re.M))
    return found


def entries() -> dict[str, str]:
    """First term line of each glossary entry → its text."""
    text = GLOSSARY.read_text()
    out = {}
    for block in re.findall(r"```\{glossary\}\n(.*?)```", text, flags=re.S):
        for m in re.finditer(r"^(\S[^\n]*)\n(?:\S[^\n]*\n)*((?:  [^\n]*\n?)+)", block, flags=re.M):
            out[m.group(1).strip()] = m.group(2)
    return out


def test_refs_and_docs_exist() -> None:
    text, have = GLOSSARY.read_text(), labels()
    refs = re.findall(r"\{ref\}`([^`<]+)`", text)
    assert refs and not sorted(set(refs) - have), f"unknown labels: {sorted(set(refs) - have)}"
    for doc in re.findall(r"\{doc\}`([^`]+)`", text):
        target = (GLOSSARY.parent / doc)
        assert target.with_suffix(".ipynb").exists() or target.with_suffix(".md").exists(), doc


def test_new_terms_link_to_their_section() -> None:
    e = entries()
    for term in ("paged KV cache", "block table", "continuous batching", "prefix caching",
                 "multi-head latent attention", "sliding-window attention", "speculative decoding",
                 "capacity factor", "expert parallelism", "CPU offload", "activation offloading",
                 "FP8 training", "sequence parallelism", "context parallelism", "memory snapshot",
                 "expandable segments", "KV block pool", "ring attention", "memory_summary"):
        assert term in e, f"no glossary entry {term!r}"
        assert "{ref}`" in e[term], f"{term!r} links to no section label"

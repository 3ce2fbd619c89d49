"""Every "Defined in ..." back-pointer in vramlib's docstrings names a chapter and section
that exist (as d2l's :numref: is checked by its build).

A back-pointer reads ``Defined in Part I, "Pretraining"`` (a chapter title: the notebook's
first ``# `` heading), ``Defined in Part II, "Pruning", section "Structured pruning"`` (a
heading inside that chapter), or lists several quoted names.  Each quoted name must be a
chapter title, or a heading of the chapter named just before it, in the part named.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"Chapter 0": "00-before-you-start", "Part I": "part1-stage-memory",
         "Part II": "part2-compression", "Part III": "part3-hardware", "Appendix": "appendix"}
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$", re.M)


def chapter_headings() -> dict[str, tuple[str, set[str]]]:
    """Chapter title -> (part folder, its headings), from every notebook under chapters/."""
    out = {}
    for nb in sorted((ROOT / "chapters").rglob("*.ipynb")):
        md = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"]
                       if c["cell_type"] == "markdown")
        md = re.sub(r"```.*?```", "", md, flags=re.S)
        heads = [(len(h), t.strip()) for h, t in HEADING.findall(md)]
        title = next(t for n, t in heads if n == 1)
        out[title] = (nb.parent.name, {t for _, t in heads})
    return out


def pointers(text: str) -> list[str]:
    """Each 'Defined in ...' sentence of ``text``, whitespace collapsed."""
    text = " ".join(text.split())
    found = []
    for m in re.finditer(r"Defined in ", text):
        rest, depth, end = text[m.end():], False, None
        for i, ch in enumerate(rest):
            if ch == '"':
                depth = not depth
            elif ch == "." and not depth and (i + 1 == len(rest) or rest[i + 1] == " "):
                end = i
                break
        found.append(rest[:end])
    return found


def docstrings() -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / "vramlib").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc:
                    where = f"{path.relative_to(ROOT)}:{getattr(node, 'name', '<module>')}"
                    out += [(where, p) for p in pointers(doc)]
    return out


def resolve(sentence: str, chapters: dict) -> list[str]:
    """Problems with one back-pointer (empty: it resolves).  Each quoted name belongs to the
    part named last before it, and to the chapter named last before it in that part."""
    token = re.compile("|".join(sorted(map(re.escape, PARTS), key=len, reverse=True)) + r'|"([^"]+)"')
    problems, part, chapter, named = [], None, None, 0
    for m in token.finditer(sentence):
        if m.group(1) is None:
            part, chapter = m.group(0), None
            continue
        name, named = m.group(1), named + 1
        if part is None:
            problems.append(f"{name!r} comes before any part (Chapter 0, Part I-III, Appendix)")
        elif name in chapters and chapters[name][0] == PARTS[part]:
            chapter = name
        elif chapter is not None and name in chapters[chapter][1]:
            continue
        elif chapter is None and sum(name in h for f, h in chapters.values() if f == PARTS[part]) == 1:
            continue                          # a section only one chapter of the part has
        else:
            problems.append(f"{name!r} is no chapter of {part} nor a heading of {chapter!r}")
    return problems or ([] if named else [f"no quoted chapter in {sentence!r}"])


def test_parser_reads_the_three_forms():
    doc = ('Defined in Part II, "Pruning", section "Structured pruning".  Defined in Part I '
           '("Anatomy of memory", "Pretraining").  Defined in Chapter 0, "Bytes, GB and GiB".')
    assert pointers(doc) == ['Part II, "Pruning", section "Structured pruning"',
                             'Part I ("Anatomy of memory", "Pretraining")',
                             'Chapter 0, "Bytes, GB and GiB"']


def test_a_dangling_pointer_is_reported():
    chapters = chapter_headings()
    assert resolve('Part I, "Overview and pipeline"', chapters)
    assert resolve('Part III, "Pretraining"', chapters)          # right title, wrong part
    assert resolve('Part II, "Pruning", section "Rank sweep"', chapters)   # another chapter's
    assert resolve('Part II, "Verdict"', chapters)                # ambiguous: every chapter has one
    assert not resolve('Part I, "Pretraining"', chapters)


def test_every_back_pointer_resolves():
    chapters = chapter_headings()
    found = docstrings()
    assert len(found) > 200
    bad = [f"{where}: {msg}" for where, s in found for msg in resolve(s, chapters)]
    assert not bad, f"{len(bad)} dangling back-pointers:\n" + "\n".join(bad)


@pytest.mark.parametrize("module", ["vramlib.core.surgery", "vramlib.hardware.timing",
                                    "vramlib.core.records", "vramlib.measure.validation"])
def test_new_modules_point_back(module):
    path = ROOT / (module.replace(".", "/") + ".py")
    assert pointers(path.read_text()), module

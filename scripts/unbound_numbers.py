"""List the numbers left in the chapters' prose that are neither glued nor cited (issue 13).

Usage: python scripts/unbound_numbers.py [--count] [PATH ...]
       (PATH: a notebook, a Markdown page or a folder of them; default: every notebook and
       Markdown page under chapters/; exit status 0 always:
       the count is a goal shown on the status page, not yet a gate)

The rule the book follows: every measured or computed number in prose comes from the code
that produced it (``{glue}`name```) or from a cited source.  This script reads the prose —
the Markdown cells of notebooks and the .md pages, including the text inside admonitions,
exercises, solutions, figure captions and tables — and reports each number that is

- a decimal (``3.79``), a percentage (``61 %``), a ratio (``2×``), or an integer of 10 or
  more (``446 GiB``, ``8192``; years 1900–2099 are skipped),

and is NOT

- inside math (``$...$``, ``$$...$$``), inline code, a role (``{glue}`x```, ``{doc}`...```),
  a code block, a link target, a directive's option line or an HTML comment;
- a version or product number (``PyTorch 2.0``, ``RTX 4090``), a shape (``8192 × 8192``)
  or part of a name (``H100``, ``fp32``, ``Llama-2-7B``, ``B12``, ``2:4``, ``v0.3``);
- in a sentence that cites a source (``{cite}`key```), or inside quotation marks in a
  sentence that names the claim of the two source articles it quotes (``**A9**`` in bold,
  or a table row that starts with the claim ID, as in the claims ledger);
- in a page's YAML front matter (MyST substitutions are defined there, not stated).

Small integers without a decimal, percent or × (``2 bytes``, ``three`` and ``4 bits``)
are definitions and counts, not measurements, and are not reported.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"chapters/references.md", "chapters/appendix/status.md"}
# code blocks whose body is not prose (directives such as {admonition} or {exercise} are prose)
CODE_FENCES = {"", "python", "py", "text", "bash", "sh", "console", "json", "yaml", "latex",
               "{code-cell}", "{code}", "{code-block}", "{math}", "{include}", "{bibliography}",
               "{literalinclude}", "{raw}", "{eval-rst}"}

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")
_STRIP = [
    (re.compile(r"<!--.*?-->", re.S), " "),
    (re.compile(r"\$\$.*?\$\$", re.S), " MATH "),
    (re.compile(r"(?<![\\$])\$[^$\n]+?\$"), " MATH "),
    (re.compile(r"\{[\w:-]+\}`[^`]*`"), " ROLE "),
    (re.compile(r"``.+?``|`[^`\n]+`"), " CODE "),
    (re.compile(r"\]\([^)]*\)"), "]"),
    (re.compile(r"https?://\S+"), " URL "),
    (re.compile(r"\{\{[^}]*\}\}"), " SUB "),
]
_CITES = re.compile(r"\{cite[\w:]*\}`")
_CLAIM = re.compile(r"\*\*[AB]\d{1,2}\b|\A\s*\|\s*[AB]\d{1,2}\s*\|")
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”")
_NUMBER = re.compile(
    r"(?<![\w.\-/:^_~#@])"                           # not inside a name, path or 2:4
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?P<tail>\s?(?:%|×(?!\s?\d))|)"                 # 2×, 61 %; not the product 2 × 4
    r"(?![\w:]|\.\d|-[A-Za-z\d])")                    # not 7B, fp32, 2:4, 1.2.3, 4-bit
_VERSION = re.compile(r"(?:torch|PyTorch|Python|CUDA|cuDNN|transformers|version|driver|"
                      r"MyST-NB|Jupyter Book|sm_|compute capability|RTX|GeForce|Radeon|"
                      r"Xeon|EPYC|Ryzen)\s*$", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z*({])|\n\s*\n|\n(?=\s*[*-] |\s*\d+\. |\s*\|)")


@dataclass
class Unbound:
    path: str
    cell: int | None
    line: int
    number: str
    context: str

    def __str__(self) -> str:
        where = f"{self.path}" + (f" cell {self.cell}" if self.cell is not None else "")
        return f"{where}, line {self.line}: {self.number!r} in: {self.context}"


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the prose in a Markdown text: code blocks and option lines out.

    Fences nest (a ```` ````{admonition} ```` may hold a ```` ```python ```` block): a stack
    keeps, for each open fence, its marker and whether its body is code."""
    out: list[tuple[int, str]] = []
    stack: list[tuple[str, bool]] = []
    for no, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m and stack and not m.group(3) and m.group(2)[0] == stack[-1][0][0] \
                and len(m.group(2)) >= len(stack[-1][0]):
            stack.pop()                                    # closes the innermost fence
            continue
        if m and not (stack and stack[-1][1]):             # opens a fence (not inside code)
            info = m.group(3).strip().lower()
            is_code = info in CODE_FENCES or not info.startswith("{")
            stack.append((m.group(2), is_code))
            continue
        if stack and stack[-1][1]:
            continue
        if stack and re.match(r"\s*:[\w-]+:", line):      # a directive's option line
            continue
        if line.startswith("%") or re.match(r"\s*\(.+\)=\s*$", line):   # comment, label
            continue
        out.append((no, line))
    return out


_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)


def unbound_in_text(text: str, path: str, cell: int | None = None) -> list[Unbound]:
    """Every unbound number of one Markdown text."""
    front = _FRONT_MATTER.match(text)
    if front:   # keep the line numbers: blank the front matter's lines
        text = "\n" * front.group(0).count("\n") + text[front.end():]
    lines = prose_lines(text)
    if not lines:
        return []
    found = []
    # sentences may span lines: join the prose, remember where each line starts
    joined, starts = "", []
    for no, line in lines:
        starts.append((len(joined), no))
        joined += line + "\n"
    for sentence_match in re.finditer(r"(?s).+?(?:" + _SENTENCE_END.pattern + r"|\Z)", joined):
        sentence = sentence_match.group(0)
        if _CITES.search(sentence):
            continue
        offset = sentence_match.start()
        clean = sentence
        strip = _STRIP + ([(_QUOTED, "")] if _CLAIM.search(sentence) else [])
        for pattern, repl in strip:  # keep offsets: replace by same-length blanks
            clean = pattern.sub(lambda m: " " * len(m.group(0)), clean)
        for m in _NUMBER.finditer(clean):
            num, tail = m.group("num"), m.group("tail").strip()
            value = float(num.replace(",", ""))
            if not ("." in num or tail or value >= 10):
                continue
            if not tail and "." not in num and 1900 <= value <= 2099:
                continue
            if _VERSION.search(clean[:m.start()]):          # "PyTorch 2.0", "RTX 4090"
                continue
            if re.match(r"\s?×\s?\d", clean[m.end():]) or re.search(r"\d\s?×\s?$",
                                                                 clean[:m.start()]):
                continue                                       # a shape: 8192 × 8192
            pos = offset + m.start()
            line_no = max(no for start, no in starts if start <= pos)
            ctx = " ".join(sentence.split())
            found.append(Unbound(path, cell, line_no, num + tail, ctx[:110]))
    return found


def scan_file(path: Path, root: Path = ROOT) -> list[Unbound]:
    rel = path.relative_to(root).as_posix()
    if path.suffix == ".md":
        return unbound_in_text(path.read_text(encoding="utf-8"), rel)
    nb = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "markdown":
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            out += unbound_in_text(src, rel, i)
    return out


def chapter_files(root: Path = ROOT) -> list[Path]:
    files = [p for p in sorted((root / "chapters").rglob("*")) if p.suffix in (".ipynb", ".md")
             and ".ipynb_checkpoints" not in p.parts and not p.name.startswith("_")]
    return [p for p in files if p.relative_to(root).as_posix() not in SKIP]


def scan(root: Path = ROOT, paths: list[Path] | None = None) -> list[Unbound]:
    """The unbound numbers of ``paths`` (default: every chapter)."""
    return [u for p in (paths or chapter_files(root)) for u in scan_file(p, root)]


def per_file(found: list[Unbound]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for u in found:
        counts[u.path] = counts.get(u.path, 0) + 1
    return counts


def main(argv: list[str]) -> int:
    count_only = "--count" in argv
    paths = []
    for a in (Path(a).resolve() for a in argv if not a.startswith("--")):
        if a.is_dir():   # a folder: its chapters, as in the default scan
            paths += [p for p in chapter_files(ROOT) if p.is_relative_to(a)]
        elif a.suffix in (".ipynb", ".md") and a.is_file():
            paths.append(a)
        else:
            sys.exit(f"unbound_numbers: {a} is neither a chapter (.ipynb, .md) nor a folder")
    found = scan(ROOT, paths or None)
    if count_only:
        print(len(found))
        return 0
    for u in found:
        print(u)
    print(f"\n{len(found)} numbers in prose neither glued nor cited "
          f"({len(per_file(found))} files; goal 0):")
    for path, n in sorted(per_file(found).items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

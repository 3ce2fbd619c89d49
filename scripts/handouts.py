"""Printable per-chapter sheets for a workshop: handout, exercise sheet, solutions sheet.

Usage: python scripts/handouts.py [--out DIR] [--pdf] [--check] [--mathjax PATH] NOTEBOOK ... | --all

For each chapter notebook it writes, under DIR/<chapter>/ (default _build/handouts):

- ``<chapter>-handout-{a4,letter}.html``: the chapter as committed — its prose, its tables
  and figures (with their numbers and captions), the code a reader sees, the exercises —
  without the solutions and without the hidden check cells;
- ``<chapter>-exercises-{a4,letter}.html``: the exercises alone, with space to answer;
- ``<chapter>-solutions-{a4,letter}.html``: the solutions alone;

each with the chapter's key formulas in a box on the first page: the display equations of
its prose (not those of its exercises or solutions), or, for a chapter without any, the
formulas that handouts/key-formulas.yml names for it (a chapter with neither fails),
and, with ``--pdf``, a PDF of each made by headless Chromium (page size from the sheet's CSS:
A4 or US Letter).  Math is typeset by MathJax from ``--mathjax`` (default: the copy that
``make book`` puts under _build/html/_static/mathjax/, else the one ``make assets`` unpacks
into _vendor/mathjax/), so nothing is downloaded; without it
the formulas print as TeX source.  MyST syntax is resolved the way the book renders it:
``{glue}`` values and ``{glue:figure}`` images come from the notebook's committed outputs,
``{numref}`` becomes "Figure N", ``{cite}`` "Author, year" from the book's .bib files (as
the site prints it), ``{doc}`` the link text.

``--check`` opens every sheet in headless Chromium at the width of its printed text column
(print media, math typeset) and lists each table, code block, formula, figure or box that is
wider than the column: what the printed page would cut off.  Exit status 1 if any.
"""

from __future__ import annotations

import argparse
import functools
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

ROOT = Path(__file__).resolve().parent.parent
KEY_FORMULAS = ROOT / "handouts" / "key-formulas.yml"
PAGE = {"a4": "A4", "letter": "letter"}
# Content width of the printed page (page width less the 14 mm side margins), CSS px.
COLUMN_PX = {"a4": round((210 - 28) / 25.4 * 96), "letter": round((215.9 - 28) / 25.4 * 96)}
MIME = "application/papermill.record/"
_FENCE_OPEN = re.compile(r"^(`{3,}|:{3,})\{([\w:-]+)\}\s*(.*)$")
_ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")

CSS = """
@page { size: %(size)s; margin: 14mm 14mm 16mm 14mm; }
@media screen { html { width: %(column)spx; } }   /* lay out at the printed column's width */
body { font-family: "DejaVu Serif", Georgia, serif; font-size: 10.5pt; line-height: 1.35;
       max-width: 100%%; color: #111; }
h1 { font-size: 17pt; margin: 0 0 4pt; } h2 { font-size: 13pt; margin: 12pt 0 4pt; }
h3 { font-size: 11.5pt; } .sheet { color: #555; font-size: 9pt; margin-bottom: 8pt; }
pre, code { font-family: "DejaVu Sans Mono", monospace; font-size: 8.5pt; }
pre { background: #f6f6f6; padding: 4pt 6pt; white-space: pre-wrap; break-inside: avoid; }
pre.out { background: #fff; border-left: 2pt solid #ccc; }
table { border-collapse: collapse; font-size: 8.5pt; margin: 4pt 0; break-inside: avoid; }
th, td { border-bottom: 0.5pt solid #bbb; padding: 1pt 5pt; text-align: left; }
th { border-bottom: 1pt solid #333; } caption { font-style: italic; text-align: left; }
img { max-width: 100%%; break-inside: avoid; } figure { margin: 6pt 0; break-inside: avoid; }
figcaption { font-size: 9pt; font-style: italic; }
.box { border: 0.8pt solid #0072B2; border-radius: 3pt; padding: 4pt 8pt; margin: 6pt 0;
       break-inside: avoid; }
.box > .title { font-weight: bold; color: #0072B2; }
.formulas { background: #f3f8fc; } .answer { height: 60mm; border: 0.5pt dashed #aaa; }
"""


def glued(nb) -> dict[str, dict]:
    """Every glued value of a notebook's outputs: {name: {mime: data}}."""
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                out[name] = {k[len(MIME):]: v for k, v in o.get("data", {}).items()
                             if k.startswith(MIME)}
    return out


class Chapter:
    """One notebook turned into the three sheets' HTML bodies."""

    def __init__(self, path: Path):
        self.path = path
        self.nb = nbformat.read(path, as_version=4)
        self.glue = glued(self.nb)
        self.figures: dict[str, int] = {}
        self.exercises: list[tuple[str, str]] = []    # (label, html)
        self.solutions: list[tuple[str, str]] = []    # (label, html)
        self.formulas: list[str] = []
        self._in_exercise = 0     # > 0 while rendering an exercise or a solution
        self.md = MarkdownIt("commonmark", {"html": True}).enable("table").use(
            dollarmath_plugin, double_inline=True)
        self.md.add_render_rule("math_inline", lambda self_, s, i, o, e: f"\\({html.escape(s[i].content)}\\)")
        self.md.add_render_rule("math_block", lambda self_, s, i, o, e: f"<p>\\[{html.escape(s[i].content)}\\]</p>\n")
        self._number_figures()
        self.title = next((ln[2:].strip() for c in self.nb.cells if c.cell_type == "markdown"
                           for ln in c.source.splitlines() if ln.startswith("# ")), path.stem)

    def _number_figures(self) -> None:
        for c in self.nb.cells:
            if c.cell_type == "markdown":
                for name in re.findall(r"\{glue:figure\}\s*(\S+)", c.source):
                    self.figures.setdefault(name, len(self.figures) + 1)

    # --- MyST roles and directives -------------------------------------------------------
    def role(self, m: re.Match) -> str:
        name, text = m.group(1), m.group(2)
        if name in ("glue", "glue:text"):
            return html.escape(str(self.glue.get(text, {}).get("text/plain", f"[{text}]")).strip("'\""))
        if name == "numref":
            return f"Figure {self.figures.get(text, '?')}"
        if name.startswith("cite"):
            return "(" + "; ".join(cite_label(k.strip()) for k in text.split(",")) + ")"
        if name in ("doc", "ref", "term"):
            return html.escape(re.sub(r"\s*<[^>]*>$", "", text).split("/")[-1])
        if name == "sup":
            return f"<sup>{html.escape(text)}</sup>"
        return html.escape(text)

    def render(self, text: str) -> str:
        """Markdown with MyST roles and directives to HTML (exercises and solutions are
        collected, not rendered inline)."""
        out, buf, lines, i = [], [], text.splitlines(), 0
        while i < len(lines):
            m = _FENCE_OPEN.match(lines[i])
            if not m:
                buf.append(lines[i])
                i += 1
                continue
            fence, name, arg = m.groups()
            j, depth = i + 1, 0
            while j < len(lines):   # find the matching close of this fence (nested ones too)
                if _FENCE_OPEN.match(lines[j]) and lines[j].startswith(fence[0]) \
                        and len(lines[j]) - len(lines[j].lstrip(fence[0])) == len(fence):
                    depth += 1
                elif lines[j].strip() == fence:
                    if depth == 0:
                        break
                    depth -= 1
                j += 1
            opts, body = {}, lines[i + 1:j]
            while body and re.match(r"\s*:[\w-]+:", body[0]):
                k, _, v = body.pop(0).strip()[1:].partition(":")
                opts[k] = v.strip()
            out.append(self._markdown("\n".join(buf)))
            buf = []
            out.append(self.directive(name, arg, opts, "\n".join(body)))
            i = j + 1
        out.append(self._markdown("\n".join(buf)))
        return "".join(out)

    def _markdown(self, text: str) -> str:
        if not text.strip():
            return ""
        text = re.sub(r"^\(.+\)=\s*$", "", text, flags=re.M)      # MyST labels
        text = re.sub(r"^%.*$", "", text, flags=re.M)             # MyST comments
        text = re.sub(r"^# .*$", "", text, flags=re.M)            # the title: in the header
        if not self._in_exercise:   # key formulas come from the prose, never a solution
            self.formulas += [f.strip() for f in re.findall(r"\$\$(.+?)\$\$", text, re.S)]
        return self.md.render(_ROLE.sub(self.role, text))

    def directive(self, name: str, arg: str, opts: dict, body: str) -> str:
        if name in ("exercise", "solution"):
            self._in_exercise += 1
            try:
                text = self.render(body)
            finally:
                self._in_exercise -= 1
            if name == "solution":
                self.solutions.append((arg.strip(), text))
                return ""
            self.exercises.append((opts.get("label", ""), text))
            n = len(self.exercises)
            return f'<div class="box"><div class="title">Exercise {n}</div>{text}</div>'
        if name == "glue:figure":
            img = self.glue.get(arg.strip(), {}).get("image/png")
            n = self.figures.get(arg.strip(), "?")
            pic = f'<img src="data:image/png;base64,{img}">' if img else "<p>[figure missing]</p>"
            return f"<figure>{pic}<figcaption>Figure {n}. {self.render(body)}</figcaption></figure>"
        if name in ("admonition", "note", "tip", "warning", "important"):
            title = arg or name.capitalize()
            return f'<div class="box"><div class="title">{html.escape(title)}</div>{self.render(body)}</div>'
        if name == "table":
            return f"<p><em>{html.escape(arg)}</em></p>" + self.render(body)
        if name in ("include", "bibliography", "code-cell", "raw"):
            return ""
        return self.render(body)

    # --- cells ---------------------------------------------------------------------------
    def cell_html(self, cell) -> str:
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type == "markdown":
            return self.render(cell.source)
        if "remove-cell" in tags or cell.source.lstrip().startswith("# Colab set-up"):
            return ""
        parts = []
        if not tags & {"hide-input", "remove-input"}:
            parts.append(f"<pre>{html.escape(cell.source)}</pre>")
        if "remove-output" not in tags:
            for o in cell.get("outputs", []):
                if o.get("metadata", {}).get("scrapbook"):
                    continue
                data = o.get("data", {})
                if o.get("output_type") == "stream":
                    parts.append(f'<pre class="out">{html.escape(o.get("text", ""))}</pre>')
                elif "image/png" in data:
                    parts.append(f'<img src="data:image/png;base64,{data["image/png"]}">')
                elif "text/html" in data:
                    parts.append(data["text/html"])
                elif "text/plain" in data:
                    parts.append(f'<pre class="out">{html.escape(data["text/plain"])}</pre>')
        return "".join(parts)

    def key_formulas(self) -> list[str]:
        """The display equations of the prose, else those key-formulas.yml names."""
        if self.formulas:
            return list(dict.fromkeys(self.formulas))
        return [e["tex"] for e in listed_formulas().get(self.path.stem, [])]

    def sheets(self) -> dict[str, str]:
        body = "".join(self.cell_html(c) for c in self.nb.cells)   # fills exercises, formulas
        keys = self.key_formulas()
        if not keys:
            raise SystemExit(f"handouts: {self.path.name} has no display equation and no entry "
                             f"in {KEY_FORMULAS.relative_to(ROOT)}: add its key formulas there")
        formulas = "".join(f"<p>\\[{html.escape(f)}\\]</p>" for f in keys)
        box = f'<div class="box formulas"><div class="title">Key formulas</div>{formulas}</div>'
        ex = "".join(f'<div class="box"><div class="title">Exercise {i}</div>{h}'
                     f'<div class="answer"></div></div>'
                     for i, (_, h) in enumerate(self.exercises, 1))
        labels = {lab: i for i, (lab, _) in enumerate(self.exercises, 1)}
        sol = "".join(f'<div class="box"><div class="title">Solution to exercise '
                      f'{labels.get(lab, "?")}</div>{h}</div>' for lab, h in self.solutions)
        none = "<p>This chapter has no exercises.</p>"
        return {"handout": box + body, "exercises": box + (ex or none),
                "solutions": box + (sol or none)}


def listed_formulas(path: Path = KEY_FORMULAS) -> dict[str, list[dict]]:
    """handouts/key-formulas.yml: {notebook stem: [{"section": ..., "tex": ...}]}."""
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


# MathJax 3 does not break a display formula: one wider than its box is set smaller to fit.
FIT_MATH = r"""
window.MathJax = {tex: {inlineMath: [["\\(", "\\)"]]}, startup: {pageReady() {
  return MathJax.startup.defaultPageReady().then(() => {
    for (const e of document.querySelectorAll('mjx-container[display="true"]'))
      if (e.scrollWidth > e.clientWidth)
        e.style.fontSize = Math.floor(100 * e.clientWidth / e.scrollWidth) + "%";
  });
}}};
"""


@functools.lru_cache(maxsize=1)
def _bibliography() -> dict:
    from pybtex.database import parse_file

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    entries = {}
    for bib in config.get("bibtex_bibfiles", []):
        entries.update(parse_file(str(ROOT / bib), bib_format="bibtex").entries)
    return entries


def cite_label(key: str) -> str:
    """"Author, year" (two authors: "A and B"; more: "A et al.") for a .bib key; the key
    itself when no .bib file has it."""
    entry = _bibliography().get(key)
    if entry is None:
        return key
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in people]
    who = (names[0] if len(names) == 1 else " and ".join(names) if len(names) == 2
           else f"{names[0]} et al." if names else entry.fields.get("title", key)[:40])
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


def page(title: str, kind: str, body: str, size: str, mathjax: str | None) -> str:
    mj = (f'<script>{FIT_MATH}</script><script src="{mathjax}"></script>') if mathjax else ""
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)} — '
            f'{kind}</title><style>{CSS % {"size": PAGE[size], "column": COLUMN_PX[size]}}</style>{mj}</head><body>'
            f'<div class="sheet">{kind.capitalize()} · GPU Memory and Model Compression</div>'
            f'<h1>{html.escape(title)}</h1>{body}</body></html>')


OVERFLOW_JS = r"""
const done = arguments[arguments.length - 1];
const wait = window.MathJax && MathJax.startup ? MathJax.startup.promise : Promise.resolve();
wait.then(() => {
  const W = document.body.getBoundingClientRect().right, out = [];
  for (const e of document.querySelectorAll("pre, table, img, figure, .box, mjx-container")) {
    const r = e.getBoundingClientRect(), box = e.matches(".box, figure");
    if (r.right > W + 1 || (!box && e.scrollWidth > e.clientWidth + 1))
      out.push(e.tagName.toLowerCase() + ": " + Math.round(Math.max(r.right - W,
               e.scrollWidth - e.clientWidth)) + " px: "
               + (e.innerText || e.getAttribute("alt") || "").replace(/\s+/g, " ").trim().slice(0, 60));
  }
  done(out);
});
"""


def overflows(sheets: list[Path]) -> list[str]:
    """What each sheet's printed page would cut off (see ``--check``), one line each."""
    import tempfile

    sys.path.insert(0, str(ROOT / "scripts"))
    from browser_test import browser

    problems = []
    with tempfile.TemporaryDirectory(prefix="chromium-handouts-") as profile:
        drv = browser(profile)
        try:
            drv.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
            for h in sheets:
                size = "letter" if h.stem.endswith("-letter") else "a4"
                drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                    "width": COLUMN_PX[size], "height": 1000, "deviceScaleFactor": 1,
                    "mobile": False})
                drv.get(h.as_uri())
                problems += [f"{h.name}: {p}" for p in drv.execute_async_script(OVERFLOW_JS)]
        finally:
            drv.quit()
    return problems


def to_pdf(html_path: Path, chromium: str) -> Path:
    pdf = html_path.with_suffix(".pdf")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--no-pdf-header-footer", "--virtual-time-budget=15000",
                    f"--print-to-pdf={pdf}", html_path.as_uri()],
                   check=True, capture_output=True, timeout=180)
    return pdf


def build(nb_path: Path, out: Path, mathjax: str | None, pdf: bool) -> list[Path]:
    ch = Chapter(nb_path)
    sheets = ch.sheets()
    d = out / nb_path.stem
    d.mkdir(parents=True, exist_ok=True)
    written = []
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") if pdf else None
    if pdf and not chromium:
        print("handouts: no chromium on PATH; writing HTML only", file=sys.stderr)
    for kind, body in sheets.items():
        for size in PAGE:
            p = d / f"{nb_path.stem}-{kind}-{size}.html"
            p.write_text(page(ch.title, kind, body, size, mathjax), encoding="utf-8")
            written.append(to_pdf(p, chromium) if chromium else p)
    return written


def default_mathjax() -> str | None:
    """MathJax from the built site, else from _vendor (``make assets``); None if neither."""
    for path in (ROOT / "_build" / "html" / "_static" / "mathjax" / "tex-mml-chtml.js",
                 ROOT / "_vendor" / "mathjax" / "tex-mml-chtml.js"):
        if path.exists():
            return path.resolve().as_uri()
    return None


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """The chapters a workshop hands out: every notebook of _toc.yml outside the appendix
    (reference pages: the claims ledger, the GPU evidence), in book order."""
    sys.path.insert(0, str(root / "scripts"))
    from book_status import toc_notebooks
    return [p for p in toc_notebooks(root) if "appendix" not in p.relative_to(root).parts]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--all", action="store_true",
                    help="every chapter notebook of _toc.yml (the appendix has no exercises)")
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "handouts")
    ap.add_argument("--pdf", action="store_true", help="also print each sheet to PDF (Chromium)")
    ap.add_argument("--check", action="store_true",
                    help="list what is wider than the printed column (headless Chromium)")
    ap.add_argument("--mathjax", default=None,
                    help="MathJax script (default: _build/html/_static/mathjax/tex-mml-chtml.js)")
    args = ap.parse_args(argv)
    nbs = list(args.notebooks)
    if args.all:
        nbs += chapter_notebooks()
    if not nbs:
        ap.error("name notebooks or pass --all")
    mj = args.mathjax or default_mathjax()
    if mj is None:
        print("handouts: no MathJax found (run `make assets` first); formulas print as TeX",
              file=sys.stderr)
    sheets = []
    for nb in nbs:
        files = build(nb.resolve(), args.out, mj, args.pdf)
        sheets += [f.with_suffix(".html") for f in files]
        print(f"handouts: {nb}: {len(files)} files in {files[0].parent}")
    if args.check:
        problems = overflows(sheets)
        for p in problems:
            print(f"  WIDE {p}")
        print(f"handouts: {len(problems)} things wider than the printed column "
              f"in {len(sheets)} sheets")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

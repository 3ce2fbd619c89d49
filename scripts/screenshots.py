"""Look at the book as a reader does: screenshots of every page, and of PDF pages.

Usage: python scripts/screenshots.py [--html _build/html] [--pdf _build/latex/book.pdf]
                                     [--out _build/screenshots] [--pdf-pages 12]

1. Serves the built site on 127.0.0.1 and opens every page in headless Chromium at a desktop
   width (1280 px) and a phone width (390 px), saving a full-page PNG of each under
   OUT/desktop/ and OUT/phone/ (the height is capped at 12,000 px: the top of a long chapter).
2. On each page and width, measures what a screenshot would show cut off: every code cell,
   output, table or math display of the article whose content is wider than its box (a
   horizontal scrollbar: the "measured / error / target" columns hidden behind it), and every
   figure drawn at less than 55 % of its pixel width (its text shrunk below legibility).
3. Renders pages of the PDF to PNG at 80 dpi with poppler's ``pdftoppm`` (OUT/pdf/): the
   first and last pages, the first page of each kind the eye must check (PDF_MARKS: the
   execution status, the calculator's fit table, a wide results table, the roofline figure,
   a display equation, an exercise with its solution, the claims ledger, the bibliography),
   named page-NNN-<kind>.png, and pages spread evenly over the rest — at least 12 in all.
   A kind whose text is not found is reported (the marker went stale), not skipped silently.

Prints one line per problem and a summary; exit status 1 when a page cuts something off.
"""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_test import browser, serve  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
MAX_HEIGHT = 12_000
MIN_FIGURE_SCALE = 0.55

# What is cut off on the page just shown: boxes whose content is wider than the box itself.
OVERFLOW_JS = """
const art = document.querySelector("article.bd-article") || document.querySelector("main");
if (!art) return {cut: [], small: []};
const cut = [], small = [];
const sel = "div.highlight pre, .cell_output pre, .output pre, table, mjx-container[display=true],"
          + " div.cell_output, .table-wrapper";
for (const e of art.querySelectorAll(sel)) {
  if (e.closest(".toggle-hidden, details:not([open]), [hidden]")) continue;
  const box = e.closest(".table-wrapper, .highlight, .cell_output, .output, mjx-container") || e;
  // An equation 1 px too wide already shows a scrollbar (llm-scale's M_KD did); others get 2 px.
  const slack = e.tagName === "MJX-CONTAINER" ? 0 : 2;
  if (e.scrollWidth > e.clientWidth + slack || box.scrollWidth > box.clientWidth + slack) {
    const text = (e.innerText || e.textContent || "").trim().split("\\n")[0].slice(0, 70);
    cut.push({tag: e.tagName.toLowerCase(), over: e.scrollWidth - e.clientWidth, text});
  }
}
for (const img of art.querySelectorAll("img")) {
  if (!img.naturalWidth || img.closest("[hidden]")) continue;
  const scale = img.getBoundingClientRect().width / img.naturalWidth;
  if (scale < arguments[0]) small.push({src: img.src.split("/").pop(), scale});
}
return {cut, small, height: document.documentElement.scrollHeight};
"""


def shoot(drv, path: Path, width: int, height: int) -> None:
    """A PNG of the page from its top, as tall as the page (at most MAX_HEIGHT px).  The
    viewport is made as tall as the shot: Chromium's captureBeyondViewport drew some pages
    with the sidebar and article shifted 250-330 px off the left edge."""
    full = min(MAX_HEIGHT, drv.execute_script("return document.documentElement.scrollHeight"))
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": full, "deviceScaleFactor": 1, "mobile": width < 600})
    drv.execute_script("window.scrollTo(0, 0)")
    shot = drv.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "clip": {"x": 0, "y": 0, "width": width, "height": full, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def check_pages(html: Path, out: Path) -> int:
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                   if not {"_sources", "_static"} & set(p.parts))
    httpd, base = serve(html)
    problems = 0
    with tempfile.TemporaryDirectory(prefix="chromium-shots-") as profile:
        drv = browser(profile)
        try:
            for rel in pages:
                for name, (w, h) in WIDTHS.items():
                    # Cleared first: a phone page wider than the phone left its horizontal
                    # offset behind, and the next desktop shot came out shifted 250 px left.
                    drv.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
                    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                        "width": w, "height": h, "deviceScaleFactor": 1, "mobile": w < 600})
                    drv.get(base + rel)
                    drv.execute_script("return document.fonts.ready")
                    rep = drv.execute_script(OVERFLOW_JS, MIN_FIGURE_SCALE)
                    png = out / name / (rel.replace("/", "__").removesuffix(".html") + ".png")
                    png.parent.mkdir(parents=True, exist_ok=True)
                    shoot(drv, png, w, h)
                    if name == "desktop":   # the column is the book's width; a phone scrolls
                        for c in rep["cut"]:
                            problems += 1
                            print(f"  CUT  {rel} ({name}): <{c['tag']}> {c['over']} px too wide:"
                                  f" {c['text']!r}")
                    for s in rep["small"] if name == "desktop" else []:
                        print(f"  SMALL {rel} ({name}): {s['src']} drawn at {s['scale']:.0%}")
            print(f"screenshots: {len(pages)} pages × {len(WIDTHS)} widths under {out}")
        finally:
            drv.quit()
            httpd.shutdown()
    return problems


# The pages a reader must see in the PDF: (kind, a regular expression of its text).
PDF_MARKS = [
    ("status", r"Every chapter, executed on a CPU"),             # scripts/book_status.py
    ("fit-table", r"Per-GPU memory including the CUDA context"),  # the live calculator
    ("wide-table", r"label read as 10"),                        # Chapter 0's 6-column table
    ("roofline", r"Fig\. [\d.]+: The roofline"),
    ("equation", r"requests of T tokens"),                       # serving memory's T_total
    ("solution", r"Solution to Exercise"),
    ("claims-ledger", r"Table [\d.]+: Article A"),
    ("bibliography", r"^\s*BIBLIOGRAPHY\s*$"),
]


def pdf_pages(pdf: Path, out: Path, want: int) -> dict[int, str]:
    """Pages to render, {page: kind}: the first and last, the first page of each kind of
    PDF_MARKS, the rest spread evenly."""
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout.split("\f")
    if text and not text[-1].strip():
        text.pop()          # pdftotext ends every page with a form feed, the last one too
    n = len(text)
    pages = {1 + round(k * (n - 1) / max(1, want - 1)): "spread" for k in range(want)}
    pages.update({1: "first", n: "last"})
    for kind, pattern in PDF_MARKS:
        hit = next((i + 1 for i, t in enumerate(text) if re.search(pattern, t, re.M)), None)
        if hit is None:
            print(f"  PDF: no page matches {kind!r} ({pattern}): update PDF_MARKS")
        else:
            pages[hit] = kind
    return dict(sorted(pages.items()))


def render_pdf(pdf: Path, out: Path, want: int) -> list[Path]:
    (out / "pdf").mkdir(parents=True, exist_ok=True)
    for old in (out / "pdf").glob("page-*.png"):   # a longer or shorter PDF's pages
        old.unlink()
    done = []
    for page, kind in pdf_pages(pdf, out, want).items():
        stem = out / "pdf" / f"page-{page:03d}-{kind}"
        subprocess.run(["pdftoppm", "-r", "80", "-png", "-singlefile", "-f", str(page),
                        "-l", str(page), str(pdf), str(stem)], check=True)
        done.append(stem.with_suffix(".png"))
    print(f"screenshots: {len(done)} PDF pages of {pdf} rendered under {out / 'pdf'}")
    return done


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    ap.add_argument("--pdf", type=Path, default=ROOT / "_build" / "latex" / "book.pdf")
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "screenshots")
    ap.add_argument("--pdf-pages", type=int, default=12)
    args = ap.parse_args(argv)
    problems = check_pages(args.html, args.out) if args.html.exists() else 0
    if args.pdf.exists():
        render_pdf(args.pdf, args.out, args.pdf_pages)
    else:
        print(f"screenshots: no {args.pdf} (make pdf): no PDF pages rendered")
    print(f"screenshots: {problems} cut-off results on the desktop pages")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

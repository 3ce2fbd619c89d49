"""Check every internal link of the built site: no broken file, no missing anchor, no remote asset.

Usage: python scripts/check_links.py [_build/html]      (`make linkcheck`, after `make book`)

For every HTML page: each relative ``href``/``src`` must name a file of the build, and each
``#fragment`` an ``id`` (or ``name``) in the page it points to.  External links (http/https to
another site: launch buttons, the repository, DOIs) are not followed — this checks the book, not
the web — but assets that a page *loads* (scripts, style sheets, images, fonts) must be local, so
the site renders offline.  Exit status 1 and a list when anything is broken.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: Tags whose URL attribute is loaded by the browser to render the page (must be local).
LOADED = {("script", "src"), ("link", "href"), ("img", "src"), ("source", "src"), ("iframe", "src"),
          ("video", "src"), ("audio", "src"), ("embed", "src")}
#: <link rel=...> that are not loaded to render (preconnect hints, canonical, search metadata).
LINK_RELS_NOT_LOADED = {"canonical", "alternate", "search", "index", "next", "prev", "author", "license",
                        "help", "copyright", "top", "up", "dns-prefetch", "preconnect"}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v for k, v in attrs if v is not None}
        for key in ("id", "name"):
            if key in a and (key == "id" or tag == "a"):
                self.ids.add(a[key])
        for attr in ("href", "src"):
            if attr in a:
                if tag == "link" and set(a.get("rel", "").split()) & LINK_RELS_NOT_LOADED:
                    continue
                self.urls.append((tag, attr, a[attr]))


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def check(root: Path) -> list[str]:
    """All problems found under the built site ``root``."""
    pages = sorted(p for p in root.rglob("*.html") if not {"_sources", "_static"} & set(p.parts))
    if not pages:
        return [f"no HTML page under {root}: run `make book` first"]
    cache: dict[Path, _Page] = {}
    problems = []
    for page_path in pages:
        page = cache.setdefault(page_path, parse(page_path))
        rel = page_path.relative_to(root)
        for tag, attr, url in page.urls:
            parts = urlsplit(url)
            if parts.scheme in ("mailto", "data", "javascript", "tel"):
                continue
            if parts.scheme or url.startswith("//"):
                if (tag, attr) in LOADED:
                    problems.append(f"{rel}: <{tag} {attr}> loads a remote asset {url} (not offline)")
                continue
            target = page_path if not parts.path else (page_path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{rel}: broken link {url}")
                continue
            if parts.fragment and target.suffix == ".html":
                tpage = cache.setdefault(target, parse(target))
                if unquote(parts.fragment) not in tpage.ids:
                    problems.append(f"{rel}: missing anchor #{parts.fragment} in {target.relative_to(root)}")
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "_build/html").resolve()
    problems = check(root)
    n = len([p for p in root.rglob("*.html") if not {"_sources", "_static"} & set(p.parts)])
    for p in problems:
        print(p)
    print(f"check_links: {n} pages, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Small HTML fixes for the book's site (a local Sphinx extension, see _config.yml).

- Drop duplicate <script> entries: with Sphinx 7.4, the inline scripts that sphinx-thebe 0.3.1
  and sphinx-togglebutton add at env-before-read-docs end up in a page twice (once with
  filename None, once with ''), which declares ``const THEBE_JS_URL`` twice and raises a
  SyntaxError in every page's console (found by `make browser-test`).
"""

from __future__ import annotations

from typing import Any


def _dedupe_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set = set()
    unique: list = []
    for s in scripts:  # sphinx.builders.html._assets._JavaScript (or a plain str)
        attrs = getattr(s, "attributes", None) or {}
        key = (getattr(s, "filename", s) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            unique.append(s)
    context["script_files"] = unique


def setup(app: Any) -> dict:
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""Small HTML fixes for the book's site (a local Sphinx extension, see _config.yml).

- Drop duplicate <script> entries: with Sphinx 7.4, the inline scripts that sphinx-thebe 0.3.1
  and sphinx-togglebutton add at env-before-read-docs end up in a page twice (once with
  filename None, once with ''), which declares ``const THEBE_JS_URL`` twice and raises a
  SyntaxError in every page's console (found by `make browser-test`).
- Launch buttons and repository links from the one setting, ``repository.url`` in _config.yml
  (checked by scripts/colab_setup.py): a placeholder stops the build; empty renders no launch
  button and no link to a repository; a real URL turns the repository button on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sphinx.errors import ConfigError

_ROOT = Path(__file__).resolve().parent.parent


def _repository(app: Any, config: Any) -> None:
    sys.path.insert(0, str(_ROOT / "scripts"))
    try:
        from colab_setup import url_problem
    finally:
        sys.path.pop(0)
    opts = dict(config.html_theme_options or {})
    url = opts.get("repository_url") or ""
    problem = url_problem(url)
    if problem:
        raise ConfigError(problem)
    if url:
        opts["use_repository_button"] = True
    else:
        opts.pop("repository_url", None)
        opts["launch_buttons"] = {}
        opts.update(use_repository_button=False, use_edit_page_button=False, use_issues_button=False,
                    use_source_button=False)
    config.html_theme_options = opts


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
    app.connect("config-inited", _repository)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

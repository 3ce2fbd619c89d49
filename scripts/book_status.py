"""Tabulate how and where every notebook of the book was executed, and where each GPU result came from.

Usage: python scripts/book_status.py [OUT.md]   (default: _build/generated/status.md)

`make book` runs this before building; the appendix page "Execution status"
(chapters/appendix/status.md) includes the Markdown it writes.  It reads

- every notebook listed in _toc.yml: the provenance that `make execute`
  (scripts/execute_notebooks.py) records in the notebook metadata under ``vramlib.execution``
  (date, seconds, device, torch, Python, vramlib), falling back to the cell timestamps for
  notebooks executed otherwise; and counts code cells, outputs and error outputs;
- every recorded result shipped in vramlib/data/records (none is fine), through the records
  reader: the device, driver, torch and CUDA versions and date of its provenance.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vramlib.core.records import read_record, records_dir  # noqa: E402


def toc_files(toc_path: Path = ROOT / "_toc.yml") -> list[str]:
    """Every document of _toc.yml (root first), as a path without suffix, relative to the repo."""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    out = [toc["root"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                out.append(str(node["file"]))
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return out


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks (.ipynb) that _toc.yml lists, in book order."""
    nbs = []
    for doc in toc_files(root / "_toc.yml"):
        path = root / (doc if doc.endswith(".ipynb") else doc + ".ipynb")
        if path.exists():
            nbs.append(path)
    return nbs


def notebook_row(path: Path, root: Path = ROOT) -> dict:
    """Execution facts about one notebook."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = sum(len(c.get("outputs", [])) for c in code)
    errors = sum(1 for c in code for o in c.get("outputs", []) if o.get("output_type") == "error")
    ex = dict(nb.metadata.get("vramlib", {}).get("execution", {}))
    if not ex:  # executed by something other than `make execute`: use the cell timestamps
        stamps = [c.metadata.get("execution", {}).get("iopub.execute_input") for c in code]
        stamps = [s for s in stamps if s]
        ex = {"date": min(stamps) if stamps else "",
              "python": nb.metadata.get("language_info", {}).get("version", ""),
              "how": "not recorded"}
    title = next((line.lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"
                  for line in c.source.splitlines() if line.startswith("# ")), path.stem)
    return {"doc": path.relative_to(root).with_suffix("").as_posix(), "title": title,
            "code_cells": len(code), "outputs": outputs, "errors": errors, **ex}


def result_rows(records: Path | None = None) -> Iterator[dict]:
    """Provenance of every recorded benchmark result, read through the records reader
    (:func:`vramlib.core.records.read_record`); ``records`` defaults to the package's
    ``vramlib/data/records`` (an empty iterator when the folder is missing)."""
    folder = records_dir() if records is None else records
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            p = read_record(path).provenance
        except (OSError, ValueError, KeyError, TypeError) as exc:
            yield {"file": path.name, "device": f"unreadable: {exc.__class__.__name__}"}
            continue
        yield {"file": path.name, "device": p.device, "driver": p.driver, "torch": p.torch,
               "cuda": p.cuda, "date": p.date}


def _cell(v: Any) -> str:
    s = "" if v is None or v == "" else str(v)
    return s.replace("|", "\\|").replace("\n", " ") or "—"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def render(root: Path = ROOT) -> str:
    """The Markdown tables of the status page."""
    nb_rows = []
    for path in toc_notebooks(root):
        r = notebook_row(path, root)
        secs = f"{r['seconds']:.1f} s" if isinstance(r.get("seconds"), (int, float)) else None
        versions = ", ".join(f"{k} {r[k]}" for k in ("torch", "python", "vramlib") if r.get(k))
        executed = str(r.get("date", ""))[:19].replace("T", " ")
        nb_rows.append([f"{{doc}}`{r['title']} </{r['doc']}>`",
                        f"{executed} by {r.get('how', '`make execute`')}" if executed else None,
                        secs, r.get("device"), versions,
                        f"{r['code_cells']} / {r['outputs']} / {r['errors']}"])
    out = ["## Notebooks", "",
           _table(["chapter", "executed (UTC)", "time", "device", "versions",
                   "code cells / outputs / errors"], nb_rows) if nb_rows else "No notebook in the table of contents yet.",
           "", "## Recorded GPU results", ""]
    res = list(result_rows(root / "vramlib" / "data" / "records"))
    if res:
        out.append(_table(["file (vramlib/data/records/)", "device", "driver", "torch", "CUDA", "date"],
                          [[f"`{r['file']}`", r.get("device"), r.get("driver"), r.get("torch"), r.get("cuda"),
                            str(r.get("date") or "")[:19].replace("T", " ")] for r in res]))
    else:
        out.append("No recorded GPU run yet: `vramlib/data/records/` holds no result file.")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "_build" / "generated" / "status.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render()
    if not out.exists() or out.read_text(encoding="utf-8") != text:  # keep mtime: no needless rebuild
        out.write_text(text, encoding="utf-8")
    print(f"book_status: wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

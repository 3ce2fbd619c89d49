"""Tabulate how and where every notebook of the book was executed, and where each GPU result came from.

Usage: python scripts/book_status.py [OUT.md]   (default: _build/generated/status.md)

`make book` runs this before building; the appendix page "Execution status"
(chapters/appendix/status.md) includes the Markdown it writes.  It reads

- every notebook listed in _toc.yml: the provenance that `make execute`
  (scripts/execute_notebooks.py) records in the notebook metadata under ``vramlib.execution``
  (date, seconds, device, torch, Python, vramlib), falling back to the cell timestamps for
  notebooks executed otherwise; and counts code cells, outputs and error outputs;
- the GPU execution record of the whole book, vramlib/data/records/gpu_execution.json (through
  the records reader, ``vramlib.core.records``), shown in columns beside the CPU execution;
- the count of numbers in prose that are neither glued nor cited (scripts/unbound_numbers.py);
- every recorded result shipped in vramlib/data/records (none is fine), through the records
  reader: the device, driver, torch and CUDA versions and date of its provenance.

Every table is a MyST ``{table}`` of class ``longtable``, so that it breaks across PDF pages.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Iterator

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vramlib.core.records import Record, load_record, read_record, records_dir  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from execute_notebooks import BOOK_BUDGET_S, CHAPTER_BUDGET_S  # noqa: E402


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


def _table(header: list[str], rows: list[list[Any]], caption: str = "",
           widths: list[int] | None = None) -> str:
    """A Markdown table inside a MyST ``{table}`` with the ``longtable`` class, so that in the
    PDF it breaks across pages instead of running off the page (issue 18)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    opts = [":class: longtable"] + ([":widths: " + " ".join(map(str, widths))] if widths else [])
    return "\n".join([f"```{{table}} {caption}".rstrip(), *opts, "", *lines, "```"])


def gpu_execution(records: Path | None = None, name: str = "gpu_execution") -> Record | None:
    """The GPU execution record of the book (``vramlib/data/records/gpu_execution.json``,
    written by ``scripts/execute_notebooks.py --record`` on a GPU), read through the records
    reader (:mod:`vramlib.core.records`); ``records`` defaults to the package's records
    folder.  ``None`` when there is none."""
    if records is None:
        return load_record(name)
    path = records / f"{name}.json"
    return read_record(path) if path.is_file() else None


def _gib(n: Any) -> str | None:
    return f"{n / 2**30:.1f}" if isinstance(n, (int, float)) and n else None


def unbound_count(root: Path = ROOT) -> tuple[int, dict[str, int]]:
    """How many numbers in the chapters' prose are neither glued nor cited, and where
    (scripts/unbound_numbers.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import unbound_numbers

    found = unbound_numbers.scan(root)
    return len(found), unbound_numbers.per_file(found)


def _secs(v: Any, budget: float) -> str | None:
    """Seconds, marked "OVER" past the budget (the Developers' guide's time limits)."""
    if not isinstance(v, (int, float)):
        return None
    return f"{v:.1f}" + (" OVER" if v > budget else "")


def _gpu_name(desc: Any) -> str | None:
    """'CUDA GPU: NVIDIA H200, 139.80 GiB, ...' -> 'H200'; 'NVIDIA H100 80GB HBM3' -> 'H100 80GB'."""
    if not desc:
        return None
    head = str(desc).split(":", 1)[-1].split(",")[0].strip().removeprefix("NVIDIA ")
    # the memory's kind and the board's form ("HBM3", "SXM5", "PCIe") only widen the column
    words = [w for w in head.split() if not re.fullmatch(r"HBM\w*|SXM\w*|PCIe|NVL", w)]
    return " ".join(words) or None


def _failed_check(error: Any) -> str:
    """What failed in a GPU error: the check's '# Check (hidden): ...' line, else the line
    the traceback points at ('---->'), and the exception, shortened."""
    lines = [ln.strip() for ln in str(error or "").splitlines() if ln.strip()]
    what = next((ln.split("# Check (hidden):", 1)[1].strip() for ln in lines
                 if "# Check (hidden):" in ln), "")
    if not what:
        at = next((ln for ln in lines if ln.startswith("---->")), "")
        what = re.sub(r"^---->\s*\d+\s*", "", at).replace("`", "'")
        what = f"`{what[:70]}`" if what else ""
    exc = next((ln for ln in reversed(lines) if re.match(r"\w+(Error|Exception)\b", ln)),
               lines[-1] if lines else "")
    exc = exc[:60] + ("…" if len(exc) > 60 else "")
    return f"{what} → {exc}" if what else exc


def _notebook_rows(root: Path, gpu: Record | None, setups: list[str]) -> tuple[list, dict]:
    """One row per chapter: CPU status, seconds, set-up; GPU status, seconds, peak, device."""
    gpu_ch = (gpu.results.get("chapters") or {}) if gpu else {}
    rows, totals = [], {"cpu": 0.0, "gpu": 0.0, "errors": [], "runs": []}
    for path in toc_notebooks(root):
        r = notebook_row(path, root)
        versions = ", ".join(f"{k} {r[k]}" for k in ("torch", "python", "vramlib") if r.get(k))
        setup = "; ".join(s for s in (r.get("device"), versions) if s) + (
            f" ({r['how']})" if r.get("how") and r["how"] != "`make execute`" else "")
        if setup not in setups:
            setups.append(setup)
        totals["cpu"] += r.get("seconds") or 0.0
        totals["runs"].append(r.get("book_run"))
        cpu_status = "ok" if not r["errors"] else f"{r['errors']} errors"
        executed = str(r.get("date", ""))[:10]
        g = gpu_ch.get(path.relative_to(root).as_posix())
        if g is None:
            g_cols: list[Any] = ["not run" if gpu else None, None, None, None]
        else:
            totals["gpu"] += g.get("seconds") or 0.0
            peak = _gib(g.get("peak_allocated")) or ("0" if g.get("status") == "ok" else None)
            g_cols = [g.get("status"), _secs(g.get("seconds"), CHAPTER_BUDGET_S), peak,
                      "; ".join(x for x in (_gpu_name(g.get("device")), g.get("date")) if x)]
            if g.get("status") != "ok":
                totals["errors"].append((r, g))
        rows.append([f"{{doc}}`{r['title']} </{r['doc']}>`", cpu_status,
                     _secs(r.get("seconds"), CHAPTER_BUDGET_S),
                     f"{executed} [{setups.index(setup) + 1}]" if executed else None, *g_cols])
    return rows, totals


def _one_book_run(runs: list[Any]) -> dict | None:
    """The ``make execute`` run that executed every chapter, when they all share one (its
    wall clock is the book's CPU time with several kernels at once); else ``None``."""
    first = runs[0] if runs else None
    if (isinstance(first, dict) and all(r == first for r in runs)
            and first.get("notebooks", 0) >= len(runs) and "wall_seconds" in first):
        return first
    return None


def _notebook_section(root: Path, gpu: Record | None) -> list[str]:
    """The status page's first part: every chapter on the CPU and on the GPU, with budgets."""
    setups: list[str] = []        # distinct CPU set-ups, numbered in the table
    rows, totals = _notebook_rows(root, gpu, setups)
    if not rows:
        return ["## Notebooks", "", "No notebook in the table of contents yet."]
    gpu_total = (gpu.results.get("total_seconds") if gpu else None) or totals["gpu"] or None
    book_run = _one_book_run(totals["runs"])
    cpu_book = book_run["wall_seconds"] if book_run else totals["cpu"]
    rows.append(["**the whole book**", None, _secs(cpu_book, BOOK_BUDGET_S["cpu"]), None,
                 None, _secs(gpu_total, BOOK_BUDGET_S["cuda"]), None, None])
    if book_run:
        rows.append([f"the chapters' times added (the run had {book_run['jobs']} kernels at "
                     f"once, {book_run['threads_per_kernel']} thread each)", None,
                     f"{totals['cpu']:.1f}", None, None, None, None, None])
    out = ["## Notebooks", "",
           f"Budgets (Developers' guide): each chapter at most {CHAPTER_BUDGET_S:.0f} s on two "
           f"CPU cores and on one GPU; the whole book at most {BOOK_BUDGET_S['cpu']:.0f} s on "
           f"the CPU and {BOOK_BUDGET_S['cuda']:.0f} s on the GPU.  A time past its budget is "
           "marked **OVER**.  The CPU columns are the committed outputs (each chapter's run by "
           "`make execute`, recorded in its metadata; that run records no peak memory, the "
           "host's RAM not being device memory).  `make execute` runs one kernel per core, "
           "each with one thread; when every chapter comes from one such run, the book's CPU "
           "time is that run's wall clock, and the row below it adds the chapters' times.  "
           "Otherwise the book's CPU time adds the chapters' times.", ""]
    if gpu:
        p = gpu.provenance
        out += ["The GPU columns are `scripts/execute_notebooks.py --record` runs of the book, "
                f"top to bottom, recorded in `vramlib/data/records/gpu_execution.json` "
                f"(driver {p.driver or '?'}, torch {p.torch or '?'}, CUDA {p.cuda or '?'}). "
                "\"not run\" marks a chapter those runs did not reach, or one newer than them; "
                "\"peak\" is `torch.cuda.max_memory_allocated` over the chapter; \"error\" "
                "means a check failed on the GPU (listed below the table).", ""]
    else:
        out += ["No GPU execution of the book is recorded yet "
                "(`vramlib/data/records/gpu_execution.json`).", ""]
    out.append(_table(["chapter", "CPU status", "CPU (s)", "CPU: executed (UTC) [set-up]",
                       "GPU status", "GPU (s)", "GPU peak (GiB)", "GPU; date"], rows,
                      "Every chapter, executed on a CPU and on a GPU, against its time budget",
                      [30, 8, 8, 14, 9, 8, 8, 15]))
    out += ["", "CPU set-ups:", ""] + [f"{i}. {s}" for i, s in enumerate(setups, 1)]
    if totals["errors"]:
        out += ["", _table(["chapter", "the check that failed on the GPU"],
                           [[f"{{doc}}`{r['title']} </{r['doc']}>`", _failed_check(g.get("error"))]
                            for r, g in totals["errors"]],
                           "Chapters whose GPU run stopped at a failed check", [30, 70])]
    return out


def render(root: Path = ROOT) -> str:
    """The Markdown tables of the status page."""
    records = root / "vramlib" / "data" / "records"
    out = _notebook_section(root, gpu_execution(records))
    n_unbound, where = unbound_count(root)
    out += ["", "## Numbers in prose neither glued nor cited", "",
            f"**{n_unbound}** (goal 0), counted by `scripts/unbound_numbers.py`, which lists each one "
            "with its sentence.  Every measured or computed number in prose should come from the "
            "code that produced it (`{glue}`) or from a cited source."]
    if where:
        out += ["", _table(["chapter", "unbound numbers"],
                           [[f"`{k}`", v] for k, v in sorted(where.items(), key=lambda kv: -kv[1])],
                           "Unbound numbers per page", [70, 30])]
    out += ["", "## Recorded GPU results", ""]
    res = list(result_rows(records))
    if res:
        out.append(_table(["file (vramlib/data/records/)", "device", "driver", "torch", "CUDA", "date"],
                          [[f"`{r['file']}`", r.get("device"), r.get("driver"), r.get("torch"), r.get("cuda"),
                            str(r.get("date") or "")[:10]] for r in res],
                          "Every recorded GPU result", [30, 22, 12, 14, 8, 14]))
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

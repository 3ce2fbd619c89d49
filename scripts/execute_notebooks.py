"""Execute notebooks top to bottom in a fresh kernel, print each one's time against the book's
budget, and either write the outputs back (the default) or record how each chapter ran.

Usage:
  python scripts/execute_notebooks.py [PATH ...]            re-execute in place (make execute)
  python scripts/execute_notebooks.py --record OUT.json     run every notebook of _toc.yml on
                                                            this machine's device, leave the
                                                            notebooks untouched, and write one
                                                            record per chapter (status, seconds,
                                                            peak device memory) with provenance
The default mode is how committed outputs are made: what nbval then re-checks in CI.  Each
notebook also records how and where it ran in its metadata (``vramlib.execution``: date,
seconds, device, torch, Python, vramlib); the appendix page "Execution status"
(scripts/book_status.py) tabulates it.  ``--record`` is how the book shows that every chapter
runs unchanged on a GPU (vramlib/data/records/gpu_execution.json; run it on a CUDA machine).

Budgets (Developers' guide): each chapter <= 60 s, on 2 CPU cores and on one H100; the whole
book <= 5 min on the CPU and <= 10 min on the GPU.  Times over budget are marked "OVER".
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import multiprocessing
import os
import platform
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_BUDGET_S = 60.0
# the claims ledger reads the other chapters' glued outputs: every run executes it last
LEDGER = "claims-ledger.ipynb"
BOOK_BUDGET_S = {"cpu": 300.0, "cuda": 600.0}

# Appended to the copy a --record run executes: the kernel's peak device memory, as JSON.
# A chapter that never imported torch used no device memory: importing it here (seconds
# with a CUDA build) would only add to the chapter's recorded time.
_PEAK_CELL = """import json as _j, sys as _s
_t = _s.modules.get("torch")
_p = {"peak_allocated": 0, "peak_reserved": 0}
if _t is not None and _t.cuda.is_available() and _t.cuda.is_initialized():
    _p = {"peak_allocated": int(_t.cuda.max_memory_allocated()),
          "peak_reserved": int(_t.cuda.max_memory_reserved())}
print("VRAMLIB-PEAK" + _j.dumps(_p))"""


def notebooks(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths or ["chapters"]):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        elif p.suffix == ".ipynb" and p.exists():
            out.append(p)
        else:
            sys.exit(f"execute_notebooks: {p} is neither a notebook nor a folder")
    return sorted(out, key=lambda q: q.name == LEDGER)


def toc_notebooks() -> list[Path]:
    """The notebooks of _toc.yml, in reading order."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from book_status import toc_files

    return [ROOT / (d + ".ipynb") for d in toc_files(ROOT / "_toc.yml")
            if (ROOT / (d + ".ipynb")).exists()]


def provenance() -> dict:
    """How and where notebooks are being executed: the kernel runs in this same environment."""
    import torch

    import vramlib

    return {"how": "`make execute`", "kernel": "python3", "python": platform.python_version(),
            "torch": torch.__version__, "vramlib": getattr(vramlib, "__version__", "?"),
            "device": vramlib.describe_device(), "platform": platform.platform()}


def slowest_cells(nb: nbformat.NotebookNode, n: int = 5) -> list[list]:
    """The ``n`` slowest code cells of an executed notebook: [cell index, seconds], from
    the timestamps nbclient writes into each cell's metadata (where the time goes)."""
    secs = []
    for i, cell in enumerate(nb.cells):
        ex = cell.get("metadata", {}).get("execution", {})
        start, end = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
        if cell.cell_type == "code" and start and end:
            dt = (datetime.datetime.fromisoformat(end.replace("Z", "+00:00"))
                  - datetime.datetime.fromisoformat(start.replace("Z", "+00:00")))
            secs.append([i, round(dt.total_seconds(), 1)])
    return sorted(secs, key=lambda r: -r[1])[:n]


def budget_mark(seconds: float, budget: float = CHAPTER_BUDGET_S) -> str:
    return "ok  " if seconds <= budget else "OVER"


def run(nb: nbformat.NotebookNode, path: Path, timeout: int = 600) -> float:
    """Execute ``nb`` in a fresh kernel with the notebook's folder as working directory
    (``timeout``: seconds per cell)."""
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return time.perf_counter() - t0


def _limit_threads(threads: int) -> None:
    """In a worker of ``--jobs``: the kernels it starts inherit this thread count (torch, MKL
    and OpenMP read it at start), so N kernels share the cores instead of oversubscribing."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def _execute_one(path: Path, prov: dict) -> float:
    """Execute one notebook in place and stamp how it ran into its metadata."""
    nb = nbformat.read(path, as_version=4)
    dt = run(nb, path)
    threads = os.environ.get("OMP_NUM_THREADS")
    nb.metadata.setdefault("vramlib", {})["execution"] = {
        **prov, "seconds": round(dt, 1), **({"threads": int(threads)} if threads else {}),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    nbformat.write(nb, path)
    return dt


def _stamp_book_run(paths: list[Path], run_info: dict) -> None:
    """Record the whole run (its wall-clock seconds, kernels at once) in every notebook it
    executed: the status page shows the book's time when all chapters share one run."""
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nb.metadata.setdefault("vramlib", {}).setdefault("execution", {})["book_run"] = run_info
        nbformat.write(nb, path)


def _longest_first(paths: list[Path]) -> list[Path]:
    """Longest chapters first (by their last recorded seconds), so that N kernels finish
    together; the claims ledger last, as it reads the other chapters' glued outputs."""
    def last_seconds(p: Path) -> float:
        meta = nbformat.read(p, as_version=4).metadata.get("vramlib", {})
        return float(meta.get("execution", {}).get("seconds") or 0.0)

    rest = [p for p in paths if p.name != LEDGER]
    return sorted(rest, key=last_seconds, reverse=True) + [p for p in paths if p not in rest]


def execute_in_place(paths: list[Path], jobs: int = 1) -> int:
    """Execute ``paths`` in place, ``jobs`` kernels at once (each with ``cores // jobs``
    threads); print each chapter's seconds and the wall-clock time of the whole run."""
    prov = provenance()
    t0, total, started = time.perf_counter(), 0.0, datetime.datetime.now(datetime.timezone.utc)
    jobs = max(1, min(jobs, len(paths)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    order = _longest_first(paths)
    ledger = [p for p in order if p.name == LEDGER]
    first = [p for p in order if p not in ledger]
    if jobs == 1:
        done = ((p, _execute_one(p, prov)) for p in first)
    else:
        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_limit_threads, initargs=(threads,))
        futures = {pool.submit(_execute_one, p, prov): p for p in first}
        done = ((futures[f], f.result()) for f in as_completed(futures))
    for path, dt in itertools.chain(done, ((p, _execute_one(p, prov)) for p in ledger)):
        total += dt
        print(f"{dt:7.1f} s  {budget_mark(dt)}  {path}", flush=True)
    wall = time.perf_counter() - t0
    if jobs > 1:
        pool.shutdown()
    run_info = {"started": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "notebooks": len(paths),
                "jobs": jobs, "threads_per_kernel": threads, "wall_seconds": round(wall, 1)}
    _stamp_book_run(paths, run_info)
    print(f"{total:7.1f} s  total of the chapters' times")
    print(f"{wall:7.1f} s  {'ok  ' if wall <= BOOK_BUDGET_S['cpu'] else 'OVER'}  wall clock, "
          f"{jobs} kernel(s) at once, {threads} thread(s) each "
          f"(budget {BOOK_BUDGET_S['cpu']:.0f} s for the book on the CPU)")
    return 0


def _write(out: Path, chapters: dict, total: float, kind: str) -> None:
    from vramlib.core.records import write_record

    try:
        import transformers
        tf_version = transformers.__version__
    except ImportError:
        tf_version = None
    write_record(out, {"chapters": chapters, "total_seconds": round(total, 1)},
                 {"chapter_budget_s": CHAPTER_BUDGET_S, "book_budget_s": BOOK_BUDGET_S[kind],
                  "transformers": tf_version, "how": "scripts/execute_notebooks.py --record"})


def record_execution(out: Path, paths: list[Path], add: list[Path] | None = None) -> int:
    """Run each notebook on a copy (outputs not written back) and record how it went.
    With ``add`` (earlier records of the same device kind), their chapters are kept and the
    ones run now replace theirs: a book longer than one session's command limit is recorded
    in parts, or in parallel on several GPUs (one part per GPU, merged with no paths).  Each chapter's entry names the device and date it ran on."""
    import datetime as _dt

    import torch

    from vramlib.core.device import describe_device
    from vramlib.core.records import read_record

    kind = "cuda" if torch.cuda.is_available() else "cpu"
    chapters, total = {}, 0.0
    for earlier in add or []:
        chapters.update(read_record(earlier).results["chapters"])
    total = sum(c["seconds"] for c in chapters.values())
    where = describe_device()
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(_PEAK_CELL))
        rel = path.relative_to(ROOT).as_posix()
        t0 = time.perf_counter()
        try:
            run(nb, path, timeout=300)
            status, error = "ok", None
        except CellExecutionError as exc:  # the chapter's own error, kept for the record
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
            status, error = "error", "\n".join(text[-12:])[-1500:]  # the failing lines
        except TimeoutError as exc:
            status, error = "timeout", str(exc)[:300]
        dt = time.perf_counter() - t0
        total += dt
        peak = {}
        for o in nb.cells[-1].get("outputs", []):
            text = o.get("text", "")
            if "VRAMLIB-PEAK" in text:
                peak = json.loads(text.split("VRAMLIB-PEAK", 1)[1])
        if rel in chapters:
            total -= chapters[rel]["seconds"]
        chapters[rel] = {"status": status, "seconds": round(dt, 1), **peak,
                         "slowest_cells": slowest_cells(nb),
                         "device": where, "date": _dt.date.today().isoformat(),
                         **({"error": error} if error else {})}
        print(f"{dt:7.1f} s  {budget_mark(dt)}  {status:5s}  {rel}", flush=True)
        _write(out, chapters, total, kind)  # after every chapter: a cut-off run keeps its part
    if not paths:  # a merge of earlier parts: nothing ran, so nothing was written yet
        _write(out, chapters, total, kind)
    book_ok = total <= BOOK_BUDGET_S[kind]
    print(f"{total:7.1f} s  {'ok  ' if book_ok else 'OVER'}  total "
          f"(budget {BOOK_BUDGET_S[kind]:.0f} s on {kind})")
    print(f"wrote {out}")
    return 0 if all(c["status"] == "ok" for c in chapters.values()) else 1


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="notebooks or folders (default: chapters/)")
    ap.add_argument("--add", type=Path, metavar="EARLIER.json", action="append",
                    help="with --record (repeatable): keep the chapters of earlier records, "
                         "replace the ones run now")
    ap.add_argument("--merge", action="store_true",
                    help="with --record and --add: only merge the earlier records (the parts "
                         "of a book run on several GPUs at once)")
    ap.add_argument("--record", type=Path, metavar="OUT.json",
                    help="record each chapter's run instead of writing outputs back "
                         "(default paths: every notebook of _toc.yml)")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="without --record: N kernels at once, each with cores // N threads "
                         "(make execute uses one per core); the claims ledger runs last")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be a positive number of kernels, got {args.jobs}")
    if args.record:
        if args.merge:
            return record_execution(args.record, [], args.add)
        paths = notebooks(args.paths) if args.paths else toc_notebooks()
        return record_execution(args.record, [p.resolve() for p in paths], args.add)
    return execute_in_place(notebooks(args.paths), args.jobs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

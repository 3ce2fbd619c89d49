"""Re-execute notebooks in place, top to bottom in a fresh kernel, and print each one's time.

Usage: python scripts/execute_notebooks.py [PATH ...]   (files or folders; default: chapters)
This is how committed outputs are made: what nbval then re-checks in CI.
Each notebook also records how and where it ran in its metadata (``vramlib.execution``:
date, seconds, device, torch, Python, vramlib); the appendix page "Execution status"
(scripts/book_status.py) tabulates it.
"""

from __future__ import annotations

import sys
import datetime
import platform
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def notebooks(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths or ["chapters"]):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        elif p.suffix == ".ipynb" and p.exists():
            out.append(p)
        else:
            sys.exit(f"execute_notebooks: {p} is neither a notebook nor a folder")
    return out


def provenance() -> dict:
    """How and where notebooks are being executed: the kernel runs in this same environment."""
    import torch

    import vramlib

    return {"how": "`make execute`", "kernel": "python3", "python": platform.python_version(),
            "torch": torch.__version__, "vramlib": getattr(vramlib, "__version__", "?"),
            "device": vramlib.describe_device(), "platform": platform.platform()}


def main(argv: list[str]) -> int:
    total = 0.0
    prov = provenance()
    for path in notebooks(argv):
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        dt = time.perf_counter() - t0
        total += dt
        nb.metadata.setdefault("vramlib", {})["execution"] = {
            **prov, "seconds": round(dt, 1),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        nbformat.write(nb, path)
        print(f"{dt:7.1f} s  {path}", flush=True)
    print(f"{total:7.1f} s  total")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

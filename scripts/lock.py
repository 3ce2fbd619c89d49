"""Write requirements/book.lock and requirements/reader.txt from a freshly resolved venv.

Usage (from `make lock`): python scripts/lock.py VENV_PYTHON
book.lock: every package of the venv (the book's build-and-test environment), pinned, torch as
its CPU build from PyTorch's CPU index.  reader.txt: the subset a reader needs to run the
chapters (the library's dependencies, transformers, ipywidgets, a Jupyter kernel), resolved
by pip against book.lock so both pin the same versions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
READER = ["torch", "numpy", "matplotlib", "tqdm", "transformers", "ipywidgets", "ipykernel"]
BOOK_HEAD = [
    "# The book's pinned build-and-test environment: CPU build of torch, every transitive",
    "# dependency pinned.  Regenerate with `make lock`; readers need only requirements/reader.txt.",
    "# torch comes from PyTorch's CPU index (0.19 GB) instead of PyPI's CUDA build (~3 GB);",
    "# a local wheel of the same version on pip's find-links serves as well.",
    INDEX]
READER_HEAD = [
    "# What a reader needs to run the chapters (Binder, Colab, a laptop): the library's",
    "# dependencies, transformers for the chapters that build Hugging Face models from configs,",
    "# ipywidgets and a Jupyter kernel - no book build, browser or test toolchain.  Pinned to",
    "# the same versions as requirements/book.lock (regenerate both with `make lock`).",
    "# Install: pip install -r requirements/reader.txt && pip install --no-deps .",
    INDEX]


def main(python: str) -> None:
    frozen = subprocess.run([python, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout.split()
    pins = sorted((p for p in frozen if not p.startswith("pip==")), key=str.lower)
    book = ROOT / "requirements" / "book.lock"
    book.write_text("\n".join(BOOK_HEAD + pins) + "\n")
    torch_pin = next(p for p in pins if p.lower().startswith("torch=="))
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([python, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                        "--report", str(report), "-c", str(book), torch_pin,
                        *[r for r in READER if r != "torch"]], check=True)
        installs = json.loads(report.read_text())["install"]
    reader = sorted((f"{i['metadata']['name']}=={i['metadata']['version']}" for i in installs),
                    key=str.lower)
    (ROOT / "requirements" / "reader.txt").write_text("\n".join(READER_HEAD + reader) + "\n")
    print(f"book.lock: {len(pins)} pins; reader.txt: {len(reader)} pins")


if __name__ == "__main__":
    main(sys.argv[1])

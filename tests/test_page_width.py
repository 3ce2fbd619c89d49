"""Nothing wider than the content column (issue 18): in every notebook under chapters/, a code
line has at most 88 characters and a printed output line at most 100.

"Printed output" is what a reader sees as text: stream output (print, warnings), the plain-text
form of a result or display (what nbval compares and what the PDF prints) and tracebacks.
Figures are exempt (their text/plain is only "<Figure size ...>").

KNOWN_OFFENDERS is a ratchet while the chapters are being fixed: for each notebook it holds the
number of over-wide code lines and output lines found when this test was written.  A notebook
may have fewer, never more (a NEW over-wide line fails at once); when a notebook gets better,
the test asks for its allowance to be lowered, so the list only shrinks.  A notebook that is not
listed must have none.  Delete the list when it is empty.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE_MAX = 88
OUTPUT_MAX = 100
NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "chapters").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)

# --- allow-list: (code lines > 88, output lines > 100) per notebook; lower it, never raise it ---
KNOWN_OFFENDERS: dict[str, tuple[int, int]] = {
}
# --- end of allow-list ---

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _output_text(output: dict) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return output.get("text", "")
    if kind in ("execute_result", "display_data"):
        data = output.get("data", {})
        if any(k.startswith("image/") for k in data):
            return ""
        return data.get("text/plain", "")
    if kind == "error":
        return "\n".join(output.get("traceback", []))
    return ""


def wide_lines(nb) -> tuple[list[str], list[str]]:
    """The over-wide code lines and printed output lines of a notebook, each as 'cell N: line'."""
    code, out = [], []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        code += [f"cell {i} ({len(line)} chars): {line}" for line in cell.source.splitlines()
                 if len(line.expandtabs()) > CODE_MAX]
        for output in cell.get("outputs", []):
            for line in _ANSI.sub("", _output_text(output)).splitlines():
                if len(line.expandtabs()) > OUTPUT_MAX:
                    out.append(f"cell {i} ({len(line)} chars): {line[:60]}...")
    return code, out


def test_allow_list_names_existing_notebooks():
    stale = [p for p in KNOWN_OFFENDERS if p not in NOTEBOOKS]
    assert not stale, f"KNOWN_OFFENDERS names notebooks that no longer exist; delete them: {stale}"


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_page_width(path: str):
    code, out = wide_lines(nbformat.read(ROOT / path, as_version=4))
    allowed_code, allowed_out = KNOWN_OFFENDERS.get(path, (0, 0))
    assert len(code) <= allowed_code, (
        f"{path}: {len(code)} code lines over {CODE_MAX} characters (allowed {allowed_code}); "
        "wrap them:\n" + "\n".join(code))
    assert len(out) <= allowed_out, (
        f"{path}: {len(out)} printed lines over {OUTPUT_MAX} characters (allowed {allowed_out}); "
        "print less per line or use vramlib.table:\n" + "\n".join(out))
    assert (len(code), len(out)) == (allowed_code, allowed_out), (
        f"{path} got better ({len(code)} code, {len(out)} output lines too wide): lower its entry "
        f"in KNOWN_OFFENDERS (tests/test_page_width.py) to ({len(code)}, {len(out)}), or delete "
        "it at (0, 0)")


def test_width_check_can_fail():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1\n" + "y = " + "1 + " * 30 + "1")]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="a" * 101 + "\n"),
                           nbformat.v4.new_output("display_data", data={
                               "image/png": "", "text/plain": "<Figure " + "x" * 120 + ">"})]
    code, out = wide_lines(nb)
    assert len(code) == 1 and code[0].startswith("cell 0 (125 chars)")
    assert len(out) == 1 and out[0].startswith("cell 0 (101 chars)")

"""The debugging chapter's interactive snapshot view works offline: the viewer script is the
book's own (no external URL, nothing imported or fetched), the page embeds the committed
snapshot's allocations (small, parseable, the same spans the static figure draws), and the
viewer's stacking reaches the snapshot's highest live total."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vramlib.core.records import records_dir
from vramlib.measure.allocator import snapshot_spans

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "_assets" / "memory_timeline" / "memory_timeline.js"
NB = ROOT / "chapters" / "part1-stage-memory" / "debugging-oom.ipynb"
SVG_NS = "http://www.w3.org/2000/svg"


def embedded() -> dict:
    """The JSON the chapter's committed output embeds in the page."""
    for cell in json.loads(NB.read_text())["cells"]:
        for out in cell.get("outputs", []):
            html = out.get("data", {}).get("application/papermill.record/text/html", "")
            m = re.search(r'class="vl-memtl-data">(.*?)</script>', html, flags=re.S)
            if m:
                assert len(html) < 300_000, "the embedded snapshot must stay under 300 KB"
                assert "../../_static/memory_timeline/memory_timeline.js" in html
                return json.loads(m.group(1).replace("<\\/", "</"))
    raise AssertionError("debugging-oom.ipynb embeds no snapshot view (re-execute it)")


def test_viewer_is_local() -> None:
    src = JS.read_text()
    urls = set(re.findall(r"https?://[^\s\"'`)]+", src)) - {SVG_NS}
    assert not urls, f"the viewer names external URLs: {urls}"
    assert not re.search(r"\bimport\b|\bfetch\(|XMLHttpRequest|\beval\(", src)


def test_page_embeds_the_committed_snapshot() -> None:
    data = embedded()
    with open(records_dir() / "serving_oom_snapshot.pickle", "rb") as fh:
        tl = snapshot_spans(pickle.load(fh))
    assert data["events"] == tl["events"] and len(data["allocs"]) == len(tl["spans"])
    assert all(0 <= a[1] < a[2] <= data["events"] and a[0] > 0 for a in data["allocs"])


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_viewer_stacks_to_the_highest_live_total() -> None:
    data = embedded()
    live = [0] * (data["events"] + 1)
    for size, born, freed, _ in data["allocs"]:
        for t in range(born, freed):
            live[t] += size
    code = (f"const {{layout}} = require({json.dumps(str(JS))});"
            f"const r = layout({json.dumps(data)});"
            "process.stdout.write(JSON.stringify({top: r.top, n: r.pts.length}));")
    out = json.loads(subprocess.run(["node", "-e", code], capture_output=True, text=True,
                                    check=True, timeout=60).stdout)
    assert out == {"top": max(live), "n": len(data["allocs"])}

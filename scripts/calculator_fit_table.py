"""The static fit table that printed books show in place of the live calculator.

Usage: python scripts/calculator_fit_table.py OUT.md       (`make calculator`, part of `make book`/`make pdf`)

Runs the live calculator's own bridge (_assets/calculator/calculator.py, on vramlib.estimate
from this checkout) for every bundled model in the page's two default scenarios — its
fine-tuning default and its generation default, on its default GPU — and writes a MyST
table that chapters/part1-stage-memory/live-calculator.md includes in LaTeX builds only.
Models whose position limit is below the scenario's length run at their limit (marked).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30


def load_bridge():
    """The page's bridge module, imported from its file."""
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("calculator", ROOT / "_assets" / "calculator" / "calculator.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def render(bridge) -> str:
    """The table as MyST Markdown."""
    from vramlib.estimate import list_models, load_model_config, num_params

    d = bridge.DEFAULTS
    gen = {"stage": "generate"}
    rows, marked = [], False
    for m in sorted(list_models(), key=num_params):
        limit = load_model_config(m).max_position_embeddings
        ft = {"model": m, "seq": str(min(int(d["seq"]), limit))}
        g = {"model": m, **gen, "prompt": str(min(int(d["prompt"]), limit - int(d["new_tokens"])))}
        cut = int(ft["seq"]) < int(d["seq"]) or int(g["prompt"]) < int(d["prompt"])
        marked |= cut
        cells = [f"{m}{' †' if cut else ''}", f"{num_params(m) / 1e9:.2f}"]
        for state in (ft, g):
            r = json.loads(bridge.compute(json.dumps(state)))
            if not r["ok"]:
                raise SystemExit(f"calculator_fit_table: {state}: {r['errors']}")
            cells += [f"{r['breakdown']['total_reserved'] / GIB:.1f}", "yes" if r["fits"] else "no",
                      f"{r['max_batch'].get('value', '–')}"]
        rows.append("| " + " | ".join(cells) + " |")
    ft_cmd = json.loads(bridge.compute(json.dumps({})))["command"]
    gen_cmd = json.loads(bridge.compute(json.dumps(gen)))["command"]
    gpu = json.loads(bridge.compute(json.dumps({})))["gpu"]
    head = ("| model | params (B) | fine-tune (GiB) | fits | largest batch "
            "| generate (GiB) | fits | largest batch |\n|---|--:|--:|:-:|--:|--:|:-:|--:|")
    notes = [f"Per-GPU memory including the CUDA context and the allocator's reserve, on one "
             f"{gpu['name']} ({gpu['memory_bytes'] / GIB:.2f} GiB); the largest batch keeps the length.",
             f"Fine-tune: `{ft_cmd}`.", f"Generate: `{gen_cmd}`."]
    if marked:
        notes.append("† at the model's position limit instead (learned positions).")
    return head + "\n" + "\n".join(rows) + "\n\n" + "\n\n".join(notes) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else ROOT / "build" / "calculator" / "fit-table.md").resolve()
    bridge = load_bridge()
    with tempfile.TemporaryDirectory() as cwd:  # the bridge writes pasted configs under its cwd
        here = os.getcwd()
        os.chdir(cwd)
        try:
            text = render(bridge)
        finally:
            os.chdir(here)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"calculator_fit_table: {out} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Bind the claims ledger's numbers to the chapters that compute them.

Usage: python scripts/ledger_values.py          # check: exit 1 if the ledger is stale
       python scripts/ledger_values.py --write  # rewrite the ledger's front matter

The ledger (chapters/appendix/claims-ledger.md) is a Markdown page, and MyST-NB cannot paste
a value glued in one notebook into another page.  So the ledger writes such numbers as MyST
substitutions, ``{{ b12_qdq }}``, and its front matter defines them.  BINDINGS below names,
for each substitution, the notebook and the glue name whose committed output holds the
number; this script copies the glued text into the front matter (``--write``) or checks that
it is still the same (the default, and ``tests/test_claims_ledger.py``), so that a number in
the ledger cannot drift from the chapter that checks it (as "61 %" once did for B12).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LEDGER = ROOT / "chapters" / "appendix" / "claims-ledger.md"
HW = "chapters/part3-hardware/"
BINDINGS: dict[str, tuple[str, str]] = {
    # formats in silicon
    "n_catalog": (HW + "formats-in-silicon.ipynb", "n_catalog"),
    "n_no8": (HW + "formats-in-silicon.ipynb", "n_no8"),
    "n_int8only": (HW + "formats-in-silicon.ipynb", "n_int8only"),
    "n_int8fp8": (HW + "formats-in-silicon.ipynb", "n_int8fp8"),
    "paper_int8_fp32_min": (HW + "formats-in-silicon.ipynb", "int8_fp32_min"),
    "paper_int8_fp32_max": (HW + "formats-in-silicon.ipynb", "int8_fp32_max"),
    # measure your own device
    "rec_int8_bf16_min": (HW + "measure-your-device.ipynb", "rec_int8_bf16_min"),
    "rec_int8_bf16_max": (HW + "measure-your-device.ipynb", "rec_int8_bf16_max"),
    "rec_fp8_bf16_max": (HW + "measure-your-device.ipynb", "rec_fp8_bf16_max"),
    "rec_int8_pct_max": (HW + "measure-your-device.ipynb", "rec_int8_pct_max"),
    # when low bits are not faster
    "gpu_int8_fp32_min": (HW + "when-low-bits-are-not-faster.ipynb", "gpu_int8_fp32_min"),
    "rowmajor_max": (HW + "when-low-bits-are-not-faster.ipynb", "rowmajor_max"),
    "qo_qdq": (HW + "when-low-bits-are-not-faster.ipynb", "qo_small_qdq_min"),
    "qo_slowdown": (HW + "when-low-bits-are-not-faster.ipynb", "qo_small_slowdown_min"),
    "pred_int8_m1": (HW + "when-low-bits-are-not-faster.ipynb", "pred_int8_m1"),
    "pred_int4_m1": (HW + "when-low-bits-are-not-faster.ipynb", "pred_int4_m1"),
    "int8wo_m1": (HW + "when-low-bits-are-not-faster.ipynb", "h100_int8wo_m1"),
    "int4wo_m1": (HW + "when-low-bits-are-not-faster.ipynb", "h100_int4wo_m1"),
    "int4wo_last_win": (HW + "when-low-bits-are-not-faster.ipynb", "h100_int4wo_last_win"),
    # runtime memory
    "rt_w_ratio": (HW + "runtime-memory.ipynb", "w_ratio"),
    "rt_tot_ratio": (HW + "runtime-memory.ipynb", "tot_ratio"),
    "rt_unfused_decode": (HW + "runtime-memory.ipynb", "unfused_decode_ratio"),
    "rt_reserve_min": (HW + "runtime-memory.ipynb", "reserve_extra_min"),
    "rt_reserve_max": (HW + "runtime-memory.ipynb", "reserve_extra_max"),
}
_FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.S)
_MIME = "application/papermill.record/text/plain"


def glued(notebook: Path) -> dict[str, str]:
    """Every text value glued in a notebook's committed outputs: {name: text}."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    out = {}
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name and _MIME in o.get("data", {}):
                out[name] = o["data"][_MIME]
    return out


def current_values(root: Path = ROOT) -> dict[str, str]:
    """The value each substitution should have, read from the notebooks' outputs."""
    cache: dict[str, dict[str, str]] = {}
    values = {}
    for sub, (nb, name) in BINDINGS.items():
        cache.setdefault(nb, glued(root / nb))
        if name not in cache[nb]:
            raise KeyError(f"{nb} glues no {name!r} (needed by the ledger's {{{{ {sub} }}}}): "
                           "re-execute the notebook or fix BINDINGS in scripts/ledger_values.py")
        values[sub] = cache[nb][name].strip("'\"")
    return values


def front_matter(text: str) -> dict:
    m = _FRONT.match(text)
    return yaml.safe_load(m.group(1)) if m else {}


def ledger_substitutions(text: str) -> dict[str, str]:
    return (front_matter(text).get("myst") or {}).get("substitutions") or {}


def stale(root: Path = ROOT) -> dict[str, tuple[str | None, str]]:
    """{substitution: (value in the ledger, value in the notebook)} where they differ."""
    have = ledger_substitutions((root / LEDGER.relative_to(ROOT)).read_text(encoding="utf-8"))
    want = current_values(root)
    return {k: (have.get(k), v) for k, v in want.items() if str(have.get(k)) != v}


def write(root: Path = ROOT) -> None:
    path = root / LEDGER.relative_to(ROOT)
    text = path.read_text(encoding="utf-8")
    fm = front_matter(text)
    fm.setdefault("myst", {})["substitutions"] = current_values(root)
    body = _FRONT.sub("", text, count=1)
    head = "---\n" + yaml.safe_dump(fm, allow_unicode=True, sort_keys=True).rstrip() + "\n---\n"
    path.write_text(head + body, encoding="utf-8")


def main(argv: list[str]) -> int:
    if "--write" in argv:
        write()
        print(f"ledger_values: wrote {len(BINDINGS)} substitutions into {LEDGER.relative_to(ROOT)}")
        return 0
    bad = stale()
    for k, (have, want) in bad.items():
        print(f"{{{{ {k} }}}}: ledger says {have!r}, {BINDINGS[k][0]} glues {want!r}")
    if bad:
        print("run: python scripts/ledger_values.py --write")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Run the seven chapters of brief H4 on a CUDA GPU and record how each one ran.

Issue #12: five of these chapters failed a hidden check on an H200 or ran over the 60 s
budget (vramlib/data/records/gpu_execution.json).  After their fixes, this script runs each
of them top to bottom in a fresh kernel on the GPU — without writing their outputs back —
through ``scripts/execute_notebooks.py --record`` (status, seconds, peak device memory and,
for a failure, the failing check), and writes one JSON record with provenance through
``vramlib.core.records.write_record``:

    python3 benchmarks/h4_chapters_gpu.py --out DIR        # DIR/gpu_execution_h4.json
    python3 benchmarks/h4_chapters_gpu.py --out DIR --smoke  # one short chapter only

The lead folds the result into gpu_execution.json (``execute_notebooks.py --record ... --add``
semantics: these chapters' entries replace the earlier ones).  Without CUDA, or without the
notebook runner (nbclient/nbformat/ipykernel), it prints why and exits 0 with no record.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = [
    "chapters/part2-compression/distillation.ipynb",
    "chapters/part2-compression/low-rank.ipynb",
    "chapters/part2-compression/putting-it-together.ipynb",
    "chapters/part3-hardware/formats-in-silicon.ipynb",
    "chapters/part3-hardware/measure-your-device.ipynb",
    "chapters/part3-hardware/when-low-bits-are-not-faster.ipynb",
    "chapters/part3-hardware/runtime-memory.ipynb",
]


def missing_requirements(smoke: bool) -> list[str]:
    """What this machine lacks to run the chapters (empty when nothing is missing)."""
    missing = [m for m in ("nbclient", "nbformat", "ipykernel", "torch")
               if importlib.util.find_spec(m) is None]
    if not missing and not smoke:
        import torch
        if not torch.cuda.is_available():
            missing.append("a CUDA GPU")
    return missing


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the JSON record")
    ap.add_argument("--smoke", action="store_true",
                    help="run only the shortest chapter (also on a CPU), to test the script")
    args = ap.parse_args(argv)
    missing = missing_requirements(args.smoke)
    if missing:
        print(f"skipped: this machine lacks {', '.join(missing)}; nothing recorded")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / ("gpu_execution_h4_smoke.json" if args.smoke else
                      "gpu_execution_h4.json")
    chapters = CHAPTERS[3:4] if args.smoke else CHAPTERS
    cmd = [sys.executable, "scripts/execute_notebooks.py", "--record", str(out.resolve()),
           *chapters]
    env = dict(os.environ)  # the kernels import this checkout's vramlib
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    print(f"record: {out} (runner exit status {rc}: 0 = every chapter ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

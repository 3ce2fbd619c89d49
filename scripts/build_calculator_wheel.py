"""Package what the live calculator runs in the browser as a wheel, from this checkout.

Usage: python scripts/build_calculator_wheel.py [OUTDIR]      (`make calculator`, part of `make book`)

The file list is not written down anywhere: a fresh Python process imports the page's bridge
(_assets/calculator/calculator.py), which imports ``vramlib.estimate`` and the GPU catalogue,
and runs it over a set of scenarios (every stage, a pasted config, bad input); the wheel holds
exactly the ``vramlib`` modules that process loaded (``sys.modules``) and the package data it
read (every file opened under vramlib/, seen by an audit hook: ``importlib.resources`` reads
go through ``open``).  It fails if that process loaded anything outside the standard library,
since Pyodide's core has nothing else (no torch, no numpy).

Writes OUTDIR/calculator/vramlib_estimate-<version>-py3-none-any.whl (reproducible: sorted
entries, fixed timestamps) and OUTDIR/calculator/manifest.json (wheel name, its sha256, the
files, the component colours of ``vramlib.core.style``).  OUTDIR defaults to build/site-static,
which _config.yml serves as ``_static/``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = ROOT / "_assets" / "calculator" / "calculator.py"
DEFAULT_OUT = ROOT / "build" / "site-static"

#: Scenarios the probe runs through the bridge, so that every import a page can reach happens.
PROBE_STATES = [
    {}, {"stage": "pretrain", "gpus": "8", "zero": "3", "tp": "2"},
    {"stage": "finetune", "trainable": "qlora"}, {"stage": "finetune", "trainable": "last-k", "last_k": "2"},
    {"stage": "generate", "weights": "nf4", "kv_dtype": "fp8", "cache": "static"},
    {"model": "custom", "config": json.dumps({"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2,
                                              "num_attention_heads": 4, "intermediate_size": 512,
                                              "vocab_size": 1000})},
    {"model": "custom", "config": "{not json"}, {"batch": "-1"}, {"stage": "generate", "tp": "3"},
    {"model": "mixtral-8x7b", "ep": "2", "capacity_factor": "1.25", "stage": "pretrain", "offload": "all",
     "fp8": True, "tp": "2", "gpus": "2", "sp": True, "cp": "2", "seq": "4096"},
    {"stage": "generate", "kv_dtype": "int8", "kv_scales": "head"},
]

PROBE = r"""
import json, os, sys
root = os.path.realpath(sys.argv[1])
pkg = os.path.join(root, "vramlib") + os.sep
read = set()

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        p = os.path.realpath(os.fsdecode(args[0]))
        if p.startswith(pkg):
            read.add(p)

sys.addaudithook(hook)
before = set(sys.modules)
import importlib.util
spec = importlib.util.spec_from_file_location("calculator", sys.argv[2])
bridge = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bridge)
json.loads(bridge.schema())
for state in json.loads(sys.argv[3]):
    json.loads(bridge.compute(json.dumps(state)))
import vramlib
mods = {n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n not in before}
print(json.dumps({"modules": mods, "read": sorted(read), "version": vramlib.__version__}))
"""


def probe() -> dict:
    """Run the bridge in a fresh interpreter; return the modules it loaded and the files it read."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as cwd:  # the bridge writes a pasted config under its cwd
        out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), str(BRIDGE), json.dumps(PROBE_STATES)],
                             cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"build_calculator_wheel: the bridge failed in a fresh interpreter:\n{out.stderr}")
    return json.loads(out.stdout)


def wheel_files(found: dict) -> dict[str, Path]:
    """Archive name → file: the vramlib modules loaded and the package data read."""
    pkg = (ROOT / "vramlib").resolve()
    stdlib = set(sys.stdlib_module_names) | {"__main__", "calculator", "vramlib"}
    foreign = sorted({n.split(".")[0] for n in found["modules"]} - stdlib)
    if foreign:
        raise SystemExit(f"build_calculator_wheel: the estimator loaded {foreign}, which Pyodide's core lacks; "
                         "vramlib.estimate must import only the standard library (and vramlib)")
    files = {}
    for name, f in found["modules"].items():
        if name.split(".")[0] == "vramlib":
            if not f:
                raise SystemExit(f"build_calculator_wheel: module {name} has no file")
            files[Path(f).resolve()] = None
    files.update(dict.fromkeys(Path(p) for p in found["read"]))
    return {p.relative_to(pkg.parent).as_posix(): p for p in sorted(files) if p.suffix != ".pyc"}


def _zinfo(name: str) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.external_attr = 0o644 << 16
    return zi


def build_wheel(files: dict[str, Path], version: str, out: Path) -> Path:
    """Write a pure-Python wheel ``vramlib_estimate`` holding ``files`` into ``out``."""
    dist = f"vramlib_estimate-{version}"
    entries = {name: path.read_bytes() for name, path in sorted(files.items())}
    entries[f"{dist}.dist-info/METADATA"] = (
        f"Metadata-Version: 2.1\nName: vramlib-estimate\nVersion: {version}\n"
        "Summary: vramlib.estimate and the GPU catalogue, for the book's live calculator (Pyodide)\n"
        "License: MIT\nRequires-Python: >=3.10\n").encode()
    entries[f"{dist}.dist-info/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: scripts/build_calculator_wheel.py\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n").encode()
    record = io.StringIO()
    for name, data in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write(f"{name},sha256={digest},{len(data)}\n")
    record.write(f"{dist}.dist-info/RECORD,,\n")
    entries[f"{dist}.dist-info/RECORD"] = record.getvalue().encode()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("vramlib_estimate-*.whl"):
        old.unlink()
    path = out / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(_zinfo(name), data)
    return path


def main(argv: list[str]) -> int:
    out = (Path(argv[0]) if argv else DEFAULT_OUT) / "calculator"
    found = probe()
    files = wheel_files(found)
    wheel = build_wheel(files, found["version"], out)
    sys.path.insert(0, str(ROOT))
    from vramlib.core.style import COMPONENT_COLORS  # the book's colours (this process has matplotlib)

    manifest = {"wheel": wheel.name, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
                "vramlib": found["version"], "files": sorted(files), "component_colors": COMPONENT_COLORS}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"build_calculator_wheel: {wheel.relative_to(ROOT) if wheel.is_relative_to(ROOT) else wheel} "
          f"({wheel.stat().st_size / 1024:.0f} KiB, {len(files)} files: "
          f"{sum(f.endswith('.py') for f in files)} modules, {sum(not f.endswith('.py') for f in files)} data)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""vramlib's layers: each imports only layers below it, and the estimator runs without torch.

Layers, bottom to top (see ``vramlib/__init__.py``)::

    core < hardware < estimate < models < measure < compress < (cli, __main__, __init__)

``models`` sits below ``measure``: the book's GPT needs only torch, and the measurement
layer (checkpointing, generation, the multi-GPU demo) runs it.  ``cli.py``, ``__main__.py``
and the package ``__init__`` are the top: they may import any layer, nothing imports them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "vramlib"
LAYERS = ["core", "hardware", "estimate", "models", "measure", "compress"]
TOP = len(LAYERS)                              # cli, __main__, the package __init__
#: estimate is pure arithmetic on configs: what it may import from the layers below it.
ESTIMATE_MAY_IMPORT = ("vramlib.core.units", "vramlib.core.vocab", "vramlib.core.style",
                      "vramlib.hardware.gpus")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return TOP


def vramlib_imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every vramlib import in ``path``, lazy ones included."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
    return [(line, m) for line, m in found if m == "vramlib" or m.startswith("vramlib.")]


def modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def test_every_module_sits_in_a_layer():
    top = {p.name for p in PKG.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "cli.py"}, (
        f"modules outside a layer: {sorted(top - {'__init__.py', '__main__.py', 'cli.py'})}; "
        f"move them into one of {LAYERS}")


def test_no_upward_import_and_no_cycle():
    bad = []
    for path in modules():
        me = module_name(path)
        for line, target in vramlib_imports(path):
            if layer_of(target) > layer_of(me) or (layer_of(target) == TOP and me != "vramlib"
                                                  and target == "vramlib"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "upward imports (a layer may import only the layers below it):\n" + "\n".join(bad)


def test_estimate_imports_only_core_units_style_and_the_gpu_catalogue():
    bad = []
    for path in sorted((PKG / "estimate").rglob("*.py")):
        for line, target in vramlib_imports(path):
            if not (target.startswith("vramlib.estimate") or target in ESTIMATE_MAY_IMPORT):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The layer check can fail: a core module importing measure is reported."""
    fake = PKG / "core" / "units.py"
    src = tmp_path / "vramlib" / "core" / "units.py"
    src.parent.mkdir(parents=True)
    src.write_text(fake.read_text() + "\nfrom ..measure.tracker import measure\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        targets = [t for _, t in vramlib_imports(src)]
    finally:
        ROOT = old
    assert "vramlib.measure.tracker" in targets
    assert layer_of("vramlib.measure.tracker") > layer_of("vramlib.core.units")


BLOCKER = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "matplotlib", "numpy"):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, Block())
""")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_estimate_runs_with_torch_matplotlib_and_numpy_unimportable():
    r = run_python("""
        import vramlib.estimate as E
        b = E.estimate_training("gpt2", batch=2, seq_len=128)
        assert b.peak > 0
        i = E.estimate_inference("gpt2", batch=1, prompt_len=64, new_tokens=8)
        assert i.peak > 0
        assert not any(m.split(".")[0] in ("torch", "matplotlib") for m in sys.modules)
        print("ok", b.peak)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok ")


def test_the_blocker_blocks_torch():
    r = run_python("import torch")
    assert r.returncode != 0 and "blocked" in r.stderr


@pytest.mark.parametrize("argv", [["--help"], ["estimate", "gpt2", "--batch", "2", "--seq", "128",
                                                "--json"]])
def test_cli_does_not_import_torch(argv):
    r = run_python(f"""
        import runpy
        sys.argv = ["vramlib", *{argv!r}]
        try:
            runpy.run_module("vramlib", run_name="__main__")
        except SystemExit as e:
            assert e.code in (0, None), e.code
        assert "torch" not in sys.modules
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_measure_is_the_layer_and_measure_measure_the_function():
    import types

    import vramlib
    import vramlib.measure

    assert isinstance(vramlib.measure, types.ModuleType)
    assert vramlib.measure is vramlib.__getattr__("measure")
    assert callable(vramlib.measure.measure) and vramlib.measure.measure.__module__ == \
        "vramlib.measure.tracker"

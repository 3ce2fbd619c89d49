"""The live calculator's bridge (_assets/calculator/calculator.py) and its wheel, in CPython.

The browser test (scripts/browser_test.py) drives the page itself in headless Chromium; these
check, without a browser, that the bridge computes what ``vramlib estimate --json`` prints, that
its CLI defaults are the CLI's, that bad input comes back as the estimator's own message on
the right field, and that the wheel holds exactly what the bridge loads.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import zipfile
from contextlib import redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bridge():
    spec = importlib.util.spec_from_file_location("calculator_bridge", ROOT / "_assets" / "calculator" / "calculator.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cli_json(argv: list[str]) -> str:
    from vramlib.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue().rstrip("\n")


def test_cli_defaults_are_the_clis(bridge) -> None:
    from vramlib.cli import build_parser

    est = build_parser()._subparsers._group_actions[0].choices["estimate"]
    defaults = {a.option_strings[0]: a.default for a in est._actions if a.option_strings}
    for f in bridge.FIELDS:
        if f["flag"]:
            assert f["flag"] in defaults, f"{f['flag']} is not an option of `vramlib estimate`"
            assert str(defaults[f["flag"]]) == str(f["cli_default"]), f["name"]


@pytest.mark.parametrize("state", [
    {}, {"stage": "pretrain", "model": "llama-3.2-1b", "gpus": "8", "zero": "3", "dtype": "fp16",
         "master_weights": True},
    {"trainable": "qlora", "lora_targets": "attn", "lora_rank": "32"},
    {"trainable": "last-k", "last_k": "3", "lora_rank": "999"},          # a hidden field takes no part
    {"stage": "generate", "model": "mixtral-8x7b", "weights": "nf4", "group_size": "128", "cache": "static"},
    {"stage": "generate", "weights": "int8", "group_size": "-5", "tp": "2"},  # group_size hidden for int8
    # the options beyond the breakdown (vramlib.estimate.extend): MoE, offload, FP8, SP/CP, KV scales
    {"stage": "pretrain", "model": "mixtral-8x7b", "gpus": "4", "zero": "3", "tp": "2", "ep": "4",
     "capacity_factor": "1.25", "offload": "all", "fp8": True, "sp": True, "cp": "2", "seq": "4096"},
    {"stage": "finetune", "offload": "optimizer", "capacity_factor": "x"},   # hidden: not an MoE
    {"stage": "generate", "model": "mixtral-8x7b", "ep": "2", "kv_dtype": "int8", "kv_scales": "token"},
    {"stage": "generate", "kv_dtype": "fp8", "kv_scales": "head"},
    {"stage": "generate", "kv_scales": "head"},                     # hidden for a bf16 cache
    # who quantized the weights (--quant-library): torchao and bitsandbytes int8 differ
    {"stage": "generate", "model": "qwen2-0.5b", "weights": "int8", "quant_library": "torchao", "batch": "8"},
    {"stage": "generate", "model": "qwen2-0.5b", "weights": "int8", "quant_library": "bitsandbytes"},
    {"stage": "generate", "model": "llama-3.2-1b", "weights": "int4", "group_size": "128",
     "quant_library": "torchao"},
    {"stage": "generate", "weights": "nf4", "quant_library": "bitsandbytes"},
    {"stage": "generate", "quant_library": "torchao"},               # hidden for bf16 weights
])
def test_bridge_equals_cli(bridge, state: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = json.loads(bridge.compute(json.dumps(state)))
    assert r["ok"], r["errors"]
    assert r["json"] == cli_json(r["argv"])
    assert r["command"].startswith("vramlib estimate ") and r["argv"][-1] == "--json"


def test_pasted_config_is_loaded_like_a_file(bridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = json.dumps({"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "intermediate_size": 512, "vocab_size": 1000})
    r = json.loads(bridge.compute(json.dumps({"model": "custom", "config": cfg})))
    assert r["ok"] and r["breakdown"]["scenario"]["model"] == "my-model"
    assert r["json"] == cli_json(r["argv"])


@pytest.mark.parametrize("state, field, words", [
    ({"batch": "-1"}, "batch", "batch must be an integer"),
    ({"batch": "two"}, "batch", "got 'two'"),
    ({"stage": "generate", "tp": "3"}, "tp", "does not divide"),
    ({"model": "custom", "config": "{oops"}, "config", "is not valid JSON"),
    ({"model": "custom", "config": "[1, 2]"}, "config", "must be a dict"),
    ({"autocast": "bf16"}, "autocast", "autocast needs fp32 weights"),
    ({"stage": "pretrain", "master_weights": True, "dtype": "fp32"}, "master_weights", "16-bit"),
    ({"stage": "pretrain", "gpus": "3", "tp": "2"}, "gpus", "multiple of tp"),
    ({"model": "gpt2", "seq": "4096"}, "seq", "max_position_embeddings"),
    ({"model": "mixtral-8x7b", "ep": "3"}, "ep", "must divide num_experts"),
    ({"model": "mixtral-8x7b", "capacity_factor": "lots"}, "capacity_factor", "positive number"),
    ({"stage": "pretrain", "sp": True}, "sp", "needs tp > 1"),
    ({"stage": "pretrain", "cp": "0"}, "cp", "cp must be an integer"),
    ({"stage": "generate", "kv_dtype": "int8", "kv_scales": "rows"}, "kv_scales", "must be one of"),
    ({"stage": "generate", "weights": "nf4", "quant_library": "torchao"}, "quant_library", "has no 'nf4'"),
    ({"stage": "generate", "model": "gpt2", "weights": "int8", "quant_library": "torchao"}, "quant_library",
     "Conv1D"),
])
def test_bad_input_names_the_field(bridge, state: dict, field: str, words: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = json.loads(bridge.compute(json.dumps(state)))
    assert not r["ok"] and r["errors"][0]["field"] == field and words in r["errors"][0]["message"]
    assert field in r["relevant"]


def test_quant_library_changes_the_estimate(bridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control reaches the estimator: torchao's int8 (bf16 copy of the LM head per call) and
    bitsandbytes' (int32 products) are not the format-only estimate, and it is hidden (its CLI
    default) for unquantized weights."""
    monkeypatch.chdir(tmp_path)
    peak = {}
    for lib in ("auto", "torchao", "bitsandbytes"):
        r = json.loads(bridge.compute(json.dumps({"stage": "generate", "model": "qwen2-0.5b", "weights": "int8",
                                                  "quant_library": lib})))
        assert r["ok"] and "quant_library" in r["relevant"]
        assert ("--quant-library" in r["argv"]) == (lib != "auto")
        peak[lib] = r["breakdown"]["peak"]
    assert len(set(peak.values())) == 3
    r = json.loads(bridge.compute(json.dumps({"stage": "generate", "quant_library": "torchao"})))
    assert "quant_library" not in r["relevant"] and "--quant-library" not in r["argv"]


def test_solvers_and_fit(bridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vramlib.estimate import estimate_training, max_batch

    monkeypatch.chdir(tmp_path)
    r = json.loads(bridge.compute("{}"))
    b = r["max_batch"]["value"]
    kw = dict(trainable="lora", checkpointing="full", weights_dtype="bf16")
    assert b == max_batch("llama-2-7b", "h100-sxm", "train", seq_len=2048, **kw) > 0
    assert estimate_training("llama-2-7b", b, 2048, **kw).fits("h100-sxm")
    assert not estimate_training("llama-2-7b", b + 1, 2048, **kw).fits("h100-sxm")
    from vramlib.estimate.reserve import estimate_margin

    needed = estimate_training("llama-2-7b", 4, 2048, **kw)
    assert r["fits"] and r["margin"] == (r["gpu"]["memory_bytes"] - needed.total_reserved
                                         - estimate_margin(needed))


def test_wheel_holds_what_the_bridge_loads(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_calculator_wheel as bw
    finally:
        sys.path.pop(0)
    assert bw.main([str(tmp_path)]) == 0
    out = tmp_path / "calculator"
    manifest = json.loads((out / "manifest.json").read_text())
    names = set(zipfile.ZipFile(out / manifest["wheel"]).namelist())
    assert {"vramlib/__init__.py", "vramlib/estimate/__init__.py", "vramlib/core/units.py",
            "vramlib/data/models/llama-2-7b.json"} <= names
    assert any(n.endswith("gpus.json") for n in names) and any(n.endswith("gpus.py") for n in names)
    assert not any(n.startswith(("vramlib/models", "vramlib/measure", "vramlib/core/style", "vramlib/data/checkpoints"))
                   for n in names), "the wheel must hold only what the estimator loads"
    found = {"modules": {"numpy": "x.py", "vramlib": str(ROOT / "vramlib" / "__init__.py")}, "read": []}
    with pytest.raises(SystemExit, match="numpy"):
        bw.wheel_files(found)

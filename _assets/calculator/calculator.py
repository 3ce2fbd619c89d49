"""The live calculator's bridge between the page's controls and ``vramlib.estimate``.

Runs in the reader's browser (Pyodide, chapters/part1-stage-memory/live-calculator.md) and,
for the tests, in CPython.  It holds no formula: every number comes from the estimator's
public API (``estimate_training``, ``estimate_inference``, ``load_model_config``,
``list_models``, ``max_batch``, ``max_context``, ``Breakdown.to_dict``, ``Breakdown.fits``)
and the GPU catalogue.  It maps the page's fields to the estimator's arguments exactly as
``vramlib estimate`` (vramlib/cli.py) does, so that the JSON it returns is byte for byte what
``vramlib estimate ... --json`` prints (scripts/browser_test.py checks this), and it writes
that command line for the reader.

A pasted ``config.json`` is written to ``my-model/config.json`` under the current directory
and loaded by path, as the CLI loads it (same name, same error messages).

Defined in Part I, "The live calculator".
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from vramlib.estimate.reserve import estimate_margin
from vramlib.estimate import (estimate_inference, estimate_training, list_models,
                              load_model_config, max_batch, max_context)
from vramlib.estimate.extend import Extensions, estimate_extensions
from vramlib.estimate.inference import QUANT_LIBRARIES, WEIGHT_FORMATS
from vramlib.estimate.training import ATTENTION, CHECKPOINTING, OPTIMIZERS

from vramlib.hardware.gpus import get_gpu, gpu_catalog

#: Where a pasted config.json goes (relative to the current directory), and the name it gets.
PASTED = "my-model/config.json"
CUSTOM = "custom"
STAGES = ("pretrain", "finetune", "generate")
TRAIN = ("pretrain", "finetune")

# One row per control: name, group, label, kind, page default, CLI flag, CLI default, help.
# The CLI defaults are those of `vramlib estimate` (tests/test_calculator.py checks them
# against vramlib.cli.build_parser()); a field the page hides for the current scenario takes
# its CLI default, so the page computes exactly what the command it prints computes.
_F = [
    ("model", "Model", "model", "select", "llama-2-7b", None, None,
     "a bundled config, or paste a Hugging Face config.json"),
    ("config", "Model", "config.json", "textarea", "", None, None,
     "the model's Hugging Face config.json"),
    ("stage", "Scenario", "stage", "select", "finetune", None, None, ""),
    ("trainable", "Scenario", "trainable", "select", "lora", "--trainable", "all",
     "which parameters train"),
    ("last_k", "Scenario", "last k blocks", "int", "1", "--last-k", "1", "blocks that train"),
    ("lora_rank", "Scenario", "LoRA rank", "int", "16", "--lora-rank", "16", ""),
    ("lora_targets", "Scenario", "LoRA targets", "text", "all-linear", "--lora-targets", "all-linear",
     "all-linear, attn, or e.g. q,k,v,o"),
    ("batch", "Scenario", "batch", "int", "4", "--batch", "1", "sequences per step"),
    ("seq", "Scenario", "sequence length", "int", "2048", "--seq", "2048", "tokens per sequence"),
    ("prompt", "Scenario", "prompt tokens", "int", "512", "--prompt", "512", ""),
    ("new_tokens", "Scenario", "new tokens", "int", "128", "--new-tokens", "128", "generated per sequence"),
    ("dtype", "Precision", "weights dtype", "select", "bf16", "--dtype", "bf16", "dtype the parameters are stored in"),
    ("autocast", "Precision", "autocast", "select", "none", "--autocast", "none", "needs fp32 weights"),
    ("master_weights", "Precision", "fp32 master weights", "bool", False, "--master-weights", False,
     "an fp32 copy of 16-bit weights"),
    ("weights", "Precision", "weights format", "select", "bf16", "--weights", "bf16",
     "quantized formats include their scales"),
    ("group_size", "Precision", "group size", "int", "64", "--group-size", "64", "weights per scale (int4, nf4)"),
    ("quant_library", "Precision", "quantized by", "select", "auto", "--quant-library", "auto",
     "the library that quantized the weights (its layout and run-time copies); auto: the format alone"),
    ("kv_dtype", "Precision", "KV-cache dtype", "select", "auto", "--kv-dtype", "auto", "auto: the compute dtype"),
    ("cache", "Precision", "KV cache", "select", "dynamic", "--cache", "dynamic", ""),
    ("optimizer", "Training step", "optimizer", "select", "adamw", "--optimizer", "adamw", ""),
    ("grad_accum", "Training step", "gradient accumulation", "int", "1", "--grad-accum", "1", "micro-batches"),
    ("checkpointing", "Training step", "activation checkpointing", "select", "full", "--checkpointing", "none", ""),
    ("attention", "Training step", "attention kernel", "select", "sdpa", "--attention", "sdpa", ""),
    ("keep_logits", "Training step", "keep logits", "bool", False, "--keep-logits", False,
     "the training loop holds the logits"),
    ("full_logits", "Precision", "logits of every prompt position", "bool", False, "--full-logits", False, ""),
    ("gpus", "GPUs", "GPUs", "int", "1", "--gpus", "1", "data × tensor × pipeline parallel"),
    ("zero", "GPUs", "ZeRO stage", "select", "0", "--zero", "0", "3 = FSDP full shard"),
    ("tp", "GPUs", "tensor parallel", "int", "1", "--tp", "1", ""),
    ("pp", "GPUs", "pipeline parallel", "int", "1", "--pp", "1", ""),
    ("gpu", "GPUs", "GPU", "select", "h100-sxm", None, None, "from the book's catalogue"),
    ("ep", "Beyond the breakdown", "expert parallel", "int", "1", "--ep", "1", "MoE: experts per GPU = E / ep"),
    ("capacity_factor", "Beyond the breakdown", "capacity factor", "text", "", "--capacity-factor", None,
     "MoE fixed-capacity dispatch; empty: dropless"),
    ("kv_scales", "Beyond the breakdown", "KV scales", "select", "none", "--kv-scales", "none",
     "fp32 scale per token or per token and head (int8/fp8 cache)"),
    ("offload", "Beyond the breakdown", "CPU offload", "select", "none", "--offload", "none",
     "training state in host memory"),
    ("fp8", "Beyond the breakdown", "FP8 training", "bool", False, "--fp8", False, "torchao float8 linears"),
    ("sp", "Beyond the breakdown", "sequence parallel", "bool", False, "--sp", False, "over the TP group"),
    ("cp", "Beyond the breakdown", "context parallel", "int", "1", "--cp", "1", "GPUs sharing one sequence"),
]
FIELDS = [dict(zip(("name", "group", "label", "kind", "default", "flag", "cli_default", "help"), f)) for f in _F]
_BY_NAME = {f["name"]: f for f in FIELDS}
DEFAULTS = {f["name"]: f["default"] for f in FIELDS}

#: The estimator's argument names, as its error messages spell them, → the page's field.
_ARG_FIELD = {"batch": "batch", "seq_len": "seq", "prompt_len": "prompt", "new_tokens": "new_tokens",
              "weights_dtype": "dtype", "autocast": "autocast", "master_weights": "master_weights",
              "optimizer": "optimizer", "grad_accum": "grad_accum", "checkpointing": "checkpointing",
              "attention": "attention", "trainable": "trainable", "last_k": "last_k",
              "lora_rank": "lora_rank", "lora_targets": "lora_targets", "keep_logits": "keep_logits",
              "weights": "weights", "group_size": "group_size", "kv_dtype": "kv_dtype", "cache": "cache",
              "full_logits": "full_logits", "quant_library": "quant_library", "num_gpus": "gpus", "zero": "zero", "tp": "tp", "pp": "pp",
              "config": "config", "model_type": "config", "GPU": "gpu", "ep": "ep",
              "capacity_factor": "capacity_factor", "kv_scales": "kv_scales", "offload": "offload",
              "fp8": "fp8", "sp": "sp", "cp": "cp"}


#: The weight formats a quantization library produces (the others need no library).
_QUANTIZED = sorted({f for q, fs in QUANT_LIBRARIES.items() if q != "auto" for f in fs})


def options() -> dict[str, list[list[str]]]:
    """The choices of every select field, as ``[value, label]`` pairs, from the library."""
    gpus = sorted(gpu_catalog().values(), key=lambda g: (g.memory_bytes, g.key))
    return {
        "model": [[m, m] for m in list_models()] + [[CUSTOM, "paste a config.json…"]],
        "stage": [["pretrain", "pretrain (all parameters train)"], ["finetune", "fine-tune"],
                  ["generate", "generate (inference)"]],
        "trainable": [["all", "all parameters"], ["last-k", "last k blocks"], ["lora", "LoRA"],
                      ["qlora", "QLoRA (NF4 base)"]],
        "dtype": [[d, d] for d in ("fp32", "bf16", "fp16")],
        "autocast": [[d, d] for d in ("none", "bf16", "fp16")],
        "weights": [[w, w] for w in WEIGHT_FORMATS],
        "quant_library": [[q, q if q == "auto" else f"{q} ({', '.join(QUANT_LIBRARIES[q])})"]
                          for q in QUANT_LIBRARIES],
        "kv_dtype": [[d, d] for d in ("auto", "fp32", "bf16", "fp16", "fp8", "int8")],
        "kv_scales": [["none", "none (per-tensor)"], ["token", "per token"], ["head", "per token and head"]],
        "offload": [["none", "none"], ["optimizer", "optimizer states"], ["all", "all (FSDP2 CPUOffloadPolicy)"]],
        "cache": [[c, c] for c in ("dynamic", "static")],
        "optimizer": [[o, o] for o in OPTIMIZERS],
        "checkpointing": [[c, c] for c in CHECKPOINTING],
        "attention": [[a, a] for a in ATTENTION],
        "zero": [["0", "0 (plain data parallel)"], ["1", "1"], ["2", "2"], ["3", "3 (FSDP)"]],
        "gpu": [[g.key, f"{g.name} ({g.memory_bytes / 1e9:g} GB)"] for g in gpus],
    }


def _is_moe(state: dict[str, Any]) -> bool:
    """Whether the chosen model is a mixture of experts (a pasted config: always offered)."""
    model = state.get("model", DEFAULTS["model"])
    if model == CUSTOM:
        return True
    try:
        return load_model_config(model).num_experts > 1
    except (ValueError, TypeError):
        return False


def relevant(state: dict[str, Any]) -> list[str]:
    """The fields that take part in ``state``'s scenario (the page shows only these)."""
    stage = state.get("stage", DEFAULTS["stage"])
    tr = state.get("trainable", DEFAULTS["trainable"])
    shown = {"model", "stage", "batch", "attention", "tp", "pp", "gpu"}
    if state.get("model", DEFAULTS["model"]) == CUSTOM:
        shown.add("config")
    if _is_moe(state):
        shown |= {"ep", "capacity_factor"}
    if stage in TRAIN:
        shown |= {"offload", "fp8", "sp", "cp"}
        shown |= {"seq", "dtype", "autocast", "master_weights", "optimizer", "grad_accum", "checkpointing",
                  "keep_logits", "gpus", "zero"}
    if stage == "finetune":
        shown.add("trainable")
        shown |= {"last_k"} if tr == "last-k" else {"lora_rank", "lora_targets"} if tr in ("lora", "qlora") else set()
    if stage not in TRAIN:
        shown |= {"prompt", "new_tokens", "weights", "kv_dtype", "cache", "full_logits"}
        if state.get("weights", DEFAULTS["weights"]) in ("int4", "nf4"):
            shown.add("group_size")
        if state.get("weights", DEFAULTS["weights"]) in _QUANTIZED:
            shown.add("quant_library")
        if state.get("kv_dtype", DEFAULTS["kv_dtype"]) in ("int8", "fp8"):
            shown.add("kv_scales")
    return [f["name"] for f in FIELDS if f["name"] in shown]


def schema() -> str:
    """Fields, choices and defaults for the page, as JSON."""
    from vramlib import __version__

    return json.dumps({"fields": FIELDS, "options": options(), "defaults": DEFAULTS,
                       "vramlib": __version__, "reserve_fraction": None})


def _int(v: Any) -> Any:
    """A field's text as an int when it is one; anything else goes to the estimator as is, so
    that its own message ("batch must be an integer ≥ 1; got '2.5'") names the problem."""
    if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
        return int(v)
    return v


def effective(state: dict[str, Any]) -> dict[str, Any]:
    """Every field's value for the estimate: the page's value where it takes part, else the
    CLI's default (so the printed command, which omits CLI defaults, computes the same)."""
    on = set(relevant(state))
    out = {}
    for f in FIELDS:
        n = f["name"]
        v = state.get(n, f["default"]) if n in on else (f["cli_default"] if f["flag"] else f["default"])
        if n == "trainable" and state.get("stage", DEFAULTS["stage"]) == "pretrain":
            v = "all"
        out[n] = _int(v) if f["kind"] == "int" or n == "zero" else v
    out["capacity_factor"] = _float_or_none(out["capacity_factor"])
    return out


def _float_or_none(v: Any) -> Any:
    """The capacity factor's text: empty → ``None`` (dropless), a number → float, anything
    else as is (the estimator's message names it)."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _model_arg(e: dict[str, Any]) -> str:
    """The model argument: a bundled name, or the path the pasted config is written to."""
    if e["model"] != CUSTOM:
        return e["model"]
    p = Path(PASTED)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(e["config"] if isinstance(e["config"], str) else json.dumps(e["config"]))
    return PASTED


def _kwargs(e: dict[str, Any]) -> dict[str, Any]:
    """The estimator's keyword arguments for ``e`` beyond model, batch and length, as
    ``vramlib estimate`` passes them (vramlib/cli.py)."""
    common = dict(reserve_fraction=None, device="cuda")  # the CLI's default: modelled reserve
    if e["stage"] in TRAIN:
        return dict(num_gpus=e["gpus"], zero=e["zero"], tp=e["tp"], pp=e["pp"], weights_dtype=e["dtype"],
                    autocast=e["autocast"], master_weights=e["master_weights"], optimizer=e["optimizer"],
                    grad_accum=e["grad_accum"], checkpointing=e["checkpointing"], attention=e["attention"],
                    trainable=e["trainable"], last_k=e["last_k"], lora_rank=e["lora_rank"],
                    lora_targets=e["lora_targets"], keep_logits=e["keep_logits"], **common)
    return dict(new_tokens=e["new_tokens"], tp=e["tp"], pp=e["pp"], weights=e["weights"],
                group_size=e["group_size"], kv_dtype=e["kv_dtype"], cache=e["cache"],
                full_logits=e["full_logits"], attention=e["attention"], quant_library=e["quant_library"],
                **common)


def run_estimate(e: dict[str, Any], model: Any):
    """The estimate for the effective fields ``e`` (a :class:`vramlib.estimate.Breakdown`)."""
    if e["stage"] in TRAIN:
        return estimate_training(model, e["batch"], e["seq"], **_kwargs(e))
    return estimate_inference(model, e["batch"], e["prompt"], **_kwargs(e))


def run_extensions(e: dict[str, Any], b: Any, model: Any) -> dict[str, Any]:
    """The ``extensions`` section ``vramlib estimate`` adds for the options beyond the
    breakdown (empty when none is used)."""
    ext = Extensions(ep=e["ep"], capacity_factor=e["capacity_factor"], kv_scales=e["kv_scales"],
                     offload=e["offload"], fp8=e["fp8"], sp=e["sp"], cp=e["cp"])
    return estimate_extensions(b, load_model_config(model), ext)


def cli_argv(e: dict[str, Any]) -> list[str]:
    """``vramlib estimate`` arguments (after the program name) that compute the same estimate."""
    argv = ["estimate", PASTED if e["model"] == CUSTOM else e["model"]]
    if e["stage"] not in TRAIN:
        argv += ["--stage", "inference"]
    for f in FIELDS:
        if not f["flag"]:
            continue
        v = e[f["name"]]
        if f["kind"] == "bool":
            if v is True:
                argv.append(f["flag"])
        elif v is not None and str(v) != str(f["cli_default"]):
            argv += [f["flag"], str(v)]
    return argv + ["--json"]


def field_of(message: str, on: list[str]) -> str | None:
    """The page field an estimator error names first (by its argument name), if shown."""
    best = None
    for arg, field in _ARG_FIELD.items():
        m = re.search(rf"(?<![\w-]){re.escape(arg)}(?![\w])", message)
        if m and field in on and (best is None or m.start() < best[0]):
            best = (m.start(), field)
    if best is None and ("model" in message or "config" in message):
        return "config" if "config" in on else "model"
    return best[1] if best else None


def _solve(fn, *args: Any, **kw: Any) -> dict[str, Any]:
    try:
        return {"value": fn(*args, **kw)}
    except (ValueError, TypeError) as exc:
        return {"error": str(exc)}


def compute(state_json: str) -> str:
    """The page's result for a state (JSON of field → value), as JSON.

    ``ok`` with the breakdown (``json`` is the CLI's ``--json`` text), the command line, the
    GPU, ``fits`` and the margin, and the largest batch and context; or ``ok: false`` with
    the estimator's error message and the field it names."""
    state = json.loads(state_json)
    on = relevant(state)
    e = effective(state)
    try:
        model = _model_arg(e)
        b = run_estimate(e, model)
        ext = run_extensions(e, b, model)
        gpu = get_gpu(e["gpu"])
        fits = b.fits(gpu)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        return json.dumps({"ok": False, "errors": [{"field": field_of(msg, on), "message": msg}], "relevant": on,
                           "argv": cli_argv(e)})
    d = {**b.to_dict(), **({"extensions": ext} if ext else {})}
    spec = load_model_config(model)
    kw = _kwargs(e)
    if e["stage"] in TRAIN:
        best_b = _solve(max_batch, spec, gpu, "train", seq_len=e["seq"], **kw)
        best_s = _solve(max_context, spec, gpu, "train", batch=e["batch"], **kw)
    else:
        best_b = _solve(max_batch, spec, gpu, "inference", prompt_len=e["prompt"], **kw)
        best_s = _solve(max_context, spec, gpu, "inference", batch=e["batch"], **kw)
    argv = cli_argv(e)
    return json.dumps({
        "ok": True, "errors": [], "breakdown": d, "json": json.dumps(d, indent=2),
        "argv": argv, "command": "vramlib " + " ".join(shlex.quote(a) for a in argv),
        "gpu": {"key": gpu.key, "name": gpu.name, "memory_bytes": gpu.usable_bytes},
        "fits": fits, "margin": gpu.usable_bytes - b.total_reserved - estimate_margin(b),
        "max_batch": best_b, "max_context": best_s, "relevant": on})

"""Measure the peak memory of the runs people make, with the real libraries, next to
``vramlib.estimate`` (Part I, "The calculator", "Will it fit?").

Each case builds a model from a config (random weights, nothing downloaded), runs two
steady-state training steps (or two ``generate`` calls) and records the peak of the second
one from ``torch.cuda.max_memory_allocated`` minus what was allocated before the model was
built.  The recipes:

* peft LoRA (r=16, all linear layers, bf16 base) with and without gradient checkpointing;
* QLoRA as people run it: ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")``
  → ``prepare_model_for_kbit_training`` → ``get_peft_model``, with its default checkpointing
  and without;
* full bf16 training with bitsandbytes ``AdamW8bit``, ``PagedAdamW`` and ``PagedAdamW8bit``,
  torch's ``Adafactor``, plain ``SGD``, and ``AdamW`` with gradient accumulation;
* a Mixtral-style and a Qwen-MoE-style model and a Gemma-2 model, in training and generation;
* generation with bitsandbytes int8 and nf4 weights and torchao int8/int4 weight-only weights.

Every case also records the bytes the weights took once built (``weights_allocated``), the
allocator's reserved peak and the device's used bytes after the step (paged optimizer states
live in CUDA managed memory, outside the caching allocator).  A case whose library is missing
is recorded as skipped with the reason.  Estimates are recomputed from the record by
:func:`vramlib.estimate.fitcheck.recipe_check` (no GPU needed).

Run (GPU, about 3 minutes on an H200): ``python3 benchmarks/validate_recipes.py --out DIR``
(``--cases r04 h10 ...``: only those cases, into ``DIR/recipes_gpu_cases.json``)
(writes ``DIR/recipes_gpu.json``); rehearsal on the CPU: ``--smoke``; report a record:
``--from-json vramlib/data/records/recipes_gpu.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Small models in the style of the families the bundled catalogue lacks (random init).
MINI = {
    "mixtral-mini": dict(model_type="mixtral", vocab_size=32000, hidden_size=1024, intermediate_size=2048,
                         num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=4,
                         num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, rope_theta=1e6, tie_word_embeddings=False, sliding_window=None),
    "qwen-moe-mini": dict(model_type="qwen2_moe", vocab_size=151936, hidden_size=1024, intermediate_size=2816,
                          moe_intermediate_size=512, shared_expert_intermediate_size=2048, num_experts=16,
                          num_experts_per_tok=4, num_hidden_layers=8, num_attention_heads=16,
                          num_key_value_heads=16, decoder_sparse_step=1, norm_topk_prob=False,
                          max_position_embeddings=4096, tie_word_embeddings=False, use_sliding_window=False),
    "gemma2-mini": dict(model_type="gemma2", vocab_size=256000, hidden_size=1024, intermediate_size=4096,
                        num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4, head_dim=128,
                        sliding_window=512, max_position_embeddings=8192, query_pre_attn_scalar=128,
                        tie_word_embeddings=True),
}
#: The CPU rehearsal's sizes (``--smoke``): every model shrunk to these.
SMOKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=512, head_dim=16, moe_intermediate_size=32,
             shared_expert_intermediate_size=64, sliding_window=16)

# (name, model, recipe, optimizer, grad_accum, batch, length, split).  length = seq_len
# (training) or prompt_len (generation, NEW_TOKENS new tokens).  Tuning on the small models,
# held out on the 1B ones and on the second mini model of each kind.
CASES = [
    ("r01", "smollm2-135m", "lora", "adamw", 1, 8, 1024, "tuning"),
    ("r02", "smollm2-135m", "lora-ckpt", "adamw", 1, 8, 1024, "tuning"),
    ("r03", "qwen2-0.5b", "qlora", "adamw", 1, 4, 1024, "tuning"),
    ("r04", "qwen2-0.5b", "qlora-nockpt", "adamw", 1, 4, 512, "tuning"),
    ("r05", "qwen2-0.5b", "full-bf16", "adam8bit", 1, 4, 512, "tuning"),
    ("r06", "qwen2-0.5b", "full-bf16", "paged-adamw", 1, 4, 512, "tuning"),
    ("r07", "smollm2-135m", "full-bf16", "adafactor", 1, 8, 1024, "tuning"),
    ("r08", "smollm2-135m", "full-bf16", "sgd", 1, 8, 1024, "tuning"),
    ("r09", "qwen2-0.5b", "full-bf16", "adamw", 2, 4, 512, "tuning"),
    ("r10", "mixtral-mini", "full-bf16", "adamw", 1, 4, 1024, "tuning"),
    ("r11", "qwen-moe-mini", "gen-dynamic", None, 1, 8, 512, "tuning"),
    ("r12", "gemma2-mini", "full-bf16", "adamw", 1, 4, 1024, "tuning"),
    ("r13", "qwen2-0.5b", "gen-bnb-int8", None, 1, 8, 512, "tuning"),
    ("r14", "qwen2-0.5b", "gen-bnb-nf4", None, 1, 8, 512, "tuning"),
    ("r15", "qwen2-0.5b", "gen-ao-int8", None, 1, 8, 512, "tuning"),
    ("r16", "qwen2-0.5b", "gen-ao-int4", None, 1, 8, 512, "tuning"),
    ("h01", "llama-3.2-1b", "lora", "adamw", 1, 4, 1024, "held-out"),
    ("h02", "tinyllama-1.1b", "lora-ckpt", "adamw", 1, 4, 2048, "held-out"),
    ("h03", "llama-3.2-1b", "qlora", "adamw", 1, 4, 1024, "held-out"),
    ("h04", "tinyllama-1.1b", "qlora-nockpt", "adamw", 1, 2, 1024, "held-out"),
    ("h05", "llama-3.2-1b", "full-bf16", "adam8bit", 1, 2, 1024, "held-out"),
    ("h06", "llama-3.2-1b", "full-bf16", "paged-adamw8bit", 1, 2, 1024, "held-out"),
    ("h07", "tinyllama-1.1b", "full-bf16", "adafactor", 1, 2, 1024, "held-out"),
    ("h08", "llama-3.2-1b", "full-bf16", "sgd", 1, 2, 1024, "held-out"),
    ("h09", "smollm2-135m", "full-bf16", "adamw", 4, 8, 512, "held-out"),
    ("h10", "mixtral-mini", "gen-dynamic", None, 1, 8, 1024, "held-out"),
    ("h11", "qwen-moe-mini", "full-bf16", "adamw", 1, 4, 512, "held-out"),
    ("h12", "gemma2-mini", "gen-dynamic", None, 1, 8, 1024, "held-out"),
    ("h13", "llama-3.2-1b", "gen-bnb-int8", None, 1, 8, 1024, "held-out"),
    ("h14", "llama-3.2-1b", "gen-bnb-nf4", None, 1, 8, 1024, "held-out"),
    ("h15", "llama-3.2-1b", "gen-ao-int8", None, 1, 8, 1024, "held-out"),
    ("h16", "llama-3.2-1b", "gen-ao-int4", None, 1, 8, 1024, "held-out"),
]
NEW_TOKENS = 64
KEYS = ("name", "model", "recipe", "optimizer", "grad_accum", "batch", "length", "split")


class Skip(Exception):
    """A case that cannot run here (a library or CUDA missing): recorded with its reason."""


def model_config(model: str, smoke: bool) -> dict:
    """The Hugging Face config dict of ``model`` (bundled or :data:`MINI`), shrunk under ``--smoke``."""
    from validate_fit import hf_config
    cfg = dict(MINI[model]) if model in MINI else hf_config(model)
    if smoke:
        for k, v in SMOKE.items():
            if k in cfg or k in ("head_dim",):
                cfg[k] = v
        for k in ("n_embd", "n_layer", "n_head", "n_inner"):
            cfg.pop(k, None)
    return cfg


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise Skip(f"{module} is not installed ({e})") from None


def make_optimizer(name: str, params: list):
    """The optimizer as its library builds it."""
    import torch
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-3)
    if name == "adafactor":
        return torch.optim.Adafactor(params, lr=1e-3)
    if not torch.cuda.is_available():
        raise Skip(f"bitsandbytes' {name} needs CUDA")
    bnb = _need("bitsandbytes")
    cls = {"adam8bit": bnb.optim.AdamW8bit, "paged-adamw": bnb.optim.PagedAdamW,
           "paged-adamw8bit": bnb.optim.PagedAdamW8bit}[name]
    return cls(params, lr=1e-5, weight_decay=0.01)


def _saved(model: str, cfg: dict, tmp: str, device: str) -> str:
    """A bf16 checkpoint of the random model on disk, for the loaders that quantize on load."""
    import torch
    import transformers
    path = os.path.join(tmp, model)
    if not os.path.isdir(path):
        conf = transformers.AutoConfig.for_model(**{k: v for k, v in cfg.items() if not k.startswith("_")})
        with torch.device(device):
            m = transformers.AutoModelForCausalLM.from_config(conf, dtype=torch.bfloat16)
        m.save_pretrained(path)
        del m
        gc.collect()
    return path


def build_generator(model: str, recipe: str, cfg: dict, tmp: str, device: str):
    """A model for ``generate`` in the recipe's weight format."""
    import torch
    import transformers
    q = recipe[len("gen-"):]
    if q.startswith("bnb-"):
        if device != "cuda":
            raise Skip("bitsandbytes quantized weights need CUDA")
        _need("bitsandbytes")
        bc = (transformers.BitsAndBytesConfig(load_in_8bit=True) if q == "bnb-int8" else
              transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                              bnb_4bit_compute_dtype=torch.bfloat16))
        m = transformers.AutoModelForCausalLM.from_pretrained(_saved(model, cfg, tmp, device), quantization_config=bc,
                                                              dtype=torch.bfloat16, device_map={"": 0})
    else:
        from validate_fit import build
        m, _ = build(model, "gen-dynamic", tmp, config=cfg, device=device)
        if q.startswith("ao-"):
            _quantize_torchao(m, q, device)
    m.eval()
    m.generation_config.eos_token_id = None
    m.generation_config.pad_token_id = 0
    return m


def _quantize_torchao(m, q: str, device: str) -> None:
    """torchao weight-only int8 (per channel) or int4 (groups of 128, tinygemm layout)."""
    if device != "cuda":
        raise Skip("torchao weight-only kernels need CUDA here")
    _need("torchao")
    import torchao.quantization as ao
    if q == "ao-int8":
        ao.quantize_(m, ao.Int8WeightOnlyConfig())
        return
    try:
        cfg = ao.Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")
    except TypeError:
        cfg = ao.Int4WeightOnlyConfig(group_size=128)
    ao.quantize_(m, cfg)


def build_case(c: dict, tmp: str, device: str):
    """(model, optimizer or None) for a case."""
    from validate_fit import build
    cfg = model_config(c["model"], c["smoke"])
    c["hf_config"] = cfg
    if c["recipe"].startswith("gen-"):
        return build_generator(c["model"], c["recipe"], cfg, tmp, device), None
    if c["recipe"].startswith("qlora"):
        if device != "cuda":
            raise Skip("QLoRA (bitsandbytes nf4) needs CUDA")
        _need("bitsandbytes")
    if "lora" in c["recipe"]:
        _need("peft")
    m, _ = build(c["model"], c["recipe"], tmp, config=cfg, device=device)
    return m, make_optimizer(c["optimizer"], [p for p in m.parameters() if p.requires_grad])


def run_once(m, opt, c: dict, device: str) -> None:
    """One training step (``grad_accum`` micro-batches) or one ``generate`` call."""
    import torch
    ids = torch.randint(1, c["hf_config"]["vocab_size"], (c["batch"], c["length"]), device=device)
    if opt is None:
        with torch.no_grad():
            out = m.generate(ids, max_new_tokens=c["new_tokens"], min_new_tokens=c["new_tokens"], do_sample=False,
                             disable_compile=True)
        assert out.shape[1] == c["length"] + c["new_tokens"], out.shape
        return
    for _ in range(c["grad_accum"]):
        loss = m(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        del loss
    opt.step()
    opt.zero_grad(set_to_none=True)


def _cuda(device: str):
    import torch
    return torch.cuda if device == "cuda" else None


def measure_case(c: dict, tmp: str, device: str) -> dict:
    """Build, warm up, then the second step's peak and the bytes around it."""
    cu = _cuda(device)
    gc.collect()
    if cu:
        cu.empty_cache()
    base = cu.memory_allocated() if cu else 0
    used0 = (lambda f, t: t - f)(*cu.mem_get_info()) if cu else 0
    m, opt = build_case(c, tmp, device)
    gc.collect()
    out = dict(weights_allocated=(cu.memory_allocated() - base) if cu else 0)
    run_once(m, opt, c, device)                     # warm-up: optimizer states, workspaces, kernels
    if cu:
        cu.synchronize()
        out["after_warmup"] = cu.memory_allocated() - base
        cu.reset_peak_memory_stats()
    run_once(m, opt, c, device)
    if cu:
        cu.synchronize()
        free, total = cu.mem_get_info()
        out.update(peak=cu.max_memory_allocated() - base, reserved_peak=cu.max_memory_reserved(),
                   baseline=base, device_used=total - free - used0,
                   alloc_retries=int(cu.memory_stats().get("num_alloc_retries", 0)))
    out["trainable"] = sum(p.numel() for p in m.parameters() if p.requires_grad) if opt is not None else 0
    if cu:
        out.update(cap_check(m, opt, c, device))
    del m, opt
    gc.collect()
    if cu:
        cu.empty_cache()
    return out


def cap_check(m, opt, c: dict, device: str) -> dict:
    """A third step with the allocator capped at the bytes the fit check asks for
    (:func:`vramlib.estimate.reserve.needed_bytes`, no CUDA context: the cap excludes it): does
    it run?  An out-of-memory here is an optimistic answer."""
    import torch
    try:
        from vramlib.estimate.fitcheck import recipe_estimate
        from vramlib.estimate.reserve import needed_bytes
        need = needed_bytes(recipe_estimate(c), 0)
    except Exception as e:  # noqa: BLE001 - a feature the estimator lacks: no check
        return dict(cap_check=f"no estimate: {type(e).__name__}: {e}"[:200])
    total = torch.cuda.get_device_properties(0).total_memory
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, need / total))
    torch.cuda.reset_peak_memory_stats()
    try:
        run_once(m, opt, c, device)
        torch.cuda.synchronize()
        oom = False
    except (torch.OutOfMemoryError, RuntimeError) as e:   # bitsandbytes may raise a RuntimeError
        if "out of memory" not in str(e).lower() and not isinstance(e, torch.OutOfMemoryError):
            raise
        oom = True
        if opt is not None:
            opt.zero_grad(set_to_none=True)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    return dict(cap_bytes=int(need), cap_oom=oom, cap_reserved_peak=int(torch.cuda.max_memory_reserved()))


def _versions() -> dict:
    v = {}
    for mod in ("transformers", "peft", "bitsandbytes", "torchao", "accelerate"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - recorded as missing
            v[mod] = None
    return v


def _summary_line(r: dict) -> str:
    head = f"{r['name']} {r['model']:14s} {r['recipe']:13s} {str(r.get('optimizer')):15s}"
    if "skipped" in r:
        return f"{head} skipped: {r['skipped']}"[:200]
    if "peak" not in r:
        return f"{head} ran (no CUDA: not measured)"
    est = r.get("estimate")
    tail = f" est {est / 2**20:9.1f} MiB {100 * (est / r['peak'] - 1):+6.1f} %" if est else " (no estimate)"
    cap = {True: " OOM at the fit cap", False: " fits the cap"}.get(r.get("cap_oom"), "")
    return f"{head} peak {r['peak'] / 2**20:9.1f} MiB{tail}{cap}"


def _estimate_into(r: dict) -> None:
    """The current estimator's peak for a measured case (a missing feature: left out)."""
    try:
        from vramlib.estimate.fitcheck import recipe_estimate
        r["estimate"] = int(recipe_estimate(r).peak)
    except Exception as e:  # noqa: BLE001 - the record keeps the measurement regardless
        r["estimate_error"] = f"{type(e).__name__}: {e}"[:200]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=".", help="directory for recipes_gpu.json (recipes_smoke.json with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU (no measurement)")
    ap.add_argument("--budget", type=float, default=190.0, help="seconds; no new case starts after")
    ap.add_argument("--cases", "--only", dest="only", nargs="*", default=None,
                    help="measure only these case names (r01, h03, ...); the record is named "
                    "recipes_gpu_cases.json so it never replaces the whole grid's")
    ap.add_argument("--from-json", default=None, help="report a recorded run (no GPU)")
    a = ap.parse_args(argv)
    if a.from_json:
        from vramlib.core.records import read_record
        from vramlib.estimate.fitcheck import recipe_check
        out = recipe_check(read_record(a.from_json))
        for r in out["rows"]:
            print(_summary_line(r))
        for split in ("tuning", "held-out"):
            print(split, {k: v for k, v in out.get(split, {}).items()})
        return 0
    import torch

    from vramlib.core.records import write_record
    device = "cpu" if a.smoke or not torch.cuda.is_available() else "cuda"
    if device == "cuda":
        from vramlib.measure.tracker import warm_up
        warm_up("cuda")                             # cuBLAS workspaces before any baseline
    order = sorted(CASES, key=lambda c: (c[0][1:], c[0][0]))   # h01, r01, h02, ...: both splits early
    t0, rows = time.time(), []
    config = dict(cases=[list(c) for c in CASES], new_tokens=NEW_TOKENS, mini_models=MINI, versions=_versions(),
                  smoke=a.smoke, method="second step's max_memory_allocated minus the allocation before the build")
    unknown = sorted(set(a.only or ()) - {c[0] for c in CASES})
    if unknown:
        ap.error(f"--cases: unknown case(s) {unknown}; choose from {[c[0] for c in CASES]}")
    stem = "recipes_smoke" if a.smoke else "recipes_gpu" + ("_cases" if a.only else "")
    path = Path(a.out) / f"{stem}.json"
    with tempfile.TemporaryDirectory() as tmp:
        for case in order:
            if a.only and case[0] not in a.only:
                continue
            r = dict(zip(KEYS, case), new_tokens=4 if a.smoke else NEW_TOKENS, smoke=a.smoke)
            if a.smoke:
                r.update(batch=2, length=32)
            if time.time() - t0 > a.budget:
                r["skipped"] = "time budget spent"
            else:
                t1 = time.time()
                try:
                    r.update(measure_case(r, tmp, device))
                    if "peak" in r:
                        _estimate_into(r)
                except Skip as e:
                    r["skipped"] = str(e)
                except Exception as e:  # noqa: BLE001 - record and go on
                    r["skipped"] = f"error: {type(e).__name__}: {e}"[:300]
                    gc.collect()
                    if device == "cuda":
                        torch.cuda.empty_cache()
                r["seconds"] = round(time.time() - t1, 1)
            rows.append(r)
            print(f"[{time.time() - t0:5.0f} s] " + _summary_line(r), flush=True)
            write_record(path, {"cases": rows}, config, device if device == "cuda" else None)
    print(f"wrote {path} in {time.time() - t0:.0f} s", flush=True)
    _print_summary(path)
    return 0


def _print_summary(path: Path) -> None:
    """Per split: the estimator's error on the measured runs and the fit-cap outcomes."""
    try:
        from vramlib.core.records import read_record
        from vramlib.estimate.fitcheck import recipe_check
        out = recipe_check(read_record(path))
    except Exception as e:  # noqa: BLE001 - the record is written; the summary is a courtesy
        print(f"no summary: {type(e).__name__}: {e}")
        return
    for split in ("tuning", "held-out"):
        s = out.get(split)
        caps = [r["cap_oom"] for r in out["rows"] if r["split"] == split and "cap_oom" in r]
        if s:
            print(f"{split}: n={s['n']} median |err| {100 * s['median_abs']:.1f} %, max {100 * s['max_abs']:.1f} %, "
                  f"worst under {100 * s['worst_under']:+.1f} %, no estimate {s['unsupported']}; "
                  f"OOM at the fit cap {sum(caps)} of {len(caps)}")


if __name__ == "__main__":
    sys.exit(main())

"""Bisect the real out-of-memory boundary on a GPU and compare it with ``vramlib.estimate``'s
"largest batch that fits" (Part I, "The calculator", "Will it fit?").

For every case (a model, a recipe, a sequence length and a card) the script finds the
largest batch whose steady-state step (training) or ``generate`` call (generation) runs
without ``torch.OutOfMemoryError``:

* on **emulated smaller cards**: ``torch.cuda.set_per_process_memory_fraction(cap / total)``
  caps what torch's caching allocator may reserve, so the card's capacity as the estimator
  sees it is ``cap`` with no CUDA context (the context lives outside the allocator);
* on the **full card** (``cap="full"``): no cap; the limit is the device's
  ``total_memory`` minus the CUDA context, as a user meets it.

Recipes, as people run them with the real libraries: full training (bf16 weights, or fp32
weights with bf16 autocast), with and without Hugging Face gradient checkpointing; LoRA with
``peft`` (r=16, all linear layers) on a bf16 base, with and without checkpointing; QLoRA
(``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")`` →
``prepare_model_for_kbit_training`` → ``get_peft_model``), with its default checkpointing and
without; generation with the dynamic and the static cache.

The search: warm up at batch 1 (optimizer states, cuBLAS workspace), cap the allocator, then
step the batch by ×1.25 from the estimator's hint until one fit and one OOM bracket the
boundary, and bisect to 1.  Every trial (batch, OOM or not, peak allocated and reserved) is
recorded, so predictions can be recomputed later with any estimator
(``--from-json``: no GPU needed).  One process, ``torch.cuda.empty_cache()`` between trials.

Run: ``python benchmarks/validate_fit.py --out vramlib/data/records/fit_gpu.json`` (GPU;
``--cases t08 h10 ...`` for some cases only),
``python benchmarks/validate_fit.py --from-json vramlib/data/records/fit_gpu.json`` (report).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GiB = 1 << 30

# (name, model, recipe, length, cap in GiB or "full", split).  length = seq_len (training) or
# prompt_len (generation, 64 new tokens).  Caps were chosen so the true largest batch is
# about 8-60, where a 10 % miss is visible.
CASES = [
    ("t01", "qwen2-0.5b", "full-bf16", 256, 20, "tuning"),
    ("t02", "smollm2-135m", "full-amp", 512, 18, "tuning"),
    ("t03", "qwen2-0.5b", "full-bf16-ckpt", 512, 24, "tuning"),
    ("t04", "smollm2-135m", "lora", 1024, 30, "tuning"),
    ("t05", "qwen2-0.5b", "lora-ckpt", 512, 24, "tuning"),
    ("t06", "qwen2-0.5b", "qlora", 512, 24, "tuning"),
    ("t07", "smollm2-135m", "qlora-nockpt", 512, 18, "tuning"),
    ("t08", "qwen2-0.5b", "gen-dynamic", 1024, 4, "tuning"),
    ("t09", "smollm2-135m", "gen-static", 2048, 3, "tuning"),
    ("t10", "tinyllama-1.1b", "full-bf16", 512, 30, "tuning"),
    ("h01", "llama-3.2-1b", "full-bf16", 512, 40, "held-out"),
    ("h02", "pythia-160m", "full-amp", 1024, 24, "held-out"),
    ("h03", "llama-3.2-1b", "full-bf16-ckpt", 1024, 44, "held-out"),
    ("h04", "gpt2-medium", "full-bf16", 1024, 40, "held-out"),
    ("h05", "llama-3.2-1b", "lora", 512, 40, "held-out"),
    ("h06", "tinyllama-1.1b", "lora-ckpt", 2048, 24, "held-out"),
    ("h07", "llama-3.2-1b", "qlora", 512, 24, "held-out"),
    ("h08", "tinyllama-1.1b", "qlora-nockpt", 512, 24, "held-out"),
    ("h09", "llama-3.2-1b", "gen-static", 1024, 6, "held-out"),
    ("h10", "pythia-160m", "gen-dynamic", 1024, 2, "held-out"),
    ("h11", "tinyllama-1.1b", "gen-dynamic", 1536, 6, "held-out"),
    ("f01", "llama-3.2-1b", "full-bf16", 512, "full", "held-out"),
    ("f02", "qwen2-0.5b", "lora-ckpt", 1024, "full", "held-out"),
    # Generation with the dynamic cache, added for the reserve near the limit (session 4):
    # two more tuning cases, two more held out (other models, lengths and caps).
    ("t11", "smollm2-135m", "gen-dynamic", 512, 2, "tuning"),
    ("t12", "llama-3.2-1b", "gen-dynamic", 512, 6, "tuning"),
    ("h12", "qwen2-0.5b", "gen-dynamic", 2048, 6, "held-out"),
    ("h13", "gpt2-medium", "gen-dynamic", 768, 4, "held-out"),
]
NEW_TOKENS = 64
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def scenario_of(recipe: str) -> dict:
    """The case in the estimator's vocabulary (what ``estimate_training``/``_inference`` take)."""
    if recipe.startswith("gen-"):
        return dict(weights="bf16", cache=recipe[4:])
    sc: dict = dict(weights_dtype="bf16")
    if recipe == "full-amp":
        sc = dict(weights_dtype="fp32", autocast="bf16")
    if recipe.startswith("lora"):
        sc.update(trainable="lora", lora_rank=16, lora_targets="all-linear")
    if recipe.startswith("qlora"):
        sc.update(trainable="qlora", lora_rank=16, lora_targets="all-linear")
    ckpt = recipe.endswith("-ckpt") or recipe == "qlora"      # peft's prepare_...: on by default
    sc["checkpointing"] = "full" if ckpt else "none"
    return sc


def hf_config(model: str) -> dict:
    from vramlib.estimate.config import _bundled
    cfg = dict(_bundled()[model])
    if cfg.get("model_type") == "gpt2":
        cfg.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return cfg


# ---------------------------------------------------------------- building (GPU side)
def _dtype_bytes(model) -> dict:
    out: dict = {}
    for p in model.parameters():
        k = str(p.dtype).replace("torch.", "")
        out[k] = out.get(k, 0) + p.numel() * p.element_size()
    return out


def build(model_name: str, recipe: str, tmp: str, config: dict | None = None, device: str = "cuda"):
    """(model, optimizer or None) on ``device`` for one recipe, random weights; ``config`` (a
    Hugging Face config dict) replaces the bundled config of ``model_name``."""
    import torch
    import transformers

    cfgd = {k: v for k, v in (config or hf_config(model_name)).items() if not k.startswith("_")}
    cfg = transformers.AutoConfig.for_model(**cfgd)
    if recipe.startswith("qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        path = os.path.join(tmp, model_name)
        if not os.path.isdir(path):
            with torch.device(device):
                m = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
            m.save_pretrained(path)
            del m
            gc.collect()
            torch.cuda.empty_cache()
        bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
        m = transformers.AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb, device_map={"": 0})
        m = prepare_model_for_kbit_training(m, use_gradient_checkpointing=(recipe == "qlora"))
        m = get_peft_model(m, LoraConfig(**LORA))
    else:
        dt = torch.float32 if recipe == "full-amp" else torch.bfloat16
        with torch.device(device):
            m = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dt, attn_implementation="sdpa")
        if recipe.endswith("-ckpt"):
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if recipe.startswith("lora"):
            from peft import LoraConfig, get_peft_model
            m = get_peft_model(m, LoraConfig(**LORA))
    if recipe.startswith("gen-"):
        m.eval()
        m.generation_config.eos_token_id = None
        m.generation_config.pad_token_id = 0
        return m, None
    m.train()
    params = [p for p in m.parameters() if p.requires_grad]
    return m, torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)


def trial(model, opt, recipe: str, batch: int, length: int, vocab: int) -> dict:
    """One steady-state step (or ``generate``) at ``batch``; OOM is caught and reported."""
    import torch

    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    retries0 = torch.cuda.memory_stats().get("num_alloc_retries", 0)
    oom, err, asked = False, "", None
    try:
        ids = torch.randint(1, vocab, (batch, length), device="cuda")
        if opt is None:
            kw = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, disable_compile=True)
            if recipe == "gen-static":
                kw["cache_implementation"] = "static"
            with torch.no_grad():
                out = model.generate(ids, **kw)
            del out
        else:
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if recipe == "full-amp" else _null()
            with ctx:
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            del loss
            opt.step()
            opt.zero_grad(set_to_none=True)
        del ids
        torch.cuda.synchronize()
    except (torch.OutOfMemoryError, RuntimeError) as e:   # bitsandbytes may raise a RuntimeError
        if "out of memory" not in str(e).lower() and not isinstance(e, torch.OutOfMemoryError):
            raise
        oom, err = True, type(e).__name__
        asked = _asked_bytes(str(e))
        frag = _allocator_state()          # inside the handler: the failed step's tensors are alive
    if not oom:
        frag = _allocator_state()
    st = torch.cuda.memory_stats()
    if oom and opt is not None:
        opt.zero_grad(set_to_none=True)
    r = dict(batch=batch, oom=oom, peak_allocated=int(torch.cuda.max_memory_allocated()),
             peak_reserved=int(torch.cuda.max_memory_reserved()), allocated_before=int(before),
             alloc_retries=int(st.get("num_alloc_retries", 0) - retries0), **frag)
    if err:
        r["error"] = err
        if asked:
            r["asked_bytes"] = asked
    gc.collect()
    torch.cuda.empty_cache()
    return r


def _allocator_state() -> dict:
    """The allocator's state now: free pieces inside segments that hold live blocks
    ("inactive split") are the fragmentation; at an OOM, what the failed request met."""
    import torch
    st = torch.cuda.memory_stats()
    return dict(reserved_now=int(st.get("reserved_bytes.all.current", 0)),
                allocated_now=int(st.get("allocated_bytes.all.current", 0)),
                inactive_split_now=int(st.get("inactive_split_bytes.all.current", 0)),
                inactive_split_peak=int(st.get("inactive_split_bytes.all.peak", 0)),
                segments_now=int(st.get("segment.all.current", 0)))


def _asked_bytes(msg: str) -> int | None:
    """The failed request's size from torch's OOM message ("Tried to allocate 532.00 MiB")."""
    import re
    m = re.search(r"Tried to allocate ([0-9.]+) (B|KiB|MiB|GiB)", msg)
    if not m:
        return None
    return int(float(m.group(1)) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(2)])


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def search(run, hint: int, limit: int = 4096) -> tuple[int, list]:
    """Largest batch with ``run(b)`` not OOM: ×1.25 steps from ``hint`` to a bracket, then bisect."""
    trials: dict[int, dict] = {}

    def ok(b: int) -> bool:
        if b not in trials:
            trials[b] = run(b)
        return not trials[b]["oom"]

    b = max(1, min(hint, limit))
    if ok(b):
        lo, hi = b, None
        while hi is None:
            nb = min(limit, max(lo + 1, math.ceil(lo * 1.25)))
            if nb == lo:
                break
            if ok(nb):
                lo = nb
            else:
                hi = nb
    else:
        hi, lo = b, None
        while lo is None and hi > 1:
            nb = max(1, min(hi - 1, math.floor(hi / 1.25)))
            if ok(nb):
                lo = nb
            else:
                hi = nb
        if lo is None:
            return 0, list(trials.values())
    while hi is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo, sorted(trials.values(), key=lambda t: t["batch"])


def hint_batch(model: str, recipe: str, length: int, capacity: int, ctx: int) -> int:
    """Where to start the search: the estimator's answer at the time of the run (or 8)."""
    try:
        from vramlib.estimate import max_batch
        sc = scenario_of(recipe)
        if recipe.startswith("gen-"):
            b = max_batch(model, capacity, stage="inference", prompt_len=length, new_tokens=NEW_TOKENS,
                          cuda_context=ctx, **sc)
        else:
            b = max_batch(model, capacity, stage="train", seq_len=length, cuda_context=ctx, **sc)
        return max(1, int(b))
    except Exception as e:  # noqa: BLE001 - a hint only
        print(f"  (no hint: {e})", flush=True)
        return 8


def run_case(case: tuple, tmp: str) -> dict:
    import torch

    name, model_name, recipe, length, cap, split = case
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(1.0)
    gc.collect()
    torch.cuda.empty_cache()
    t0 = time.time()
    m, opt = build(model_name, recipe, tmp)
    vocab = m.config.vocab_size
    weights_bytes = _dtype_bytes(m)
    trial(m, opt, recipe, 1, length, vocab)               # warm-up: states, workspaces, kernels
    if cap == "full":
        capacity, ctx = total, None
    else:
        capacity, ctx = int(cap * GiB), 0
        torch.cuda.set_per_process_memory_fraction(capacity / total)
    hint = hint_batch(model_name, recipe, length, capacity, ctx)
    best, trials = search(lambda b: trial(m, opt, recipe, b, length, vocab), hint)
    del m, opt
    gc.collect()
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()
    return dict(name=name, model=model_name, recipe=recipe, length=length, new_tokens=NEW_TOKENS,
                cap_gib=cap, capacity_bytes=capacity, emulated=cap != "full", split=split,
                scenario=scenario_of(recipe), true_max_batch=best, hint=hint, trials=trials,
                param_bytes_by_dtype=weights_bytes, seconds=round(time.time() - t0, 1))


def measure(out: str, budget_s: float, only: list[str] | None) -> None:
    import torch

    from vramlib.core.records import write_record

    import peft
    import transformers
    versions = {"transformers": transformers.__version__, "peft": peft.__version__}
    try:
        import bitsandbytes
        versions["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        versions["bitsandbytes"] = None
    t_start = time.time()
    results: list[dict] = []
    config = dict(cases=[list(c) for c in CASES], new_tokens=NEW_TOKENS, lora=LORA, versions=versions,
                  total_memory=torch.cuda.get_device_properties(0).total_memory,
                  method="bisection at the OOM boundary; emulated cards via set_per_process_memory_fraction")
    order = sorted(CASES, key=lambda c: (c[0][1:], c[0][0]))     # f01, h01, t01, f02, ...: both splits early
    with tempfile.TemporaryDirectory() as tmp:
        for case in order:
            if only and case[0] not in only:
                continue
            if time.time() - t_start > budget_s:
                print(f"budget spent, skipping {case[0]}", flush=True)
                continue
            try:
                r = run_case(case, tmp)
            except Exception as e:  # noqa: BLE001 - record and go on
                r = dict(name=case[0], model=case[1], recipe=case[2], error=f"{type(e).__name__}: {e}"[:400])
                torch.cuda.set_per_process_memory_fraction(1.0)
            results.append(r)
            print(f"{r['name']} {r['model']} {r['recipe']} cap={case[4]} -> {r.get('true_max_batch')} "
                  f"(hint {r.get('hint')}, {len(r.get('trials', []))} trials, {r.get('seconds')} s)"
                  + (f" ERROR {r['error']}" if 'error' in r else ""), flush=True)
            write_record(out, {"cases": results}, config)
    print(f"wrote {out} in {time.time() - t_start:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="vramlib/data/records/fit_gpu.json")
    ap.add_argument("--budget", type=float, default=400.0, help="seconds; no new case starts after")
    ap.add_argument("--cases", "--only", dest="only", nargs="*", default=None,
                    help="case names (t01, h03, ...); default: all")
    ap.add_argument("--from-json", default=None, help="report a recorded run (no GPU)")
    args = ap.parse_args()
    unknown = sorted(set(args.only or ()) - {c[0] for c in CASES})
    if unknown:
        ap.error(f"--cases: unknown case(s) {unknown}; choose from {[c[0] for c in CASES]}")
    if args.from_json:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from fit_report import report   # benchmarks/fit_report.py
        from vramlib.core.records import read_record
        report(read_record(args.from_json))
        return
    measure(args.out, args.budget, args.only)


if __name__ == "__main__":
    main()

"""Simulated peak (fake tensors) against the measured peak of the same step, case by case.

For a grid of Hugging Face ``transformers`` models built from configs (random weights, nothing
downloaded) — Llama, Mistral, Qwen2 and GPT-2 families, 0.1B–1.1B parameters on a GPU — it
runs each case twice:

* for real, measuring the peak with :func:`vramlib.track_memory` (on CUDA:
  ``torch.cuda.max_memory_allocated`` minus what was allocated before the case);
* under :func:`vramlib.measure.simulate.simulate` on fake tensors of the same device type, with the
  CUDA caching allocator's 512-byte rounding (``round_to=512``) on CUDA,

and records both, with the relative error, the phase of the peak and the provenance (device,
driver, torch and transformers versions, date, full case configuration).

Training cases: two steps of forward, backward, ``AdamW.step``, ``zero_grad`` — fp32; bf16
autocast with fp32 weights; pure bf16 — each with and without gradient checkpointing.
Generation cases: the real run calls ``model.generate`` (greedy, fixed number of new tokens,
``DynamicCache`` or ``StaticCache``); the simulation runs :func:`vramlib.measure.simulate.decode_loop`,
the same prefill + decode with the same cache (``generate``'s stopping checks need values that
fake tensors do not have).  The real ``decode_loop`` is measured too, as a cross-check.

    python benchmarks/validate_simulate.py --device cuda --out benchmarks/results/simulate_gpu.json
    python benchmarks/validate_simulate.py --device cpu --small      # the same code, tiny models

Defined in Part I, "Three ways to know: formula, simulation, measurement".
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vramlib import fmt_bytes, track_memory  # noqa: E402
from vramlib.core.records import write_record  # noqa: E402
from vramlib.measure.simulate import Simulator, decode_loop  # noqa: E402

# Model configurations: real published architectures (full) and tiny ones of the same
# families for the CPU (small).  Parameter counts are printed per case.
FULL_MODELS = {
    # TinyLlama-1.1B's architecture
    "llama-1.1b": ("llama", dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                                 num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                                 max_position_embeddings=4096, tie_word_embeddings=False)),
    # a Mistral-7B-shaped model scaled down to ~0.3B (GQA 2:1, sliding window)
    "mistral-0.3b": ("mistral", dict(hidden_size=1024, intermediate_size=3584, num_hidden_layers=16,
                                     num_attention_heads=16, num_key_value_heads=8, vocab_size=32000,
                                     max_position_embeddings=4096, sliding_window=4096,
                                     tie_word_embeddings=False)),
    # Qwen2-0.5B's architecture (tied embeddings, 151936-token vocabulary)
    "qwen2-0.5b": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                 num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                 max_position_embeddings=4096, tie_word_embeddings=True)),
    # GPT-2 small (124M), positions extended to 2560 for the long prompts
    "gpt2-124m": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=2560)),
}
SMALL_MODELS = {
    "llama-tiny": ("llama", dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=512, max_position_embeddings=512,
                                 tie_word_embeddings=False)),
    "mistral-tiny": ("mistral", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                                     max_position_embeddings=512, sliding_window=256)),
    "qwen2-tiny": ("qwen2", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=512, max_position_embeddings=512,
                                 tie_word_embeddings=True)),
    "gpt2-tiny": ("gpt2", dict(n_embd=64, n_layer=2, n_head=4, vocab_size=512, n_positions=512,
                               bos_token_id=0, eos_token_id=0)),
}
TRAIN_MODES = ["fp32", "autocast-bf16", "bf16"]


def make_grid(small: bool) -> list[dict]:
    models = SMALL_MODELS if small else FULL_MODELS
    batch, seq = (2, 64) if small else (4, 1024)
    gen_shapes = [(1, 32), (4, 64)] if small else [(1, 512), (8, 1024), (32, 2048)]
    new_tokens = 4 if small else 16
    cases = []
    for name in models:
        for mode in TRAIN_MODES:
            for ckpt in (False, True):
                cases.append(dict(kind="train", model=name, mode=mode, checkpointing=ckpt, batch=batch, seq=seq,
                                  optimizer="AdamW", steps=2))
    for name in models:
        for i, (b, p) in enumerate(gen_shapes):
            for cache in ("dynamic", "static"):
                # loop_check: also measure decode_loop for real (one shape per model and cache)
                cases.append(dict(kind="generate", model=name, dtype="bf16", batch=b, prompt=p,
                                  new_tokens=new_tokens, cache=cache, loop_check=i == len(gen_shapes) - 1))
    return cases


def hf_config(family: str, kw: dict, use_cache: bool):
    import transformers

    cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
           "qwen2": transformers.Qwen2Config, "gpt2": transformers.GPT2Config}[family]
    cfg = cls(**kw, use_cache=use_cache)
    cfg._attn_implementation = "sdpa"
    return cfg


def build(cfg, dtype):
    """The model with random weights, created directly in ``dtype``."""
    import transformers

    try:
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    except TypeError:  # transformers 4.x
        model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype)
    return model.to(dtype)


def train_fn(case: dict, models: dict, device: torch.device):
    family, kw = models[case["model"]]
    cfg = hf_config(family, kw, use_cache=False)
    autocast = case["mode"] == "autocast-bf16"
    wdtype = torch.bfloat16 if case["mode"] == "bf16" else torch.float32

    def step():
        model = build(cfg, wdtype)
        if case["checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randint(0, cfg.vocab_size, (case["batch"], case["seq"]))
        for _ in range(case["steps"]):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        return sum(p.numel() for p in model.parameters())
    return step


def gen_fns(case: dict, models: dict, device: torch.device):
    family, kw = models[case["model"]]
    cfg = hf_config(family, kw, use_cache=True)

    def prepare():
        model = build(cfg, torch.bfloat16).eval()
        x = torch.randint(0, cfg.vocab_size, (case["batch"], case["prompt"]))
        return model, x

    def loop():
        model, x = prepare()
        decode_loop(model, x, case["new_tokens"], cache=case["cache"])
        return sum(p.numel() for p in model.parameters())

    def generate():
        model, x = prepare()
        kwargs = dict(max_new_tokens=case["new_tokens"], min_new_tokens=case["new_tokens"], do_sample=False,
                      attention_mask=torch.ones_like(x), pad_token_id=0)
        if case["cache"] == "static":
            kwargs.update(cache_implementation="static", disable_compile=True)
        with torch.no_grad():
            model.generate(x, **kwargs)
        return sum(p.numel() for p in model.parameters())
    return loop, generate


def measure_real(fn, device: torch.device) -> dict:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    req0 = torch.cuda.memory_stats(device).get("requested_bytes.all.current", 0) if device.type == "cuda" else 0
    with torch.device(device), track_memory(device) as rep:
        out = fn()
    m = dict(peak=rep.peak, reserved_peak=rep.reserved_peak, baseline=rep.baseline,
             seconds=round(time.perf_counter() - t0, 2), params=out)
    if device.type == "cuda":   # the allocator's peak of requested (unrounded) bytes, for the unrounded simulation
        m["requested_peak"] = torch.cuda.memory_stats(device).get("requested_bytes.all.peak", 0) - req0
    return m


def warm_up(device: torch.device) -> None:
    """Allocate what persists between cases before measuring (cuBLAS/cuBLASLt workspaces of
    the main thread and of autograd's backward thread), so it is in every case's baseline."""
    lin = torch.nn.Linear(256, 256, device=device)
    x = torch.randn(64, 256, device=device)
    for ac in (False, True):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=ac):
            lin(x).float().sum().backward()
    q = torch.randn(1, 2, 64, 32, device=device, dtype=torch.bfloat16, requires_grad=True)
    torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
    del lin, x, q
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_case(case: dict, models: dict, device: torch.device) -> dict:
    round_to = 512 if device.type == "cuda" else None
    row = dict(case=case)
    if case["kind"] == "train":
        real_fn = sim_fn = train_fn(case, models, device)
        extra = None
    else:
        sim_fn, real_fn = gen_fns(case, models, device)
        extra = sim_fn if case.get("loop_check") else None  # the real decode loop: loop vs generate
    try:
        t0 = time.perf_counter()
        sim = Simulator(device=device.type, round_to=round_to, timeline=False)
        with sim:
            params = sim_fn()
        res = sim.result(params)
        sim.round_to = None   # the same run without the allocator's rounding
        row.update(sim_peak=res.peak, sim_peak_unrounded=sim.result().peak, sim_phase=res.peak_phase,
                   sim_breakdown=res.breakdown, sim_seconds=round(time.perf_counter() - t0, 2), params=params)
    except Exception as e:  # noqa: BLE001
        row.update(sim_error=f"{type(e).__name__}: {e}"[:500], sim_traceback=traceback.format_exc()[-2000:])
    for key, fn in (("real", real_fn), ("real_loop", extra)):
        if fn is None:
            continue
        try:
            m = measure_real(fn, device)
            row.update({f"{key}_peak": m["peak"], f"{key}_reserved_peak": m["reserved_peak"],
                        f"{key}_seconds": m["seconds"]})
            if "requested_peak" in m:
                row[f"{key}_requested_peak"] = m["requested_peak"]
            row.setdefault("params", m["params"])
        except torch.OutOfMemoryError as e:
            row[f"{key}_error"] = f"OutOfMemoryError: {str(e)[:300]}"
        except Exception as e:  # noqa: BLE001
            row[f"{key}_error"] = f"{type(e).__name__}: {e}"[:500]
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if row.get("sim_peak") and row.get("real_peak"):
        row["rel_error"] = round((row["sim_peak"] - row["real_peak"]) / row["real_peak"], 5)
    return row


def describe(case: dict) -> str:
    if case["kind"] == "train":
        return (f"train {case['model']:<13} {case['mode']:<13} ckpt={'y' if case['checkpointing'] else 'n'} "
                f"b={case['batch']} s={case['seq']}")
    return f"gen   {case['model']:<13} b={case['batch']:<3} prompt={case['prompt']:<5} +{case['new_tokens']} {case['cache']}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="simulated vs measured peak memory")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--small", action="store_true", help="tiny models (the default on the CPU)")
    ap.add_argument("--out", default="benchmarks/results/simulate_gpu.json")
    ap.add_argument("--only", default="", help="run only cases whose description contains this text")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    small = a.small or device.type == "cpu"
    models = SMALL_MODELS if small else FULL_MODELS
    cases = [c for c in make_grid(small) if a.only in describe(c)]
    torch.manual_seed(0)
    warm_up(device)
    out = dict(what="vramlib.measure.simulate peak vs measured peak (torch.cuda.max_memory_allocated on CUDA, "
                    "exact storage accounting on CPU)",
               small=small, models={k: dict(family=f, config=kw) for k, (f, kw) in models.items()},
               round_to=512 if device.type == "cuda" else None, rows=[])
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    t_all = time.perf_counter()
    print(f"{len(cases)} cases on {device}")
    print(f"{'case':<58} {'measured':>11} {'simulated':>11} {'error':>8}  peak phase")
    for case in cases:
        row = run_case(case, models, device)
        out["rows"].append(row)
        err = f"{100 * row['rel_error']:+7.2f}%" if "rel_error" in row else "   n/a  "
        gib = lambda k: f"{fmt_bytes(row[k]):>11}" if k in row else f"{'n/a':>11}"  # noqa: E731
        note = row.get("sim_phase", "") or row.get("sim_error", "")
        if "real_error" in row:
            note += f" [real: {row['real_error'][:80]}]"
        print(f"{describe(case):<58} {gib('real_peak')} {gib('sim_peak')} {err}  {note}", flush=True)
        write_record(a.out, out, {}, device)   # after every case: a cut-off run keeps what it has
    errs = [abs(r["rel_error"]) for r in out["rows"] if "rel_error" in r]
    out["summary"] = dict(cases=len(cases), compared=len(errs), max_abs_error=max(errs) if errs else None,
                          within_3_percent=sum(e <= 0.03 for e in errs), seconds=round(time.perf_counter() - t_all, 1))
    write_record(a.out, out, {}, device)
    print(f"compared {len(errs)}/{len(cases)} cases; max |error| "
          f"{100 * max(errs) if errs else float('nan'):.2f} %; within 3 %: {out['summary']['within_3_percent']}; "
          f"{out['summary']['seconds']} s; wrote {a.out}")
    return out


if __name__ == "__main__":
    main()

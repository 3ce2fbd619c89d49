"""Validate vramlib.estimate against measured peaks (Part I, "The calculator").

Runs a grid of scenarios, measures each one's peak and prints estimate vs measurement with the
relative error, for a tuning set and a held-out set, and the same table for the source
article's rules (A6/A7 for training, A9/A11 for inference).

* ``--device cpu`` (default without a GPU): the book's own GPT (``vramlib.models``), measured
  exactly with ``vramlib.track_memory`` (storage accounting).  ``--hf`` adds small Hugging Face
  models on the CPU (exact storage accounting too).
* ``--device cuda``: Hugging Face ``transformers`` models built from configs with random
  weights (never downloaded), measured with ``torch.cuda.max_memory_allocated``; writes
  ``--out`` (default benchmarks/results/estimator_gpu.json) with provenance.
* ``--from-json PATH``: re-report a recorded run without a GPU (estimates are recomputed with
  the current estimator from each case's full scenario).

Measured peak = live tensor bytes at the highest point of the second training step (the
optimizer states exist) or of ``generate``, *including* the model's weights, minus what was
allocated before the model was built (the cuBLAS workspace).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib.core.records import provenance_line, read_record, write_record  # noqa: E402
from vramlib.measure.validation import (HELD_OUT_MODELS, HF_MODELS, add_errors,  # noqa: E402
                                        estimate_case, summarize)

DT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

def gpu_cases() -> list[dict]:
    cases = []
    prec = {"fp32": dict(weights_dtype="fp32"), "amp": dict(weights_dtype="fp32", autocast="bf16"),
            "bf16": dict(weights_dtype="bf16")}
    train_grid = [
        ("llama-0.3b", [(4, 512), (2, 2048)], ["fp32", "amp", "bf16"]),
        ("qwen2-0.5b", [(2, 1024), (8, 512)], ["fp32", "amp", "bf16"]),
        ("gpt2", [(8, 512), (4, 1024)], ["fp32", "amp", "bf16"]),
        ("llama-3.2-1b", [(4, 1024), (1, 4096)], ["fp32", "amp", "bf16"]),
        ("mistral-0.4b", [(8, 512), (2, 2048)], ["fp32", "amp", "bf16"]),
        ("smollm2-135m", [(16, 512), (4, 2048)], ["amp", "bf16"]),
        ("gpt2-medium", [(8, 1024)], ["fp32", "amp", "bf16"]),
    ]
    for m, shapes, precs in train_grid:
        for (b, s) in shapes:
            for p in precs:
                cases.append(dict(kind="train", model=m, batch=b, seq_len=s, scenario=dict(prec[p])))
        b, s = shapes[0]
        cases.append(dict(kind="train", model=m, batch=b, seq_len=s, scenario=dict(prec["bf16"], checkpointing="full")))
        cases.append(dict(kind="train", model=m, batch=b, seq_len=s, scenario=dict(prec["amp"], checkpointing="full")))
        cases.append(dict(kind="train", model=m, batch=b, seq_len=s, scenario=dict(prec["bf16"], trainable="last-k", last_k=2)))
    for m, prompts in (("llama-0.3b", [512, 2048]), ("qwen2-0.5b", [512, 2048]), ("gpt2", [512]),
                       ("llama-3.2-1b", [512, 2048]), ("mistral-0.4b", [1024]), ("smollm2-135m", [2048])):
        for P in prompts:
            for b in (1, 8, 32):
                for cache in ("dynamic", "static"):
                    if cache == "static" and b == 8:
                        continue
                    cases.append(dict(kind="generate", model=m, batch=b, prompt_len=P, new_tokens=64,
                                      scenario=dict(weights="bf16", cache=cache)))
    for c in cases:
        c["split"] = "held-out" if c["model"] in HELD_OUT_MODELS else "tuning"
    return cases


def fresh_gpu_cases() -> list[dict]:
    """A second held-out grid, written after the estimator was tuned and measured once."""
    T = lambda m, b, s, **sc: dict(kind="train", model=m, batch=b, seq_len=s, scenario=sc)  # noqa: E731
    G = lambda m, b, P, cache: dict(kind="generate", model=m, batch=b, prompt_len=P, new_tokens=64,  # noqa: E731
                                    scenario=dict(weights="bf16", cache=cache))
    cases = [
        T("qwen2-1.5b", 2, 1024, weights_dtype="bf16"), T("qwen2-1.5b", 2, 1024, weights_dtype="fp32", autocast="bf16"),
        T("qwen2-1.5b", 4, 2048, weights_dtype="bf16", checkpointing="full"),
        T("qwen2-1.5b", 4, 1024, weights_dtype="bf16", trainable="last-k", last_k=4),
        T("tinyllama-1.1b", 4, 1024, weights_dtype="bf16"), T("tinyllama-1.1b", 2, 2048, weights_dtype="fp32", autocast="bf16"),
        T("tinyllama-1.1b", 2, 512, weights_dtype="fp32"),
        T("llama-0.3b", 4, 512, weights_dtype="bf16", attention="eager"),
        T("llama-0.3b", 2, 1024, weights_dtype="fp32", autocast="bf16", attention="eager"),
        T("mistral-0.4b", 4, 1024, weights_dtype="fp32", optimizer="momentum"),
        T("mistral-0.4b", 4, 1024, weights_dtype="bf16", optimizer="sgd"),
        T("gpt2-medium", 4, 1024, weights_dtype="bf16", grad_accum=2),
        T("llama-3.2-1b", 2, 2048, weights_dtype="bf16", grad_accum=2),
        T("pythia-160m", 8, 1024, weights_dtype="bf16"), T("pythia-160m", 8, 1024, weights_dtype="fp32", autocast="bf16"),
        T("smollm2-135m", 8, 2048, weights_dtype="fp32", autocast="bf16", trainable="last-k", last_k=6),
        G("qwen2-1.5b", 16, 1024, "dynamic"), G("qwen2-1.5b", 16, 1024, "static"),
        G("tinyllama-1.1b", 4, 1536, "dynamic"), G("tinyllama-1.1b", 16, 1536, "static"),
        G("pythia-160m", 16, 1024, "dynamic"), G("gpt2-medium", 16, 768, "dynamic"),
        G("mistral-0.4b", 24, 2048, "dynamic"), G("llama-3.2-1b", 4, 1024, "static"),
    ]
    for c in cases:
        c["split"] = "fresh"
    return cases


def cpu_hf_cases() -> list[dict]:
    cases = []
    for m in ("tiny-llama", "tiny-gpt2", "tiny-qwen2"):
        for (b, s) in ((2, 64), (4, 128)):
            for p in (dict(weights_dtype="fp32"), dict(weights_dtype="bf16"), dict(weights_dtype="fp32", autocast="bf16")):
                cases.append(dict(kind="train", model=m, batch=b, seq_len=s, scenario=dict(p, device="cpu")))
        cases.append(dict(kind="train", model=m, batch=2, seq_len=64, scenario=dict(weights_dtype="fp32", device="cpu",
                                                                                     checkpointing="full")))
        for cache in ("dynamic", "static"):
            cases.append(dict(kind="generate", model=m, batch=4, prompt_len=64, new_tokens=8,
                              scenario=dict(weights="bf16", cache=cache, device="cpu")))
    for c in cases:
        c["split"] = "held-out" if c["model"] in HELD_OUT_MODELS else "tuning"
    return cases


def book_cases() -> list[dict]:
    cases = []
    i = 0
    for L, d, h, kvh in ((2, 64, 4, 4), (4, 128, 4, 4), (3, 96, 6, 2)):
        for (b, s) in ((2, 64), (8, 128)):
            for attn in ("sdpa", "eager"):
                for dt in ("fp32", "bf16"):
                    if True:
                        i += 1
                        opt = "adamw" if i % 4 else "sgd"
                        cases.append(dict(kind="train", model="book-gpt", split="held-out" if i % 3 == 0 else "tuning",
                                          gpt=dict(vocab_size=512, block_size=256, n_layer=L, n_head=h, n_kv_head=kvh,
                                                   d_model=d, attn=attn, tie_weights=(i % 2 == 0)),
                                          batch=b, seq_len=s,
                                          scenario=dict(weights_dtype=dt, optimizer=opt, attention=attn, device="cpu")))
    return cases


# ---------------------------------------------------------------- building and measuring
def build(case, device):
    if case["model"] == "book-gpt":
        from vramlib.models import GPT, GPTConfig
        cfg = GPTConfig(**case["gpt"])
        spec_src = cfg
        with torch.device(device):
            model = GPT(cfg)
        return model, spec_src, None
    import transformers
    cfgd = HF_MODELS[case["model"]]()
    kw = {k: v for k, v in cfgd.items() if not k.startswith("_")}
    cfg = transformers.AutoConfig.for_model(**kw)
    impl = "eager" if case["scenario"].get("attention") == "eager" else "sdpa"
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=impl)
    return model, cfgd, cfg


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _alloc(dev):
    return torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0


def measure_case(case, device: str) -> dict:
    from vramlib.measure.tracker import StorageTracker, optimizer_state_bytes, param_bytes

    dev = torch.device(device)
    sc = case["scenario"]
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    base0 = _alloc(dev)
    model, spec_src, hfcfg = build(case, device)
    hf = hfcfg is not None
    V = model.cfg.vocab_size if not hf else hfcfg.vocab_size
    if case["kind"] == "train":
        dt = DT[sc.get("weights_dtype", "fp32")]
        model.to(dt)
        model.train()
        if sc.get("trainable") == "last-k":
            k = sc["last_k"]
            for p in model.parameters():
                p.requires_grad_(False)
            layers = model.model.layers if hasattr(model, "model") else model.transformer.h
            for blk in list(layers)[-k:]:
                for p in blk.parameters():
                    p.requires_grad_(True)
            norm = model.model.norm if hasattr(model, "model") else model.transformer.ln_f
            for p in norm.parameters():
                p.requires_grad_(True)
        if sc.get("checkpointing") == "full":
            if hf:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            else:
                raise ValueError("book GPT has no checkpointing switch")
        opt_name = sc.get("optimizer", "adamw")
        params = [p for p in model.parameters() if p.requires_grad]
        if opt_name == "adamw":
            opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
        elif opt_name == "momentum":
            opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
        else:
            opt = torch.optim.SGD(params, lr=1e-3)
        accum = sc.get("grad_accum", 1)
        ids = torch.randint(0, V, (case["batch"], case["seq_len"]), device=dev)
        ac = sc.get("autocast", "none")
        ctx = (lambda: torch.autocast(dev.type, dtype=DT[ac])) if ac != "none" else None

        def step():
            for _ in range(accum):
                if ctx is not None:
                    with ctx():
                        loss = model(ids, labels=ids, use_cache=False).loss if hf else model(ids, ids)[1]
                else:
                    loss = model(ids, labels=ids, use_cache=False).loss if hf else model(ids, ids)[1]
                loss.backward()
                del loss
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        _sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            step()
            _sync(dev)
            peak = torch.cuda.max_memory_allocated(dev) - base0
            reserved = torch.cuda.max_memory_reserved(dev)
        else:
            reserved = None
            pre = param_bytes(model, buffers=True) + optimizer_state_bytes(opt)
            tr = StorageTracker("cpu")
            with tr:
                step()
            peak = pre + tr.peak
        del opt
    else:
        model.to(DT["bf16"] if sc.get("weights", "bf16") == "bf16" else DT[sc["weights"]])
        model.eval()
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        ids = torch.randint(1, V, (case["batch"], case["prompt_len"]), device=dev)
        n = case["new_tokens"]
        kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, disable_compile=True)
        if sc.get("cache") == "static":
            kw["cache_implementation"] = "static"
        with torch.no_grad():
            model.generate(ids, **kw)   # warm-up (kernels, cuBLAS handles)
            _sync(dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                out = model.generate(ids, **kw)
                _sync(dev)
                peak = torch.cuda.max_memory_allocated(dev) - base0
                reserved = torch.cuda.max_memory_reserved(dev)
            else:
                reserved = None
                pre = param_bytes(model, buffers=True)
                tr = StorageTracker("cpu")
                with tr:
                    out = model.generate(ids, **kw)
                peak = pre + tr.peak
        assert out.shape[1] == case["prompt_len"] + n, out.shape
    del model
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return {"peak": int(peak), "reserved_peak": reserved, "baseline": int(base0)}


# ---------------------------------------------------------------- reporting
def report(rows: list[dict]) -> dict:
    ok = [r for r in rows if "peak" in r]
    print(f"{'case':<58} {'split':<8} {'measured':>10} {'estimate':>10} {'err':>7} {'rule':>7}  phase")
    for r in ok:
        add_errors(r)
        print(f"{r['label']:<58} {r['split']:<8} {r['peak'] / 2**20:>8.1f}Mi {r['estimate'] / 2**20:>8.1f}Mi "
              f"{100 * r['err']:>+6.1f}% {100 * r['rule_err']:>+6.0f}%  {r['phase']}")
    for r in rows:
        if "peak" not in r:
            print(f"{r['label']:<58} {r['split']:<8} skipped: {r.get('skipped')}")
    summary = summarize(rows)
    print()
    print("rule = A6 (training; A = our activation elements per sample, its most favourable reading) or "
          "A9/A11 (inference); A7 = 4 × batch × P (training)")
    print(f"{'set':<20} {'n':>3} {'median |err|':>13} {'max |err|':>10} {'rule median':>12} {'rule max':>9} "
          f"{'A7 median':>10} {'A7 max':>8}")
    for k, v in summary.items():
        print(f"{k:<20} {v['n']:>3} {100 * v['median_abs_err']:>12.1f}% {100 * v['max_abs_err']:>9.1f}% "
              f"{100 * v['rule_median_abs_err']:>11.1f}% {100 * v['rule_max_abs_err']:>8.1f}% "
              f"{100 * v['rule2_median_abs_err']:>9.1f}% {100 * v['rule2_max_abs_err']:>7.1f}%")
    return summary


def label(c):
    if c["kind"] == "train":
        extra = ",".join(f"{k}={v}" for k, v in c["scenario"].items() if k not in ("device",))
        return f"{c['model']} train B={c['batch']} s={c['seq_len']} {extra}"[:58]
    return f"{c['model']} gen B={c['batch']} P={c['prompt_len']} n={c['new_tokens']} {c['scenario'].get('cache')}"[:58]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--hf", action="store_true", help="on CPU, add tiny Hugging Face models")
    ap.add_argument("--out", default=None, help="write the measurements as JSON")
    ap.add_argument("--from-json", default=None, help="re-report a recorded run")
    ap.add_argument("--fresh", action="store_true", help="run the second held-out GPU grid")
    ap.add_argument("--only", default=None, help="substring filter on case labels")
    ap.add_argument("--limit-s", type=float, default=420.0, help="stop measuring after this many seconds")
    a = ap.parse_args(argv)
    if a.from_json:
        rec = read_record(a.from_json)
        print("recorded run:", provenance_line(rec))
        rows = rec.results["cases"]
        for r in rows:
            if "peak" in r:
                r.update(estimate_case(r))
        report(rows)
        return 0
    dev = a.device
    if dev.startswith("cuda"):
        cases = (fresh_gpu_cases() if a.fresh else gpu_cases())
    else:
        cases = book_cases() + (cpu_hf_cases() if a.hf else [])
    if a.only:
        cases = [c for c in cases if a.only in label(c)]
    t0 = time.time()
    rows = []
    for c in cases:
        c = dict(c)
        c["label"] = label(c)
        if time.time() - t0 > a.limit_s:
            c["skipped"] = "time limit"
            rows.append(c)
            continue
        try:
            c.update(measure_case(c, dev))
            c.update(estimate_case(c))
        except torch.OutOfMemoryError:
            c["skipped"] = "out of memory"
            gc.collect()
            torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001 -- record and go on
            c["skipped"] = f"{type(e).__name__}: {e}"[:300]
        rows.append(c)
        print(f"[{time.time() - t0:6.1f}s] {c['label']}: " +
              (f"measured {c['peak'] / 2**20:.1f} MiB, estimate {c['estimate'] / 2**20:.1f} MiB"
               if "peak" in c else c["skipped"]), flush=True)
    summary = report(rows)
    if a.out:
        import transformers  # noqa: F401  (its version goes into the provenance)
        write_record(a.out, {"summary": summary, "cases": rows}, {}, dev)
        print("wrote", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Part I's key experiments at full scale on a GPU, written as JSON with provenance.

    python benchmarks/part1_gpu.py --out benchmarks/results/part1_gpu.json     # on a CUDA GPU (< 4 min on an H100)
    python benchmarks/part1_gpu.py --small --out /tmp/part1_cpu.json          # rehearsal on the CPU

Experiments (each predicted with the same vramlib formulas the chapters use, measured with
vramlib.track_memory — the CUDA allocator on a GPU, exact storage accounting elsewhere):
anatomy (CUDA context, fragmentation), pretraining (forward+backward peak vs batch, A7),
activations (eager vs fused attention over sequence length), fine-tuning (full / frozen /
LoRA / QLoRA step peaks), inference (KV cache, prefill and decode peaks).  Out-of-memory is
caught and recorded as null.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib import pick_device, seed_everything, track_memory  # noqa: E402
from vramlib.estimate import load_model_config  # noqa: E402
from vramlib.estimate.inference import kv_cache_bytes  # noqa: E402
from vramlib.measure.generate import KVCache, decode_step, prefill  # noqa: E402
from vramlib.compress.lora import apply_lora, trainable_params  # noqa: E402
from vramlib.models import GPT, GPTConfig  # noqa: E402
from vramlib.compress.qstore import quantize_linears  # noqa: E402
from vramlib.core.records import write_record  # noqa: E402
from vramlib.measure.stagemem import finetune_activation_bytes, gpt_train_peak_bytes, rule_a7  # noqa: E402


def _clean(dev):
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _fwd_bwd(model, x, dev):
    with track_memory(dev) as rep:
        loss = model(x, x)[1]
        loss.backward()
        del loss
    model.zero_grad(set_to_none=True)
    return rep.peak


def anatomy(dev, small):
    if dev.type != "cuda":
        return None
    from vramlib.measure.allocator import cuda_context_bytes, fragmentation_demo
    return {"context": cuda_context_bytes(dev), "fragmentation": fragmentation_demo(dev, n=64, mib=20)}


def pretraining(dev, small):
    cfg = GPTConfig(vocab_size=256 if small else 50304, block_size=128 if small else 1024,
                    n_layer=2 if small else 12, n_head=4 if small else 12, d_model=128 if small else 768)
    seq = cfg.block_size // 2 if small else cfg.block_size
    seed_everything(0)
    model = GPT(cfg).to(dev)
    P = model.num_params()
    _fwd_bwd(model, torch.randint(0, cfg.vocab_size, (1, seq), device=dev), dev)     # warm-up (cuBLAS workspace)
    rows = []
    for b in ([1, 2, 4, 8] if small else [1, 2, 4, 8, 16]):
        x = torch.randint(0, cfg.vocab_size, (b, seq), device=dev)
        try:
            meas = _fwd_bwd(model, x, dev)
        except torch.cuda.OutOfMemoryError:
            meas = None
        _clean(dev)
        rows.append({"batch": b, "seq": seq, "measured": meas,
                     "predicted": gpt_train_peak_bytes(cfg, b, seq, n_params=P), "a7": rule_a7(P, b)})
    return {"model": f"book GPT {cfg}", "n_params": P, "batch_sweep": rows}


def activations(dev, small):
    base = dict(vocab_size=256, block_size=256 if small else 4096, n_layer=2, n_head=4 if small else 16,
                d_model=128 if small else 1024)
    B = 8 if small else 4
    rows = []
    for s in ([64, 128, 256] if small else [512, 1024, 2048, 4096]):
        peaks = {}
        for attn in ("eager", "sdpa"):
            seed_everything(0)
            model = GPT(GPTConfig(**base, attn=attn)).to(dev)
            x = torch.randint(0, 256, (B, s), device=dev)
            try:
                _fwd_bwd(model, x, dev)                     # warm-up
                peaks[attn] = _fwd_bwd(model, x, dev)
            except torch.cuda.OutOfMemoryError:
                peaks[attn] = None
            del model
            _clean(dev)
        rows.append({"seq": s, "dtype": "fp32", "eager": peaks["eager"], "sdpa": peaks["sdpa"],
                     "predicted_diff": base["n_layer"] * (B * base["n_head"] * s * s * 4 + s * s)})
    return {"batch": B, "config": base, "attention": rows}


def build_finetune_model(cfg: GPTConfig, mode: str, rank: int, k_top: int) -> GPT:
    """The book's GPT prepared for one fine-tuning mode of the chapter: ``full``,
    ``frozen (top block)`` (only the top ``k_top`` blocks train), ``LoRA`` or ``QLoRA``."""
    seed_everything(0)
    m = GPT(cfg)
    if mode.startswith("frozen"):
        for p in m.parameters():
            p.requires_grad_(False)
        for blk in m.blocks[-k_top:]:
            for p in blk.parameters():
                p.requires_grad_(True)
    elif mode == "LoRA":
        apply_lora(m, rank)
    elif mode == "QLoRA":
        quantize_linears(m, "nf4", 64)
        apply_lora(m, rank)
    return m


def finetuning(dev, small):
    cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=4 if small else 12, n_head=4, d_model=128 if small else 768)
    B, s, rank, k_top = (8 if small else 16), 64, 8, 1
    x = torch.randint(0, cfg.vocab_size, (B, s), device=dev)
    out = []
    for mode, act_mode in [("full", "full"), ("frozen (top block)", "frozen"), ("LoRA", "lora"), ("QLoRA", "qlora")]:
        m = build_finetune_model(cfg, mode, rank, k_top).to(dev)
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3, foreach=False)
        loss = m(x, x)[1]; loss.backward(); del loss; opt.step(); opt.zero_grad(set_to_none=True)
        with track_memory(dev) as rep:
            loss = m(x, x)[1]; loss.backward(); del loss
            opt.step(); opt.zero_grad(set_to_none=True)
        T = trainable_params(m)
        act = finetune_activation_bytes(cfg, B, s, act_mode, k_top, rank)
        trans = 2 * B * s * cfg.vocab_size * 4
        out.append({"mode": mode, "T": T, "peak": rep.peak, "pred_peak": max(act + trans, 4 * T + trans)})
        del m, opt
        _clean(dev)
    return {"model": f"book GPT {cfg}, batch {B} x {s}, LoRA rank {rank}", "modes": out}


def inference(dev, small):
    cfg = GPTConfig(vocab_size=2048 if small else 50304, block_size=256 if small else 2048, n_layer=4 if small else 12,
                    n_head=4 if small else 12, d_model=128 if small else 768, n_kv_head=2 if small else 4)
    B, s, new = (4, 128, 32) if small else (16, 1024, 256)
    seed_everything(0)
    model = GPT(cfg).to(dev).eval()
    idx = torch.randint(0, cfg.vocab_size, (B, s), device=dev)
    warm = KVCache.allocate(model, B, s + new)
    prefill(model, idx, warm)
    del warm
    _clean(dev)
    with track_memory(dev) as rc:
        cache = KVCache.allocate(model, B, s + new)
    with track_memory(dev) as rp:
        logits = prefill(model, idx, cache)
    tok = logits[:, -1:].argmax(-1)
    del logits
    with track_memory(dev) as rd:
        for _ in range(new - 1):
            tok = decode_step(model, tok, cache)[:, -1:].argmax(-1)
    N, d, V, b = B * s, cfg.d_model, cfg.vocab_size, 4
    T = s + new - 1
    dec = max(10 * B * d * b, 2 * B * cfg.n_head * T * cfg.head_dim * b + B * V * b)
    return {"model": f"book GPT {cfg}", "batch": B, "prompt": s, "new": new, "dtype": "fp32",
            "kv_cache": {"predicted": int(kv_cache_bytes(load_model_config(cfg), B, s + new, "fp32")),
                         "measured": rc.end},
            "prefill": {"predicted": 10 * N * d * b, "measured": rp.peak},
            "decode": {"predicted": dec, "measured": rd.peak}}


EXPERIMENTS = {"anatomy": anatomy, "pretraining": pretraining, "activations": activations,
               "finetuning": finetuning, "inference": inference}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/part1_gpu.json")
    ap.add_argument("--small", action="store_true", help="CPU-sized rehearsal")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: vramlib.pick_device())")
    args = ap.parse_args(argv)
    dev = pick_device(args.device)
    small = args.small or dev.type != "cuda"
    results, timings = {}, {}
    for name, fn in EXPERIMENTS.items():
        t = time.perf_counter()
        try:
            results[name] = fn(dev, small)
        except Exception as e:  # keep the other experiments' results; say what failed
            results[name] = None
            results.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
        timings[name] = round(time.perf_counter() - t, 2)
        print(f"{name:12s} {timings[name]:7.1f} s", flush=True)
        _clean(dev)
    path = write_record(args.out, results, {"small": small, "device": str(dev), "seconds": timings}, dev)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

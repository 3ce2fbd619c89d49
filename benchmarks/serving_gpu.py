"""The serving, MoE and OOM-debugging chapters' GPU measurements, in one run, as JSON with
provenance (vramlib.core.records.write_record), plus a small memory snapshot to embed.

    python benchmarks/serving_gpu.py --out-dir $OUT            # on a CUDA GPU (about 2 min on an H100)
    python benchmarks/serving_gpu.py --small --out-dir /tmp/s  # rehearsal on the CPU (GPU-only parts skipped)

Parts (each caught on error and recorded as {"error": ...}; the record is rewritten after each):
paged (paged vs contiguous KV memory, paged attention vs contiguous), plan (a vLLM-style memory
plan on a Llama-3-8B-shaped bf16 model: weights, profiled activations, KV pool under
gpu_memory_utilization, checked against cudaMemGetInfo), decode (time per decode step vs
bytes moved / bandwidth), kvquant (bytes and char-LM loss of int8/fp8 KV caches), moe (a small
MoE GPT: training step and generation peaks), oom (subprocesses: an OOM under a memory cap with
the memory snapshot recorded, fragmentation with and without expandable_segments and
max_split_size_mb, empty_cache).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib import pick_device, seed_everything, track_memory  # noqa: E402
from vramlib.estimate.config import from_gpt_config  # noqa: E402
from vramlib.estimate.moe import moe_mlp_saved_bytes, moe_params, moe_prefill_transient_bytes  # noqa: E402
from vramlib.estimate.serving import (kv_allocation, request_lengths,  # noqa: E402
                                      serving_memory_plan)
from vramlib.estimate import load_model_config  # noqa: E402
from vramlib.estimate.inference import kv_cache_bytes  # noqa: E402
from vramlib.measure.generate import KVCache, decode_step, generate, prefill  # noqa: E402
from vramlib.models import GPT, GPTConfig  # noqa: E402
from vramlib.core.records import write_record  # noqa: E402
from vramlib.measure.serving import BlockPool, PagedKVCache, QuantizedKVCache, moe_gpt  # noqa: E402
from vramlib.measure.stagemem import gpt_activation_bytes  # noqa: E402
from vramlib.models.zoo import load_char_lm  # noqa: E402

HERE = Path(__file__).resolve()
GiB = 2**30


def _clean(dev):
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- paged
def paged(dev, small):
    seed_everything(0)
    cfg = GPTConfig(vocab_size=2048 if small else 32000, block_size=256 if small else 2048,
                    n_layer=4 if small else 12, n_head=4 if small else 12,
                    d_model=128 if small else 768, n_kv_head=2 if small else 4)
    model = GPT(cfg).to(dev).eval()
    max_len, bs = cfg.block_size, 16
    lens = [p + o for p, o in request_lengths(32 if small else 256, max_len=max_len)]
    alloc = kv_allocation(lens, max_len, bs)
    with track_memory(dev) as rc:
        caches = [KVCache.allocate(model, 1, max_len) for _ in lens]
    del caches
    _clean(dev)
    with track_memory(dev) as rp:
        pool = BlockPool(model, alloc["paged"] // bs, bs)
        seqs = []
        for n in lens:
            s = PagedKVCache(pool)
            s.reserve(n)
            seqs.append(s)
    used_blocks = pool.used
    del seqs, pool
    _clean(dev)
    # attention output: paged vs contiguous, same prompt, prefill + 16 decode steps
    idx = torch.randint(0, cfg.vocab_size, (1, 100), device=dev)
    c = KVCache.allocate(model, 1, 128)
    pc = PagedKVCache(BlockPool(model, 8, bs))
    a, b = prefill(model, idx, c, True), prefill(model, idx, pc, True)
    diff = (a - b).abs().max().item()
    t = a[:, -1:].argmax(-1)
    for _ in range(16):
        a, b = decode_step(model, t, c), decode_step(model, t, pc)
        diff = max(diff, (a - b).abs().max().item())
        t = a.argmax(-1)
    per_tok = int(kv_cache_bytes(load_model_config(cfg), 1, 1, "fp32"))
    return {"model": repr(cfg), "dtype": "fp32", "block_size": bs, "max_len": max_len, "lengths": lens,
            "kv_per_token": per_tok, "allocation_tokens": alloc,
            "contiguous": {"predicted": alloc["contiguous"] * per_tok, "measured": rc.end},
            "paged": {"predicted": alloc["paged"] * per_tok, "measured": rp.end, "blocks": used_blocks},
            "max_abs_diff_logits": diff}


# --------------------------------------------------------------------------- llama-shaped decoder
class Llamaish:
    """Random bf16 weights with Llama-3-8B's shapes; decode steps with plain torch ops
    (grouped-query attention without copying K/V)."""

    def __init__(self, dev, layers=32, d=4096, h=32, hkv=8, hd=128, ffn=14336, vocab=128256):
        self.dev, self.L, self.d, self.h, self.hkv, self.hd, self.ffn, self.V = dev, layers, d, h, hkv, hd, ffn, vocab
        bf = dict(device=dev, dtype=torch.bfloat16)
        std = 0.02
        self.emb = torch.randn(vocab, d, **bf) * std
        self.head = torch.randn(vocab, d, **bf) * std
        self.layers = []
        for _ in range(layers):
            self.layers.append({"qkv": torch.randn((h + 2 * hkv) * hd, d, **bf) * std,
                                "o": torch.randn(d, h * hd, **bf) * std,
                                "gu": torch.randn(2 * ffn, d, **bf) * std,
                                "down": torch.randn(d, ffn, **bf) * std,
                                "n1": torch.ones(d, **bf), "n2": torch.ones(d, **bf)})
        self.norm = torch.ones(d, **bf)

    def weight_bytes(self):
        return sum(t.nbytes for lay in self.layers for t in lay.values()) + self.emb.nbytes + self.head.nbytes \
            + self.norm.nbytes

    def kv_per_token(self):
        return 2 * self.L * self.hkv * self.hd * 2

    @torch.no_grad()
    def forward_tokens(self, x):
        """A prefill-like pass over ``x`` (N, d) without attention's KV cache (profiling)."""
        for lay in self.layers:
            y = F.rms_norm(x, (self.d,), lay["n1"])
            qkv = y @ lay["qkv"].T
            q = qkv[:, :self.h * self.hd]
            x = x + q @ lay["o"].T
            y = F.rms_norm(x, (self.d,), lay["n2"])
            g, u = (y @ lay["gu"].T).chunk(2, dim=-1)
            x = x + (F.silu(g) * u) @ lay["down"].T
        return F.rms_norm(x, (self.d,), self.norm) @ self.head.T

    @torch.no_grad()
    def decode(self, tok, k_cache, v_cache):
        """One decode step for ``tok`` (B,) attending to caches (L, B, hkv, T, hd)."""
        B = tok.shape[0]
        x = self.emb[tok]
        g = self.h // self.hkv
        for i, lay in enumerate(self.layers):
            y = F.rms_norm(x, (self.d,), lay["n1"])
            qkv = y @ lay["qkv"].T
            q = qkv[:, :self.h * self.hd].view(B, self.hkv, g, self.hd)
            att = torch.matmul(q, k_cache[i].transpose(-1, -2)) * self.hd ** -0.5   # (B, hkv, g, T)
            o = torch.matmul(att.softmax(-1), v_cache[i]).reshape(B, self.h * self.hd)
            x = x + o @ lay["o"].T
            y = F.rms_norm(x, (self.d,), lay["n2"])
            gg, u = (y @ lay["gu"].T).chunk(2, dim=-1)
            x = x + (F.silu(gg) * u) @ lay["down"].T
        return (F.rms_norm(x, (self.d,), self.norm) @ self.head.T).argmax(-1)


def plan_and_decode(dev, small):
    if dev.type != "cuda":
        return {"skipped": "needs CUDA"}, {"skipped": "needs CUDA"}
    from vramlib.hardware.bench import copy_bandwidth
    seed_everything(0)
    _clean(dev)
    free0, total = torch.cuda.mem_get_info()
    m = Llamaish(dev)
    torch.cuda.synchronize()
    W = m.weight_bytes()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    max_batched = 8192
    x = torch.randn(max_batched, m.d, device=dev, dtype=torch.bfloat16)
    m.forward_tokens(x)
    torch.cuda.synchronize()
    act = torch.cuda.max_memory_allocated() - base
    del x
    _clean(dev)
    free1, _ = torch.cuda.mem_get_info()
    non_torch = total - free1 - torch.cuda.memory_reserved()
    util, bs, max_len = 0.90, 16, 8192
    plan = serving_memory_plan(total, W, act, m.kv_per_token(), util, non_torch, bs, max_len)
    pool = torch.empty(plan.num_blocks * bs * m.kv_per_token() // 2, device=dev, dtype=torch.bfloat16)
    torch.cuda.synchronize()
    free2, _ = torch.cuda.mem_get_info()
    used_frac = (total - free2) / total
    plan_res = {"model": "Llama-3-8B shapes, random bf16 weights", "total": total, "weights": W,
                "activations_profiled": act, "max_num_batched_tokens": max_batched, "non_torch": non_torch,
                "gpu_memory_utilization": util, "block_size": bs, "max_model_len": max_len,
                "plan": plan.to_dict(), "pool_bytes": pool.nbytes, "used_after_pool": total - free2,
                "used_fraction": used_frac, "headroom_for_activations": util * total - (total - free2)}
    del pool
    _clean(dev)
    # decode time per token
    bw = copy_bandwidth(GiB, dev).rate
    rows = []
    for B, T in [(1, 1024), (1, 32768), (8, 8192), (32, 4096), (32, 8192), (64, 8192)]:
        kv_bytes = m.kv_per_token() * B * T
        if kv_bytes + W > 0.85 * total:
            continue
        kc = torch.randn(m.L, B, m.hkv, T, m.hd, device=dev, dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        tok = torch.zeros(B, dtype=torch.long, device=dev)
        for _ in range(3):
            m.decode(tok, kc, vc)
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        n = 20
        e0.record()
        for _ in range(n):
            m.decode(tok, kc, vc)
        e1.record()
        torch.cuda.synchronize()
        t = e0.elapsed_time(e1) / 1e3 / n
        rows.append({"batch": B, "context": T, "weights": W, "kv_bytes": kv_bytes, "seconds": t})
        del kc, vc
        _clean(dev)
    dec = {"model": "Llama-3-8B shapes, random bf16 weights, plain torch ops, no CUDA graphs",
           "copy_bandwidth": bw, "rows": rows}
    del m
    _clean(dev)
    return plan_res, dec


# --------------------------------------------------------------------------- kv quantization
def kvquant(dev, small):
    model, data = load_char_lm(dev)
    xs, ys = data.windows("val", 64)
    xs, ys = xs.to(dev), ys.to(dev)
    out = {}
    for kind, gran in [("fp32", None), ("int8", "token"), ("int8", "head"), ("fp8", "token"), ("fp8", "head")]:
        if kind == "fp8" and dev.type == "cuda" and not hasattr(torch, "float8_e4m3fn"):
            continue
        tot = 0.0
        for i in range(0, len(xs), 32):
            xb = xs[i:i + 32]
            cache = (KVCache.allocate(model, xb.shape[0], xb.shape[1]) if kind == "fp32"
                     else QuantizedKVCache.allocate(model, xb.shape[0], xb.shape[1], kind, gran))
            lg = prefill(model, xb, cache, True)
            tot += F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), ys[i:i + 32].reshape(-1),
                                   reduction="sum").item()
        with track_memory(dev) as r:
            c = (KVCache.allocate(model, 32, 64) if kind == "fp32"
                 else QuantizedKVCache.allocate(model, 32, 64, kind, gran))
        out[f"{kind}-{gran}" if gran else kind] = {"loss": tot / ys.numel(), "bytes_b32_t64": c.nbytes(),
                                                   "allocated_b32_t64": r.end}
        del c
    return {"model": "char LM (vramlib.models.zoo)", "windows": 64, "results": out}


# --------------------------------------------------------------------------- moe
def moe(dev, small):
    seed_everything(0)
    E, k = 8, 2
    cfg = GPTConfig(vocab_size=256 if small else 8192, block_size=128 if small else 512,
                    n_layer=2 if small else 4, n_head=4 if small else 8, d_model=128 if small else 512)
    B, s = (8, 64) if small else (16, 512)
    N = B * s
    x = torch.randint(0, cfg.vocab_size, (B, s), device=dev)
    _clean(dev)
    with track_memory(dev) as rt:
        tm = moe_gpt(cfg, E, k).to(dev)
        opt = torch.optim.Adam(tm.parameters(), lr=1e-3, foreach=False)
        for _ in range(2):
            loss = tm(x, x)[1]
            loss.backward()
            del loss
            opt.step()
            opt.zero_grad(set_to_none=True)
    P = sum(p.numel() for p in tm.parameters())
    counts = [b.mlp.last_counts for b in tm.blocks]
    del tm, opt
    _clean(dev)
    act = gpt_activation_bytes(cfg, B, s, 4)
    moe_act = act["total"] - cfg.n_layer * 8 * N * cfg.d_model * 4 + cfg.n_layer * moe_mlp_saved_bytes(
        N, cfg.d_model, cfg.mlp_ratio * cfg.d_model, E, k, 4)
    transient = 2 * N * cfg.vocab_size * 4
    pred_train = 12 * P + max(moe_act + transient, 4 * P + act["head"] + transient)
    prompt, new = s // 2, s // 2
    with track_memory(dev) as rg:
        im = moe_gpt(cfg, E, k).to(dev).eval()
        generate(im, x[:, :prompt], new)
    counts_gen = [b.mlp.last_counts for b in im.blocks]
    W = sum(p.numel() for p in im.parameters()) * 4
    cache = KVCache.allocate(im, B, prompt + new)
    with track_memory(dev) as rpf:
        prefill(im, x[:, :prompt], cache)
    pf = {"measured": rpf.peak, "max_count": max(max(b.mlp.last_counts) for b in im.blocks),
          "predicted": moe_prefill_transient_bytes(B, prompt, cfg.d_model, cfg.mlp_ratio * cfg.d_model, E, k,
                                                   max(max(b.mlp.last_counts) for b in im.blocks), 4)}
    del cache
    del im
    _clean(dev)
    spec_p = moe_params(from_gpt_config(cfg).replace(num_experts=E, experts_per_token=k))
    return {"model": repr(cfg), "experts": E, "top_k": k, "batch": B, "seq": s, "n_params": P,
            "params_estimator": spec_p, "train": {"measured": rt.peak, "predicted": pred_train,
                                                  "moe_activations": moe_act, "expert_counts": counts},
            "generate": {"measured": rg.peak, "weights": W, "prompt": prompt, "new": new,
                         "kv": int(kv_cache_bytes(load_model_config(cfg), B, prompt + new, "fp32")),
                         "expert_counts_last_step": counts_gen, "prefill_transient": pf}}


# --------------------------------------------------------------------------- oom (subprocesses)
def _child(mode: str, out: str) -> None:
    """Runs in a fresh process (allocator settings must be set before CUDA starts)."""
    dev = torch.device("cuda")
    torch.cuda.init()
    total = torch.cuda.get_device_properties(0).total_memory
    res: dict = {"mode": mode, "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")}
    if mode == "snapshot":
        cap = 1 * GiB
        torch.cuda.set_per_process_memory_fraction(cap / total)
        torch.cuda.memory._record_memory_history(max_entries=4000, stacks="python")
        seed_everything(0)
        net = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 1024)).to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        losses = []  # the bug: keeping each loss tensor keeps its whole graph alive
        step = 0
        try:
            for step in range(1000):
                xb = torch.randn(2048, 1024, device=dev)
                loss = net(xb).pow(2).mean()
                loss.backward(retain_graph=True)
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss)
        except torch.OutOfMemoryError as e:
            res["oom_message"] = str(e)
            res["oom_step"] = step
            res["memory_summary"] = torch.cuda.memory_summary(abbreviated=True)
            snap = torch.cuda.memory._snapshot()
            torch.cuda.memory._record_memory_history(enabled=None)
            keep = ("serving_gpu.py",)
            for tr in snap.get("device_traces", []):
                for ev in tr:
                    ev["frames"] = [f for f in ev.get("frames", []) if f["filename"].endswith(keep)][:3]
            for seg in snap.get("segments", []):
                for blk in seg.get("blocks", []):
                    blk["frames"] = [f for f in blk.get("frames", []) if f["filename"].endswith(keep)][:3]
            with open(os.path.join(os.path.dirname(out), "oom_snapshot.pickle"), "wb") as f:
                pickle.dump(snap, f)
            res["allocated_at_oom"] = torch.cuda.memory_allocated()
            res["reserved_at_oom"] = torch.cuda.memory_reserved()
            res["steps_before_oom"] = len(losses)
            losses.clear()
            gc.collect()
            res["allocated_after_fix"] = torch.cuda.memory_allocated()
    else:  # fragmentation under a 2 GiB cap: 6 MiB tensors, free 2 of every 3, then 12 MiB requests
        cap = 2 * GiB
        torch.cuda.set_per_process_memory_fraction(cap / total)
        el = 6 * 2**20 // 4
        ts = []
        try:
            while True:
                ts.append(torch.empty(el, device=dev))
        except torch.OutOfMemoryError:
            pass
        res["filled"] = {"tensors": len(ts), "allocated": torch.cuda.memory_allocated(),
                         "reserved": torch.cuda.memory_reserved()}
        for i in range(len(ts)):
            if i % 3 != 1:
                ts[i] = None
        res["after_free"] = {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved()}
        torch.cuda.empty_cache()
        res["after_empty_cache"] = {"allocated": torch.cuda.memory_allocated(),
                                    "reserved": torch.cuda.memory_reserved()}
        big = []
        msg = None
        try:
            while True:
                big.append(torch.empty(2 * el, device=dev))
        except torch.OutOfMemoryError as e:
            msg = str(e)
        res["large_requests_ok"] = len(big)
        res["large_request_bytes"] = 2 * el * 4
        res["at_oom"] = {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved()}
        res["oom_message"] = msg
        big.clear()
        ts.clear()
        torch.cuda.empty_cache()
        res["after_all_freed_and_empty_cache"] = {"reserved": torch.cuda.memory_reserved()}
    Path(out).write_text(json.dumps(res))


def oom(dev, small, out_dir: Path):
    if dev.type != "cuda":
        return {"skipped": "needs CUDA"}
    res = {}
    for mode, conf in [("snapshot", ""), ("default", ""), ("expandable", "expandable_segments:True"),
                       ("max_split", "max_split_size_mb:64")]:
        out = out_dir / f"_child_{mode}.json"
        env = dict(os.environ)
        env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
        if conf:
            env["PYTORCH_CUDA_ALLOC_CONF"] = conf
        p = subprocess.run([sys.executable, str(HERE), "--child", "snapshot" if mode == "snapshot" else "frag",
                            "--child-out", str(out)], env=env, capture_output=True, text=True, timeout=120)
        if out.exists():
            res[mode] = json.loads(out.read_text())
            out.unlink()
        else:
            res[mode] = {"error": p.stderr[-2000:]}
    snap = out_dir / "oom_snapshot.pickle"
    res["snapshot_bytes"] = snap.stat().st_size if snap.exists() else None
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default="vramlib/data/records")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--child", default="")
    ap.add_argument("--child-out", default="")
    a = ap.parse_args()
    if a.child:
        _child(a.child, a.child_out)
        return
    dev = pick_device("cpu" if a.small else None)
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    config = {"small": a.small, "device": str(dev)}
    path = out_dir / "serving_gpu.json"
    parts = {"paged": lambda: paged(dev, a.small), "kvquant": lambda: kvquant(dev, a.small),
             "moe": lambda: moe(dev, a.small), "plan_decode": lambda: plan_and_decode(dev, a.small),
             "oom": lambda: oom(dev, a.small, out_dir)}
    for name, fn in parts.items():
        if a.only and name not in a.only.split(","):
            continue
        t0 = time.perf_counter()
        try:
            r = fn()
            if name == "plan_decode":
                results["plan"], results["decode"] = r
            else:
                results[name] = r
        except Exception as e:  # noqa: BLE001 - recorded, the other parts still run
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {results['seconds'][name]} s", flush=True)
        write_record(path, results, config, dev)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Part I's training-memory-beyond-the-basics, MoE and OOM-debugging measurements on one GPU,
written as JSON with provenance (vramlib.core.records.write_record).

    python3 benchmarks/training_memory_gpu.py --out DIR            # one CUDA GPU, < 3 min on an H200
    python3 benchmarks/training_memory_gpu.py --smoke --out /tmp/t # rehearsal on the CPU, tiny sizes

Writes ``DIR/training_memory_gpu.json`` and ``DIR/training_memory_snapshot.pickle`` (a small
CUDA memory snapshot for the visualiser), plus ``DIR/MemoryViz.js`` when the installed torch
ships it.  Parts, in this order (each caught on error and recorded as {"error": ...}; the
record is rewritten after each part; a missing library gives {"skipped": reason}):

* ``moe`` — first, before anything else has run a matrix product: the MoE chapter's small
  model (fp32, Adam) at the notebook's sizes, its training-step peak measured *cold* (cuBLAS
  workspaces not yet allocated, as the notebook did on the H200) and *warm* (after
  ``vramlib.warm_up``), the persistent workspace bytes, and the generation peak;
* ``offload`` — FSDP2 ``fully_shard`` with a world size of 1 (a process group on localhost),
  bf16 compute (``MixedPrecisionPolicy``), with and without ``CPUOffloadPolicy``: GPU bytes at
  rest and at the step's peak, host bytes of parameters, gradients and Adam states;
* ``actoffload`` — ``torch.autograd.graph.save_on_cpu``: GPU peak of forward+backward and
  the bytes packed to the host (activations and the parameters autograd saves), bf16;
* ``fp8`` — torchao float8 training (tensorwise, dynamic scaling) against bf16, eager and
  ``torch.compile``: weights, optimizer states, saved activations, step peak, step time;
* ``snapshot`` — ``torch.cuda.memory._record_memory_history`` over two training steps of a
  small GPT, trimmed to this script's frames and dumped as a pickle (<= 5 MiB).
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import shutil
import socket
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib import pick_device, seed_everything, track_memory, warm_up  # noqa: E402
from vramlib.core.records import write_record  # noqa: E402
from vramlib.estimate.inference import kv_bytes  # noqa: E402
from vramlib.estimate.moe import moe_mlp_saved_bytes, moe_prefill_transient_bytes  # noqa: E402
from vramlib.measure.generate import KVCache, generate, prefill  # noqa: E402
from vramlib.measure.serving import moe_gpt  # noqa: E402
from vramlib.measure.stagemem import gpt_activation_bytes  # noqa: E402
from vramlib.models import GPT, GPTConfig  # noqa: E402

HERE = Path(__file__).resolve()
MiB = 2**20
START = time.perf_counter()
BUDGET_S = 140          # compiled FP8 variants start only before this (about 3 min in all)


def _clean(dev):
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _alloc(dev):
    return torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# --------------------------------------------------------------------------- moe
def moe(dev, small):
    """The moe-memory notebook's cells 10, 16 and 18, unchanged sizes, cold then warm."""
    cfg = GPTConfig(vocab_size=256, block_size=128, n_layer=2, n_head=4, d_model=128)
    E, k, B, s = 8, 2, 16, 64
    N, f = B * s, cfg.mlp_ratio * cfg.d_model
    seed_everything(0)
    m = moe_gpt(cfg, E, k).to(dev)
    x = torch.randint(0, cfg.vocab_size, (B, s), device=dev)
    allocated_before_any_matmul = _alloc(dev)
    with torch.no_grad():
        m(x)                                   # cell 10: the forward thread's workspace
    with track_memory(dev) as rf:
        loss = m(x, x)[1]
    saved = rf.end
    del loss, m
    _clean(dev)
    P = None

    def train():
        nonlocal P
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
        del tm, opt
        _clean(dev)
        return rt.peak

    base0 = _alloc(dev)
    cold = train()
    after_cold = _alloc(dev)            # what the first training step left allocated for good
    warm_up(dev)
    warm = train()
    act = gpt_activation_bytes(cfg, B, s, 4)
    pred_saved = (act["total"] - cfg.n_layer * 8 * N * cfg.d_model * 4
                  + cfg.n_layer * moe_mlp_saved_bytes(N, cfg.d_model, f, E, k, 4))
    transient = 2 * N * cfg.vocab_size * 4
    pred_train = 12 * P + max(pred_saved + transient, 4 * P + act["head"] + transient)
    seed_everything(0)
    prompt, new = 32, 32
    with track_memory(dev) as rg:
        im = moe_gpt(cfg, E, k).to(dev).eval()
        generate(im, x[:, :prompt], new)
    W = sum(p.numel() for p in im.parameters()) * 4
    kv = kv_bytes(cfg.n_layer, B, prompt + new, cfg.n_kv_head * cfg.head_dim, 4)
    cache = KVCache.allocate(im, B, prompt + new)
    with track_memory(dev) as rp:
        prefill(im, x[:, :prompt], cache)
    n_max = max(max(b.mlp.last_counts) for b in im.blocks)
    pred_tr = moe_prefill_transient_bytes(B, prompt, cfg.d_model, f, E, k, n_max, 4)
    del im, cache
    _clean(dev)
    return {"model": repr(cfg), "experts": E, "top_k": k, "batch": B, "seq": s, "n_params": P,
            "allocated_before_any_matmul": allocated_before_any_matmul,
            "saved": {"measured": saved, "predicted": pred_saved},
            "train": {"predicted": pred_train, "cold": cold, "warm": warm,
                      "left_allocated_by_cold_step": after_cold - base0},
            "generate": {"measured": rg.peak, "predicted": W + kv + pred_tr, "weights": W,
                         "kv": kv, "prefill_transient": {"measured": rp.peak,
                                                         "predicted": pred_tr}}}


# --------------------------------------------------------------------------- FSDP2 offload
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def _bytes_by_device(tensors):
    out: dict[str, int] = {}
    seen = set()
    for t in tensors:
        if t is None:
            continue
        t = _local(t)
        key = (t.device.type, t.untyped_storage().data_ptr())
        if key in seen and key[1] != 0:
            continue
        seen.add(key)
        out[t.device.type] = out.get(t.device.type, 0) + t.untyped_storage().nbytes()
    return out


def _fsdp_variant(cfg, B, s, dev, offload: bool) -> dict:
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
    seed_everything(0)
    _clean(dev)
    base = _alloc(dev)
    model = GPT(cfg).to(dev)
    P = model.num_params()
    kw = {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)}
    if offload:
        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=True)
    for blk in model.blocks:
        fully_shard(blk, **kw)
    fully_shard(model, **kw)
    _clean(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (B, s), device=dev)
    times, peaks = [], []
    for step in range(3):
        t0 = time.perf_counter()
        with track_memory(dev) as rep:
            loss = model(x, x)[1]
            loss.backward()
            del loss
            opt.step()
            opt.zero_grad(set_to_none=False)
        _sync(dev)
        times.append(time.perf_counter() - t0)
        peaks.append(rep.peak + rep.baseline - base)
    params = _bytes_by_device(model.parameters())
    grads = _bytes_by_device(p.grad for p in model.parameters())
    states = _bytes_by_device(v for st in opt.state.values() for v in st.values()
                              if isinstance(v, torch.Tensor))
    pinned = all(_local(p).is_pinned() for p in model.parameters()) if offload else None
    rest = _alloc(dev) - base
    del model, opt, x
    _clean(dev)
    return {"n_params": P, "gpu_at_rest": rest, "gpu_step_peaks": peaks, "step_seconds": times,
            "params": params, "grads": grads, "optimizer": states, "host_pinned": pinned}


def offload(dev, small):
    import torch.distributed as dist
    try:
        from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard  # noqa: F401
    except ImportError as e:
        return {"skipped": f"FSDP2 not available: {e}"}
    cfg = GPTConfig(vocab_size=256 if small else 32000, block_size=64 if small else 1024,
                    n_layer=2 if small else 12, n_head=4 if small else 16,
                    d_model=128 if small else 1024)
    B, s = (2, 64) if small else (8, 1024)
    backend = "cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo"
    kw = ({"device_id": torch.device("cuda", torch.cuda.current_device())}
          if dev.type == "cuda" else {})
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}",
                            rank=0, world_size=1, **kw)
    out = {"model": repr(cfg), "batch": B, "seq": s, "world_size": 1, "backend": backend,
           "mixed_precision": "param bf16, reduce fp32", "optimizer": "AdamW (fp32 states)"}
    try:
        out["fsdp"] = _fsdp_variant(cfg, B, s, dev, False)
        if dev.type == "cuda":
            out["fsdp_cpu_offload"] = _fsdp_variant(cfg, B, s, dev, True)
        else:
            out["fsdp_cpu_offload"] = {"skipped": "CPUOffloadPolicy needs a CUDA device"}
    finally:
        dist.destroy_process_group()
    return out


# --------------------------------------------------------------------------- save_on_cpu
def _act_variant(model, x, dev, on_cpu: bool) -> dict:
    from torch.autograd.graph import save_on_cpu
    pids = {p.untyped_storage().data_ptr() for p in model.parameters()}
    packed = {"activations": 0, "parameters": 0, "count": 0}
    _clean(dev)
    t0 = time.perf_counter()
    with track_memory(dev) as rep:
        if on_cpu:
            ctx = save_on_cpu(pin_memory=dev.type == "cuda")
            inner = ctx.pack_hook

            def pack(t):
                kind = "parameters" if t.untyped_storage().data_ptr() in pids else "activations"
                packed[kind] += t.numel() * t.element_size()
                packed["count"] += 1
                return inner(t)
            ctx.pack_hook = pack
            with ctx:
                loss = model(x, x)[1]
        else:
            loss = model(x, x)[1]
        _sync(dev)
        after_forward = _alloc(dev) - rep.baseline
        loss.backward()
        del loss
    _sync(dev)
    secs = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return {"peak": rep.peak, "after_forward": after_forward, "seconds": secs,
            "host_packed": packed if on_cpu else None}


def actoffload(dev, small):
    cfg = GPTConfig(vocab_size=256 if small else 32000, block_size=64 if small else 2048,
                    n_layer=2 if small else 12, n_head=4 if small else 16,
                    d_model=128 if small else 1024)
    B, s = (2, 64) if small else (4, 2048)
    dt = torch.bfloat16
    seed_everything(0)
    model = GPT(cfg).to(dev, dt)
    x = torch.randint(0, cfg.vocab_size, (B, s), device=dev)
    _act_variant(model, x, dev, False)                       # warm-up
    res = {"model": repr(cfg), "batch": B, "seq": s, "dtype": "bf16",
           "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
           "activation_bytes_formula": gpt_activation_bytes(cfg, B, s, 2)}
    res["gpu"] = _act_variant(model, x, dev, False)
    res["save_on_cpu"] = _act_variant(model, x, dev, True)
    del model
    _clean(dev)
    return res


# --------------------------------------------------------------------------- fp8
def _fp8_variant(cfg, B, s, dev, fp8: bool, compiled: bool) -> dict:
    seed_everything(0)
    _clean(dev)
    base = _alloc(dev)
    model = GPT(cfg).to(dev, torch.bfloat16)
    if fp8:
        from torchao.float8 import convert_to_float8_training
        convert_to_float8_training(model, module_filter_fn=lambda m, fqn: fqn != "lm_head")
    n_fp8 = sum(type(m).__name__ == "Float8Linear" for m in model.modules())
    weights = _alloc(dev) - base
    fwd = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (B, s), device=dev)
    times, peaks, saved = [], [], []
    for step in range(4):
        t0 = time.perf_counter()
        with track_memory(dev) as rep:
            loss = fwd(x, x)[1]
            _sync(dev)
            saved.append(_alloc(dev) - rep.baseline)
            loss.backward()
            del loss
            opt.step()
            opt.zero_grad(set_to_none=True)
        _sync(dev)
        times.append(time.perf_counter() - t0)
        peaks.append(rep.peak + rep.baseline - base)
    states = sum(v.nbytes for st in opt.state.values() for v in st.values()
                 if isinstance(v, torch.Tensor))
    del model, fwd, opt, x
    _clean(dev)
    return {"float8_linears": n_fp8, "weights": weights, "optimizer": states,
            "saved_after_forward": saved, "step_peaks": peaks, "step_seconds": times}


def fp8(dev, small):
    if dev.type != "cuda":
        return {"skipped": "float8 matrix products need a CUDA GPU (compute capability >= 8.9)"}
    if torch.cuda.get_device_capability(dev) < (8, 9):
        return {"skipped": "float8 matrix products need compute capability >= 8.9"}
    try:
        import torchao
    except ImportError as e:
        return {"skipped": f"torchao not installed: {e}"}
    cfg = GPTConfig(vocab_size=32768, block_size=2048, n_layer=4, n_head=16, d_model=2048)
    B, s = 4, 2048
    out = {"model": repr(cfg), "batch": B, "seq": s, "torchao": torchao.__version__,
           "recipe": "tensorwise dynamic scaling (torchao default); lm_head kept in bf16",
           "weights_dtype": "bf16", "optimizer": "AdamW (bf16 states, like the weights)"}
    for name, f8, comp in [("bf16_eager", False, False), ("fp8_eager", True, False),
                           ("bf16_compiled", False, True), ("fp8_compiled", True, True)]:
        t0 = time.perf_counter()
        if comp and t0 - START > BUDGET_S:
            out[name] = {"error": f"skipped: past the script's {BUDGET_S} s budget"}
            continue
        try:
            out[name] = _fp8_variant(cfg, B, s, dev, f8, comp)
        except Exception as e:  # noqa: BLE001 - recorded; the other variants still run
            out[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        print(f"  fp8/{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return out


# --------------------------------------------------------------------------- snapshot
def _trim(snap: dict, keep: tuple[str, ...]) -> dict:
    for tr in snap.get("device_traces", []):
        for ev in tr:
            ev["frames"] = [f for f in ev.get("frames", []) if f["filename"].endswith(keep)][:4]
    for seg in snap.get("segments", []):
        for blk in seg.get("blocks", []):
            blk["frames"] = [f for f in blk.get("frames", []) if f["filename"].endswith(keep)][:4]
    return snap


def snapshot(dev, small, out_dir: Path):
    viz = Path(torch.__file__).parent / "utils" / "viz" / "MemoryViz.js"
    res = {"torch_ships_MemoryViz_js": viz.exists()}
    if viz.exists():
        shutil.copy(viz, out_dir / "MemoryViz.js")
    if dev.type != "cuda":
        res["skipped"] = "the memory snapshot records the CUDA caching allocator"
        return res
    cfg = GPTConfig(vocab_size=2048, block_size=256, n_layer=2, n_head=4, d_model=256)
    seed_everything(0)
    _clean(dev)
    torch.cuda.memory._record_memory_history(max_entries=3000, stacks="python")
    try:
        model = GPT(cfg).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.randint(0, cfg.vocab_size, (8, 256), device=dev)
        for _ in range(2):
            loss = model(x, x)[1]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        del loss
        _sync(dev)
        snap = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    snap = _trim(snap, ("training_memory_gpu.py", "nanogpt.py", "optimizer.py", "adam.py"))
    path = out_dir / "training_memory_snapshot.pickle"
    data = pickle.dumps(snap)
    if len(data) > 5 * MiB:                        # keep the newest events only
        tr = snap["device_traces"]
        snap["device_traces"] = [t[-1000:] for t in tr]
        data = pickle.dumps(snap)
    path.write_bytes(data)
    res.update({"model": repr(cfg), "batch": 8, "seq": 256, "steps": 2,
                "bytes": len(data), "events": sum(len(t) for t in snap["device_traces"])})
    del model, opt, x
    _clean(dev)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (rehearsal)")
    ap.add_argument("--only", default="", help="comma-separated parts to run")
    a = ap.parse_args(argv)
    dev = pick_device("cpu" if a.smoke else None)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "training_memory_gpu.json"
    results: dict = {"seconds": {}}
    config = {"smoke": a.smoke, "device": str(dev)}
    parts = {"moe": lambda: moe(dev, a.smoke), "offload": lambda: offload(dev, a.smoke),
             "actoffload": lambda: actoffload(dev, a.smoke), "fp8": lambda: fp8(dev, a.smoke),
             "snapshot": lambda: snapshot(dev, a.smoke, out_dir)}
    for name, fn in parts.items():
        if a.only and name not in a.only.split(","):
            continue
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as e:  # noqa: BLE001 - recorded; the other parts still run
            results[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        results["seconds"][name] = round(time.perf_counter() - t0, 1)
        r = results[name]
        status = "error" if "error" in r else "skipped" if "skipped" in r else "ok"
        print(f"{name}: {status} in {results['seconds'][name]} s", flush=True)
        write_record(path, results, config, dev)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Part III reference benchmarks: matmul throughput per dtype, bf16 vs a plain torch.matmul
loop, an M sweep (int8 layouts, fp8, bf16), 2:4 sparsity vs dense, copy bandwidth,
quantize/dequantize overhead and weight-only int8/int4 — on whatever device it finds.

    python benchmarks/hardware_gpu.py                      # -> benchmarks/results/hardware_<gpu>.json
    python benchmarks/hardware_gpu.py --out benchmarks/results/hardware_h100.json
    python benchmarks/hardware_gpu.py --small              # quick CPU rehearsal (sizes of the CPU chapters)

Every benchmark runs inside its own try/except; a failure is recorded under "errors" and the
rest go on.  Unsupported data types are recorded with ok=false and a note.  The JSON carries
its provenance (device name, driver, torch and CUDA versions, date) and the full config.
Defined in Part III, "Measure your own device" and "When low bits are not faster".
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
import traceback
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from vramlib.core.records import records_dir, write_record  # noqa: E402
from vramlib.hardware import bench as B  # noqa: E402
from vramlib.core.device import pick_device  # noqa: E402
from vramlib.hardware.gpus import match_gpu  # noqa: E402

warnings.filterwarnings("ignore")

def config(small: bool) -> dict:
    if small:
        return dict(size=256, kinds=["fp32", "bf16", "int8", "int8-rowmajor-b", "int8-dynamic-linear", "tf32", "fp16", "fp8", "sparse24-fp16"],
                    plain_sizes=[256], plain_iters=20, m_sweep_nk=256, m_sweep=[32, 64, 256],
                    m_sweep_kinds=["bf16", "int8", "int8-rowmajor-b", "fp8"], sparse_shapes=[[256, 256, 256]],
                    copy_bytes=32 * 2**20, quant_shapes=[[32, 256, 256], [256, 256, 256]],
                    wo_nk=[256, 256], wo_ms=[1, 4, 16, 64, 256], group=128,
                    gpt=dict(n_layer=2, d_model=128, n_head=4, block_size=64, vocab_size=256),
                    mem_runs=[[1, 4], [8, 64]],
                    timing=dict(warmup=1, repeats=3, min_seconds=0.01))
    return dict(size=8192, kinds=["fp32", "tf32", "fp16", "bf16", "int8", "int8-rowmajor-b", "fp8", "sparse24-fp16", "sparse24-bf16"],
                plain_sizes=[4096, 8192], plain_iters=50, m_sweep_nk=8192, m_sweep=[32, 64, 128, 256, 512, 1024, 2048, 4096, 8192],
                m_sweep_kinds=["bf16", "int8", "int8-rowmajor-b", "fp8"],
                sparse_shapes=[[64, 4096, 4096], [1024, 4096, 4096], [8192, 8192, 8192], [16384, 16384, 16384], [2048, 1024, 1024]],
                copy_bytes=2**30, quant_shapes=[[32, 8192, 8192], [8192, 8192, 8192]],
                wo_nk=[8192, 8192], wo_ms=[1, 2, 4, 8, 16, 32, 64, 256, 1024, 2048], group=128,
                gpt=dict(n_layer=8, d_model=2048, n_head=16, block_size=1024, vocab_size=32000),
                mem_runs=[[1, 16], [4, 512]],
                timing=dict(warmup=3, repeats=7, min_seconds=0.05))


def with_roofline(r: B.BenchResult, gpu) -> dict:
    d = r.to_dict()
    d["intensity"] = B.result_intensity(r)
    d["pct_of_peak"] = B.percent_of_peak(r, gpu)
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/hardware_<gpu>.json)")
    ap.add_argument("--small", action="store_true", help="small sizes (CPU rehearsal)")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: vramlib.pick_device())")
    args = ap.parse_args(argv)
    dev = pick_device(args.device)
    small = args.small or dev.type != "cuda"
    cfg = config(small)
    if dev.type == "cpu":
        torch.set_num_threads(1)  # per-core figures, as in the chapters
    cfg["torch_threads"] = torch.get_num_threads()
    t_start = time.perf_counter()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    gpu = match_gpu(name) if dev.type == "cuda" else None
    out = {"catalog_gpu": gpu.key if gpu else None,
           "cpu_features": B.cpu_features(), "errors": []}
    timing = cfg["timing"]

    def step(name, fn):
        t0 = time.perf_counter()
        try:
            out[name] = fn()
        except Exception as e:  # record and go on: one failing benchmark must not lose the rest
            out[name] = None
            out["errors"].append({"benchmark": name, "error": f"{type(e).__name__}: {e}"[:500],
                                  "traceback": traceback.format_exc()[-1500:]})
        finally:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        print(f"{name:<16} {time.perf_counter() - t0:6.1f} s", flush=True)

    def first_matmul_workspace():
        # Must run first, in a fresh process: the first matrix product of a thread makes cuBLAS
        # allocate its workspace through torch's caching allocator, and it stays for good.
        from vramlib.measure.tracker import track_memory
        with track_memory(dev) as rep:
            a = torch.randn(64, 64, device=dev)
            c = a @ a
            del a, c
        return {"end_bytes": rep.end, "peak_bytes": rep.peak, "reserved_peak": rep.reserved_peak, "method": rep.method,
                "note": "bytes still allocated after one 64x64 matmul and freeing its tensors: the library's workspace"}
    step("first_matmul_workspace", first_matmul_workspace)
    s = cfg["size"]
    step("matmul", lambda: [with_roofline(B.bench_matmul(k, s, device=dev, **timing), gpu) for k in cfg["kinds"]])

    def vs_plain():
        rows = []
        for n in cfg["plain_sizes"]:
            r = B.bench_matmul("bf16", n, device=dev, **timing)
            plain = max(B.plain_matmul_rate(n, torch.bfloat16, dev, iters=cfg["plain_iters"]) for _ in range(3))
            rows.append({"size": n, "bench_flops": r.rate, "plain_loop_flops": plain, "ratio": r.rate / plain})
        return rows
    step("bench_vs_plain", vs_plain)
    nk = cfg["m_sweep_nk"]
    step("m_sweep", lambda: [with_roofline(B.bench_matmul(k, m, nk, nk, device=dev, **timing), gpu)
                             for k in cfg["m_sweep_kinds"] for m in cfg["m_sweep"]])

    def sparse():
        rows = []
        for m, n, k in cfg["sparse_shapes"]:
            for kind in ("fp16", "sparse24-fp16"):
                rows.append(with_roofline(B.bench_matmul(kind, m, n, k, device=dev, **timing), gpu))
        return rows
    step("sparse", sparse)
    def bandwidth():
        r = B.copy_bandwidth(cfg["copy_bytes"], dev, **timing)
        return r.to_dict() | {"pct_of_peak": B.percent_of_peak(r, gpu)}
    step("bandwidth", bandwidth)
    step("quant_overhead", lambda: [{"shape": sh, "parts": {k: v.to_dict() for k, v in B.quant_overhead(*sh, device=dev, **timing).items()}}
                                    for sh in cfg["quant_shapes"]])
    n, k = cfg["wo_nk"]
    step("weight_only", lambda: B.weight_only_matmul(cfg["wo_ms"], n, k, dev, group=cfg["group"], **timing))

    def runtime_mem():
        from vramlib.measure.runtime import runtime_memory
        from vramlib.models import GPTConfig
        gcfg = GPTConfig(**cfg["gpt"])
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        variants = ["float", "int8 fused", "int8 unfused"] + (["int8 dynamic (CPU)"] if dev.type == "cpu" else [])
        rows = []
        for batch, seq in cfg["mem_runs"]:
            for v in variants:
                try:
                    rows.append(runtime_memory(gcfg, batch, v, dev, dtype=dtype, seq=seq))
                except Exception as e:  # e.g. no fused int8 kernel for this device
                    rows.append({"variant": v, "batch": batch, "tokens": batch * seq, "error": f"{type(e).__name__}: {e}"[:300]})
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
        return rows
    step("runtime_memory", runtime_mem)
    out["total_seconds"] = time.perf_counter() - t_start

    path = args.out
    if path is None:
        tag = gpu.key if gpu else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
        path = records_dir() / f"hardware_{tag}.json"

    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o
    write_record(path, clean(out), cfg, dev)
    print(f"wrote {path} in {out['total_seconds']:.0f} s; {len(out['errors'])} error(s)")
    for r in out.get("matmul") or []:
        pct = f"{r['pct_of_peak']:.0f}% of peak" if r.get("pct_of_peak") else ""
        print(f"  {r['kind']:<20} {'%.4g GFLOP/s' % (r['rate'] / 1e9) if r['ok'] else r['note']} {pct}")
    for r in out.get("bench_vs_plain") or []:
        print(f"  bf16 bench / plain torch.matmul loop at {r['size']}: {r['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

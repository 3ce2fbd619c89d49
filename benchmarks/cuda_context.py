"""Measure the memory a CUDA process takes outside torch's allocator: the CUDA context.

The estimator (Part I, "Anatomy of memory") reports the CUDA context as its own line.  This
script measures it on a real GPU: device memory in use (``torch.cuda.mem_get_info``) minus
what torch's caching allocator has reserved, (1) right after CUDA initialises, (2) after the
first matrix products (cuBLAS/cuBLASLt kernels loaded), and (3) after the first
scaled-dot-product attention (more kernels).  Run it in a fresh process on an otherwise
idle GPU; it writes JSON with provenance.

    python benchmarks/cuda_context.py --out benchmarks/results/cuda_context_<gpu>.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vramlib.core.records import records_dir, write_record  # noqa: E402


def outside_allocator() -> int:
    free, total = torch.cuda.mem_get_info()
    return (total - free) - torch.cuda.memory_reserved()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure (the CUDA context exists only on a GPU)")
        return 0
    torch.cuda.init()
    torch.empty(1, device="cuda")
    stages = {"after CUDA initialisation": outside_allocator()}
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    b = torch.zeros(1024, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    (a @ a + torch.nn.functional.linear(a, a, b)).float().sum().backward()
    torch.cuda.synchronize()
    stages["after first matrix products (cuBLAS, cuBLASLt)"] = outside_allocator()
    q = torch.randn(4, 8, 512, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
    torch.cuda.synchronize()
    stages["after first fused attention (SDPA)"] = outside_allocator()
    out = {
        "bytes_outside_allocator": stages,
        "note": "device memory in use minus torch's reserved memory, in one fresh process",
    }
    for k, v in stages.items():
        print(f"{k:48s} {v / 2**20:8.1f} MiB")
    name = torch.cuda.get_device_name().split()[1].lower() if args.out is None else None
    path = write_record(args.out or records_dir() / f"cuda_context_{name}.json", out, {}, "cuda")
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

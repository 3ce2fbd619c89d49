"""One FSDP2 (ZeRO-3) training step of the book's GPT on 2–4 GPUs, per-rank memory as JSON.

    torchrun --standalone --nproc_per_node 2 benchmarks/multigpu_fsdp.py --out benchmarks/results/multigpu_fsdp.json
    torchrun --standalone --nproc_per_node 2 benchmarks/multigpu_fsdp.py --cpu --out /tmp/fsdp_cpu.json   # rehearsal (gloo)

Each rank runs vramlib.measure.distributed.fsdp_rank_step (the code of Part I, "Beyond one GPU"): its
parameter, gradient and Adam-state shards are read exactly from the local shards; the step's
peak comes from the CUDA allocator (on the CPU storage accounting cannot see inside FSDP's
sharded tensors).  Rank 0 writes the JSON with provenance and the ZeRO-3 prediction 16P/N.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib.measure.distributed import fsdp_rank_step  # noqa: E402
from vramlib.models import GPTConfig  # noqa: E402
from vramlib.core.records import write_record  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/multigpu_fsdp.json")
    ap.add_argument("--cpu", action="store_true", help="gloo on the CPU instead of NCCL on GPUs")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    args = ap.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        sys.exit("run me with torchrun, e.g. torchrun --standalone --nproc_per_node 2 benchmarks/multigpu_fsdp.py")
    local = int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() and not args.cpu
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
        dist.init_process_group("nccl", device_id=dev)
        cfg = GPTConfig(vocab_size=50304, block_size=args.seq, n_layer=12, n_head=12, d_model=768)
        batch, seq = args.batch, args.seq
    else:
        dev = torch.device("cpu")
        dist.init_process_group("gloo")
        cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=4, d_model=128)
        batch, seq = 4, 64
    try:
        row = fsdp_rank_step(cfg, batch, seq, dev)
        rows = [None] * dist.get_world_size()
        dist.all_gather_object(rows, row)
        if dist.get_rank() == 0:
            P, N = row["n_params"], dist.get_world_size()
            results = {"model": f"book GPT {cfg}, batch {batch} x {seq} per rank", "world_size": N,
                       "n_params": P, "backend": dist.get_backend(), "ranks": rows,
                       "predicted": {"param_bytes": 4 * P / N, "grad_bytes": 4 * P / N, "optimizer_bytes": 8 * P / N}}
            path = write_record(args.out, results, {"cfg": asdict(cfg), "batch": batch, "seq": seq}, dev)
            for r in rows:
                print(r)
            print(f"wrote {path}")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

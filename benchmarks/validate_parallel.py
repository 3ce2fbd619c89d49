"""Validate the estimator's per-GPU memory under data parallelism (Part I, "Beyond one GPU").

Superseded by ``benchmarks/validate_parallel2.py`` (every 2-GPU layout, per rank, with a true
single-GPU control).  Kept to re-report ``estimator_parallel.json``, whose figures are not
trustworthy: its ``single`` mode fell into the ``fully_shard`` branch (it ran FSDP2), the
backward thread's cuBLAS workspaces were not warmed up before the baseline, and no garbage
collection separated the cases.

Run with ``torchrun --nproc_per_node N benchmarks/validate_parallel.py --out PATH`` on a
machine with N GPUs.  For a Hugging Face Llama-style model built from a config (random
weights), it measures the per-GPU peak (``torch.cuda.max_memory_allocated`` on rank 0) of
the second training step under DDP and under FSDP2 (``fully_shard`` per decoder layer and on
the root; ZeRO-3), in bf16 with AdamW, and writes estimate vs measurement with provenance.
``--from-json PATH`` re-reports a recorded run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib.core.records import provenance_line, read_record, records_dir, write_record  # noqa: E402
from vramlib.estimate import estimate_training  # noqa: E402

CFG = {"model_type": "llama", "hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16,
       "num_key_value_heads": 4, "intermediate_size": 2816, "vocab_size": 32000, "max_position_embeddings": 4096,
       "tie_word_embeddings": False, "_name": "llama-0.3b"}
CASES = [dict(mode="single", batch=4, seq_len=1024), dict(mode="ddp", batch=4, seq_len=1024),
         dict(mode="fsdp", batch=4, seq_len=1024), dict(mode="ddp", batch=8, seq_len=512),
         dict(mode="fsdp", batch=8, seq_len=2048), dict(mode="single", batch=8, seq_len=2048)]


def estimate(case, world):
    if case["mode"] == "single":
        return estimate_training(CFG, case["batch"], case["seq_len"], weights_dtype="bf16").peak
    zero = 0 if case["mode"] == "ddp" else 3
    return estimate_training(CFG, case["batch"], case["seq_len"], num_gpus=world, zero=zero, weights_dtype="bf16").peak


def run_case(case, rank, world, dev):
    import transformers
    import torch.distributed as dist

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    cfg = transformers.AutoConfig.for_model(**{k: v for k, v in CFG.items() if not k.startswith("_")})
    with torch.device(dev):
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").to(torch.bfloat16)
    model.train()
    if case["mode"] == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[dev.index])
    else:
        from torch.distributed.fsdp import fully_shard
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.randint(0, CFG["vocab_size"], (case["batch"], case["seq_len"]), device=dev)

    phases = {}

    def mark(name):
        torch.cuda.synchronize(dev)
        phases[name] = {"peak": torch.cuda.max_memory_allocated(dev) - base, "end": torch.cuda.memory_allocated(dev) - base}
        torch.cuda.reset_peak_memory_stats(dev)

    def step():
        loss = model(ids, labels=ids, use_cache=False).loss
        mark("forward")
        loss.backward()
        del loss
        mark("backward")
        opt.step()
        mark("step")
        opt.zero_grad(set_to_none=True)

    step()
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    step()
    peak = max(v["peak"] for v in phases.values())
    t = torch.tensor([peak], device=dev, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    del model, opt
    return int(t.item()), phases


def report(rows):
    print(f"{'case':<34} {'measured':>11} {'estimate':>11} {'err':>7}")
    for r in rows:
        if "peak" in r:
            r["estimate"] = estimate(r, r["world"])
            r["err"] = (r["estimate"] - r["peak"]) / r["peak"]
            ph = " ".join(f"{k}:{v['peak'] / 2**20:.0f}/{v['end'] / 2**20:.0f}" for k, v in r.get("phases", {}).items())
            print(f"{r['mode']} ×{r['world']} B={r['batch']} s={r['seq_len']:<14} {r['peak'] / 2**20:>9.1f}Mi "
                  f"{r['estimate'] / 2**20:>9.1f}Mi {100 * r['err']:>+6.1f}%   peak/end MiB {ph}")
        else:
            print(r["mode"], r.get("skipped"))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(records_dir() / "estimator_parallel.json"))
    ap.add_argument("--from-json", default=None)
    a = ap.parse_args(argv)
    if a.from_json:
        rec = read_record(a.from_json)
        print("recorded run:", provenance_line(rec))
        report(rec.results["cases"])
        return 0
    import torch.distributed as dist
    import transformers  # noqa: F401  (recorded in the provenance: vramlib.core.records)

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(dev)
    torch.ones(8, 8, device=dev) @ torch.ones(8, 8, device=dev)   # cuBLAS workspace before the baseline
    rows = []
    for case in CASES:
        row = dict(case, world=world)
        try:
            row["peak"], row["phases"] = run_case(case, rank, world, dev)
        except Exception as e:  # noqa: BLE001
            row["skipped"] = f"{type(e).__name__}: {e}"[:300]
        rows.append(row)
    if rank == 0:
        report(rows)
        write_record(a.out, {"cases": rows}, {}, dev, world_size=world, config=CFG)
        print("wrote", a.out)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

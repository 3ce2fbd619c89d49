"""Per-GPU activations of a transformer block stack under TP, TP + sequence parallelism and
context parallelism on 2 GPUs, against vramlib's ``parallel_activation_bytes``.

    torchrun --standalone --nproc-per-node 2 benchmarks/sp_cp_2gpu.py --out DIR
    torchrun --standalone --nproc-per-node 2 benchmarks/sp_cp_2gpu.py --smoke --out /tmp/spcp

Each rank runs five cases on the same weights and the same input (batch 1, bf16 on a GPU):

* ``single``: the whole stack on one GPU (every rank runs it alone, no communication);
* ``tp``: Megatron tensor parallelism (q/k/v and the MLP's first linear column-wise, the
  output projections row-wise; the residual stream and LayerNorms replicated);
* ``tp_sp``: the same plus sequence parallelism (``SequenceParallel`` on both LayerNorms,
  the residual stream sharded along the sequence), the plan of torch's TP tutorial;
* ``cp``: context parallelism (``torch.distributed.tensor.experimental.context_parallel``:
  each rank keeps ``seq / 2`` tokens, ring attention through ``sdpa``);

For each: ``saved`` = allocated bytes after the forward (loss = ``out.sum()``, which saves
nothing) minus the bytes before it — what the blocks keep for backward — and ``peak`` = the
forward + backward's peak above the same base; the loss is compared with the single run.
A second forward under ``saved_tensors_hooks`` lists the storages autograd saved, by shape
(``saved_by_autograd``: which tensors are sharded and which are whole on a rank).
The blocks are the book GPT's (``vramlib.models.nanogpt.Block``: pre-LN, GELU MLP of 4d, fused
sdpa, no dropout) with q, k and v as three linears so that a column-wise split keeps heads
whole.  A case that fails (e.g. ring attention on a CPU) is recorded with its error.
Rank 0 writes ``DIR/sp_cp_2gpu.json`` through ``write_record``.  About 30 s on 2 H100s.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib.core.records import write_record  # noqa: E402
from vramlib.estimate.offload import parallel_activation_bytes  # noqa: E402


class Attention(nn.Module):
    """The book GPT's causal self-attention with q, k, v as separate linears."""

    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.hd = d // n_head
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, s, _ = x.shape           # local shapes: heads inferred (-1) so a TP shard works
        q, k, v = (m(x).view(B, s, -1, self.hd).transpose(1, 2) for m in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, s, -1))


class MLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 4 * d, bias=False)
        self.proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.attn, self.mlp = Attention(d, n_head), MLP(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def tp_plan(sp: bool) -> dict:
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput,
                                                   RowwiseParallel, SequenceParallel)
    out = Shard(1) if sp else Replicate()
    plan = {"attn.q": ColwiseParallel(), "attn.k": ColwiseParallel(),
            "attn.v": ColwiseParallel(), "attn.proj": RowwiseParallel(output_layouts=out),
            "mlp.fc": ColwiseParallel(), "mlp.proj": RowwiseParallel(output_layouts=out)}
    if sp:
        gather = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))
        plan.update({"ln1": SequenceParallel(), "ln2": SequenceParallel(),
                     "attn": gather, "mlp": copy.deepcopy(gather)})
    return plan


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def allocated(dev: torch.device) -> int:
    return torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0


def step(stack: nn.Module, x: torch.Tensor, dev: torch.device) -> dict:
    """Forward (loss = sum, which saves nothing), then backward: saved and peak bytes."""
    gc.collect()
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    base = allocated(dev)
    t0 = time.perf_counter()
    loss = stack(x).sum(dtype=torch.float32)
    sync(dev)
    saved = allocated(dev) - base
    loss.backward()
    sync(dev)
    peak = (torch.cuda.max_memory_allocated(dev) - base) if dev.type == "cuda" else 0
    return {"saved": saved, "peak": peak, "loss_local": float(loss.detach()),
            "seconds": time.perf_counter() - t0, "local_tokens": int(x.shape[1])}


def saved_by_autograd(stack: nn.Module, x: torch.Tensor) -> dict:
    """A second forward under ``saved_tensors_hooks``: the unique storages autograd saves
    (parameters left out), their bytes and shapes (local shards for DTensors)."""
    params = set()
    for p in stack.parameters():
        params.add(getattr(p, "_local_tensor", p).untyped_storage().data_ptr())
    seen: dict[int, tuple[int, str]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        loc = getattr(t, "_local_tensor", t)
        st = loc.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = (st.nbytes(), "x".join(map(str, loc.shape)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = stack(x).sum(dtype=torch.float32)
    del loss
    shapes: dict[str, list[int]] = {}
    for nbytes, shape in seen.values():
        shapes.setdefault(shape, [0, 0])
        shapes[shape][0] += 1
        shapes[shape][1] += nbytes
    top = sorted(shapes.items(), key=lambda kv: -kv[1][1])[:12]
    return {"bytes": sum(b for b, _ in seen.values()), "storages": len(seen),
            "by_shape": {k: {"count": c, "bytes": b} for k, (c, b) in top}}


def measure(stack: nn.Module, x: torch.Tensor, dev: torch.device) -> dict:
    """The step, then (separately, so a failure costs only the detail) what autograd saved."""
    row = step(stack, x, dev)
    try:
        row["saved_by_autograd"] = saved_by_autograd(stack, x)
    except Exception as e:  # noqa: BLE001 - a detail; the measurement stands
        row["saved_by_autograd"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return row


def run_case(name: str, ref: nn.Module, x_full: torch.Tensor, dev: torch.device, mesh) -> dict:
    """One case on a fresh copy of the reference stack; the loss summed over the ranks where
    the output is sharded."""
    from torch.distributed.tensor.parallel import parallelize_module
    stack = copy.deepcopy(ref)
    rank, world = dist.get_rank(), dist.get_world_size()
    x = x_full.clone()
    if name in ("tp", "tp_sp"):
        for blk in stack:
            parallelize_module(blk, mesh, tp_plan(name == "tp_sp"))
        if name == "tp_sp":
            x = x.chunk(world, dim=1)[rank].contiguous()
        row = measure(stack, x, dev)
    elif name == "cp":
        from torch.distributed.tensor.experimental import context_parallel
        with context_parallel(mesh, buffers=[x], buffer_seq_dims=[1], no_restore_buffers={x}):
            row = measure(stack, x, dev)
    else:
        row = measure(stack, x, dev)
    loss = torch.tensor([row["loss_local"]], dtype=torch.float64, device=dev)
    if name in ("tp_sp", "cp"):
        dist.all_reduce(loss)
    row["loss"] = float(loss)
    del stack, x
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def predictions(B: int, s: int, d: int, L: int, world: int, b: int) -> dict:
    return {"single": parallel_activation_bytes(B, s, d, L, bytes_per_elem=b),
            "tp": parallel_activation_bytes(B, s, d, L, tp=world, bytes_per_elem=b),
            "tp_sp": parallel_activation_bytes(B, s, d, L, tp=world, sp=True, bytes_per_elem=b),
            "cp": parallel_activation_bytes(B, s, d, L, cp=world, bytes_per_elem=b)}


def setup(smoke: bool) -> tuple[torch.device, bool]:
    local = int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() and not smoke
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
        dist.init_process_group("nccl", device_id=dev)
    else:
        dev = torch.device("cpu")
        dist.init_process_group("gloo")
    return dev, use_cuda


def summarize(rows: dict, pred: dict) -> None:
    single = rows["single"].get("loss")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:7s} skipped: {r['error'][:80]}")
            continue
        ratio = r["saved"] / pred[name] if pred[name] else float("nan")
        dl = abs(r["loss"] - single) / max(abs(single), 1e-12) if single is not None else 0.0
        print(f"{name:7s} saved {r['saved'] / 2**20:9.1f} MiB  predicted "
              f"{pred[name] / 2**20:9.1f} MiB  ratio {ratio:5.3f}  "
              f"peak {r['peak'] / 2**20:9.1f} MiB  loss rel diff {dl:.1e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, gloo on the CPU")
    args = ap.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        sys.exit("run me with torchrun: torchrun --standalone --nproc-per-node 2 "
                 "benchmarks/sp_cp_2gpu.py --out DIR")
    dev, use_cuda = setup(args.smoke)
    rank, world = dist.get_rank(), dist.get_world_size()
    L, d, heads, B, s = (4, 1024, 16, 1, 8192) if use_cuda else (2, 64, 4, 1, 32)
    dtype = torch.bfloat16 if use_cuda else torch.float32
    b = torch.empty((), dtype=dtype).element_size()
    try:
        from torch.distributed.device_mesh import init_device_mesh
        mesh = init_device_mesh(dev.type, (world,))
        torch.manual_seed(0)
        ref = nn.Sequential(*(Block(d, heads) for _ in range(L))).to(dev, dtype)
        x_full = torch.randn(B, s, d, device=dev, dtype=dtype, )
        run_case("single", ref, x_full, dev, mesh)     # warm-up: cuBLAS workspace, sdpa kernels
        rows = {}
        for name in ("single", "tp", "tp_sp", "cp"):
            try:
                rows[name] = run_case(name, ref, x_full, dev, mesh)
            except Exception as e:  # noqa: BLE001 - recorded, the other cases go on
                rows[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            dist.barrier()
        gathered = [None] * world
        dist.all_gather_object(gathered, rows)
        if rank == 0:
            pred = predictions(B, s, d, L, world, b)
            config = {"num_layers": L, "hidden": d, "heads": heads, "batch": B, "seq": s,
                      "dtype": str(dtype), "world_size": world, "smoke": bool(args.smoke),
                      "torch": torch.__version__}
            results = {"ranks": gathered, "predicted_saved": pred, "bytes_per_elem": b,
                       "model": "book GPT blocks (q, k, v split), no embeddings or head"}
            path = write_record(Path(args.out) / "sp_cp_2gpu.json", results, config,
                                dev if use_cuda else None)
            summarize(rows, pred)
            if not use_cuda:
                print("(CPU rehearsal: no allocator statistics, bytes read 0)")
            print(f"wrote {path}")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

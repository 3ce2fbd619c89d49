"""A live FSDP (ZeRO-3) demo: train the book's GPT sharded over processes, measure each rank.

``run_fsdp_demo(world_size=2)`` spawns ``world_size`` CPU processes that talk through the
``gloo`` backend, wraps every block and then the whole model with
``torch.distributed.fsdp.fully_shard`` (FSDP2), runs forward, backward and one Adam step, and
returns, per rank, the bytes of its parameter shards, gradient shards and optimizer state
(read from the local shards, exactly), and the peak of the step measured with
:func:`vramlib.track_memory` inside the rank.  ``python -m vramlib.measure.distributed`` runs it.

On GPUs the same code runs under ``torchrun`` with NCCL: ``benchmarks/multigpu_fsdp.py``.
Defined in Part I, "Beyond one GPU".
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict

import torch
import torch.distributed as dist

from .tracker import track_memory
from ..models.nanogpt import GPT, GPTConfig

__all__ = ["run_fsdp_demo", "fsdp_rank_step", "local_bytes"]


def local_bytes(tensors) -> int:
    """Bytes of the local shards of (possibly DTensor) tensors; ``None`` entries skipped.

    Defined in Part I, "Beyond one GPU"."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        loc = t.to_local() if hasattr(t, "to_local") else t
        total += loc.numel() * loc.element_size()
    return total


def fsdp_rank_step(cfg: GPTConfig, batch: int, seq: int, device: torch.device, shard: bool = True) -> dict:
    """Inside an initialised process group: build the GPT, shard it with FSDP2 (unless
    ``shard=False``), run one training step and return this rank's bytes.

    Defined in Part I, "Beyond one GPU"."""
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    n_params = model.num_params()
    if shard:
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
    g = torch.Generator().manual_seed(1000 + dist.get_rank())
    x = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g).to(device)
    params = local_bytes(model.parameters())
    with track_memory(device) as rep:
        loss = model(x, x)[1]
        loss.backward()
        del loss
        opt.step()
    state = [v for s in opt.state.values() for k, v in s.items() if k != "step" and isinstance(v, torch.Tensor)]
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "n_params": n_params,
            "param_bytes": params, "grad_bytes": local_bytes(p.grad for p in model.parameters()),
            "optimizer_bytes": local_bytes(state), "step_peak": rep.peak, "step_end": rep.end,
            "method": rep.method}


def _worker(rank: int, world: int, port: int, cfg: dict, batch: int, seq: int, queue) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        queue.put(fsdp_rank_step(GPTConfig(**cfg), batch, seq, torch.device("cpu")))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_fsdp_demo(world_size: int = 2, cfg: GPTConfig | None = None, batch: int = 4,
                  seq: int = 64) -> list[dict]:
    """Spawn ``world_size`` CPU processes (gloo), run one FSDP training step of the book's GPT
    and return one dict per rank (sorted by rank); see :func:`fsdp_rank_step`.

    Defined in Part I, "Beyond one GPU"."""
    import torch.multiprocessing as mp

    if isinstance(world_size, bool) or not isinstance(world_size, int) or not 1 <= world_size <= 8:
        raise ValueError(f"world_size must be an integer from 1 to 8, got {world_size!r}")
    cfg = cfg or GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=4, d_model=128)
    if seq > cfg.block_size:
        raise ValueError(f"seq ({seq}) exceeds the model's block_size ({cfg.block_size})")
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(world_size, _free_port(), asdict(cfg), batch, seq, queue),
                       nprocs=world_size, join=True, start_method="spawn")
    out = [queue.get() for _ in range(world_size)]
    return sorted(out, key=lambda r: r["rank"])


if __name__ == "__main__":  # pragma: no cover
    for row in run_fsdp_demo():
        print(row)

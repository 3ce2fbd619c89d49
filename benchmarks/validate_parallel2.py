"""Per-GPU peaks of one Llama-style model under every 2-GPU layout (Part I, "Beyond one GPU").

Run on a machine with two GPUs (about 2 minutes on 2 × H100/H200)::

    torchrun --standalone --nproc-per-node 2 benchmarks/validate_parallel2.py --out DIR

and it writes ``DIR/parallel_layouts_gpu.json`` (records writer, provenance filled in).  A
Llama-style model is built from a config (random init, bf16 weights, SDPA attention) and
trained with ``torch.optim.AdamW`` (its default ``foreach`` implementation) for three steps;
the *third* step is measured (steady state: DDP rebuilds its buckets at the start of the
second step, FSDP2 and the pipeline schedule initialise lazily in the first), and the
second step's phases are kept beside it.  Every rank records, per phase (forward, backward, optimizer
step), ``torch.cuda.max_memory_allocated`` minus what was allocated before the model was
built (``peak``) and what is allocated at the phase's end (``end``), plus the bytes of its
parameters, gradients and optimizer states read from the local shards.  The layouts:

* ``single`` — the control: the same model and micro-batch on rank 0 alone (rank 1 waits);
* ``ddp`` — ``DistributedDataParallel`` (torch defaults: 25 MiB buckets, no bucket views);
* ``fsdp`` — FSDP2 full shard: ``fully_shard`` on every decoder layer and on the root;
* ``hsdp-1x2`` / ``hsdp-2x1`` — FSDP2 on a 2-D mesh (replicate, shard) = (1, 2) and (2, 1).
  On two GPUs (1, 2) is full sharding over both GPUs written as HSDP, and (2, 1) is pure
  replication (shard groups of one GPU, gradients all-reduced over the replicate dim);
* ``tp`` — tensor parallel: DTensor ``parallelize_module`` with ``ColwiseParallel`` on
  q/k/v/gate/up and ``RowwiseParallel`` on o/down projections; embeddings, norms and the
  head replicated; both ranks see the same micro-batch;
* ``pp-gpipe`` / ``pp-1f1b`` — ``torch.distributed.pipelining``: two stages (embeddings +
  first half of the layers, second half + norm + head), ``MICRO`` micro-batches per step;
  the schedule's forward and backward are one phase (``schedule``);
* ``fsdp-offload`` — FSDP2 full shard with ``CPUOffloadPolicy()`` (pinned host memory,
  optimizer step on the CPU).  Host bytes are measured two ways: exactly, as the bytes of
  the CPU storages of parameter shards, gradients and optimizer states (``host``), and as
  the process's VmRSS growth from before the model was built (``rss_delta``), plus the
  CUDA host allocator's statistics where torch exposes them.

``--smoke --device cpu`` rehearses every layout but offload on the CPU with gloo at a tiny
size (``torchrun --nproc-per-node 2 benchmarks/validate_parallel2.py --smoke --device cpu``);
there the peaks come from exact storage accounting (``vramlib.measure.StorageTracker``),
not from CUDA.  ``--from-json PATH`` prints a recorded run.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib.core.records import provenance_line, read_record, write_record  # noqa: E402
from vramlib.measure.distributed import local_bytes  # noqa: E402

CFG = {"model_type": "llama", "hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16,
       "num_key_value_heads": 4, "intermediate_size": 2816, "vocab_size": 32000,
       "max_position_embeddings": 4096, "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
       "_name": "llama-0.3b"}
SMOKE_CFG = dict(CFG, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=512, _name="llama-smoke")
#: (layout, micro-batch per rank, sequence length); PP takes MICRO micro-batches per step.
#: Eight layouts at one shape, five of them again at other token counts (the same formulas
#: checked elsewhere), and CPU offload last (a crash there loses nothing else).
CASES = [("single", 4, 1024), ("ddp", 4, 1024), ("fsdp", 4, 1024), ("hsdp-1x2", 4, 1024),
         ("hsdp-2x1", 4, 1024), ("tp", 4, 1024), ("pp-gpipe", 2, 1024), ("pp-1f1b", 2, 1024),
         ("single", 2, 512), ("ddp", 8, 1024), ("fsdp", 8, 1024), ("tp", 8, 1024), ("pp-1f1b", 4, 1024),
         ("fsdp-offload", 4, 1024)]
MICRO = 4
RECORD = "parallel_layouts_gpu.json"


class Skip(Exception):
    """A layout that cannot run here: recorded with the reason."""


class Meter:
    """Phase peaks: CUDA allocator statistics, or exact storage accounting on the CPU."""

    def __init__(self, dev: torch.device):
        self.dev, self.phases, self.tracker = dev, {}, None
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            self.base = torch.cuda.memory_allocated(dev)
        else:
            from vramlib.measure.tracker import StorageTracker
            self.tracker = StorageTracker(device_type="cpu")
            self.tracker.__enter__()
            self.base = 0

    def now(self) -> int:
        if self.tracker is not None:
            return self.tracker.current
        return torch.cuda.memory_allocated(self.dev) - self.base

    def reset(self) -> None:
        if self.tracker is not None:
            self.tracker.peak = self.tracker.current
        else:
            torch.cuda.synchronize(self.dev)
            torch.cuda.reset_peak_memory_stats(self.dev)

    def mark(self, name: str) -> None:
        if self.tracker is not None:
            peak = self.tracker.peak
        else:
            torch.cuda.synchronize(self.dev)
            peak = torch.cuda.max_memory_allocated(self.dev) - self.base
        self.phases[name] = {"peak": int(peak), "end": int(self.now())}
        self.reset()

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.__exit__(None, None, None)
            self.tracker = None


def state_tensors(opts) -> list:
    return [v for o in opts for s in o.state.values() for k, v in s.items()
            if k != "step" and isinstance(v, torch.Tensor)]


def rss_bytes() -> int:
    """The process's resident set (``VmRSS`` of /proc/self/status), in bytes; 0 elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def build_model(cfg: dict, dev: torch.device):
    import transformers
    conf = transformers.AutoConfig.for_model(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    torch.manual_seed(0)
    with torch.device(dev):
        model = transformers.AutoModelForCausalLM.from_config(conf, dtype=torch.bfloat16,
                                                              attn_implementation="sdpa")
    model.train()
    return model


class PipeStage(torch.nn.Module):
    """One pipeline stage of a HF Llama: [embeddings] + layers[lo:hi] + [norm + head]."""

    def __init__(self, model, lo: int, hi: int, first: bool, last: bool):
        super().__init__()
        self.embed = model.model.embed_tokens if first else None
        self.layers = torch.nn.ModuleList(list(model.model.layers)[lo:hi])
        self.rotary = model.model.rotary_emb
        self.norm = model.model.norm if last else None
        self.head = model.lm_head if last else None

    def forward(self, x):
        h = self.embed(x) if self.embed is not None else x
        pos = torch.arange(h.shape[1], device=h.device)[None]
        pe = self.rotary(h, pos)
        for layer in self.layers:
            out = layer(h, attention_mask=None, position_ids=pos, position_embeddings=pe)
            h = out[0] if isinstance(out, tuple) else out
        if self.head is not None:
            h = self.head(self.norm(h))
        return h


def tp_plan() -> dict:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel
    col = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
    row = ("self_attn.o_proj", "mlp.down_proj")
    return {**{n: ColwiseParallel() for n in col}, **{n: RowwiseParallel() for n in row}}


def wrap(layout: str, model, dev: torch.device, world: int):
    """Apply ``layout`` to ``model``; returns (module to train, optimizers, info)."""
    from torch.distributed.device_mesh import init_device_mesh
    info = {}
    if layout == "single":
        return model, [torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)], info
    if layout == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        info["bucket_cap_mb"] = 25
    elif layout in ("fsdp", "fsdp-offload") or layout.startswith("hsdp"):
        from torch.distributed.fsdp import fully_shard
        kw = {}
        if layout.startswith("hsdp"):
            r, s = (int(v) for v in layout.split("-")[1].split("x"))
            kw["mesh"] = init_device_mesh(dev.type, (r, s), mesh_dim_names=("replicate", "shard"))
            info["mesh"] = [r, s]
        if layout == "fsdp-offload":
            if dev.type != "cuda":
                raise Skip("CPUOffloadPolicy needs CUDA devices")
            from torch.distributed.fsdp import CPUOffloadPolicy
            kw["offload_policy"] = CPUOffloadPolicy()
        for layer in model.model.layers:
            fully_shard(layer, **kw)
        fully_shard(model, **kw)
    elif layout == "tp":
        from torch.distributed.tensor.parallel import parallelize_module
        mesh = init_device_mesh(dev.type, (world,))
        for layer in model.model.layers:
            parallelize_module(layer, mesh, tp_plan())
        return model, _tp_optimizers(model, info), info
    return model, [torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)], info


def _tp_optimizers(model, info: dict) -> list:
    """AdamW over the DTensor shards and AdamW over the replicated plain tensors: torch's
    foreach kernels refuse a list that mixes the two kinds."""
    params = list(model.parameters())
    dt = [p for p in params if hasattr(p, "to_local")]
    pl = [p for p in params if not hasattr(p, "to_local")]
    info["tp_optimizers"] = 2
    return [torch.optim.AdamW(dt, lr=1e-4, weight_decay=0.01),
            torch.optim.AdamW(pl, lr=1e-4, weight_decay=0.01)]


def train_steps(layout: str, model, opts, ids, meter: Meter, rank: int, world: int) -> dict:
    """Three steps; the phases of the third (steady state: DDP rebuilds its buckets at the
    start of the second) go to ``meter``, the second's are returned as ``phases_step2`` with
    the local gradient bytes (and their device) after the third backward."""
    seen, kw = {}, {}
    sched = None
    if layout.startswith("pp"):
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
        stage = PipelineStage(model, rank, world, ids.device)
        cls = ScheduleGPipe if layout == "pp-gpipe" else Schedule1F1B

        def loss_fn(logits, target):
            from transformers.loss.loss_utils import ForCausalLMLoss
            return ForCausalLMLoss(logits, target, logits.shape[-1])
        sched = cls(stage, n_microbatches=MICRO, loss_fn=loss_fn)
        import inspect
        if "return_outputs" in inspect.signature(sched.step).parameters:
            kw = {"return_outputs": False}     # a training loop does not keep the merged logits
        seen["return_outputs"] = kw.get("return_outputs", True)
    for i in range(3):
        if i >= 1:
            if i == 2:
                seen["phases_step2"] = {k: dict(v) for k, v in meter.phases.items()}
            meter.reset()
        if sched is not None:
            if rank == 0:
                sched.step(ids, **kw)
            else:
                sched.step(target=ids, losses=[], **kw)
            meter.mark("schedule")
        else:
            loss = model(ids, labels=ids, use_cache=False).loss
            meter.mark("forward")
            loss.backward()
            del loss
            meter.mark("backward")
        if i == 2:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            seen["grad_bytes"] = local_bytes(grads)
            seen["grad_devices"] = sorted({str((g.to_local() if hasattr(g, "to_local") else g).device.type)
                                           for g in grads})
            del grads                          # zero_grad below must free them
        for o in opts:
            o.step()
        meter.mark("step")
        for o in opts:
            o.zero_grad(set_to_none=True)
        meter.mark("zero_grad")
    return seen


def run_case(layout: str, batch: int, seq: int, cfg: dict, dev: torch.device, rank: int, world: int) -> dict:
    """Build, wrap, train three steps; returns this rank's row."""
    row = {"rank": rank}
    if layout == "single" and rank != 0:
        return {"rank": rank, "idle": True}
    gc.collect()
    rss0 = rss_bytes()
    meter = Meter(dev)
    row["allocated_before"] = int(torch.cuda.memory_allocated(dev)) if dev.type == "cuda" else 0
    try:
        model = build_model(cfg, dev)
        row["n_params"] = sum(p.numel() for p in model.parameters())
        if layout.startswith("pp"):
            half = cfg["num_hidden_layers"] // 2
            lo, hi = (0, half) if rank == 0 else (half, cfg["num_hidden_layers"])
            model = PipeStage(model, lo, hi, rank == 0, rank == world - 1)
            gc.collect()
            opts = [torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)]
            info = {"micro_batches": MICRO, "layers": [lo, hi]}
            gbatch = batch * MICRO
        else:
            model, opts, info = wrap(layout, model, dev, world)
            gbatch = batch
        row.update(info)
        row["weights_allocated"] = meter.now()
        row["local_param_bytes"] = local_bytes(model.parameters())
        g = torch.Generator().manual_seed(1000 + (0 if layout in ("tp",) or layout.startswith("pp") else rank))
        ids = torch.randint(0, cfg["vocab_size"], (gbatch, seq), generator=g).to(dev)
        t0 = time.perf_counter()
        row.update(train_steps(layout, model, opts, ids, meter, rank, world))
        row["seconds_three_steps"] = round(time.perf_counter() - t0, 3)
        row["phases"] = meter.phases
        row["peak"] = max(v["peak"] for v in meter.phases.values())
        row["optimizer_bytes"] = local_bytes(state_tensors(opts))
        row["grad_bytes_after_zero"] = local_bytes(p.grad for p in model.parameters())
        if layout == "fsdp-offload":
            row["host"] = host_bytes(model, opts)
            row["rss_delta"] = rss_bytes() - rss0
        if dev.type == "cuda":
            row["reserved_peak"] = torch.cuda.max_memory_reserved(dev)
        del model, opts, ids
    finally:
        meter.close()
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return row


def host_bytes(model, opts) -> dict:
    """Bytes on the host of parameters, optimizer states (exact, from the CPU storages) and
    the CUDA host allocator's statistics when available."""
    cpu = [p for p in model.parameters() if (p.to_local() if hasattr(p, "to_local") else p).device.type == "cpu"]
    out = {"params": local_bytes(cpu),
           "pinned_params": sum(1 for p in cpu if (p.to_local() if hasattr(p, "to_local") else p).is_pinned()),
           "n_params_on_cpu": len(cpu),
           "optimizer": local_bytes(t for t in state_tensors(opts) if
                                    (t.to_local() if hasattr(t, "to_local") else t).device.type == "cpu")}
    stats = getattr(torch.cuda, "host_memory_stats", None)
    if stats is not None:
        try:
            s = stats()
            out["host_allocator"] = {k: int(v) for k, v in s.items()
                                     if k.startswith(("allocated_bytes", "reserved_bytes")) and
                                     k.endswith((".current", ".peak"))}
        except Exception as e:  # noqa: BLE001
            out["host_allocator"] = f"unavailable: {type(e).__name__}"
    return out


#: Pre-registered targets: |predicted - measured| / measured per GPU.
TARGETS = {"control": 0.01, "layout": 0.05, "host": 0.05}


def predict(cases=None, cfg: dict | None = None, world: int = 2) -> list[dict]:
    """The estimator's per-rank peaks for every case (:func:`vramlib.estimate.parallel.estimate_layout`,
    bf16 weights, AdamW foreach on CUDA); PP also with the merged outputs torch returns when
    ``return_outputs`` is not available."""
    from vramlib.estimate.parallel import estimate_layout
    cfg = {k: v for k, v in (cfg or CFG).items() if not k.startswith("_")}
    rows = []
    for layout, batch, seq in cases or CASES:
        kw = dict(world=world, micro_batches=MICRO, weights_dtype="bf16")
        est = estimate_layout(cfg, layout, batch, seq, **kw)
        row = {"name": f"{layout}-b{batch}s{seq}", "layout": layout, "batch": batch, "seq_len": seq,
               "target": TARGETS["control" if layout == "single" else "layout"],
               "ranks": [{k: e[k] for k in ("rank", "peak", "phase", "components", "host") if k in e}
                         for e in est]}
        if layout.startswith("pp"):
            merged = estimate_layout(cfg, layout, batch, seq, return_outputs=True, **kw)
            for r, e in zip(row["ranks"], merged):
                r["peak_if_outputs_merged"] = e["peak"]
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> None:
    print(f"{'layout':<13} {'B':>2} {'seq':>5} " + " ".join(f"{'rank' + str(r) + ' MiB':>12}" for r in (0, 1)))
    for r in rows:
        per = r.get("ranks", [])
        cells = [f"{x['peak'] / 2**20:>12.1f}" if "peak" in x else f"{'-':>12}" for x in per]
        extra = f"  skipped: {r['skipped']}" if "skipped" in r else ""
        host = next((x.get("host") for x in per if x.get("host")), None)
        if host:
            extra += f"  host {(host['params'] + host['optimizer']) / 2**20:.1f} MiB"
        print(f"{r['layout']:<13} {r['batch']:>2} {r['seq_len']:>5} " + " ".join(cells) + extra)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--smoke", action="store_true", help="tiny model (CPU rehearsal)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--cases", default="", help="comma-separated layouts (default: all)")
    ap.add_argument("--smoke-shape", default="2x32", help="micro-batch x length under --smoke")
    ap.add_argument("--from-json", default=None)
    ap.add_argument("--predict", default=None, metavar="PATH",
                    help="write the estimator's pre-registered predictions to PATH (no GPU) and stop")
    a = ap.parse_args(argv)
    if a.predict:
        write_record(a.predict, {"cases": predict(), "targets": TARGETS, "micro_batches": MICRO},
                     {k: v for k, v in CFG.items()}, "cpu", world_size=2)
        print("wrote", a.predict)
        return 0
    if a.from_json:
        rec = read_record(a.from_json)
        print("recorded run:", provenance_line(rec))
        summary(rec.results["cases"])
        return 0
    import transformers  # noqa: F401  (its version goes into the provenance)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device (use --smoke --device cpu for the CPU rehearsal)")
        return 0
    backend = "nccl" if a.device == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=300))
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != 2:
        print(f"rank {rank}: this benchmark is written for 2 processes, got {world}")
    if a.device == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
        from vramlib.measure.tracker import warm_up
        warm_up(dev)        # cuBLAS/cuBLASLt workspaces of both threads, before any baseline
    else:
        dev = torch.device("cpu")
        torch.set_num_threads(1)
    cfg = SMOKE_CFG if a.smoke else CFG
    wanted = [c for c in a.cases.split(",") if c]
    rows = []
    out = Path(a.out) / RECORD
    cases = CASES[:8] + CASES[-1:] if a.smoke else CASES
    if not a.smoke and a.device == "cuda" and rank == 0:
        print("cases:", ", ".join(f"{c[0]} B={c[1]} s={c[2]}" for c in cases), flush=True)
    for layout, batch, seq in cases:
        if wanted and layout not in wanted:
            continue
        if a.smoke:
            batch, seq = (int(v) for v in a.smoke_shape.split("x"))
        row = {"name": f"{layout}-b{batch}s{seq}", "layout": layout, "batch": batch, "seq_len": seq,
               "world": world}
        if layout.startswith("pp"):
            row["micro_batches"] = MICRO
        try:
            mine = run_case(layout, batch, seq, cfg, dev, rank, world)
        except Skip as e:
            mine = {"rank": rank, "skipped": str(e)}
        except Exception as e:  # noqa: BLE001
            mine = {"rank": rank, "skipped": f"{type(e).__name__}: {e}"[:400]}
        gathered = [None] * world
        dist.all_gather_object(gathered, mine)
        row["ranks"] = gathered
        reasons = [x["skipped"] for x in gathered if "skipped" in x]
        if reasons:
            row["skipped"] = reasons[0]
        rows.append(row)
        if rank == 0:
            res = {"cases": rows, "micro_batches": MICRO, "smoke": a.smoke,
                   "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
            write_record(out, res, {k: v for k, v in cfg.items()}, dev if dev.type == "cuda" else None,
                         world_size=world)
        dist.barrier()
    if rank == 0:
        summary(rows)
        print("wrote", out, flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Why four Part I chapters' checks failed on an H200: the CUDA evidence, in one run.

    python benchmarks/part1_diagnose_gpu.py --out DIR            # GPU, about a minute
    python benchmarks/part1_diagnose_gpu.py --smoke --out /tmp/x   # CPU rehearsal, tiny sizes

Each section runs the experiment of one chapter at that chapter's full scale and records
what the chapter's hidden check needs to tell the possible causes apart:

* ``anatomy``: the two-iteration peaks with gradients zeroed in place and set to None,
  each run once on the allocator's cache as the previous run left it and once after
  ``torch.cuda.empty_cache()`` — does the first iteration's peak depend on the cache
  state (large-pool blocks that are not split)?
* ``pretraining``: the forward + backward peak at B = 1, s = 512 (``sdpa``) first cold,
  then after ``vramlib.warm_up`` — are the cuBLAS/cuBLASLt workspaces of the first
  products (one set per thread, the backward's autograd thread included) in the peak? —
  and the chapter's whole sweep after warm-up, against ``gpt_train_peak_bytes``.
* ``activations``: the tensors autograd saves under each checkpointing policy on the GPU
  (grouped by operator, dtype and device) against ``checkpoint_saved_bytes``, and the
  peaks against ``checkpoint_peak_bytes``.
* ``eager_backward``: where in the backward pass eager attention peaks on the GPU, from
  exact storage accounting next to the allocator's peak, at s = 2048 in fp32 and bf16.

Writes ``part1_diagnose_gpu.json`` with vramlib.core.records.write_record (provenance).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib import pick_device, seed_everything, track_memory, warm_up  # noqa: E402
from vramlib.core.records import write_record  # noqa: E402
from vramlib.measure.tracker import StorageTracker  # noqa: E402
from vramlib.models import GPT, GPTConfig  # noqa: E402


def _clean(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def anatomy(dev: torch.device, full: bool) -> dict:
    """Anatomy of memory: iteration peaks with set_to_none False/True, cache cold or not."""
    cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=8 if full else 2, n_head=4,
                    d_model=512 if full else 128)
    batch = 16 if full else 4
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), device=dev)

    def peaks(set_to_none: bool, empty: bool, exact: bool = False) -> list[int]:
        if empty:
            _clean(dev)
        seed_everything(0)
        m = GPT(cfg).to(dev)
        o = torch.optim.Adam(m.parameters(), lr=1e-3, foreach=False)
        live, out = 0, []
        for _ in (1, 2):
            tracker = StorageTracker(dev.type) if exact else track_memory(dev)
            with tracker as r:
                loss = m(x, x)[1]; loss.backward(); del loss
                o.step(); o.zero_grad(set_to_none=set_to_none)
            peak, end = (r.peak, r.current) if exact else (r.peak, r.end)
            out.append(live + peak)
            live += end
        return out

    res: dict = {}
    # the chapter's order first: on the cache as the earlier cells leave it
    seed_everything(0)
    m0 = GPT(cfg).to(dev)
    loss = m0(x, x)[1]; loss.backward(); del loss, m0
    for empty in (False, True):
        res[f"empty_cache={empty}"] = {str(k): peaks(k, empty) for k in (False, True)}
    res["exact_storage"] = {str(k): peaks(k, False, exact=True) for k in (False, True)}
    with torch.device("meta"):
        mm = GPT(cfg)
    res["P"] = mm.num_params()
    res["n_tensors"] = len(list(mm.parameters()))
    return res


def before_you_start(dev: torch.device, full: bool) -> dict:
    """Chapter 0: weights, gradients and Adam states, allocator and exact storage."""
    cfg = GPTConfig(vocab_size=256, block_size=256 if full else 64,
                    n_layer=6 if full else 2, n_head=4, d_model=512 if full else 128)
    batch = 32 if full else 8
    res: dict = {}
    for exact in (False, True):
        seed_everything(0)
        meter = (lambda: StorageTracker(dev.type)) if exact else (lambda: track_memory(dev))
        with meter() as rw:
            model = GPT(cfg).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
        x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), device=dev)
        warm_up(dev)
        with meter() as rb:
            loss = model(x, x)[1]; loss.backward(); del loss
        with meter() as rs:
            opt.step()
        end = (lambda r: r.current) if exact else (lambda r: r.end)
        first = opt.state[next(model.parameters())]
        g = opt.param_groups[0]
        res["exact" if exact else "allocator"] = {
            "weights": end(rw), "gradients": end(rb), "optimizer states": end(rs),
            "fwd_bwd_peak": rb.peak, "step_device": first["step"].device.type,
            "fused": g.get("fused"), "capturable": g.get("capturable")}
        del model, opt, x
        _clean(dev)
    with torch.device("meta"):
        m = GPT(cfg)
    res["P"] = m.num_params()
    res["n_tensors"] = len(list(m.parameters()))
    return res


def pretraining(dev: torch.device, full: bool) -> dict:
    """Pretraining: the B = 1 sdpa point cold and after warm_up, then the whole sweep."""
    from vramlib.measure.stagemem import gpt_train_peak_bytes
    cfg = GPTConfig(vocab_size=256, block_size=1024 if full else 128,
                    n_layer=8 if full else 2, n_head=4, d_model=512 if full else 128)
    seq_b = 512 if full else 64

    def peak(attn: str, b: int, sq: int) -> tuple[int, int]:
        c = dataclasses.replace(cfg, attn=attn)
        seed_everything(0)
        model = GPT(c).to(dev)
        x = torch.randint(0, c.vocab_size, (b, sq), device=dev)
        with track_memory(dev) as rep:
            loss = model(x, x)[1]; loss.backward(); del loss
        return rep.peak, model.num_params()

    res: dict = {}
    cold, P = peak("sdpa", 1, seq_b)
    res["cold_sdpa_B1"] = cold
    res["allocated_after_cold"] = (torch.cuda.memory_allocated(dev)
                                   if dev.type == "cuda" else 0)
    before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    warm_up(dev)
    res["warm_up_adds"] = (torch.cuda.memory_allocated(dev) - before
                           if dev.type == "cuda" else 0)
    res["warm_sdpa_B1"] = peak("sdpa", 1, seq_b)[0]
    res["P"] = P
    rows = []
    batches = [1, 2, 4, 8, 16, 32] if full else [1, 2, 4]
    seqs = [128, 256, 512, 1024] if full else [16, 32, 64]
    pts = [(b, seq_b) for b in batches] + [(8 if full else 4, q) for q in seqs]
    for attn in ("sdpa", "eager"):
        for b, q in pts:
            meas = peak(attn, b, q)[0]
            pred = gpt_train_peak_bytes(dataclasses.replace(cfg, attn=attn), b, q,
                                        n_params=P)
            rows.append({"attn": attn, "B": b, "s": q, "measured": meas,
                         "predicted": pred, "error": (pred - meas) / meas})
    res["sweep_after_warm_up"] = rows
    return res


def _saved_by_group(model, fn) -> tuple[int, dict]:
    """Unique saved storages (not parameters), grouped by (grad_fn, dtype, device)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set = set()
    groups: dict = defaultdict(lambda: [0, 0])

    def pack(t):
        st = t.untyped_storage()
        key = (st.data_ptr(), t.device.type)
        if st.data_ptr() not in params and key not in seen:
            seen.add(key)
            name = type(t.grad_fn).__name__ if t.grad_fn else "input"
            g = groups[f"{name} {t.dtype} {t.device.type} {tuple(t.shape)}"]
            g[0] += 1
            g[1] += st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(v[1] for v in groups.values()), {k: v for k, v in groups.items()}


def activations(dev: torch.device, full: bool) -> dict:
    """Activations in depth: saved tensors and peaks per checkpointing policy."""
    from vramlib.measure.checkpointing import (checkpoint_peak_bytes,
                                               checkpoint_saved_bytes, gpt_forward)
    from vramlib.measure.stagemem import gpt_activation_bytes, list_saved_tensors
    ccfg = GPTConfig(vocab_size=256, block_size=1024 if full else 128,
                     n_layer=12 if full else 4, n_head=4, d_model=768 if full else 128)
    Bc, sc = 8, 1024 if full else 128
    seed_everything(0)
    model = GPT(ccfg).to(dev)
    x = torch.randint(0, ccfg.vocab_size, (Bc, sc), device=dev)
    head = gpt_activation_bytes(ccfg, Bc, sc)["head"]
    warm_up(dev)
    res: dict = {}
    for policy in ("none", "full", "selective"):
        book = sum(r["bytes"] for r in list_saved_tensors(
            model, lambda: gpt_forward(model, x, x, policy)) if r["kind"] == "activation")
        total, groups = _saved_by_group(model, lambda: gpt_forward(model, x, x, policy))
        model.zero_grad(set_to_none=True)
        with track_memory(dev) as rep:
            loss = gpt_forward(model, x, x, policy)[1]; loss.backward(); del loss
        model.zero_grad(set_to_none=True)
        res[policy] = {"saved_list_saved_tensors": book, "saved_by_device": total,
                       "pred_saved": checkpoint_saved_bytes(ccfg, Bc, sc, policy) + head,
                       "peak": rep.peak,
                       "pred_peak": checkpoint_peak_bytes(ccfg, Bc, sc, policy),
                       "groups": groups}
    return res


def eager_backward(dev: torch.device, full: bool) -> dict:
    """Where eager attention's backward peaks: tracker timeline next to the allocator."""
    base = dict(vocab_size=256, block_size=4096 if full else 256, n_layer=2,
                n_head=16 if full else 4, d_model=1024 if full else 128, attn="eager")
    batch, s = (4, 2048) if full else (8, 128)
    out: dict = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        seed_everything(0)
        model = GPT(GPTConfig(**base)).to(device=dev, dtype=dt)
        x = torch.randint(0, base["vocab_size"], (batch, s), device=dev)
        loss = model(x, x)[1]; loss.backward(); del loss      # warm-up
        model.zero_grad(set_to_none=True)
        with track_memory(dev, timeline=True) as fwd:
            loss = model(x, x)[1]
        with track_memory(dev, timeline=True) as bwd:
            loss.backward(); del loss
        tl = bwd.timeline
        i = max(range(len(tl)), key=lambda j: tl[j][1]) if tl else 0
        unit = batch * base["n_head"] * s * s * dt.itemsize
        out[name] = {"unit_bytes": unit, "fwd_end": fwd.end,
                     "allocator_bwd_peak": bwd.peak,
                     "tracker_bwd_peak": tl[i][1] if tl else None,
                     "tracker_peak_op": tl[i][2] if tl else None,
                     "ops_before_peak": [t[2] for t in tl[max(0, i - 8): i + 1]]}
        del model
        _clean(dev)
    return out


# pretraining first: its "cold" point must be the process's first matrix product
SECTIONS = {"pretraining": pretraining, "before_you_start": before_you_start,
            "anatomy": anatomy,
            "activations": activations, "eager_backward": eager_backward}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for part1_diagnose_gpu.json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU rehearsal)")
    args = ap.parse_args(argv)
    dev = pick_device()
    full = dev.type == "cuda" and not args.smoke
    if dev.type != "cuda":
        print("no CUDA device: running the CPU rehearsal at tiny sizes", flush=True)
    results: dict = {}
    for name, fn in SECTIONS.items():
        t0 = time.perf_counter()
        try:
            results[name] = fn(dev, full)
        except Exception as exc:          # one failed section must not lose the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"{name}: {results[name]['seconds']} s", flush=True)
        _clean(dev)
    an, pr = results["anatomy"], results["pretraining"]
    if "error" not in an:
        print("anatomy peaks:", {k: v for k, v in an.items() if k.startswith("empty")})
    if "error" not in pr:
        print(f"pretraining B=1 sdpa: cold {pr['cold_sdpa_B1']:,} B, after warm_up "
              f"{pr['warm_sdpa_B1']:,} B; worst sweep error "
              f"{max(abs(r['error']) for r in pr['sweep_after_warm_up']):.3%}")
    for p, v in results["activations"].items():
        if isinstance(v, dict):
            print(f"activations {p}: saved {v['saved_list_saved_tensors']:,} B vs "
                  f"predicted {v['pred_saved']:,} B")
    path = write_record(Path(args.out) / "part1_diagnose_gpu.json", results,
                        {"full": full, "smoke": args.smoke}, dev)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

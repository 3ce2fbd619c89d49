"""Which tensors the estimator lacks in the recipes it misses: the allocator's own trace of
one steady-state step, replayed to its peak (Part I, "The calculator", "Will it fit?").

    python3 benchmarks/recipes_diagnose_gpu.py --out DIR            # GPU, under 3 minutes
    python3 benchmarks/recipes_diagnose_gpu.py --smoke --out /tmp/x   # CPU rehearsal

For each case of ``benchmarks/validate_recipes.py`` that the estimator missed (quantized
generation with torchao and bitsandbytes, QLoRA without checkpointing, Gemma-2, the
Mixtral-style generation, the Qwen-MoE-style model it cannot describe yet) the script builds
the model exactly as that script does, runs the warm-up step, then runs the second step
under ``torch.cuda.memory._record_memory_history`` (Python stacks).  The trace of that
step is replayed (``alloc`` adds a block, ``free_requested`` removes it: the moments the
allocator's ``allocated_bytes`` counter moves) to the step's peak, and the record keeps:

* the peak from the replay next to ``max_memory_allocated`` (they must agree);
* the largest blocks alive at the peak, each with its size and the innermost frames;
* the bytes alive at the peak grouped by the first frame outside ``torch`` (the library
  line that asked for them), and by block size;
* per phase (training: forward, backward, optimizer step), the allocated bytes and peak;
* what the weights are (module and weight classes, dtypes, bytes), the ``lm_head`` included;
* for generation, the peak at half the batch too (what scales with the batch).

Writes ``recipes_diagnose_gpu.json`` through ``vramlib.core.records.write_record``.  A case
whose library is missing is recorded as skipped with the reason; without CUDA (``--smoke``)
the cases run at tiny sizes and only the structure is recorded.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import validate_recipes as vr  # noqa: E402

#: The missed cases, most informative first (both splits: the report says which were seen).
DIAGNOSE = ["r15", "r16", "r13", "h04", "r04", "r12", "h10", "r11", "h11", "h12", "h15", "h16",
            "h13", "r14"]
TOP = 40          # largest blocks kept per case
FRAMES = 12       # innermost frames kept per block


def _short(fn: str) -> str:
    for key in ("site-packages/", "dist-packages/", "vramlib/"):
        if key in fn:
            return fn.split(key, 1)[1]
    return fn.rsplit("/", 3)[-1] if "/" in fn else fn


def _frames(entry: dict) -> list[str]:
    return [f"{_short(f.get('filename', '?'))}:{f.get('line', 0)} {f.get('name', '?')}"
            for f in (entry.get("frames") or [])][:FRAMES]


def _site(frames: list[str]) -> str:
    """The first frame that is not torch's own (the library line that asked)."""
    for f in frames:
        if not f.startswith(("torch/", "contextlib", "<")):
            return f
    return frames[0] if frames else "(no Python frame: autograd engine or C++)"


def replay(trace: list[dict]) -> dict:
    """Replay one device's trace: the peak of the running sum and the blocks alive there."""
    cur, peak, at, uf_peak = 0, 0, -1, 0
    alive: dict[int, int] = {}
    unknown_freed = 0
    for i, e in enumerate(trace):
        a = e.get("action")
        if a == "alloc":
            cur += e["size"]
            alive[e["addr"]] = i
        elif a == "free_requested":
            cur -= e["size"]
            if alive.pop(e["addr"], None) is None:
                unknown_freed += e["size"]
        if cur > peak:
            peak, at, uf_peak = cur, i, unknown_freed
    alive = {}
    for e in trace[:at + 1]:
        a = e.get("action")
        if a == "alloc":
            alive[e["addr"]] = e
        elif a == "free_requested":
            alive.pop(e["addr"], None)
    blocks = sorted(alive.values(), key=lambda e: -e["size"])
    by_site: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_size: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for e in blocks:
        s = by_site[_site(_frames(e))]
        s[0] += e["size"]
        s[1] += 1
        z = by_size[e["size"]]
        z[0] += e["size"]
        z[1] += 1
    return dict(trace_entries=len(trace), peak_index=at, peak_delta=peak,
                freed_preexisting_before_peak=uf_peak,
                unknown_freed_total=unknown_freed,
                alive_at_peak=len(blocks), alive_bytes_at_peak=sum(e["size"] for e in blocks),
                top=[dict(size=e["size"], frames=_frames(e)) for e in blocks[:TOP]],
                by_site=sorted(([k, v[0], v[1]] for k, v in by_site.items()), key=lambda r: -r[1])[:30],
                by_size=sorted(([k, v[0], v[1]] for k, v in by_size.items()), key=lambda r: -r[1])[:20])


def weights_summary(m) -> dict:
    """Module class, weight class and dtype → count and bytes; the lm_head spelled out."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for mod in m.modules():
        for name, p in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            if p is None:
                continue
            try:
                nbytes = _subclass_bytes(p)
            except Exception:  # noqa: BLE001 - a subclass we cannot size
                nbytes = -1
            key = f"{type(mod).__name__}.{name} {type(p).__name__} {p.dtype}"
            g = groups[key]
            g[0] += 1
            g[1] += nbytes
    head = getattr(m, "lm_head", None) or getattr(getattr(m, "base_model", None), "lm_head", None)
    emb = m.get_input_embeddings() if hasattr(m, "get_input_embeddings") else None
    info = dict(groups=sorted(([k, v[0], v[1]] for k, v in groups.items()), key=lambda r: -r[2]))
    if head is not None:
        w = getattr(head, "weight", None)
        info["lm_head"] = dict(module=type(head).__name__, weight=type(w).__name__,
                               dtype=str(getattr(w, "dtype", None)),
                               tied=bool(emb is not None and w is getattr(emb, "weight", None)))
    return info


def _subclass_bytes(t) -> int:
    """Bytes of a tensor subclass (torchao) from its inner plain tensors."""
    import torch
    if type(t) in (torch.Tensor, torch.nn.Parameter):
        return t.numel() * t.element_size()
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(_subclass_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def phases(m, opt, c: dict, device: str) -> dict:
    """A training step with the allocated bytes and the peak after each phase."""
    import torch
    cu = torch.cuda if device == "cuda" else None
    ids = torch.randint(1, c["hf_config"]["vocab_size"], (c["batch"], c["length"]), device=device)
    out = {}

    def mark(k):
        if cu:
            cu.synchronize()
            out[k] = dict(allocated=cu.memory_allocated(), peak=cu.max_memory_allocated())
            cu.reset_peak_memory_stats()
    mark("start")
    loss = m(input_ids=ids, labels=ids, use_cache=False).loss
    mark("forward")
    loss.backward()
    del loss
    mark("backward")
    opt.step()
    mark("step")
    opt.zero_grad(set_to_none=True)
    mark("zero_grad")
    return out


def diagnose(c: dict, tmp: str, device: str) -> dict:
    """Build as validate_recipes does, warm up, trace the second step, replay it."""
    import torch
    cu = torch.cuda if device == "cuda" else None
    gc.collect()
    if cu:
        cu.empty_cache()
    base = cu.memory_allocated() if cu else 0
    m, opt = vr.build_case(c, tmp, device)
    gc.collect()
    out = dict(weights_allocated=(cu.memory_allocated() - base) if cu else 0, weights=weights_summary(m))
    vr.run_once(m, opt, c, device)                       # warm-up
    if opt is not None:
        out["phases"] = phases(m, opt, c, device)        # a second warm step, phase by phase
    gc.collect()
    if cu:
        cu.synchronize()
        start = cu.memory_allocated()
        cu.reset_peak_memory_stats()
        cu.memory._record_memory_history(max_entries=1_000_000, stacks="python")
    vr.run_once(m, opt, c, device)
    if cu:
        cu.synchronize()
        snap = cu.memory._snapshot()
        cu.memory._record_memory_history(enabled=None)
        peak = cu.max_memory_allocated()
        out.update(start_allocated=start - base, peak=peak - base, peak_over_start=peak - start,
                   frames_order="innermost first (as the snapshot stores them)")
        dev = cu.current_device()
        traces = snap.get("device_traces") or []
        out["replay"] = replay(traces[dev] if dev < len(traces) else [])
        del snap
        if opt is None:
            half = dict(c, batch=max(1, c["batch"] // 2))
            gc.collect()
            cu.reset_peak_memory_stats()
            s0 = cu.memory_allocated()
            vr.run_once(m, None, half, device)
            cu.synchronize()
            out["half_batch"] = dict(batch=half["batch"], peak_over_start=cu.max_memory_allocated() - s0)
    del m, opt
    gc.collect()
    if cu:
        cu.empty_cache()
    return out


def _line(r: dict) -> str:
    head = f"{r['name']} {r['model']:14s} {r['recipe']:13s}"
    if "skipped" in r:
        return f"{head} skipped: {r['skipped']}"[:200]
    if "replay" not in r:
        return f"{head} ran (no CUDA: structure only)"
    rp = r["replay"]
    top = rp["by_site"][0] if rp["by_site"] else ["-", 0, 0]
    return (f"{head} peak {r['peak'] / 2**20:8.1f} MiB (step adds {r['peak_over_start'] / 2**20:7.1f}, "
            f"replay {rp['peak_delta'] / 2**20:7.1f}); top site {top[1] / 2**20:6.1f} MiB {top[0][:60]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=".", help="directory for recipes_diagnose_gpu.json")
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU (structure only)")
    ap.add_argument("--budget", type=float, default=160.0, help="seconds; no new case starts after")
    ap.add_argument("--cases", nargs="*", default=None, help="case names (default: the missed ones)")
    a = ap.parse_args(argv)
    import torch

    from vramlib.core.records import write_record
    device = "cpu" if a.smoke or not torch.cuda.is_available() else "cuda"
    if device == "cuda":
        from vramlib.measure.tracker import warm_up
        warm_up("cuda")
    names = a.cases or DIAGNOSE
    cases = {c[0]: c for c in vr.CASES}
    unknown = [n for n in names if n not in cases]
    if unknown:
        ap.error(f"--cases: unknown case(s) {unknown}; choose from {sorted(cases)}")
    config = dict(cases=names, new_tokens=vr.NEW_TOKENS, mini_models=vr.MINI, versions=vr._versions(),
                  smoke=a.smoke, method="second step under _record_memory_history(stacks='python'), "
                  "trace replayed: alloc adds, free_requested removes; sizes are allocator blocks")
    path = Path(a.out) / ("recipes_diagnose_smoke.json" if a.smoke else "recipes_diagnose_gpu.json")
    t0, rows = time.time(), []
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            r = dict(zip(vr.KEYS, cases[n]), new_tokens=4 if a.smoke else vr.NEW_TOKENS, smoke=a.smoke)
            if a.smoke:
                r.update(batch=2, length=32)
            if time.time() - t0 > a.budget:
                r["skipped"] = "time budget spent"
            else:
                t1 = time.time()
                try:
                    r.update(diagnose(r, tmp, device))
                except vr.Skip as e:
                    r["skipped"] = str(e)
                except Exception as e:  # noqa: BLE001 - record and go on
                    r["skipped"] = f"error: {type(e).__name__}: {e}"[:300]
                    if device == "cuda":
                        torch.cuda.memory._record_memory_history(enabled=None)
                        gc.collect()
                        torch.cuda.empty_cache()
                r["seconds"] = round(time.time() - t1, 1)
            rows.append(r)
            print(f"[{time.time() - t0:5.0f} s] " + _line(r), flush=True)
            write_record(path, {"cases": rows}, config, device if device == "cuda" else None)
    print(f"wrote {path} in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

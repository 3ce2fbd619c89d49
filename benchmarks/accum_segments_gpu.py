"""Why gradient accumulation ran out of memory at the fit's cap (issue 14, recipe r09): the
allocator's segments at the moment of the out-of-memory error (Part I, "Fine-tuning").

    python3 benchmarks/accum_segments_gpu.py --out DIR           # GPU, under a minute
    python3 benchmarks/accum_segments_gpu.py --smoke --out /tmp/x  # CPU rehearsal

Recipe r09 of ``benchmarks/validate_recipes.py`` (qwen2-0.5b, full bf16 training, AdamW,
gradient accumulation 2) is built exactly as that script builds it, warmed up with two
uncapped steps, then run once more with the caching allocator capped
(``torch.cuda.set_per_process_memory_fraction``) at each of:

* ``old``: the cap at which the recorded run failed (``cap_bytes`` of r09 in
  ``vramlib/data/records/recipes_gpu.json``);
* ``new``: the bytes the current fit asks for (:func:`vramlib.estimate.reserve.needed_bytes`,
  no CUDA context, as ``validate_recipes.py``'s cap check).

Each capped step runs under ``torch.cuda.memory._record_memory_history`` (Python stacks) with
an out-of-memory observer (``torch._C._cuda_attach_out_of_memory_observer``, as torch's
"Understanding CUDA memory usage" page shows) that takes the allocator's snapshot *at* the
failing request.  The record keeps, per cap: whether the step ran, the micro-batch and the size
of the failing request, the reserved and allocated bytes then, and the segments: for each
segment its size, allocated bytes and largest free block; the free bytes stuck in segments
that hold a live block (the allocator cannot release those), split by whether the live block
was allocated in a backward pass (at the second micro-batch's forward: the accumulated
``.grad``; on CUDA: allocated with no Python stack, in autograd's device thread) or elsewhere.  The hypothesis under test (``vramlib.estimate.reserve.RESERVE_ACCUM``):
the first micro-batch's gradients pin a segment of the loss's largest tensor.

Writes ``accum_segments_gpu.json`` through ``vramlib.core.records.write_record``.  Without CUDA
(``--smoke``) the step runs at tiny sizes and the summary runs on a synthetic snapshot.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import validate_recipes as vr  # noqa: E402

CASE = "r09"
MIB = 2**20


def _is_backward(frames: list[dict]) -> bool:
    """A block allocated by a backward pass: on CUDA autograd runs it in its device thread, whose
    allocations carry no Python stack (no frames); on the CPU its stack holds ``backward``.
    (The record of 2026-11-28 predates the no-frames rule: its ``by_gradient`` is ~0 for that
    reason, and the chapter uses only the sum of both kinds.)"""
    return not frames or any(f.get("name") == "backward" for f in frames)


def summarise(snapshot: dict, request: int) -> dict:
    """Segments of one snapshot: reserved, allocated, the largest free block, and the free bytes
    stuck in segments with a live block, by the kind of live block that pins them."""
    segs, stuck = [], dict(by_gradient=0, by_other=0)
    for s in snapshot.get("segments", []):
        live = [b for b in s["blocks"] if b["state"] != "inactive"]
        free = [b["size"] for b in s["blocks"] if b["state"] == "inactive"]
        grad = sum(b["size"] for b in live if _is_backward(b.get("frames")))
        row = dict(size=s["total_size"], allocated=s["allocated_size"], largest_free=max(free, default=0),
                   free=sum(free), live_blocks=len(live), gradient_bytes=grad)
        if live and free:
            stuck["by_gradient" if grad else "by_other"] += sum(free)
        segs.append(row)
    segs.sort(key=lambda r: -r["size"])
    return dict(request=request, reserved=sum(r["size"] for r in segs),
                allocated=sum(r["allocated"] for r in segs), segments=len(segs),
                largest_free=max((r["largest_free"] for r in segs), default=0), stuck_free=stuck,
                big_segments=[r for r in segs if r["size"] >= 64 * MIB][:40])


def _step(m, opt, c: dict, device: str, state: dict) -> None:
    """``validate_recipes.run_once`` for training, with the micro-batch noted for the observer."""
    import torch
    ids = torch.randint(1, c["hf_config"]["vocab_size"], (c["batch"], c["length"]), device=device)
    for k in range(c["grad_accum"]):
        state["micro"], state["where"] = k + 1, "forward"
        loss = m(input_ids=ids, labels=ids, use_cache=False).loss
        state["where"] = "backward"
        loss.backward()
        del loss
    state["micro"], state["where"] = 0, "optimizer step"
    opt.step()
    opt.zero_grad(set_to_none=True)


def capped(m, opt, c: dict, cap: int) -> dict:
    """One step with the allocator capped at ``cap`` bytes: ran or not, and the snapshot's
    summary at the failing request."""
    import torch
    cu, state, seen = torch.cuda, {}, {}

    def observer(device, alloc, device_allocated, device_free):
        seen.update(micro=state.get("micro"), where=state.get("where"),
                    summary=summarise(cu.memory._snapshot(), int(alloc)))

    total = cu.get_device_properties(0).total_memory
    gc.collect()
    cu.empty_cache()
    cu.set_per_process_memory_fraction(min(1.0, cap / total))
    cu.reset_peak_memory_stats()
    cu.memory._record_memory_history(max_entries=200_000, stacks="python")
    torch._C._cuda_attach_out_of_memory_observer(observer)
    try:
        _step(m, opt, c, "cuda", state)
        cu.synchronize()
        oom = False
    except torch.OutOfMemoryError:
        oom = True
        opt.zero_grad(set_to_none=True)
    finally:
        cu.set_per_process_memory_fraction(1.0)
        cu.memory._record_memory_history(enabled=None)
    return dict(cap=int(cap), oom=oom, reserved_peak=int(cu.max_memory_reserved()),
                allocated_peak=int(cu.max_memory_allocated()), **seen)


def run(c: dict, tmp: str, device: str) -> dict:
    """Build r09, two uncapped steps, then the old and the new cap."""
    from vramlib.core.records import load_record
    from vramlib.estimate.fitcheck import recipe_estimate
    from vramlib.estimate.reserve import needed_bytes
    m, opt = vr.build_case(c, tmp, device)
    state: dict = {}
    for _ in range(2):
        _step(m, opt, c, device, state)
    if device != "cuda":
        return dict(ran="no CUDA: structure only")
    rec = next(r for r in load_record("recipes_gpu").results["cases"] if r["name"] == CASE)
    caps = dict(old=int(rec["cap_bytes"]), new=int(needed_bytes(recipe_estimate(c), 0)))
    out = {k: capped(m, opt, c, v) for k, v in caps.items()}
    del m, opt
    gc.collect()
    return out


def _synthetic() -> dict:
    """A snapshot shaped like torch's: a 1 GiB segment pinned by a gradient, one free."""
    grad = dict(name="backward", filename="validate_recipes.py", line=1)
    return {"segments": [
        dict(total_size=1024 * MIB, allocated_size=256 * MIB, blocks=[
            dict(size=256 * MIB, state="active_allocated", frames=[grad]),
            dict(size=768 * MIB, state="inactive", frames=[])]),
        dict(total_size=64 * MIB, allocated_size=0, blocks=[dict(size=64 * MIB, state="inactive", frames=[])])]}


def _line(k: str, r: dict) -> str:
    s = r.get("summary")
    head = f"cap {k}: {r['cap'] / 2**30:.3f} GiB, " + ("out of memory" if r["oom"] else "ran")
    if not s:
        return head + f", reserved peak {r['reserved_peak'] / 2**30:.3f} GiB"
    return (head + f" at micro-batch {r.get('micro')} ({r.get('where')}) asking {s['request'] / MIB:.0f} MiB; "
            f"reserved {s['reserved'] / 2**30:.3f}, allocated {s['allocated'] / 2**30:.3f} GiB; stuck free "
            f"{s['stuck_free']['by_gradient'] / MIB:.0f} MiB by gradients, {s['stuck_free']['by_other'] / MIB:.0f} "
            f"MiB by others")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=".", help="directory for accum_segments_gpu.json")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU (structure only)")
    a = ap.parse_args(argv)
    import torch

    from vramlib.core.records import write_record
    device = "cpu" if a.smoke or not torch.cuda.is_available() else "cuda"
    if device == "cuda":
        from vramlib.measure.tracker import warm_up
        warm_up("cuda")
    c = dict(zip(vr.KEYS, next(x for x in vr.CASES if x[0] == CASE)), new_tokens=vr.NEW_TOKENS, smoke=a.smoke)
    if a.smoke:
        c.update(batch=2, length=32)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            c["result"] = run(c, tmp, device)
        except Exception as e:  # noqa: BLE001 - recorded with its reason
            c["skipped"] = f"error: {type(e).__name__}: {e}"[:300]
    if a.smoke:
        c["synthetic_summary"] = summarise(_synthetic(), 1024 * MIB)
        print("synthetic:", {k: v for k, v in c["synthetic_summary"].items() if k != "big_segments"})
    c["seconds"] = round(time.time() - t0, 1)
    config = dict(case=CASE, versions=vr._versions(), smoke=a.smoke,
                  method="a third step capped with set_per_process_memory_fraction; snapshot taken by an "
                  "out-of-memory observer at the failing request; blocks allocated under loss.backward() "
                  "counted as gradients")
    path = Path(a.out) / ("accum_segments_smoke.json" if a.smoke else "accum_segments_gpu.json")
    write_record(path, {"cases": [c]}, config, device if device == "cuda" else None)
    for k, r in (c.get("result") or {}).items():
        if isinstance(r, dict):
            print(_line(k, r), flush=True)
    print(c.get("skipped") or c["result"].get("ran", ""), f"wrote {path} in {c['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

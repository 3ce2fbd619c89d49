"""Where two Part I chapters' GPU peaks exceed their formulas: an allocator trace per operator.

    python3 benchmarks/part1_peaks_trace_gpu.py --out DIR          # on a CUDA GPU (< 2 min)
    python3 benchmarks/part1_peaks_trace_gpu.py --smoke --out DIR  # rehearsal on the CPU

Writes ``DIR/part1_peaks_trace_gpu.json``.

* **Fine-tuning** (the chapter's full-scale step: 12 layers, d = 768, batch 16 x 64, four
  modes).  The CPU at the same scale reproduces most of the GPU's shortfall (the backward of
  the top block's MLP, not the start of backward, is the peak); in the modes whose top block's
  weights train the GPU holds about one more ``N x 4d`` fp32 tensor.  For the measured step
  a ``TorchDispatchMode`` records, per aten operator, the allocator's bytes before and after
  it and the peak *inside* it (``max_memory_allocated`` reset before each operator), so the
  operator at the peak and any scratch a kernel allocates inside one operator are named.
  The plain ``track_memory`` peak of the same step (no tracing) is recorded beside it.
* **Inference** (the chapter's full-scale prefill).  Each variant runs in a fresh process:
  ``cold`` as the chapter ran it (the prefill is the process's first matrix product),
  ``warm`` after ``vramlib.warm_up`` (the one-time cuBLAS/cuBLASLt workspaces allocated
  before measuring), ``no-workspace`` cold with ``CUBLAS_WORKSPACE_CONFIG=:0:0``.

On a machine without CUDA it exits with a clear message, unless ``--smoke`` (tiny sizes on
the CPU, storage accounting instead of the allocator, to test the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib import pick_device, seed_everything, track_memory, warm_up  # noqa: E402
from vramlib.compress.lora import trainable_params  # noqa: E402
from vramlib.core.records import write_record  # noqa: E402
from vramlib.measure.generate import KVCache, prefill  # noqa: E402
from vramlib.measure.stagemem import finetune_activation_bytes  # noqa: E402
from vramlib.models import GPT, GPTConfig  # noqa: E402
from benchmarks.part1_gpu import build_finetune_model  # noqa: E402

MODES = [("full", "full"), ("frozen (top block)", "frozen"), ("LoRA", "lora"),
         ("QLoRA", "qlora")]
PREFILL_VARIANTS = {"cold": ({}, False), "warm": ({}, True),
                    "no-workspace": ({"CUBLAS_WORKSPACE_CONFIG": ":0:0"}, False)}


class AllocTrace(TorchDispatchMode):
    """Per aten operator: CUDA allocator bytes before, after, and the peak inside it."""

    def __init__(self, dev: torch.device) -> None:
        super().__init__()
        self.dev, self.rows = dev, []
        self.base = torch.cuda.memory_allocated(dev)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        before = torch.cuda.memory_allocated(self.dev)
        torch.cuda.reset_peak_memory_stats(self.dev)
        out = func(*args, **(kwargs or {}))
        inside = torch.cuda.max_memory_allocated(self.dev)
        after = torch.cuda.memory_allocated(self.dev)
        self.rows.append((str(func.__name__), before - self.base, after - self.base,
                          inside - self.base))
        return out


def _window(rows: list, width: int = 24) -> dict:
    """The operators around the highest in-operator peak."""
    i = max(range(len(rows)), key=lambda j: rows[j][3])
    keep = rows[max(0, i - width): i + 4]
    return {"peak": rows[i][3], "peak_op": rows[i][0], "peak_index": i, "n_ops": len(rows),
            "window": [dict(zip(("op", "before", "after", "inside"), r)) for r in keep]}


def _step(m, opt, x) -> None:
    loss = m(x, x)[1]
    loss.backward()
    del loss
    opt.step()
    opt.zero_grad(set_to_none=True)


def finetune(dev: torch.device, smoke: bool) -> list[dict]:
    """The chapter's four modes: plain peak, traced peak, and the trace around the peak."""
    cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=2 if smoke else 12, n_head=4,
                    d_model=128 if smoke else 768)
    B, s, rank, k_top = (8 if smoke else 16), 64, 8, 1
    seed_everything(0)
    x = torch.randint(0, cfg.vocab_size, (B, s), device=dev)
    rows = []
    for mode, act_mode in MODES:
        m = build_finetune_model(cfg, mode, rank, k_top).to(dev)
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3,
                               foreach=False)
        _step(m, opt, x)                                   # warm-up, as the chapter
        with track_memory(dev) as rep:
            _step(m, opt, x)
        row = {"mode": mode, "T": trainable_params(m), "peak": rep.peak,
               "pred_act": finetune_activation_bytes(cfg, B, s, act_mode, k_top, rank)}
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            try:
                tr = AllocTrace(dev)
                with tr:
                    _step(m, opt, x)
                torch.cuda.synchronize(dev)
                row["trace"] = _window(tr.rows)
            except Exception as e:  # the plain peak above stays valid
                row["trace_error"] = f"{type(e).__name__}: {e}"
        rows.append(row)
        print(f"  fine-tuning {mode:20s} peak {rep.peak / 2**20:9.2f} MiB"
              + (f", traced {row['trace']['peak'] / 2**20:9.2f} MiB at "
                 f"{row['trace']['peak_op']}" if "trace" in row else "")
              + (f" (trace failed: {row['trace_error']})" if "trace_error" in row else ""),
              flush=True)
        del m, opt
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def prefill_child(dev: torch.device, warm: bool, smoke: bool) -> dict:
    """The chapter's prefill (last logits), in a process that has run nothing else."""
    cfg = GPTConfig(vocab_size=2048 if smoke else 50304, block_size=256 if smoke else 2048,
                    n_layer=4 if smoke else 12, n_head=4 if smoke else 12,
                    d_model=128 if smoke else 768, n_kv_head=2 if smoke else 4)
    B, s, new = (4, 128, 32) if smoke else (16, 1024, 256)
    seed_everything(0)
    model = GPT(cfg).to(dev).eval()
    idx = torch.randint(0, cfg.vocab_size, (B, s), device=dev)
    before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    if warm:
        warm_up(dev)
    ws = (torch.cuda.memory_allocated(dev) - before) if dev.type == "cuda" else 0
    cache = KVCache.allocate(model, B, s + new)
    with track_memory(dev) as rp:
        logits = prefill(model, idx, cache)
    del logits
    return {"peak": rp.peak, "end": rp.end, "warm_up_bytes": ws,
            "predicted": 10 * B * s * cfg.d_model * 4, "N": B * s, "d": cfg.d_model}


def prefill_variants(smoke: bool) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (env, _) in PREFILL_VARIANTS.items():
            f = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, __file__, "--child", name, "--child-out", str(f)]
            subprocess.run(cmd + (["--smoke"] if smoke else []), check=True,
                           env={**os.environ, **env})
            out[name] = {"env": env, **json.loads(f.read_text())}
            r = out[name]
            print(f"  prefill {name:13s} peak {r['peak'] / 2**20:8.2f} MiB, predicted "
                  f"{r['predicted'] / 2**20:8.2f} MiB, gap "
                  f"{(r['peak'] - r['predicted']) / 2**20:+7.2f} MiB", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results", help="output folder")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--child", choices=sorted(PREFILL_VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    dev = pick_device("cpu" if args.smoke else None)
    if dev.type != "cuda" and not args.smoke:
        print("part1_peaks_trace_gpu.py: skipped, no CUDA GPU (the effects are the CUDA "
              "allocator's); use --smoke to rehearse on the CPU")
        return 0
    if args.child:
        res = prefill_child(dev, PREFILL_VARIANTS[args.child][1], args.smoke)
        Path(args.child_out).write_text(json.dumps(res))
        return 0
    print("fine-tuning step, traced:", flush=True)
    ft = finetune(dev, args.smoke)
    print("prefill, fresh process per variant:", flush=True)
    pf = prefill_variants(args.smoke)
    path = write_record(Path(args.out) / "part1_peaks_trace_gpu.json",
                        {"finetuning": ft, "prefill": pf},
                        {"smoke": args.smoke, "modes": [m for m, _ in MODES],
                         "prefill_variants": {k: v[0] for k, v in PREFILL_VARIANTS.items()}},
                        dev)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

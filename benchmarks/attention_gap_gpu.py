"""Eager vs fused attention on a GPU: what is saved, and what the backward adds, per dtype.

    python benchmarks/attention_gap_gpu.py [--out vramlib/data/records/attention_gap_gpu.json]
    python benchmarks/attention_gap_gpu.py --small --out /tmp/attention_gap_cpu.json   # CPU

"Activations in depth" predicts the eager-minus-fused difference of the *saved* tensors,
Delta A = L (B h s^2 b + s^2), and finds that the recorded fp32 H100 gap of the forward +
backward *peak* is 1.5-2.4x Delta A.  This script separates the two for fp32 and bf16
(bf16: the model's weights and activations in bf16, where torch's fused attention is
FlashAttention; in fp32 it is the memory-efficient kernel):

* ``fwd_end``: live bytes above the weights at the end of the forward pass (the saved
  tensors plus the loss), so ``fwd_end[eager] - fwd_end[sdpa]`` is the measured Delta A;
* ``peak``: the forward + backward peak above the weights;
* ``sdpa_backend``: the fused kernel torch chose (flash, efficient or math), read from the
  profiler's kernel names.

Out-of-memory is recorded as null.  Written with vramlib.core.records.write_record
(provenance).
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib import pick_device, seed_everything, track_memory  # noqa: E402
from vramlib.models import GPT, GPTConfig  # noqa: E402
from vramlib.core.records import records_dir, write_record  # noqa: E402


def _clean(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _backend(model: GPT, x: torch.Tensor) -> str:
    """Which fused attention kernel ran, from the profiler's kernel names."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=acts) as prof:
        model(x, x)[1].backward()
    model.zero_grad(set_to_none=True)
    names = " ".join(e.key.lower() for e in prof.key_averages())
    for key in ("flash", "efficient", "cudnn", "math"):
        if key in names:
            return key
    return "unknown"


def measure_one(cfg: GPTConfig, batch: int, seq: int, dtype: torch.dtype,
                dev: torch.device) -> dict:
    seed_everything(0)
    model = GPT(cfg).to(device=dev, dtype=dtype)
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=dev)
    out: dict = {}
    try:
        for _ in range(2):                                   # warm-up, then measure
            with track_memory(dev) as fwd:
                loss = model(x, x)[1]
            with track_memory(dev) as bwd:
                loss.backward()
                del loss
            model.zero_grad(set_to_none=True)
        out = {"fwd_end": fwd.end, "peak": max(fwd.peak, fwd.end + bwd.peak)}
        if cfg.attn == "sdpa":
            out["sdpa_backend"] = _backend(model, x)
    except torch.cuda.OutOfMemoryError:
        out = {"fwd_end": None, "peak": None}
    del model
    _clean(dev)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(records_dir() / "attention_gap_gpu.json"))
    ap.add_argument("--small", action="store_true", help="CPU-sized rehearsal")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: pick_device())")
    args = ap.parse_args(argv)
    dev = pick_device(args.device)
    small = args.small or dev.type != "cuda"
    base = dict(vocab_size=256, block_size=256 if small else 4096, n_layer=2,
                n_head=4 if small else 16, d_model=128 if small else 1024)
    batch = 8 if small else 4
    seqs = [64, 128, 256] if small else [512, 1024, 2048, 4096]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    rows = []
    for name, dt in dtypes.items():
        b = torch.tensor([], dtype=dt).element_size()
        for s in seqs:
            row = {"seq": s, "dtype": name,
                   "predicted_saved_diff": base["n_layer"] * (batch * base["n_head"] * s * s * b
                                                              + s * s)}
            for attn in ("eager", "sdpa"):
                row[attn] = measure_one(GPTConfig(**base, attn=attn), batch, s, dt, dev)
            print(row, flush=True)
            rows.append(row)
    path = write_record(args.out, {"batch": batch, "config": base, "rows": rows},
                        {"small": small, "device": str(dev)}, dev)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

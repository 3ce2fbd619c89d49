"""Where the fine-tuning chapter's GPU shortfall comes from: the step peak with and without
a cuBLAS workspace, and with a second warm-up step.

    python benchmarks/finetune_workspace_gpu.py --out benchmarks/results/finetune_workspace_gpu.json

The recorded run of benchmarks/part1_gpu.py measured every fine-tuning mode 21-36 MiB above
the chapter's formula (the frozen mode -36 %).  Hypothesis: a cuBLAS workspace that the
autograd engine's backward thread allocates on its own (handle, stream) pair inside the
measured step.  Each variant runs in a fresh process, because CUBLAS_WORKSPACE_CONFIG is read
when CUDA starts:

* ``recorded``  - as part1_gpu.py: one warm-up step, then the measured step;
* ``no-workspace`` - the same with ``CUBLAS_WORKSPACE_CONFIG=:0:0`` (no cuBLAS workspace);
* ``two-warm-ups`` - two warm-up steps before the measured one.

If the gap vanishes with ``no-workspace`` and not with ``two-warm-ups``, the workspace is
allocated inside every measured step (not once); if it vanishes with ``two-warm-ups``, it is
a one-time allocation the single warm-up missed.  Needs a CUDA GPU (under 1 min on an H100).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib import pick_device, track_memory  # noqa: E402
from vramlib.compress.lora import trainable_params  # noqa: E402
from vramlib.core.records import write_record  # noqa: E402
from vramlib.measure.stagemem import finetune_activation_bytes  # noqa: E402
from vramlib.models import GPTConfig  # noqa: E402
from benchmarks.part1_gpu import build_finetune_model  # noqa: E402

VARIANTS = {"recorded": ({}, 1), "no-workspace": ({"CUBLAS_WORKSPACE_CONFIG": ":0:0"}, 1),
            "two-warm-ups": ({}, 2)}
MODES = [("full", "full"), ("frozen (top block)", "frozen"), ("LoRA", "lora"), ("QLoRA", "qlora")]


_build = build_finetune_model  # the model part1_gpu.py measured, built the same way


def child(warmups: int, dev: torch.device) -> list[dict]:
    """The chapter's experiment at full scale (as part1_gpu.finetuning), ``warmups`` steps
    before the measured one."""
    cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=12, n_head=4, d_model=768)
    B, s, rank, k_top = 16, 64, 8, 1
    x = torch.randint(0, cfg.vocab_size, (B, s), device=dev)
    rows = []
    for mode, act_mode in MODES:
        m = _build(cfg, mode, rank, k_top).to(dev)
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3, foreach=False)
        for _ in range(warmups):
            loss = m(x, x)[1]
            loss.backward()
            del loss
            opt.step()
            opt.zero_grad(set_to_none=True)
        with track_memory(dev) as rep:
            loss = m(x, x)[1]
            loss.backward()
            del loss
            opt.step()
            opt.zero_grad(set_to_none=True)
        T = trainable_params(m)
        trans = 2 * B * s * cfg.vocab_size * 4
        pred = max(finetune_activation_bytes(cfg, B, s, act_mode, k_top, rank) + trans, 4 * T + trans)
        rows.append({"mode": mode, "T": T, "peak": rep.peak, "pred_peak": pred, "gap": rep.peak - pred})
        del m, opt
        torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/finetune_workspace_gpu.json")
    ap.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    dev = pick_device()
    if dev.type != "cuda":
        sys.exit("finetune_workspace_gpu.py needs a CUDA GPU (the effect is the CUDA allocator's)")
    if args.child:
        Path(args.child_out).write_text(json.dumps(child(VARIANTS[args.child][1], dev)))
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (env, _) in VARIANTS.items():
            out = Path(tmp) / f"{name}.json"
            subprocess.run([sys.executable, __file__, "--child", name, "--child-out", str(out)],
                           env={**os.environ, **env}, check=True)
            results[name] = {"env": env, "rows": json.loads(out.read_text())}
            gaps = ", ".join(f"{r['mode']} {r['gap'] / 2**20:.1f} MiB" for r in results[name]["rows"])
            print(f"{name:13s} measured - predicted: {gaps}", flush=True)
    path = write_record(args.out, results, {"variants": {k: v[0] for k, v in VARIANTS.items()},
                                            "warmups": {k: v[1] for k, v in VARIANTS.items()}}, dev)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

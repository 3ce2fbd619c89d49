"""Pretrain Part II's LLM-scale models on one GPU: ``python3 benchmarks/train_llm_gpu.py --out DIR``.

Trains both sizes of :mod:`vramlib.models.stdlib_lm` (byte-level GPTs on a fixed selection of
CPython 3.11's standard library, PSF licence) with the library's own :func:`train_lm`,
seeded, bf16 autocast on CUDA, and writes to ``DIR``:

* ``stdlib_lm_full-NN.pt`` / ``stdlib_lm_small-NN.pt`` — bf16 state-dict shards (<= 14 MiB);
* ``stdlib_lm_train.json`` — a record (vramlib's writer: provenance filled in) with, per size,
  the config, steps, tokens, loss curve (with held-out loss every ``eval_every`` steps),
  held-out perplexity by Part II's protocol (fp32 weights and the saved bf16 weights),
  seconds, tokens/s and peak allocated memory.

Plan (CUDA): full (19.2M parameters: 6 layers, width 512, 8 heads) 4,000 steps x 128
windows x 256 bytes = 131M tokens (about 15 passes over the 8.6 MB training split), dropout
0.1; small (1.85M) 3,000 steps x 64 x 128 = 24.6M tokens.  Each run also stops (and says so)
past a time cap (270 s / 75 s).  The 12.6M model of the previous plan (7 layers, width 384,
98M tokens) reached held-out loss 0.739 in 69 s on an H200 (record stdlib_lm_train.json of
that run); the target stated before this run: full trains in <= 300 s and its held-out loss
is lower by >= 0.03 nats/byte (``TARGETS``).  ``--sizes full`` retrains only the GPU model.

Held-out loss during training (the curve) and at the end is the same protocol,
``stdlib_lm.evaluate_heldout`` on ``EVAL_WINDOWS`` windows, also at the last step (the runs
before the issue-#17 audit logged the curve on 64 windows, not comparable with the final
number).  ``--keep-best`` (early stopping) saves the evaluated step with the lowest held-out
loss instead of the last one (``best_step``; the last step's loss is ``heldout_last_step``);
``--dropout`` and ``--eval-every`` override the plan.

``--smoke``: a seconds-long CPU rehearsal (3 steps, batch 2, 4 evaluation windows).
``--sizes small --steps N --batch B``: train only the sibling, e.g. on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vramlib import pick_device, seed_everything  # noqa: E402
from vramlib.core.records import write_record  # noqa: E402
from vramlib.models import stdlib_lm as S  # noqa: E402

PLAN = {  # size: steps, batch, lr, warmup, dropout, time cap (s)
    "full": dict(steps=4000, batch=128, lr=8e-4, warmup=200, dropout=0.1, cap=270.0),
    "small": dict(steps=3000, batch=64, lr=2e-3, warmup=100, dropout=0.0, cap=75.0),
}
SMOKE = dict(steps=3, batch=2, warmup=1, cap=None)
#: Stated before the run: the previous full model's held-out loss (12.6M parameters, H200).
TARGETS = {"previous_full_heldout_loss": 0.7389, "min_loss_improvement": 0.03,
           "max_train_seconds": 300.0}


def train_one(size: str, plan: dict, device: torch.device, seed: int, eval_windows: int,
              eval_every: int, out: Path, keep_best: bool = False) -> dict:
    seed_everything(seed)
    data = S.stdlib_lm_data(S.LM_CONFIGS[size]["block_size"])
    model = S.build_stdlib_lm(size, dropout=plan["dropout"]).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best = {"loss": float("inf"), "step": None, "state": None}
    last = plan["steps"] - 1

    def on_log(entry: dict) -> None:
        # The curve's held-out loss is Part II's protocol, the one the final number uses
        # (until the issue-#17 audit it was 64 windows against the final 128).
        if entry["step"] % eval_every == 0 or entry["step"] == last:
            ev = S.evaluate_heldout(model, data, n_windows=eval_windows)
            entry["heldout_loss"] = ev["loss"]
            if keep_best and ev["loss"] < best["loss"]:
                best.update(loss=ev["loss"], step=entry["step"], state={   # on the CPU: not in the peak
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            print(f"  {size} step {entry['step']:5d} loss {entry['loss']:.3f} "
                  f"held-out {ev['loss']:.3f} ({entry['seconds']:.0f} s)", flush=True)

    auto = torch.bfloat16 if device.type == "cuda" else None
    res = S.train_lm(model, data, plan["steps"], plan["batch"], plan["lr"], seed=seed,
                     warmup=plan["warmup"], autocast=auto, log_every=min(50, eval_every),
                     time_limit_s=plan["cap"], on_log=on_log)
    last_step = S.evaluate_heldout(model, data, n_windows=eval_windows)
    if keep_best and best["state"] is not None:
        model.load_state_dict(best["state"])     # early stopping: the best evaluated step
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    fp32 = S.evaluate_heldout(model, data, n_windows=eval_windows)
    paths = S.save_sharded(model, out / f"stdlib_lm_{size}")
    reloaded = S.load_stdlib_lm(size, device, out)
    bf16 = S.evaluate_heldout(reloaded, data, n_windows=eval_windows)
    return {**res, "params": model.num_params(), "config": S.LM_CONFIGS[size], "plan": plan,
            "peak_allocated_bytes": peak, "heldout_fp32": fp32, "heldout_bf16_saved": bf16,
            "heldout_last_step": last_step, "keep_best": keep_best,
            "best_step": best["step"] if keep_best else None,
            "eval_windows": eval_windows, "eval_every": eval_every,
            "shards": [{"file": p.name, "bytes": p.stat().st_size} for p in paths],
            "data": data.info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--smoke", action="store_true", help="seconds-long CPU rehearsal")
    ap.add_argument("--sizes", default="full,small", help="comma list of small, full")
    ap.add_argument("--steps", type=int, help="override the planned steps")
    ap.add_argument("--batch", type=int, help="override the planned batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, help="override the planned dropout")
    ap.add_argument("--eval-every", type=int, default=500,
                    help="steps between held-out evaluations (Part II's protocol)")
    ap.add_argument("--keep-best", action="store_true",
                    help="save the evaluated step with the lowest held-out loss")
    args = ap.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in PLAN]
    if bad:
        ap.error(f"--sizes: unknown {bad}; use a comma list of {sorted(PLAN)}")
    device = torch.device("cpu") if args.smoke else pick_device()
    if device.type != "cuda" and not args.smoke:
        print("note: no CUDA device; training on", device, "(slow: use --smoke or --sizes small)")
    t0, results = time.perf_counter(), {}
    for size in sizes:
        plan = {**PLAN[size], **(SMOKE if args.smoke else {})}
        plan.update({k: v for k, v in (("steps", args.steps), ("batch", args.batch),
                                       ("dropout", args.dropout)) if v is not None})
        if device.type != "cuda":
            plan["cap"] = None                    # CPU runs are the fixed number of steps
        print(f"training {size}: {plan}", flush=True)
        results[size] = train_one(size, plan, device, args.seed, 4 if args.smoke else
                                  S.EVAL_WINDOWS, 1 if args.smoke else args.eval_every,
                                  args.out, args.keep_best)
    config = {"sizes": sizes, "seed": args.seed, "smoke": args.smoke, "targets": TARGETS,
              "keep_best": args.keep_best, "eval_every": args.eval_every,
              "eval_windows": 4 if args.smoke else S.EVAL_WINDOWS, "eval_batch": S.EVAL_BATCH}
    results["total_seconds"] = time.perf_counter() - t0
    path = write_record(args.out / "stdlib_lm_train.json", results, config, device)
    for size in sizes:
        r = results[size]
        print(f"{size}: {r['params']:,} params, {r['steps_done']} steps, {r['tokens']:,} tokens "
              f"in {r['seconds']:.0f} s ({r['tokens_per_s']:,.0f} tok/s), held-out ppl "
              f"{r['heldout_fp32']['perplexity']:.3f} (bf16 saved "
              f"{r['heldout_bf16_saved']['perplexity']:.3f}), held-out loss "
              f"{r['heldout_bf16_saved']['loss']:.4f} (last step "
              f"{r['heldout_last_step']['loss']:.4f}, kept step {r['best_step']}), "
              f"peak {r['peak_allocated_bytes']}")
    print(f"total {results['total_seconds']:.0f} s; record {path}")


if __name__ == "__main__":
    main()

"""Compress Part II's LLM-scale model on one GPU: accuracy, weight bytes, runtime peak, tokens/s.

    python3 benchmarks/llm_compress_gpu.py --out DIR [--ckpt DIR2] [--smoke]

Loads the ``stdlib_lm`` checkpoints from ``--ckpt`` (default: ``--out``, where
``benchmarks/train_llm_gpu.py`` writes them; else the ones shipped in ``vramlib/data``) and
writes ``DIR/stdlib_lm_compress.json`` (vramlib's records writer) with, per model size:

* ``accuracy`` — held-out perplexity (Part II's protocol, ``stdlib_lm.evaluate_heldout``) of
  the float model and of RTN / GPTQ / AWQ at 4 and 3 bits (group 128; 64 for the small
  model), magnitude / Wanda / SparseGPT at 50 % and 2:4, SmoothQuant W8A8 (α = 0 and 0.5); each calibrated method on
  3 calibration sets (seeds 0, 1, 2; 128 training windows each);
* ``memory`` (full size) — weight bytes, peak allocated bytes of one forward pass
  (32 windows) and forward tokens/s for bf16 dense, int8 and int4-g128 weight-only storage
  (``quant.QuantLinear``: stored codes, dequantized in the forward) and 2:4 semi-structured
  bf16 weights (``torch.sparse.to_sparse_semi_structured``, skipped where unsupported).

About 2 minutes on an H100/H200.  ``--smoke``: the small model on the CPU, one calibration
set, few windows, seconds.  Each case runs in its own ``try``; a failure is recorded, not fatal.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vramlib import param_bytes, pick_device  # noqa: E402
from vramlib.compress import llm as L  # noqa: E402
from vramlib.compress import quant as Q  # noqa: E402
from vramlib.compress.prune import nm_mask  # noqa: E402
from vramlib.core.records import write_record  # noqa: E402
from vramlib.hardware.timing import time_fn  # noqa: E402
from vramlib.models import stdlib_lm as S  # noqa: E402

QUANT = [("rtn", 4), ("gptq", 4), ("awq", 4), ("rtn", 3), ("gptq", 3), ("awq", 3)]
PRUNE = [(m, nm) for nm in (None, (2, 4)) for m in ("magnitude", "wanda", "sparsegpt")]
#: Quantization group per size: 128 divides the full model's widths (384, 1536), 64 the
#: small one's (192, 768).
GROUP = {"full": 128, "small": 64}
CALIBRATED = {"gptq", "awq", "wanda", "sparsegpt", "smoothquant"}
#: Stated before the run (perplexity; "interval" = zoo.seed_interval over the 3 sets).
TARGETS = {
    "gptq_awq_w4_within_2pct": "GPTQ and AWQ w4 g128 interval high <= 1.02 x float, "
                               "where RTN w4 g128 is worse than both",
    "gptq_awq_w3_beat_rtn": "GPTQ and AWQ w3 g128 interval high < RTN w3 g128",
    "wanda_beats_magnitude_50": "Wanda 50 % interval high < magnitude 50 %",
    "sparsegpt_beats_magnitude_2of4": "SparseGPT 2:4 interval high < magnitude 2:4",
    "smoothquant_helps": "SmoothQuant a=0.5 interval high < W8A8 a=0 interval low",
}


def cases(group: int = 128) -> list[tuple[str, str, dict]]:
    """(label, method, kwargs) of every accuracy case (``group``: the quantization group)."""
    out = [(f"{m} w{b} g{group}", m, dict(bits=b, group_size=group)) for m, b in QUANT]
    out += [(f"{m} {'2:4' if nm else '50%'}", m, dict(sparsity=0.5, n_m=nm)) for m, nm in PRUNE]
    out += [(f"smoothquant w8a8 a={a}", "smoothquant", dict(alpha=a)) for a in (0.0, 0.5)]
    return out


def run_case(model, data, method: str, kw: dict, calib: torch.Tensor, n_eval: int) -> float:
    if method == "smoothquant":
        m = L.smoothquant_gpt(model, calib, **kw)
    else:
        m = L.compress_gpt(model, calib, method, **kw)
    return S.evaluate_heldout(m, data, n_windows=n_eval)["perplexity"]


def accuracy(model, data, seeds: list[int], n_calib: int, n_eval: int, group: int,
             smoke: bool = False) -> dict:
    res = {"float": S.evaluate_heldout(model, data, n_windows=n_eval)["perplexity"]}
    calibs = {s: S.calibration_windows(data, n_calib, s) for s in seeds}
    todo = cases(group)
    if smoke:                                   # one case per method: the code path only
        todo = [next(c for c in todo if c[1] == m) for m in dict.fromkeys(c[1] for c in todo)]
    for label, method, kw in todo:
        t0, ppl = time.perf_counter(), []
        try:
            for s in (seeds if method in CALIBRATED else seeds[:1]):
                ppl.append(run_case(model, data, method, kw, calibs[s].to(data_device(model)),
                                    n_eval))
            res[label] = {"perplexity": ppl, "seconds": time.perf_counter() - t0}
        except Exception as e:  # noqa: BLE001 — record and go on
            res[label] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(f"  {label:28s} {res[label]}", flush=True)
    return res


def data_device(model) -> torch.device:
    return next(model.parameters()).device


def semi_structured(model):
    from torch.sparse import to_sparse_semi_structured
    m = copy.deepcopy(model)
    for name, lin in L._block_linears(m.blocks).items():
        w = lin.weight.detach() * nm_mask(lin.weight.detach(), 2, 4)
        lin.weight = torch.nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)
    return m


def weight_bytes(m) -> int | str:
    """vramlib's count of parameter + buffer bytes; a 2:4 tensor subclass counted by parts."""
    try:
        return param_bytes(m, buffers=True)
    except Exception:  # noqa: BLE001 — tensor subclasses without a plain storage
        total = 0
        for t in list(m.parameters()) + list(m.buffers()):
            parts = [getattr(t, a, None) for a in ("packed", "meta", "packed_t", "meta_t")]
            parts = [q for q in parts if isinstance(q, torch.Tensor)] or [t]
            total += sum(q.numel() * q.element_size() for q in parts)
        return total


def memory(model, data, device: torch.device, batch: int) -> dict:
    x = data.windows("val", batch)[0].to(device)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    variants = {"bf16 dense": lambda: bf16,
                "int8 weight-only (QuantLinear)": lambda: Q.quantize_weights(bf16, 8),
                "int4 g128 weight-only (QuantLinear)": lambda: Q.quantize_weights(bf16, 4, 128),
                "2:4 semi-structured bf16": lambda: semi_structured(bf16)}
    out = {}
    for name, make in variants.items():
        try:
            m = make().to(device).eval()
            with torch.no_grad():
                m(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                    base = torch.cuda.memory_allocated(device)
                    torch.cuda.reset_peak_memory_stats(device)
                m(x)
                peak = (torch.cuda.max_memory_allocated(device) - base
                        if device.type == "cuda" else None)
                sec = time_fn(lambda: m(x), device, warmup=2, repeats=5).median
            out[name] = {"weight_bytes": weight_bytes(m),
                         "forward_peak_above_weights_bytes": peak,
                         "tokens_per_s": x.numel() / sec, "batch": list(x.shape),
                         "heldout_perplexity": S.evaluate_heldout(m, data)["perplexity"]}
        except Exception as e:  # noqa: BLE001 — unsupported kernel/dtype on this device
            out[name] = {"skipped": f"{type(e).__name__}: {str(e)[:300]}"}
        print(f"  {name:36s} {out[name]}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ckpt", type=Path, help="checkpoint folder (default: --out, then vramlib)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    device = torch.device("cpu") if args.smoke else pick_device()
    seeds, n_calib, n_eval = ([0], 4, 4) if args.smoke else ([0, 1, 2], 128, S.EVAL_WINDOWS)
    results, t0 = {}, time.perf_counter()
    for size in (["small"] if args.smoke else ["full", "small"]):
        folder = next((d for d in (args.ckpt, args.out, S.CHECKPOINT_DIR)
                       if d is not None and S.checkpoint_shards(size, d)), None)
        if folder is None:
            results[size] = {"skipped": "no checkpoint found"}
            print(f"{size}: skipped, no checkpoint", flush=True)
            continue
        model = S.load_stdlib_lm(size, device, folder)
        data = S.stdlib_lm_data(S.LM_CONFIGS[size]["block_size"])
        print(f"{size}: checkpoint from {folder}", flush=True)
        results[size] = {"checkpoint_dir": str(folder),
                         "accuracy": accuracy(model, data, seeds, n_calib, n_eval,
                                              GROUP[size], args.smoke)}
        if size == "full" or args.smoke:
            results[size]["memory"] = memory(model, data, device, 4 if args.smoke else 32)
    results["total_seconds"] = time.perf_counter() - t0
    config = {"seeds": seeds, "n_calib": n_calib, "eval_windows": n_eval, "smoke": args.smoke,
              "targets": TARGETS,
              "groups": GROUP,
              "cases": {size: [(lab, m, kw) for lab, m, kw in cases(GROUP[size])]
                        for size in GROUP}}
    path = write_record(args.out / "stdlib_lm_compress.json", results, config, device)
    print(f"total {results['total_seconds']:.0f} s; record {path}")


if __name__ == "__main__":
    main()

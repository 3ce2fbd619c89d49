"""Does sparsity make a matrix product faster?  Dense vs 2:4 semi-structured vs CSR.

    python benchmarks/compress_prune_gpu.py [--out FILE.json or DIR] [--small | --smoke]

On a CUDA GPU with sparse tensor cores (compute capability >= 8.0) it times, for square FP16
and BF16 weights, ``W @ X`` dense against ``torch.sparse.to_sparse_semi_structured(W_2:4) @ X``;
on any device it times a masked dense product and a CSR ``torch.sparse.mm`` at several
sparsities (FP32).  Results (median milliseconds, speed-up vs dense) go to a JSON file with
provenance (device, driver, torch and CUDA versions, date, configuration).  Unsupported
combinations are recorded with a note instead of failing; an out-of-memory error skips a size.

It also reconciles its own ``torch.mm(W_sparse, X)`` harness with Part III's ``F.linear(x,
W_sparse)`` one (``vramlib.hardware.bench``): at the *same* FP16 shapes (m tokens, n outputs,
k inputs) it times the dense and 2:4 products in both layouts, each two ways — one call with
a device synchronisation around it (this script's ``time_interleaved``; includes the
per-call CPU cost of the sparse tensor subclass) and back-to-back calls between CUDA events
(Part III's ``time_fn``; the GPU throughput) — and the one-off conversion
``to_sparse_semi_structured``.
Used by Part II, "Pruning", section "2:4 semi-structured sparsity".  Runs in < 2 min on an H100.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vramlib import pick_device  # noqa: E402
from vramlib.core.records import records_dir, write_record  # noqa: E402
from vramlib.compress.prune import magnitude_mask, nm_mask  # noqa: E402
from vramlib.hardware.timing import sync, time_fn, time_interleaved  # noqa: E402

RECORDS = records_dir()


def semi_structured(device: torch.device, sizes: list[int], tokens: int, repeat: int) -> list[dict]:
    rows = []
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return [{"kind": "2:4 semi-structured", "note": "skipped: needs a CUDA GPU with compute capability >= 8.0"}]
    from torch.sparse import to_sparse_semi_structured
    for dtype in (torch.float16, torch.bfloat16):
        for n in sizes:
            try:
                W = torch.randn(n, n, device=device, dtype=dtype)
                W24 = W * nm_mask(W, 2, 4)
                X = torch.randn(n, tokens, device=device, dtype=dtype)
                Ws = to_sparse_semi_structured(W24)
                err = (torch.mm(Ws, X) - W24 @ X).abs().max().item()
                t = time_interleaved({"dense": lambda: W @ X, "masked": lambda: W24 @ X,
                                  "semi": lambda: torch.mm(Ws, X)}, repeats=repeat)
                rows.append({"kind": "2:4 semi-structured", "dtype": str(dtype).replace("torch.", ""), "n": n,
                             "tokens": tokens, "dense_ms": round(t["dense"] * 1e3, 4),
                             "masked_dense_ms": round(t["masked"] * 1e3, 4), "sparse_ms": round(t["semi"] * 1e3, 4),
                             "speedup": round(t["dense"] / t["semi"], 3), "max_abs_diff": err})
                del W, W24, X, Ws
            except torch.cuda.OutOfMemoryError:
                rows.append({"kind": "2:4 semi-structured", "dtype": str(dtype), "n": n, "note": "skipped: out of memory"})
                torch.cuda.empty_cache()
            except (RuntimeError, NotImplementedError) as e:
                rows.append({"kind": "2:4 semi-structured", "dtype": str(dtype), "n": n,
                             "note": f"skipped: {type(e).__name__}: {str(e)[:200]}"})
    return rows


# (m tokens, n outputs, k inputs): this script's three shapes, Part III's, and a tiny one
# whose time is all per-call overhead.
LAYOUT_SHAPES = [(4096, 2048, 2048), (4096, 4096, 4096), (4096, 8192, 8192),
                 (8192, 8192, 8192), (1024, 4096, 4096), (64, 4096, 4096), (16, 256, 256)]


def _layout_fns(Ws, W24, x, X) -> dict:
    F = torch.nn.functional
    return {"dense F.linear(x, W)": lambda: F.linear(x, W24),
            "2:4 F.linear(x, W)": lambda: F.linear(x, Ws),
            "dense W @ X": lambda: W24 @ X,
            "2:4 torch.mm(W, X)": lambda: torch.mm(Ws, X),
            "2:4 torch.mm(W, x.T)": lambda: torch.mm(Ws, x.t())}


def _one_layout(device, m: int, n: int, k: int, repeat: int) -> dict:
    from torch.sparse import to_sparse_semi_structured
    W = torch.randn(n, k, device=device, dtype=torch.float16)
    W24 = W * nm_mask(W, 2, 4)
    x = torch.randn(m, k, device=device, dtype=torch.float16)
    X = x.t().contiguous()
    conv = []
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        Ws = to_sparse_semi_structured(W24)
        sync(device)
        conv.append(time.perf_counter() - t0)
    row = {"kind": "2:4 layouts", "dtype": "float16", "m": m, "n": n, "k": k,
           "convert_ms": round(sorted(conv)[1] * 1e3, 4), "per_call_sync_ms": {},
           "back_to_back_ms": {}, "notes": {}}
    fns = {}
    for name, fn in _layout_fns(Ws, W24, x, X).items():
        try:
            fn()
            fns[name] = fn
        except (RuntimeError, NotImplementedError) as e:
            row["notes"][name] = f"skipped: {type(e).__name__}: {str(e)[:160]}"
    for name, t in time_interleaved(fns, repeats=repeat).items():
        row["per_call_sync_ms"][name] = round(t * 1e3, 4)
    for name, fn in fns.items():
        row["back_to_back_ms"][name] = round(time_fn(fn, device, repeats=7).median * 1e3, 4)
    return row


def layouts(device: torch.device, shapes: list, repeat: int) -> list[dict]:
    """Both harnesses' calls at the same shapes, timed both ways (see the module's doc)."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return [{"kind": "2:4 layouts", "note": "skipped: needs a CUDA GPU with compute capability >= 8.0"}]
    rows = []
    for m, n, k in shapes:
        try:
            rows.append(_one_layout(device, m, n, k, repeat))
        except torch.cuda.OutOfMemoryError:
            rows.append({"kind": "2:4 layouts", "m": m, "n": n, "k": k, "note": "skipped: out of memory"})
            torch.cuda.empty_cache()
        except (RuntimeError, NotImplementedError, ImportError) as e:
            rows.append({"kind": "2:4 layouts", "m": m, "n": n, "k": k,
                         "note": f"skipped: {type(e).__name__}: {str(e)[:200]}"})
    return rows


def csr(device: torch.device, n: int, tokens: int, repeat: int) -> list[dict]:
    rows = []
    W = torch.randn(n, n, device=device)
    X = torch.randn(n, tokens, device=device)
    for s in (0.5, 0.8, 0.9, 0.95, 0.99):
        Wm = W * magnitude_mask(W, s)
        Wc = Wm.to_sparse_csr()
        t = time_interleaved({"dense": lambda: W @ X, "masked": lambda: Wm @ X,
                          "csr": lambda: torch.sparse.mm(Wc, X)}, repeats=repeat)
        rows.append({"kind": "CSR fp32", "n": n, "tokens": tokens, "sparsity": s,
                     "dense_ms": round(t["dense"] * 1e3, 4), "masked_dense_ms": round(t["masked"] * 1e3, 4),
                     "sparse_ms": round(t["csr"] * 1e3, 4), "speedup": round(t["dense"] / t["csr"], 3)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RECORDS / "compress_prune_gpu.json",
                    help="JSON file, or a folder to write compress_prune_gpu.json into")
    ap.add_argument("--small", "--smoke", action="store_true",
                    help="CPU-sized run (also the default off CUDA)")
    args = ap.parse_args()
    if args.out.is_dir() or not args.out.suffix:
        args.out = args.out / "compress_prune_gpu.json"
    device = pick_device()
    small = args.small or device.type != "cuda"
    config = {"sizes": [1024] if small else [2048, 4096, 8192], "tokens": 256 if small else 4096,
              "csr_n": 1024 if small else 8192, "repeat": 5 if small else 30,
              "layout_shapes": [[16, 256, 256]] if small else [list(t) for t in LAYOUT_SHAPES]}
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
    results = semi_structured(device, config["sizes"], config["tokens"], config["repeat"])
    results += layouts(device, config["layout_shapes"], config["repeat"])
    results += csr(device, config["csr_n"], config["tokens"], config["repeat"])
    write_record(args.out, {"rows": results}, config, device)
    for r in results:
        print(r)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

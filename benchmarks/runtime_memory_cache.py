"""Why an int8 model quantized on the GPU reserves more than the float model, and the cures.

Part III, "Runtime memory is not parameter count", shows recorded runs in which every int8
variant of the book's GPT reserves 37-60 % more GPU memory than the float model although its
weights are smaller: ``vramlib.measure.runtime.runtime_memory`` builds the float model on the GPU and
quantizes it in place, and the caching allocator keeps the freed float blocks reserved.  This
script measures, each in a fresh process (so that one way's cache cannot help another):

- ``float``: the bf16 model on the GPU;
- ``int8 in place``: built in bf16 on the GPU, then quantized there (what the chapter measured);
- ``int8 in place + empty_cache``: the same, then ``torch.cuda.empty_cache()``;
- ``int8 from CPU``: built and quantized on the CPU, then moved to the GPU.

For each: bytes allocated and reserved after building, and the reserved peak of one forward
pass (after a warm-up pass).  It writes JSON with provenance through
``vramlib.core.records.write_record``:

    python benchmarks/runtime_memory_cache.py --out vramlib/data/records/runtime_memory_cache.json

On a machine without CUDA it prints that there is nothing to measure and exits 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vramlib.core.records import records_dir, write_record  # noqa: E402
from vramlib.hardware.lowbit import quantize_linears_int8  # noqa: E402
from vramlib.models import GPT, GPTConfig  # noqa: E402

WAYS = ("float", "int8 in place", "int8 in place + empty_cache", "int8 from CPU")
GPT_CFG = dict(vocab_size=32000, block_size=1024, n_layer=8, n_head=16, d_model=2048)


def measure(way: str, tokens: int) -> dict:
    """Build the model one way, then run one forward pass of ``tokens`` tokens (batch 1)."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    cfg = GPTConfig(**GPT_CFG)
    if way == "int8 from CPU":
        model = quantize_linears_int8(GPT(cfg).to(torch.bfloat16).eval(), fused=True).to(dev)
    else:
        model = GPT(cfg).to(dev, torch.bfloat16).eval()
        if way != "float":
            quantize_linears_int8(model, fused=True)
        if way.endswith("empty_cache"):
            torch.cuda.empty_cache()
    torch.cuda.synchronize()
    built = {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved()}
    idx = torch.randint(0, cfg.vocab_size, (1, tokens), device=dev)
    with torch.inference_mode():
        model(idx)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        model(idx)
        torch.cuda.synchronize()
    return {"way": way, "tokens": tokens, "built_allocated": built["allocated"],
            "built_reserved": built["reserved"],
            "forward_peak_allocated": torch.cuda.max_memory_allocated(),
            "forward_peak_reserved": torch.cuda.max_memory_reserved()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(records_dir() / "runtime_memory_cache.json"))
    ap.add_argument("--tokens", type=int, nargs="+", default=[16, 1024])
    ap.add_argument("--one", nargs=2, metavar=("WAY", "TOKENS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure (the caching allocator is a GPU matter)")
        return 0
    if args.one:                                   # child process: one measurement, as JSON
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return 0
    rows = []
    for tokens in args.tokens:
        for way in WAYS:
            out = subprocess.run([sys.executable, __file__, "--one", way, str(tokens)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{tokens:5d} tokens  {way:28s} built: allocated {r['built_allocated'] / 2**20:8.1f} MiB,"
                  f" reserved {r['built_reserved'] / 2**20:8.1f} MiB; forward reserved peak "
                  f"{r['forward_peak_reserved'] / 2**20:8.1f} MiB")
    write_record(args.out, {"runs": rows}, {"gpt": GPT_CFG, "ways": list(WAYS), "tokens": args.tokens,
                                            "dtype": "bfloat16"})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

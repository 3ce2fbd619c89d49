"""Part II, "Post-training quantization": the quantized book LM on a real device.

Records, on whatever device it finds (CUDA full size, CPU small):

* the perplexity of the book's char LM in FP32, BF16, weight-only INT8 and INT4 (group 64)
  and simulated W8A8 — the same numbers the chapter computes on the CPU;
* the weight bytes of each variant and the peak allocator memory of one evaluation batch
  (CUDA: ``torch.cuda.max_memory_allocated``; CPU: vramlib's exact storage tracker), which
  shows that a weight-only layer that dequantizes on the fly holds a full-precision copy of
  the weight while it runs;
* matmul throughput for FP32, BF16, INT8 (``torch._int_mm``) and FP8 (``torch._scaled_mm``,
  where the GPU supports it) — each skipped with a note when unsupported.

    python benchmarks/compress_quant_gpu.py [--out FILE.json or DIR]

Runs in well under 3 minutes on an H100.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vramlib import param_bytes, pick_device, track_memory  # noqa: E402
from vramlib.compress import quant as Q  # noqa: E402
from vramlib.core.records import records_dir, write_record  # noqa: E402
from vramlib.hardware.timing import time_fn  # noqa: E402
from vramlib.models import zoo  # noqa: E402


def bench_matmul(device: torch.device, n: int, reps: int) -> dict:
    out: dict = {"n": n}
    a32, b32 = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    flops = 2 * n ** 3
    cases = {"fp32": lambda: a32 @ b32}
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    cases["bf16"] = lambda: a16 @ b16
    if device.type == "cuda":
        a8 = torch.randint(-127, 127, (n, n), device=device, dtype=torch.int8)
        b8 = torch.randint(-127, 127, (n, n), device=device, dtype=torch.int8)
        cases["int8 (_int_mm)"] = lambda: torch._int_mm(a8, b8)
        try:
            af = a32.to(torch.float8_e4m3fn)
            bf = b32.to(torch.float8_e4m3fn).t().contiguous().t()
            one = torch.tensor(1.0, device=device)
            cases["fp8 e4m3 (_scaled_mm)"] = lambda: torch._scaled_mm(af, bf, scale_a=one, scale_b=one,
                                                                      out_dtype=torch.bfloat16)
        except Exception as e:  # noqa: BLE001
            out["fp8 e4m3 (_scaled_mm)"] = {"skipped": repr(e)}
    for name, fn in cases.items():
        try:
            s = time_fn(fn, device, warmup=1, repeats=reps, min_seconds=0).median
            out[name] = {"seconds": s, "tflops_or_tops": flops / s / 1e12}
        except Exception as e:  # noqa: BLE001 — unsupported dtype/kernel on this device
            out[name] = {"skipped": repr(e)[:300]}
    return out


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--out"]
    path = Path(args[0]) if args else records_dir() / "compress_quant_gpu.json"
    if path.is_dir() or not path.suffix:
        path = path / "compress_quant_gpu.json"
    device = pick_device()
    full = device.type == "cuda"
    lm, data = zoo.load_char_lm(device)
    # Part II's one evaluation protocol: zoo.evaluate_lm's default windows, on every device,
    # so the recorded perplexities compare with the chapters' directly.
    n_windows = inspect.signature(zoo.evaluate_lm).parameters["n_windows"].default
    variants = {
        "fp32": lm,
        "bf16": None,
        "int8 weight-only": Q.quantize_weights(lm, 8),
        "int4 g64 weight-only": Q.quantize_weights(lm, 4, 64),
        "w8a8 dynamic per-token (simulated)": Q.quantize_sim(lm, 8, 8, a_mode="dynamic-token"),
    }
    results: dict = {}
    x, _ = data.windows("val", 32)
    x = x.to(device)
    for name, model in variants.items():
        try:
            if name == "bf16":
                import copy
                model = copy.deepcopy(lm).to(torch.bfloat16)
            model = model.to(device)
            ppl = zoo.evaluate_lm(model, data, n_windows=n_windows)["perplexity"]
            with torch.no_grad(), track_memory(device) as rep:
                model(x)
            results[name] = {"perplexity": ppl, "weight_bytes": param_bytes(model, buffers=True),
                             "eval_batch_peak_bytes": rep.peak, "batch": list(x.shape)}
        except torch.cuda.OutOfMemoryError as e:  # pragma: no cover - GPU only
            results[name] = {"skipped": f"OOM: {e}"}
    mm = bench_matmul(device, 8192 if full else 512, 20 if full else 3)
    config = {"n_windows": n_windows, "lm_config": zoo.CHAR_LM_CONFIG,
              "scale": "full" if full else "small"}
    write_record(path, {"lm": results, "matmul": mm}, config, device)   # device, driver, CUDA: typed
    print(json.dumps({"lm": results, "matmul": mm}, indent=2))


if __name__ == "__main__":
    main()

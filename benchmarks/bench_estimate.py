"""How long one estimate and one fit solve take (Part I, "The calculator": they drive
interactive widgets and the ``vramlib fit`` command).

Prints the best-of-3 mean time per call of ``estimate_training`` and ``estimate_inference`` on a
bundled model name (config loading included) and on a pre-loaded ModelSpec, and of one
``fit`` solve (largest batch, largest context), against the targets: an estimate < 1 ms, a
fit solve < 50 ms.  Timings are of this machine's CPU (no GPU involved).
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib.estimate import estimate_inference, estimate_training, fit, load_model_config  # noqa: E402

TARGETS = {"estimate": 1e-3, "fit": 50e-3}


def _time(fn, n: int) -> float:
    fn()
    return min(timeit.repeat(fn, number=n, repeat=3)) / n


def main() -> None:
    spec = load_model_config("llama-3-8b")
    lora = dict(weights_dtype="bf16", trainable="lora", checkpointing="full")
    cases = {
        "estimate_training('llama-3-8b', 4, 2048, bf16)": ("estimate", lambda: estimate_training(
            "llama-3-8b", 4, 2048, weights_dtype="bf16")),
        "estimate_training(spec, ..., zero=3, 8 GPUs)": ("estimate", lambda: estimate_training(
            spec, 4, 2048, num_gpus=8, zero=3)),
        "estimate_inference('llama-3-8b', 8, 1024, 256, int4)": ("estimate", lambda: estimate_inference(
            "llama-3-8b", 8, 1024, 256, weights="int4")),
        "fit('llama-3-8b', 'h100-sxm', LoRA) largest batch": ("fit", lambda: fit("llama-3-8b", "h100-sxm", **lora)),
        "fit('llama-3-8b', 'h200-sxm', inference) context": ("fit", lambda: fit(
            "llama-3-8b", "h200-sxm", stage="inference", what="context", batch=4, new_tokens=256)),
    }
    worst = {}
    for name, (kind, fn) in cases.items():
        t = _time(fn, 500 if kind == "estimate" else 10)
        worst[kind] = max(worst.get(kind, 0.0), t)
        print(f"{name:<52} {t * 1e3:8.3f} ms")
    for kind, t in worst.items():
        verdict = "met" if t < TARGETS[kind] else "MISSED"
        print(f"slowest {kind}: {t * 1e3:.3f} ms (target < {TARGETS[kind] * 1e3:.0f} ms): {verdict}")


if __name__ == "__main__":
    main()

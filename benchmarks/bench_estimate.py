"""How long one estimate takes (Part I, "The calculator": it drives interactive widgets).

Prints the mean time per call of ``estimate_training`` and ``estimate_inference`` on a bundled
model name (config loading included) and on a pre-loaded ModelSpec.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vramlib.estimate import estimate_inference, estimate_training, load_model_config  # noqa: E402


def main() -> None:
    spec = load_model_config("llama-3-8b")
    cases = {
        "estimate_training('llama-3-8b', 4, 2048, bf16)": lambda: estimate_training("llama-3-8b", 4, 2048, weights_dtype="bf16"),
        "estimate_training(spec, ..., zero=3, 8 GPUs)": lambda: estimate_training(spec, 4, 2048, num_gpus=8, zero=3),
        "estimate_inference('llama-3-8b', 8, 1024, 256, int4)": lambda: estimate_inference("llama-3-8b", 8, 1024, 256, weights="int4"),
    }
    for name, fn in cases.items():
        fn()
        n = 2000
        t = min(timeit.repeat(fn, number=n, repeat=3)) / n
        print(f"{name:<55} {t * 1e6:8.1f} µs per estimate")


if __name__ == "__main__":
    main()

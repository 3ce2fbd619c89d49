"""Seeding, so that every run of a chapter prints the same numbers.

Defined in Chapter 0, "Before you start", section "How to run this book".
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int = 0, deterministic: bool = False) -> int:
    """Seed Python's, NumPy's and torch's generators (all devices); return the seed.

    ``deterministic=True`` also asks torch for deterministic kernels (slower on GPUs).
    Defined in Chapter 0, "Before you start", section "How to run this book".
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    return seed

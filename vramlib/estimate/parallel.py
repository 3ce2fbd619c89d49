"""Per-GPU memory under data, tensor and pipeline parallelism.

* **DP** replicates everything, and torch's DDP adds its gradient buckets (a second copy of
  the gradients, alive all the time); **ZeRO-1** shards optimizer states (and fp32 master weights)
  over the ``dp`` ranks, **ZeRO-2** also gradients, **ZeRO-3 / FSDP full shard** also the
  weights, gathering one layer's weights at a time (two layers' worth live: the one in use and
  the prefetched one).
* **TP** (Megatron) splits every block's matrices ``tp`` ways; activations inside the
  attention and MLP split too, the residual stream and norms do not (no sequence
  parallelism).  **PP** gives each stage ``layers / pp`` blocks; with 1F1B the first stage
  holds the activations of ``pp`` micro-batches in flight.

Measured on 2 × H200 (``benchmarks/validate_parallel.py``, recorded in
``benchmarks/results/estimator_parallel.json``): DDP 8 % under, FSDP2 5–20 % over, and the
same harness's single-GPU control 7–9 % over (where ``validate_estimator.py`` agrees within
2 % on the same model): the multi-GPU figures are not yet within the book's target and the
harness itself needs a look (one process per case would remove any memory left over
between cases).  TP and PP are not measured.

Defined in Part I, "Beyond one GPU".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ._common import pos_int
from .config import ModelSpec
from .params import count_params

__all__ = ["ParallelConfig", "shard_factors"]


@dataclass(frozen=True)
class ParallelConfig:
    """``num_gpus`` = dp × tp × pp; ``zero`` in 0 (plain DP), 1, 2, 3 (= FSDP full shard)."""

    num_gpus: int = 1
    zero: int = 0
    tp: int = 1
    pp: int = 1

    def __post_init__(self) -> None:
        pos_int(self.num_gpus, "num_gpus")
        pos_int(self.tp, "tp")
        pos_int(self.pp, "pp")
        if self.zero not in (0, 1, 2, 3) or isinstance(self.zero, bool):
            raise ValueError(f"zero must be 0 (plain data parallel), 1, 2 or 3 (FSDP full shard); got {self.zero!r}")
        if self.num_gpus % (self.tp * self.pp):
            raise ValueError(f"num_gpus ({self.num_gpus}) must be a multiple of tp × pp ({self.tp} × {self.pp})")

    @property
    def dp(self) -> int:
        return self.num_gpus // (self.tp * self.pp)

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "dp": self.dp}


def shard_factors(spec: ModelSpec, par: ParallelConfig) -> dict[str, float]:
    """Fractions of each component one GPU holds.  Defined in Part I, "Beyond one GPU"."""
    if par.tp > 1 and (spec.num_kv_heads % par.tp and par.tp % spec.num_kv_heads):
        raise ValueError(f"tp={par.tp} does not divide {spec.name}'s {spec.num_kv_heads} KV heads")
    if par.pp > spec.num_layers:
        raise ValueError(f"pp={par.pp} exceeds {spec.name}'s {spec.num_layers} layers")
    pc = count_params(spec)
    blocks = pc.num_layers * pc.per_layer
    other = pc.total - blocks
    # weights per GPU: blocks split by tp and pp; embeddings/head split by tp (vocab parallel)
    w = (blocks / (par.tp * par.pp) + other / par.tp) / pc.total
    dp = par.dp
    zero = par.zero if dp > 1 else 0        # with one data-parallel rank there is nothing to shard
    weights = w
    grads = w
    optim = w
    gather = 0.0
    if zero >= 1:
        optim = w / dp
    if zero >= 2:
        grads = w / dp
    if zero >= 3:
        weights = w / dp
        gather = 2 * pc.per_layer / par.tp / pc.total      # two layers gathered at a time
        weights += gather
        grads += gather / 2
    # DDP (gradient_as_bucket_view=False, torch's default) keeps flat gradient buckets the size of
    # all gradients for the whole run, beside the .grad tensors
    buckets = w if (zero == 0 and dp > 1) else 0.0
    return {"weights": weights, "grads": grads, "optim": optim, "layers": 1.0 / par.pp, "ddp_buckets": buckets,
            "acts": 1.0 / par.tp, "kv": 1.0 / par.tp, "gather": gather, "pp": float(par.pp)}

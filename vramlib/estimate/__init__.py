"""vramlib.estimate — how much memory a model needs to train, fine-tune or serve, component by
component, derived for the code that runs (PyTorch eager + Hugging Face ``transformers``) and
checked against the allocator (``benchmarks/validate_estimator.py``).

Public entry points::

    from vramlib.estimate import estimate_training, estimate_inference, load_model_config
    b = estimate_training("llama-3.2-1b", batch=4, seq_len=2048, weights_dtype="bf16")
    print(b.table()); b.fits("h100-sxm")
    fit("llama-3-8b", "rtx-4090", weights_dtype="bf16", trainable="qlora", checkpointing="full").line()

``fit``/``max_batch``/``max_context`` answer "will it fit, with what batch?" on a card's usable
bytes (:mod:`vramlib.hardware.gpus`), never above the true largest batch on the recorded OOM boundaries
(``benchmarks/validate_fit.py``; the reserve at the limit: :mod:`vramlib.estimate.reserve`).

Defined in Part I, "The calculator" (the section of each formula is named in its module).
"""

from __future__ import annotations

from typing import Any

from .breakdown import COMPONENTS, OVERHEADS, Breakdown
from .config import FAMILIES, ModelSpec, dense_transformer, list_models, load_model_config
from .inference import InferenceScenario, estimate_inference_spec
from .parallel import LAYOUTS, ParallelConfig, estimate_layout, layout_check, shard_factors
from .params import ParamCount, count_params
from .rules import (article_inference_rule, article_quantized_rule, article_simple_rule,
                    article_training_rule)
from .reserve import allocator_reserve, needed_bytes
from .solve import FitAnswer, capacity_bytes, fit, max_batch, max_context
from .training import TrainScenario, estimate_training_spec

__all__ = ["estimate_training", "estimate_inference", "load_model_config", "list_models", "count_params",
           "Breakdown", "ModelSpec", "ParamCount", "TrainScenario", "InferenceScenario", "ParallelConfig",
           "dense_transformer", "max_batch", "max_context", "article_training_rule", "article_simple_rule",
           "article_inference_rule", "article_quantized_rule", "COMPONENTS", "OVERHEADS", "FAMILIES",
           "num_params", "CUDA_CONTEXT_BYTES", "RESERVE_FRACTION", "fit", "FitAnswer", "capacity_bytes",
           "needed_bytes", "allocator_reserve", "estimate_layout", "layout_check", "LAYOUTS"]

#: Device memory a CUDA process holds outside torch's allocator once CUDA, cuBLAS/cuBLASLt and
#: SDPA kernels are loaded: 804,061,184 B (766.8 MiB), measured by benchmarks/cuda_context.py
#: (``benchmarks/results/cuda_context_h100.json`` and ``..._h200.json``: the same on both, driver
#: 580.159.04, CUDA 13.0, torch 2.11, 2026-11-21).  Other drivers, CUDA versions and libraries
#: (cuDNN, NCCL) move it; pass ``cuda_context=`` to override.
CUDA_CONTEXT_BYTES = 804_061_184

#: Reserved-but-unallocated memory of torch's caching allocator at the peak *far from the
#: limit*, as a fraction of the allocated peak: the median over the estimator's "fresh" GPU grid
#: (``benchmarks/results/estimator_gpu_fresh.json``: 24 cases, median 9.4 %, range 2.3–39.8 %).
#: It describes what ``nvidia-smi`` shows on a roomy card; near the limit the allocator frees its
#: cache and needs what :func:`vramlib.estimate.reserve.allocator_reserve` models (the default).
RESERVE_FRACTION = 0.094


def _overhead(b: Breakdown, device: str, cuda_context: int | None,
              reserve_fraction: float | None) -> dict[str, int]:
    """The overhead lines: the CUDA context and the allocator's reserve (modelled at the limit,
    or ``reserve_fraction`` × peak when given)."""
    if device != "cuda":
        return {}
    if reserve_fraction is not None and not (isinstance(reserve_fraction, (int, float))
                                             and 0.0 <= reserve_fraction < 1.0):
        raise ValueError(f"reserve_fraction must be in [0, 1) or None, got {reserve_fraction!r}")
    ctx = CUDA_CONTEXT_BYTES if cuda_context is None else cuda_context
    if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 0:
        raise ValueError(f"cuda_context must be a byte count ≥ 0 or None, got {cuda_context!r}")
    reserve = allocator_reserve(b) if reserve_fraction is None else int(b.peak * reserve_fraction)
    return {"cuda context": ctx, "allocator reserve": reserve}


def num_params(model: Any) -> int:
    """Exact parameter count of a model (name, config dict/path, GPTConfig or ModelSpec).

    Defined in Part I, "Anatomy of memory"."""
    return count_params(load_model_config(model)).total


def estimate_training(model: Any, batch: int, seq_len: int, *, num_gpus: int = 1, zero: int = 0,
                      tp: int = 1, pp: int = 1, cuda_context: int | None = None,
                      reserve_fraction: float | None = None, **scenario: Any) -> Breakdown:
    """Per-GPU peak memory of one training step (a :class:`Breakdown`).

    ``model``: a bundled name (:func:`list_models`), a ``config.json`` path or dict, a
    ``GPTConfig`` or a :class:`ModelSpec`.  ``scenario`` keys are the fields of
    :class:`TrainScenario` (``weights_dtype``, ``autocast``, ``optimizer``, ``grad_accum``,
    ``checkpointing``, ``attention``, ``trainable``, ``last_k``, ``lora_rank``, ...).
    ``num_gpus``/``zero`` (0–3, 3 = FSDP full shard)/``tp``/``pp`` split the work
    (:mod:`vramlib.estimate.parallel`).  Overhead lines (CUDA context, allocator reserve as a
    fraction of the peak when ``reserve_fraction`` is given, else the reserve modelled at the
    limit, :mod:`vramlib.estimate.reserve`) are reported apart from the tensors.

    Defined in Part I, "Pretraining" and "Beyond one GPU".
    """
    spec = load_model_config(model)
    sc = TrainScenario(batch=batch, seq_len=seq_len, **scenario)
    par = ParallelConfig(num_gpus=num_gpus, zero=zero, tp=tp, pp=pp)
    b = estimate_training_spec(spec, sc, shard=shard_factors(spec, par))
    b.overhead = _overhead(b, sc.device, cuda_context, reserve_fraction)
    b.scenario.update(par.to_dict())
    return b


def estimate_inference(model: Any, batch: int = 1, prompt_len: int = 512, new_tokens: int = 128, *,
                       tp: int = 1, pp: int = 1, cuda_context: int | None = None,
                       reserve_fraction: float | None = None, **scenario: Any) -> Breakdown:
    """Per-GPU peak memory of ``model.generate`` (a :class:`Breakdown`).

    ``scenario`` keys are the fields of :class:`InferenceScenario` (``weights``,
    ``group_size``, ``kv_dtype``, ``cache`` ``"dynamic"``/``"static"``, ``full_logits``, ...).
    Defined in Part I, "Inference".
    """
    spec = load_model_config(model)
    sc = InferenceScenario(batch=batch, prompt_len=prompt_len, new_tokens=new_tokens, **scenario)
    for name, v in (("tp", tp), ("pp", pp)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer ≥ 1; got {v!r}")
    par = ParallelConfig(num_gpus=tp * pp, zero=0, tp=tp, pp=pp)
    b = estimate_inference_spec(spec, sc, shard=shard_factors(spec, par))
    b.overhead = _overhead(b, sc.device, cuda_context, reserve_fraction)
    b.scenario.update(par.to_dict())
    return b

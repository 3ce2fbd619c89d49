"""Serving memory, in arithmetic (no torch): the KV cache per token for dense, GQA/MQA,
sliding-window and latent (MLA) attention, paged vs contiguous allocation, a serving engine's
memory plan, continuous batching, prefix caching, quantized caches, speculative decoding and
decode time per token.

Every formula here is derived in Part I, "Serving memory"; the torch side (a paged KV cache,
KV quantization) is :mod:`vramlib.measure.serving`.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from importlib import resources
from typing import Any, Sequence

from ._common import DTYPE_BYTES
from .config import ModelSpec, load_model_config
from .inference import kv_bytes, kv_cache_bytes

__all__ = ["MLASpec", "load_mla_config", "kv_bytes_per_token", "mla_kv_bytes_per_token",
           "mla_uncompressed_kv_bytes_per_token", "kv_cache_bytes_at", "request_lengths", "paged_tokens",
           "kv_allocation", "ServingPlan", "serving_memory_plan", "simulate_batching",
           "prefix_cache_blocks", "quantized_kv_bytes_per_token", "speculative_extra_bytes",
           "decode_bytes_per_step", "decode_time_per_token", "serve_plan"]


def _pos_int(v: Any, what: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{what} must be an integer ≥ {minimum}; got {v!r}")
    return v


def _pos_num(v: Any, what: str, allow_zero: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{what} must be a {'non-negative' if allow_zero else 'positive'} number; got {v!r}")
    return float(v)


def _elem_bytes(kv_dtype: str | float) -> float:
    if isinstance(kv_dtype, str):
        if kv_dtype not in DTYPE_BYTES and kv_dtype != "int8":
            raise ValueError(f"kv_dtype must be one of {sorted(DTYPE_BYTES) + ['int8']} or a byte count; "
                             f"got {kv_dtype!r}")
        return 1.0 if kv_dtype == "int8" else float(DTYPE_BYTES[kv_dtype])
    return _pos_num(kv_dtype, "kv_dtype (bytes per element)")


# --------------------------------------------------------------------------- cache per token
@dataclass(frozen=True)
class MLASpec:
    """The attention of a multi-head latent attention (MLA) model, DeepSeek-V2/V3: per layer
    and token the cache holds one compressed latent of ``kv_lora_rank`` values plus one
    shared RoPE key of ``qk_rope_head_dim`` values, instead of ``2 · h · d_h``.

    Defined in Part I, "Serving memory", section "Smaller caches by design: GQA, MQA, MLA and
    sliding windows"."""

    name: str
    num_layers: int
    num_heads: int
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    hidden_size: int
    source: str = ""


def load_mla_config(name: str) -> MLASpec:
    """Load a bundled MLA config (``vramlib/data/models/mla/<name>.json``: ``deepseek-v2``,
    ``deepseek-v3``).  Defined in Part I, "Serving memory", section "Smaller caches by design:
    GQA, MQA, MLA and sliding windows"."""
    root = resources.files("vramlib").joinpath("data/models/mla")
    names = sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))
    if name not in names:
        raise ValueError(f"unknown MLA model {name!r}; bundled: {', '.join(names)}")
    cfg = json.loads(root.joinpath(name + ".json").read_text())
    return MLASpec(name=name, num_layers=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
                   kv_lora_rank=cfg["kv_lora_rank"], qk_rope_head_dim=cfg["qk_rope_head_dim"],
                   qk_nope_head_dim=cfg["qk_nope_head_dim"], v_head_dim=cfg["v_head_dim"],
                   hidden_size=cfg["hidden_size"], source=cfg.get("_source", ""))


def kv_bytes_per_token(model: Any, kv_dtype: str | float = "bf16") -> float:
    """KV-cache bytes one token adds across all layers, full attention:
    ``2 · L · h_kv · d_h · b`` (the estimator's :func:`~vramlib.estimate.inference.kv_bytes`
    at batch 1, one token).  Defined in Part I, "Serving memory", section "The KV cache is the
    serving limit"."""
    spec = load_model_config(model)
    return kv_bytes(spec.num_layers, 1, 1, spec.kv_dim, _elem_bytes(kv_dtype))


def mla_kv_bytes_per_token(mla: MLASpec, kv_dtype: str | float = "bf16") -> float:
    """MLA cache bytes per token: ``L · (d_c + d_rope) · b``.  Defined in Part I, "Serving
    memory", section "Smaller caches by design: GQA, MQA, MLA and sliding windows"."""
    return mla.num_layers * (mla.kv_lora_rank + mla.qk_rope_head_dim) * _elem_bytes(kv_dtype)


def mla_uncompressed_kv_bytes_per_token(mla: MLASpec, kv_dtype: str | float = "bf16") -> float:
    """What the same model would cache per token with ordinary multi-head attention (keys of
    ``d_nope + d_rope``, values of ``d_v`` per head): ``L · h · (d_nope + d_rope + d_v) · b``.
    Defined in Part I, "Serving memory", section "Smaller caches by design: GQA, MQA, MLA and
    sliding windows"."""
    per_head = mla.qk_nope_head_dim + mla.qk_rope_head_dim + mla.v_head_dim
    return mla.num_layers * mla.num_heads * per_head * _elem_bytes(kv_dtype)


def kv_cache_bytes_at(model: Any, batch: int, tokens: int, kv_dtype: str = "bf16") -> float:
    """KV cache of ``batch`` sequences of ``tokens`` positions, sliding-window layers capped at
    the window (Mistral: every layer; Gemma-2: every other layer) — the estimator's own
    :func:`~vramlib.estimate.inference.kv_cache_bytes`.  Defined in Part I, "Serving memory",
    section "Smaller caches by design: GQA, MQA, MLA and sliding windows"."""
    _pos_int(batch, "batch")
    _pos_int(tokens, "tokens")
    return kv_cache_bytes(load_model_config(model), batch, tokens, kv_dtype)


# --------------------------------------------------------------------------- paging
def request_lengths(n: int, seed: int = 0, max_len: int = 2048, prompt_mean: float = 161.0,
                    output_mean: float = 338.0, sigma: float = 0.9) -> list[tuple[int, int]]:
    """``n`` seeded ``(prompt, output)`` token counts, each lognormal with the given means
    (defaults: the ShareGPT means the vLLM paper reports, 161 and 338 tokens) and log-space
    spread ``sigma``, each capped at ``max_len // 2``.  Defined in Part I, "Serving memory",
    section "Contiguous pre-allocation versus paging"."""
    _pos_int(n, "n")
    _pos_int(max_len, "max_len", 8)
    rng = random.Random(seed)
    mu = -sigma * sigma / 2                        # E[exp(N(mu, sigma))] = 1

    def draw(mean: float) -> int:
        return int(min(max_len // 2, max(4, round(mean * math.exp(rng.gauss(mu, sigma))))))
    return [(draw(prompt_mean), draw(output_mean)) for _ in range(n)]


def paged_tokens(length: int, block_size: int) -> int:
    """Token slots a paged cache reserves for a sequence: ``⌈length / block⌉ · block``.
    Defined in Part I, "Serving memory", section "Paging the KV cache"."""
    _pos_int(length, "length", 0)
    _pos_int(block_size, "block_size")
    return -(-length // block_size) * block_size


def kv_allocation(lengths: Sequence[int], max_len: int, block_size: int = 16) -> dict[str, float]:
    """Token slots reserved for a batch of requests whose final lengths are ``lengths``:
    contiguous pre-allocation reserves ``max_len`` per request, paging ``⌈l/B⌉·B``.  Returns
    ``used``, ``contiguous``, ``paged`` and the wasted fraction of each.

    Defined in Part I, "Serving memory", section "Contiguous pre-allocation versus paging"."""
    _pos_int(max_len, "max_len")
    if not lengths:
        raise ValueError("lengths must name at least one request")
    if any(isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= max_len for n in lengths):
        raise ValueError(f"every length must be an integer in 1..max_len ({max_len})")
    used = sum(lengths)
    contiguous = len(lengths) * max_len
    paged = sum(paged_tokens(n, block_size) for n in lengths)
    return {"used": used, "contiguous": contiguous, "paged": paged,
            "contiguous_waste": 1 - used / contiguous, "paged_waste": 1 - used / paged}


@dataclass(frozen=True)
class ServingPlan:
    """A serving engine's memory plan (vLLM's, :func:`serving_memory_plan`)."""

    budget: float
    weights: float
    activations: float
    non_torch: float
    kv_pool: float
    block_bytes: float
    num_blocks: int
    kv_tokens: int
    max_concurrency: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def serving_memory_plan(gpu_bytes: float, weights: float, activations: float, kv_per_token: float,
                        gpu_memory_utilization: float = 0.9, non_torch: float = 0.0,
                        block_size: int = 16, max_model_len: int = 4096) -> ServingPlan:
    """The plan vLLM documents: the engine may use ``gpu_memory_utilization × total`` bytes;
    it loads the weights, profiles one forward pass at the largest batch of tokens it will
    schedule (peak ``activations``), counts memory outside torch (``non_torch``: CUDA
    context, NCCL), and gives everything left to a pool of KV blocks of ``block_size`` tokens.
    ``max_concurrency`` is how many requests of ``max_model_len`` tokens the pool holds.

    Defined in Part I, "Serving memory", section "A serving engine's memory plan"."""
    for v, what in ((gpu_bytes, "gpu_bytes"), (kv_per_token, "kv_per_token")):
        _pos_num(v, what)
    for v, what in ((weights, "weights"), (activations, "activations"), (non_torch, "non_torch")):
        _pos_num(v, what, allow_zero=True)
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1]; got {gpu_memory_utilization!r}")
    _pos_int(block_size, "block_size")
    _pos_int(max_model_len, "max_model_len")
    budget = gpu_memory_utilization * gpu_bytes
    pool = budget - weights - activations - non_torch
    if pool <= 0:
        raise ValueError(f"no memory left for the KV cache: budget {budget:.3g} B ≤ weights + activations + "
                         "non-torch; raise gpu_memory_utilization, quantize the weights or shard the model")
    block = block_size * kv_per_token
    n = int(pool // block)
    return ServingPlan(budget=budget, weights=weights, activations=activations, non_torch=non_torch,
                       kv_pool=pool, block_bytes=block, num_blocks=n, kv_tokens=n * block_size,
                       max_concurrency=n * block_size / max_model_len)


def simulate_batching(prompts: Sequence[int], outputs: Sequence[int], kv_tokens: int,
                      block_size: int = 16, continuous: bool = True) -> dict[str, Any]:
    """Step-by-step schedule of requests (all waiting at step 0) under a KV pool of
    ``kv_tokens`` slots.  Each step decodes one token for every running request (the prompt
    is prefilled at admission).  ``continuous=True`` admits a waiting request as soon as its
    blocks fit (paged, growing one block at a time, reserving its full length at admission so
    nothing is ever preempted); ``False`` is static batching: a batch is admitted together and
    the next waits until *all* of it has finished, each request reserving ``max(prompt+output)``
    of its batch contiguously.  Returns ``steps``, the ``running`` and ``used`` (slots holding
    tokens) per step, and the mean utilisation of the pool.

    Defined in Part I, "Serving memory", section "Continuous batching"."""
    if len(prompts) != len(outputs) or not prompts:
        raise ValueError("prompts and outputs must be equally long, non-empty lists of token counts")
    _pos_int(kv_tokens, "kv_tokens")
    _pos_int(block_size, "block_size")
    total = [p + o for p, o in zip(prompts, outputs)]
    if max(total) > kv_tokens:
        raise ValueError("a request is longer than the whole KV pool (kv_tokens): enlarge the pool")
    waiting = list(range(len(prompts)))
    running: dict[int, int] = {}      # request -> tokens generated so far
    reserved: dict[int, int] = {}
    steps, run_hist, used_hist = 0, [], []
    while waiting or running:
        if continuous:
            while waiting:
                r = waiting[0]
                need = paged_tokens(total[r], block_size)
                if sum(reserved.values()) + need > kv_tokens:
                    break
                waiting.pop(0)
                running[r], reserved[r] = 0, need
        elif not running:
            batch: list[int] = []
            while waiting:
                cand = batch + [waiting[0]]
                if len(cand) * max(total[i] for i in cand) > kv_tokens:
                    break
                batch.append(waiting.pop(0))
            width = max(total[i] for i in batch)
            for r in batch:
                running[r], reserved[r] = 0, width
        steps += 1
        for r in list(running):
            running[r] += 1
        run_hist.append(len(running))
        used_hist.append(sum(prompts[r] + running[r] for r in running))
        done = [r for r, g in running.items() if g >= outputs[r]]
        if continuous:
            for r in done:
                del running[r], reserved[r]
        elif len(done) == len(running):
            running.clear()
            reserved.clear()
    return {"steps": steps, "running": run_hist, "used": used_hist,
            "utilisation": sum(used_hist) / (steps * kv_tokens)}


def prefix_cache_blocks(prefix_len: int, suffix_lens: Sequence[int], block_size: int = 16) -> dict[str, int]:
    """KV blocks for requests that share a prompt prefix of ``prefix_len`` tokens, without and
    with prefix caching.  Only *full* blocks of the prefix can be shared (a block is keyed by
    its tokens and all tokens before it); the partial last block is private.

    Defined in Part I, "Serving memory", section "Prefix caching"."""
    _pos_int(prefix_len, "prefix_len", 0)
    _pos_int(block_size, "block_size")
    if not suffix_lens:
        raise ValueError("suffix_lens must name at least one request")
    without = sum(-(-(prefix_len + s) // block_size) for s in suffix_lens)
    shared = prefix_len // block_size
    rest = prefix_len - shared * block_size
    with_ = shared + sum(-(-(rest + s) // block_size) for s in suffix_lens)
    return {"without": without, "with": with_, "shared_blocks": shared}


def quantized_kv_bytes_per_token(model: Any, bits: int = 8, granularity: str = "token",
                                 scale_bytes: int = 4) -> float:
    """KV bytes per token with ``bits``-bit codes and one ``scale_bytes`` scale per token and
    layer for K and for V (``granularity="token"``) or per token, layer and KV head
    (``"head"``).  Defined in Part I, "Serving memory", section "Quantizing the KV cache"."""
    spec = load_model_config(model)
    if bits not in (4, 8, 16):
        raise ValueError(f"bits must be 4, 8 or 16; got {bits!r}")
    if granularity not in ("token", "head"):
        raise ValueError(f"granularity must be 'token' or 'head'; got {granularity!r}")
    scales = 1 if granularity == "token" else spec.num_kv_heads
    return 2 * spec.num_layers * (spec.kv_dim * bits / 8 + scales * scale_bytes)


def speculative_extra_bytes(draft: Any, target: Any, batch: int, context: int, k: int,
                            weight_bytes: float = 2, kv_dtype: str = "bf16") -> dict[str, float]:
    """Memory speculative decoding adds to serving ``target``: the ``draft`` model's weights,
    its own KV cache for ``batch × context`` tokens, the target's cache slots for the ``k``
    proposed tokens, and the target's logits for ``k + 1`` positions per sequence (fp32).

    Defined in Part I, "Serving memory", section "Speculative decoding"."""
    from .params import count_params
    d, t = load_model_config(draft), load_model_config(target)
    _pos_int(batch, "batch")
    _pos_int(context, "context")
    _pos_int(k, "k")
    out = {"draft_weights": count_params(d).total * weight_bytes,
           "draft_kv": kv_bytes_per_token(d, kv_dtype) * batch * context,
           "target_kv_for_proposals": kv_bytes_per_token(t, kv_dtype) * batch * k,
           "verify_logits": batch * (k + 1) * t.vocab_size * 4.0}
    out["total"] = sum(out.values())
    return out


def decode_bytes_per_step(weights: float, kv_per_token: float, batch: int, context: int) -> float:
    """Bytes one decode step reads from memory: every weight once, plus the whole KV cache of
    every sequence (``batch × context × kv_per_token``).  Defined in Part I, "Serving memory",
    section "Decode time per token"."""
    _pos_num(weights, "weights")
    _pos_num(kv_per_token, "kv_per_token", allow_zero=True)
    _pos_int(batch, "batch")
    _pos_int(context, "context", 0)
    return weights + kv_per_token * batch * context


def decode_time_per_token(bytes_moved: float, bandwidth: float) -> float:
    """Seconds per decode step when it is memory-bound: bytes moved ÷ bandwidth (the roofline's
    memory roof, Part III).  Defined in Part I, "Serving memory", section "Decode time per
    token"."""
    _pos_num(bytes_moved, "bytes_moved")
    _pos_num(bandwidth, "bandwidth (bytes/s)")
    return bytes_moved / bandwidth


def _kv_per_sequence(model: str, max_model_len: int, kv_dtype: str, kv_scales: str,
                     tp: int) -> tuple[float, bool]:
    """KV bytes one sequence of ``max_model_len`` tokens holds on one GPU, and whether the
    model is an MLA one (its latent cache is not split by tensor parallelism)."""
    names = {p.name[:-5] for p in resources.files("vramlib").joinpath("data/models/mla").iterdir()}
    if model in names:
        return mla_kv_bytes_per_token(load_mla_config(model), kv_dtype) * max_model_len, True
    seq = kv_cache_bytes_at(model, 1, max_model_len, kv_dtype)
    if kv_scales != "none":
        if kv_dtype not in ("int8", "fp8"):
            raise ValueError(f"kv_scales needs kv_dtype int8 or fp8; got kv_dtype {kv_dtype!r}")
        seq *= quantized_kv_bytes_per_token(model, 8, kv_scales) / kv_bytes_per_token(model, "int8")
    return seq / tp, False


def serve_plan(model: str, gpu: Any, *, weights: float | None = None,
               activations: float | None = None, weights_format: str = "bf16", tp: int = 1,
               kv_dtype: str = "bf16", kv_scales: str = "none", gpu_memory_utilization: float = 0.9,
               max_model_len: int = 4096, block_size: int = 16,
               max_num_batched_tokens: int = 2048, non_torch: float | None = None) -> dict[str, Any]:
    """The serving memory plan of ``model`` on ``gpu`` (a catalogue key, name or byte count):
    weights and profiled activations from the estimator (``estimate_inference`` of one
    prefill of ``max_num_batched_tokens`` tokens, KV cache left out) unless given, the CUDA
    context as the memory outside torch, the KV bytes of one ``max_model_len`` sequence
    (sliding windows capped, int8/fp8 codes with their scales, MLA latents), and
    :func:`serving_memory_plan` over them: how many such sequences run at once.  MLA configs
    (``deepseek-v2``, ``deepseek-v3``) carry no parameter count: pass ``weights`` and
    ``activations`` in bytes.

    Defined in Part I, "Serving memory", section "A serving engine's memory plan"."""
    from . import CUDA_CONTEXT_BYTES, estimate_inference
    from .solve import capacity_bytes

    _pos_int(tp, "tp")
    _pos_int(max_model_len, "max_model_len")
    seq_bytes, mla = _kv_per_sequence(model, max_model_len, kv_dtype, kv_scales, tp)
    if weights is None or activations is None:
        if mla:
            raise ValueError(f"{model} is an MLA config without a parameter count: pass weights "
                             "and activations in bytes (--weight-bytes, --activation-bytes)")
        b = estimate_inference(model, 1, max_num_batched_tokens, 0, tp=tp, weights=weights_format,
                               kv_dtype=kv_dtype)
        weights = b["weights"] if weights is None else weights
        if activations is None:
            activations = b.peak - b["weights"] - b["kv cache"]
    plan = serving_memory_plan(capacity_bytes(gpu), weights, activations, seq_bytes / max_model_len,
                               gpu_memory_utilization,
                               CUDA_CONTEXT_BYTES if non_torch is None else non_torch,
                               block_size, max_model_len)
    blocks_per_seq = -(-max_model_len // block_size)
    return {"model": model, "tp": tp, "kv_dtype": kv_dtype, "kv_scales": kv_scales, "mla": mla,
            "max_model_len": max_model_len, "kv_bytes_per_sequence": seq_bytes,
            "max_num_seqs": plan.num_blocks // blocks_per_seq, **plan.to_dict()}

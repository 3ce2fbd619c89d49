"""Memory of text generation (``model.generate``): weights in their stored format, the KV
cache, and the transient tensors of prefill and of one decode step.

* **weights**: bytes per parameter of the format, plus its scales — int8: one scale per
  output channel; int4/nf4: one 16-bit scale per ``group_size`` weights (bitsandbytes nf4
  with double quantisation: 8-bit absmax per 64 plus an fp32 per 256 of those); fp8: one
  scale per tensor.  Embeddings, norms and the LM head stay 16-bit unless
  ``quantize_embeddings``.
* **KV cache**: ``2 × layers × kv_heads × head_dim × tokens × batch × bytes``.  The dynamic
  cache grows by ``torch.cat`` (a new tensor per layer per step, so one layer's K is
  briefly held twice); the static cache is allocated at ``prompt + new tokens`` at once;
  sliding-window layers keep ``window`` tokens only.
* **prefill** runs the prompt through one layer at a time: the layer's MLP (gate, act, up,
  product) and its RMSNorm's fp32 copies are the transient peak; with a static cache HF
  builds a (batch, prompt, cache) boolean mask, which sdpa turns into a float mask.
  Only the last position's logits are computed (``logits_to_keep=1``) and copied to fp32,
  unless ``full_logits``.
* **decode**: the cache at its final length plus the step's transients (the ``cat``, or with
  a static cache and GQA, ``repeat_kv`` copies of one layer's cache).

Defined in Part I, "Inference".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ._common import DTYPE_BYTES, choice, dtype_name, flag, pos_int
from .breakdown import Breakdown
from .config import ModelSpec
from .params import ParamCount, count_params

__all__ = ["InferenceScenario", "estimate_inference_spec", "WEIGHT_FORMATS", "weight_bytes", "kv_bytes", "kv_cache_bytes"]

WEIGHT_FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "nf4")
_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "fp8": 8, "int8": 8, "int4": 4, "nf4": 4}


@dataclass(frozen=True)
class InferenceScenario:
    """Inputs of a generation estimate (validated).  ``compute_dtype`` is the activations'
    dtype (bf16 unless weights are fp32/fp16); ``group_size`` the weights per scale of
    int4/nf4; ``cache`` ``"dynamic"`` (HF default) or ``"static"``; ``full_logits`` keeps the
    logits of every prompt position (a plain forward) instead of the last one."""

    batch: int = 1
    prompt_len: int = 512
    new_tokens: int = 128
    weights: str = "bf16"
    group_size: int = 64
    scale_bytes: int = 2
    quantize_embeddings: bool = False
    compute_dtype: str = "auto"
    kv_dtype: str = "auto"
    cache: str = "dynamic"
    full_logits: bool = False
    attention: str = "sdpa"
    device: str = "cuda"

    def __post_init__(self) -> None:
        pos_int(self.batch, "batch")
        pos_int(self.prompt_len, "prompt_len")
        pos_int(self.new_tokens, "new_tokens", minimum=0)
        object.__setattr__(self, "weights", dtype_name(self.weights, "weights", WEIGHT_FORMATS))
        pos_int(self.group_size, "group_size")
        if self.scale_bytes not in (1, 2, 4) or isinstance(self.scale_bytes, bool):
            raise ValueError(f"scale_bytes must be 1, 2 or 4; got {self.scale_bytes!r}")
        flag(self.quantize_embeddings, "quantize_embeddings")
        cd = self.compute_dtype
        if cd == "auto":
            cd = self.weights if self.weights in ("fp32", "fp16") else "bf16"
        object.__setattr__(self, "compute_dtype", dtype_name(cd, "compute_dtype", ("fp32", "bf16", "fp16")))
        kv = self.compute_dtype if self.kv_dtype == "auto" else self.kv_dtype
        object.__setattr__(self, "kv_dtype", dtype_name(kv, "kv_dtype", ("fp32", "bf16", "fp16", "fp8")))
        object.__setattr__(self, "cache", choice(self.cache, "cache", ("dynamic", "static")))
        flag(self.full_logits, "full_logits")
        object.__setattr__(self, "attention", choice(self.attention, "attention", ("sdpa", "flash", "eager")))
        object.__setattr__(self, "device", choice(self.device, "device", ("cuda", "cpu")))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def weight_bytes(pc: ParamCount, spec: ModelSpec, fmt: str, group_size: int = 64, scale_bytes: int = 2,
                 quantize_embeddings: bool = False) -> float:
    """Bytes of the weights stored as ``fmt``, scales included.  Defined in Part I, "Inference"."""
    lin = pc.linear_weights
    rest = pc.total - lin
    bits = _BITS[fmt]
    if fmt in ("fp32", "bf16", "fp16"):
        return pc.total * bits / 8
    rest_bytes = rest * (bits / 8 if quantize_embeddings else 2)
    mats = spec.num_layers * (4 + spec.num_experts * (3 if spec.mlp == "gated" else 2))
    if fmt == "fp8":
        scales = mats * 4
    elif fmt == "int8":
        out_ch = spec.num_layers * (spec.q_dim + 2 * spec.kv_dim + spec.hidden_size +
                                    spec.num_experts * ((2 if spec.mlp == "gated" else 1) * spec.intermediate_size
                                                        + spec.hidden_size))
        scales = out_ch * scale_bytes
    elif fmt == "nf4":
        scales = lin / group_size * (1 + 4 / 256)     # 8-bit absmax per block + fp32 per 256 blocks
    else:
        scales = lin / group_size * scale_bytes
    return lin * bits / 8 + scales + rest_bytes


def kv_bytes(num_layers: int, batch: int, tokens: int, kv_dim: int, bytes_per_elem: float) -> float:
    """The KV-cache formula: ``2 · layers · batch · tokens · kv_dim · bytes`` (keys and values,
    ``kv_dim = n_kv_heads · head_dim``).  The one place it is written down: used by
    :func:`kv_cache_bytes` and by :func:`vramlib.measure.generate.kv_cache_bytes`.
    Defined in Part I, "Inference"."""
    return 2 * num_layers * kv_dim * bytes_per_elem * tokens * batch


def kv_cache_bytes(spec: ModelSpec, batch: int, tokens: int, kv_dtype: str = "bf16") -> float:
    """KV cache of ``tokens`` positions for ``batch`` sequences (sliding-window layers cap at
    the window), from :func:`kv_bytes`.  Defined in Part I, "Inference"."""
    b = DTYPE_BYTES[kv_dtype]
    t = min(tokens, spec.sliding_window) if spec.sliding_window else tokens
    if spec.family == "gemma2" and spec.sliding_window:   # every other layer slides
        half = spec.num_layers // 2
        return kv_bytes(half, batch, t, spec.kv_dim, b) + kv_bytes(spec.num_layers - half, batch, tokens, spec.kv_dim, b)
    return kv_bytes(spec.num_layers, batch, t, spec.kv_dim, b)


def estimate_inference_spec(spec: ModelSpec, sc: InferenceScenario, pc: ParamCount | None = None,
                            shard: dict[str, float] | None = None) -> Breakdown:
    """Peak memory of ``generate`` on one GPU.  Defined in Part I, "Inference"."""
    pc = pc or count_params(spec)
    sh = {"weights": 1.0, "acts": 1.0, "layers": 1.0, "kv": 1.0}
    if shard:
        sh.update(shard)
    B, P, n = sc.batch, sc.prompt_len, sc.new_tokens
    T = P + max(n, 1) - 1                              # positions in the cache after the last step
    if spec.position == "learned" and P + n > spec.max_position_embeddings:
        raise ValueError(f"prompt_len + new_tokens = {P + n} exceeds {spec.name}'s max_position_embeddings "
                         f"{spec.max_position_embeddings} (learned positions)")
    c = DTYPE_BYTES[sc.compute_dtype]
    d, I, V = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    weights = weight_bytes(pc, spec, sc.weights, sc.group_size, sc.scale_bytes, sc.quantize_embeddings) * sh["weights"]
    kvb = DTYPE_BYTES[sc.kv_dtype]
    L = spec.num_layers
    layer_kv = kv_cache_bytes(spec, B, 1, sc.kv_dtype) / L       # one layer, one position
    static = sc.cache == "static"
    cache_len = P + n
    kv_final = (kv_cache_bytes(spec, B, cache_len, sc.kv_dtype) if static else
                kv_cache_bytes(spec, B, T, sc.kv_dtype)) * sh["kv"]
    kv_prefill = (kv_final if static else kv_cache_bytes(spec, B, P, sc.kv_dtype) * sh["kv"])
    tok = B * P
    # prefill transients of one layer (no autograd)
    norm_tmp = (4 * 2 + c if c < 4 else 2 * c) * d           # fp32 copy + normalised + output
    if spec.mlp == "gated":
        mlp_tmp = (3 * I * max(1, spec.experts_per_token) + 2.25 * d) * c
    elif spec.family == "gpt2":
        mlp_tmp = (5 * I + d) * c                         # gelu_new's Python intermediates
    else:
        mlp_tmp = (2 * I + d) * c
    attn_tmp = (2 * spec.q_dim + 2 * spec.kv_dim + d) * c + spec.q_dim * c
    layer_tmp = tok * (2 * d * c + max(norm_tmp, mlp_tmp, attn_tmp)) * sh["acts"]
    if sc.attention == "eager":
        layer_tmp += B * spec.num_heads * P * (P if not static else cache_len) * (4 + 2 * c) * sh["acts"]
    mask_tmp = 0.0   # measured: HF's static-cache masks and GQA stay within the fused kernels
    logits_rows = P if sc.full_logits else 1
    prefill_logits = B * logits_rows * V * c + B * V * 4
    prefill = dict(weights=weights, **{"kv cache": kv_prefill}, activations=layer_tmp, temporaries=mask_tmp,
                   logits=prefill_logits)
    # decode: final cache, one layer's growth copy, small per-token tensors, fp32 scores
    if static:
        dec_tmp = 0.0
    else:
        dec_tmp = layer_kv * T / 2 * 1.0
    dec_acts = B * (3 * I + 4 * d) * c
    decode = dict(weights=weights, **{"kv cache": kv_final}, activations=dec_acts, temporaries=dec_tmp,
                  logits=B * V * (c + 4 * 2))
    phases = {"prefill": sum(prefill.values()), "decode (last step)": sum(decode.values())}
    if n == 0:
        phases.pop("decode (last step)")
    peak_phase = max(phases, key=lambda k: phases[k])
    comp = prefill if peak_phase == "prefill" else decode
    return Breakdown(components={k: int(v) for k, v in comp.items()}, peak_phase=peak_phase,
                     phases={k: int(v) for k, v in phases.items()},
                     scenario={"model": spec.name, **sc.to_dict()}, stage="inference")

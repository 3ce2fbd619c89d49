"""Memory of text generation (``model.generate``): weights in their stored format, the KV
cache, and the transient tensors of prefill and of one decode step.

* **weights**: bytes per parameter of the format, plus its scales — int8: one scale per
  output channel; int4/nf4: one 16-bit scale per ``group_size`` weights (bitsandbytes nf4
  with double quantisation: 8-bit absmax per 64 plus an fp32 per 256 of those); fp8: one
  scale per tensor.  Embeddings, norms and the LM head stay 16-bit unless
  ``quantize_embeddings``.  ``quant_library`` names the library that quantized them, where it
  changes the bytes: torchao's ``quantize_`` also quantizes the LM head (a tied head gets a
  quantized copy of its own) and its int4 tinygemm layout pads each matrix; bitsandbytes'
  nf4 keeps an fp32 absmax per block (no double quantisation, ``BitsAndBytesConfig``'s
  default).
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
* **quantized matmuls** (:func:`quant_temporary_bytes`): torchao's int8 weight-only linear
  casts the whole weight to the activations' dtype at every call (the LM head's copy is the
  decode step's largest tensor); bitsandbytes' LLM.int8 multiplies into an int32 buffer.

Defined in Part I, "Inference".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ._common import DTYPE_BYTES, choice, dtype_name, flag, pos_int
from .breakdown import Breakdown
from .config import ModelSpec
from .params import ParamCount, count_params

__all__ = ["InferenceScenario", "estimate_inference_spec", "WEIGHT_FORMATS", "QUANT_LIBRARIES", "weight_bytes",
           "quant_temporary_bytes", "kv_bytes", "kv_cache_bytes"]

WEIGHT_FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "nf4")
#: Who quantized the weights: ``"auto"`` (the formats as the book's own layers store them),
#: ``"torchao"`` (``quantize_`` with ``Int8WeightOnlyConfig`` / ``Int4WeightOnlyConfig``) or
#: ``"bitsandbytes"`` (``BitsAndBytesConfig`` 8-bit or nf4), with the formats each one has.
QUANT_LIBRARIES = {"auto": WEIGHT_FORMATS, "torchao": ("int8", "int4"), "bitsandbytes": ("int8", "nf4")}
_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "fp8": 8, "int8": 8, "int4": 4, "nf4": 4}


@dataclass(frozen=True)
class InferenceScenario:
    """Inputs of a generation estimate (validated).  ``compute_dtype`` is the activations'
    dtype (bf16 unless weights are fp32/fp16); ``group_size`` the weights per scale of
    int4/nf4; ``cache`` ``"dynamic"`` (HF default) or ``"static"``; ``full_logits`` keeps the
    logits of every prompt position (a plain forward) instead of the last one;
    ``quant_library`` one of :data:`QUANT_LIBRARIES`."""

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
    quant_library: str = "auto"

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
        object.__setattr__(self, "kv_dtype", dtype_name(kv, "kv_dtype",
                                                          ("fp32", "bf16", "fp16", "fp8", "int8")))
        object.__setattr__(self, "cache", choice(self.cache, "cache", ("dynamic", "static")))
        flag(self.full_logits, "full_logits")
        object.__setattr__(self, "attention", choice(self.attention, "attention", ("sdpa", "flash", "eager")))
        object.__setattr__(self, "device", choice(self.device, "device", ("cuda", "cpu")))
        lib = choice(self.quant_library, "quant_library", tuple(QUANT_LIBRARIES))
        if self.weights not in ("fp32", "bf16", "fp16") and self.weights not in QUANT_LIBRARIES[lib]:
            raise ValueError(f"quant_library={lib!r} has no {self.weights!r} weights; it has "
                             f"{list(QUANT_LIBRARIES[lib])} (or use quant_library='auto')")
        object.__setattr__(self, "quant_library", lib)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _block_linears(spec: ModelSpec) -> list[tuple[int, int]]:
    """(in, out) of every ``nn.Linear`` weight of one block (MoE experts are 3-D parameters in
    ``transformers`` and the router a bare parameter: neither is an ``nn.Linear``)."""
    d, q, kv, I, S = spec.hidden_size, spec.q_dim, spec.kv_dim, spec.intermediate_size, spec.shared_expert_size
    out = [(d, q), (d, kv), (d, kv), (q, d)]
    if spec.num_experts == 1:
        out += [(d, I), (d, I), (I, d)] if spec.mlp == "gated" else [(d, I), (I, d)]
    if S:
        out += [(d, S), (d, S), (S, d), (d, 1)]
    return out


def _torchao_bytes(pc: ParamCount, spec: ModelSpec, fmt: str, group_size: int, scale_bytes: int) -> float:
    """torchao ``quantize_``: every ``nn.Linear`` weight, the LM head included (a tied head is
    replaced by a quantized copy of its own; the embedding stays 16-bit).  int8: a
    ``scale_bytes`` scale per output row; int4 (``Int4TilePackedTo4dTensor``): the matrix
    padded to in-features a multiple of 1024 and out-features of 8, half a byte a weight and
    ``scale_bytes`` (scale and zero point) per group.  The rest stays 16-bit."""
    if spec.family in ("gpt2", "gpt"):
        raise ValueError(f"quant_library='torchao' quantizes nn.Linear layers; {spec.name}'s projections are "
                         "not nn.Linear (GPT-2's Conv1D): use quant_library='auto'")
    up = lambda x, m: -(-x // m) * m  # noqa: E731
    mats = [(k, n, spec.num_layers) for k, n in _block_linears(spec)] + [(spec.hidden_size, spec.vocab_size, 1)]
    if fmt == "int8":
        q = sum(c * (k * n + n * scale_bytes) for k, n, c in mats)
    else:
        q = sum(c * (up(n, 8) * up(k, 1024) / 2 + up(k, 1024) / group_size * up(n, 8) * scale_bytes)
                for k, n, c in mats)
    head_counted = 0 if spec.tie_embeddings else spec.hidden_size * spec.vocab_size
    quantized = sum(c * k * n for k, n, c in mats[:-1]) + head_counted
    return (pc.total - quantized) * 2 + q


def weight_bytes(pc: ParamCount, spec: ModelSpec, fmt: str, group_size: int = 64, scale_bytes: int = 2,
                 quantize_embeddings: bool = False, quant_library: str = "auto") -> float:
    """Bytes of the weights stored as ``fmt``, scales included, as ``quant_library`` (one of
    :data:`QUANT_LIBRARIES`) stores them.  Defined in Part I, "Inference"."""
    lin = pc.linear_weights
    rest = pc.total - lin
    bits = _BITS[fmt]
    if fmt in ("fp32", "bf16", "fp16"):
        return pc.total * bits / 8
    if quant_library == "torchao":
        return _torchao_bytes(pc, spec, fmt, group_size, scale_bytes)
    rest_bytes = rest * (bits / 8 if quantize_embeddings else 2)
    shared = 3 if spec.shared_expert_size else 0         # Qwen-MoE's shared expert
    mats = spec.num_layers * (4 + spec.num_experts * (3 if spec.mlp == "gated" else 2) + shared)
    if fmt == "fp8":
        scales = mats * 4
    elif fmt == "int8":
        out_ch = spec.num_layers * (spec.q_dim + 2 * spec.kv_dim + spec.hidden_size +
                                    spec.num_experts * ((2 if spec.mlp == "gated" else 1) * spec.intermediate_size
                                                        + spec.hidden_size)
                                    + (2 * spec.shared_expert_size + spec.hidden_size if shared else 0))
        scales = out_ch * scale_bytes
    elif fmt == "nf4" and quant_library == "bitsandbytes":
        scales = lin / group_size * scale_bytes       # one absmax per block (fp32: scale_bytes 4)
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
    b = 1 if kv_dtype == "int8" else DTYPE_BYTES[kv_dtype]   # int8/fp8: per-tensor scales, negligible
    t = min(tokens, spec.sliding_window) if spec.sliding_window else tokens
    if spec.family == "gemma2" and spec.sliding_window:   # every other layer slides
        half = spec.num_layers // 2
        return kv_bytes(half, batch, t, spec.kv_dim, b) + kv_bytes(spec.num_layers - half, batch, tokens, spec.kv_dim, b)
    return kv_bytes(spec.num_layers, batch, t, spec.kv_dim, b)


def _moe_prefill_elems(spec: ModelSpec) -> float:
    """Per token, the elements a mixture-of-experts MLP holds at its transient peak in
    ``transformers``' grouped experts (``grouped_mm_experts_forward``): for each of the ``k``
    routed copies of the token, its gathered input (``d``) and the fused gate/up output
    (``2·I``) while ``masked_fill`` copies it (``2·I`` more) — or, as much, that output with
    ``act(gate)`` and the product; at the end the gathered input, the down projection's
    output, its weighted copy and that copy put back in token order (``4·d``) and their sum
    (``d``), whichever is larger.  Qwen-MoE runs its shared expert first (gate, act, up:
    ``3·S``) and keeps its output (``d``) while the routed experts run."""
    k, I, d, S = spec.experts_per_token, spec.intermediate_size, spec.hidden_size, spec.shared_expert_size
    return max(max(k * (4 * I + d), 4 * k * d + d) + (d if S else 0), 3 * S)


def quant_temporary_bytes(spec: ModelSpec, sc: InferenceScenario) -> tuple[float, float]:
    """Transient bytes the quantized matmuls add, (prefill, decode step).  torchao's int8
    weight-only linear (``Int8Tensor``, per-row scales) runs ``mm(x, w.t().to(x.dtype))`` then
    multiplies by the scales: a 16-bit copy of the whole weight and the unscaled product next
    to the output, at every call — in prefill the largest block matrix's copy (the unscaled
    product fits in the MLP's three intermediates of :func:`_prefill_layer_bytes`, of which
    only two are alive at once), in decode the LM head's copy (vocabulary × hidden) and its
    unscaled logits.
    bitsandbytes' LLM.int8 (``int8_scaled_mm``) quantizes the input (an fp16 copy and an int8
    copy: 3 bytes a value) and multiplies into an int32 buffer (4 bytes an output) before
    dequantizing: in prefill for the widest projection of the prompt.  Other formats: none
    measured.  Defined in Part I, "Inference"."""
    if sc.weights not in ("int8",) or sc.quant_library == "auto":
        return 0.0, 0.0
    c = DTYPE_BYTES[sc.compute_dtype]
    N, d, V = sc.batch * sc.prompt_len, spec.hidden_size, spec.vocab_size
    widest = max(n for _, n in _block_linears(spec))
    if sc.quant_library == "torchao":
        big = max(k * n for k, n in _block_linears(spec))
        return big * c, V * d * c + sc.batch * V * c
    return N * (4 * widest + 3 * d), sc.batch * (4 * widest + 3 * d)


def _prefill_layer_bytes(spec: ModelSpec, sc: InferenceScenario, c: int, cache_len: int) -> float:
    """Transient bytes of one layer during prefill (no autograd): the largest of the norm's,
    the MLP's and the attention's, over the residual stream and the layer's input."""
    d, I, P = spec.hidden_size, spec.intermediate_size, sc.prompt_len
    norm_tmp = (4 * 2 + c if c < 4 else 2 * c) * d           # fp32 copy + normalised + output
    if spec.mlp == "gated":
        # gate, up and act(gate) (a mixture of experts: :func:`_moe_prefill_elems`), plus
        # 2.25·d: the MLP's input and its output (2·d) and 0.25·d fitted on the tuning
        # generation cases of estimator_gpu.json (small per-token tensors: rotary cos/sin,
        # router logits); not derived
        mlp_tmp = ((_moe_prefill_elems(spec) if spec.num_experts > 1 else 3 * I) + 2.25 * d) * c
    elif spec.family == "gpt2":
        mlp_tmp = (5 * I + d) * c                         # gelu_new's Python intermediates
    else:
        mlp_tmp = (2 * I + d) * c
    if spec.parallel_residual:      # GPT-NeoX: the MLP runs while the attention's output and the
        mlp_tmp += 2 * d * c        # second LayerNorm's output are alive (x + attn(ln1 x) + mlp(ln2 x))
    attn_tmp = (2 * spec.q_dim + 2 * spec.kv_dim + d) * c + spec.q_dim * c
    layer = sc.batch * P * (2 * d * c + max(norm_tmp, mlp_tmp, attn_tmp))
    if sc.attention == "eager":   # scores (c), fp32 softmax (4) and its cast back (c), per head
        keys = cache_len if sc.cache == "static" else P
        layer += sc.batch * spec.num_heads * P * keys * (4 + 2 * c)
    return layer


def estimate_inference_spec(spec: ModelSpec, sc: InferenceScenario, pc: ParamCount | None = None,
                            shard: dict[str, float] | None = None) -> Breakdown:
    """Peak memory of ``generate`` on one GPU: the prefill (weights, the prompt's cache, one
    layer's transients, the last position's logits) and the last decode step (the full cache,
    the ``cat`` that grows it, one token's tensors).  Defined in Part I, "Inference"."""
    pc = pc or count_params(spec)
    sh = {"weights": 1.0, "acts": 1.0, "layers": 1.0, "kv": 1.0}
    sh.update(shard or {})
    B, P, n = sc.batch, sc.prompt_len, sc.new_tokens
    T = P + max(n, 1) - 1                              # positions in the cache after the last step
    if spec.position == "learned" and P + n > spec.max_position_embeddings:
        raise ValueError(f"prompt_len + new_tokens = {P + n} exceeds {spec.name}'s max_position_embeddings "
                         f"{spec.max_position_embeddings} (learned positions)")
    c = DTYPE_BYTES[sc.compute_dtype]
    d, I, V = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    weights = weight_bytes(pc, spec, sc.weights, sc.group_size, sc.scale_bytes, sc.quantize_embeddings,
                           sc.quant_library) * sh["weights"]
    q_pre, q_dec = quant_temporary_bytes(spec, sc)
    layer_kv = kv_cache_bytes(spec, B, 1, sc.kv_dtype) / spec.num_layers       # one layer, one position
    static, cache_len = sc.cache == "static", P + n
    kv_final = kv_cache_bytes(spec, B, cache_len if static else T, sc.kv_dtype) * sh["kv"]
    kv_prefill = kv_final if static else kv_cache_bytes(spec, B, P, sc.kv_dtype) * sh["kv"]
    # HF's static-cache masks and GQA measured to stay within the fused kernels: no mask term
    prefill_logits = B * (P if sc.full_logits else 1) * V * c + B * V * 4   # + generate's fp32 copy of the last row
    prefill = dict(weights=weights, **{"kv cache": kv_prefill}, temporaries=q_pre * sh["acts"], logits=prefill_logits,
                   activations=_prefill_layer_bytes(spec, sc, c, cache_len) * sh["acts"])
    # torch.cat builds one layer's new K (then V) while the old one is alive: half of a layer's
    # cache (``layer_kv`` counts K and V) at its final length; a static cache is written in place
    decode = dict(weights=weights, **{"kv cache": kv_final}, temporaries=(0.0 if static else layer_kv * T / 2) + q_dec,
                  activations=B * (3 * I + 4 * d) * c,   # one token: gate, up, act; hidden, norm, attn out, residual
                  logits=B * V * (c + 4 * 2))            # logits, their fp32 copy and the processed scores
    comps = {"prefill": {k: int(v) for k, v in prefill.items()},
             "decode (last step)": {k: int(v) for k, v in decode.items()}}
    if n == 0:
        comps.pop("decode (last step)")
    phases = {k: sum(v.values()) for k, v in comps.items()}
    peak_phase = max(phases, key=lambda k: phases[k])
    largest = max(prefill_logits, B * P * I * max(1, spec.experts_per_token) * c, layer_kv * cache_len, V * d * c)
    return Breakdown(components=comps[peak_phase], peak_phase=peak_phase, phases=phases,
                     scenario={"model": spec.name, **sc.to_dict()}, stage="inference", largest=int(largest))

"""Memory of one training step, component by component, for the code that actually runs.

The model is PyTorch eager autograd running a Hugging Face ``transformers`` decoder (or the
book's GPT) with ``loss = model(ids, labels=ids).loss; loss.backward(); opt.step();
opt.zero_grad(set_to_none=True)`` in steady state (the optimizer states exist).  Live
bytes are traced through the step:

* **forward** saves, per layer, every tensor autograd needs for backward.  Counted per token
  from the modules' code: the residual stream (only where an op keeps it: LayerNorm's input,
  an fp32 RMSNorm's input — a 16-bit RMSNorm keeps its fp32 copy instead), the norms'
  normalised outputs, the projections' inputs (under autocast each projection casts its fp32
  input to bf16 separately: 3 copies for q/k/v, 2 for gate/up, and the fp32 norm output is
  then freed),
  the rotary-embedded q and k and v, the fused attention's output and its fp32 log-sum-exp
  (``eager`` attention keeps the (h, s, s) softmax instead; fp32 with grouped-query attention
  falls back to the math kernel, which keeps it too), and the MLP's gate, activation,
  up and product (GPT-2's ``gelu_new`` is Python code and keeps 4 intermediates);
* **the loss** upcasts the logits to fp32 (HF's ``ForCausalLMLoss``); ``log_softmax`` keeps its
  fp32 output, and its backward adds two more fp32 (tokens × vocab) tensors — the peak of a
  short-sequence, large-vocabulary step;
* **backward** frees a layer's saved tensors as it allocates that layer's gradients, so the
  live bytes run linearly from "all activations" to "all gradients"; both ends are checked;
* **the optimizer step**: torch's default ``foreach`` Adam/AdamW allocates one temporary of
  the size of all trainable parameters (``_foreach_sqrt`` of the second moment); the
  single-tensor (CPU) loop only two of the largest parameter.

Defined in Part I, "Pretraining" (the step), "Activations in depth" (the per-layer terms)
and "Fine-tuning" (frozen layers, LoRA, QLoRA).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ._common import DTYPE_BYTES, choice, dtype_name, flag, pos_int
from .breakdown import Breakdown
from .config import ModelSpec
from .params import ParamCount, count_params

__all__ = ["TrainScenario", "estimate_training_spec", "OPTIMIZERS", "CHECKPOINTING", "ATTENTION",
           "LORA_TARGETS", "activation_bytes_per_layer"]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adam8bit", "adafactor")
OPTIMIZER_IMPLS = ("foreach", "fused", "for-loop")
CHECKPOINTING = ("none", "selective", "full")
ATTENTION = ("sdpa", "flash", "eager")
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
_STATE_PER_PARAM = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class TrainScenario:
    """Inputs of a training-step estimate (validated on construction).

    ``weights_dtype`` is the dtype the parameters are stored in; ``autocast`` runs matmuls in
    bf16/fp16 over fp32 weights; ``master_weights=True`` keeps an extra fp32 copy of
    16-bit weights for the optimizer (Megatron/DeepSpeed style mixed precision).
    ``trainable`` is ``"all"``, ``"last-k"`` (with ``last_k`` blocks), ``"lora"`` or ``"qlora"``.
    ``device`` ``"cuda"`` or ``"cpu"`` picks the attention kernel and optimizer loop torch uses there.
    """

    batch: int
    seq_len: int
    weights_dtype: str = "fp32"
    autocast: str = "none"
    master_weights: bool = False
    optimizer: str = "adamw"
    optimizer_impl: str = "auto"
    weight_decay: bool = True
    grad_accum: int = 1
    checkpointing: str = "none"
    attention: str = "sdpa"
    trainable: str = "all"
    last_k: int = 1
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
    keep_logits: bool = False
    device: str = "cuda"

    def __post_init__(self) -> None:
        pos_int(self.batch, "batch")
        pos_int(self.seq_len, "seq_len")
        object.__setattr__(self, "weights_dtype", dtype_name(self.weights_dtype, "weights_dtype", ("fp32", "bf16", "fp16")))
        ac = "none" if self.autocast in (None, False) else self.autocast
        object.__setattr__(self, "autocast", dtype_name(ac, "autocast", ("none", "bf16", "fp16")))
        if self.autocast != "none" and self.weights_dtype != "fp32":
            raise ValueError("autocast needs fp32 weights (it casts fp32 weights down per matmul); "
                             f"got weights_dtype={self.weights_dtype!r} with autocast={self.autocast!r}")
        flag(self.master_weights, "master_weights")
        if self.master_weights and self.weights_dtype == "fp32":
            raise ValueError("master_weights=True needs 16-bit weights (weights_dtype bf16 or fp16)")
        object.__setattr__(self, "optimizer", choice(self.optimizer, "optimizer", OPTIMIZERS))
        object.__setattr__(self, "optimizer_impl", choice(self.optimizer_impl, "optimizer_impl", ("auto",) + OPTIMIZER_IMPLS))
        flag(self.weight_decay, "weight_decay")
        pos_int(self.grad_accum, "grad_accum")
        object.__setattr__(self, "checkpointing", choice(self.checkpointing if self.checkpointing not in (None, False)
                                                          else "none", "checkpointing", CHECKPOINTING))
        object.__setattr__(self, "attention", choice(self.attention, "attention", ATTENTION))
        tr = self.trainable
        if isinstance(tr, int) and not isinstance(tr, bool):
            object.__setattr__(self, "last_k", tr)
            tr = "last-k"
        object.__setattr__(self, "trainable", choice(tr, "trainable", ("all", "last-k", "lora", "qlora")))
        pos_int(self.last_k, "last_k")
        pos_int(self.lora_rank, "lora_rank")
        targets = self.lora_targets
        if isinstance(targets, str):
            targets = ("q", "k", "v", "o", "gate", "up", "down") if targets == "all-linear" else \
                ("q", "k", "v", "o") if targets == "attn" else tuple(t.strip() for t in targets.split(","))
        if not isinstance(targets, (tuple, list)) or not targets or any(t not in LORA_TARGETS for t in targets):
            raise ValueError(f"lora_targets must be a non-empty list from {LORA_TARGETS} (or 'all-linear', 'attn'); "
                             f"got {self.lora_targets!r}")
        object.__setattr__(self, "lora_targets", tuple(targets))
        flag(self.keep_logits, "keep_logits")
        object.__setattr__(self, "device", choice(self.device, "device", ("cuda", "cpu")))

    @property
    def impl(self) -> str:
        if self.optimizer_impl != "auto":
            return self.optimizer_impl
        return "foreach" if self.device == "cuda" else "for-loop"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["lora_targets"] = list(self.lora_targets)
        return d


def _attn_backend(spec: ModelSpec, sc: TrainScenario, c: int) -> str:
    """Which kernel ``scaled_dot_product_attention`` picks (torch ≥ 2.5, no mask, causal)."""
    if sc.attention == "eager":
        return "eager"
    if sc.device == "cpu":
        return "flash"                       # the CPU flash kernel takes every dtype
    if c == 2 and spec.head_dim <= 256:
        return "flash"
    # fp32 on CUDA: the memory-efficient kernel, which does not take ``enable_gqa``; with GQA
    # torch falls back to the math kernel, which keeps the (h, s, s) softmax
    return "efficient" if spec.num_kv_heads == spec.num_heads else "math"


def activation_bytes_per_layer(spec: ModelSpec, sc: TrainScenario) -> dict[str, float]:
    """Bytes saved for backward per token by one decoder block, split into named parts, plus
    the ``(h, s, s)`` attention term per token (multiply by ``seq_len``).

    Defined in Part I, "Activations in depth"."""
    r = DTYPE_BYTES[sc.weights_dtype]                  # residual stream dtype
    c = DTYPE_BYTES[sc.autocast] if sc.autocast != "none" else r   # matmul output dtype
    ac = sc.autocast != "none"
    d, I, q, kv, h = spec.hidden_size, spec.intermediate_size, spec.q_dim, spec.kv_dim, spec.num_heads
    hf_rms = spec.norm == "rmsnorm"
    parts: dict[str, float] = {}
    book = spec.family == "gpt"
    # -- norms: LayerNorm keeps its output (+ mean/rstd); RMSNorm computes in fp32
    # a norm's output is saved only by the linear layers that read it; under autocast they
    # save their bf16 casts instead, so the fp32 output is freed
    if hf_rms:
        if spec.family in ("gemma", "gemma2"):
            one_norm = (4 if r < 4 else 0) + 4 + (0 if ac else r)
        else:
            one_norm = (4 if r < 4 else 0) + r + (0 if ac else r)
    else:
        one_norm = (0 if ac else r) + 8 / d          # LN keeps its input, mean and rstd; output only if read
    parts["norms"] = spec.norms_per_layer * one_norm * d
    # the residual stream is saved only where an op keeps it: LayerNorm (its input), or an
    # fp32 RMSNorm (``x.to(float32)`` is then the same tensor); a 16-bit RMSNorm keeps its fp32 copy
    parts["residual"] = 2 * r * d if (not hf_rms or r == 4) else 0.0
    if spec.norms_per_layer == 4:                     # gemma2 post-norms keep their inputs too
        parts["residual"] += 2 * c * d
    # -- inputs cast by autocast for the projections
    n_in = (1 if spec.fused_qkv else 3) + (1 if (spec.fused_gate_up or spec.mlp == "plain") else 2)
    parts["casts"] = n_in * c * d if ac else 0.0
    # -- attention
    backend = _attn_backend(spec, sc, c)
    rep = spec.num_heads // spec.num_kv_heads
    if spec.fused_qkv:
        qkv = (q + 2 * kv) * c
        if spec.family == "gpt_neox":
            qkv += 2 * q * c                          # rotary on part of the dims: new q and k by cat
        if book and rep > 1:
            qkv += 2 * q * c                          # repeat_interleave copies of k and v
    else:
        qkv = (q + 2 * kv) * c
    parts["qkv"] = qkv
    parts["attn_out"] = q * c     # fused kernels lay out (B, s, h, hd): the reshape for o_proj is a view
    s2 = 0.0
    if backend in ("flash", "efficient"):
        parts["lse"] = 4 * h
    elif backend == "math":
        parts["qkv"] += 2 * rep * kv * c + q * c      # repeated k, v and scaled q
        s2 = h * c                                    # the softmax, saved for backward
    else:  # eager
        if not book and rep > 1:
            parts["qkv"] += 2 * q * c                 # repeat_kv copies
        s2 = h * (4 + (c if c < 4 else 0)) if not book else h * c
    # -- MLP
    if spec.mlp == "gated":
        mlp = 4 * I * c
        if spec.num_experts > 1:
            mlp = spec.experts_per_token * (4 * I * c + 2 * d * c) + 4 * spec.num_experts * 3
    elif spec.family == "gpt2":
        # gelu_new in Python keeps 4 intermediates + its output; under CUDA autocast ``pow`` runs
        # in fp32, so the fp32 copy of the input, tanh and 1 + tanh are fp32 and the output is cast
        mlp = 5 * I * c if not (ac and sc.device == "cuda") else I * (4 + 4 + c + 4 + c)
    else:
        mlp = 2 * I * c
    parts["mlp"] = mlp
    if spec.dropout > 0:
        parts["dropout"] = 2 * d * (c + 1)
    return {"per_token": sum(parts.values()), "per_token_s": s2, **parts}


def _lora_targets_dims(spec: ModelSpec, targets: tuple[str, ...]) -> list[tuple[int, int]]:
    d, I, q, kv = spec.hidden_size, spec.intermediate_size, spec.q_dim, spec.kv_dim
    dims = {"q": (d, q), "k": (d, kv), "v": (d, kv), "o": (q, d), "gate": (d, I), "up": (d, I), "down": (I, d)}
    if spec.mlp == "plain":
        dims.pop("gate")
    return [dims[t] for t in targets if t in dims]


def estimate_training_spec(spec: ModelSpec, sc: TrainScenario, pc: ParamCount | None = None,
                           shard: dict[str, float] | None = None) -> Breakdown:
    """Peak memory of one steady-state training step on one GPU.

    ``shard`` (from :mod:`vramlib.estimate.parallel`) divides weights, gradients, optimizer
    states and activations among GPUs.  Defined in Part I, "Pretraining"."""
    pc = pc or count_params(spec)
    sh = {"weights": 1.0, "grads": 1.0, "optim": 1.0, "acts": 1.0, "layers": 1.0, "gather": 0.0, "ddp_buckets": 0.0}
    if shard:
        sh.update(shard)
    B, s = sc.batch, sc.seq_len
    if spec.position == "learned" and s > spec.max_position_embeddings:
        raise ValueError(f"seq_len {s} exceeds {spec.name}'s max_position_embeddings "
                         f"{spec.max_position_embeddings} (learned positions)")
    tokens = B * s
    wb = DTYPE_BYTES[sc.weights_dtype]
    c = DTYPE_BYTES[sc.autocast] if sc.autocast != "none" else wb
    ac = sc.autocast != "none"
    L, V, d = spec.num_layers, spec.vocab_size, spec.hidden_size
    P = pc.total
    # pipeline stage 0 under 1F1B keeps min(pp, micro-batches) micro-batches of its L/pp layers
    L_eff = L * sh["layers"] * min(sh.get("pp", 1.0), sc.grad_accum)

    # ---- which parameters train
    lora_params = 0
    if sc.trainable == "all":
        P_train = P
        train_layers = L_eff
    elif sc.trainable == "last-k":
        if sc.last_k > L:
            raise ValueError(f"last_k={sc.last_k} exceeds the model's {L} layers")
        P_train = sc.last_k * pc.per_layer + pc.final_norm
        train_layers = min(sc.last_k, L_eff)
    else:
        per_layer_lora = sum(sc.lora_rank * (i + o) for i, o in _lora_targets_dims(spec, sc.lora_targets))
        lora_params = per_layer_lora * L
        P_train = lora_params
        train_layers = L_eff

    # ---- weights
    if sc.trainable == "qlora":
        lin = pc.linear_weights
        base = (P - lin) * 2 + lin * 0.5 + lin / 64 * (1 + 4 / 256) + 0  # nf4 + 8-bit absmax (double quant)
        weights = base * sh["weights"] + lora_params * 4
    else:
        weights = P * wb * sh["weights"] + (lora_params * 4 if sc.trainable == "lora" else 0)
    master = P_train * 4 * sh["optim"] if sc.master_weights else 0
    gb = 4 if sc.trainable in ("lora", "qlora") else wb   # PEFT keeps adapters in fp32
    grads = P_train * gb * sh["grads"]
    sb = 4 if (sc.master_weights or sc.trainable in ("lora", "qlora")) else wb
    if sc.optimizer in _STATE_PER_PARAM:
        optim = P_train * sb * _STATE_PER_PARAM[sc.optimizer]
    elif sc.optimizer == "adam8bit":
        optim = P_train * (2 + 2 * 4 / 2048)
    else:  # adafactor: factored second moment of matrices (rows + columns), no first moment
        mats = (pc.linear_weights if sc.trainable == "all" else 0)
        if sc.trainable == "all":
            shape_sum = L * (spec.hidden_size * 2 + spec.q_dim + spec.kv_dim * 2 + spec.hidden_size) \
                + L * spec.num_experts * (spec.hidden_size + spec.intermediate_size) * (3 if spec.mlp == "gated" else 2)
            optim = (P_train - mats) * sb + shape_sum * sb
        else:
            optim = P_train * sb * 0.05
    optim *= sh["optim"]

    # ---- optimizer step temporaries
    largest = max(V * d, spec.intermediate_size * d)
    if sc.optimizer in ("adam", "adamw"):
        if sc.impl == "foreach":
            step_tmp = P_train * sb * sh["optim"] * (1 + (0 if (sc.optimizer == "adamw" or not sc.weight_decay) else 1))
        elif sc.impl == "fused":
            step_tmp = 0
        else:
            step_tmp = 2 * min(largest, P_train) * sb
    elif sc.optimizer == "adafactor":
        step_tmp = 2 * min(largest, P_train) * 4
    else:
        step_tmp = 0

    # ---- activations saved for backward
    per = activation_bytes_per_layer(spec, sc)
    inner = per.get("qkv", 0) + per.get("attn_out", 0) + per.get("lse", 0) + per.get("mlp", 0) + per.get("casts", 0) / 2
    layer_bytes = tokens * (per["per_token"] - inner * (1 - sh["acts"]) + per["per_token_s"] * s * sh["acts"])
    if sc.trainable == "lora" or sc.trainable == "qlora":
        layer_bytes += tokens * sum(sc.lora_rank * c + o * c for _, o in _lora_targets_dims(spec, sc.lora_targets))
    r = wb
    if sc.checkpointing == "full":
        saved_layer = tokens * r * d
        recompute = layer_bytes
    elif sc.checkpointing == "selective":
        attn_part = tokens * (per.get("qkv", 0) + per.get("attn_out", 0) + per.get("lse", 0) + per["per_token_s"] * s)
        saved_layer = layer_bytes - attn_part
        recompute = attn_part
    else:
        saved_layer = layer_bytes
        recompute = 0.0
    embed_out = tokens * r * d * (1 if (sc.trainable == "all" and (spec.norm != "rmsnorm" or r == 4)) else 0)
    final = tokens * d * ((4 if r < 4 else 0) + 2 * r if spec.norm == "rmsnorm" else (4 if ac else r))
    acts_layers = saved_layer * train_layers
    acts = embed_out + acts_layers + final
    if sc.attention == "eager" and spec.family != "gpt":
        acts += B * s * s * c                          # HF's 4-D float causal mask, shared by all layers
    # autocast keeps bf16 copies of the weights it cast, for backward (freed layer by layer)
    cast_w = 0.0
    if ac:
        cast_w = (pc.linear_weights * sh["weights"] + V * d) * c
    # under full checkpointing the blocks save nothing, so their casts die when the autocast
    # region ends; only the LM head's cast, saved by its matmul, lives into backward
    cast_w_bwd = (V * d * c if ac else 0.0) if sc.checkpointing == "full" else cast_w
    # ---- logits and loss
    hf_upcast = spec.family != "gpt"
    lsm_b = 4 if (hf_upcast or ac) else c
    logit_kept = tokens * V * c if sc.keep_logits else 0
    fwd_loss = tokens * V * (c + (4 if c < lsm_b or (hf_upcast and c < 4) else 0) + lsm_b)
    bwd_loss = tokens * V * 3 * lsm_b
    fwd_loss *= sh["acts"]                              # vocabulary-parallel logits under TP
    bwd_loss *= sh["acts"]
    head_grad = (V * d * gb if (sc.trainable == "all" and not spec.tie_embeddings) else 0)

    # ---- phases (live tensor bytes)
    bk = P_train * gb * sh["ddp_buckets"]             # DDP's gradient buckets, counted with the gradients
    g0 = grads if sc.grad_accum > 1 else 0
    T_layer = tokens * c * (2 * spec.intermediate_size * max(1, spec.experts_per_token) + 2 * d)
    phases: dict[str, float] = {}
    comp: dict[str, dict[str, float]] = {}

    def put(name: str, **kw: float) -> None:
        kw["gradients"] = kw.get("gradients", 0.0) + bk
        comp[name] = kw
        phases[name] = sum(kw.values())

    W = dict(weights=weights, **{"master weights": master}, **{"optimizer states": optim})
    put("forward (loss)", **W, gradients=g0, activations=acts, temporaries=cast_w,
        logits=fwd_loss + (logit_kept if c != 4 and hf_upcast else 0))
    put("backward (loss)", **W, gradients=g0, activations=acts, temporaries=cast_w_bwd, logits=bwd_loss + logit_kept)
    put("backward (first layer)", **W, gradients=max(g0, head_grad), activations=acts,
        temporaries=cast_w_bwd + recompute + T_layer, logits=logit_kept)
    grads_layers = max(g0, grads - (V * d * gb if (spec.tie_embeddings is False and sc.trainable == "all") else 0))
    put("backward (last layer)", **W, gradients=grads_layers, activations=embed_out + saved_layer,
        temporaries=(cast_w_bwd / max(L, 1)) + recompute + T_layer, logits=logit_kept)
    emb_tmp = V * d * gb if (sc.trainable == "all" and spec.tie_embeddings) else 0
    put("backward (embedding)", **W, gradients=grads, activations=0, temporaries=emb_tmp, logits=logit_kept)
    put("optimizer step", **W, gradients=grads, temporaries=step_tmp, logits=logit_kept)
    peak_phase = max(phases, key=lambda k: phases[k])
    components = {k: int(v) for k, v in comp[peak_phase].items()}
    largest = max(tokens * V * lsm_b * sh["acts"], tokens * spec.intermediate_size * c, V * d * max(gb, wb))
    return Breakdown(components=components, peak_phase=peak_phase, phases={k: int(v) for k, v in phases.items()},
                     scenario={"model": spec.name, **sc.to_dict()}, stage="train", largest=int(largest))

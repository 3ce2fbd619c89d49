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
           "LORA_TARGETS", "activation_bytes_per_layer", "QLORA_RECIPES"]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adam8bit", "paged-adamw", "paged-adam8bit", "adafactor")
OPTIMIZER_IMPLS = ("foreach", "fused", "for-loop")
CHECKPOINTING = ("none", "selective", "full")
ATTENTION = ("sdpa", "flash", "eager")
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
#: ``"peft"``: the recipe as people run it — ``BitsAndBytesConfig(load_in_4bit=True,
#: bnb_4bit_quant_type="nf4")`` (compute dtype fp32, bitsandbytes' default) then peft's
#: ``prepare_model_for_kbit_training``, which upcasts every non-quantized parameter
#: (embeddings, norms, LM head) to fp32, so the whole step computes in fp32;
#: ``"bf16"``: ``bnb_4bit_compute_dtype=torch.bfloat16`` and no upcast.
QLORA_RECIPES = ("peft", "bf16")
_STATE_PER_PARAM = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}
#: bitsandbytes' 8-bit optimizers: two 1-byte states per parameter plus one fp32 absmax per
#: block of 256 for each (``bitsandbytes/optim/optimizer.py``, ``Optimizer2State.init_state``).
_ADAM8BIT_BYTES = 2 + 2 * 4 / 256
#: ``Optimizer2State.init_state``: tensors under ``min_8bit_size`` (4096) elements keep two
#: fp32 states even in an 8-bit optimizer; a paged optimizer allocates the states of tensors
#: of at least 1e5 elements (``get_state_buffer``) in CUDA managed memory, outside torch's
#: caching allocator (they migrate to the host under pressure), the rest as plain tensors.
_BNB_MIN_8BIT, _BNB_MIN_PAGED = 4096, 100_000
#: NF4 storage as the recipe gets it: 4 bits a weight and an fp32 absmax per block of 64
#: (``BitsAndBytesConfig``'s default ``bnb_4bit_use_double_quant=False``; the QLoRA paper's
#: double quantisation, Dettmers et al. 2023, section 3, would store an 8-bit absmax and an
#: fp32 scale per 256 of those instead).  Measured: the weights of the recipe's runs
#: (``recipes_gpu.json``) match this to 0.1 %, the double-quantised size is 3 % short.
_NF4_BYTES = 0.5 + 4 / 64


def _lora_targets(value: Any) -> tuple[str, ...]:
    """``"all-linear"``, ``"attn"``, ``"q,k,v"`` or a list → a tuple of :data:`LORA_TARGETS`."""
    t = value
    if isinstance(t, str):
        t = (LORA_TARGETS if t == "all-linear" else ("q", "k", "v", "o") if t == "attn"
             else tuple(x.strip() for x in t.split(",")))
    if not isinstance(t, (tuple, list)) or not t or any(x not in LORA_TARGETS for x in t):
        raise ValueError(f"lora_targets must be a non-empty list from {LORA_TARGETS} (or 'all-linear', 'attn'); "
                         f"got {value!r}")
    return tuple(t)


@dataclass(frozen=True)
class TrainScenario:
    """Inputs of a training-step estimate (validated on construction).

    ``weights_dtype`` is the dtype the parameters are stored in; ``autocast`` runs matmuls in
    bf16/fp16 over fp32 weights; ``master_weights=True`` keeps an extra fp32 copy of
    16-bit weights for the optimizer (Megatron/DeepSpeed style mixed precision).
    ``trainable`` is ``"all"``, ``"last-k"`` (with ``last_k`` blocks), ``"lora"`` or ``"qlora"``
    (``qlora_recipe``: :data:`QLORA_RECIPES`).  ``device`` ``"cuda"`` or ``"cpu"`` picks the
    attention kernel and optimizer loop torch uses there.
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
    lora_targets: tuple[str, ...] = LORA_TARGETS
    qlora_recipe: str = "peft"
    keep_logits: bool = False
    device: str = "cuda"

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        pos_int(self.batch, "batch")
        pos_int(self.seq_len, "seq_len")
        put("weights_dtype", dtype_name(self.weights_dtype, "weights_dtype", ("fp32", "bf16", "fp16")))
        put("autocast", dtype_name("none" if self.autocast in (None, False) else self.autocast,
                                   "autocast", ("none", "bf16", "fp16")))
        if self.autocast != "none" and self.weights_dtype != "fp32":
            raise ValueError("autocast needs fp32 weights (it casts fp32 weights down per matmul); "
                             f"got weights_dtype={self.weights_dtype!r} with autocast={self.autocast!r}")
        flag(self.master_weights, "master_weights")
        if self.master_weights and self.weights_dtype == "fp32":
            raise ValueError("master_weights=True needs 16-bit weights (weights_dtype bf16 or fp16)")
        put("optimizer", choice(self.optimizer, "optimizer", OPTIMIZERS))
        put("optimizer_impl", choice(self.optimizer_impl, "optimizer_impl", ("auto",) + OPTIMIZER_IMPLS))
        flag(self.weight_decay, "weight_decay")
        pos_int(self.grad_accum, "grad_accum")
        ck = self.checkpointing if self.checkpointing not in (None, False) else "none"
        put("checkpointing", choice(ck, "checkpointing", CHECKPOINTING))
        put("attention", choice(self.attention, "attention", ATTENTION))
        tr = self.trainable
        if isinstance(tr, int) and not isinstance(tr, bool):
            put("last_k", tr)
            tr = "last-k"
        put("trainable", choice(tr, "trainable", ("all", "last-k", "lora", "qlora")))
        pos_int(self.last_k, "last_k")
        pos_int(self.lora_rank, "lora_rank")
        put("lora_targets", _lora_targets(self.lora_targets))
        put("qlora_recipe", choice(self.qlora_recipe, "qlora_recipe", QLORA_RECIPES))
        flag(self.keep_logits, "keep_logits")
        put("device", choice(self.device, "device", ("cuda", "cpu")))

    @property
    def impl(self) -> str:
        if self.optimizer_impl != "auto":
            return self.optimizer_impl
        return "foreach" if self.device == "cuda" else "for-loop"

    @property
    def adapters(self) -> bool:
        """Whether only LoRA adapters train (LoRA or QLoRA)."""
        return self.trainable in ("lora", "qlora")

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
    # fp32 on CUDA (the peft QLoRA recipe too: its tinyllama runs at two sequence lengths,
    # recipes_gpu.json and fit_gpu.json, differ by 4 bytes per head, key and token and layer): the memory-efficient kernel, which does not take ``enable_gqa``; with GQA
    # torch falls back to the math kernel, which keeps the (h, s, s) softmax
    return "efficient" if spec.num_kv_heads == spec.num_heads else "math"


def _compute_dtypes(sc: TrainScenario) -> tuple[int, int]:
    """Bytes of the residual stream ``r`` and of matmul outputs ``c``.  The peft QLoRA recipe
    computes in fp32 (fp32 embeddings, norms and bitsandbytes compute dtype)."""
    if sc.trainable == "qlora" and sc.qlora_recipe == "peft":
        return 4, 4
    r = DTYPE_BYTES[sc.weights_dtype]
    return r, (DTYPE_BYTES[sc.autocast] if sc.autocast != "none" else r)


def _norm_parts(spec: ModelSpec, r: int, ac: bool) -> tuple[float, float]:
    """Per token and layer: bytes the norms keep, and the residual-stream copies kept."""
    d = spec.hidden_size
    if spec.norm == "rmsnorm":   # computes in fp32: a 16-bit input gets an fp32 copy
        out = 4 if spec.family in ("gemma", "gemma2") else r    # Gemma keeps its output in fp32
        one = (4 if r < 4 else 0) + out + (0 if ac else r)
    else:                        # LayerNorm keeps mean and rstd (8 B per token over d)
        one = (0 if ac else r) + 8 / d
    # the residual is saved only where an op keeps it: LayerNorm (its input), or an fp32
    # RMSNorm (``x.to(float32)`` is then the same tensor)
    residual = 2 * r * d if (spec.norm != "rmsnorm" or r == 4) else 0.0
    return spec.norms_per_layer * one * d, residual


def _attention_parts(spec: ModelSpec, sc: TrainScenario, c: int) -> tuple[dict[str, float], float]:
    """Per token and layer: q/k/v, attention output and log-sum-exp bytes; and the (h, s, s)
    term per token (multiply by ``seq_len``)."""
    q, kv, h = spec.q_dim, spec.kv_dim, spec.num_heads
    book = spec.family == "gpt"
    rep = spec.num_heads // spec.num_kv_heads
    qkv = (q + 2 * kv) * c
    if spec.fused_qkv and spec.family == "gpt_neox":
        qkv += 2 * q * c                          # rotary on part of the dims: new q and k by cat
    if spec.fused_qkv and book and rep > 1:
        qkv += 2 * q * c                          # repeat_interleave copies of k and v
    parts = {"qkv": qkv, "attn_out": q * c}       # fused kernels: the reshape for o_proj is a view
    backend = _attn_backend(spec, sc, c)
    s2 = 0.0
    if backend in ("flash", "efficient"):
        parts["lse"] = 4 * h                      # fp32 log-sum-exp per head
    elif backend == "math":
        # the math kernel keeps the scaled q, the (repeated) scaled k^T and the repeated v,
        # not its inputs: the rotary products keep only cos and sin
        parts["qkv"] = 3 * q * c
        s2 = h * c                                # the softmax, saved for backward
    else:  # eager: fp32 softmax (+ its 16-bit cast) per head and key
        if not book and rep > 1:
            parts["qkv"] += 2 * q * c             # repeat_kv copies
        s2 = h * (4 + (c if c < 4 else 0)) if not book else h * c
    return parts, s2


def _mlp_part(spec: ModelSpec, sc: TrainScenario, c: int, ac: bool) -> float:
    """Per token and layer: what the MLP keeps for backward."""
    d, I = spec.hidden_size, spec.intermediate_size
    if spec.mlp == "gated":                       # gate, act(gate), up, product
        if spec.num_experts > 1:                  # + each routed expert's input and output, fp32 router
            routed = spec.experts_per_token * (4 * I * c + 2 * d * c) + 4 * spec.num_experts * 3
            # Qwen-MoE's shared expert: a gated MLP (4 of its width), its output kept by the
            # sigmoid gate's product, and the gate's logit and sigmoid (1 each)
            S = spec.shared_expert_size
            return routed + ((4 * S + d + 2) * c if S else 0)
        return 4 * I * c
    if spec.family == "gpt2":
        # gelu_new in Python keeps 4 intermediates + its output; under CUDA autocast ``pow`` runs
        # in fp32, so the fp32 copy of the input, tanh and 1 + tanh are fp32 and the output is cast
        return 5 * I * c if not (ac and sc.device == "cuda") else I * (4 + 4 + c + 4 + c)
    return 2 * I * c                              # fc output and activation


def activation_bytes_per_layer(spec: ModelSpec, sc: TrainScenario) -> dict[str, float]:
    """Bytes saved for backward per token by one decoder block, split into named parts, plus
    the ``(h, s, s)`` attention term per token (multiply by ``seq_len``).

    Defined in Part I, "Activations in depth"."""
    r, c = _compute_dtypes(sc)
    ac = sc.autocast != "none"
    d = spec.hidden_size
    parts: dict[str, float] = {}
    parts["norms"], parts["residual"] = _norm_parts(spec, r, ac)
    if spec.norms_per_layer == 4:                 # gemma2 post-norms keep their inputs too
        parts["residual"] += 2 * c * d
    # inputs cast by autocast for the projections (q, k, v, gate, up; fused ones once)
    n_in = (1 if spec.fused_qkv else 3) + (1 if (spec.fused_gate_up or spec.mlp == "plain") else 2)
    parts["casts"] = n_in * c * d if ac else 0.0
    attn, s2 = _attention_parts(spec, sc, c)
    parts.update(attn)
    parts["mlp"] = _mlp_part(spec, sc, c, ac)
    if spec.dropout > 0:
        parts["dropout"] = 2 * d * (c + 1)        # dropout output and its 1-byte mask, twice
    return {"per_token": sum(parts.values()), "per_token_s": s2, **parts}


def _lora_targets_dims(spec: ModelSpec, targets: tuple[str, ...]) -> list[tuple[int, int]]:
    """(in, out) of every targeted matrix of one block; raises if none exists in the model."""
    d, I, q, kv = spec.hidden_size, spec.intermediate_size, spec.q_dim, spec.kv_dim
    dims = {"q": (d, q), "k": (d, kv), "v": (d, kv), "o": (q, d), "gate": (d, I), "up": (d, I), "down": (I, d)}
    if spec.mlp == "plain":
        dims.pop("gate")
    found = [dims[t] for t in targets if t in dims]
    if not found:
        raise ValueError(f"lora_targets {list(targets)} match no matrix of {spec.name} (a plain MLP has "
                         f"no 'gate'); use some of {sorted(dims)} or 'all-linear'")
    return found


@dataclass(frozen=True)
class _Step:
    """The numbers every part of the estimate needs (one place, so the parts stay short)."""

    spec: ModelSpec
    sc: TrainScenario
    pc: ParamCount
    sh: dict[str, float]
    r: int                 # residual-stream / stored-weight bytes
    c: int                 # matmul output bytes
    tokens: int
    layers: float          # blocks whose activations one GPU holds (pipeline: micro-batches in flight)

    @property
    def ac(self) -> bool:
        return self.sc.autocast != "none"


def _make_step(spec: ModelSpec, sc: TrainScenario, pc: ParamCount, shard: dict[str, float] | None) -> _Step:
    sh = {"weights": 1.0, "grads": 1.0, "optim": 1.0, "acts": 1.0, "layers": 1.0, "gather": 0.0,
          "ddp_buckets": 0.0, "pp": 1.0}
    sh.update(shard or {})
    sh.setdefault("logits", sh["acts"])     # parallel layouts: the head split like the blocks or not
    sh.setdefault("step", sh["optim"])      # parallel layouts: foreach temporaries of the largest group
    if spec.position == "learned" and sc.seq_len > spec.max_position_embeddings:
        raise ValueError(f"seq_len {sc.seq_len} exceeds {spec.name}'s max_position_embeddings "
                         f"{spec.max_position_embeddings} (learned positions)")
    if sc.trainable == "last-k" and sc.last_k > spec.num_layers:
        raise ValueError(f"last_k={sc.last_k} exceeds the model's {spec.num_layers} layers")
    r, c = _compute_dtypes(sc)
    # pipeline stage 0 under 1F1B keeps min(pp, micro-batches) micro-batches of its L/pp layers
    layers = spec.num_layers * sh["layers"] * min(sh["pp"], sc.grad_accum)
    return _Step(spec, sc, pc, sh, r, c, sc.batch * sc.seq_len, layers)


def trainable_params(st: _Step) -> tuple[int, int]:
    """(parameters that train, of which LoRA adapter parameters).  Defined in Part I, "Fine-tuning"."""
    spec, sc, pc = st.spec, st.sc, st.pc
    if sc.trainable == "all":
        return pc.total, 0
    if sc.trainable == "last-k":
        return sc.last_k * pc.per_layer + pc.final_norm, 0
    per_layer = sum(sc.lora_rank * (i + o) for i, o in _lora_targets_dims(spec, sc.lora_targets))
    return per_layer * spec.num_layers, per_layer * spec.num_layers


def training_weight_bytes(st: _Step, lora: int) -> float:
    """Stored weights on one GPU; LoRA/QLoRA adapters are fp32 (peft's default
    ``autocast_adapter_dtype=True``).  Defined in Part I, "Fine-tuning"."""
    pc, sc = st.pc, st.sc
    if sc.trainable == "qlora":
        rest_b = 4 if sc.qlora_recipe == "peft" else 2      # peft upcasts what is not quantized
        base = (pc.total - pc.linear_weights) * rest_b + pc.linear_weights * _NF4_BYTES
        return base * st.sh["weights"] + lora * 4
    return pc.total * DTYPE_BYTES[sc.weights_dtype] * st.sh["weights"] + lora * 4


def _state_bytes(st: _Step) -> tuple[int, int]:
    """(gradient bytes per element, optimizer-state bytes per element)."""
    wb = DTYPE_BYTES[st.sc.weights_dtype]
    gb = 4 if st.sc.adapters else wb
    return gb, 4 if (st.sc.master_weights or st.sc.adapters) else wb


def _layer_vectors(st: _Step) -> float:
    """Elements of one block's 1-D parameters (norms, biases): the block minus its matrices."""
    spec = st.spec
    d, q, kv, I, E = spec.hidden_size, spec.q_dim, spec.kv_dim, spec.intermediate_size, spec.num_experts
    n_mat = 3 if spec.mlp == "gated" else 2
    shared = 3 * d * spec.shared_expert_size + d if spec.shared_expert_size else 0
    return st.pc.per_layer - (2 * d * q + 2 * d * kv + E * n_mat * d * I + (d * E if E > 1 else 0) + shared)


def _adafactor_elems(st: _Step) -> float:
    """Elements of Adafactor's state: torch's ``Adafactor`` keeps no first moment, a row and a
    column vector for each matrix (factored second moment) and a full one for vectors."""
    spec, pc, sc = st.spec, st.pc, st.sc
    d, q, kv, I, E = spec.hidden_size, spec.q_dim, spec.kv_dim, spec.intermediate_size, spec.num_experts
    if sc.adapters:                               # A (r × in) and B (out × r) per target
        return spec.num_layers * sum(2 * sc.lora_rank + i + o for i, o in _lora_targets_dims(spec, sc.lora_targets))
    n_mat = 3 if spec.mlp == "gated" else 2
    router = d + E if E > 1 else 0                # factored state of the MoE router
    S = spec.shared_expert_size                   # Qwen-MoE's shared expert and its d → 1 gate
    router += 3 * (S + d) + d + 1 if S else 0
    rows_cols = (q + d) + 2 * (kv + d) + (d + q) + E * n_mat * (I + d) + router
    vectors = _layer_vectors(st)                  # norms, biases
    if sc.trainable == "last-k":
        return sc.last_k * (rows_cols + vectors) + pc.final_norm
    emb = (spec.vocab_size + d) * (1 if spec.tie_embeddings else 2) + (spec.max_position_embeddings + d
                                                                         if pc.position else 0)
    return spec.num_layers * (rows_cols + vectors) + emb + pc.final_norm


def _bnb_state_bytes(st: _Step, p_train: int) -> float:
    """bitsandbytes' ``AdamW8bit``, ``PagedAdamW`` and ``PagedAdamW8bit``: the state bytes in
    torch's allocator (:data:`_BNB_MIN_8BIT`, :data:`_BNB_MIN_PAGED`).  1-D tensors (norms,
    biases: ``hidden_size`` elements) are below the paging threshold; LoRA adapters too."""
    sc, d = st.sc, st.spec.hidden_size
    vec = 0.0 if sc.adapters else (sc.last_k if sc.trainable == "last-k" else st.spec.num_layers) * \
        _layer_vectors(st) + st.pc.final_norm
    mats = p_train - vec
    vec_b = 8 if d < _BNB_MIN_8BIT else _ADAM8BIT_BYTES
    if sc.optimizer == "adam8bit":
        return mats * _ADAM8BIT_BYTES + vec * vec_b
    if sc.adapters:
        return p_train * (8 if sc.optimizer == "paged-adamw" else _ADAM8BIT_BYTES)
    if sc.optimizer == "paged-adamw":
        return vec * 8
    return mats * 2 * 4 / 256 + vec * vec_b       # paged 8-bit: the block absmax stays in torch


def optimizer_bytes(st: _Step, p_train: int) -> float:
    """Optimizer states on one GPU.  Defined in Part I, "Pretraining"."""
    _, sb = _state_bytes(st)
    opt = st.sc.optimizer
    if opt in _STATE_PER_PARAM:
        b = p_train * sb * _STATE_PER_PARAM[opt]
    elif opt in ("adam8bit", "paged-adamw", "paged-adam8bit"):
        b = _bnb_state_bytes(st, p_train)
    else:
        b = _adafactor_elems(st) * sb
    return b * st.sh["optim"]


def step_temporaries(st: _Step, p_train: int) -> float:
    """Temporaries of ``optimizer.step()``: foreach Adam's ``_foreach_sqrt`` of the second
    moment (one of every trainable tensor; plain Adam with weight decay a second for the
    decayed gradient); the for-loop implementation two of the largest parameter; Adafactor
    two fp32 of the largest.  Defined in Part I, "Pretraining"."""
    spec, sc = st.spec, st.sc
    _, sb = _state_bytes(st)
    largest = max(spec.vocab_size * spec.hidden_size, spec.intermediate_size * spec.hidden_size)
    if sc.optimizer in ("adam", "adamw"):
        if sc.impl == "foreach":
            extra = 1 if (sc.optimizer == "adam" and sc.weight_decay) else 0
            return p_train * sb * st.sh["step"] * (1 + extra)
        return 0.0 if sc.impl == "fused" else 2 * min(largest, p_train) * sb
    if sc.optimizer == "adafactor":
        return 2 * min(largest, p_train) * 4
    return 0.0


def _layer_bytes(st: _Step) -> tuple[float, float]:
    """(bytes one block saves for backward, of which the attention core's).  Under TP the
    inner parts (q/k/v, attention, MLP, the casts feeding the row-parallel layers) split; the
    residual stream and norms do not (no sequence parallelism)."""
    spec, sc, a = st.spec, st.sc, st.sh["acts"]
    per = activation_bytes_per_layer(spec, sc)
    core = per.get("qkv", 0) + per.get("attn_out", 0) + per.get("lse", 0)
    inner = core + per.get("mlp", 0)
    s2 = per["per_token_s"] * sc.seq_len
    layer = st.tokens * (per["per_token"] - inner * (1 - a) + s2 * a)
    if sc.adapters:
        layer += st.tokens * _lora_saved(st)
    return layer, st.tokens * (core + s2) * a


def _lora_saved(st: _Step) -> float:
    """Per token and layer, what peft's LoRA changes in a block's saved tensors.  On a 16-bit
    base each adapter casts its input to the adapters' fp32 and keeps it, with its fp32 rank-r
    hidden: 4·(in + r) per target; the frozen base keeps less: no 16-bit input per distinct
    input it shares with the adapters (q/k/v share one, gate/up one) and one 16-bit hidden
    state (2·d) fewer.  Fitted per token and layer to exact storage accounting of peft on a
    bf16 Llama on the CPU (d 576/1152, intermediate 1536/3072, 3 or 9 KV heads: all four
    within 8 B).  The fp32 QLoRA recipe casts nothing: each adapter keeps only its rank-r
    hidden (its input is the frozen layer's, which bitsandbytes' 4-bit matmul does not keep;
    the adapter's output is added and scaled by a constant, which keep nothing), and each
    RMSNorm keeps no normalised copy (its weight is frozen: ``weight * x̂`` needs only the
    weight for backward).  Checked on the peft QLoRA runs without checkpointing
    (``recipes_gpu.json``, ``fit_gpu.json``): the rule without the norms' term
    overestimated all four by 2·d fp32 values per token and layer."""
    spec, sc, c = st.spec, st.sc, st.c
    dims = _lora_targets_dims(spec, sc.lora_targets)
    if sc.trainable == "qlora" and c == 4:
        return sum(sc.lora_rank * c for _ in dims) - spec.norms_per_layer * c * spec.hidden_size
    if c == 4 or sc.trainable == "qlora":
        return sum(sc.lora_rank * c + o * c for _, o in dims)
    d, q, I = spec.hidden_size, spec.q_dim, spec.intermediate_size
    groups = {"q": d, "k": d, "v": d, "o": q, "gate": d, "up": d, "down": I}
    present = [t for t in sc.lora_targets if t in groups and not (t == "gate" and spec.mlp == "plain")]
    inputs = {("qkv" if t in "qkv" else "gu" if t in ("gate", "up") else t): groups[t] for t in present}
    return sum(4 * (i + sc.lora_rank) for i, _ in dims) - c * (sum(inputs.values()) + d)


def activation_bytes(st: _Step) -> dict[str, float]:
    """Activations at the end of the forward, and what checkpointing recomputes per layer:
    ``full`` saves each block's input and recomputes the block; ``selective`` (Korthikanti et
    al. 2022; Megatron) recomputes the attention core only.  Defined in Part I, "Activations in depth"."""
    spec, sc, r, d = st.spec, st.sc, st.r, st.spec.hidden_size
    layer, core = _layer_bytes(st)
    x = st.tokens * r * d                  # a block's input: what full checkpointing saves
    # where the first norm keeps the block's input itself (LayerNorm, fp32 RMSNorm), the
    # recomputed block shares that tensor with the checkpoint instead of copying it
    shared = x if _norm_parts(spec, r, st.ac)[1] > 0 else 0.0
    saved, recompute = {"full": (x, layer - shared), "selective": (layer - core, core),
                        "none": (layer, 0.0)}[sc.checkpointing]
    train_layers = min(sc.last_k, st.layers) if sc.trainable == "last-k" else st.layers
    keeps_embed = sc.trainable == "all" and (spec.norm != "rmsnorm" or r == 4)
    embed_out = st.tokens * r * d if keeps_embed else 0.0
    final = st.tokens * d * (((4 if r < 4 else 0) + 2 * r) if spec.norm == "rmsnorm" else (4 if st.ac else r))
    acts = embed_out + saved * train_layers + final
    if sc.attention == "eager" and spec.family != "gpt":
        acts += sc.batch * sc.seq_len ** 2 * st.c          # HF's 4-D float causal mask, shared by all layers
    return dict(acts=acts, saved=saved, recompute=recompute, embed_out=embed_out)


def _cast_weights(st: _Step) -> tuple[float, float]:
    """Autocast's bf16 copies of the weights it cast, kept for backward: (forward, backward).
    Under full checkpointing only the LM head's copy lives into backward."""
    if not st.ac:
        return 0.0, 0.0
    head = st.spec.vocab_size * st.spec.hidden_size * st.c
    fwd = st.pc.linear_weights * st.sh["weights"] * st.c + head
    return fwd, (head if st.sc.checkpointing == "full" else fwd)


def logits_bytes(st: _Step) -> dict[str, float]:
    """The loss's tensors (tokens × vocab): HF upcasts the logits to fp32 and
    ``log_softmax`` keeps its fp32 output; its backward adds two more fp32 tensors.  Split
    by TP (vocabulary-parallel).  Defined in Part I, "Pretraining"."""
    spec, c = st.spec, st.c
    hf = spec.family != "gpt"
    lsm = 4 if (hf or st.ac) else c
    tv = st.tokens * spec.vocab_size
    upcast = 4 if c < lsm or (hf and c < 4) else 0
    kept = tv * c if st.sc.keep_logits else 0.0
    # Gemma-2's soft-capping (``cap · tanh(logits / cap)``, before the upcast): ``tanh`` keeps its
    # output for backward, and the capped logits are a new tensor next to it
    cap = tv * c if spec.logit_softcapping else 0.0
    return dict(fwd=(tv * (c + upcast + lsm) + cap) * st.sh["logits"], bwd=(tv * 3 * lsm + cap) * st.sh["logits"], kept=kept,
                kept_fwd=kept if (c != 4 and hf) else 0.0, lsm=lsm)


def _dequant_tmp(st: _Step) -> float:
    """QLoRA: bitsandbytes dequantizes one weight matrix at a time into the compute dtype (in
    the forward and again in the backward); the largest is an MLP matrix."""
    if st.sc.trainable != "qlora":
        return 0.0
    return st.spec.hidden_size * st.spec.intermediate_size * st.c


def _accumulated_gradients(st: _Step, grads: float) -> dict[str, float]:
    """Gradient bytes by phase from the second micro-batch of gradient accumulation on
    (``grad_accum`` > 1; empty otherwise).  ``.grad`` already holds every gradient, and
    autograd's ``AccumulateGrad`` adds each new gradient into it in place
    (``variable_grad += new_grad``), so every new gradient is first a fresh buffer: one layer's
    at a time, and the embedding's (V × d) at the end.  A tied LM head's gradient is held from
    the head's backward until the embedding's backward adds its own into a third V × d
    buffer (their sum), which is then added into ``.grad``.  Defined in Part I, "Fine-tuning"."""
    spec, sc = st.spec, st.sc
    if sc.grad_accum <= 1:
        return {}
    gb, _ = _state_bytes(st)
    emb = spec.vocab_size * spec.hidden_size * gb if sc.trainable == "all" else 0.0
    tied = spec.tie_embeddings
    held = emb if tied else 0.0                     # the tied head's new gradient, held
    heads = emb * (1 if tied else 2)                # the embedding, and an untied head
    layer = max(grads - heads, 0.0) / max(spec.num_layers, 1)      # one layer's new gradients
    return {"backward (first layer)": grads + held + layer, "backward (last layer)": grads + held + layer,
            "backward (embedding)": grads + (3 * emb if tied else emb)}


def _phases(st: _Step, p_train: int, parts: dict[str, float]) -> dict[str, dict[str, float]]:
    """Live bytes by component at the start of each phase of the step.  Backward frees a
    layer's saved tensors as it allocates that layer's gradients, so the live bytes run
    linearly from "all activations" to "all gradients"; both ends are checked."""
    spec, sc, d, V = st.spec, st.sc, st.spec.hidden_size, st.spec.vocab_size
    gb, _ = _state_bytes(st)
    grads, a, lg = parts["grads"], parts["acts"], parts["logits"]
    cast_f, cast_b = _cast_weights(st)
    g0 = grads if sc.grad_accum > 1 else 0.0            # accumulated gradients from earlier micro-batches
    full = sc.trainable == "all"
    head_grad = V * d * gb if (full and not spec.tie_embeddings) else 0.0
    # one layer's backward: the MLP's input/output gradients (2 × I per expert) and 2 × d
    t_layer = st.tokens * st.c * (2 * spec.intermediate_size * max(1, spec.experts_per_token) + 2 * d
                                  + 2 * spec.shared_expert_size)
    t_layer += a["recompute"] + _dequant_tmp(st)
    W = {"weights": parts["weights"], "master weights": parts["master"], "optimizer states": parts["optim"]}
    kept = lg["kept"]
    out = {
        "forward (loss)": dict(W, gradients=g0, activations=a["acts"], temporaries=cast_f + _dequant_tmp(st),
                               logits=lg["fwd"] + lg["kept_fwd"]),
        "backward (loss)": dict(W, gradients=g0, activations=a["acts"], temporaries=cast_b, logits=lg["bwd"] + kept),
        "backward (first layer)": dict(W, gradients=max(g0, head_grad), activations=a["acts"],
                                       temporaries=cast_b + t_layer, logits=kept),
        "backward (last layer)": dict(W, gradients=max(g0, grads - head_grad), activations=a["embed_out"] + a["saved"],
                                      temporaries=cast_b / max(spec.num_layers, 1) + t_layer, logits=kept),
        "backward (embedding)": dict(W, gradients=grads, activations=0.0,
                                     temporaries=V * d * gb if (full and spec.tie_embeddings) else 0.0, logits=kept),
        "optimizer step": dict(W, gradients=grads, temporaries=parts["step"], logits=kept),
    }
    for phase, g in _accumulated_gradients(st, grads).items():     # the second micro-batch on
        out[phase]["gradients"] = g
        if phase == "backward (embedding)":     # its tied V × d sum buffer is counted in g
            out[phase]["temporaries"] = 0.0
    return out


def estimate_training_spec(spec: ModelSpec, sc: TrainScenario, pc: ParamCount | None = None,
                           shard: dict[str, float] | None = None) -> Breakdown:
    """Peak memory of one steady-state training step on one GPU: weights, gradients,
    optimizer states, activations, logits, then the phases of the step.

    ``shard`` (from :mod:`vramlib.estimate.parallel`) divides weights, gradients, optimizer
    states and activations among GPUs.  Defined in Part I, "Pretraining"."""
    pc = pc or count_params(spec)
    st = _make_step(spec, sc, pc, shard)
    p_train, lora = trainable_params(st)
    gb, _ = _state_bytes(st)
    parts = dict(weights=training_weight_bytes(st, lora), grads=p_train * gb * st.sh["grads"],
                 master=p_train * 4 * st.sh["optim"] if sc.master_weights else 0.0,
                 optim=optimizer_bytes(st, p_train), step=step_temporaries(st, p_train),
                 acts=activation_bytes(st), logits=logits_bytes(st))
    buckets = p_train * gb * st.sh["ddp_buckets"]      # DDP's gradient buckets, counted with the gradients
    phases = _phases(st, p_train, parts)
    for comp in phases.values():
        comp["gradients"] = comp.get("gradients", 0.0) + buckets
    phases = {k: {c: int(b) for c, b in v.items()} for k, v in phases.items()}   # whole bytes, then sums
    totals = {k: sum(v.values()) for k, v in phases.items()}
    peak_phase = max(totals, key=lambda k: totals[k])
    largest = max(st.tokens * spec.vocab_size * parts["logits"]["lsm"] * st.sh["logits"],
                  st.tokens * spec.intermediate_size * st.c, spec.vocab_size * spec.hidden_size * max(gb, st.r))
    return Breakdown(components=phases[peak_phase], peak_phase=peak_phase, phases=totals,
                     scenario={"model": spec.name, **sc.to_dict()},
                     stage="train", largest=int(largest))

"""Where memory goes in each stage of a model's life — the formulas Part I derives.

* :func:`training_state_bytes` — weights, master weights, gradients and optimizer states per
  precision policy and optimizer (Part I, "Anatomy of memory").
* :func:`gpt_activation_bytes` — every tensor the book's GPT saves for backward, counted from
  its code (Part I, "Pretraining"); :func:`gpt_train_peak_bytes` adds the transient of the
  loss's backward.
* :func:`rule_a6`, :func:`rule_a7`, :func:`rule_a9`, :func:`rule_a11` — the source article's
  rules of thumb, written down literally so they can be put beside measurements (integer
  wrappers of :mod:`vramlib.estimate.rules`, which holds the formulas).
* :func:`per_gpu_training_bytes` — data parallel, ZeRO-1/2/3 (FSDP), tensor and pipeline
  parallel (Part I, "Beyond one GPU").

Defined in Part I ("Anatomy of memory", "Pretraining", "Beyond one GPU").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..estimate._common import DTYPE_BYTES
from ..estimate.rules import (article_inference_rule, article_simple_rule, article_training_rule,
                              quantized_bytes)
from ..estimate.training import _STATE_PER_PARAM as STATE_SLOTS

__all__ = ["POLICIES", "OPTIMIZER_SLOTS", "training_state_bytes",
           "gpt_activation_bytes", "gpt_train_peak_bytes", "finetune_activation_bytes", "list_saved_tensors", "rule_a6", "rule_a7", "rule_a9",
           "rule_a11", "per_gpu_training_bytes", "STRATEGIES"]

#: Bytes per element of the floating-point formats: the estimator's table.
B = DTYPE_BYTES


@dataclass(frozen=True)
class Policy:
    """Bytes per parameter of the weights the model computes with, of an fp32 master copy (0
    if none), of gradients, and of each optimizer slot."""

    weights: float
    master: float
    grads: float
    state: float
    note: str


#: Precision policies: fp32; autocast (fp32 weights, 16-bit matmuls); mixed (16-bit weights
#: and grads, fp32 master weights and states, as Megatron/DeepSpeed do); pure 16-bit.
POLICIES = {
    "fp32": Policy(B["fp32"], 0, B["fp32"], B["fp32"], "everything in fp32"),
    "autocast": Policy(B["fp32"], 0, B["fp32"], B["fp32"],
                       "fp32 weights, grads and states; matmuls in bf16/fp16"),
    "mixed": Policy(B["bf16"], B["fp32"], B["bf16"], B["fp32"],
                    "bf16 weights and grads, fp32 master weights and optimizer states"),
    "bf16": Policy(B["bf16"], 0, B["bf16"], B["bf16"],
                   "everything in bf16 (states in the weights' dtype)"),
}

#: Optimizer state per parameter, in slots (one slot = one value per parameter): the
#: estimator's table, plus 8-bit Adam's two 1-byte slots.
OPTIMIZER_SLOTS = {**STATE_SLOTS, "adam8bit": 2}


def _check_count(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {v!r}")


def training_state_bytes(n_params: int, policy: str = "fp32", optimizer: str = "adam",
                         trainable: int | None = None) -> dict[str, int]:
    """Persistent training state in bytes: ``weights``, ``master weights``, ``gradients``,
    ``optimizer states``.  Only ``trainable`` parameters (default: all) have gradients,
    master copies and optimizer state.  ``adam8bit`` keeps its two slots in 1 byte each.

    Defined in Part I, "Anatomy of memory"."""
    _check_count("n_params", n_params)
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {policy!r}")
    if optimizer not in OPTIMIZER_SLOTS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_SLOTS)}, got {optimizer!r}")
    t = n_params if trainable is None else trainable
    _check_count("trainable", t)
    if t > n_params:
        raise ValueError(f"trainable ({t}) cannot exceed n_params ({n_params})")
    p = POLICIES[policy]
    slot = 1 if optimizer == "adam8bit" else p.state
    return {"weights": int(p.weights * n_params), "master weights": int(p.master * t),
            "gradients": int(p.grads * t), "optimizer states": int(OPTIMIZER_SLOTS[optimizer] * slot * t)}


def gpt_activation_bytes(cfg, batch: int, seq: int, bytes_per_elem: float = 4,
                         attn: str | None = None) -> dict[str, int]:
    """Bytes the book's GPT (:class:`vramlib.models.GPT`, no dropout) saves for backward, from
    its code: per block ``16·N·d`` activations (LN inputs and outputs, the qkv output, the
    attention output, the MLP's pre- and post-GELU), plus fp32 LayerNorm statistics, plus for
    ``attn="sdpa"`` the softmax log-sum-exp ``(B, h, s)`` in fp32, or for ``"eager"`` the
    ``(B, h, s, s)`` softmax output and the ``s × s`` bool mask.  ``N = batch · seq``.

    Returns ``per_layer``, ``layers`` (all blocks), ``head`` (token ids, final LN, the
    log-softmax of the logits, the loss) and ``total``.  Defined in Part I, "Pretraining"."""
    _check_count("batch", batch)
    _check_count("seq", seq)
    attn = attn or cfg.attn
    if attn not in ("sdpa", "eager"):
        raise ValueError(f"attn must be 'sdpa' or 'eager', got {attn!r}")
    b, N, d, h = bytes_per_elem, batch * seq, cfg.d_model, cfg.n_head
    layer = 16 * N * d * b + 2 * 2 * N * 4                      # 16 N d activations + 2 LNs' mean/rstd
    if attn == "sdpa":
        layer += batch * h * seq * 4                             # log-sum-exp of the fused kernel
    else:
        layer += batch * h * seq * seq * b + seq * seq           # softmax output + bool mask
        # eager saves q, k, v copies (3 N d) instead of the qkv output (3 N d): same count
    head = N * 8 + seq * 8 + 2 * N * d * b + 2 * N * 4 + N * cfg.vocab_size * b + 4
    layers = int(layer * cfg.n_layer)
    return {"per_layer": int(layer), "layers": layers, "head": int(head), "total": int(layers + head)}


def _mlp_backward_bytes(cfg, batch: int, seq: int, b: float, act: dict) -> int:
    """Live bytes in the last block's MLP backward, at its output projection: every saved
    tensor except the head's (log-softmax, final LN input, output and statistics), plus the
    gradients made so far (tied embedding, final LN, the projection's weight and bias), the
    residual stream's gradient (``N·d``) and the gradient of the projection's input
    (``r·N·d``).  It is the peak where a block's weights outweigh the loss's transient."""
    N, d, V, r = batch * seq, cfg.d_model, cfg.vocab_size, cfg.mlp_ratio
    freed = (N * V + 2 * N * d) * b + 2 * N * 4
    grads = (V * d + 2 * d + r * d * d + (d if cfg.bias else 0)) * b
    return int(act["total"] - freed + grads + (1 + r) * N * d * b)


def _eager_softmax_bytes(cfg, batch: int, seq: int, b: float, act: dict) -> int:
    """The larger of the live bytes at the last block's softmax in the forward pass (three
    ``(B, h, s, s)`` tensors at once) and when its softmax backward allocates its output
    (eager only).  Backward:
    every saved tensor except those of the head (final LN, log-softmax) and of the last
    block after its attention (``y``, ``ln2``, the MLP: ``13·N·d`` values and two LN
    statistics; for ``B > 1`` also the copy of ``v`` that the batched product made, released
    by its backward — at ``B = 1`` q, k, v are views of the ``qkv`` output, which stays),
    plus the gradients made so far (tied embedding, final LN, the last block's MLP, ``ln2``
    and output projection), the residual stream's and ``v``'s gradients (``2·N·d``) and two
    ``(B, h, s, s)`` tensors: the gradient of the attention probabilities and the softmax's
    gradient, alive next to the saved softmax output."""
    N, d, V, r = batch * seq, cfg.d_model, cfg.vocab_size, cfg.mlp_ratio
    bias = 1 if cfg.bias else 0
    freed = ((13 + (batch > 1)) * N * d + N * V) * b + 4 * N * 4
    grads = (V * d + 2 * d + (2 * r + 1) * d * d + bias * (r * d + 2 * d) + 2 * d) * b
    scores = batch * cfg.n_head * seq * seq * b
    backward = act["total"] - freed + grads + 2 * N * d * b + 2 * scores
    # forward, at the last block's softmax: the earlier blocks' saved tensors, this block's
    # so far (LN input, output and statistics, the qkv output and, for B > 1, the copies of
    # q and k the batched product made; the masks), the token and position ids, and three
    # (B, h, s, s) tensors: the scaled scores, the masked ones and the softmax
    forward = (act["per_layer"] * (cfg.n_layer - 1)
               + (5 + 2 * (batch > 1)) * N * d * b + 2 * N * 4
               + 2 * seq * seq + N * 8 + seq * 8 + 3 * scores)
    return int(max(backward, forward))


def gpt_train_peak_bytes(cfg, batch: int, seq: int, bytes_per_elem: float = 4,
                         attn: str | None = None, n_params: int | None = None) -> int:
    """Predicted peak of one forward + backward above the weights, with no earlier gradients
    alive.  Candidate moments: the **start of backward** (every saved activation plus the
    loss's backward transient, two ``N × V`` tensors: gradients of the log-softmax output and
    of the logits), the **last block's MLP backward** (nearly every activation plus that
    block's first weight gradient and the gradient of its ``r·N·d`` input), the **end of
    backward** (all ``P`` gradients, plus the head's saved
    tensors and the same transient), and, with ``attn="eager"``, the **last block's
    softmax**, forward (three ``(B, h, s, s)`` tensors at once) or backward (two
    ``(B, h, s, s)`` gradients next to every layer's saved softmax output), which dominate at
    long sequences.  The peak is the largest.  ``n_params``
    is needed for the end of backward (omit it to leave that candidate out).

    Defined in Part I, "Pretraining" (the eager candidate in "Activations in depth")."""
    attn = attn or cfg.attn
    act = gpt_activation_bytes(cfg, batch, seq, bytes_per_elem, attn)
    transient = 2 * batch * seq * cfg.vocab_size * bytes_per_elem
    start = act["total"] + transient
    mlp = _mlp_backward_bytes(cfg, batch, seq, bytes_per_elem, act)
    end = 0 if n_params is None else n_params * bytes_per_elem + act["head"] + transient
    softmax = (_eager_softmax_bytes(cfg, batch, seq, bytes_per_elem, act)
               if attn == "eager" else 0)
    return int(max(start, mlp, end, softmax))


def finetune_activation_bytes(cfg, batch: int, seq: int, mode: str = "full", trainable_blocks: int = 1,
                              rank: int = 8, adapted_per_block: int = 4, bytes_per_elem: float = 4) -> int:
    """Saved activations of the book's GPT (``sdpa``, frozen tied embedding/LM head unless
    ``mode="full"``) when fine-tuning.  ``"frozen"``: only the last ``trainable_blocks`` blocks
    train — autograd saves nothing for the frozen blocks below, whose inputs need no gradient,
    nor the final LayerNorm's output (the frozen LM head needs no weight gradient), nor the
    position ids.  ``"lora"``/``"qlora"``: every block saves what it saves in full training,
    except block 0's first LayerNorm input (frozen, its input needs no gradient), plus one
    ``N × rank`` tensor per adapted matrix.  Defined in Part I, "Fine-tuning"."""
    if mode not in ("full", "frozen", "lora", "qlora"):
        raise ValueError(f"mode must be 'full', 'frozen', 'lora' or 'qlora', got {mode!r}")
    act = gpt_activation_bytes(cfg, batch, seq, bytes_per_elem, "sdpa")
    if mode == "full":
        return act["total"]
    N, d, b = batch * seq, cfg.d_model, bytes_per_elem
    head = act["head"] - seq * 8 - N * d * b
    if mode == "frozen":
        if not 0 <= trainable_blocks <= cfg.n_layer:
            raise ValueError(f"trainable_blocks must be in 0..{cfg.n_layer}, got {trainable_blocks!r}")
        return int(trainable_blocks * act["per_layer"] + head)
    return int(act["layers"] - (N * d * b + 2 * N * 4) + cfg.n_layer * adapted_per_block * N * rank * b + head)


def rule_a6(n_params: int, batch: int, activations_per_sample: int) -> int:
    """Source claim A6, literally: ``(P + B·A + P + 2P) × 4`` bytes.  Integer arguments (in
    the order of :func:`vramlib.estimate.article_training_rule`, which holds the formula),
    integer result.

    Defined in Part I, "Pretraining"."""
    for name, v in (("n_params", n_params), ("batch", batch),
                    ("activations_per_sample", activations_per_sample)):
        _check_count(name, v)
    return int(article_training_rule(n_params, batch, activations_per_sample))


def rule_a7(n_params: int, batch: int) -> int:
    """Source claim A7, literally: about ``4 × B × P`` bytes (integer form of
    :func:`vramlib.estimate.article_simple_rule`).  Defined in Part I, "Pretraining"."""
    _check_count("n_params", n_params)
    _check_count("batch", batch)
    return int(article_simple_rule(n_params, batch))


def rule_a9(n_params: int) -> int:
    """Source claim A9: inference ≈ ``P × 2`` bytes (16-bit weights); integer form of
    :func:`vramlib.estimate.article_inference_rule`.  Defined in Part I, "Inference"."""
    _check_count("n_params", n_params)
    return int(article_inference_rule(n_params))


def rule_a11(n_params: int, bits: int) -> int:
    """Source claim A11: quantized weights take ``P × bits / 8`` bytes (no scales counted),
    rounded down; the formula of :func:`vramlib.estimate.article_quantized_rule`, here also
    for 3- and 2-bit weights (and not 32).

    Defined in Part I, "Inference"."""
    _check_count("n_params", n_params)
    if bits not in (16, 8, 4, 3, 2):
        raise ValueError(f"bits must be one of 16, 8, 4, 3, 2, got {bits!r}")
    return int(quantized_bytes(n_params, bits))


#: Multi-GPU strategies known to :func:`per_gpu_training_bytes`.
STRATEGIES = ("dp", "zero1", "zero2", "zero3", "fsdp", "tp", "pp")


def per_gpu_training_bytes(n_params: int, n_gpus: int, strategy: str = "dp", policy: str = "fp32",
                           optimizer: str = "adam") -> dict[str, int]:
    """Persistent training state per GPU (weights, master weights, gradients, optimizer
    states) for ``n_gpus`` GPUs.  ``dp`` replicates everything; ZeRO-1 shards the optimizer
    states (and master weights), ZeRO-2 also the gradients, ZeRO-3 / ``fsdp`` also the
    weights; ``tp`` and ``pp`` split every tensor (ideal, ignoring replicated norms and
    embeddings).  Activations are not included.

    Defined in Part I, "Beyond one GPU"."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if isinstance(n_gpus, bool) or not isinstance(n_gpus, int) or n_gpus < 1:
        raise ValueError(f"n_gpus must be a positive integer, got {n_gpus!r}")
    full = training_state_bytes(n_params, policy, optimizer)
    sharded = {
        "dp": (), "zero1": ("optimizer states", "master weights"),
        "zero2": ("optimizer states", "master weights", "gradients"),
        "zero3": tuple(full), "fsdp": tuple(full), "tp": tuple(full), "pp": tuple(full),
    }[strategy]
    return {k: (-(-v // n_gpus) if k in sharded else v) for k, v in full.items()}


def _copies_a_parameter(fn) -> bool:
    """Whether the autograd node ``fn`` reaches a parameter through single-input nodes only
    (casts, views, transposes): the tensor it made is a copy of that parameter."""
    while fn is not None:
        if type(fn).__name__ == "AccumulateGrad":
            return True
        inputs = [f for f, _ in fn.next_functions if f is not None]
        if len(inputs) != 1:
            return False
        fn = inputs[0]
    return False


def list_saved_tensors(model, fn) -> list[dict]:
    """Run ``fn()`` (a forward pass of ``model``) and list every tensor autograd saves for
    backward, via ``torch.autograd.graph.saved_tensors_hooks``: the module that was running
    (deepest one), shape, dtype, bytes, and whether it is a ``parameter`` (or buffer), an
    ``activation``, or a storage already listed (``shared``).  ``param_copy`` marks a copy of
    a parameter made by casts and views only (autocast's 16-bit weight copies); ``made_by``
    names the autograd node that made the tensor (its name can change between torch
    releases, so rely on ``param_copy`` and ``kind``).  Defined in Part I, "Pretraining"."""
    import torch

    stack: list[str] = []
    hooks = []
    for name, mod in model.named_modules():
        hooks.append(mod.register_forward_pre_hook(lambda m, a, n=name: (stack.append(n), None)[1]))
        hooks.append(mod.register_forward_hook(lambda m, a, o: (stack.pop(), None)[1]))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    params |= {b.untyped_storage().data_ptr() for b in model.buffers() if b is not None}
    seen: set[int] = set()
    rows: list[dict] = []

    def pack(t):
        key = t.untyped_storage().data_ptr()
        kind = "parameter" if key in params else ("shared" if key in seen else "activation")
        seen.add(key)
        rows.append({"module": stack[-1] if stack else "", "shape": tuple(t.shape),
                     "dtype": str(t.dtype).replace("torch.", ""),
                     "bytes": t.untyped_storage().nbytes(), "kind": kind,
                     "made_by": type(t.grad_fn).__name__.replace("Backward0", "") if t.grad_fn else "input",
                     "param_copy": _copies_a_parameter(t.grad_fn)})
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
    finally:
        for h in hooks:
            h.remove()
    return rows

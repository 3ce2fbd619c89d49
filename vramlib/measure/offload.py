"""Activation offloading on the book's GPT: what ``torch.autograd.graph.save_on_cpu`` copies
to the host, predicted from the model's code and measured by wrapping the hook.

Defined in Part I, "Offload, FP8 and sequence parallelism", section "Offloading activations".
"""

from __future__ import annotations

import torch
from torch.autograd.graph import save_on_cpu

from ..models import GPTConfig
from .tracker import track_memory

__all__ = ["gpt_saved_tensor_bytes", "measure_save_on_cpu"]


def gpt_saved_tensor_bytes(cfg: GPTConfig, batch: int, seq: int, bytes_per_elem: float = 4,
                           stats_bytes: float = 4) -> dict[str, int]:
    """Bytes of every tensor the book's GPT (``attn="sdpa"``) hands to autograd's
    saved-tensor hooks in one forward with targets, *counted per save* — what
    ``save_on_cpu`` copies.  Per block (``N = batch · seq``, ``d``, ``kv`` = KV width):
    ``17·N·d`` activations — LayerNorm inputs and outputs (4), q, k, v (grouped-query
    keys and values are repeated to all heads before the fused kernel), the attention output twice (once saved by the fused kernel, once, made contiguous, by the
    projection), the MLP's input (the LN output, already counted), its 4·d hidden
    pre- and post-GELU — plus the LayerNorms' mean and rstd (``stats_bytes`` each: fp32 on
    CUDA, the input dtype on the CPU) and the fused kernel's log-sum-exp (fp32); the head:
    token ids, positions and targets (int64), the final LayerNorm's input, output and stats,
    the log-softmax output twice (log_softmax's and nll_loss's) and the loss's weight.
    ``parameters``: the weights each product saves (bias not saved) and the LayerNorm
    weights and biases, ``(12·d² + 4·d)`` per block at full attention width, the tied
    embedding as the head's weight.  Defined in Part I, "Offload, FP8 and sequence
    parallelism", section "Offloading activations"."""
    b, sb, N, d, V = bytes_per_elem, stats_bytes, batch * seq, cfg.d_model, cfg.vocab_size
    kv = cfg.n_kv_head * cfg.head_dim
    block = 17 * N * d * b + 4 * N * sb + batch * cfg.n_head * seq * 4
    head = 16 * N + 8 * seq + 2 * N * d * b + 2 * N * sb + 2 * N * V * b + b
    per_block_w = (d * (d + 2 * kv) + 9 * d * d + 4 * d) * b
    params = cfg.n_layer * per_block_w + (2 * d + V * d) * b
    acts = cfg.n_layer * block + head
    return {"activations": int(acts), "parameters": int(params), "per_block": int(block)}


def measure_save_on_cpu(model: torch.nn.Module, idx: torch.Tensor, offload: bool = True,
                        device: torch.device | None = None) -> dict:
    """One forward (with targets) and backward of ``model`` on ``idx``, under
    ``save_on_cpu`` when ``offload``; returns ``peak`` and ``after_forward`` (memory on
    ``device`` above the start: the CUDA allocator, or exact storage accounting elsewhere,
    which on the CPU also counts the host copies), and with ``offload`` the bytes and number
    of tensors copied out, split into ``parameters`` and ``activations``.  Defined in Part I,
    "Offload, FP8 and sequence parallelism", section "Offloading activations"."""
    dev = idx.device if device is None else device
    pids = {p.untyped_storage().data_ptr() for p in model.parameters()}
    packed = {"activations": 0, "parameters": 0, "count": 0}
    ctx = save_on_cpu(pin_memory=dev.type == "cuda") if offload else None
    if ctx is not None:
        inner = ctx.pack_hook

        def pack(t: torch.Tensor):
            key = "parameters" if t.untyped_storage().data_ptr() in pids else "activations"
            packed[key] += t.numel() * t.element_size()
            packed["count"] += 1
            return inner(t)
        ctx.pack_hook = pack
    with track_memory(dev) as rep:
        if ctx is not None:
            with ctx:
                loss = model(idx, idx)[1]
        else:
            loss = model(idx, idx)[1]
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            after = torch.cuda.memory_allocated(dev) - rep.baseline
        else:
            after = None
        loss.backward()
        del loss
    model.zero_grad(set_to_none=True)
    return {"peak": rep.peak, "after_forward": after, "host": packed if offload else None}

"""Activation checkpointing for the book's GPT, without changing the model's code.

``gpt_forward(model, idx, targets, policy)`` runs the same computation as ``model(idx, targets)``
with ``torch.utils.checkpoint`` applied according to ``policy``:

* ``"none"`` — the plain forward: every block saves its ``16·N·d`` activations.
* ``"full"`` — each block is a checkpoint: only its input (``N·d``) is saved, the block is run
  again during backward to rebuild the rest.
* ``"selective"`` — MLP recomputation: only the MLP's interior (``fc`` → GELU → ``proj``) is
  recomputed: its ``8·N·d`` saved values (pre- and post-GELU) disappear, the attention half
  is kept.  ('selective' in Korthikanti et al. recomputes the attention core.)

Defined in Part I, "Activations in depth".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..estimate.training import CHECKPOINTING  # the estimator's checkpointing names
from ..models.nanogpt import GPT

__all__ = ["CHECKPOINTING", "gpt_forward", "checkpoint_saved_bytes", "checkpoint_peak_bytes", "recompute_flops"]



def _check_policy(policy: str) -> None:
    if policy not in CHECKPOINTING:
        raise ValueError(f"policy must be one of {CHECKPOINTING}, got {policy!r}")


def _block(block, x):
    x = x + block.attn(block.ln1(x))
    return x + block.mlp(block.ln2(x))


def _block_selective(block, x):
    x = x + block.attn(block.ln1(x))
    return x + checkpoint(block.mlp, block.ln2(x), use_reentrant=False)


def gpt_forward(model: GPT, idx: torch.Tensor, targets: torch.Tensor | None = None, policy: str = "none"):
    """``model(idx, targets)`` with activation checkpointing ``policy`` (see module doc);
    returns ``(logits, loss)``.  Defined in Part I, "Activations in depth"."""
    _check_policy(policy)
    if not isinstance(model, GPT):
        raise TypeError(f"gpt_forward works with vramlib.models.GPT, got {type(model).__name__}")
    B, s = idx.shape
    pos = torch.arange(s, device=idx.device)
    x = model.drop(model.wte(idx) + model.wpe(pos))
    for block in model.blocks:
        if policy == "none":
            x = _block(block, x)
        elif policy == "full":
            x = checkpoint(_block, block, x, use_reentrant=False)
        else:
            x = _block_selective(block, x)
    logits = model.lm_head(model.ln_f(x))
    loss = None
    if targets is not None:
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
    return logits, loss


def checkpoint_saved_bytes(cfg, batch: int, seq: int, policy: str, bytes_per_elem: float = 4) -> int:
    """Bytes saved for backward by the blocks under ``policy`` (the head's saved tensors are
    the same for all policies and not included).  ``sdpa`` attention assumed.
    Defined in Part I, "Activations in depth"."""
    _check_policy(policy)
    N, d, b = batch * seq, cfg.d_model, bytes_per_elem
    lse = batch * cfg.n_head * seq * 4
    per = {"none": 16 * N * d * b + 16 * N + lse,
           "full": N * d * b,
           "selective": 8 * N * d * b + 16 * N + lse}[policy]
    return int(per * cfg.n_layer)


def checkpoint_peak_bytes(cfg, batch: int, seq: int, policy: str, bytes_per_elem: float = 4) -> int:
    """Predicted forward+backward peak (above the weights) under ``policy``: everything saved,
    plus the larger of the loss's backward transient (``2·N·V``) and, while a checkpointed
    region is recomputed, its rebuilt activations plus two residual-stream gradients
    (``2·N·d``).  Assumes activations dominate the gradients (see "Pretraining").
    Defined in Part I, "Activations in depth"."""
    from .stagemem import gpt_activation_bytes

    act = gpt_activation_bytes(cfg, batch, seq, bytes_per_elem, "sdpa")
    N, b = batch * seq, bytes_per_elem
    saved = checkpoint_saved_bytes(cfg, batch, seq, policy, b) + act["head"]
    rebuilt = {"none": 0, "full": act["per_layer"], "selective": 8 * N * cfg.d_model * b}[policy]
    extra = max(2 * N * cfg.vocab_size * b, rebuilt + 2 * N * cfg.d_model * b if rebuilt else 0)
    return int(saved + extra)


def recompute_flops(cfg, batch: int, seq: int, policy: str) -> int:
    """Extra matmul FLOPs of one backward pass under ``policy``.  torch's non-reentrant
    checkpoint stops recomputing once the last saved tensor it needs is rebuilt, so the last
    matmul of each region (the MLP's ``proj``) is not recomputed: ``full`` adds
    ``qkv + attn.proj + fc`` = ``16·N·d²`` per layer plus the attention core's two matmuls,
    ``QKᵀ`` and ``AV``, ``2·B·s²·d`` each (computed in full, causal mask or not);
    ``selective`` adds ``fc`` = ``8·N·d²``.  torch 2.13's FLOP counter does not see the CPU's
    fused attention kernel, so a measurement that should match this uses ``attn="eager"``.
    Defined in Part I, "Activations in depth"."""
    _check_policy(policy)
    N, d = batch * seq, cfg.d_model
    core = 4 * batch * seq * seq * d
    return int(cfg.n_layer * {"none": 0, "full": 16 * N * d * d + core,
                              "selective": 8 * N * d * d}[policy])

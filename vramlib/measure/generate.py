"""Text generation with a KV cache for the book's GPT, written out so its memory can be read.

``generate(model, idx, new_tokens)`` runs one **prefill** pass over the prompt, which fills a
preallocated cache of keys and values for every layer, then one **decode** step per new
token that attends to the cache and appends one position.  Only the last position's logits
are computed (``full_logits=True`` keeps the whole ``(B, s, V)`` tensor, as a plain forward
would).  The cache holds

    2 · n_layer · B · n_kv_head · T · head_dim · bytes(kv dtype)        (T = prompt + new tokens)

It reuses the weights of :class:`vramlib.models.GPT` without changing that module.
Defined in Part I, "Inference".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.nanogpt import GPT

__all__ = ["KVCache", "generate", "prefill", "decode_step"]


@dataclass
class KVCache:
    """Preallocated keys and values: ``k[l]``, ``v[l]`` of shape ``(B, h_kv, T_max, hd)``."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    length: int = 0

    @classmethod
    def allocate(cls, model: GPT, batch: int, max_tokens: int, dtype: torch.dtype | None = None) -> "KVCache":
        cfg = model.cfg
        ref = model.wte.weight
        dt = dtype or ref.dtype
        shape = (batch, cfg.n_kv_head, max_tokens, cfg.head_dim)
        k = [torch.zeros(shape, dtype=dt, device=ref.device) for _ in range(cfg.n_layer)]
        v = [torch.zeros(shape, dtype=dt, device=ref.device) for _ in range(cfg.n_layer)]
        return cls(k, v, 0)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


def _attend(block, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
    cfg = block.attn.cfg
    B, s, d = x.shape
    kv_dim = cfg.n_kv_head * cfg.head_dim
    q, k, v = block.attn.qkv(x).split([d, kv_dim, kv_dim], dim=-1)
    q = q.view(B, s, cfg.n_head, cfg.head_dim).transpose(1, 2)
    k = k.view(B, s, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
    v = v.view(B, s, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
    t0, t1 = cache.length, cache.length + s
    cache.k[layer][:, :, t0:t1] = k.to(cache.k[layer].dtype)
    cache.v[layer][:, :, t0:t1] = v.to(cache.v[layer].dtype)
    keys, vals = cache.k[layer][:, :, :t1].to(q.dtype), cache.v[layer][:, :, :t1].to(q.dtype)
    if cfg.n_kv_head != cfg.n_head:
        rep = cfg.n_head // cfg.n_kv_head
        keys, vals = keys.repeat_interleave(rep, dim=1), vals.repeat_interleave(rep, dim=1)
    # prefill: causal over the prompt; decode (s == 1): the new token sees every cached one
    y = F.scaled_dot_product_attention(q, keys, vals, is_causal=(t0 == 0 and s > 1))
    return block.attn.proj(y.transpose(1, 2).reshape(B, s, d))


def _forward(model: GPT, idx: torch.Tensor, cache: KVCache, full_logits: bool) -> torch.Tensor:
    B, s = idx.shape
    pos = torch.arange(cache.length, cache.length + s, device=idx.device)
    x = model.wte(idx) + model.wpe(pos)
    for i, block in enumerate(model.blocks):
        x = x + _attend(block, block.ln1(x), cache, i)
        x = x + block.mlp(block.ln2(x))
    cache.length += s
    if not full_logits:
        x = x[:, -1:, :]
    return model.lm_head(model.ln_f(x))


@torch.no_grad()
def prefill(model: GPT, idx: torch.Tensor, cache: KVCache, full_logits: bool = False) -> torch.Tensor:
    """Run the prompt through the model, filling ``cache``; return the logits (last position
    only unless ``full_logits``).  Defined in Part I, "Inference"."""
    if cache.length != 0:
        raise ValueError("prefill needs an empty cache")
    return _forward(model, idx, cache, full_logits)


@torch.no_grad()
def decode_step(model: GPT, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """One decode step for ``token`` of shape ``(B, 1)``; returns ``(B, 1, V)`` logits.

    Defined in Part I, "Inference"."""
    if token.dim() != 2 or token.shape[1] != 1:
        raise ValueError(f"decode_step takes one token per sequence, shape (B, 1); got {tuple(token.shape)}")
    return _forward(model, token, cache, False)


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, new_tokens: int, kv_dtype: torch.dtype | None = None,
             full_logits: bool = False) -> torch.Tensor:
    """Greedy generation of ``new_tokens`` tokens after the prompt ``idx`` (shape ``(B, s)``)
    with a preallocated KV cache; returns ``(B, s + new_tokens)`` token ids.

    Defined in Part I, "Inference"."""
    if not isinstance(model, GPT):
        raise TypeError(f"generate works with vramlib.models.GPT, got {type(model).__name__}")
    if idx.dim() != 2:
        raise ValueError(f"idx must have shape (batch, prompt_len), got {tuple(idx.shape)}")
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 0:
        raise ValueError(f"new_tokens must be a non-negative integer, got {new_tokens!r}")
    B, s = idx.shape
    if s + new_tokens > model.cfg.block_size:
        raise ValueError(f"prompt ({s}) + new tokens ({new_tokens}) exceed block_size {model.cfg.block_size}")
    cache = KVCache.allocate(model, B, s + new_tokens, kv_dtype)
    logits = prefill(model, idx, cache, full_logits)
    out = [idx]
    for _ in range(new_tokens):
        nxt = logits[:, -1:].argmax(dim=-1)
        out.append(nxt)
        if cache.length < s + new_tokens:
            logits = decode_step(model, nxt, cache)
    return torch.cat(out, dim=1)

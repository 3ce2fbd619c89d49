"""Serving-memory mechanisms in torch, teaching-sized: a paged KV cache (a shared pool of
blocks, one block table per sequence, a gather on read), a quantized KV cache (int8 or fp8
codes with per-token or per-head scales), and a small mixture-of-experts MLP.

The caches plug into the book's generation loop, :mod:`vramlib.measure.generate`, unchanged: they
offer the same ``k[layer][:, :, t0:t1] = ...`` write and ``k[layer][:, :, :t]`` read as the
contiguous :class:`~vramlib.measure.generate.KVCache`, so their outputs can be compared with it
directly.  The arithmetic beside them is :mod:`vramlib.estimate.serving` and
:mod:`vramlib.estimate.moe`.

Defined in Part I, "Serving memory" and Part I, "Mixture-of-experts memory".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..estimate.moe import expert_capacity
from .generate import KVCache
from ..models.nanogpt import GPT, GPTConfig

__all__ = ["BlockPool", "PagedKVCache", "quantize_kv", "dequantize_kv", "QuantizedKVCache",
           "MoEMLP", "moe_gpt"]


def _time_slice(key) -> slice:
    if not (isinstance(key, tuple) and len(key) == 3 and isinstance(key[2], slice)):
        raise TypeError("a cache layer is indexed as [:, :, t0:t1], like vramlib.measure.generate does")
    return key[2]


# --------------------------------------------------------------------------- paged KV cache
class BlockPool:
    """A pool of ``num_blocks`` KV blocks of ``block_size`` tokens for every layer:
    ``k``/``v`` of shape ``(L, num_blocks, h_kv, block_size, d_h)``, allocated once, and a
    free list.  Defined in Part I, "Serving memory", section "Paging the KV cache"."""

    def __init__(self, model: GPT, num_blocks: int, block_size: int = 16,
                 dtype: torch.dtype | None = None) -> None:
        for what, v in (("num_blocks", num_blocks), ("block_size", block_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{what} must be a positive integer, got {v!r}")
        cfg, ref = model.cfg, model.wte.weight
        shape = (cfg.n_layer, num_blocks, cfg.n_kv_head, block_size, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype or ref.dtype, device=ref.device)
        self.v = torch.zeros_like(self.k)
        self.block_size = block_size
        self.free: list[int] = list(range(num_blocks))
        self.peak_used = 0

    @property
    def num_blocks(self) -> int:
        return self.k.shape[1]

    @property
    def used(self) -> int:
        return self.num_blocks - len(self.free)

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def block_bytes(self) -> int:
        """Bytes of one block (keys and values, all layers)."""
        return self.nbytes() // self.num_blocks

    def take(self) -> int:
        if not self.free:
            raise RuntimeError("KV pool exhausted: no free block (free a finished sequence, or preempt one)")
        b = self.free.pop(0)
        self.peak_used = max(self.peak_used, self.used)
        return b

    def give_back(self, blocks: list[int]) -> None:
        self.free.extend(blocks)


class _PagedLayer:
    """One layer's keys (or values) of one sequence, seen through its block table."""

    def __init__(self, seq: "PagedKVCache", layer: int, pool: torch.Tensor) -> None:
        self.seq, self.layer, self.pool = seq, layer, pool

    @property
    def dtype(self) -> torch.dtype:
        return self.pool.dtype

    def _where(self, t0: int, t1: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(t0, t1, device=self.pool.device)
        bs = self.seq.pool.block_size
        return self.seq.table_tensor()[pos // bs], pos % bs

    def __setitem__(self, key, value: torch.Tensor) -> None:
        sl = _time_slice(key)
        self.seq.reserve(sl.stop)
        blocks, offs = self._where(sl.start or 0, sl.stop)
        # pool[layer] is (num_blocks, h_kv, block, d_h); two index tensors around a slice put
        # the token dimension first: (t, h_kv, d_h)
        self.pool[self.layer][blocks, :, offs, :] = value[0].permute(1, 0, 2).to(self.pool.dtype)

    def __getitem__(self, key) -> torch.Tensor:
        sl = _time_slice(key)
        blocks, offs = self._where(sl.start or 0, sl.stop)
        return self.pool[self.layer][blocks, :, offs, :].permute(1, 0, 2).unsqueeze(0)   # gather


@dataclass
class PagedKVCache:
    """The KV cache of one sequence (batch 1) in a shared :class:`BlockPool`: a block table
    maps its logical blocks to physical ones, taken from the pool as the sequence grows;
    reads gather the blocks back in order.  Use it with :func:`vramlib.measure.generate.prefill` /
    :func:`~vramlib.measure.generate.decode_step`; :meth:`release` returns its blocks.

    Defined in Part I, "Serving memory", section "Paging the KV cache"."""

    pool: BlockPool
    length: int = 0
    table: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        L = self.pool.k.shape[0]
        self.k = [_PagedLayer(self, i, self.pool.k) for i in range(L)]
        self.v = [_PagedLayer(self, i, self.pool.v) for i in range(L)]
        self._tt: torch.Tensor | None = None

    def reserve(self, tokens: int) -> None:
        """Take blocks from the pool until ``tokens`` positions fit."""
        while len(self.table) * self.pool.block_size < tokens:
            self.table.append(self.pool.take())
            self._tt = None

    def table_tensor(self) -> torch.Tensor:
        if self._tt is None:
            self._tt = torch.tensor(self.table, dtype=torch.long, device=self.pool.k.device)
        return self._tt

    def release(self) -> None:
        self.pool.give_back(self.table)
        self.table, self._tt, self.length = [], None, 0

    def nbytes(self) -> int:
        """Bytes of the blocks this sequence holds."""
        return len(self.table) * self.pool.block_bytes()


# --------------------------------------------------------------------------- KV quantization
_QMAX = {"int8": 127.0, "fp8": 448.0}
_QDTYPE = {"int8": torch.int8, "fp8": getattr(torch, "float8_e4m3fn", None)}


def _check_kind(kind: str, granularity: str) -> None:
    if kind not in _QMAX:
        raise ValueError(f"kind must be 'int8' or 'fp8'; got {kind!r}")
    if _QDTYPE[kind] is None:
        raise ValueError("this torch has no float8_e4m3fn dtype: use kind='int8' or upgrade torch")
    if granularity not in ("token", "head"):
        raise ValueError(f"granularity must be 'token' (one scale per token) or 'head' (per token and "
                         f"KV head); got {granularity!r}")


def quantize_kv(x: torch.Tensor, kind: str = "int8", granularity: str = "token",
                scale_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantization of keys or values of shape ``(B, h_kv, T, d_h)``:
    one scale per token (``"token"``, over all heads) or per token and head (``"head"``).
    Returns ``(codes, scales)``; codes are int8 or float8_e4m3fn.  Defined in Part I, "Serving
    memory", section "Quantizing the KV cache"."""
    _check_kind(kind, granularity)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, h_kv, T, d_h); got {tuple(x.shape)}")
    dims = (1, 3) if granularity == "token" else (3,)
    amax = x.detach().abs().amax(dim=dims, keepdim=True).float().clamp_min(1e-8)
    scale = amax / _QMAX[kind]
    y = x.float() / scale
    codes = y.round().clamp(-127, 127).to(torch.int8) if kind == "int8" else y.to(_QDTYPE[kind])
    return codes, scale.to(scale_dtype)


def dequantize_kv(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``codes · scales`` in ``dtype``.  Defined in Part I, "Serving memory", section
    "Quantizing the KV cache"."""
    return (codes.float() * scales.float()).to(dtype)


class _QuantLayer:
    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, kind: str, granularity: str,
                 dtype: torch.dtype) -> None:
        self.codes, self.scales, self.kind, self.granularity, self._dtype = codes, scales, kind, granularity, dtype

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def __setitem__(self, key, value: torch.Tensor) -> None:
        sl = _time_slice(key)
        c, s = quantize_kv(value, self.kind, self.granularity, self.scales.dtype)
        self.codes[:, :, sl] = c
        self.scales[:, :, sl] = s

    def __getitem__(self, key) -> torch.Tensor:
        sl = _time_slice(key)
        return dequantize_kv(self.codes[:, :, sl], self.scales[:, :, sl], self._dtype)


@dataclass
class QuantizedKVCache:
    """A preallocated KV cache that stores int8 or fp8 codes plus fp32 scales and hands back
    dequantized keys and values; a drop-in for :class:`vramlib.measure.generate.KVCache`.

    Defined in Part I, "Serving memory", section "Quantizing the KV cache"."""

    k: list
    v: list
    length: int = 0

    @classmethod
    def allocate(cls, model: GPT, batch: int, max_tokens: int, kind: str = "int8",
                 granularity: str = "token") -> "QuantizedKVCache":
        _check_kind(kind, granularity)
        cfg, ref = model.cfg, model.wte.weight
        shape = (batch, cfg.n_kv_head, max_tokens, cfg.head_dim)
        sshape = (batch, 1 if granularity == "token" else cfg.n_kv_head, max_tokens, 1)

        def layer() -> _QuantLayer:
            return _QuantLayer(torch.zeros(shape, dtype=torch.int8, device=ref.device).to(_QDTYPE[kind]),
                               torch.zeros(sshape, dtype=torch.float32, device=ref.device),
                               kind, granularity, ref.dtype)
        return cls([layer() for _ in range(cfg.n_layer)], [layer() for _ in range(cfg.n_layer)], 0)

    def nbytes(self) -> int:
        return sum(t.codes.nbytes + t.scales.nbytes for t in self.k + self.v)


# --------------------------------------------------------------------------- mixture of experts
class MoEMLP(nn.Module):
    """A top-k mixture of ``num_experts`` GELU MLPs (the book GPT's MLP, each), dropless by
    default: each token goes to its ``top_k`` experts, weighted by its renormalised router
    probabilities.  With ``capacity_factor``, each expert takes at most
    ``⌈capacity_factor · N · k / E⌉`` tokens and drops the rest (their output is 0 for that
    expert, so only the residual carries them).  ``last_counts`` keeps the tokens each expert
    got in the last forward.  Defined in Part I, "Mixture-of-experts memory", section "A small
    MoE, measured"."""

    def __init__(self, d_model: int, hidden: int, num_experts: int, top_k: int = 2, bias: bool = True,
                 capacity_factor: float | None = None) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in 1..num_experts ({num_experts}); got {top_k!r}")
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be positive or None; got {capacity_factor!r}")
        self.top_k, self.capacity_factor = top_k, capacity_factor
        self.router = nn.Linear(d_model, num_experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d_model, hidden, bias=bias), nn.GELU(), nn.Linear(hidden, d_model, bias=bias))
            for _ in range(num_experts))
        self.last_counts: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xf = x.reshape(-1, shape[-1])
        N, E = xf.shape[0], len(self.experts)
        probs = self.router(xf).softmax(dim=-1)                       # (N, E)
        w, idx = probs.topk(self.top_k, dim=-1)                       # (N, k)
        w = w / w.sum(dim=-1, keepdim=True)
        cap = None
        if self.capacity_factor is not None:
            cap = expert_capacity(N, E, self.top_k, self.capacity_factor)
        out = torch.zeros_like(xf)
        self.last_counts = []
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(idx == e)                         # tokens routed to e
            if cap is not None:
                tok, slot = tok[:cap], slot[:cap]
            self.last_counts.append(int(tok.numel()))
            if tok.numel() == 0:
                continue
            y = expert(xf[tok]) * w[tok, slot].unsqueeze(-1)          # dispatch, compute, weight
            out = out.index_add(0, tok, y)                            # combine
        return out.view(shape)


def moe_gpt(cfg: GPTConfig, num_experts: int, top_k: int = 2, capacity_factor: float | None = None) -> GPT:
    """The book's GPT with every block's MLP replaced by a :class:`MoEMLP` of ``num_experts``
    experts of the same width (initialised like the GPT).  Its ``ModelSpec`` is
    ``from_gpt_config(cfg).replace(num_experts=..., experts_per_token=...)``.
    Defined in Part I, "Mixture-of-experts memory", section "A small MoE, measured"."""
    model = GPT(cfg)
    for block in model.blocks:
        block.mlp = MoEMLP(cfg.d_model, cfg.mlp_ratio * cfg.d_model, num_experts, top_k, cfg.bias, capacity_factor)
        block.mlp.apply(GPT._init)
    return model

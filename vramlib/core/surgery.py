"""Module surgery: replace the linear layers of a model, chosen by exact name components.

One rule for every caller (quantization, QAT, LoRA, low-rank factorization, int8 kernels):
a pattern matches a module name when it equals the name or a dotted suffix of it, so
``"qkv"`` matches ``blocks.0.attn.qkv`` and ``"lm_head"`` matches ``lm_head`` but never
``xlm_head``.

Defined in Part II, "Post-training quantization" (swapping layers for quantized ones).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch.nn as nn

__all__ = ["name_matches", "replace_linears"]


def name_matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether module ``name`` equals one of ``patterns`` or ends in ``"." + pattern``.

    Defined in Part II, "Post-training quantization"."""
    return any(name == p or name.endswith("." + p) for p in patterns)


def _patterns(what: str, value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    out = tuple(value)
    if not all(isinstance(p, str) and p and not p.startswith(".") for p in out):
        raise ValueError(f"{what} must be module names or dotted suffixes such as 'lm_head' "
                         f"or 'attn.qkv'; got {value!r}")
    return out


def replace_linears(model: nn.Module, factory: Callable[[nn.Module], nn.Module],
                    targets: Iterable[str] | None = None, exclude: Iterable[str] = (),
                    is_linear: Callable[[nn.Module], bool] | None = None) -> list[str]:
    """Replace, in place, each linear layer of ``model`` by ``factory(layer)``; returns the
    replaced names in module order.

    A layer is replaced when ``is_linear(layer)`` (default: it is an ``nn.Linear``), its
    name matches ``targets`` (``None``: every layer) and does not match ``exclude``, both
    by :func:`name_matches`.  Defined in Part II, "Post-training quantization"."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    targets, exclude = _patterns("targets", targets), _patterns("exclude", exclude) or ()
    is_linear = is_linear or (lambda m: isinstance(m, nn.Linear))
    chosen = [name for name, mod in model.named_modules()
              if name and is_linear(mod) and not name_matches(name, exclude)
              and (targets is None or name_matches(name, targets))]
    for name in chosen:
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, factory(getattr(owner, attr)))
    return chosen

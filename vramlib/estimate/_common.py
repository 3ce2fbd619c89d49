"""Shared validation helpers and dtype sizes for the estimator (Part I, "The calculator")."""

from __future__ import annotations

from typing import Any, Iterable

#: Bytes per element of the floating-point dtypes a scenario may name.
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}

_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
            "torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16", "float8": "fp8",
            "fp8_e4m3": "fp8", "e4m3": "fp8"}


def dtype_name(value: Any, what: str, allowed: Iterable[str]) -> str:
    """Normalise a dtype name (``"bfloat16"`` → ``"bf16"``, a ``torch.dtype`` too) and check it."""
    allowed = tuple(allowed)
    s = str(value).lower() if value is not None else "none"
    s = _ALIASES.get(s, s)
    if s not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return s


def choice(value: Any, what: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    s = str(value).lower() if isinstance(value, str) else value
    if s not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(map(str, allowed))}; got {value!r}")
    return s


#: Largest size any count may take (2⁴⁰ tokens, layers, widths...): far above every real run,
#: and small enough that products of sizes stay finite floats (no overflow, no NaN bytes).
MAX_SIZE = 1 << 40


def short(value: Any) -> str:
    """``repr`` of a value, shortened when it is a huge number (for error messages)."""
    r = repr(value)
    return r if len(r) <= 24 else f"{r[:12]}… ({len(r)} characters)"


def pos_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer ≥ {minimum}; got {short(value)}")
    if value > MAX_SIZE:
        raise ValueError(f"{what} = {short(value)} is too large (at most 2**40)")
    return value


def flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be True or False; got {value!r}")
    return value

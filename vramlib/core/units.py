"""Bytes and their units.

The book reports memory in **GiB/MiB** (powers of 2, what ``nvidia-smi`` and torch's
allocator print) and says so; vendors and the source articles use **GB** (powers of 10).
GPU memory is the exception: an "80 GB" H100 reports 85,017,493,504 bytes = 79.2 GiB (its
HBM is binary), not 80 × 10⁹ bytes = 74.5 GiB.  See Chapter 0, section "Bytes, GB and GiB".
"""

from __future__ import annotations

import re

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40
KB, MB, GB, TB = 10**3, 10**6, 10**9, 10**12

_UNITS = {
    "b": 1, "kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
    "kb": KB, "mb": MB, "gb": GB, "tb": TB,
}


def _check_bytes(n: float) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        raise TypeError(f"expected a number of bytes, got {type(n).__name__}: {n!r}")
    if n != n or n in (float("inf"), float("-inf")):
        raise ValueError(f"expected a finite number of bytes, got {n!r}")


def fmt_bytes(n: float, unit: str = "auto", binary: bool = True, digits: int = 2) -> str:
    """Format a byte count with its unit named, e.g. ``fmt_bytes(3 * 2**30) == '3.00 GiB'``.

    ``unit`` is ``"auto"`` (largest unit below the value) or one of B, KiB, MiB, GiB, TiB,
    KB, MB, GB, TB.  ``binary`` picks powers of 2 (GiB) or of 10 (GB) for ``"auto"``.
    Defined in Chapter 0, "Bytes, GB and GiB".
    """
    _check_bytes(n)
    if unit == "auto":
        steps = ["B", "KiB", "MiB", "GiB", "TiB"] if binary else ["B", "KB", "MB", "GB", "TB"]
        base = 1024 if binary else 1000
        unit = steps[0]
        for i, name in enumerate(steps):
            if abs(n) >= base**i:
                unit = name
    key = unit.lower()
    if key not in _UNITS:
        raise ValueError(f"unknown unit {unit!r}; use one of B, KiB, MiB, GiB, TiB, KB, MB, GB, TB or 'auto'")
    if key == "b":
        return f"{int(n)} B"
    return f"{n / _UNITS[key]:.{digits}f} {unit}"


def fmt_num(x: float, digits: int = 2, *, pct: bool = False, signed: bool = False) -> str:
    """Format a measured number at the precision its lesson needs: ``digits`` decimals
    (of the percentage when ``pct``: ``fmt_num(0.1234, 1, pct=True) == '12.3%'``), with a
    sign when ``signed``.  The book prints every measured number through this function (and
    bytes through :func:`fmt_bytes`), at a precision coarse enough that the float noise
    between CPUs (AVX2 vs AVX-512 vs scalar kernels) does not reach the printed digits;
    a check cell then asserts the lesson within a stated tolerance.  ``-0.0`` prints as
    ``0.0`` (``±0.0`` when ``signed``).  Defined in Chapter 0, "How the book prints numbers".
    """
    if isinstance(x, (bool, str, bytes)):
        raise TypeError(f"fmt_num expects a number, got {type(x).__name__}: {x!r}")
    if not isinstance(x, (int, float)):
        try:
            x = float(x)  # numpy scalars, 0-d tensors
        except (TypeError, ValueError):
            raise TypeError(f"fmt_num expects a number, got {type(x).__name__}: {x!r}") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError(f"fmt_num expects a finite number, got {x!r}")
    if digits < 0:
        raise ValueError(f"digits must be >= 0, got {digits}")
    value = 100.0 * x if pct else float(x)
    text = f"{value:{'+' if signed else ''}.{digits}f}"
    if float(text) == 0.0:  # no "-0.00" or "+-0.0": a rounded zero has no sign
        text = ("±" if signed else "") + f"{0.0:.{digits}f}"
    return text + ("%" if pct else "")


def to_gib(n: float) -> float:
    """Bytes → GiB (2³⁰ bytes). Defined in Chapter 0, "Bytes, GB and GiB"."""
    _check_bytes(n)
    return n / GiB


def to_gb(n: float) -> float:
    """Bytes → GB (10⁹ bytes), the unit of datasheets and of the source articles."""
    _check_bytes(n)
    return n / GB


def parse_bytes(text: str | int | float) -> int:
    """Parse ``"80GB"``, ``"24 GiB"``, ``"512MiB"`` or a plain number of bytes into bytes.

    Defined in Chapter 0, "Bytes, GB and GiB".
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        _check_bytes(text)
        if text < 0:
            raise ValueError(f"a memory size cannot be negative, got {text}")
        return int(text)
    if not isinstance(text, str):
        raise TypeError(f"expected a size such as '80GB' or '24 GiB', got {text!r}")
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m:
        raise ValueError(f"cannot read {text!r} as a memory size; write e.g. '80GB', '24 GiB' or '512MiB'")
    value, unit = float(m.group(1)), (m.group(2) or "b").lower()
    if unit not in _UNITS:
        raise ValueError(
            f"unknown unit {m.group(2)!r} in {text!r}; use B, KiB, MiB, GiB, TiB (powers of 2) "
            "or KB, MB, GB, TB (powers of 10)"
        )
    return int(round(value * _UNITS[unit]))

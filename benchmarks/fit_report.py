"""Report a bisection record of ``benchmarks/validate_fit.py`` against the current estimator
(no GPU needed), through :func:`vramlib.estimate.fitcheck.fit_check`.

Run: ``python benchmarks/validate_fit.py --from-json vramlib/data/records/fit_gpu.json``.
Defined in Part I, "The calculator".
"""

from __future__ import annotations

from typing import Any

from vramlib.estimate.fitcheck import fit_check


def report(record: Any) -> dict[str, Any]:
    out = fit_check(record)
    print(f"{'case':4s} {'model':15s} {'recipe':15s} {'true':>5s} {'pred':>5s} {'ratio':>6s} {'peak err':>9s}")
    for r in out["rows"]:
        print(f"{r['name']:4s} {r['model']:15s} {r['recipe']:15s} {r['true']:5d} {r['pred']:5d} "
              f"{r['ratio']:6.2f} {100 * r['peak_err']:+8.1f}%")
    for split in ("tuning", "held-out"):
        s = out[split]
        print(f"{split}: n={s['n']}, optimistic {s['optimistic']}, ≥ 90 % of true {s['at_least_90']}, "
              f"predicted/true min {s['min_ratio']:.2f} median {s['median_ratio']:.2f}; peak |err| median "
              f"{100 * s['peak_median_abs']:.1f} %, max {100 * s['peak_max_abs']:.1f} %, worst under "
              f"{100 * s['peak_worst_under']:+.1f} %")
    return out

"""Error metrics of a product table, exhaustive or weighted by an operand distribution.

All metrics compare `table` with the exact products over the operand grid (codes), each
pair weighted by `weights` (uniform when omitted):

- ``mae``: mean |error|;
- ``nmed``: mae / max |exact product|;
- ``mred``: mean |error| / |exact| over pairs whose exact product is non-zero;
- ``wce``: worst-case |error| (over pairs of non-zero weight);
- ``wcre``: worst-case |error| / |exact| (non-zero exact products);
- ``ep``: error probability, the weight of pairs with a non-zero error (0..1);
- ``mse``: mean squared error;
- ``bias``: mean signed error (approx - exact): it decides how errors add up in a dot
  product, growing like K*bias where zero-mean errors grow like sqrt(K).
"""

from __future__ import annotations

import numpy as np

from axsa.errors import InputError

METRICS = ("mae", "nmed", "mred", "wce", "wcre", "ep", "mse", "bias")


def error_metrics(table: np.ndarray, exact: np.ndarray,
                  weights: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of `table` against `exact` (both lut[a_code, b_code])."""
    table = np.asarray(table, dtype=np.int64)
    exact = np.asarray(exact, dtype=np.int64)
    if table.shape != exact.shape:
        raise InputError(f"table shape {table.shape} differs from the exact table's {exact.shape}")
    if weights is None:
        w = np.full(table.shape, 1.0 / table.size)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != table.shape or (w < 0).any() or w.sum() <= 0:
            raise InputError(f"operand weights must be non-negative with shape {table.shape}")
        w = w / w.sum()
    err = (table - exact).astype(np.float64)
    abs_err = np.abs(err)
    nonzero = exact != 0
    rel = np.divide(abs_err, np.abs(exact), out=np.zeros_like(abs_err), where=nonzero)
    support = w > 0
    w_nz = w * nonzero
    mae = float((w * abs_err).sum())
    return {
        "mae": mae,
        "nmed": mae / float(np.abs(exact).max() or 1),
        "mred": float((w_nz * rel).sum() / w_nz.sum()) if w_nz.sum() > 0 else 0.0,
        "wce": float(abs_err[support].max()),
        "wcre": float(rel[support & nonzero].max()) if (support & nonzero).any() else 0.0,
        "ep": float(w[err != 0].sum()),
        "mse": float((w * err * err).sum()),
        "bias": float((w * err).sum()),
    }


def operand_weights(a_values: np.ndarray, b_values: np.ndarray, fmt) -> np.ndarray:
    """Joint distribution of operand pairs from a stream, as weights over the code grid."""
    from axsa.rtl.multipliers import to_codes
    a = np.asarray(a_values).ravel()
    b = np.asarray(b_values).ravel()
    if a.size != b.size or a.size == 0:
        raise InputError(f"operand stream needs equally many a and b values, got {a.size} "
                         f"and {b.size}")
    for name, v, (lo, hi) in (("a", a, fmt.a_range()), ("b", b, fmt.b_range())):
        if v.min() < lo or v.max() > hi:
            raise InputError(f"operand {name} of the stream spans {v.min()}..{v.max()}, outside "
                             f"{lo}..{hi} of format {fmt}")
    ca = to_codes(a.astype(np.int64), fmt.a_width)
    cb = to_codes(b.astype(np.int64), fmt.b_width)
    counts = np.zeros((1 << fmt.a_width, 1 << fmt.b_width))
    np.add.at(counts, (ca, cb), 1)
    return counts

"""Sign-magnitude wrapper for the magnitude-based families (drum, mitchell, roba, ...).

The family approximates the product of unsigned magnitudes; signed operands are split into
sign and magnitude, and the product is negated when the signs differ. The magnitude of a
w-bit signed operand is taken in w bits, so -2^(w-1) has magnitude 2^(w-1), not 0.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Mux, Value

from .base import Format


def signmag_model(fmt: Format, a, b, umodel) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if not fmt.signed:
        return umodel(a, b)
    p = umodel(np.abs(a), np.abs(b))
    return np.where((a < 0) ^ (b < 0), -p, p)


def magnitude(x: Value, width: int) -> Value:
    """|x| of a signed Value as an unsigned `width`-bit Value."""
    return Mux(x[-1], -x, x)[:width]


def signmag_rtl(m: Module, fmt: Format, a: Value, b: Value, urtl) -> Value:
    if not fmt.signed:
        return urtl(m, a, b)
    p = urtl(m, magnitude(a, fmt.a_width), magnitude(b, fmt.b_width))
    return Mux(a[-1] ^ b[-1], -p, p)


def by_leading_one(x: Value, width: int, value, default, lo: int = 0) -> Value:
    """`value(t)` where t is the position of the highest set bit of x among lo..width-1,
    `default` when none of those bits is set: a priority chain of muxes."""
    out = default if isinstance(default, Value) else Const(default)
    for t in range(lo, width):
        out = Mux(x[t], value(t), out)
    return out


def floor_log2(x: np.ndarray, width: int) -> np.ndarray:
    """floor(log2 x) for 0 < x < 2^width (0 where x == 0), exact integer arithmetic."""
    out = np.zeros_like(x)
    for t in range(1, width + 1):
        out += (x >> t) > 0
    return out

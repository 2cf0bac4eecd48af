"""Partial-product arrays shared by the array families (exact, trunc, bam, perf, cfgtrunc).

Signed operands use the modified Baugh-Wooley array: the bits a_i*b_j whose weight would be
negative (exactly one of i, j the sign position) are inverted, and the constant
2^(wa-1) + 2^(wb-1) + 2^(wa+wb-1) corrects the sum modulo 2^(wa+wb). An approximate family
chooses which bits to keep; a dropped bit counts as 0 (an inverted bit too), and the
constant stays. The numpy model and the RTL below evaluate the same array, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from amaranth.hdl import Cat, Const, Value

from .base import Format, to_codes

#: keep(i, j) -> True/False, or (RTL only) a 1-bit Value gating the bit at run time.
Keep = Callable[[int, int], "bool | Value"]


def pp_bits(fmt: Format) -> list[tuple[int, int, bool]]:
    """All partial-product bits (i, j, inverted): a_i * b_j at weight 2^(i+j)."""
    wa, wb = fmt.a_width, fmt.b_width
    return [(i, j, fmt.signed and ((i == wa - 1) != (j == wb - 1)))
            for j in range(wb) for i in range(wa)]


def pp_constant(fmt: Format) -> int:
    wa, wb = fmt.a_width, fmt.b_width
    return (1 << (wa - 1)) + (1 << (wb - 1)) + (1 << (wa + wb - 1)) if fmt.signed else 0


def _wrap(total: np.ndarray, fmt: Format) -> np.ndarray:
    n = fmt.a_width + fmt.b_width
    total = total & ((1 << n) - 1)
    if fmt.signed:
        total = np.where(total >= 1 << (n - 1), total - (1 << n), total)
    return total


def array_model(fmt: Format, a: np.ndarray, b: np.ndarray, keep: Callable[[int, int], bool],
                extra: int = 0) -> np.ndarray:
    """Sum of the kept partial-product bits (+ `extra` constant), as the RTL computes it."""
    ca = to_codes(a, fmt.a_width)
    cb = to_codes(b, fmt.b_width)
    total = np.int64(pp_constant(fmt) + extra)
    for i, j, inverted in pp_bits(fmt):
        if keep(i, j):
            bit = (ca >> i) & (cb >> j) & 1
            total = total + ((bit ^ 1 if inverted else bit) << (i + j))
    return _wrap(np.asarray(total, dtype=np.int64), fmt)


def array_rtl(fmt: Format, a: Value, b: Value, keep: Keep, extra: int = 0) -> Value:
    """The same array in Amaranth: one row of bits per b_j, rows summed by adders."""
    wa, wb = fmt.a_width, fmt.b_width
    au, bu = a.as_unsigned(), b.as_unsigned()
    rows: list[list[Value]] = [[Const(0, 1)] * wa for _ in range(wb)]
    for i, j, inverted in pp_bits(fmt):
        k = keep(i, j)
        if k is False:
            continue
        bit = au[i] & bu[j]
        if inverted:
            bit = ~bit
        rows[j][i] = bit if k is True else bit & k
    n = wa + wb
    total = Const((pp_constant(fmt) + extra) & ((1 << n) - 1), n)
    for j, row in enumerate(rows):
        total = total + (Cat(*row) << j)
    total = total[:n]
    return total.as_signed() if fmt.signed else total

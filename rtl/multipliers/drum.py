"""`drum(k)`: dynamic-range unbiased multiplier (Hashemi, Bahar and Reda, ICCAD 2015).

Each magnitude keeps the k bits from its leading one, the lowest kept bit forced to 1 (which
makes the error unbiased), the bits below it zero; magnitudes below 2^k are used as they
are. The reduced operands are multiplied exactly. ``drum(k)`` with k >= w is exact.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Mux

from ._signmag import by_leading_one, floor_log2, signmag_model, signmag_rtl
from .base import Multiplier, Param


def drum_round(x: np.ndarray, width: int, k: int) -> np.ndarray:
    shift = np.maximum(floor_log2(x, width) - k + 1, 0)
    return np.where(x >= 1 << k, ((x >> shift) | 1) << shift, x)


class Drum(Multiplier):
    family = "drum"
    doc = "dynamic-range unbiased multiplier: k bits from the leading one, lowest forced to 1"
    params = (Param("k", 1, 16, doc="bits kept from the leading one (k >= width: exact)"),)

    def model(self, a, b, mode=0):
        fa, fb = self.fmt.a_width, self.fmt.b_width
        return signmag_model(self.fmt, a, b, lambda x, y: drum_round(x, fa, self.k)
                             * drum_round(y, fb, self.k))

    def _reduce_rtl(self, x, width):
        """(k-bit mantissa, shift) with x' = mantissa << shift: a k x k multiplier follows."""
        if self.k >= width:
            return x, 0
        shift = by_leading_one(x, width, lambda t: t - self.k + 1, 0, lo=self.k)
        big = x >= 1 << self.k
        mant = Mux(big, ((x >> shift) | 1)[:self.k], x[:self.k])
        return mant, Mux(big, shift, 0)

    def _urtl(self, m, a, b):
        ma, sa = self._reduce_rtl(a, self.fmt.a_width)
        mb, sb = self._reduce_rtl(b, self.fmt.b_width)
        return (ma * mb) << (sa + sb)

    def rtl(self, m, a, b, mode):
        return signmag_rtl(m, self.fmt, a, b, self._urtl)

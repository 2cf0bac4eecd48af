"""`roba`: rounding-based approximate multiplier (Zendegani et al., TVLSI 2017).

Each magnitude is rounded to its nearest power of two (ties up: 3*2^(n-1) -> 2^(n+1)),
and a*b is approximated by ar*b + a*br - ar*br, which needs only shifts and adds.
Its error is exactly (a - ar)(b - br).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Mux

from ._signmag import by_leading_one, floor_log2, signmag_model, signmag_rtl
from .base import Multiplier


def round_log2(x: np.ndarray, width: int) -> np.ndarray:
    """log2 of x rounded to the nearest power of two, ties up (x > 0)."""
    k = floor_log2(x, width)
    below = np.where(k > 0, (x >> np.maximum(k - 1, 0)) & 1, 0)
    return k + below


class Roba(Multiplier):
    family = "roba"
    doc = "rounding-based multiplier: operands rounded to powers of two, ar*b + a*br - ar*br"

    def _umodel(self, a, b):
        ka = round_log2(a, self.fmt.a_width)
        kb = round_log2(b, self.fmt.b_width)
        p = (b << ka) + (a << kb) - (1 << (ka + kb))
        return np.where((a == 0) | (b == 0), 0, p)

    def model(self, a, b, mode=0):
        return signmag_model(self.fmt, a, b, self._umodel)

    @staticmethod
    def _round_log2(x, width):
        return by_leading_one(x, width, lambda t: Mux(x[t - 1], t + 1, t) if t else 0, 0)

    def _urtl(self, m, a, b):
        ka = self._round_log2(a, self.fmt.a_width)
        kb = self._round_log2(b, self.fmt.b_width)
        p = (b << ka) + (a << kb) - (Const(1, 1) << (ka + kb))
        return Mux((a == 0) | (b == 0), 0, p)

    def rtl(self, m, a, b, mode):
        return signmag_rtl(m, self.fmt, a, b, self._urtl)

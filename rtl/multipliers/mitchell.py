"""`mitchell(t)`: Mitchell's logarithmic multiplier (1962), fraction truncation t.

For magnitudes x = 2^kx (1 + fx) the product is approximated by adding logarithms:
2^(ka+kb) (1 + fa + fb) when fa + fb < 1, else 2^(ka+kb+1) (fa + fb). Fractions are held with
F = max(wa, wb) - 1 bits; ``t`` zeroes their t lowest bits first. The result is floored to
an integer; a zero operand gives 0. Never exact (except on powers of two).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Mux

from ._signmag import by_leading_one, floor_log2, signmag_model, signmag_rtl
from .base import Multiplier, Param


class Mitchell(Multiplier):
    family = "mitchell"
    doc = "logarithmic multiplier (Mitchell), fractions truncated by t bits"
    params = (Param("t", 0, lambda f: max(f.a_width, f.b_width) - 1, default=0,
                    doc="fraction bits truncated"),)

    @property
    def frac_bits(self) -> int:
        return max(self.fmt.a_width, self.fmt.b_width) - 1

    def _umodel(self, a, b):
        F, mask = self.frac_bits, ~((1 << self.t) - 1)
        ka, kb = floor_log2(a, self.fmt.a_width), floor_log2(b, self.fmt.b_width)
        fa = ((a - (1 << ka)) << F >> ka) & mask
        fb = ((b - (1 << kb)) << F >> kb) & mask
        s = fa + fb
        mant = np.where(s >= 1 << F, s << 1, (1 << F) + s)
        return np.where((a == 0) | (b == 0), 0, (mant << (ka + kb)) >> F)

    def model(self, a, b, mode=0):
        return signmag_model(self.fmt, a, b, self._umodel)

    def _log(self, x, width):
        F = self.frac_bits
        k = by_leading_one(x, width, lambda t: t, 0)
        # fraction: the bits below the leading one, aligned to F bits (x << (F - k)).
        frac = by_leading_one(x, width, lambda t: (x << (F - t))[:F], Const(0, F))
        if self.t:
            frac = Cat(Const(0, self.t), frac[self.t:])
        return k, frac

    def _urtl(self, m, a, b):
        F = self.frac_bits
        ka, fa = self._log(a, self.fmt.a_width)
        kb, fb = self._log(b, self.fmt.b_width)
        s = fa + fb                                    # F+1 bits; s[F] means fa+fb >= 1
        mant = Mux(s[F], s << 1, Cat(s[:F], Const(1, 1)))
        p = (mant << (ka + kb)) >> F
        return Mux((a == 0) | (b == 0), 0, p)

    def rtl(self, m, a, b, mode):
        return signmag_rtl(m, self.fmt, a, b, self._urtl)

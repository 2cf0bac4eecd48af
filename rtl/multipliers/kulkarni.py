"""`kulkarni`: underdesigned multiplier of Kulkarni, Gupta and Ercegovac (VLSI Design 2011).

Built recursively from 2x2 blocks whose only error is 3*3 = 7 (a 3-bit output:
{a1 b1, a1 b0 | a0 b1, a0 b0}); an odd-width magnitude gets a leading zero.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat

from ._signmag import signmag_model, signmag_rtl
from .base import Multiplier


def _ndigits(width: int) -> int:
    return (width + 1) // 2


class Kulkarni(Multiplier):
    family = "kulkarni"
    doc = "recursive 2x2 blocks with 3*3 = 7"

    def _umodel(self, a, b):
        total = np.int64(0)
        for i in range(_ndigits(self.fmt.a_width)):
            x = (a >> 2 * i) & 3
            for j in range(_ndigits(self.fmt.b_width)):
                y = (b >> 2 * j) & 3
                block = np.where((x == 3) & (y == 3), 7, x * y)
                total = total + (block << 2 * (i + j))
        return total

    def model(self, a, b, mode=0):
        return signmag_model(self.fmt, a, b, self._umodel)

    def _urtl(self, m, a, b):
        wa, wb = self.fmt.a_width, self.fmt.b_width
        a = Cat(a, 0) if wa % 2 else a
        b = Cat(b, 0) if wb % 2 else b
        total = 0
        for i in range(_ndigits(wa)):
            a0, a1 = a[2 * i], a[2 * i + 1]
            for j in range(_ndigits(wb)):
                b0, b1 = b[2 * j], b[2 * j + 1]
                block = Cat(a0 & b0, (a1 & b0) | (a0 & b1), a1 & b1)
                total = total + (block << 2 * (i + j))
        return total

    def rtl(self, m, a, b, mode):
        return signmag_rtl(m, self.fmt, a, b, self._urtl)

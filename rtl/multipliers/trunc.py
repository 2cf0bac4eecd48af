"""`trunc(k, comp)`: partial-product bits in columns below k dropped.

With ``comp=1`` a constant is added in their place: the expected value of the dropped bits
under uniform operands (1/4 of each plain bit's weight, 3/4 of each inverted Baugh-Wooley
bit's), rounded to the nearest integer. ``trunc(k=0)`` is exact.
"""

from __future__ import annotations

from ._pparray import array_model, array_rtl, pp_bits
from .base import Multiplier, Param


class Trunc(Multiplier):
    family = "trunc"
    doc = "truncated array multiplier: partial-product columns below k dropped"
    params = (
        Param("k", 0, lambda f: f.a_width + f.b_width - 1, doc="columns dropped"),
        Param("comp", 0, 1, default=0, doc="1: add the expected value of the dropped bits"),
    )

    def keep(self, i, j):
        return i + j >= self.k

    def compensation(self) -> int:
        if not self.comp:
            return 0
        quarters = sum((3 if inv else 1) << (i + j) for i, j, inv in pp_bits(self.fmt)
                       if not self.keep(i, j))
        return (quarters + 2) // 4

    def model(self, a, b, mode=0):
        return array_model(self.fmt, a, b, self.keep, self.compensation())

    def rtl(self, m, a, b, mode):
        return array_rtl(self.fmt, a, b, self.keep, self.compensation())

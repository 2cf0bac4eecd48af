"""`ssm(m)`: static segment multiplier (Narayanamoorthy et al., TVLSI 2015).

Each w-bit magnitude is reduced to an m-bit segment: its low m bits when the bits above
them are all zero, else its high m bits (the rest zeroed). The segments are multiplied
exactly and shifted back. ``ssm(m)`` with m >= w is exact.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Mux

from ._signmag import signmag_model, signmag_rtl
from .base import Multiplier, Param


class Ssm(Multiplier):
    family = "ssm"
    doc = "static segment multiplier: an m-bit segment of each operand"
    params = (Param("m", 1, lambda f: max(f.a_width, f.b_width), doc="segment bits"),)

    def _segment(self, x, width):
        if self.m >= width:
            return x
        return np.where(x >> self.m == 0, x, (x >> (width - self.m)) << (width - self.m))

    def _umodel(self, a, b):
        return self._segment(a, self.fmt.a_width) * self._segment(b, self.fmt.b_width)

    def model(self, a, b, mode=0):
        return signmag_model(self.fmt, a, b, self._umodel)

    def _segment_rtl(self, x, width):
        """(m-bit segment, shift): an m x m multiplier follows."""
        if self.m >= width:
            return x, 0
        low = width - self.m
        upper = x[self.m:] != 0
        return Mux(upper, x[low:], x[:self.m]), Mux(upper, low, 0)

    def _urtl(self, m, a, b):
        sa, ha = self._segment_rtl(a, self.fmt.a_width)
        sb, hb = self._segment_rtl(b, self.fmt.b_width)
        return (sa * sb) << (ha + hb)

    def rtl(self, m, a, b, mode):
        return signmag_rtl(m, self.fmt, a, b, self._urtl)

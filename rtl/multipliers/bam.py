"""`bam(h, v)`: broken-array multiplier (Mahdiani et al., 2010).

The carry-save cells of the h lowest partial-product rows (horizontal break level) and of
the columns below v (vertical break level) are omitted. ``bam(h=0,v=0)`` is exact.
"""

from __future__ import annotations

from ._pparray import array_model, array_rtl
from .base import Multiplier, Param


class Bam(Multiplier):
    family = "bam"
    doc = "broken-array multiplier: rows below h and columns below v omitted"
    params = (
        Param("h", 0, lambda f: f.b_width, default=0, doc="horizontal break level (rows)"),
        Param("v", 0, lambda f: f.a_width + f.b_width - 1, default=0,
              doc="vertical break level (columns)"),
    )

    def keep(self, i, j):
        return j >= self.h and i + j >= self.v

    def model(self, a, b, mode=0):
        return array_model(self.fmt, a, b, self.keep)

    def rtl(self, m, a, b, mode):
        return array_rtl(self.fmt, a, b, self.keep)

"""`exact`: array multiplier (Baugh-Wooley for signed operands): every partial product kept.

The area and power reference for the array families; `booth` is the other exact architecture.
"""

from __future__ import annotations

from ._pparray import array_model, array_rtl
from .base import Multiplier


class Exact(Multiplier):
    family = "exact"
    doc = "exact array multiplier (Baugh-Wooley for signed operands)"

    def model(self, a, b, mode=0):
        return array_model(self.fmt, a, b, lambda i, j: True)

    def rtl(self, m, a, b, mode):
        return array_rtl(self.fmt, a, b, lambda i, j: True)

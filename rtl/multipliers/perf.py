"""`perf(i, j)`: partial-product perforation (Zervakis et al., 2016).

j partial-product rows, starting at row i (row r holds a * b_r), are not generated.
``perf(j=0)`` is exact.
"""

from __future__ import annotations

from ._pparray import array_model, array_rtl
from .base import Multiplier, Param


class Perf(Multiplier):
    family = "perf"
    doc = "perforated multiplier: j partial-product rows skipped from row i"
    params = (
        Param("i", 0, lambda f: f.b_width - 1, default=0, doc="first skipped row"),
        Param("j", 0, lambda f: f.b_width, doc="rows skipped"),
    )

    def validate(self):
        from .base import SpecError
        if self.i + self.j > self.fmt.b_width:
            raise SpecError(f"perf(i={self.i},j={self.j}) skips rows past the last row "
                            f"{self.fmt.b_width - 1} of format {self.fmt}")

    def keep(self, col, row):
        return not self.i <= row < self.i + self.j

    def model(self, a, b, mode=0):
        return array_model(self.fmt, a, b, self.keep)

    def rtl(self, m, a, b, mode):
        return array_rtl(self.fmt, a, b, self.keep)

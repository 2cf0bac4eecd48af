"""`cfgtrunc(k=K0/K1/...)`: one truncated array multiplier with a runtime `mode` input.

Mode n drops the partial-product bits in columns below k[n] by gating them with AND gates,
so a single array can run each layer at its own level. One listed depth must be 0 (exact).
Its product table has one slice per mode.
"""

from __future__ import annotations

from amaranth.hdl import Const

from ._pparray import array_model, array_rtl
from .base import Multiplier, Param, SpecError


class CfgTrunc(Multiplier):
    family = "cfgtrunc"
    doc = "mode-configurable truncation: mode n drops columns below k[n]"
    params = (
        Param("k", 0, lambda f: f.a_width + f.b_width - 1, default=(0, 2, 4, 6),
              is_list=True, doc="truncation depth of each mode, one of them 0"),
    )

    def validate(self):
        if not 2 <= len(self.k) <= 8:
            raise SpecError(f"cfgtrunc takes 2..8 modes, got k={'/'.join(map(str, self.k))}")
        if 0 not in self.k:
            raise SpecError(f"cfgtrunc needs one exact mode (a depth of 0) in "
                            f"k={'/'.join(map(str, self.k))}")

    @property
    def modes(self) -> int:
        return len(self.k)

    def model(self, a, b, mode=0):
        k = self.k[mode]
        return array_model(self.fmt, a, b, lambda i, j: i + j >= k)

    def rtl(self, m, a, b, mode):
        ncols = self.fmt.a_width + self.fmt.b_width
        # enable[c]: column c is computed in the current mode (a small decoder on `mode`).
        enable = []
        for c in range(ncols):
            on = [n for n, k in enumerate(self.k) if c >= k]
            if len(on) == len(self.k):
                enable.append(True)
            elif not on:
                enable.append(False)
            else:
                en = Const(0, 1)
                for n in on:
                    en = en | (mode == n)
                enable.append(en)
        return array_rtl(self.fmt, a, b, lambda i, j: enable[i + j])

"""`booth`: exact radix-4 (modified) Booth multiplier.

Operand b is recoded into digits d_k = -2*b_{2k+1} + b_{2k} + b_{2k-1} in {-2..2}
(b_{-1} = 0; an unsigned b gets a leading 0 first), each selecting 0, +-a or +-2a.
Half as many partial products as the array, at the cost of the recoding logic.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Mux

from .base import Multiplier, to_codes


def _digits(fmt):
    nbits = fmt.b_width + (0 if fmt.signed else 1)  # b as a signed number of nbits
    return (nbits + 1) // 2, nbits


class Booth(Multiplier):
    family = "booth"
    doc = "exact radix-4 Booth multiplier"

    def model(self, a, b, mode=0):
        ndig, nbits = _digits(self.fmt)
        cb = to_codes(b, self.fmt.b_width)

        def bit(n):
            if n < 0:
                return 0
            if n >= nbits:  # sign extension of b viewed as an nbits signed number
                n = nbits - 1
            return (cb >> n) & 1 if n < self.fmt.b_width else 0

        total = np.int64(0)
        for k in range(ndig):
            d = -2 * bit(2 * k + 1) + bit(2 * k) + bit(2 * k - 1)
            total = total + ((d * np.asarray(a, dtype=np.int64)) << (2 * k))
        return total

    def rtl(self, m, a, b, mode):
        ndig, nbits = _digits(self.fmt)
        wb = self.fmt.b_width
        bu = b.as_unsigned()

        def bit(n):
            if n < 0 or (n >= wb and not self.fmt.signed):
                return Const(0, 1)
            return bu[min(n, wb - 1)]

        total = 0
        for k in range(ndig):
            hi, mid, lo = bit(2 * k + 1), bit(2 * k), bit(2 * k - 1)
            one = mid ^ lo                       # |d| == 1
            two = (hi & ~mid & ~lo) | (~hi & mid & lo)  # |d| == 2
            mag = Mux(two, a << 1, Mux(one, a, 0))
            pp = Mux(hi, -mag, mag)              # digit sign is b_{2k+1} (d=0 gives 0 either way)
            total = total + (pp << (2 * k))
        return total

"""`Requantizer`: the accelerator's output stage, ``clamp((acc * m + 2^(s-1)) >> s)``.

DESIGN.md's requantization of an accumulator, per output column c with its own integer
multiplier ``m[c]`` and shift ``s[c]``, clamped to a ``bits``-wide signed or unsigned
range; a tile whose parameters have ``en`` low passes its accumulators through
unchanged. `axsa.sim.reference.requantize` is the same formula in numpy.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from axsa.errors import InputError
from axsa.formats import value_range

from .array import row_layout
from .component import CheckedComponent, check_acc_width

__all__ = ["BITS_WIDTH", "MAX_SHIFT", "M_WIDTH", "S_WIDTH", "Requantizer",
           "check_requant", "requant_layout"]

#: requantization multiplier m: signed 32-bit; shift s: 6 bits, 1..MAX_SHIFT used;
#: output width: 7 bits
M_WIDTH = 32
S_WIDTH = 6
MAX_SHIFT = 62
BITS_WIDTH = 7


def check_requant(m, s, bits: int, max_bits: int) -> None:
    """InputError naming the bad value unless every `m` is signed 32-bit, every `s` is
    1..62 and `bits` is 1..`max_bits` (the one check of requantization parameters)."""
    import numpy as np

    for name, values, (lo, hi), what in (
            ("multiplier m", m, value_range(M_WIDTH, True), f"the signed {M_WIDTH}-bit range"),
            ("shift s", s, (1, MAX_SHIFT), f"1..{MAX_SHIFT}")):
        v = np.asarray(values, dtype=object).ravel()
        bad = (v < lo) | (v > hi)
        if bad.any():
            raise InputError(f"requantization {name} = {v[bad][0]} is outside {what}")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) \
            or not 1 <= bits <= max_bits:
        raise InputError(f"requantization output width bits = {bits!r} is outside "
                         f"1..{max_bits}")


def requant_layout(cols: int) -> data.StructLayout:
    """A tile's requantization parameters, fields from the least significant bit up.

    ``en``: requantize (else pass the accumulators through); ``signed``, ``bits``: the
    output range; ``m[c]``, ``s[c]``: multiplier and shift of output column c.
    """
    return data.StructLayout({
        "en": unsigned(1), "signed": unsigned(1), "bits": unsigned(BITS_WIDTH),
        "m": data.ArrayLayout(signed(M_WIDTH), cols),
        "s": data.ArrayLayout(unsigned(S_WIDTH), cols),
    })


class Requantizer(CheckedComponent):
    """Requantizes output rows of the systolic array, one row per cycle.

    ``rows`` (in, always ready) carries the array's rows (`axsa.rtl.array.row_layout`);
    ``params`` (in) one `requant_layout` beat per tile, taken in the cycle `next_tile`
    is high (the cycle before the tile's first row: the array's ``out_next``), when the
    clamp bounds are worked out once for all rows of the tile. ``o`` (out) carries the
    results, C signed elements of `acc_width` bits.

    Latency: 2 cycles from a row on ``rows`` to its result on ``o`` (stage 1: the product
    and rounding constant; stage 2: shift and clamp). Throughput: one row per cycle. It
    never stalls: ``o.ready`` is not looked at (the accelerator's credits make sure the
    output queue has room), and ``params`` must hold the tile's beat when `next_tile`
    rises (the parameter queue is written when the tile's command is taken).

    Parameters
    ----------
    acc_width : int
        Accumulator (and result element) width W.
    cols : int
        Elements per row C.
    """

    @staticmethod
    def check(acc_width, cols):
        check_acc_width(acc_width)
        if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
            raise ValueError(f"cols must be a positive integer, not {cols!r}")

    def __init__(self, acc_width: int, cols: int):
        self.acc_width, self.cols = acc_width, cols
        self.result_layout = data.ArrayLayout(signed(acc_width), cols)
        super().__init__({
            "rows": In(stream.Signature(row_layout(acc_width, cols), always_ready=True)),
            "params": In(stream.Signature(requant_layout(cols))),
            "next_tile": In(1),
            "o": Out(stream.Signature(self.result_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        W, C = self.acc_width, self.cols
        # the tile's parameters, held for all its rows, with its clamp bounds
        prm = Signal(data.StructLayout({
            "en": unsigned(1),
            "m": data.ArrayLayout(signed(M_WIDTH), C),
            "s": data.ArrayLayout(unsigned(S_WIDTH), C),
            "lo": signed(W + 1), "hi": signed(W + 1),
        }))
        head = self.params.payload
        m.d.comb += self.params.ready.eq(self.next_tile)
        with m.If(self.next_tile):
            one = Const(1, 1) << head.bits             # 2^bits, up to 2^127
            m.d.sync += [
                prm.en.eq(head.en), prm.m.eq(head.m), prm.s.eq(head.s),
                prm.lo.eq(Mux(head.signed, -(one >> 1), 0)),
                prm.hi.eq(Mux(head.signed, (one >> 1) - 1, one - 1)),
            ]

        # stage 1: acc * m + 2^(s-1); acc * m needs W + 32 bits, the rounding constant
        # up to 2^62: room for both. The stages' data registers load only on valid rows
        # (enabled registers): the wide arithmetic is then skipped by simulators on the
        # other cycles.
        sum_width = max(W + M_WIDTH, 64) + 2
        s1_valid = Signal()
        s1_en = Signal()
        s1_acc = [Signal(signed(W), name=f"s1_acc{c}") for c in range(C)]
        s1_sum = [Signal(signed(sum_width), name=f"s1_sum{c}") for c in range(C)]
        s1_s = [Signal(unsigned(S_WIDTH), name=f"s1_s{c}") for c in range(C)]
        s1_lo = Signal(signed(W + 1))
        s1_hi = Signal(signed(W + 1))
        rows = self.rows
        m.d.sync += s1_valid.eq(rows.valid)
        with m.If(rows.valid):
            m.d.sync += [s1_en.eq(prm.en), s1_lo.eq(prm.lo), s1_hi.eq(prm.hi)]
            for c in range(C):
                acc = rows.payload.row[c]
                s = prm.s[c]
                rnd = (Const(1, 1) << s) >> 1          # 2^(s-1), 0 for s = 0
                m.d.sync += [s1_acc[c].eq(acc), s1_s[c].eq(s),
                             s1_sum[c].eq(acc * prm.m[c] + rnd)]

        # stage 2: floor shift, clamp (or the accumulator itself), into `o`
        m.d.sync += self.o.valid.eq(s1_valid)
        with m.If(s1_valid):
            for c in range(C):
                y = s1_sum[c] >> s1_s[c]               # arithmetic: floor
                clamped = Mux(y < s1_lo, s1_lo, Mux(y > s1_hi, s1_hi, y))
                m.d.sync += self.o.payload[c].eq(Mux(s1_en, clamped, s1_acc[c]))
        return m

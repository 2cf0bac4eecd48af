"""Small stream designs the engine tests run, with plain-Python models of their behaviour."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from axsa.rtl.cells import MultiplierCell, product

LFSR_INIT = 0xA5


def lfsr_next(state: int) -> int:
    """The 8-bit Fibonacci LFSR of `StreamMac` (taps 8, 6, 5, 4)."""
    fb = ((state >> 7) ^ (state >> 5) ^ (state >> 4) ^ (state >> 3)) & 1
    return ((state << 1) & 0xFF) | fb


class StreamMac(wiring.Component):
    """Sums ``a * b`` over the items of a group (ended by ``last``) and emits sum + bias.

    The input stalls (ready low) in every cycle whose free-running LFSR has its two low
    bits set, so the engines see real back-pressure. Outputs are registered: a sum is
    offered the cycle after its `last` item transferred. `count` counts emitted sums.
    """

    def __init__(self, width: int = 8, acc_width: int = 32, stall: bool = True):
        self.stall = stall
        super().__init__({
            "i": In(stream.Signature(data.StructLayout(
                {"a": signed(width), "b": signed(width), "last": 1}))),
            "o": Out(stream.Signature(signed(acc_width))),
            "bias": In(signed(16)),
            "count": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        lfsr = Signal(8, init=LFSR_INIT)
        m.d.sync += lfsr.eq(Cat(lfsr[7] ^ lfsr[5] ^ lfsr[4] ^ lfsr[3], lfsr[:7]))
        stall = (lfsr[0] & lfsr[1]) if self.stall else 0
        m.d.comb += self.i.ready.eq(~stall & (~self.o.valid | self.o.ready))
        acc = Signal.like(self.o.payload)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [self.o.valid.eq(0), self.count.eq(self.count + 1)]
        with m.If(self.i.valid & self.i.ready):
            total = acc + self.i.payload.a * self.i.payload.b
            with m.If(self.i.payload.last):
                m.d.sync += [self.o.payload.eq(total + self.bias), self.o.valid.eq(1),
                             acc.eq(0)]
            with m.Else():
                m.d.sync += acc.eq(total)
        return m


def stream_mac_items(a, b, last) -> np.ndarray:
    """StreamMac input payloads (a at bit 0, b at bit 8, last at bit 16) as int64."""
    a, b, last = (np.asarray(x, dtype=np.int64) for x in (a, b, last))
    return (a & 0xFF) | ((b & 0xFF) << 8) | (last << 16)


def stream_mac_cycles(n_items: int, lfsr: int, stall: bool = True) -> tuple[int, int]:
    """Cycles of one StreamMac run whose last item ends the last group, from LFSR state
    `lfsr` at the start of the run; returns (cycles, LFSR state after the run).

    With the drain always ready, the input is ready exactly in the cycles without a stall;
    the run ends one edge after the last item transferred (the registered sum moves out).
    """
    cycles, sent = 0, 0
    while sent < n_items:
        if not (stall and (lfsr & 1) and (lfsr & 2)):
            sent += 1
        lfsr = lfsr_next(lfsr)
        cycles += 1
    return cycles + 1, lfsr_next(lfsr)


class StreamMultiplier(wiring.Component):
    """One multiplier between a stream of operand pairs and a stream of products.

    Payload in: ``a`` at bit 0 (a_width bits, the operand's code), then ``b``.
    Out: the product, registered (one cycle latency, one pair per cycle). `view` as for
    `axsa.rtl.mac.Mac` (circuit or cell; the cell view lists its cell in `cells`).
    """

    def __init__(self, multiplier, view="circuit"):
        self.multiplier, self.view = multiplier, view
        self.cells = (MultiplierCell(multiplier),) if view == "cell" else ()
        ports = {
            "i": In(stream.Signature(data.StructLayout(
                {"a": multiplier.a_shape, "b": multiplier.b_shape}))),
            "o": Out(stream.Signature(multiplier.p_shape)),
        }
        if multiplier.modes > 1:
            ports["mode"] = In(range(multiplier.modes))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        mode = self.mode if self.multiplier.modes > 1 else None
        p = product(m, self.multiplier, self.view, self.i.payload.a, self.i.payload.b, mode)
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(p)]
        return m


def pair_payloads(multiplier, a_codes, b_codes) -> np.ndarray:
    """StreamMultiplier input payloads from operand codes."""
    wa = multiplier.fmt.a_width
    return np.asarray(a_codes, np.int64) | (np.asarray(b_codes, np.int64) << wa)


def products(multiplier, words: np.ndarray) -> np.ndarray:
    """Decode StreamMultiplier output words into product values."""
    width = multiplier.p_shape.width
    raw = words[:, 0].astype(np.int64)
    if words.shape[1] > 1:
        raw |= words[:, 1].astype(np.int64) << 32
    if multiplier.p_shape.signed:
        raw -= (raw >> (width - 1)) << width
    return raw


def vcd_changes(path) -> tuple[dict, list]:
    """A VCD file read back: ({signal name: id code}, [(time, id code, value), ...])."""
    from vcd.reader import TokenKind, tokenize
    ids, changes, time = {}, [], 0
    with open(path, "rb") as f:
        for tok in tokenize(f):
            if tok.kind is TokenKind.VAR:
                ids.setdefault(tok.data.reference, tok.data.id_code)
            elif tok.kind is TokenKind.CHANGE_TIME:
                time = tok.data
            elif tok.kind in (TokenKind.CHANGE_SCALAR, TokenKind.CHANGE_VECTOR):
                changes.append((time, tok.data.id_code, tok.data.value))
    return ids, changes


def imported_lsb0(folder):
    """A user Verilog multiplier (u4 product with its lowest bit cleared) as a library
    entry in `folder`: returns (the `Imported` multiplier, its expected table)."""
    import json

    from axsa.rtl.multipliers import Format
    from axsa.rtl.multipliers.imported import Imported
    (folder / "lsb0.v").write_text(
        "module lsb0(input [3:0] x, input [3:0] y, output [7:0] z);\n"
        "  wire [7:0] p = x * y;\n  assign z = {p[7:1], 1'b0};\nendmodule\n")
    codes = np.arange(16)
    table = (codes[:, None] * codes[None, :]) & ~1
    entry = {"source": "lsb0.v", "top": "lsb0", "format": "u4", "y_width": 8,
             "ports": {"a": "x", "b": "y", "y": "z"}}
    (folder / "entry.json").write_text(json.dumps(entry))
    return Imported("lsb0", Format.parse("u4"), entry, table, folder), table

"""`UartRx`, `UartTx`: 8N1 serial bytes on one pin each, with `lib.stream` byte ports.

A frame is a start bit (0), 8 data bits least significant first and a stop bit (1), each
`divisor` clock cycles long (baud rate = clock frequency / divisor); the line idles at 1.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out
from axsa.rtl.component import CheckedComponent

__all__ = ["MIN_DIVISOR", "UartRx", "UartTx", "check_divisor"]

#: fewest clock cycles per bit: the receiver samples in the middle of a bit
MIN_DIVISOR = 4


def check_divisor(divisor) -> None:
    """A baud divisor is an integer >= `MIN_DIVISOR` (ValueError naming it otherwise)."""
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be an integer >= {MIN_DIVISOR} clock cycles per "
                         f"bit, not {divisor!r}")


class UartRx(CheckedComponent):
    """Receives 8N1 frames from the ``rx`` pin and offers each byte on ``o``.

    ``rx`` passes a two-flop synchronizer first, so the pin may be asynchronous. A start
    bit is confirmed in its middle, then each data bit and the stop bit are sampled in
    their middles, `divisor` cycles apart; a frame whose stop bit reads 0 (a framing error,
    or a break) is dropped. The line has no flow control: a byte not taken from ``o``
    before the next one is complete is overwritten (``overrun`` is set and stays set).

    Latency: a byte is offered ``divisor // 2 + 3`` cycles after the start of its stop
    bit. Throughput: back-to-back frames.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (at least `MIN_DIVISOR`).
    """

    @staticmethod
    def check(divisor):
        check_divisor(divisor)

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)
        count = Signal(range(d))
        bits = Signal(range(8))
        shreg = Signal(8)
        tick = count == 0
        with m.If(~tick):
            m.d.sync += count.eq(count - 1)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += count.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(tick):
                    with m.If(rx):
                        m.next = "IDLE"  # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [count.eq(d - 1), bits.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(tick):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), count.eq(d - 1),
                                 bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(tick):
                    with m.If(rx):
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                    m.next = "IDLE"
        return m


class UartTx(CheckedComponent):
    """Sends each byte taken from ``i`` as an 8N1 frame on the ``tx`` pin.

    ``tx`` is a register bit (glitch-free) and idles at 1. Every bit lasts exactly
    `divisor` cycles; the next byte is taken in the last cycle of a stop bit, so frames
    follow each other without a gap.

    Latency: the start bit begins one cycle after a byte is taken. Throughput: one byte
    per ``10 * divisor`` cycles.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (at least `MIN_DIVISOR`).
    """

    @staticmethod
    def check(divisor):
        check_divisor(divisor)

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        count = Signal(range(d))
        left = Signal(range(11))                # bits of the frame not yet finished
        shreg = Signal(10, init=(1 << 10) - 1)  # bit 0 is on the line; ones shift in
        tick = count == 0
        m.d.comb += self.tx.eq(shreg[0])
        with m.If(left != 0):
            with m.If(tick):
                m.d.sync += [count.eq(d - 1), shreg.eq(Cat(shreg[1:], 1)), left.eq(left - 1)]
            with m.Else():
                m.d.sync += count.eq(count - 1)
        free = (left == 0) | ((left == 1) & tick)
        m.d.comb += self.i.ready.eq(free)
        with m.If(self.i.valid & free):
            m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                         left.eq(10), count.eq(d - 1)]
        return m

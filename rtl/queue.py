"""`Queue`: a first-in first-out buffer between two streams of one payload layout."""

from __future__ import annotations

from amaranth.hdl import Module, Shape
from amaranth.lib import stream
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .component import CheckedComponent

__all__ = ["Queue"]


class Queue(CheckedComponent):
    """`SyncFIFOBuffered` (a `lib.memory` ring) with ``i`` and ``o`` streams.

    The payload crosses the FIFO as bits, packed and unpacked through the same layout:
    ``i.payload`` and ``o.payload`` are both views of `shape`, so a field written by name
    on one side is read by name on the other.

    Latency: a beat taken by ``i`` at an edge is offered on ``o`` two edges later (the
    FIFO's memory, then its output register). Throughput: one beat per cycle in and out.
    ``i.ready`` is low only when `depth` beats are held.

    Parameters
    ----------
    shape : shape-castable
        Payload shape or layout (`lib.data.StructLayout`, `ArrayLayout`, ...).
    depth : int
        Beats held at most (at least 1).
    """

    @staticmethod
    def check(shape, depth):
        Shape.cast(shape)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, not {depth!r}")

    def __init__(self, shape, depth: int):
        self.shape, self.depth = shape, depth
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=Shape.cast(self.shape).width,
                                                    depth=self.depth)
        # the FIFO's streams carry plain bits: the same beats, re-typed as `shape`
        w, r = fifo.w_stream, fifo.r_stream
        m.d.comb += [
            w.payload.eq(self.i.payload), w.valid.eq(self.i.valid), self.i.ready.eq(w.ready),
            self.o.payload.eq(r.payload), self.o.valid.eq(r.valid), r.ready.eq(self.o.ready),
        ]
        return m

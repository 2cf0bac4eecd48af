"""`TileController`: commands and operand beats in, array steps out, credits kept."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from .array import check_dims, step_layout
from .component import CheckedComponent
from .requantizer import requant_layout

__all__ = ["TileController", "command_layout"]


def command_layout(cols: int, max_k: int) -> data.StructLayout:
    """Payload of the ``cmd`` stream, fields from the least significant bit up.

    ``k_minus_1``: K - 1 (K in 1..max_k); ``rq``: the tile's requantization parameters
    (`axsa.rtl.requantizer.requant_layout`: ``en``, ``signed``, ``bits``, ``m[c]``,
    ``s[c]``).
    """
    return data.StructLayout({
        "k_minus_1": unsigned(max(1, (max_k - 1).bit_length())),
        "rq": requant_layout(cols),
    })


class TileController(CheckedComponent):
    """Issues each tile's K steps to the array and keeps the tiles in flight bounded.

    Takes a command from ``cmd`` (`command_layout`), then one beat from each of ``a`` and
    ``b`` per step and presents them on ``step`` (to `SystolicArray.step`) with the
    tile's ``first``/``last`` flags, one step per cycle while both operand streams have a
    beat. The next command is taken in the cycle of the current tile's last step, so
    tiles follow each other back to back; two last steps stay `min_tile_gap` cycles
    apart (the array's rule), which costs cycles only when K < min_tile_gap. A taken
    command's ``rq`` parameters leave on ``params`` in the same cycle.

    Credits: at most `max_tiles` tiles are in flight, from their command to the last of
    their R result rows (`row_out` pulses once per row leaving the accelerator); ``cmd``
    waits while `max_tiles` are.

    Latency: 0 cycles from an operand beat to its step (combinational), 0 from a command
    to its ``params`` beat. Throughput: one step per cycle; a command per
    ``max(K, min_tile_gap)`` cycles.

    ``params.ready`` is not looked at: the parameter queue holds `max_tiles` beats, as
    many as the credits let be in flight.

    Parameters
    ----------
    multiplier : Multiplier
        Sets the operand shapes.
    rows, cols : int
        Array size R x C.
    max_k : int
        Longest K a command may ask for.
    min_tile_gap : int
        Least distance in cycles between two last steps (``max(rows, cols)``).
    max_tiles : int
        Tiles in flight at most.
    """

    @staticmethod
    def check(multiplier, rows, cols, max_k, min_tile_gap, max_tiles):
        check_dims(rows, cols)
        for name, v in (("max_k", max_k), ("min_tile_gap", min_tile_gap),
                        ("max_tiles", max_tiles)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")

    def __init__(self, multiplier, rows: int, cols: int, max_k: int, min_tile_gap: int,
                 max_tiles: int):
        self.rows, self.cols, self.max_k = rows, cols, max_k
        self.min_tile_gap, self.max_tiles = min_tile_gap, max_tiles
        self.cmd_layout = command_layout(cols, max_k)
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "a": In(stream.Signature(data.ArrayLayout(multiplier.a_shape, rows))),
            "b": In(stream.Signature(data.ArrayLayout(multiplier.b_shape, cols))),
            "step": Out(stream.Signature(step_layout(multiplier, rows, cols),
                                         always_ready=True)),
            "params": Out(stream.Signature(requant_layout(cols))),
            "row_out": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        gap, max_tiles, R = self.min_tile_gap, self.max_tiles, self.rows
        active = Signal()
        k_left = Signal(range(self.max_k + 1))
        is_first = Signal()
        since_last = Signal(range(gap), init=gap - 1)   # cycles since the last `last` step
        outstanding = Signal(range(max_tiles + 1))      # tiles accepted, not fully drained

        # -- steps --------------------------------------------------------------------
        is_last = k_left == 1
        gap_ok = since_last == gap - 1
        step = Signal()
        # the step payload as one value (fields in layout order), not four field writes: a
        # compiled simulator then copies it in one piece rather than splicing 258 bits
        m.d.comb += [
            step.eq(active & self.a.valid & self.b.valid & (~is_last | gap_ok)),
            self.step.valid.eq(step),
            self.step.payload.eq(Cat(self.a.payload, self.b.payload, is_first, is_last)),
            self.a.ready.eq(step), self.b.ready.eq(step),
        ]
        with m.If(step):
            m.d.sync += [k_left.eq(k_left - 1), is_first.eq(0)]
            with m.If(is_last):
                m.d.sync += active.eq(0)
        with m.If(step & is_last):
            m.d.sync += since_last.eq(0)
        with m.Elif(~gap_ok):
            m.d.sync += since_last.eq(since_last + 1)

        # -- commands -----------------------------------------------------------------
        take_cmd = Signal()
        m.d.comb += [
            self.cmd.ready.eq((~active | (step & is_last)) & (outstanding < max_tiles)),
            take_cmd.eq(self.cmd.valid & self.cmd.ready),
            self.params.valid.eq(take_cmd), self.params.payload.eq(self.cmd.payload.rq),
        ]
        with m.If(take_cmd):
            m.d.sync += [active.eq(1), k_left.eq(self.cmd.payload.k_minus_1 + 1),
                         is_first.eq(1)]

        # -- credits: a tile is done when its last row has left -------------------------
        out_row = Signal(range(R))
        tile_done = self.row_out & (out_row == R - 1)
        with m.If(self.row_out):
            m.d.sync += out_row.eq(Mux(out_row == R - 1, 0, out_row + 1))
        with m.If(take_cmd & ~tile_done):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~take_cmd & tile_done):
            m.d.sync += outstanding.eq(outstanding - 1)
        m.d.comb += self.busy.eq(outstanding != 0)
        return m

"""The GEMM accelerator: small stream components around the systolic array.

Streams (`amaranth.lib.stream`, valid/ready/payload):

- ``cmd`` (in): one command per output tile, a `command_layout` payload: the reduction
  length (``k_minus_1`` = K - 1) and the tile's requantization parameters (``rq``).
- ``a`` (in): K beats per tile, beat k = column k of the tile's A block (R operands,
  ``a[r]`` = A[i0 + r, k0 + k]); rows beyond M are zero-padded by the host.
- ``b`` (in): K beats per tile, beat k = row k of the tile's B block (C operands).
- ``result`` (out): R beats per tile, beat r = row r of the output tile (C signed
  elements of `acc_width` bits): the exact sums, or the requantized values when the
  tile's ``rq.en`` is set.

Plain input ``mode`` (multipliers with modes only) selects the multiplier mode; it is
registered once and must only change while the accelerator is idle.

Inside, wired with `wiring.connect`, each component with its latency in its docstring::

    a ──> a_queue ──┐                       ┌──> params_queue ──┐
    b ──> b_queue ──┼──> controller ──step──┤                   │
    cmd ────────────┘        ^              └──> array ──out──> requantizer ──> out_queue ──> result
                             └──────────── row_out (a result row left) ─────────────────────┘

- `Queue` (``a_queue``, ``b_queue``): the operand buffers, so the next tile's operands
  load while the array works on the current one, and the array never waits for a tile
  to be loaded as a whole (it starts on the first beat);
- `TileController`: takes a command, issues its K steps to the `SystolicArray`, one per
  cycle while both operand queues have a beat, takes the next command in the cycle of
  the last step (tiles back to back, two last steps at least ``max(R, C)`` apart), and
  keeps the credits: at most `max_tiles` tiles in flight;
- `Queue` (``params_queue``): each tile's requantization parameters, from its command to
  its first output row;
- `Requantizer`: ``clamp((acc * m[c] + 2^(s[c]-1)) >> s[c])`` per column (DESIGN.md), a
  row per cycle in two pipeline stages;
- `Queue` (``out_queue``): ``max_tiles * R`` rows, so a slow result consumer stalls the
  command stream and never loses a row.

Cycle behaviour with feeds that are always valid and a result consumer that is always
ready is exactly `axsa.sim.cycles.predict_cycles`.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from axsa.formats import DEFAULT_MAX_REDUCTION

from .array import SystolicArray, check_dims
from .cells import check_view
from .component import CheckedComponent, check_acc_width
from .controller import TileController, command_layout
from .mac import acc_width_for, cells_for, mode_port, verilog_sources
from .queue import Queue
from .requantizer import BITS_WIDTH, M_WIDTH, S_WIDTH, Requantizer, requant_layout

__all__ = ["Accelerator", "BITS_WIDTH", "M_WIDTH", "S_WIDTH", "command_layout"]


class Accelerator(CheckedComponent):
    """Tiled GEMM accelerator around an R x C output-stationary `SystolicArray`.

    Parameters
    ----------
    multiplier : Multiplier
        Any multiplier of the library.
    rows, cols : int
        Array size R x C.
    max_k : int
        Longest reduction per tile (default 4096); sizes the accumulator exactly.
    acc_width : int, optional
        Accumulator / result element width; default `acc_width_for(multiplier, max_k)`.
    buffer_depth : int, optional
        Entries of each operand queue (default ``2 * max(rows, cols)``, at least 4).
    view : {"circuit", "table", "cell"}
        The array's multiplier view (`axsa.rtl.cells`): the family's circuits (default,
        what synthesis builds), the word-level table view for fast simulation, or named
        cells a compiled engine fills in.

    Attributes
    ----------
    cmd, a, b : In(stream.Signature(...))
    result : Out(stream.Signature(ArrayLayout(signed(acc_width), cols)))
    mode : In(range(modes)), only for multipliers with modes
    busy : Out(1)
        A tile is in flight.
    max_tiles : int
        Tiles in flight at most; chosen so that it never limits an always-ready consumer.
    verilog_sources : list
        Verilog files to read with the design (imported multipliers), else empty.
    cells : tuple of MultiplierCell
        The multiplier cell in the ``"cell"`` view, else empty.
    """

    @staticmethod
    def check(multiplier, rows, cols, max_k, acc_width, buffer_depth, view):
        check_dims(rows, cols)
        check_view(view)
        if isinstance(max_k, bool) or not isinstance(max_k, int) or not 1 <= max_k <= 1 << 24:
            raise ValueError(f"max_k must be an integer 1..2^24, not {max_k!r}")
        if acc_width is not None:
            check_acc_width(acc_width)
        if buffer_depth is not None and (isinstance(buffer_depth, bool) or
                                         not isinstance(buffer_depth, int) or buffer_depth < 2):
            raise ValueError(f"buffer_depth must be an integer >= 2, not {buffer_depth!r}")

    def __init__(self, multiplier, rows: int, cols: int, max_k: int = DEFAULT_MAX_REDUCTION,
                 acc_width: int | None = None, buffer_depth: int | None = None,
                 view: str = "circuit"):
        self.multiplier, self.view = multiplier, view
        self.rows, self.cols, self.max_k = rows, cols, max_k
        self.acc_width = acc_width_for(multiplier, max_k) if acc_width is None else acc_width
        self.buffer_depth = max(4, 2 * max(rows, cols)) if buffer_depth is None \
            else buffer_depth
        self.min_tile_gap = gap = max(rows, cols)
        # A tile lives from its command to its last result row: K + R + C + ~8 cycles,
        # while commands are accepted every max(K, gap) cycles; worst at K = gap.
        self.max_tiles = -(-(gap + rows + cols + 12) // gap) + 2
        self.cells = cells_for(multiplier, view)
        self.cmd_layout = command_layout(cols, max_k)
        self.result_layout = data.ArrayLayout(signed(self.acc_width), cols)
        ports = {
            "cmd": In(stream.Signature(self.cmd_layout)),
            "a": In(stream.Signature(data.ArrayLayout(multiplier.a_shape, rows))),
            "b": In(stream.Signature(data.ArrayLayout(multiplier.b_shape, cols))),
            "result": Out(stream.Signature(self.result_layout)),
            "busy": Out(1),
        }
        super().__init__(mode_port(ports, multiplier))

    @property
    def verilog_sources(self) -> list:
        return verilog_sources(self.multiplier)

    def elaborate(self, platform):
        m = Module()
        mult, R, C = self.multiplier, self.rows, self.cols
        m.submodules.a_queue = a_queue = Queue(self.a.payload.shape(), self.buffer_depth)
        m.submodules.b_queue = b_queue = Queue(self.b.payload.shape(), self.buffer_depth)
        m.submodules.controller = ctrl = TileController(
            mult, R, C, self.max_k, self.min_tile_gap, self.max_tiles)
        m.submodules.array = array = SystolicArray(mult, R, C, acc_width=self.acc_width,
                                                   view=self.view)
        m.submodules.params_queue = params_queue = Queue(requant_layout(C), self.max_tiles)
        m.submodules.requantizer = rq = Requantizer(self.acc_width, C)
        m.submodules.out_queue = out_queue = Queue(self.result_layout, self.max_tiles * R)

        wiring.connect(m, wiring.flipped(self.a), a_queue.i)
        wiring.connect(m, wiring.flipped(self.b), b_queue.i)
        wiring.connect(m, wiring.flipped(self.cmd), ctrl.cmd)
        wiring.connect(m, a_queue.o, ctrl.a)
        wiring.connect(m, b_queue.o, ctrl.b)
        wiring.connect(m, ctrl.step, array.step)
        wiring.connect(m, ctrl.params, params_queue.i)
        wiring.connect(m, array.out, rq.rows)
        wiring.connect(m, params_queue.o, rq.params)
        wiring.connect(m, rq.o, out_queue.i)
        wiring.connect(m, out_queue.o, wiring.flipped(self.result))
        m.d.comb += [
            rq.next_tile.eq(array.out_next),
            ctrl.row_out.eq(self.result.valid & self.result.ready),
            self.busy.eq(ctrl.busy),
        ]
        if mult.modes > 1:
            mode = Signal.like(self.mode)
            m.d.sync += mode.eq(self.mode)
            m.d.comb += array.mode.eq(mode)
        return m

"""The GEMM accelerator: systolic array, operand buffers, tile controller, requantization.

Streams (`amaranth.lib.stream`, valid/ready/payload):

- ``cmd`` (in): one command per output tile, a `command_layout` payload: the reduction
  length (``k_minus_1`` = K - 1) and the tile's requantization parameters.
- ``a`` (in): K beats per tile, beat k = column k of the tile's A block (R operands,
  ``a[r]`` = A[i0 + r, k0 + k]); rows beyond M are zero-padded by the host.
- ``b`` (in): K beats per tile, beat k = row k of the tile's B block (C operands).
- ``result`` (out): R beats per tile, beat r = row r of the output tile (C signed
  elements of `acc_width` bits): the exact sums, or the requantized values when the
  tile's ``rq_en`` is set.

Plain input ``mode`` (multipliers with modes only) selects the multiplier mode; it is
registered once and must only change while the accelerator is idle.

Inside:

- operand buffers: one `SyncFIFOBuffered` ring (`lib.memory`) per operand stream, so
  the next tile's operands load while the array works on the current one and the
  array never waits for a tile to be loaded as a whole (it starts on the first beat);
- the controller takes a command, issues its K steps to the array, one per cycle while
  both buffers have a beat, and accepts the next command in the cycle of the last step,
  so consecutive tiles run back to back. Two last steps stay `min_tile_gap` =
  max(R, C) cycles apart (the array's rule), which only costs cycles when K < max(R, C);
- the output stage requantizes a row per cycle, per column:
  ``clamp((acc * m[c] + 2^(s[c]-1)) >> s[c])`` to the ``rq_bits``-bit signed or unsigned
  range (DESIGN.md), in two pipeline stages, into an output FIFO;
- credit-based flow control: at most `max_tiles` tiles are in flight (accepted and not
  fully drained), and the output FIFO holds ``max_tiles * R`` rows, so a slow result
  consumer stalls the command stream and never loses a row.

Cycle behaviour with feeds that are always valid and a result consumer that is always
ready is exactly `axsa.sim.cycles.predict_cycles`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .array import SystolicArray, check_dims, check_view
from .mac import acc_width_for, mode_port, verilog_sources

__all__ = ["Accelerator", "M_WIDTH", "S_WIDTH", "command_layout"]

#: requantization multiplier m: signed 32-bit; shift s: 6 bits (1..62 used)
M_WIDTH = 32
S_WIDTH = 6
BITS_WIDTH = 7


def command_layout(cols: int, max_k: int) -> data.StructLayout:
    """Payload of the ``cmd`` stream, fields from the least significant bit up.

    ``k_minus_1``: K - 1 (K in 1..max_k); ``rq_en``: requantize this tile;
    ``rq_signed``, ``rq_bits``: output range (signed or unsigned, bits wide);
    ``m[c]``, ``s[c]``: multiplier and shift of output column c of the tile.
    """
    return data.StructLayout({
        "k_minus_1": unsigned(max(1, (max_k - 1).bit_length())),
        "rq_en": unsigned(1),
        "rq_signed": unsigned(1),
        "rq_bits": unsigned(BITS_WIDTH),
        "m": data.ArrayLayout(signed(M_WIDTH), cols),
        "s": data.ArrayLayout(unsigned(S_WIDTH), cols),
    })


class Accelerator(wiring.Component):
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
        Entries of each operand buffer (default ``2 * max(rows, cols)``, at least 4).
    view : {"circuit", "table"}
        The array's multiplier view (`axsa.rtl.array`): the family's circuits (default,
        what synthesis builds) or the word-level table view for fast simulation.

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
    """

    def __init__(self, multiplier, rows: int, cols: int, max_k: int = 4096,
                 acc_width: int | None = None, buffer_depth: int | None = None,
                 view: str = "circuit"):
        self._MustUse__silence = True  # a rejected construction is not an unused design
        check_dims(rows, cols)
        check_view(view)
        self.view = view
        if not isinstance(max_k, int) or not 1 <= max_k <= 1 << 24:
            raise ValueError(f"max_k must be an integer 1..2^24, not {max_k!r}")
        if acc_width is None:
            acc_width = acc_width_for(multiplier, max_k)
        if not isinstance(acc_width, int) or not 2 <= acc_width <= 64:
            raise ValueError(f"acc_width must be an integer 2..64, not {acc_width!r}")
        if buffer_depth is None:
            buffer_depth = max(4, 2 * max(rows, cols))
        if not isinstance(buffer_depth, int) or buffer_depth < 2:
            raise ValueError(f"buffer_depth must be an integer >= 2, not {buffer_depth!r}")
        self.multiplier = multiplier
        self.rows, self.cols = rows, cols
        self.max_k, self.acc_width, self.buffer_depth = max_k, acc_width, buffer_depth
        self.min_tile_gap = max(rows, cols)
        # A tile lives from its command to its last result row: K + R + C + ~8 cycles,
        # while commands are accepted every max(K, gap) cycles; worst at K = gap.
        gap = self.min_tile_gap
        self.max_tiles = -(-(gap + rows + cols + 12) // gap) + 2
        self.cmd_layout = command_layout(cols, max_k)
        self.result_layout = data.ArrayLayout(signed(acc_width), cols)
        ports = {
            "cmd": In(stream.Signature(self.cmd_layout)),
            "a": In(stream.Signature(data.ArrayLayout(multiplier.a_shape, rows))),
            "b": In(stream.Signature(data.ArrayLayout(multiplier.b_shape, cols))),
            "result": Out(stream.Signature(self.result_layout)),
            "busy": Out(1),
        }
        super().__init__(mode_port(ports, multiplier))
        self._MustUse__silence = False

    @property
    def verilog_sources(self) -> list:
        return verilog_sources(self.multiplier)

    def elaborate(self, platform):
        m = Module()
        R, C, W = self.rows, self.cols, self.acc_width
        gap = self.min_tile_gap

        m.submodules.array = array = SystolicArray(self.multiplier, R, C, acc_width=W,
                                                   view=self.view)
        if self.multiplier.modes > 1:
            mode = Signal.like(self.mode)
            m.d.sync += mode.eq(self.mode)
            m.d.comb += array.mode.eq(mode)

        # -- operand buffers ------------------------------------------------------------
        a_width, b_width = len(self.a.payload.as_value()), len(self.b.payload.as_value())
        m.submodules.a_buf = a_buf = SyncFIFOBuffered(width=a_width, depth=self.buffer_depth)
        m.submodules.b_buf = b_buf = SyncFIFOBuffered(width=b_width, depth=self.buffer_depth)
        m.d.comb += [
            a_buf.w_data.eq(self.a.payload), a_buf.w_en.eq(self.a.valid),
            self.a.ready.eq(a_buf.w_rdy),
            b_buf.w_data.eq(self.b.payload), b_buf.w_en.eq(self.b.valid),
            self.b.ready.eq(b_buf.w_rdy),
        ]

        # -- per-tile requantization parameters, in flight from command to output -------
        fifo_layout = data.StructLayout({
            "en": unsigned(1), "signed": unsigned(1), "bits": unsigned(BITS_WIDTH),
            "m": data.ArrayLayout(signed(M_WIDTH), C),
            "s": data.ArrayLayout(unsigned(S_WIDTH), C),
        })
        param_layout = data.StructLayout({
            "en": unsigned(1),
            "m": data.ArrayLayout(signed(M_WIDTH), C),
            "s": data.ArrayLayout(unsigned(S_WIDTH), C),
            "lo": signed(W + 1), "hi": signed(W + 1),
        })
        m.submodules.params = params = SyncFIFOBuffered(width=fifo_layout.size,
                                                        depth=self.max_tiles)

        # -- controller -----------------------------------------------------------------
        max_tiles = self.max_tiles
        active = Signal()
        k_left = Signal(range(self.max_k + 1))
        is_first = Signal()
        since_last = Signal(range(gap), init=gap - 1)   # cycles since the last `last` step
        outstanding = Signal(range(max_tiles + 1))      # tiles accepted, not fully drained

        is_last = k_left == 1
        gap_ok = since_last == gap - 1
        step = Signal()
        m.d.comb += step.eq(active & a_buf.r_rdy & b_buf.r_rdy & (~is_last | gap_ok))
        m.d.comb += [
            array.a.eq(a_buf.r_data), array.b.eq(b_buf.r_data),
            array.valid.eq(step), array.first.eq(is_first), array.last.eq(is_last),
            a_buf.r_en.eq(step), b_buf.r_en.eq(step),
        ]
        with m.If(step):
            m.d.sync += [k_left.eq(k_left - 1), is_first.eq(0)]
            with m.If(is_last):
                m.d.sync += active.eq(0)
        with m.If(step & is_last):
            m.d.sync += since_last.eq(0)
        with m.Elif(~gap_ok):
            m.d.sync += since_last.eq(since_last + 1)

        take_cmd = Signal()
        m.d.comb += [
            self.cmd.ready.eq((~active | (step & is_last)) & (outstanding < max_tiles)),
            take_cmd.eq(self.cmd.valid & self.cmd.ready),
        ]
        cmd = self.cmd.payload
        m.d.comb += [
            params.w_data.eq(Cat(cmd.rq_en, cmd.rq_signed, cmd.rq_bits, cmd.m, cmd.s)),
            params.w_en.eq(take_cmd),
        ]
        with m.If(take_cmd):
            m.d.sync += [active.eq(1), k_left.eq(cmd.k_minus_1 + 1), is_first.eq(1)]

        # -- output stage: 2 pipeline stages, then the output FIFO ------------------------
        # The array's rows of a tile arrive on consecutive cycles; the tile's parameters
        # are popped the cycle before row 0 (`out_next`) and held for all its rows, with
        # the clamp bounds worked out once per tile.
        prm = Signal(param_layout)
        head = fifo_layout(params.r_data)
        take_params = array.out_next
        m.d.comb += params.r_en.eq(take_params)
        with m.If(take_params):
            one = Const(1, 1) << head.bits             # 2^bits, up to 2^127
            m.d.sync += [
                prm.en.eq(head.en), prm.m.eq(head.m), prm.s.eq(head.s),
                prm.lo.eq(Mux(head.signed, -(one >> 1), 0)),
                prm.hi.eq(Mux(head.signed, (one >> 1) - 1, one - 1)),
            ]

        # acc * m needs W + 32 bits, the rounding constant up to 2^62: room for both
        sum_width = max(W + M_WIDTH, 64) + 2
        s1_valid = Signal()
        s1_en = Signal()
        s1_acc = [Signal(signed(W), name=f"s1_acc{c}") for c in range(C)]
        s1_sum = [Signal(signed(sum_width), name=f"s1_sum{c}") for c in range(C)]
        s1_s = [Signal(unsigned(S_WIDTH), name=f"s1_s{c}") for c in range(C)]
        s1_lo, s1_hi = Signal(signed(W + 1)), Signal(signed(W + 1))
        # The stages' data registers load only on valid rows (enabled registers): the
        # wide arithmetic is then skipped by simulators on the other cycles.
        m.d.sync += s1_valid.eq(array.out_valid)
        with m.If(array.out_valid):
            m.d.sync += [s1_en.eq(prm.en), s1_lo.eq(prm.lo), s1_hi.eq(prm.hi)]
            for c in range(C):
                acc = array.out_row[c]
                s = prm.s[c]
                rnd = (Const(1, 1) << s) >> 1          # 2^(s-1), 0 for s = 0
                m.d.sync += [s1_acc[c].eq(acc), s1_s[c].eq(s),
                             s1_sum[c].eq(acc * prm.m[c] + rnd)]

        s2_valid = Signal()
        s2_row = Signal(self.result_layout)
        m.d.sync += s2_valid.eq(s1_valid)
        with m.If(s1_valid):
            for c in range(C):
                y = s1_sum[c] >> s1_s[c]               # arithmetic: floor
                clamped = Mux(y < s1_lo, s1_lo, Mux(y > s1_hi, s1_hi, y))
                m.d.sync += s2_row[c].eq(Mux(s1_en, clamped, s1_acc[c]))

        m.submodules.out_buf = out_buf = SyncFIFOBuffered(width=self.result_layout.size,
                                                          depth=max_tiles * R)
        m.d.comb += [
            out_buf.w_data.eq(s2_row), out_buf.w_en.eq(s2_valid),
            self.result.payload.eq(out_buf.r_data), self.result.valid.eq(out_buf.r_rdy),
            out_buf.r_en.eq(self.result.ready),
        ]

        # -- credits: a tile is done when its last row leaves through `result` ------------
        out_row = Signal(range(R))
        row_done = self.result.valid & self.result.ready
        tile_done = row_done & (out_row == R - 1)
        with m.If(row_done):
            m.d.sync += out_row.eq(Mux(out_row == R - 1, 0, out_row + 1))
        with m.If(take_cmd & ~tile_done):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~take_cmd & tile_done):
            m.d.sync += outstanding.eq(outstanding - 1)
        m.d.comb += self.busy.eq(outstanding != 0)
        return m

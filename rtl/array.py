"""The R x C output-stationary systolic array, skew and de-skew inside.

Dataflow: output-stationary. PE (r, c) owns output element C[r, c] of the current tile
and accumulates it over K steps; operand `a` moves right, operand `b` down, one PE per
cycle. Why output-stationary first:

- the accumulator never leaves the PE during a tile, so it is exact and as wide as the
  reduction needs (`acc_width_for`), with no partial sums written back to memory and no
  extra adders outside the array;
- a tile takes K cycles whatever the tile shape, and with the finished sum parked in a
  result register per PE, the next tile starts the cycle after the last step of the
  previous one: the array idles only when K < max(R, C) (see below), so utilization
  approaches 100% for K >= max(R, C), which is what transformer layers (K = model width
  or sequence length, 32..4096) have;
- the mode-configurable multiplier, imported Verilog and every family drop in unchanged:
  the array only sees a `Pe` per position.
Weight-stationary (weights parked in the PEs, partial sums flowing down) would suit
small-K, large-M workloads better; it is not built (see docs/accelerator.md).

Interface: two streams
----------------------
``step`` (in, `step_layout`, always ready): each cycle the user may present one *step*,
column k of the A tile (``a[r]`` = A[r, k], R operands) and row k of the B tile
(``b[c]`` = B[k, c], C operands), with ``valid`` high, ``first`` on the tile's first
step and ``last`` on its last step. Steps of a tile need not be consecutive (``valid``
low inserts a bubble). Row skew (row r delayed r cycles) and column skew are inside.

``out`` (out, `row_layout`, always ready: the array cannot wait): the finished tile
comes out as R rows on R consecutive cycles, ``row[c]`` = C[r, c], ``first`` on row 0
and ``last`` on row R-1. Row 0 appears ``C + 2`` cycles after the cycle its ``last``
step was presented (row r: ``C + 2 + r``). Plain output ``out_next`` is high the cycle
before a tile's row 0 (lets a consumer prepare per-tile state).

Rule: two ``last`` steps must be at least ``max(R, C)`` cycles apart (`min_tile_gap`):
R so that the output rows of two tiles do not overlap, C so that a PE's parked result is
read out before the next tile replaces it. `axsa.rtl.controller` enforces it.

Latency: ``C + 2 + r`` cycles from the last step to output row r. Throughput: one step
(R * C multiply-accumulates) per cycle.

Views (`axsa.rtl.cells`)
------------------------
``"circuit"`` (default) puts the family's own multiplier circuit in every PE: what
synthesis builds and what the bitstream holds. ``"table"`` computes the same products
word-level, for simulation speed: ``a * b`` for exact multipliers, else one
product-table ROM (`lib.memory.Memory`, initialised from `model_table()` of every mode)
shared by all PEs through one read port each. ``"cell"`` instantiates the multiplier of
every PE as the named cell a compiled engine fills in (its table or its circuit).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from axsa.formats import DEFAULT_MAX_REDUCTION

from .cells import check_view
from .component import CheckedComponent, check_acc_width
from .mac import (
    Pe,
    acc_width_for,
    as_word,
    cells_for,
    mode_port,
    needs_p_in,
    operand_words,
    verilog_sources,
)

__all__ = ["SystolicArray", "check_dims", "row_layout", "step_layout"]


def check_dims(rows, cols) -> None:
    """ValueError naming `rows` or `cols` unless both are integers 1..256."""
    for name, v in (("rows", rows), ("cols", cols)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 256:
            raise ValueError(f"{name} must be an integer 1..256, not {v!r}")


def step_layout(multiplier, rows: int, cols: int) -> data.StructLayout:
    """Payload of the array's ``step`` stream: a column of A, a row of B, the flags."""
    return data.StructLayout({
        "a": data.ArrayLayout(multiplier.a_shape, rows),
        "b": data.ArrayLayout(multiplier.b_shape, cols),
        "first": 1, "last": 1,
    })


def row_layout(acc_width: int, cols: int) -> data.StructLayout:
    """Payload of the array's ``out`` stream: one output row and its place in the tile."""
    return data.StructLayout({
        "row": data.ArrayLayout(signed(acc_width), cols),
        "first": 1, "last": 1,
    })


class SystolicArray(CheckedComponent):
    """R x C output-stationary systolic array of `Pe` (see the module docstring).

    Parameters
    ----------
    multiplier : Multiplier
        Any multiplier of the library (all PEs use it).
    rows, cols : int
        Array height R (rows of A / of the output tile) and width C.
    acc_width : int, optional
        Accumulator (and output element) width; default: exact for K up to `max_k`.
    max_k : int
        Longest reduction the default `acc_width` is sized for (default 4096).
    view : {"circuit", "table", "cell"}
        How the PEs compute products (module docstring).

    Attributes
    ----------
    step : In(stream.Signature(step_layout(...), always_ready=True))
    out : Out(stream.Signature(row_layout(acc_width, cols), always_ready=True))
    out_next : Out(1)
        High the cycle before a tile's row 0 appears on `out`.
    mode : In(range(modes)), only for multipliers with modes
    min_tile_gap : int
        ``max(rows, cols)``: least distance in cycles between two `last` steps.
    out_latency : int
        ``cols + 2``: cycles from a `last` step to output row 0.
    cells : tuple of MultiplierCell
        The multiplier cell in the ``"cell"`` view, else empty.
    """

    dataflow = "output-stationary"

    @staticmethod
    def check(multiplier, rows, cols, acc_width, max_k, view):
        check_dims(rows, cols)
        check_view(view)
        if acc_width is not None:
            check_acc_width(acc_width)
        else:
            acc_width_for(multiplier, max_k)  # rejects a bad max_k

    def __init__(self, multiplier, rows: int, cols: int, acc_width: int | None = None,
                 max_k: int = DEFAULT_MAX_REDUCTION, view: str = "circuit"):
        if acc_width is None:
            acc_width = acc_width_for(multiplier, max_k)
        self.multiplier, self.view = multiplier, view
        self.rows, self.cols, self.acc_width = rows, cols, acc_width
        self.min_tile_gap = max(rows, cols)
        self.out_latency = cols + 2
        self.cells = cells_for(multiplier, view)
        ports = {
            "step": In(stream.Signature(step_layout(multiplier, rows, cols),
                                        always_ready=True)),
            "out": Out(stream.Signature(row_layout(acc_width, cols), always_ready=True)),
            "out_next": Out(1),
        }
        super().__init__(mode_port(ports, multiplier))

    @property
    def verilog_sources(self) -> list:
        """Verilog files the design instantiates (imported multipliers), else []."""
        return verilog_sources(self.multiplier)

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        mult = self.multiplier
        pes = [[Pe(mult, self.acc_width, self.view, shared_flags=True) for _ in range(C)]
               for _ in range(R)]
        for r in range(R):
            for c in range(C):
                m.submodules[f"pe_{r}_{c}"] = pes[r][c]
                if mult.modes > 1:
                    m.d.comb += pes[r][c].mode.eq(self.mode)
        if needs_p_in(mult, self.view):
            # one product ROM for every PE: address = mode, a code, b code (MSB first)
            table = np.concatenate([mult.model_table(k).ravel() for k in range(mult.modes)])
            m.submodules.products = rom = Memory(shape=mult.p_shape, depth=len(table),
                                                 init=[int(v) for v in table])
            for r in range(R):
                for c in range(C):
                    pe = pes[r][c]
                    port = rom.read_port(domain="comb")
                    addr = [pe.b_in.as_unsigned(), pe.a_in.as_unsigned()]
                    if mult.modes > 1:
                        addr.append(self.mode)
                    m.d.comb += [port.addr.eq(Cat(*addr)), pe.p_in.eq(port.data)]

        # Skew: row r's operand waits r cycles, column c's operand c cycles, so that
        # A[r, k] and B[k, c] meet in PE (r, c) r + c cycles after step k entered. The
        # flags of step k reach every PE with r + c = d at the same time: one delay line
        # for the anti-diagonals (flags[d]) instead of flag registers in every PE.
        # The operand skew registers are reset-less (the flags say when an operand is
        # valid): no reset test in their R(R-1)/2 + C(C-1)/2 registers each cycle.
        def delayed(value, n, name):
            for i in range(n):
                reg = Signal.like(value, name=f"{name}_d{i + 1}", reset_less=True)
                m.d.sync += reg.eq(value)
                value = reg
            return value

        step = self.step
        flags = [Cat(step.valid, step.payload.first & step.valid,
                     step.payload.last & step.valid)]
        for d in range(R + C):
            reg = Signal(3, name=f"flags_d{d + 1}")
            m.d.sync += reg.eq(flags[-1])
            flags.append(reg)
        # operands travel as the PEs take them: as operand words in the table view of an
        # exact multiplier, made here once per operand (`operand_words`)
        def entering(value):
            return as_word(value, self.acc_width) if operand_words(mult, self.view) else value

        for r in range(R):
            m.d.comb += pes[r][0].a_in.eq(delayed(entering(step.payload.a[r]), r, f"a{r}"))
        for c in range(C):
            m.d.comb += pes[0][c].b_in.eq(delayed(entering(step.payload.b[c]), c, f"b{c}"))
        for r in range(R):
            for c in range(C):
                pe = pes[r][c]
                here = flags[r + c]
                m.d.comb += [pe.valid_in.eq(here[0]), pe.first_in.eq(here[1]),
                             pe.capture.eq(here[2])]
                if c + 1 < C:
                    m.d.comb += pes[r][c + 1].a_in.eq(pe.a_out)
                if r + 1 < R:
                    m.d.comb += pes[r + 1][c].b_in.eq(pe.b_out)

        # De-skew: PE (r, c) parks its sum at edge L + r + c (L: the edge taking the last
        # step); row r is complete after edge L + r + C - 1 and is read at edge
        # L + C + 1 + r through a one-hot row select: the `last` flag delayed C + 1 + r.
        # Column 0 is read one edge earlier, at L + C + r, into a holding register: with
        # tiles max(R, C) >= C cycles apart, PE (r, 0) may park the next tile's sum at
        # edge L + C + r already (every other column parks it after the read).
        def select(column, sel):
            word = 0
            for r in range(R):
                word = word | (pes[r][column].result.as_unsigned()
                               & sel[r].replicate(self.acc_width))
            return word

        # only on reading cycles (enabled registers: simulators skip the muxes otherwise)
        early = [flags[C + r][2] for r in range(R)]
        held = Signal(self.acc_width, name="held_col0", reset_less=True)
        with m.If(Cat(*early).any()):
            m.d.sync += held.eq(select(0, early))
        row_sel = [flags[C + 1 + r][2] for r in range(R)]
        m.d.comb += self.out_next.eq(row_sel[0])
        emit = Cat(*row_sel).any()
        out = self.out.payload
        with m.If(emit):
            m.d.sync += out.row[0].eq(held)
            for c in range(1, C):
                m.d.sync += out.row[c].eq(select(c, row_sel))
            m.d.sync += [out.first.eq(row_sel[0]), out.last.eq(row_sel[-1])]
        m.d.sync += self.out.valid.eq(emit)
        return m

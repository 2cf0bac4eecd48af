"""The multiply-accumulate unit and the processing element (PE) of the systolic array.

`Mac` is one multiplier of the library (any family, the mode-configurable one, imported
Verilog) feeding an exact accumulator. `Pe` wraps a `Mac` with the registers of the
output-stationary systolic flow: operands and control flags pass through it to its right
and lower neighbours one cycle later, and the finished sum of a tile is parked in a
result register (on the edge that adds its last product) so the accumulator can start the
next tile at once.

`acc_width_for` gives the accumulator width that holds every sum of up to `max_reduction`
products of a multiplier, read off its product table (every mode), so no overflow can
happen within that bound.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Value, signed, unsigned
from amaranth.lib.wiring import In, Out

from axsa.formats import acc_width_for_range

from .cells import MultiplierCell, check_view, product
from .component import CheckedComponent, check_acc_width

__all__ = ["Mac", "Pe", "acc_width_for", "operand_shapes", "operand_words", "product_range"]


def product_range(multiplier) -> tuple[int, int]:
    """Inclusive (min, max) over every product of every mode of `multiplier`."""
    lo = min(int(multiplier.model_table(m).min()) for m in range(multiplier.modes))
    hi = max(int(multiplier.model_table(m).max()) for m in range(multiplier.modes))
    return lo, hi


def acc_width_for(multiplier, max_reduction: int) -> int:
    """Width of a signed accumulator holding any sum of 0..`max_reduction` products.

    Parameters
    ----------
    multiplier : Multiplier
        Its product range is read off `model_table()` over all modes, so approximate
        multipliers whose products exceed the exact range are covered.
    max_reduction : int
        Largest number of products summed (the GEMM's K), at least 1.

    Returns
    -------
    int
        The narrowest two's-complement width holding every value in
        ``[min(0, max_reduction * lo), max(0, max_reduction * hi)]``.
    """
    return acc_width_for_range(*product_range(multiplier), max_reduction)


def mode_port(ports: dict, multiplier) -> dict:
    """`ports` with a ``mode`` input added when the multiplier has several modes."""
    if multiplier.modes > 1:
        ports["mode"] = In(range(multiplier.modes))
    return ports


def verilog_sources(multiplier) -> list:
    """Verilog files a design around `multiplier` instantiates (imported ones), else []."""
    return list(getattr(multiplier, "verilog_sources", []))


def cells_for(multiplier, view: str) -> tuple:
    """The `MultiplierCell`s a design in `view` instantiates: one in the cell view."""
    return (MultiplierCell(multiplier),) if view == "cell" else ()


def needs_p_in(multiplier, view: str) -> bool:
    """True when the product comes in through a ``p_in`` port (table view, not exact)."""
    return view == "table" and not multiplier.is_exact


def operand_words(multiplier, view: str) -> bool:
    """True when operands travel as *operand words* (the ``"table"`` view of an exact
    multiplier): ``unsigned(acc_width)``, the operand as `as_word` gives it.
    `SystolicArray` makes the words once, where an operand enters the array, instead of
    every PE widening both operands every cycle, which was a third of what a compiled
    simulator spent on the array (docs/simulation.md)."""
    return view == "table" and multiplier.is_exact


def operand_shapes(multiplier, view: str, acc_width: int) -> tuple:
    """Shapes of the operands a `Mac` takes and a `Pe` forwards: the multiplier's own
    (``a_shape``, ``b_shape``), or ``unsigned(acc_width)`` twice (`operand_words`)."""
    if operand_words(multiplier, view):
        return unsigned(acc_width), unsigned(acc_width)
    return multiplier.a_shape, multiplier.b_shape


def as_word(value: Value, width: int) -> Value:
    """`value` as a `width`-bit two's complement word: the unsigned value equal to
    ``value mod 2**width``.

    A signed value is sign-extended by arithmetic, ``((x + h) mod 2**n) - h`` with
    ``h = 2**(n-1)`` (the second step folded into one constant), not by replicating its
    sign bit: compiled simulators turn it into two additions, where Verilator's signed
    extension costs several operations each time (see docs/simulation.md). Simulation
    views only; the circuit view keeps the plain signed arithmetic synthesis expects.
    """
    shape = Value.cast(value).shape()
    n = shape.width
    if not shape.signed or width <= n:
        return value.as_unsigned()[:min(width, n)]
    half = 1 << (n - 1)
    return ((value.as_unsigned() + half)[:n] + ((1 << width) - half))[:width]


class Mac(CheckedComponent):
    """Multiply-accumulate with a pluggable multiplier.

    ``acc <= (clr ? 0 : acc) + a*b`` on every clock edge where ``en`` is high (``en``
    defaults to 1, so an unconnected `en` accumulates every cycle). With
    ``parking=True`` (what `Pe` builds), on an edge where ``park`` is high too, the same
    sum also goes to `parked`, where it stays until the next park: the finished sum of a
    reduction, kept while `acc` starts the next one.

    Both registers take the sum from its own copy of the expression, not from a shared
    signal, and `parked` does not copy `acc`: a compiled simulator then computes the sum
    only on the clock edge where a register takes it (CXXRTL evaluates a shared
    combinational signal on every evaluation), and no register reads another one written
    on the same edge (Verilator would keep shadow copies; its flow merges the two copies
    back into one, see docs/simulation.md).

    Latency: 1 cycle from `a`/`b` to `acc`. Throughput: one product per cycle.

    Parameters
    ----------
    multiplier : Multiplier
        From `axsa.rtl.multipliers.parse_spec`.
    acc_width : int
        Width of the signed accumulator; `acc_width_for` gives the width that cannot
        overflow for a given reduction length.
    view : {"circuit", "table", "cell"}
        How the product is computed (`axsa.rtl.cells`). In the ``"table"`` view a
        non-exact multiplier's product comes in through the `p_in` port, read by the
        owner from a product table (`SystolicArray` shares one ROM among its PEs).
    parking : bool
        Add the `park` input and the `parked` register (default False: the plain MAC,
        what synthesis and the energy model measure on their own).

    Attributes
    ----------
    a, b : In(`operand_shapes`)
        The multiplier's operands; in the ``"table"`` view of an exact multiplier,
        ``acc_width``-bit operand words (the value modulo ``2**acc_width``).
    clr : In(1)
        Start a new sum with this product.
    en : In(1, init=1)
        Accumulate this cycle.
    park : In(1)
        Only with ``parking``: with `en`, park this cycle's sum in `parked`.
    mode : In(range(modes))
        Only when the multiplier has runtime modes (cfgtrunc).
    p_in : In(multiplier.p_shape)
        Only in the ``"table"`` view of a non-exact multiplier.
    acc : Out(signed(acc_width))
    parked : Out(signed(acc_width))
        Only with ``parking``.
    cells : tuple of MultiplierCell
        The multiplier cell in the ``"cell"`` view, else empty.
    """

    @staticmethod
    def check(multiplier, acc_width, view, parking):
        check_acc_width(acc_width)
        check_view(view)

    def __init__(self, multiplier, acc_width: int, view: str = "circuit",
                 parking: bool = False):
        self.multiplier = multiplier
        self.acc_width = acc_width
        self.view = view
        self.parking = parking
        self.cells = cells_for(multiplier, view)
        a_shape, b_shape = operand_shapes(multiplier, view, acc_width)
        ports = {
            "a": In(a_shape), "b": In(b_shape),
            "clr": In(1), "en": In(1, init=1),
            "acc": Out(signed(acc_width)),
        }
        if parking:
            ports.update({"park": In(1), "parked": Out(signed(acc_width))})
        mode_port(ports, multiplier)
        if needs_p_in(multiplier, view):
            ports["p_in"] = In(multiplier.p_shape)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        mult = self.multiplier
        start = Mux(self.clr, 0, self.acc)
        if self.view == "table" and mult.is_exact:
            # the exact product word-level, of the operand words (`operand_shapes`): one
            # multiplication and no signed extension. (As 32-bit words, Verilator ran 5%
            # faster and CXXRTL, whose sums then took two chunks, 30% slower.)
            width = self.acc_width
            p = (self.a * self.b)[:width]
            total = start.as_unsigned() + p
        else:
            p = product(m, mult, self.view, self.a, self.b,
                        mode=self.mode if mult.modes > 1 else None,
                        p_in=self.p_in if needs_p_in(mult, self.view) else None)
            total = (start + p if self.view == "circuit" else
                     start.as_unsigned() + as_word(p, self.acc_width))
        # the low acc_width bits of `total`: the same sum
        with m.If(self.en):
            m.d.sync += self.acc.eq(total)
            if self.parking:
                with m.If(self.park):
                    m.d.sync += self.parked.eq(total)
        return m


class Pe(CheckedComponent):
    """Processing element of the output-stationary array: a `Mac` plus forwarding registers.

    Operand `a` and the flags (`valid`, `first`, `last`) travel left to right, operand `b`
    top to bottom; each leaves one cycle after it entered (`*_out` are registers). On a
    valid step the MAC accumulates, restarting its sum when `first` is set. On the
    `last` step of a tile the MAC parks the finished sum (`Mac.parked`, the PE's
    `result`), where it stays until the next tile's sum replaces it; meanwhile the
    accumulator already works on the next tile, so tiles follow each other back to back.

    Latency: `a_out`/`b_out`/flags 1 cycle; `result` holds the sum 1 cycle after the
    `last` step entered. `view` as for `Mac` (the ``"table"`` view of a non-exact
    multiplier adds the `p_in` input: the product of `a_in` and `b_in`, read outside;
    that of an exact one takes and forwards operand words, `operand_shapes`).

    With ``shared_flags=True`` the PE does not forward the flags: the array delays them
    once per anti-diagonal (every PE with the same r + c sees the same flags), and the
    PE has a `capture` input instead (the `last` flag of its step). Same behaviour, three
    registers fewer per PE, which matters for simulation speed.
    """

    @staticmethod
    def check(multiplier, acc_width, view, shared_flags):
        Mac.check(multiplier, acc_width, view, True)

    def __init__(self, multiplier, acc_width: int, view: str = "circuit",
                 shared_flags: bool = False):
        self.multiplier = multiplier
        self.acc_width = acc_width
        self.view = view
        self.shared_flags = shared_flags
        self.cells = cells_for(multiplier, view)
        a_shape, b_shape = operand_shapes(multiplier, view, acc_width)
        ports = {
            "a_in": In(a_shape), "b_in": In(b_shape),
            "valid_in": In(1), "first_in": In(1),
            "a_out": Out(a_shape), "b_out": Out(b_shape),
            "result": Out(signed(acc_width)),
        }
        if shared_flags:
            ports["capture"] = In(1)
        else:
            ports.update({"last_in": In(1), "valid_out": Out(1), "first_out": Out(1),
                          "last_out": Out(1)})
        mode_port(ports, multiplier)
        if needs_p_in(multiplier, view):
            ports["p_in"] = In(multiplier.p_shape)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        mult = self.multiplier
        m.submodules.mac = mac = Mac(mult, self.acc_width, self.view, parking=True)
        m.d.comb += [mac.a.eq(self.a_in), mac.b.eq(self.b_in),
                     mac.en.eq(self.valid_in), mac.clr.eq(self.first_in),
                     self.result.eq(mac.parked)]
        if mult.modes > 1:
            m.d.comb += mac.mode.eq(self.mode)
        if needs_p_in(mult, self.view):
            m.d.comb += mac.p_in.eq(self.p_in)
        m.d.sync += [self.a_out.eq(self.a_in), self.b_out.eq(self.b_in)]
        if self.shared_flags:
            capture = self.capture
        else:
            m.d.sync += [
                self.valid_out.eq(self.valid_in),
                self.first_out.eq(self.first_in & self.valid_in),
                self.last_out.eq(self.last_in & self.valid_in),
            ]
            capture = self.last_in
        m.d.comb += mac.park.eq(capture)
        return m

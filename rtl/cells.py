"""Views: how a design computes its multipliers' products; and the multiplier as a cell.

One vocabulary, used by every part (`Mac`, `Pe`, `SystolicArray`, `Accelerator`, the
simulation engines, `axsa.sim.driver.run_gemm` and ``axsa gemm --view``):

``"circuit"``
    The family's own circuit (`Multiplier.elaboratable`), what synthesis builds and the
    bitstream holds.
``"table"``
    The multiplier's product table (its numpy model) at word level: ``a * b`` for exact
    multipliers, else a product-table ROM. The same product for every operand pair (the
    library's tests prove the model equal to the circuit, `axsa.synth` to its netlist),
    and far cheaper to simulate.
``"cell"``
    The multiplier as an `Instance` of a named cell (`MultiplierCell`), whose body the
    simulation backend supplies: the product table (a CXXRTL black box, or a DPI
    function) or the circuit, compiled once as a module of its own however many
    instances the design has. A design in this view lists its cells in its ``cells``
    attribute. Only compiled engines simulate it (pysim cannot simulate an Instance).

A simulation user picks one of `SIM_VIEWS` (circuit or table: what is simulated); a
compiled engine realises either through the cell view (`cell_fill`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Instance, Module, Signal, Value

from axsa.formats import to_codes

__all__ = ["CELL_PREFIX", "SIM_VIEWS", "VIEWS", "MultiplierCell", "check_view", "product"]

#: every view of the RTL (module docstring)
VIEWS = ("circuit", "table", "cell")
#: the views a simulation user chooses between
SIM_VIEWS = ("circuit", "table")
#: module names of multiplier cells start with this
CELL_PREFIX = "axsamul"


def check_view(view, choices=VIEWS) -> None:
    """ValueError naming `view` unless it is one of `choices`."""
    if view not in choices:
        raise ValueError(f"view must be one of {', '.join(choices)}, not {view!r}")


@dataclass(frozen=True)
class MultiplierCell:
    """A multiplier seen as a named cell with ports ``a``, ``b`` (``mode``) and ``p``.

    The name depends only on the interface (operand format, product shape, modes), so
    designs that differ only in a multiplier of the same interface elaborate to the same
    RTL and share one compiled simulator; the backend hands each cell its table at run
    time.

    Attributes
    ----------
    multiplier : Multiplier
    name : str
        Module name, e.g. ``axsamuls8p16s`` (prefix `CELL_PREFIX`; letters and digits
        only, so that every backend keeps it as it is).
    mode_bits : int
        Width of the ``mode`` port, 0 when the multiplier has one mode (no port).
    ports : tuple of (name, width, direction)
        ``("a", wa, "input"), ("b", wb, "input")[, ("mode", bits, "input")],
        ("p", pw, "output")``.
    """

    multiplier: object

    @property
    def name(self) -> str:
        mult = self.multiplier
        p = mult.p_shape
        name = f"{CELL_PREFIX}{mult.fmt}p{p.width}{'s' if p.signed else 'u'}"
        return name + (f"m{mult.modes}" if mult.modes > 1 else "")

    @property
    def mode_bits(self) -> int:
        modes = self.multiplier.modes
        return (modes - 1).bit_length() if modes > 1 else 0

    @property
    def ports(self) -> tuple:
        fmt = self.multiplier.fmt
        ports = [("a", fmt.a_width, "input"), ("b", fmt.b_width, "input")]
        if self.mode_bits:
            ports.append(("mode", self.mode_bits, "input"))
        ports.append(("p", self.multiplier.p_shape.width, "output"))
        return tuple(ports)

    def instance(self, a: Value, b: Value, p: Value, mode: Value | None = None) -> Instance:
        """An `Instance` of the cell computing ``p`` from ``a``, ``b`` (and ``mode``)."""
        ports = {"i_a": a, "i_b": b, "o_p": p}
        if self.mode_bits:
            ports["i_mode"] = mode
        return Instance(self.name, **ports)

    def circuit_rtlil(self) -> str:
        """The multiplier's circuit as RTLIL module `name` (imported multipliers
        instantiate their Verilog module, read alongside)."""
        from amaranth.back import rtlil
        return rtlil.convert(self.multiplier.elaboratable(), name=self.name, emit_src=False)

    def circuit_verilog(self) -> str:
        """The multiplier's circuit as Verilog module `name`."""
        from amaranth.back import verilog
        return verilog.convert(self.multiplier.elaboratable(), name=self.name,
                               emit_src=False)

    def lookup_table(self) -> np.ndarray:
        """The product table as a cell body reads it: uint32, index
        ``(mode << (wa + wb)) | (a_code << wb) | b_code``, products two's complement in
        p's width; mode codes past the last mode repeat mode 0."""
        mult = self.multiplier
        modes = [m if m < mult.modes else 0 for m in range(1 << self.mode_bits)]
        table = np.stack([mult.model_table(m) for m in modes]).ravel()
        return np.ascontiguousarray(to_codes(table, mult.p_shape.width), dtype=np.uint32)


def product(m: Module, multiplier, view: str, a: Value, b: Value, mode: Value | None = None,
            p_in: Value | None = None) -> Value:
    """The product of `a` and `b` as `view` computes it, the logic added to `m`.

    In the ``"table"`` view a non-exact multiplier's product is `p_in`, read by the
    caller from a product table (`SystolicArray` shares one ROM among its PEs).
    """
    if view == "circuit":
        m.submodules.mul = mul = multiplier.elaboratable()
        m.d.comb += [mul.a.eq(a), mul.b.eq(b)]
        if multiplier.modes > 1:
            m.d.comb += mul.mode.eq(mode)
        return mul.p
    if view == "cell":
        p = Signal(multiplier.p_shape, name="p")
        m.submodules.mul = MultiplierCell(multiplier).instance(a, b, p, mode)
        return p
    if multiplier.is_exact:
        return a * b
    if p_in is None:
        raise ValueError(f"the table view of {multiplier.spec} needs the product from "
                         "a table (p_in)")
    return p_in

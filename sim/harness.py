"""What the compiled engines (`axsa.sim.cxxrtl`, `axsa.sim.verilator`) share around their
harness libraries.

Each engine compiles its design with a small C++ harness (``cxxrtl_harness.cc``,
``verilator_harness.cc``, beside this file) into a shared library loaded with ctypes.
Both harnesses run a whole run's feed/drain loop in C++ through the same template,
``stream_run.h``, and export the same C API, driven by `axsa.sim.engine.CompiledEngine`.
Here: the harness files a build compiles and hashes into its cache key, the checks of the
options both engines take, and the ctypes prototypes of that C API.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path

from axsa.rtl.cells import SIM_VIEWS

from axsa.errors import InputError

__all__ = ["STREAM_RUN", "check_cells", "harness_key", "load_library", "source_paths",
           "sources_key"]

#: the stream loop both harnesses include
STREAM_RUN = Path(__file__).with_name("stream_run.h")


def harness_key(harness: Path) -> list[str]:
    """Cache-key parts of a build with `harness`: its text and the stream loop's."""
    return [harness.read_text(), STREAM_RUN.read_text()]


def check_cells(cells: str) -> None:
    """InputError unless `cells` (what fills the multiplier cells) is one of `SIM_VIEWS`."""
    if cells not in SIM_VIEWS:
        raise InputError(f"cells={cells!r}: expected one of {', '.join(SIM_VIEWS)}")


def source_paths(verilog_sources: Sequence[str | os.PathLike]) -> list[Path]:
    """The Verilog files a design reads, as paths; InputError naming one that is missing."""
    sources = [Path(s) for s in verilog_sources]
    for s in sources:
        if not s.is_file():
            raise InputError(f"Verilog source {str(s)!r} does not exist")
    return sources


def sources_key(sources: Sequence[Path]) -> list[str]:
    """Cache-key parts of the Verilog files: each file's name and content."""
    return [f"{s.name}\0{s.read_bytes().hex()}" for s in sources]


def load_library(lib: Path, create_argtypes: list) -> ctypes.CDLL:
    """Load a harness library and declare its C API; ``axsa_create`` takes
    `create_argtypes` (the harnesses differ there), every other function is common."""
    dll = ctypes.CDLL(str(lib))
    vp, cp, i64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64
    dll.axsa_create.argtypes, dll.axsa_create.restype = create_argtypes, vp
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

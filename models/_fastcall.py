"""`approx_matmul`'s fast path in C++ (``approx_fastcall.cc``): a torch extension.

Once ``auto`` has chosen a native engine for a call, `keep` hands its prepared kernel
call (`axsa.models._native.NativeCall`) to the extension, and `run` then finds it by the
table key and the operands' shapes, strides, dtypes and the thread count, allocates the
int64 result and runs the kernel, all in C++: on a model's smallest GEMM (ts's head) the
same steps in Python took about three times the kernel's own time, 3.5 of a call's
4.6 µs, against 0.9 of 2.0 here (docs/emulation.md, engine section).

The extension is compiled once per torch, Python and compiler (about 20 s; cached in
`axsa.native`, like the kernels) the first time a call is kept. Without it (no Python
headers, a compiler that fails: one warning on stderr says why) or with
``AXSA_FASTCALL=0`` the same path runs in Python (same results, a few microseconds more
per call).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
import threading
from pathlib import Path

import torch

from axsa import native
from axsa.errors import ToolError

SOURCE = Path(__file__).with_name("approx_fastcall.cc")
#: bump when the build recipe changes in a way the hashed inputs do not show
RECIPE = "axsa-fastcall-1"
NAME = "axsa_fastcall"
FLAGS = ("-O2", "-std=c++20", "-fPIC", "-shared",
         f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}")

#: the loaded extension's `run`, None until `load` succeeds (read on every fast call)
run = None
_STATE: dict[str, object] = {}
_LOCK = threading.Lock()


def _compile_into(cxx: str, work: Path) -> None:
    # (here only: it imports setuptools, 0.15 s)
    from torch.utils import cpp_extension
    includes = [*cpp_extension.include_paths(), sysconfig.get_paths()["include"]]
    libdirs = cpp_extension.library_paths()
    native.run_compiler(
        [cxx, *FLAGS, *(f"-I{d}" for d in includes), str(SOURCE), "-o", f"{NAME}.so",
         *(f"-L{d}" for d in libdirs), *(f"-Wl,-rpath,{d}" for d in libdirs),
         "-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"],
        work, "the fast-call extension")


def load():
    """The extension module (built on first use), or None when disabled or unavailable
    (the first failure prints one warning)."""
    global run
    if os.environ.get("AXSA_FASTCALL", "1") == "0":
        return None
    with _LOCK:
        if "module" in _STATE:
            return _STATE["module"]
        module = None
        try:
            cxx = native.cxx("the fast-call extension")
            path, _ = native.build_cached(
                "fastcall", [RECIPE, SOURCE.read_text(), native.cxx_version(cxx),
                             torch.__version__, sys.version, str(Path(torch.__file__).parent)],
                FLAGS, f"{NAME}.so", lambda work: _compile_into(cxx, work))
            loader = importlib.machinery.ExtensionFileLoader(NAME, str(path))
            spec = importlib.util.spec_from_file_location(NAME, path, loader=loader)
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
        except (ToolError, OSError, ImportError) as exc:
            module = None
            print(f"warning: the fast-call extension is unavailable: {exc}\n"
                  "warning: small approximate GEMMs take a few microseconds more a call "
                  "(same results)", file=sys.stderr, flush=True)
        _STATE["module"] = module
        run = None if module is None else module.run
        return module


def keep(table_key: str, a: torch.Tensor, b: torch.Tensor, call, limit: int) -> bool:
    """Keep the prepared `call` (a `NativeCall`) on these operands, for `run`; False when
    the extension is unavailable or the operands cannot have a key."""
    module = load()
    if module is None or not isinstance(table_key, str):
        return False
    return module.keep(table_key, a, b, call, call.ref, call.fn_address, list(call.shape),
                       call.contiguous, limit)


def clear() -> None:
    """Drop every kept call (nothing to do before the extension is loaded)."""
    module = _STATE.get("module")
    if module is not None:
        module.clear()


def kept() -> int:
    """How many calls the extension keeps (0 before it is loaded)."""
    module = _STATE.get("module")
    return 0 if module is None else module.size()


def found() -> int:
    """How many calls `run` has found kept in this process (0 before it is loaded)."""
    module = _STATE.get("module")
    return 0 if module is None else module.found()

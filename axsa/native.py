"""Compiling C++ into cached shared libraries (CXXRTL designs, the emulation kernels).

Both users build with the system C++ compiler (``$CXX``, else ``g++`` or ``c++``) into a
directory named by a hash of everything that decides the binary, under
``$AXSA_CACHE/<kind>`` (default ``~/.cache/axsa/<kind>``). A build runs in a hidden
temporary directory beside its final place and is renamed into it when complete, so
concurrent processes never load a half-written library. With ``-march=native`` the CPU
model and feature flags are part of the key.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from axsa.errors import ToolError

__all__ = ["build_cached", "cache_dir", "cpu_id", "cxx", "cxx_version", "run_compiler"]


def cache_dir(kind: str) -> Path:
    """``$AXSA_CACHE/<kind>``, or ``$XDG_CACHE_HOME/axsa/<kind>`` (``~/.cache``)."""
    root = os.environ.get("AXSA_CACHE")
    if root:
        return Path(root) / kind
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "axsa" / kind


def cxx(purpose: str) -> str:
    """The C++ compiler; ToolError saying what it is needed for when there is none."""
    found = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not found:
        raise ToolError(f"no C++ compiler found for {purpose}: install g++ "
                        "(apt-get install g++) or set CXX")
    return found


@functools.cache
def cxx_version(compiler: str) -> str:
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ToolError(f"C++ compiler {compiler!r} does not run: {exc}") from exc
    return out.stdout.splitlines()[0] if out.stdout else compiler


@functools.cache
def cpu_id() -> str:
    """The CPU's model and feature flags (part of the cache key for -march=native)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(keep)))


def run_compiler(cmd: list[str], cwd: Path, what: str) -> None:
    """Run a compiler command; ToolError with the last lines of its output on failure."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise ToolError(f"{Path(cmd[0]).name} failed compiling {what} "
                        f"(exit {proc.returncode}):\n{tail}")


def build_cached(kind: str, key_parts: Iterable[str], flags: Iterable[str], name: str,
                 build: Callable[[Path], None]) -> tuple[Path, bool]:
    """The library `name` built by ``build(work_dir)`` (which must write it there), cached
    under ``cache_dir(kind)`` by a hash of `key_parts` and `flags`.

    Returns
    -------
    (path of the library, True if it came from the cache)
    """
    flags = list(flags)
    h = hashlib.sha256()
    for part in (*key_parts, " ".join(flags)):
        h.update(part.encode())
        h.update(b"\0")
    if any(f.startswith(("-march=native", "-mtune=native")) for f in flags):
        h.update(cpu_id().encode())
    key = h.hexdigest()[:24]
    final = cache_dir(kind) / key
    lib = final / name
    if lib.is_file():
        return lib, True
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final.parent)
    work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    try:
        build(work)
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


def _remove_stale(root: Path, age_s: float = 6 * 3600) -> None:
    """Remove build directories left by killed builds (``.<key>-*``, hours old)."""
    now = time.time()
    for d in root.glob(".*-*"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > age_s:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass

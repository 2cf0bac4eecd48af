"""Compiling C++ into cached shared libraries (CXXRTL designs, the emulation kernels).

Both users build with the system C++ compiler (``$CXX``, else ``g++`` or ``c++``) into a
directory named by a hash of everything that decides the binary, under
``$AXSA_CACHE/<kind>`` (default ``~/.cache/axsa/<kind>``). A build runs in a hidden
temporary directory beside its final place and is renamed into it when complete, so
concurrent processes never load a half-written library. With ``-march=native`` the CPU
model and feature flags are part of the key.

Each cache entry holds a manifest (``manifest.json``: the library's size and sha256),
checked before the path is returned: a library that was truncated, emptied or replaced
(loading a truncated one would crash the process with SIGBUS) or an entry without a
manifest is rebuilt, with a one-line note on stderr, and the damaged entry is swapped out
atomically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from axsa.errors import ToolError

__all__ = ["build_cached", "cache_dir", "cpu_id", "cxx", "cxx_version", "run_compiler"]

MANIFEST = "manifest.json"
_INSTALL_HINT = "install g++ from your OS (e.g. apt-get install g++) or set CXX to a working one"


def cache_dir(kind: str) -> Path:
    """``$AXSA_CACHE/<kind>``, or ``$XDG_CACHE_HOME/axsa/<kind>`` (``~/.cache``)."""
    root = os.environ.get("AXSA_CACHE")
    if root:
        return Path(root) / kind
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "axsa" / kind


def cxx(purpose: str) -> str:
    """The C++ compiler (``$CXX``, else g++ or c++ on PATH); ToolError saying what it is
    needed for and how to get one when there is none."""
    given = os.environ.get("CXX")
    if given:
        found = shutil.which(given)
        if not found:
            raise ToolError(f"the C++ compiler {given!r} (from $CXX), needed for {purpose}, "
                            f"was not found: {_INSTALL_HINT}")
        return found
    found = shutil.which("g++") or shutil.which("c++")
    if not found:
        raise ToolError(f"no C++ compiler found for {purpose}: {_INSTALL_HINT}")
    return found


@functools.cache
def cxx_version(compiler: str) -> str:
    """The first line of ``compiler --version``; ToolError when the compiler does not run."""
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True)
    except OSError as exc:
        raise ToolError(f"the C++ compiler {compiler!r} does not run ({exc.strerror}): "
                        f"{_INSTALL_HINT}") from None
    if out.returncode != 0:
        raise ToolError(f"the C++ compiler {compiler!r} does not run (`--version` exited "
                        f"{out.returncode}): {_INSTALL_HINT}")
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
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except OSError as exc:
        raise ToolError(f"the C++ compiler {cmd[0]!r} does not run ({exc.strerror}): "
                        f"{_INSTALL_HINT}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        if not tail:
            raise ToolError(f"{Path(cmd[0]).name} failed compiling {what} (exit "
                            f"{proc.returncode}) and said nothing: is it a C++ compiler? "
                            f"{_INSTALL_HINT}")
        raise ToolError(f"{Path(cmd[0]).name} failed compiling {what} "
                        f"(exit {proc.returncode}):\n{tail}")


def build_cached(kind: str, key_parts: Iterable[str], flags: Iterable[str], name: str,
                 build: Callable[[Path], None]) -> tuple[Path, bool]:
    """The library `name` built by ``build(work_dir)`` (which must write it there), cached
    under ``cache_dir(kind)`` by a hash of `key_parts` and `flags`.

    Returns
    -------
    (path of the library, True if it came from the cache)

    Raises
    ------
    ToolError
        When the build fails or writes no library `name`.
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
    if _intact(final, name):
        return lib, True
    if os.path.lexists(lib):
        print(f"note: the cached library {lib} is damaged or unverified; rebuilding it",
              file=sys.stderr, flush=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final.parent)
    work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    try:
        build(work)
        built = work / name
        if not built.is_file():
            raise ToolError(f"building {name} for the {kind} cache wrote no {name}")
        (work / MANIFEST).write_text(json.dumps({"file": name, "size": built.stat().st_size,
                                                 "sha256": _sha256(built)}))
        _install(work, final, name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return lib, False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _intact(entry: Path, name: str) -> bool:
    """Whether cache entry `entry` holds library `name` exactly as its manifest records."""
    lib = entry / name
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        if manifest.get("file") != name or not lib.is_file():
            return False
        return lib.stat().st_size == manifest["size"] and _sha256(lib) == manifest["sha256"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False


def _install(work: Path, final: Path, name: str) -> None:
    """Rename the finished build `work` into place; a damaged entry there is swapped out
    (never written over: a process that has the old library loaded keeps its copy)."""
    try:
        os.rename(work, final)
        return
    except OSError:
        pass  # `final` exists: damaged, or another process's build just landed
    if _intact(final, name):
        shutil.rmtree(work, ignore_errors=True)
        return
    trash = final.with_name(f".{final.name}-damaged-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(final, trash)
    except FileNotFoundError:
        pass
    try:
        os.rename(work, final)
    except OSError:
        if not _intact(final, name):  # not another process winning the race
            raise
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale(root: Path, age_s: float = 6 * 3600) -> None:
    """Remove build directories left by killed builds (``.<key>-*``, hours old)."""
    now = time.time()
    for d in root.glob(".*-*"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > age_s:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass

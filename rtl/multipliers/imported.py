"""User multipliers imported from Verilog (`axsa mult import`), usable as spec ``NAME@FMT``.

An entry of the user library is a folder ``<library>/NAME/`` holding the Verilog source,
``entry.json`` (top module, format, port names) and ``table.npy``: the product table read
off its synthesized netlist at import time. That table is the entry's numpy model (there
is no other independent description of a user circuit); its RTL face is an Amaranth
`Instance` of the module, whose source travels in `verilog_sources`.

The library is ``$AXSA_LIB`` if set, else ``.axsa/multipliers`` in the working directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from amaranth.hdl import Instance, Signal

from .base import Format, Multiplier, SpecError, to_codes


def library_dir() -> Path:
    return Path(os.environ.get("AXSA_LIB") or Path(".axsa") / "multipliers")


class Imported(Multiplier):
    """A multiplier from the user library. Constructed by `load`, not by spec parameters."""

    family = "imported"
    doc = "user Verilog multiplier (axsa mult import)"

    def __init__(self, name: str, fmt: Format, entry: dict, table: np.ndarray, folder: Path):
        self.name = name
        self.entry = entry
        self.table = table
        self.folder = folder
        super().__init__(fmt)

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.fmt}"

    @property
    def verilog_sources(self) -> list[Path]:
        return [self.folder / self.entry["source"]]

    def model(self, a, b, mode=0):
        return self.table[to_codes(a, self.fmt.a_width), to_codes(b, self.fmt.b_width)]

    def rtl(self, m, a, b, mode):
        ports = self.entry["ports"]
        p = Signal(self.entry["y_width"])
        m.submodules[self.entry["top"]] = Instance(
            self.entry["top"], **{f"i_{ports['a']}": a, f"i_{ports['b']}": b,
                                  f"o_{ports['y']}": p})
        return p.as_signed() if self.fmt.signed else p


def load(name: str, fmt: Format, values: dict) -> Imported | None:
    """The library entry `name`, or None when there is none."""
    folder = library_dir() / name
    meta = folder / "entry.json"
    if not meta.exists():
        return None
    entry = json.loads(meta.read_text())
    if values:
        raise SpecError(f"imported multiplier {name!r} takes no parameters, got "
                        f"{', '.join(values)}")
    if entry["format"] != str(fmt):
        raise SpecError(f"imported multiplier {name!r} has format {entry['format']}, "
                        f"not {fmt}: use '{name}@{entry['format']}'")
    return Imported(name, fmt, entry, np.load(folder / "table.npy"), folder)


def entries() -> list[dict]:
    """Every entry of the user library (for `axsa mult list`)."""
    root = library_dir()
    if not root.is_dir():
        return []
    return [json.loads(p.read_text()) | {"name": p.parent.name}
            for p in sorted(root.glob("*/entry.json"))]

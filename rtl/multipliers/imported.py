"""User multipliers imported from Verilog (`axsa mult import`), usable as spec ``NAME@FMT``.

An entry of the user library is a folder ``<library>/NAME/`` holding the Verilog source,
``entry.json`` (top module, format, port names) and ``table.npy``: the product table read
off its synthesized netlist at import time. That table is the entry's numpy model (there
is no other independent description of a user circuit); its RTL face is an Amaranth
`Instance` of the module, whose source travels in `verilog_sources`.

The library is ``$AXSA_LIB`` if set, else ``.axsa/multipliers`` in the working directory.

Every file of an entry is checked where it is read (`read_entry`): a damaged entry (JSON
that does not parse or lacks a field, a table that is not an int64 array of the format's
shape, pickled data, a missing source, a FIFO in place of a file) raises `StateError`
(exit 1) naming the file, what is wrong and the fix. `entries` lists a damaged entry as
such instead of failing, so one bad entry never hides the others.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
from amaranth.hdl import Instance, Signal

from axsa.errors import StateError
from axsa.formats import value_range

from .base import Format, Multiplier, SpecError, to_codes

ENTRY_FILE = "entry.json"
TABLE_FILE = "table.npy"
#: a Verilog identifier (simple form): module and port names of an entry
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


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


class _Damaged(Exception):
    """What is wrong with one file of an entry (`read_entry` turns it into a StateError)."""

    def __init__(self, path: Path, what: str):
        self.path = path
        self.what = what
        super().__init__(f"{path}: {what}")


def load(name: str, fmt: Format, values: dict) -> Imported | None:
    """The library entry `name`, or None when there is none.

    Raises SpecError for parameters or another format, StateError for a damaged entry.
    """
    folder = library_dir() / name
    if _mode(folder) is None:
        return None
    if values:
        raise SpecError(f"imported multiplier {name!r} takes no parameters, got "
                        f"{', '.join(values)}")
    entry, table = read_entry(folder)
    if entry["format"] != str(fmt):
        raise SpecError(f"imported multiplier {name!r} has format {entry['format']}, "
                        f"not {fmt}: use '{name}@{entry['format']}'")
    return Imported(name, fmt, entry, table, folder)


def read_entry(folder: Path) -> tuple[dict, np.ndarray]:
    """The checked ``entry.json`` and product table of library folder `folder`.

    Raises
    ------
    StateError
        Naming the damaged file, what is wrong with it, and the fix.
    """
    try:
        return _read(folder)
    except _Damaged as exc:
        raise StateError(f"user library entry {folder.name!r} is damaged: {exc}. Remove "
                         f"{folder} or re-import it (axsa mult import SOURCE --top "
                         f"{folder.name} --format FMT --force)") from None


def entries() -> list[dict]:
    """Every entry of the user library (for `axsa mult list`), sorted by name.

    A sound entry is its ``entry.json`` plus ``name`` and ``damaged: None``; a damaged one
    is ``{"name", "folder", "damaged": what is wrong}``.
    """
    root = library_dir()
    try:
        folders = sorted(p for p in root.iterdir() if not p.name.startswith(".")
                         and stat.S_ISDIR(_mode(p) or 0))
    except OSError:  # no library yet (or not a folder): nothing imported
        return []
    out = []
    for folder in folders:
        try:
            entry, _ = _read(folder)
        except _Damaged as exc:
            out.append({"name": folder.name, "folder": str(folder), "damaged": str(exc)})
            continue
        out.append(entry | {"name": folder.name, "damaged": None})
    return out


def _read(folder: Path) -> tuple[dict, np.ndarray]:
    entry = _read_meta(folder / ENTRY_FILE)
    table = _read_table(folder / TABLE_FILE, entry)
    _check_source(folder / entry["source"])
    return entry, table


def _mode(path: Path) -> int | None:
    """`st_mode` of `path` (following links) or None when it does not exist."""
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read_bytes(path: Path) -> bytes:
    """The bytes of a regular file; a missing file or a FIFO/device is damage, never opened."""
    mode = _mode(path)
    if mode is None:
        raise _Damaged(path, "is missing")
    if not stat.S_ISREG(mode):
        raise _Damaged(path, "is not a regular file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Damaged(path, f"cannot be read ({exc.strerror})") from None


def _read_meta(path: Path) -> dict:
    try:
        entry = json.loads(_read_bytes(path).decode("utf-8"))
    except UnicodeDecodeError:
        raise _Damaged(path, "is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _Damaged(path, f"is not valid JSON ({exc})") from None
    if not isinstance(entry, dict):
        raise _Damaged(path, f"holds a JSON {type(entry).__name__}, not an object")

    def field(name, kind):
        value = entry.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _Damaged(path, f"field {name!r} is missing or not a {kind.__name__}")
        return value

    for name in ("top", "format", "source"):
        field(name, str)
    if not IDENTIFIER.fullmatch(entry["top"]):
        raise _Damaged(path, f"top module {entry['top']!r} is not a Verilog identifier")
    try:
        Format.parse(entry["format"])
    except SpecError as exc:
        raise _Damaged(path, f"field 'format': {exc}") from None
    source = entry["source"]
    if Path(source).name != source or source.startswith("."):
        raise _Damaged(path, f"source {source!r} is not a file name inside the entry")
    ports = field("ports", dict)
    for role in ("a", "b", "y"):
        if not isinstance(ports.get(role), str) or not IDENTIFIER.fullmatch(ports[role]):
            raise _Damaged(path, f"port of {role!r} is missing or not a Verilog identifier")
    if not 1 <= field("y_width", int) <= 62:
        raise _Damaged(path, f"y_width {entry['y_width']} is not a product width (1..62)")
    return entry


def _read_table(path: Path, entry: dict) -> np.ndarray:
    _read_bytes(path)  # exists, regular, readable (a FIFO would block np.load)
    try:
        table = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several kinds for a damaged file
        raise _Damaged(path, f"is not a readable .npy array ({exc})") from None
    if not isinstance(table, np.ndarray):
        raise _Damaged(path, "is an .npz archive, not one .npy array")
    fmt = Format.parse(entry["format"])
    shape = (1 << fmt.a_width, 1 << fmt.b_width)
    if table.shape != shape:
        raise _Damaged(path, f"has shape {table.shape}, not {shape} (format {fmt})")
    if table.dtype != np.int64:
        raise _Damaged(path, f"has dtype {table.dtype}, not int64")
    lo, hi = value_range(entry["y_width"], fmt.signed)
    if table.min() < lo or table.max() > hi:
        raise _Damaged(path, f"holds products outside {lo}..{hi}, the range of its "
                       f"{entry['y_width']}-bit product port")
    return table


def _check_source(path: Path) -> None:
    try:
        _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise _Damaged(path, "is not UTF-8 text (imports store a UTF-8 copy)") from None

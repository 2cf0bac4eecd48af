"""Assignments: which multiplier each GEMM of a model multiplies with (DESIGN.md).

An assignment is ``{gemm name: spec}`` or ``{gemm name: {"spec": spec, "mode": m}}``
(JSON in a file, or a dict); GEMMs it does not name multiply exactly. `resolve_assignment`
checks one against a model and turns it into product tables; `axsa eval`, `finetune` and
the search all go through it.

>>> entries = read_assignment("assign.json")                 # or uniform_assignment(model, spec)
>>> resolved = resolve_assignment(model, entries, source="assign.json")
>>> model.hook.assign(resolved.tables)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from axsa.errors import InputError

from .approx import ProductTable

__all__ = ["Assignment", "read_assignment", "resolve_assignment", "uniform_assignment"]

#: keys of an entry written as an object
ENTRY_KEYS = ("spec", "mode")


@dataclass(frozen=True)
class Assignment:
    """A checked assignment.

    Attributes
    ----------
    tables : dict[str, ProductTable]
        Product table per GEMM name (for ``model.hook.assign``); absent names multiply
        exactly.
    specs : dict[str, str]
        The multiplier per GEMM name as shown to users: its spec, plus ``" mode m"`` for
        a mode-configurable multiplier.
    multipliers : dict[str, tuple[Multiplier, int]]
        ``(multiplier, mode)`` per GEMM name (what the accelerator RTL is built from).
    """

    tables: dict[str, ProductTable]
    specs: dict[str, str]
    multipliers: dict[str, tuple] = field(default_factory=dict)


def read_assignment(path: str | Path) -> dict:
    """The entries of an assignment file (a JSON object); InputError naming the file when
    it is missing, unreadable, not JSON or not an object."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"assignment file {str(path)!r} does not exist")
    try:
        entries = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"assignment file {str(path)!r} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise InputError(f"assignment file {str(path)!r} cannot be read: "
                         f"{exc.strerror or exc}") from None
    if not isinstance(entries, dict):
        raise InputError(f"assignment file {str(path)!r} must hold a JSON object "
                         f"{{gemm name: spec}}, not {type(entries).__name__}")
    return entries


def uniform_assignment(model, spec) -> dict:
    """One multiplier (spec string or Multiplier) for every GEMM of `model`."""
    return {name: spec for name in model.gemm_names()}


def resolve_assignment(model, entries: Mapping, source: str = "assignment") -> Assignment:
    """Check `entries` against `model` and build the product table of every GEMM.

    Parameters
    ----------
    model : QuantModel
        Anything with ``gemm_names()`` and ``config.bits`` (the models of axsa.models).
    entries : mapping
        ``{gemm name: spec}`` or ``{gemm name: {"spec": spec, "mode": m}}``; a spec is a
        string (``"drum(k=4)@s8"``) or an `axsa.rtl.multipliers` multiplier.
    source : str
        Where the entries come from (a file name, ``"--mult"``), for messages.

    Raises
    ------
    InputError
        Naming `source`, the GEMM and what is wrong: a GEMM the model does not have, an
        entry that is neither a spec nor ``{"spec", "mode"}``, a spec that does not parse,
        a multiplier whose format does not take the model's signed ``bits``-bit operands,
        a mode the multiplier does not have.
    """
    if not isinstance(entries, Mapping):
        raise InputError(f"{source} must be an object {{gemm name: spec}}, "
                         f"not {type(entries).__name__}")
    names = model.gemm_names()
    unknown = [n for n in entries if n not in names]
    if unknown:
        raise InputError(f"{source} names unknown GEMM(s) {', '.join(map(repr, unknown))}; "
                         f"this model has: {', '.join(names)}")
    bits = model.config.bits
    tables, specs, mults = {}, {}, {}
    # one table per distinct (spec, mode)
    built: dict[tuple, tuple[ProductTable, str, object]] = {}
    for name, entry in entries.items():
        who = f"{source}: GEMM {name!r}"
        spec, mode = _entry(entry, who)
        key = (spec if isinstance(spec, str) else id(spec), mode)
        if key not in built:
            mult = _multiplier(spec, who)
            _check(mult, mode, bits, who)
            shown = mult.spec if mult.modes == 1 else f"{mult.spec} mode {mode}"
            built[key] = ProductTable.from_multiplier(mult, mode), shown, mult
        tables[name], specs[name], mult = built[key]
        mults[name] = (mult, mode)
    return Assignment(tables, specs, mults)


def _entry(entry, who: str):
    """(spec, mode) of one entry."""
    if isinstance(entry, Mapping):
        extra = [k for k in entry if k not in ENTRY_KEYS]
        if extra:
            raise InputError(f"{who}: unknown key(s) {', '.join(map(repr, extra))} "
                             f"(an entry holds {', '.join(map(repr, ENTRY_KEYS))})")
        if "spec" not in entry:
            raise InputError(f"{who}: the entry {dict(entry)!r} has no 'spec'")
        spec, mode = entry["spec"], entry.get("mode", 0)
    else:
        spec, mode = entry, 0
    if not isinstance(spec, str) and not hasattr(spec, "model_table"):
        raise InputError(f"{who} needs a spec string, got {entry!r}")
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise InputError(f"{who}: mode {mode!r} is not an integer")
    return spec, mode


def _multiplier(spec, who: str):
    if not isinstance(spec, str):
        return spec
    # the one spec parser, the family registry (imported on use: it loads Amaranth)
    from axsa.rtl.multipliers import parse_spec
    try:
        return parse_spec(spec)
    except InputError as exc:
        raise InputError(f"{who}: {exc}") from None


def _check(mult, mode: int, bits: int, who: str) -> None:
    fmt = mult.fmt
    if not fmt.signed or fmt.a_width < bits or fmt.b_width < bits:
        raise InputError(f"{who}: multiplier {mult.spec!r} does not take the model's "
                         f"signed {bits}-bit operands (needs a signed format of at least "
                         f"{bits} bits, e.g. s{bits})")
    if not 0 <= mode < mult.modes:
        raise InputError(f"{who}: mode {mode!r} out of range for {mult.spec!r} "
                         f"({mult.modes} mode(s): 0..{mult.modes - 1})")

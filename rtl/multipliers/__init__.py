"""The multiplier library: a registry of families, each one file with RTL and numpy model.

>>> from axsa.rtl.multipliers import parse_spec
>>> mult = parse_spec("drum(k=4)@u8")
>>> mult.model_table().shape
(256, 256)
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import imported
from .bam import Bam
from .base import (
    MAX_GRID_POINTS,
    MAX_WIDTH,
    MIN_WIDTH,
    Format,
    Multiplier,
    MultiplierComponent,
    Param,
    SpecError,
    axis_size,
    axis_values,
    code_values,
    exact_table,
    format_spec,
    parse_grid_item,
    split_spec,
    split_top,
    to_codes,
    value_range,
)
from .booth import Booth
from .cfgtrunc import CfgTrunc
from .drum import Drum
from .exact import Exact
from .kulkarni import Kulkarni
from .mitchell import Mitchell
from .mul import Mul
from .perf import Perf
from .roba import Roba
from .ssm import Ssm
from .trunc import Trunc

#: family name -> class, in the order `axsa mult list` shows them
FAMILIES: dict[str, type[Multiplier]] = {cls.family: cls for cls in (
    Exact, Booth, Mul, Trunc, Bam, Perf, Drum, Mitchell, Roba, Kulkarni, Ssm, CfgTrunc)}


def parse_spec(text: str) -> Multiplier:
    """Parse a spec string into a multiplier; raises SpecError naming the bad part."""
    return multiplier(*split_spec(text))


def multiplier(family: str, values: dict, fmt: Format | str) -> Multiplier:
    """The multiplier of `family` with parameter `values` at `fmt` (a built-in family or
    an imported one); SpecError naming the bad part."""
    fmt = fmt if isinstance(fmt, Format) else Format.parse(fmt)
    cls = FAMILIES.get(family)
    if cls is not None:
        return _builtin(cls, fmt, tuple(sorted(values.items())))
    found = imported.load(family, fmt, values)
    if found is None:
        raise SpecError(f"unknown multiplier family {family!r} (built-in: "
                        f"{', '.join(FAMILIES)}; imported ones live in {imported.library_dir()})")
    return found


def exact_multiplier(fmt: Format | str) -> Multiplier:
    """``exact@FMT``: the reference every approximate design of a format is measured by."""
    return multiplier("exact", {}, fmt)


def parameters(mult: Multiplier) -> dict:
    """A multiplier's parameter values as JSON-able data (lists for list parameters)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in mult.values.items()}


@dataclass
class Grid:
    """A sweep grid expanded: its multipliers (deduplicated, in order) and the points
    skipped as invalid for a format, as (spec text, reason)."""

    multipliers: list[Multiplier] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _grid_axes(family: str, axes: dict, fmt: Format) -> dict:
    """`axes` with every required parameter the item leaves out swept over its range."""
    cls = FAMILIES.get(family)
    axes = dict(axes)
    if cls is not None:
        for p in cls.params:
            if p.name not in axes and p.default is None:
                lo, hi = p.bounds(fmt)
                axes[p.name] = [range(lo, hi + 1)]
    return axes


def count_grid(text: str, formats: Iterable[Format | str]) -> int:
    """How many designs `expand_grid` would try, counted without expanding."""
    fmts = [f if isinstance(f, Format) else Format.parse(f) for f in formats]
    items = [parse_grid_item(i) for i in split_top(text or "")]
    return sum(math.prod(axis_size(a) for a in _grid_axes(fam, axes, fmt).values())
               for fmt in fmts for fam, axes in items)


def expand_grid(text: str, formats: Iterable[Format | str],
                max_points: int = MAX_GRID_POINTS) -> Grid:
    """The multipliers of a sweep grid at every format.

    Grammar: items separated by commas outside parentheses; an item is ``FAMILY`` (every
    value of each required parameter, defaults for the rest) or ``FAMILY(P=ALTS,...)``
    where ALTS are ``|``-joined alternatives, each ``N``, ``A..B`` or (list parameters)
    ``N/M/...``. The grid is counted first: more than `max_points` designs is an
    InputError naming the count and the maximum. Points out of a format's range are
    skipped and reported; an unknown family is an error.
    """
    fmts = [f if isinstance(f, Format) else Format.parse(f) for f in formats]
    count = count_grid(text, fmts)
    if count > max_points:
        raise SpecError(f"the grid {text!r} expands to {count:,} designs over "
                        f"{len(fmts)} format(s), more than the maximum of {max_points:,}: "
                        "narrow its ranges")
    grid, seen = Grid(), set()
    for fmt in fmts:
        for item in split_top(text or ""):
            family, given = parse_grid_item(item)
            axes = _grid_axes(family, given, fmt)
            names = list(axes)
            for combo in itertools.product(*(list(axis_values(axes[n])) for n in names)):
                values = dict(zip(names, combo))
                try:
                    m = multiplier(family, values, fmt)
                except SpecError as exc:
                    if family not in FAMILIES and not names:
                        raise  # an unknown family is the user's typo, not a grid point
                    grid.skipped.append((format_spec(family, values, fmt), str(exc)))
                    continue
                if m not in seen:
                    seen.add(m)
                    grid.multipliers.append(m)
    return grid


#: a curated sweep of the library: parameter choices that span the error range at 8 bits
LIBRARY = (
    "exact", "booth", "trunc(k=4)", "trunc(k=6)", "trunc(k=8)", "trunc(k=8,comp=1)",
    "bam(h=1,v=6)", "bam(h=2,v=8)", "perf(i=0,j=1)", "perf(i=0,j=2)",
    "drum(k=3)", "drum(k=4)", "drum(k=5)", "drum(k=6)", "mitchell", "mitchell(t=3)",
    "roba", "kulkarni", "ssm(m=4)", "ssm(m=5)", "ssm(m=6)",
)


def library(fmt: str = "s8") -> list[str]:
    """The curated library (`LIBRARY`) as specs at format `fmt` (parameters that do not fit
    a narrow format are left out)."""
    out = []
    for body in LIBRARY:
        try:
            out.append(parse_spec(f"{body}@{fmt}").spec)
        except SpecError:
            continue
    return list(dict.fromkeys(out))


@functools.lru_cache(maxsize=512)
def _builtin(cls, fmt, values):
    # Cached so every part that asks for a spec shares one object and its tables.
    return cls(fmt, **dict(values))


__all__ = [
    "FAMILIES", "LIBRARY", "MAX_GRID_POINTS", "MAX_WIDTH", "MIN_WIDTH", "Format", "Grid",
    "Multiplier", "MultiplierComponent", "Param", "SpecError", "code_values", "count_grid",
    "exact_multiplier", "exact_table", "expand_grid", "format_spec", "library", "multiplier",
    "parameters", "parse_spec", "split_spec", "split_top", "to_codes", "value_range",
]

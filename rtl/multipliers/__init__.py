"""The multiplier library: a registry of families, each one file with RTL and numpy model.

>>> from axsa.rtl.multipliers import parse_spec
>>> mult = parse_spec("drum(k=4)@u8")
>>> mult.model_table().shape
(256, 256)
"""

from __future__ import annotations

import functools

from . import imported
from .bam import Bam
from .base import (
    MAX_WIDTH,
    MIN_WIDTH,
    Format,
    Multiplier,
    MultiplierComponent,
    Param,
    SpecError,
    code_values,
    exact_table,
    split_spec,
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
    family, values, fmt = split_spec(text)
    cls = FAMILIES.get(family)
    if cls is not None:
        return _builtin(cls, fmt, tuple(sorted(values.items())))
    found = imported.load(family, fmt, values)
    if found is None:
        raise SpecError(f"unknown multiplier family {family!r} (built-in: "
                        f"{', '.join(FAMILIES)}; imported ones live in {imported.library_dir()})")
    return found


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
    "FAMILIES", "LIBRARY", "MAX_WIDTH", "MIN_WIDTH", "Format", "Multiplier",
    "MultiplierComponent", "Param", "SpecError", "code_values", "exact_table", "library",
    "parse_spec", "split_spec", "to_codes", "value_range",
]

"""Operand formats: the one home of a format's range, value <-> code conversion and the
accumulator width a reduction needs.

Every part (RTL, models, simulation, synthesis) asks this module instead of re-deriving
the rules, so they cannot drift apart. It knows numpy only (no Amaranth, no torch), and
imports it only when a table of codes is asked for, so the CLI can read the constants at
start-up for free; its conversions work unchanged on Python ints, numpy arrays and torch
tensors, since they use only ``&``, ``^`` and ``-``.

A *code* is an operand's bit pattern read as an unsigned integer, 0..2^w-1 (two's
complement for signed operands); product tables are indexed by codes (DESIGN.md).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from axsa.errors import InputError, SpecError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT_ACC_WIDTH", "DEFAULT_MAX_REDUCTION", "MAX_WIDTH", "MIN_WIDTH", "Format",
    "acc_width_for_range", "code_values", "from_codes", "to_codes",
    "value_range",
]

#: Operand widths a format may have. 8 bits keep exhaustive tables small: 2^(wa+wb)
#: entries, 65,536 at 8x8.
MIN_WIDTH = 2
MAX_WIDTH = 8

#: Longest reduction (GEMM K) an accumulator is sized for when none is given.
DEFAULT_MAX_REDUCTION = 4096

#: Accumulator width of a stand-alone MAC or PE when none is given (synthesis reports):
#: 24 bits hold 256 products of two 8-bit operands with room to spare.
DEFAULT_ACC_WIDTH = 24


def value_range(width: int, is_signed: bool) -> tuple[int, int]:
    """Inclusive (min, max) value of a `width`-bit operand."""
    if is_signed:
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


def to_codes(values, width: int):
    """Operand values -> codes (the low `width` bits, read unsigned).

    Works on ints, numpy integer arrays and torch integer tensors; the dtype is kept.
    Values outside the format's range wrap (callers check the range first)."""
    return values & ((1 << width) - 1)


def from_codes(codes, width: int, is_signed: bool):
    """Codes -> operand values (two's complement when `is_signed`); the inverse of
    `to_codes` on the format's range. Works on ints, numpy arrays and torch tensors."""
    if not is_signed:
        return codes
    half = 1 << (width - 1)
    return (codes ^ half) - half


def code_values(width: int, is_signed: bool) -> np.ndarray:
    """int64 array: the value of every code 0..2^width-1."""
    import numpy as np
    return from_codes(np.arange(1 << width, dtype=np.int64), width, is_signed)


def acc_width_for_range(lo: int, hi: int, max_reduction: int) -> int:
    """Narrowest signed width holding every sum of 0..`max_reduction` terms in [lo, hi].

    That is every value in ``[min(0, max_reduction * lo), max(0, max_reduction * hi)]``.
    """
    if isinstance(max_reduction, bool) or not hasattr(max_reduction, "__index__") \
            or max_reduction < 1:
        raise InputError(f"max_reduction must be a positive integer, not {max_reduction!r}")
    lo_sum, hi_sum = min(0, int(max_reduction) * lo), max(0, int(max_reduction) * hi)
    # signed width: -2^(w-1) <= lo_sum and hi_sum <= 2^(w-1) - 1
    return max((-lo_sum - 1).bit_length(), hi_sum.bit_length()) + 1


@dataclass(frozen=True)
class Format:
    """Operand format: widths of operands `a` and `b`, and signedness of both.

    Written ``s8`` (both signed 8-bit), ``u4``, or ``s8x4`` (a 8-bit, b 4-bit).
    """

    signed: bool
    a_width: int
    b_width: int

    def __post_init__(self):
        for name, w in (("a", self.a_width), ("b", self.b_width)):
            if isinstance(w, bool) or not isinstance(w, int) or not MIN_WIDTH <= w <= MAX_WIDTH:
                raise SpecError(f"operand width {w!r} (operand {name}) is out of range "
                                  f"{MIN_WIDTH}..{MAX_WIDTH}")

    @classmethod
    def parse(cls, text: str) -> Format:
        match = re.fullmatch(r"([su])(\d{1,3})(?:x(\d{1,3}))?", str(text).strip())
        if not match:
            raise SpecError(f"bad format {text!r}: expected s8, u4 or s8x4 "
                              "(s/u for signed/unsigned, then the operand widths)")
        wa = int(match[2])
        wb = int(match[3]) if match[3] is not None else wa
        return cls(match[1] == "s", wa, wb)

    def __str__(self) -> str:
        s = "s" if self.signed else "u"
        if self.a_width == self.b_width:
            return f"{s}{self.a_width}"
        return f"{s}{self.a_width}x{self.b_width}"

    def a_range(self) -> tuple[int, int]:
        return value_range(self.a_width, self.signed)

    def b_range(self) -> tuple[int, int]:
        return value_range(self.b_width, self.signed)

    def a_values(self) -> np.ndarray:
        """Operand values of `a` indexed by code."""
        return code_values(self.a_width, self.signed)

    def b_values(self) -> np.ndarray:
        """Operand values of `b` indexed by code."""
        return code_values(self.b_width, self.signed)

    def a_codes(self, values):
        return to_codes(values, self.a_width)

    def b_codes(self, values):
        return to_codes(values, self.b_width)

    def exact_table(self) -> np.ndarray:
        """The exact product table a*b indexed by codes (read-only int64)."""
        return _exact_table(self)


@functools.cache
def _exact_table(fmt: Format) -> np.ndarray:
    t = fmt.a_values()[:, None] * fmt.b_values()[None, :]
    t.setflags(write=False)
    return t

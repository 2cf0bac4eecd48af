"""The product table: ``lut[a_code, b_code]`` of a multiplier, checked once."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from axsa import formats
from axsa.errors import InputError

from . import cache
from .costs import estimate
from .plan import make_plan

if TYPE_CHECKING:
    from .plan import Plan

#: widest operand a table may have: the operand formats' limit (the factorization
#: search is O(4^w) per step, and the kernels' byte codes need w <= 8)
MAX_WIDTH = formats.MAX_WIDTH

#: largest table magnitude (every engine's exactness bounds assume it)
MAX_MAGNITUDE = 2**40


class ProductTable:
    """A multiplier's product table ``lut[a_code, b_code]`` and its fast-GEMM plan.

    Parameters
    ----------
    table : np.ndarray
        Integer array of shape (2^wa, 2^wb) indexed by operand codes (bit patterns read
        as unsigned, two's complement for signed operands).
    signed : bool
        Whether both operands are signed.
    name : str
        Shown in error messages (e.g. the multiplier's spec).

    Attributes
    ----------
    table : np.ndarray
        Read-only int64 copy of the table.
    wa, wb : int
        Operand widths in bits.
    a_range, b_range : tuple of int
        Inclusive (min, max) operand values.
    key : str
        Hash of (table, signed); the plan cache key.
    """

    def __init__(self, table: np.ndarray, signed: bool, name: str = ""):
        arr = np.asarray(table)
        label = f" {name!r}" if name else ""
        if arr.ndim != 2:
            raise InputError(f"product table{label} must be 2-D, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.integer) or
                (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))):
            raise InputError(f"product table{label} must hold integers, got dtype {arr.dtype}")
        widths = []
        for axis, size in enumerate(arr.shape):
            w = size.bit_length() - 1
            if size < 2 or size != 1 << w or w > MAX_WIDTH:
                raise InputError(f"product table{label} axis {axis} has {size} entries: "
                                 f"expected 2^w codes with 1 <= w <= {MAX_WIDTH}")
            widths.append(w)
        if np.abs(arr).max(initial=0) >= MAX_MAGNITUDE:
            raise InputError(f"product table{label} holds {np.abs(arr).max()}, beyond "
                             "the supported magnitude 2^40")
        self.table = np.array(arr, dtype=np.int64)
        self.table.setflags(write=False)
        self.signed = bool(signed)
        self.name = name
        self.wa, self.wb = widths
        self.key = hashlib.sha1(self.table.tobytes() + bytes([self.signed, self.wa,
                                                              self.wb])).hexdigest()

    @classmethod
    def from_multiplier(cls, multiplier, mode: int = 0) -> ProductTable:
        """The table of an `axsa.rtl.multipliers` multiplier (duck-typed: `.model_table`,
        `.fmt.signed`, `.spec`), for one `mode` of a configurable one."""
        name = multiplier.spec if multiplier.modes == 1 else f"{multiplier.spec} mode {mode}"
        return cls(multiplier.model_table(mode), multiplier.fmt.signed, name)

    def __repr__(self) -> str:
        return f"<ProductTable {self.name or self.key[:10]} {self.wa}x{self.wb}>"

    @property
    def label(self) -> str:
        """The table's name, or the start of its key (for messages)."""
        return self.name or self.key[:10]

    # -- operand values ----------------------------------------------------------------
    @property
    def a_values(self) -> np.ndarray:
        """Value of every code of operand `a` (int64)."""
        return formats.code_values(self.wa, self.signed)

    @property
    def b_values(self) -> np.ndarray:
        """Value of every code of operand `b` (int64)."""
        return formats.code_values(self.wb, self.signed)

    @property
    def a_range(self) -> tuple[int, int]:
        return formats.value_range(self.wa, self.signed)

    @property
    def b_range(self) -> tuple[int, int]:
        return formats.value_range(self.wb, self.signed)

    @property
    def is_exact(self) -> bool:
        """True when the table is the exact product a*b everywhere."""
        return bool(np.array_equal(self.table, np.outer(self.a_values, self.b_values)))

    # -- the fast-path plan (computed once per distinct table) -------------------------
    @property
    def plan(self) -> Plan:
        """Precomputed structure (exact integer terms, int8 plan, float copies), shared
        by every ProductTable holding the same table (`approx.cache.PLANS`)."""
        return cache.plan_of(self.key, make_plan, self)

    @property
    def rank(self) -> int | None:
        """Number of exact integer rank-1 terms the fast path uses (the table's rank
        over the rationals), or None when the table has no integer factorization."""
        terms = self.plan.terms
        return None if terms is None else len(terms)

    @property
    def engine(self) -> str:
        """The engine ``approx_matmul(engine="auto")`` picks for this table on the
        reference shape 197x192 @ 192x576 (the choice depends on the shape)."""
        costs = estimate(self.plan, 1, 1, 197, 192, 576)
        return min(costs, key=costs.get)

"""The fast-GEMM plan of a product table: built once per distinct table, cached by key
(`approx.cache.PLANS`), read by every engine."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import _lowrank
from . import cache

if TYPE_CHECKING:
    from .table import ProductTable


class Group:
    """int8 factor tables of one scale, packed so that one 1-D gather (torch's fastest)
    fetches all T digits of a code: T padded to 1, 2, 4 or 8 bytes and read as one
    int8/16/32/64 element per code; wider groups use several int64 tables."""

    def __init__(self, scale: int, f: np.ndarray, g: np.ndarray):
        self.scale = int(scale)
        self.stacks = f.shape[1]
        self.f = torch.from_numpy(np.ascontiguousarray(f))
        self.g = torch.from_numpy(np.ascontiguousarray(g))
        t = self.stacks
        self.width = t if t in (1, 2, 4) else (4 if t == 3 else -(-t // 8) * 8)
        self.f_packed = self._pack(f)
        self.g_packed = self._pack(g)

    def _pack(self, x: np.ndarray) -> list[torch.Tensor]:
        padded = np.zeros((x.shape[0], self.width), dtype=np.int8)
        padded[:, :x.shape[1]] = x
        dtype = {1: np.int8, 2: np.int16, 4: np.int32}.get(self.width, np.int64)
        packed = padded.view(dtype)                      # (codes, width / itemsize)
        return [torch.from_numpy(packed[:, j].copy()) for j in range(packed.shape[1])]

    def gather(self, codes: torch.Tensor, which: str, transpose: bool = False) -> torch.Tensor:
        """(R, K) codes -> (R, K * width) int8 digits; with `transpose`, (K, R) codes in.

        Digit order along the second axis is (table, k, digit): the same for both
        operands, which is all the GEMM needs. The result lives in a reused workspace
        (valid until the next gather of the same operand).
        """
        tables = self.f_packed if which == "f" else self.g_packed
        flat = codes.reshape(-1)
        rows, k = (codes.shape[1], codes.shape[0]) if transpose else codes.shape
        dtype = tables[0].dtype
        out = cache.workspace(f"digits-{which}", (rows, len(tables), k), dtype)
        for j, table in enumerate(tables):
            if transpose:
                got = torch.index_select(table, 0, flat,
                                         out=cache.workspace("gather-t", (flat.numel(),),
                                                             dtype))
                out[:, j, :].copy_(got.view(k, rows).t())
            elif len(tables) == 1:
                torch.index_select(table, 0, flat, out=out.view(-1))
            else:
                out[:, j, :].copy_(torch.index_select(table, 0, flat).view(rows, k))
        return out.view(torch.int8).reshape(rows, -1)


@dataclass(frozen=True, eq=False)
class Plan:
    """Everything the engines precompute from one product table.

    Attributes
    ----------
    table : ProductTable
    terms : list of (u, v) or None
        Exact integer rank-1 terms, ``lut = sum_t outer(u_t, v_t)`` (`axsa.models._lowrank`);
        None when the table has no integer factorization.
    int8 : _lowrank.Int8Plan or None
        The terms as int8 digit GEMMs plus row and column terms (None without terms).
    lut : torch.Tensor
        The table, int64 (2^wa, 2^wb).
    lut_gather : torch.Tensor
        The table flattened, int32 where it fits, else int64 (the plain gather).
    lut_float : torch.Tensor
        The table as float32 (|lut| < 2^24) or float64 (the embedding-bag engine).
    max_abs : int
        max |lut|.
    groups : tuple of Group
        The int8 plan's digit tables, one per scale (empty without an int8 plan).
    width : int
        Digits per code over all groups.
    row, col : torch.Tensor or None
        int64 per-code row term (of a's codes) and column term (of b's codes).
    const : int
        Constant added per multiply.
    has_row, has_col : bool
        Whether the row / column terms are not all zero.
    term_bound : int
        ``sum_t max|u_t| * max|v_t|``: bound of one product through the terms.
    term_tables : dict or None
        ``{torch dtype: (U, V, U^T, V^T)}``: the terms stacked as float32 and float64
        tables (the batched float GEMM over the terms).
    """

    table: ProductTable
    terms: list | None
    int8: _lowrank.Int8Plan | None
    lut: torch.Tensor
    lut_gather: torch.Tensor
    lut_float: torch.Tensor
    max_abs: int
    groups: tuple[Group, ...] = ()
    width: int = 0
    row: torch.Tensor | None = None
    col: torch.Tensor | None = None
    const: int = 0
    has_row: bool = False
    has_col: bool = False
    term_bound: int = 0
    term_tables: dict | None = None

    # derived on first use and kept with the plan (so they leave the cache with it)
    @functools.cached_property
    def gradient_factors(self) -> dict[str, torch.Tensor]:
        """Float factors of the table's finite-difference gradients (`approx.autograd`)."""
        from .autograd import gradient_factors
        return gradient_factors(self)

    @functools.cached_property
    def native_data(self) -> dict:
        """Per-table arrays of the native kernels (`axsa.models._native.table_data`)."""
        from .. import _native
        return _native.table_data(self)


def make_plan(pt: ProductTable) -> Plan:
    """The plan of `pt` (seconds for an 8x8-bit table: the factorization search)."""
    terms = _lowrank.factor(pt.table, pt.a_values, pt.b_values)
    int8 = None
    if terms is not None:
        int8 = _lowrank.Int8Plan.build(terms, pt.table.shape)
        if not np.array_equal(int8.reconstruct(), pt.table):  # never expected; be exact
            terms, int8 = None, None
    max_abs = int(np.abs(pt.table).max())
    fields = dict(
        table=pt,
        terms=terms,
        int8=int8,
        lut=torch.from_numpy(pt.table.copy()),
        lut_gather=torch.from_numpy(pt.table.reshape(-1).astype(
            np.int32 if max_abs < 2**31 else np.int64)),
        lut_float=torch.from_numpy(pt.table.astype(np.float32 if max_abs < 2**24
                                                   else np.float64)),
        max_abs=max_abs,
    )
    if int8 is not None:
        groups = tuple(Group(scale, f, g) for scale, f, g in int8.groups)
        us = np.stack([u for u, _ in terms], axis=1)
        vs = np.stack([v for _, v in terms], axis=1)
        fields.update(
            groups=groups,
            width=sum(g.width for g in groups),
            row=torch.from_numpy(int8.row),
            col=torch.from_numpy(int8.col),
            const=int8.const,
            has_row=bool(int8.row.any()),
            has_col=bool(int8.col.any()),
            term_bound=int(sum(int(np.abs(u).max()) * int(np.abs(v).max())
                               for u, v in terms)),
            term_tables={
                dt: tuple(torch.from_numpy(np.ascontiguousarray(x.astype(npdt)))
                          for x in (us, vs, us.T, vs.T))
                for dt, npdt in ((torch.float32, np.float32), (torch.float64, np.float64))},
        )
    return Plan(**fields)

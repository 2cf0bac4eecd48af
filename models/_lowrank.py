"""Exact integer low-rank factorizations of product tables, and their int8 GEMM plans.

A product table ``lut`` (codes of `a` by codes of `b`, int64) is written exactly as

    lut = sum_t u_t v_t^T        (u_t, v_t integer vectors, one per rank-1 term)

by fraction-free rank-1 peeling (Wedderburn rank reduction): pick a pivot entry ``R[i, j]``
equal (up to sign) to the gcd of its row, take ``u = R[:, j]``, ``v = R[i, :] / R[i, j]``
(an integer vector), subtract ``u v^T``; every step keeps the residual integer and lowers
its rank by exactly one, so the number of terms equals the table's rank. The exact product
``a*b`` is a rank-1 term with small factors, so the peeling runs on the error table
``lut - a*b`` (and, separately, on ``lut``; the cheaper plan wins).

An int8 plan then rewrites every term with int8 factors so the GEMM runs on
``torch._int_mm`` (int8 x int8 -> int32, exact): each factor is centred,
``u = c_u + u'``, and ``u'`` split into a few int8 parts (clipped parts that add up, or
balanced base-256 digits for wide ranges). The cross terms with a constant factor become
per-code row and column terms (summed over K, no GEMM). Powers of two left in a term's
scale are folded into a factor where they fit, so that most tables need a single GEMM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: more rank-1 terms than this is not "low rank" for the factorization search
MAX_TERMS = 256


def peel(table: np.ndarray, max_terms: int = MAX_TERMS
         ) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Exact integer rank-1 terms of `table`, or None if peeling needs a non-integer step
    or more than `max_terms` terms.

    Parameters
    ----------
    table : np.ndarray
        2-D int64 array.
    max_terms : int
        Give up beyond this many terms.

    Returns
    -------
    list of (u, v)
        int64 vectors with ``table == sum(np.outer(u, v))`` exactly.
    """
    rest = np.array(table, dtype=np.int64)
    terms = []
    while rest.any():
        if len(terms) >= max_terms:
            return None
        pivot = _pivot(rest)
        transposed = False
        if pivot is None:
            pivot = _pivot(rest.T)
            transposed = True
            if pivot is None:
                return None
        if transposed:
            j, i = pivot  # row i/col j of rest.T: column i of rest holds the gcd
            v = rest[i, :].copy()
            u = rest[:, j] // rest[i, j]
        else:
            i, j = pivot
            u = rest[:, j].copy()
            v = rest[i, :] // rest[i, j]
        if np.abs(u).max() * np.abs(v).max() >= 2**62:
            return None
        rest = rest - np.outer(u, v)
        terms.append((u, v))
    return terms


def _pivot(rest: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of an entry equal to +-gcd of its row, in the row with the smallest
    max/gcd ratio (keeps the factors small); None if no row has such an entry."""
    nz = np.flatnonzero(np.any(rest != 0, axis=1))
    rows = rest[nz]
    g = np.gcd.reduce(rows, axis=1)
    hit = np.abs(rows) == g[:, None]
    ok = hit.any(axis=1)
    if not ok.any():
        return None
    ratio = np.abs(rows).max(axis=1) // g
    ratio = np.where(ok, ratio, np.iinfo(np.int64).max)
    best = int(np.argmin(ratio))
    cols = np.flatnonzero(hit[best])
    # among the pivot candidates take the column with the smallest entries
    col = cols[int(np.argmin(np.abs(rest[:, cols]).max(axis=0)))]
    return int(nz[best]), int(col)


def factor(table: np.ndarray, a_values: np.ndarray, b_values: np.ndarray
           ) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Exact integer rank-1 terms of a product table, the fewer-digit one of two searches:
    the exact product plus the peeled error, or the peeled table itself."""
    exact = np.outer(a_values, b_values)
    candidates = []
    err = peel(table - exact)
    if err is not None:
        candidates.append([(a_values.astype(np.int64), b_values.astype(np.int64))] + err)
    whole = peel(table)
    if whole is not None:
        candidates.append(whole)
    if not candidates:
        return None
    return min(candidates, key=lambda terms: Int8Plan.build(terms, table.shape).stacks)


#: a factor whose range needs at most this many int8 parts is split additively (all
#: parts at scale 1, so they share one GEMM); wider ones go to base-256 digits
MAX_PARTS = 4


def _parts_needed(span: int) -> int:
    """int8 parts (additive, or base-256 digits) for an integer range of width `span`."""
    n = max(1, -(-span // 255))
    if n <= MAX_PARTS:
        return n
    n = 1
    while span > 256**n - 1:
        n += 1
    return n


def _split(x: np.ndarray) -> tuple[int, list[tuple[int, np.ndarray]]]:
    """Centre `x` and write it as int8 parts: x == c + sum_i scale_i * d_i.

    Narrow ranges (up to MAX_PARTS * 255) become additive parts at scale 1, clipped
    greedily from the centred value; wider ones balanced base-256 digits at 256^i.
    """
    lo, hi = int(x.min()), int(x.max())
    span = hi - lo
    n = max(1, -(-span // 255))
    rest = x.astype(np.int64)
    parts = []
    if n <= MAX_PARTS:
        c = lo + 128 * n                   # rest in [-128n, 127n]: n clipped parts
        rest = rest - c
        for _ in range(n):
            d = np.clip(rest, -128, 127)
            parts.append((1, d.astype(np.int8)))
            rest = rest - d
    else:
        n = _parts_needed(span)
        c = lo + 128 * (256**n - 1) // 255
        rest = rest - c
        for i in range(n):
            d = (rest + 128) % 256 - 128
            parts.append((256**i, d.astype(np.int8)))
            rest = (rest - d) // 256
    assert not rest.any()
    return c, parts


def _span(x: np.ndarray) -> int:
    return int(x.max()) - int(x.min())


def _fold_scale(scale: int, u: np.ndarray, v: np.ndarray):
    """Move prime factors of `scale` into u or v where that costs no extra int8 part,
    so that terms of different scales can share one GEMM."""
    p = 2
    while p * p <= scale or (scale > 1 and p <= scale):
        while scale % p == 0:
            if _parts_needed(_span(u) * p) == _parts_needed(_span(u)):
                u = u * p
            elif _parts_needed(_span(v) * p) == _parts_needed(_span(v)):
                v = v * p
            else:
                break
            scale //= p
        p += 1
        if p > 257:   # larger factors never fit an int8 part anyway
            break
    return scale, u, v


@dataclass(frozen=True)
class Int8Plan:
    """A table as int8 GEMM groups plus per-code row/column terms and a constant.

    ``lut[a, b] == sum_g scale_g * (F_g[a] . G_g[b]) + row[a] + col[b] + const``
    where ``F_g`` is (2^wa, T_g) int8, ``G_g`` is (2^wb, T_g) int8.

    Attributes
    ----------
    groups : tuple of (int, np.ndarray, np.ndarray)
        (scale, F, G) per distinct scale.
    row, col : np.ndarray
        int64 per-code terms for `a` and `b`.
    const : int
        Constant added per product.
    """

    groups: tuple
    row: np.ndarray
    col: np.ndarray
    const: int
    terms: int = 0
    stacks: int = field(default=0)

    @classmethod
    def build(cls, terms, shape) -> Int8Plan:
        row = np.zeros(shape[0], dtype=np.int64)
        col = np.zeros(shape[1], dtype=np.int64)
        const = 0
        groups: dict[int, tuple[list, list]] = {}
        for u, v in terms:
            gu = int(np.gcd.reduce(u)) or 1
            gv = int(np.gcd.reduce(v)) or 1
            u, v, scale = u // gu, v // gv, gu * gv
            if u.min() == u.max():
                col += scale * int(u[0]) * v
                continue
            if v.min() == v.max():
                row += scale * int(v[0]) * u
                continue
            scale, u, v = _fold_scale(scale, u, v)
            cu, pu = _split(u)
            cv, pv = _split(v)
            const += scale * cu * cv
            col += scale * cu * (v - cv)
            row += scale * cv * (u - cu)
            for su, du in pu:
                for sv, dv in pv:
                    fs, gs = groups.setdefault(scale * su * sv, ([], []))
                    fs.append(du)
                    gs.append(dv)
        packed = tuple((s, np.stack(fs, axis=1), np.stack(gs, axis=1))
                       for s, (fs, gs) in sorted(groups.items()))
        stacks = sum(f.shape[1] for _, f, _ in packed)
        return cls(packed, row, col, int(const), len(terms), stacks)

    def reconstruct(self) -> np.ndarray:
        """The table this plan computes (int64, Python-int exact for the check)."""
        out = self.row[:, None] + self.col[None, :] + self.const
        for scale, f, g in self.groups:
            out = out + scale * (f.astype(np.int64) @ g.astype(np.int64).T)
        return out


def exact_float_bound(max_abs_sum: float, dtype_bits: int) -> bool:
    """True when integers of magnitude up to `max_abs_sum` are exact in a float with
    `dtype_bits` significand bits (24 for float32, 53 for float64)."""
    return math.isfinite(max_abs_sum) and max_abs_sum < 2.0**dtype_bits

"""The table-based reference GEMM and the requantization formula, in plain numpy.

These are the definitions every engine (pysim, CXXRTL, the torch emulation) is checked
against: ``C[i, j] = sum_k table[code(A[i, k]), code(B[k, j])]``, exact in int64, and
``requantize(acc) = clamp((acc * m + 2^(s-1)) >> s)`` (DESIGN.md).
"""

from __future__ import annotations

import numpy as np

from axsa.errors import InputError
from axsa.formats import to_codes, value_range

__all__ = ["check_operands", "reference_gemm", "requantize"]

#: elements of the (rows, k, cols) gather block; bounds the reference's memory (~32 MB)
BLOCK_ELEMENTS = 1 << 22


def check_operands(A, B, fmt) -> tuple[np.ndarray, np.ndarray]:
    """Validate GEMM operands against an operand format; return them as int64.

    Raises InputError naming the bad value: non-integer or non-2-D arrays, mismatched
    inner dimensions, empty operands, values outside the format's range.
    """
    arrays = []
    for name, x, (lo, hi) in (("A", A, fmt.a_range()), ("B", B, fmt.b_range())):
        x = np.asarray(x)
        if x.dtype.kind not in "iub":
            raise InputError(f"operand {name} has dtype {x.dtype}: GEMM operands must be "
                             "integer arrays")
        if x.ndim != 2:
            raise InputError(f"operand {name} has shape {x.shape}: expected a 2-D matrix")
        if x.size == 0:
            raise InputError(f"operand {name} has shape {x.shape}: it is empty")
        x = x.astype(np.int64)
        bad = (x < lo) | (x > hi)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise InputError(f"operand {name}[{i}, {j}] = {int(x[i, j])} is outside the "
                             f"{fmt} range {lo}..{hi}")
        arrays.append(x)
    A, B = arrays
    if A.shape[1] != B.shape[0]:
        raise InputError(f"shapes do not chain: A is {A.shape[0]}x{A.shape[1]} and B is "
                         f"{B.shape[0]}x{B.shape[1]} (A's columns must equal B's rows)")
    return A, B


def reference_gemm(A, B, table, fmt) -> np.ndarray:
    """Exact GEMM through a product table.

    Parameters
    ----------
    A : array_like of int, shape (M, K)
        Operand values in the `a` range of `fmt`.
    B : array_like of int, shape (K, N)
        Operand values in the `b` range of `fmt`.
    table : numpy.ndarray of int64, shape (2**a_width, 2**b_width)
        ``table[a_code, b_code]``: the product (e.g. ``multiplier.model_table(mode)``).
    fmt : Format
        Operand format (widths and signedness).

    Returns
    -------
    numpy.ndarray of int64, shape (M, N)
        ``C[i, j] = sum_k table[code(A[i, k]), code(B[k, j])]``, exact (blocked over rows
        and k so that memory stays bounded).
    """
    A, B = check_operands(A, B, fmt)
    table = np.asarray(table, dtype=np.int64)
    want = (1 << fmt.a_width, 1 << fmt.b_width)
    if table.shape != want:
        raise InputError(f"product table has shape {table.shape}, the format {fmt} "
                         f"needs {want}")
    ac = to_codes(A, fmt.a_width)
    bc = to_codes(B, fmt.b_width)
    M, K = A.shape
    N = B.shape[1]
    out = np.zeros((M, N), dtype=np.int64)
    rows = max(1, min(M, BLOCK_ELEMENTS // max(1, N)))
    for i0 in range(0, M, rows):
        a_blk = ac[i0:i0 + rows]
        kb = max(1, BLOCK_ELEMENTS // (a_blk.shape[0] * N))
        for k0 in range(0, K, kb):
            prods = table[a_blk[:, k0:k0 + kb, None], bc[None, k0:k0 + kb, :]]
            out[i0:i0 + rows] += prods.sum(axis=1)
    return out


def requantize(acc, m, s, bits: int, signed: bool) -> np.ndarray:
    """``clamp((acc * m + 2^(s-1)) >> s)``: the requantization of DESIGN.md, exact.

    Parameters
    ----------
    acc : array_like of int
        Accumulators (any shape).
    m, s : int or array_like of int
        Integer multiplier (signed 32-bit) and right shift (1..62), scalars or arrays
        broadcast against `acc` (per output column: shape ``(N,)`` for ``acc`` (M, N)).
    bits : int
        Output width, 1..64.
    signed : bool
        Clamp to ``-2^(bits-1) .. 2^(bits-1)-1`` if signed, else ``0 .. 2^bits-1``.

    Returns
    -------
    numpy.ndarray of int64
        The shift is arithmetic (floor); the rounding adds half an output step.
    """
    acc = np.asarray(acc)
    if acc.dtype.kind not in "iu":
        raise InputError(f"accumulators have dtype {acc.dtype}: expected integers")
    from axsa.rtl.requantizer import check_requant
    check_requant(m, s, bits, max_bits=64)
    m = np.asarray(m, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    lo, hi = value_range(int(bits), bool(signed))
    acc = acc.astype(np.int64)
    big = int(np.abs(acc).max(initial=0)) * int(np.abs(m).max(initial=0)) + (1 << 61)
    if big < 1 << 63:
        y = (acc * m + (np.int64(1) << (s - 1))) >> s
        return np.clip(y, max(lo, -(1 << 63)), min(hi, (1 << 63) - 1)).astype(np.int64)
    # beyond int64: exact with Python integers (rare: accumulators wider than 31 bits)
    acc_o, m_o, s_o = np.broadcast_arrays(acc.astype(object), m.astype(object),
                                          s.astype(object))
    y = (acc_o * m_o + (1 << (s_o - 1))) >> s_o
    y = np.minimum(np.maximum(y, lo), hi)
    return y.astype(np.int64)

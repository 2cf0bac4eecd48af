"""Engines ``lowrank`` and ``terms``: the table's exact integer factorization as int8
GEMMs (``torch._int_mm``), or as one batched float GEMM over the integer terms."""

from __future__ import annotations

import functools
import math

import torch

from . import cache
from .costs import batched_costs
from .operands import split_batch

#: elements of the temporary per-block tensors (bounds memory of the int8 engine)
BLOCK_ELEMENTS = 1 << 22

#: elements of the int32/int64 partial-product blocks of the int8 engine (kept per thread)
PART_ELEMENTS = 1 << 20


def int_mm_works() -> bool:
    """torch._int_mm is exact on this machine (some back-ends saturate int16 pairs);
    probed once (`cache.PROBES["int_mm"]`)."""
    ok = cache.PROBES.get("int_mm")
    if ok is None:
        ok = hasattr(torch, "_int_mm")
        if ok:
            try:
                gen = torch.Generator().manual_seed(1)
                x = torch.randint(-128, 128, (40, 600), dtype=torch.int8, generator=gen)
                y = torch.randint(-128, 128, (600, 24), dtype=torch.int8, generator=gen)
                x[:8] = -128
                x[8:16] = 127
                y[:, :8] = -128
                y[:, 8:16] = 127
                ok = torch.equal(torch._int_mm(x, y).to(torch.int64),
                                 x.to(torch.int64) @ y.to(torch.int64))
            except RuntimeError:
                ok = False
        cache.PROBES["int_mm"] = ok
    return ok


def lowrank_matmul(ca, cb, batch, plan) -> torch.Tensor:
    """(..., M, K) x (..., K, N) codes -> (*batch, M, N) int64 through int8 GEMMs."""
    kind, A, B = split_batch(ca, cb, batch)
    K = ca.shape[-1]
    if kind == "b":  # C^T = B^T (x) A^T with the transposed table: b's rows stacked
        At = B.transpose(-1, -2).reshape(-1, K)
        out = lowrank_2d(At, A.t(), plan, transposed=True)  # (bb*N, M)
        out = out.reshape(*cb.shape[:-2], cb.shape[-1], ca.shape[-2]).transpose(-1, -2)
        return out.expand(*batch, *out.shape[-2:]).contiguous()
    if kind == "a":
        out = lowrank_2d(A, B, plan)
        return out.reshape(*ca.shape[:-2], ca.shape[-2], cb.shape[-1]).expand(
            *batch, ca.shape[-2], cb.shape[-1]).contiguous()
    G = math.prod(batch)
    terms, loop = batched_costs(plan, G, A.shape[-2], K, B.shape[-1])
    if loop < terms:
        flat_a = A.reshape(G, *A.shape[-2:])
        flat_b = B.reshape(G, *B.shape[-2:])
        out = torch.stack([lowrank_2d(x, y, plan) for x, y in zip(flat_a, flat_b)])
        return out.reshape(*batch, A.shape[-2], B.shape[-1])
    return lowrank_batched(A, B, plan)


def lowrank_2d(A, B, plan, transposed: bool = False) -> torch.Tensor:
    """(P, K) codes x (K, Q) codes -> (P, Q) int64 through int8 GEMMs.

    With `transposed`, A holds codes of operand b and B codes of operand a (the product
    is C^T): factor tables and row/column terms swap roles.
    """
    P, K = A.shape
    Q = B.shape[1]
    row, col = (plan.col, plan.row) if transposed else (plan.row, plan.col)
    fa, fb = ("g", "f") if transposed else ("f", "g")
    A = A.contiguous()
    # b's digits are wanted as rows (Q, K): free when b is a transposed weight
    b_rows = B.t().is_contiguous()
    B = B.t() if b_rows else B.contiguous()
    # per-row and per-column terms (skipped when the plan has none, e.g. exact tables)
    rowsum = (torch.index_select(row, 0, A.view(-1)).view(P, K).sum(1) if plan.has_row
              else None)
    colsum = (torch.index_select(col, 0, B.reshape(-1)).view(B.shape).sum(1 if b_rows else 0)
              if plan.has_col else torch.zeros(Q, dtype=torch.int64))
    colsum += K * plan.const
    out = torch.empty(P, Q, dtype=torch.int64)
    groups = plan.groups
    if not groups:
        out.copy_(colsum[None, :].expand(P, Q))
        return out.add_(rowsum[:, None]) if rowsum is not None else out
    width = max(g.width for g in groups)
    # K chunk: int32 bound (|int8 product| <= 2^14) and temporaries of bounded size;
    # P block: the int32/int64 partial products stay within PART_ELEMENTS
    kc = max(1, min(K, (2**31 - 1) // (2**14 * width),
                    BLOCK_ELEMENTS // max(1, (P + Q) * width)))
    pc = max(1, min(P, PART_ELEMENTS // max(1, Q)))
    use_int = int_mm_works()
    for p0 in range(0, P, pc):
        p = min(pc, P - p0)
        acc = out[p0:p0 + p]
        part32 = cache.workspace("part32", (p, Q), torch.int32)
        first = True
        for k0 in range(0, K, kc):
            a_blk = A[p0:p0 + p, k0:k0 + kc]
            b_blk = B[:, k0:k0 + kc] if b_rows else B[k0:k0 + kc]
            for grp in groups:
                G = grp.gather(b_blk, fb, transpose=not b_rows)    # (Q, kc*width) int8
                F = grp.gather(a_blk, fa)                          # (p, kc*width) int8
                part = (torch._int_mm(F, G.t(), out=part32) if use_int
                        else _float_exact_mm(F, G.t()))
                # (mixed int32/int64 adds with broadcasting are slow: cast first)
                part64 = cache.workspace("part64", (p, Q), torch.int64)
                part64.copy_(part)
                if first:
                    torch.add(colsum[None, :], part64, alpha=grp.scale, out=acc)
                    first = False
                else:
                    acc.add_(part64, alpha=grp.scale)
        if rowsum is not None:
            acc.add_(rowsum[p0:p0 + p, None])
    return out


def _float_exact_mm(F: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """int8 x int8 GEMM in float32 (every partial sum < 2^24 when K <= 1023) or float64."""
    K = F.shape[-1]
    dtype = torch.float32 if K * 2**14 < 2**24 else torch.float64
    return torch.matmul(F.to(dtype), G.to(dtype)).to(torch.int64)


def _rows(table: torch.Tensor, columns: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """table[codes] flattened over the last two axes: (..., K) codes -> (..., K * r).

    The order along the last axis depends on r only (both operands of a GEMM use the
    same r, hence the same order, which is all the GEMM needs): one 1-D gather per
    column (`columns` = table transposed, contiguous) concatenated as (term, k) for
    r <= 4, where that is ~2x faster than `embedding` (torch.stack on the last axis is
    several times slower still); `embedding`'s (k, term) order above.
    """
    r = table.shape[1]
    if r > 4:
        return torch.nn.functional.embedding(codes, table).flatten(-2)
    flat = codes.reshape(-1)
    cols = [torch.index_select(columns[t], 0, flat).view(codes.shape) for t in range(r)]
    return cols[0] if r == 1 else torch.cat(cols, dim=-1)


def lowrank_batched(A, B, plan, out_dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Both operands batched (attention): one batched float GEMM over the exact integer
    terms, ``C = sum_t u_t(A) @ v_t(B)`` with the K*r mapped operands stacked. Exact: every
    partial sum is an integer of magnitude at most K * sum_t max|u_t| max|v_t|, kept below
    2^24 (float32) or 2^53 (float64, K chunked beyond). The result is int64, or the
    float GEMM's own result when that is `out_dtype` (the same integers, unconverted)."""
    K = A.shape[-1]
    bound = plan.term_bound
    if K * bound < 2**24 and torch.get_float32_matmul_precision() == "highest":
        dtype, kc = torch.float32, K
    else:
        dtype, kc = torch.float64, max(1, min(K, (2**53 - 1) // bound))
    U, V, Ut, Vt = plan.term_tables[dtype]
    Bt = B.transpose(-1, -2)
    out = None
    for k0 in range(0, K, kc):
        a, b = (A, Bt) if kc == K else (A[..., k0:k0 + kc], Bt[..., k0:k0 + kc])
        F = _rows(U, Ut, a)                                      # (..., M, kc*r)
        G = _rows(V, Vt, b)                                      # (..., N, kc*r)
        part = torch.matmul(F, G.transpose(-1, -2))
        if kc == K and dtype == out_dtype:
            return part
        part = part.to(torch.int64)
        out = part if out is None else out.add_(part)
    return out


def terms_matmul(ca, cb, batch, plan, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Engine ``terms`` (picked by `auto` only): the batched float GEMM over the terms,
    for any batch shape; (*batch, M, N) int64, or `dtype` where the GEMM ran in it."""
    out = lowrank_batched(ca, cb, plan, dtype)
    want = (*batch, ca.shape[-2], cb.shape[-1])
    return out if out.shape == want else out.expand(*want).contiguous()


def rank1_matmul(a, b, batch, plan, codes: bool = False) -> torch.Tensor | None:
    """Engine ``terms`` of a rank-1 table (``lut = outer(u, v)``: DRUM, for one) straight
    from the operand values: ``u(a) @ v(b)``, one float32 GEMM whose operands the native
    kernel maps from the values in one pass each (checking them). Exact: every partial
    sum is an integer below ``K * max|u| max|v| < 2^24``. None where it does not apply
    (another rank, a wider bound, no kernels, an operand layout or value the kernel does
    not take: the caller then runs the checked path, which names a bad value). With
    `codes`, `a` and `b` hold codes (0..2^w-1) rather than values (the tuner's timing)."""
    from .. import _native

    if plan.terms is None or len(plan.terms) != 1 or \
            a.shape[-1] * plan.term_bound >= 2**24 or \
            torch.get_float32_matmul_precision() != "highest":
        return None
    if not (_native.dense(a) and _native.dense(b)):
        return None
    U, V, _, _ = plan.term_tables[torch.float32]
    table = plan.table
    a_range = (0, (1 << table.wa) - 1) if codes else table.a_range
    b_range = (0, (1 << table.wb) - 1) if codes else table.b_range
    # into reused workspaces (fresh megabytes cost page faults), in the operands' layout
    F = _native.codes(a, *a_range, table.wa, U.view(-1), _native.empty_like(
        a, torch.float32, functools.partial(cache.workspace, "rank1-a")))
    if F is None or F is False:
        return None
    G = _native.codes(b, *b_range, table.wb, V.view(-1), _native.empty_like(
        b, torch.float32, functools.partial(cache.workspace, "rank1-b")))
    if G is None or G is False:
        return None
    out = torch.matmul(F, G)
    want = (*batch, a.shape[-2], b.shape[-1])
    return out if out.shape == want else out.expand(*want).contiguous()

"""Engine ``bag``: tables without low-rank structure, through ``embedding_bag``."""

from __future__ import annotations

import torch

from .operands import split_batch

#: elements of the embedding-bag engine's gathered block (fits in L2)
BAG_BLOCK_ELEMENTS = 1 << 19


def bag_matmul(ca, cb, batch, plan) -> torch.Tensor:
    """(..., M, K) x (..., K, N) codes -> (*batch, M, N) int64."""
    kind, A, B = split_batch(ca, cb, batch)
    lut = plan.lut_float
    if kind in ("a", "b"):
        if kind == "b":  # a has no batch: fold b's batch into its columns
            K = A.shape[1]
            Bf = B.movedim(-2, 0).reshape(K, -1)             # (K, bb*N)
            out = bag_2d(A, Bf, lut, plan.max_abs)           # (M, bb*N)
            out = out.reshape(A.shape[0], *cb.shape[:-2], cb.shape[-1]).movedim(0, -2)
            return out.expand(*batch, *out.shape[-2:]).contiguous()
        out = bag_2d(A, B, lut, plan.max_abs)
        return out.reshape(*ca.shape[:-2], ca.shape[-2], cb.shape[-1]).expand(
            *batch, ca.shape[-2], cb.shape[-1]).contiguous()
    flat_a = A.reshape(-1, *A.shape[-2:])
    flat_b = B.reshape(-1, *B.shape[-2:])
    out = torch.stack([bag_2d(x, y, lut, plan.max_abs) for x, y in zip(flat_a, flat_b)])
    return out.reshape(*batch, A.shape[-2], B.shape[-1])


def bag_2d(A, B, lut, max_abs) -> torch.Tensor:
    """(P, K) x (K, Q) codes -> (P, Q) int64 via embedding_bag over per-k table rows.

    For a block of k, ``W[(c, k), i] = lut[A[i, k], c]`` is gathered (rows of length P)
    and ``embedding_bag`` sums, for every output column q, the K rows ``(B[k, q], k)``.
    The smaller of P and Q is the gathered side (build cost K * 2^w * min(P, Q), bag
    cost P * K * Q). Blocks of k are small enough for W to stay in cache and for every
    float partial sum to stay below 2^24 (float32; 2^53 for a float64 table): exact.
    """
    P, K = A.shape
    Q = B.shape[1]
    if Q < P:  # gather from b's side: C^T = B^T (x) A^T with lut^T
        return bag_2d(B.t(), A.t(), lut.t().contiguous(), max_abs).t()
    lut_t = lut.t().contiguous()                         # lut_t[c, a] = lut[a, c]
    nb = lut_t.shape[0]
    bits = 24 if lut.dtype == torch.float32 else 53
    pc = max(1, min(P, BAG_BLOCK_ELEMENTS // (nb * 4)))
    kk = max(1, min(K, BAG_BLOCK_ELEMENTS // (nb * pc), (2**bits - 1) // max(1, max_abs)))
    buf = torch.empty(nb * kk * pc, dtype=lut.dtype)
    out = torch.zeros(Q, P, dtype=torch.float64)         # exact below 2^53
    ks = torch.arange(kk)
    for p0 in range(0, P, pc):
        a_t = A[p0:p0 + pc].t().contiguous()             # (K, p)
        p = a_t.shape[1]
        acc = out[:, p0:p0 + p]
        for k0 in range(0, K, kk):
            kb = min(kk, K - k0)
            w = buf[:nb * kb * p].view(nb, kb * p)
            torch.index_select(lut_t, 1, a_t[k0:k0 + kb].reshape(-1), out=w)
            idx = B[k0:k0 + kb].t() * kb + ks[:kb]         # (Q, kb): row c*kb + k
            acc += torch.nn.functional.embedding_bag(idx, w.view(nb * kb, p), mode="sum")
    return out.t().to(torch.int64)

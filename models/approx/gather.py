"""Engine ``gather``: the plain table gather (the reference, and the cheapest engine for
tiny GEMMs)."""

from __future__ import annotations

import math

import torch

#: index elements per block of the plain gather engine
GATHER_BLOCK_ELEMENTS = 1 << 16


def gather_matmul(ca, cb, batch, plan) -> torch.Tensor:
    """Plain table gather, ``lut[a_code, b_code]`` for every (m, k, n), summed over k;
    blocked over rows so the index block stays in cache. M*K*N lookups."""
    nb = plan.lut.shape[1]
    M, K, N = ca.shape[-2], ca.shape[-1], cb.shape[-1]
    # float32 lookups summed in float32 when every partial sum stays below 2^24 (exact;
    # ~15 % faster than int32 lookups summed into int64)
    lut = (plan.lut_float.view(-1) if plan.lut_float.dtype == torch.float32 and
           K * plan.max_abs < 2**24 else plan.lut_gather)
    if math.prod(batch) * M * K * N <= GATHER_BLOCK_ELEMENTS:   # tiny: one shot
        idx = (ca * nb).unsqueeze(-1) + cb.unsqueeze(-3)
        out = torch.take(plan.lut, idx).sum(-2)          # take: no advanced-indexing cost
        return out if out.shape == (*batch, M, N) else \
            out.expand(*batch, M, N).contiguous()
    if math.prod(cb.shape[:-2]) == 1:           # b unbatched: one GEMM over a's rows
        A = ca.reshape(1, -1, ca.shape[-1]).to(torch.int32)
        B = cb.reshape(1, *cb.shape[-2:]).to(torch.int32)
        out = gather_blocks(A, B, lut, nb)
        return out.reshape(*ca.shape[:-1], cb.shape[-1]).expand(
            *batch, ca.shape[-2], cb.shape[-1]).contiguous()
    A = ca.expand(*batch, *ca.shape[-2:]).reshape(-1, *ca.shape[-2:]).to(torch.int32)
    B = cb.expand(*batch, *cb.shape[-2:]).reshape(-1, *cb.shape[-2:]).to(torch.int32)
    return gather_blocks(A, B, lut, nb).reshape(*batch, A.shape[-2], B.shape[-1])


def gather_blocks(A, B, lut, nb) -> torch.Tensor:
    """(G, M, K) x (G, K, N) int32 codes -> (G, M, N) int64 by blocked lookups."""
    G, M, K = A.shape
    N = B.shape[-1]
    acc = torch.float32 if lut.dtype == torch.float32 else torch.int64
    out = torch.empty(G, M, N, dtype=acc)
    A = A * nb
    mc = max(1, min(M, GATHER_BLOCK_ELEMENTS // max(1, K * N)))
    gc = max(1, GATHER_BLOCK_ELEMENTS // max(1, M * K * N)) if mc == M else 1
    for g0 in range(0, G, gc):                 # several small matrices per block
        for m0 in range(0, M, mc):
            idx = A[g0:g0 + gc, m0:m0 + mc, :, None] + B[g0:g0 + gc, None, :, :]
            vals = torch.index_select(lut, 0, idx.reshape(-1)).view(idx.shape)
            torch.sum(vals, dim=2, dtype=acc, out=out[g0:g0 + gc, m0:m0 + mc])
    return out.to(torch.int64)

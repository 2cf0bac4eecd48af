"""The cost model: estimated nanoseconds of every engine for a GEMM shape.

Constants fitted to scripts/bench_emulation.py runs (docs/emulation.md). `approx.tuner`
uses the estimates to pick an engine, or to choose which engines to time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _native
from . import bag

if TYPE_CHECKING:
    from .plan import Plan


def estimate(plan: Plan, ga: int, gb: int, M: int, K: int, N: int) -> dict[str, float]:
    """Rough cost (ns, one core) of each engine for (ga, M, K) @ (gb, K, N) operands.

    int8 GEMM ~0.005 ns per multiply-accumulate and digit, digit gathers ~0.2 ns per
    element, embedding-bag rows ~0.5 ns per gathered element and ~0.1 ns per summed one,
    plain gather ~1.3 ns per lookup, small batched float GEMMs ~0.13 ns per MAC and term
    (0.035 from 64 rows/columns up), plus fixed per-call overheads. The native engines
    appear when the kernels are available (`native_costs`).
    """
    G = max(ga, gb)
    macs = G * M * K * N
    codes = max(plan.lut.shape)
    block = bag.BAG_BLOCK_ELEMENTS

    def bag_cost(P, Q):                  # one 2-D embedding-bag GEMM, its block loop
        side = min(P, Q)
        pc = max(1, min(side, block // (codes * 4)))
        kk = max(1, min(K, block // (codes * pc)))
        calls = -(-side // pc) * -(-K // kk)
        return 40e3 + 10e3 * calls + 0.5 * K * side * codes + 0.1 * P * Q * K

    costs = {"gather": 30e3 + 1.3 * macs}
    if _native.available():
        costs.update(native_costs(plan, ga, gb, M, K, N))
    if ga == 1 or gb == 1:                                 # one 2-D GEMM
        P, Q = (ga * M, N) if gb == 1 else (M, gb * N)
        costs["bag"] = bag_cost(P, Q)
        if plan.int8 is not None:
            W = plan.width
            costs["lowrank"] = 45e3 + 0.0054 * P * Q * K * W + 0.2 * (P + Q) * K * W
    else:                                                  # batched on both sides
        costs["bag"] = G * bag_cost(M, N)
        if plan.int8 is not None:
            costs["lowrank"] = min(batched_costs(plan, G, M, K, N))
    return costs


def native_costs(plan: Plan, ga: int, gb: int, M: int, K: int, N: int) -> dict[str, float]:
    """Estimated ns of the native kernels: per operand element (check, code, digits:
    ~1 ns plus ~0.1 ns per digit), per output (~0.3 ns), per int8 multiply-accumulate
    (VNNI, ~0.0025 ns) and per lookup of the gather (~0.12 ns on the table's byte planes
    with AVX512-VBMI, ~0.45 ns in the plain loop)."""
    G = max(ga, gb)
    rows = G * M
    passes = 1 if gb == 1 else G          # b's digits are packed once per batch of b
    n_pad = -(-N // 8) * 8
    lookup = 0.12 if _native.library().axsa_approx_simd() == 2 and N >= 8 else 0.45
    costs = {"native-gather": 3e3 + lookup * rows * K * N +
             1.0 * (rows * K + passes * K * N)}
    if plan.int8 is not None:
        W = plan.width
        k_pad = -(-K * W // 4) * 4
        costs["native"] = (3e3 + (1.0 + 0.1 * W) * rows * K +
                           passes * (1.0 + 0.15 * W) * K * N + 0.3 * rows * N +
                           0.0025 * rows * k_pad * n_pad)
    return costs


def batched_costs(plan: Plan, G: int, M: int, K: int, N: int) -> tuple[float, float]:
    """Estimated ns of the two batched low-rank variants: one batched float GEMM over
    the integer terms, or a loop of int8 GEMMs (better for few, large matrices)."""
    r = len(plan.terms)
    W = plan.width
    per_mac = 0.13 if min(M, N) < 64 else 0.035
    terms = 45e3 + per_mac * G * M * K * N * r + 0.2 * G * (M + N) * K * r
    loop = G * (45e3 + 0.0054 * M * N * K * W + 0.2 * (M + N) * K * W)
    return terms, loop

"""The systolic array on its own: values, output timing, bubbles, back-to-back tiles."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from axsa.rtl.array import SystolicArray
from axsa.rtl.multipliers import parse_spec
from axsa.sim.reference import reference_gemm


def run_array(mult, R, C, tiles, schedule, mode=0):
    """Drive `tiles` ((A (R,K), B (K,C)) pairs); schedule[t] = cycles each step of tile t
    is presented at (cycle numbers from 0). Returns {cycle: (first, last, row)} of the
    output rows (the `out` stream) and the cycle of each tile's last step."""
    dut = SystolicArray(mult, R, C, acc_width=24)
    steps = {}
    lasts = []
    for (A, B), cycles in zip(tiles, schedule):
        K = A.shape[1]
        assert len(cycles) == K
        for k, cyc in enumerate(cycles):
            steps[cyc] = (A[:, k], B[k, :], k == 0, k == K - 1)
        lasts.append(cycles[-1])
    end = max(steps) + C + R + 4
    seen = {}

    async def bench(ctx):
        if mult.modes > 1:
            ctx.set(dut.mode, mode)
        for cyc in range(end):
            if cyc in steps:
                a, b, first, last = steps[cyc]
                ctx.set(dut.step.payload, {"a": [int(x) for x in a], "b": [int(x) for x in b],
                                           "first": int(first), "last": int(last)})
            ctx.set(dut.step.valid, int(cyc in steps))
            if ctx.get(dut.out.valid):
                out = ctx.get(dut.out.payload)
                seen[cyc] = (out.first, out.last, list(out.row))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen, lasts


def random_tile(mult, R, K, C, rng):
    lo, hi = mult.fmt.a_range()
    A = rng.integers(lo, hi + 1, (R, K))
    lo, hi = mult.fmt.b_range()
    B = rng.integers(lo, hi + 1, (K, C))
    return A, B


@pytest.mark.parametrize("spec, R, C, mode", [
    ("exact@s4", 2, 3, 0), ("drum(k=3)@u8", 3, 2, 0), ("cfgtrunc(k=0/5)@s8", 2, 2, 1),
    ("mitchell@s8x4", 1, 3, 0),
])
def test_tiles_back_to_back_with_bubbles(spec, R, C, mode):
    mult = parse_spec(spec)
    rng = np.random.default_rng(7)
    gap = max(R, C)
    tiles = [random_tile(mult, R, K, C, rng) for K in (5, 1, 4)]
    # tile 0: steps with a bubble; tile 1 (K=1): its last step exactly `gap` after tile 0's;
    # tile 2: starts right after tile 1
    t0 = [0, 1, 3, 4, 5]
    t1 = [5 + gap]
    t2 = [6 + gap, 7 + gap, 8 + gap, 9 + 2 * gap]
    seen, lasts = run_array(mult, R, C, tiles, [t0, t1, t2], mode)
    table = mult.model_table(mode)
    rows_seen = 0
    for (A, B), last in zip(tiles, lasts):
        expect = reference_gemm(A, B, table, mult.fmt)
        for r in range(R):
            # row r is presented C + 2 + r cycles after the last step (the docstring's
            # latency), flagged first / last
            first, lastf, row = seen[last + C + 2 + r]
            assert row == expect[r].tolist()
            assert (first, lastf) == (int(r == 0), int(r == R - 1))
            rows_seen += 1
    assert rows_seen == len(seen) == 3 * R


def test_extreme_operands_exact_s8():
    mult = parse_spec("exact@s8")
    R, C, K = 2, 2, 6
    A = np.full((R, K), -128)
    B = np.full((K, C), -128)
    seen, lasts = run_array(mult, R, C, [(A, B)], [list(range(K))])
    assert seen[lasts[0] + C + 2][2] == [6 * 16384] * C


def test_rejects_bad_dimensions():
    mult = parse_spec("exact@s4")
    with pytest.raises(ValueError, match="rows"):
        SystolicArray(mult, 0, 4)
    with pytest.raises(ValueError, match="cols"):
        SystolicArray(mult, 4, "4")

"""The Amaranth RTL itself (pysim) agrees with the product table read off the netlist:
RTL, netlist and model agree. Every family also gets a short random check."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from axsa.rtl.multipliers import FAMILIES, parse_spec
from axsa.synth.netlist import product_table


def simulate(mult, a, b, mode=0):
    dut = mult.elaboratable()
    out = []

    async def testbench(ctx):
        if mult.modes > 1:
            ctx.set(dut.mode, mode)
        for x, y in zip(a.tolist(), b.tolist()):
            ctx.set(dut.a, x)
            ctx.set(dut.b, y)
            out.append(ctx.get(dut.p))

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    return np.array(out)


def operands(mult, n, seed):
    rng = np.random.default_rng(seed)
    (alo, ahi), (blo, bhi) = mult.fmt.a_range(), mult.fmt.b_range()
    a = rng.integers(alo, ahi + 1, n)
    b = rng.integers(blo, bhi + 1, n)
    corners_a = [alo, alo, ahi, ahi, 0, alo]
    corners_b = [blo, bhi, blo, bhi, blo, 0]
    return np.concatenate([corners_a, a]), np.concatenate([corners_b, b])


@pytest.mark.parametrize("spec", ["exact@s8", "drum(k=4)@s8", "mitchell(t=2)@u8",
                                  "trunc(k=5,comp=1)@s8"])
def test_rtl_netlist_and_model_agree(spec):
    mult = parse_spec(spec)
    a, b = operands(mult, 3000, seed=7)
    got = simulate(mult, a, b)
    table = product_table(mult)
    from_table = table[a & ((1 << mult.fmt.a_width) - 1), b & ((1 << mult.fmt.b_width) - 1)]
    assert np.array_equal(got, from_table)
    assert np.array_equal(got, mult.model(a, b))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_rtl_matches_model(family):
    spec = {"trunc": "trunc(k=6)", "drum": "drum(k=3)", "ssm": "ssm(m=4)",
            "perf": "perf(i=1,j=2)", "bam": "bam(h=1,v=4)"}.get(family, family)
    mult = parse_spec(f"{spec}@s8x6")
    a, b = operands(mult, 300, seed=3)
    for mode in range(mult.modes):
        assert np.array_equal(simulate(mult, a, b, mode), mult.model(a, b, mode)), mode

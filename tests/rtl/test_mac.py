"""The MAC unit and the PE: accumulator width bound, and cycle behaviour against numpy."""

import numpy as np
import pytest
from amaranth.hdl import Module, signed, unsigned
from amaranth.sim import Simulator
from axsa.rtl.mac import Mac, Pe, acc_width_for
from axsa.rtl.multipliers import parse_spec


@pytest.mark.parametrize("spec, k, width", [
    # exact s8: products -16256..16384; 16384 needs 15 magnitude bits + sign
    ("exact@s8", 1, 16),
    # 4 * 16384 = 65536 -> 17 bits + sign; 4 * -16256 = -65024 fits in 18 too
    ("exact@s8", 4, 18),
    # u8: 255*255 = 65025, times 4 = 260100 < 2^18 -> 18 bits + sign
    ("exact@u8", 4, 19),
    # u2: max 9, times 1000 = 9000 < 2^14 -> 14 + 1
    ("exact@u2", 1000, 15),
    # s2: -2..1 squared: products -2..4; 3 * 4 = 12 -> 4 bits + sign
    ("exact@s2", 3, 5),
])
def test_acc_width_for_exact(spec, k, width):
    assert acc_width_for(parse_spec(spec), k) == width


def test_acc_width_covers_every_mode():
    # cfgtrunc's truncated modes never exceed the exact range, so the width is exact's
    mult = parse_spec("cfgtrunc(k=0/4)@s8")
    assert acc_width_for(mult, 100) == acc_width_for(parse_spec("exact@s8"), 100)


def test_acc_width_rejects_bad_reduction():
    with pytest.raises(ValueError, match="max_reduction"):
        acc_width_for(parse_spec("exact@s8"), 0)


def run_mac(mult, acc_width, a, b, clr, en, mode=0, view="circuit"):
    dut = Mac(mult, acc_width, view=view)
    seen = []

    async def bench(ctx):
        if mult.modes > 1:
            ctx.set(dut.mode, mode)
        for i in range(len(a)):
            ctx.set(dut.a, int(a[i]))
            ctx.set(dut.b, int(b[i]))
            ctx.set(dut.clr, int(clr[i]))
            ctx.set(dut.en, int(en[i]))
            if view == "table" and not mult.is_exact:  # the product a table would give
                ctx.set(dut.p_in, int(mult.model(a[i], b[i], mode)))
            await ctx.tick()
            seen.append(ctx.get(dut.acc))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(seen)


@pytest.mark.parametrize("spec, mode", [
    ("exact@s8", 0), ("drum(k=3)@u8", 0), ("mitchell@s4", 0), ("cfgtrunc(k=0/6)@s8", 1),
    ("trunc(k=3,comp=1)@u2", 0),
])
def test_mac_accumulates_the_model_products(spec, mode):
    mult = parse_spec(spec)
    rng = np.random.default_rng(1)
    n = 60
    lo, hi = mult.fmt.a_range()
    a = rng.integers(lo, hi + 1, n)
    lo, hi = mult.fmt.b_range()
    b = rng.integers(lo, hi + 1, n)
    clr = rng.random(n) < 0.2
    en = rng.random(n) < 0.8
    # independent reference: walk the sequence in plain Python
    expect, acc = [], 0
    for i in range(n):
        if en[i]:
            acc = (0 if clr[i] else acc) + int(mult.model(a[i], b[i], mode))
        expect.append(acc)
    width = acc_width_for(mult, n)
    got = run_mac(mult, width, a, b, clr, en, mode)
    assert got.tolist() == expect


def test_mac_extreme_operands_do_not_overflow():
    # 20 products of (-128)*(-128) = 327,680: needs exactly acc_width_for's width
    mult = parse_spec("exact@s8")
    n = 20
    got = run_mac(mult, acc_width_for(mult, n), [-128] * n, [-128] * n, [1] + [0] * (n - 1),
                  [1] * n)
    assert got[-1] == 20 * 16384


def test_pe_forwards_and_parks_the_result():
    mult = parse_spec("exact@s4")
    dut = Pe(mult, 12)
    # one tile of 3 steps then a second tile of 2, back to back
    steps = [(1, 2, 1, 0), (3, -4, 0, 0), (-8, -8, 0, 1), (7, 7, 1, 0), (2, 5, 0, 1)]
    trace = []

    async def bench(ctx):
        for a, b, first, last in steps + [(0, 0, 0, 0)] * 3:
            valid = int((a, b) != (0, 0))
            ctx.set(dut.a_in, a)
            ctx.set(dut.b_in, b)
            ctx.set(dut.valid_in, valid)
            ctx.set(dut.first_in, first)
            ctx.set(dut.last_in, last)
            await ctx.tick()
            trace.append((ctx.get(dut.a_out), ctx.get(dut.b_out), ctx.get(dut.last_out),
                          ctx.get(dut.result)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert [t[:2] for t in trace[:5]] == [(a, b) for a, b, _, _ in steps]
    assert [t[2] for t in trace[:5]] == [0, 0, 1, 0, 1]
    # tile 1: 2 - 12 + 64 = 54, parked with its last product (visible after that edge)
    assert [t[3] for t in trace[:2]] == [0, 0] and trace[2][3] == 54
    # tile 2: 49 + 10 = 59, while tile 1's result stayed until then
    assert trace[3][3] == 54 and trace[4][3] == 59 and trace[5][3] == 59


def test_views_give_the_same_products():
    # "table": a*b for exact multipliers; a non-exact one takes its product from `p_in`
    exact = parse_spec("exact@s4")
    with pytest.raises(ValueError, match="view must be one of circuit, table, cell"):
        Mac(exact, 8, view="fast")
    with pytest.raises(ValueError, match="acc_width must be an integer 2..64, not 1"):
        Mac(exact, 1)
    a, b = [-8, 7, -8, 3], [-8, -8, 7, 5]
    ones, zeros = [1] * 4, [1, 0, 0, 0]
    assert run_mac(exact, 8, a, b, zeros, ones, view="table").tolist() == [64, 8, -48, -33]
    assert run_mac(exact, 8, a, b, zeros, ones).tolist() == [64, 8, -48, -33]


def test_rejected_construction_leaves_no_unused_elaboratable(recwarn):
    # the arguments are checked before the component exists: nothing is left behind.
    # (Amaranth warns about unused elaboratables once anything has been elaborated.)
    import gc
    run_mac(parse_spec("exact@s2"), 4, [1], [1], [1], [1])
    for _ in range(3):
        with pytest.raises(ValueError):
            Pe(parse_spec("exact@s4"), 0)
    gc.collect()
    assert not [w for w in recwarn if "never used" in str(w.message)]


@pytest.mark.parametrize("spec", ["exact@s4", "exact@u4", "exact@s3x5", "mitchell@s4"])
def test_table_view_equals_the_circuit_for_every_operand_pair(spec):
    # the table view sums products as acc_width-bit words (`as_word`); exhaustively, with
    # an accumulator that wraps (acc_width 7) and one that does not (the default bound)
    mult = parse_spec(spec)
    a, b = np.meshgrid(mult.fmt.a_values(), mult.fmt.b_values(), indexing="ij")
    a, b = a.ravel(), b.ravel()
    n = len(a)
    clr = np.arange(n) % 5 == 0
    en = np.arange(n) % 7 != 3
    for width in (7, acc_width_for(mult, 5)):
        circuit = run_mac(mult, width, a, b, clr, en)
        assert run_mac(mult, width, a, b, clr, en, view="table").tolist() == circuit.tolist()
        # independently: wrap the running sum of the model's products to `width` bits
        acc, expect = 0, []
        for i in range(n):
            if en[i]:
                acc = (0 if clr[i] else acc) + int(mult.model(a[i], b[i]))
                acc = (acc + (1 << (width - 1))) % (1 << width) - (1 << (width - 1))
            expect.append(acc)
        assert circuit.tolist() == expect


@pytest.mark.parametrize("width, shape, values", [
    (12, signed(8), [-128, -1, 0, 1, 127]),
    (8, signed(8), [-128, -1, 0, 127]),
    (5, signed(8), [-128, -17, -1, 0, 15, 127]),
    (12, unsigned(8), [0, 1, 200, 255]),
])
def test_as_word_is_the_value_mod_2_to_the_width(width, shape, values):
    from amaranth.hdl import Signal
    from amaranth.sim import Simulator
    from axsa.rtl.mac import as_word

    x = Signal(shape)
    word = as_word(x, width)
    got = []

    async def bench(ctx):
        for v in values:
            ctx.set(x, v)
            got.append(ctx.get(word))

    sim = Simulator(Module())
    sim.add_testbench(bench)
    sim.run()
    assert got == [v % (1 << width) for v in values]

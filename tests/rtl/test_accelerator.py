"""The accelerator: streams under random stalls and back-pressure, requantization,
mode register, parameter checks. (Engine-level GEMM checks live in tests/sim.)"""

import numpy as np
import pytest
from amaranth.sim import Simulator
from axsa.rtl.accelerator import Accelerator
from axsa.rtl.multipliers import parse_spec
from axsa.sim.driver import Requant, run_gemm
from axsa.sim.engine import unpack_fields
from axsa.sim.pysim_engine import PysimEngine
from axsa.sim.reference import reference_gemm, requantize
from streams import feeder, get_all, put, random_idle


def test_random_stalls_and_backpressure_lose_nothing():
    # Feeds that go quiet at random and a result consumer that is often not ready:
    # every tile must still come out complete, in order, and exact.
    mult = parse_spec("exact@s4")
    R, C, K = 2, 3, 3
    dut = Accelerator(mult, R, C, max_k=16)
    T = 2 * dut.max_tiles + 1  # more tiles than credits
    rng = np.random.default_rng(3)
    A = rng.integers(-8, 8, (T, R, K))
    B = rng.integers(-8, 8, (T, K, C))
    a_beats = [[int(v) for v in A[t][:, k]] for t in range(T) for k in range(K)]
    b_beats = [[int(v) for v in B[t][k, :]] for t in range(T) for k in range(K)]
    commands = []
    rows = []
    accepted_while_blocked = []

    async def commands_in(ctx):
        for _ in range(T):
            await put(ctx, dut.cmd, {"k_minus_1": K - 1})
            commands.append(1)
            for _ in range(random_idle(rng, 0.4)()):
                await ctx.tick()

    async def results_out(ctx):
        for _ in range(300):  # consumer blocked so far: commands stop at the credit limit
            await ctx.tick()
        accepted_while_blocked.append(len(commands))
        await get_all(ctx, dut.result, T * R, idle=random_idle(rng, 0.7), into=rows)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(commands_in)
    sim.add_testbench(feeder(dut.a, a_beats, idle=random_idle(rng, 0.3)))
    sim.add_testbench(feeder(dut.b, b_beats, idle=random_idle(rng, 0.3)))
    sim.add_testbench(results_out)
    sim.run()
    assert accepted_while_blocked == [dut.max_tiles]
    expect = [row for t in range(T) for row in (A[t] @ B[t]).tolist()]
    assert [list(r) for r in rows] == expect


def test_requantization_is_bit_exact_per_column():
    mult = parse_spec("exact@s8")
    rng = np.random.default_rng(5)
    A = rng.integers(-128, 128, (5, 9))
    B = rng.integers(-128, 128, (9, 7))
    acc = A @ B
    # per-column multipliers and shifts spanning the range, negative m included
    m = [1, 2**31 - 1, -(2**31), 12345, -7, 3, 1 << 20]
    s = [1, 62, 40, 16, 2, 9, 31]
    eng = PysimEngine(Accelerator(mult, 2, 3, max_k=16))
    for bits, signed in ((8, True), (4, False), (20, True)):
        rq = Requant(m, s, bits=bits, signed=signed)
        res = run_gemm(A, B, mult, engine=eng, requant=rq)
        expect = requantize(acc, m, s, bits, signed)
        assert np.array_equal(res.C, expect)
    # hand-checked corner: acc * m exactly halfway rounds up, negative halfway too
    lo, hi = -(1 << 7), (1 << 7) - 1
    assert requantize(np.array([3, -3, 1000, -1000]), 1, 1, 8, True).tolist() == \
        [2, -1, hi, lo]


def test_mode_register_selects_the_mode():
    mult = parse_spec("cfgtrunc(k=0/6)@u4")
    rng = np.random.default_rng(2)
    A = rng.integers(0, 16, (3, 5))
    B = rng.integers(0, 16, (5, 4))
    eng = PysimEngine(Accelerator(mult, 2, 2, max_k=8))
    for mode in (1, 0, 1):
        res = run_gemm(A, B, mult, engine=eng, mode=mode)
        assert np.array_equal(res.C, reference_gemm(A, B, mult.model_table(mode), mult.fmt))
    # mode 1 differs from exact for this data (else the test would prove nothing)
    assert not np.array_equal(reference_gemm(A, B, mult.model_table(1), mult.fmt), A @ B)


def test_result_width_and_layout():
    mult = parse_spec("exact@u8")
    acc = Accelerator(mult, 2, 4, max_k=100)
    # 100 * 255 * 255 = 6,502,500 < 2^23: 23 bits + sign
    assert acc.acc_width == 24
    assert len(acc.result.payload.as_value()) == 4 * 24
    words = np.array([[0xFFFFFF, 0, 0]], dtype=np.uint32)  # element 0 = -1
    assert unpack_fields(words, 4, 24, signed=True).tolist() == [[-1, 0, 0, 0]]
    # the widest sum the design is sized for comes out whole
    res = run_gemm(np.full((2, 100), 255), np.full((100, 4), 255), mult,
                   engine=PysimEngine(acc))
    assert res.C.tolist() == [[6_502_500] * 4] * 2


@pytest.mark.parametrize("kwargs, needle", [
    ({"rows": 0, "cols": 2}, "rows"), ({"rows": 2, "cols": 300}, "cols"),
    ({"rows": 2, "cols": 2, "max_k": 0}, "max_k"),
    ({"rows": 2, "cols": 2, "acc_width": 1}, "acc_width"),
    ({"rows": 2, "cols": 2, "buffer_depth": 1}, "buffer_depth"),
])
def test_bad_parameters_are_named(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Accelerator(parse_spec("exact@s4"), **kwargs)

"""The accelerator's components on their own: `Requantizer` and `TileController` against
plain-Python references, `Queue` latency and order."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from axsa.rtl.controller import TileController
from axsa.rtl.multipliers import parse_spec
from axsa.rtl.queue import Queue
from axsa.rtl.requantizer import Requantizer
from streams import feeder, get_all, put, random_idle

# -- requantizer -----------------------------------------------------------------------------


def requant_by_hand(acc: int, m: int, s: int, bits: int, signed: bool, en: bool) -> int:
    """DESIGN.md's clamp((acc * m + 2^(s-1)) >> s) in Python integers (floor shift)."""
    if not en:
        return acc
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return min(max((acc * m + (1 << (s - 1))) >> s, lo), hi)


def run_requantizer(W, C, tiles):
    """tiles: [(params dict, rows (list of C-element lists))]; returns the output rows and
    the cycle offset of each output row from its input row."""
    dut = Requantizer(W, C)
    got, latencies, row_cycles = [], [], []

    async def drive(ctx):
        cycle = 0
        for params, rows in tiles:
            # the parameters are taken the cycle before the tile's first row
            ctx.set(dut.params.payload, params)
            ctx.set(dut.params.valid, 1)
            ctx.set(dut.next_tile, 1)
            assert ctx.get(dut.params.ready) == 1
            await ctx.tick()
            cycle += 1
            ctx.set(dut.params.valid, 0)
            ctx.set(dut.next_tile, 0)
            for r, row in enumerate(rows):
                ctx.set(dut.rows.payload, {"row": row, "first": int(r == 0),
                                           "last": int(r == len(rows) - 1)})
                ctx.set(dut.rows.valid, 1)
                row_cycles.append(cycle)
                await ctx.tick()
                cycle += 1
            ctx.set(dut.rows.valid, 0)
            for _ in range(3):  # idle cycles between tiles
                await ctx.tick()
                cycle += 1

    async def collect(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(got) < sum(len(rows) for _, rows in tiles):
            if ctx.get(dut.o.valid):
                got.append(list(ctx.get(dut.o.payload)))
                latencies.append(cycle - row_cycles[len(got) - 1])
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_testbench(collect)
    sim.run()
    return got, latencies


def test_requantizer_corner_cases_and_random():
    W, C = 24, 4
    lo_acc, hi_acc = -(1 << (W - 1)), (1 << (W - 1)) - 1
    corner_rows = [
        [3, -3, 1, -1],               # m=1, s=1: ties round up (2, -1), 0.5 -> 1, -0.5 -> 0
        [5, -5, 7, -7],               # more ties: 3, -2, 4, -3
        [hi_acc, lo_acc, 0, -2],      # accumulator extremes clamp at both ends
    ]
    tiles = [
        ({"en": 1, "signed": 1, "bits": 8, "m": [1] * C, "s": [1] * C}, corner_rows),
        # unsigned (min 0: negatives clamp to 0), big m, large and small shifts
        ({"en": 1, "signed": 0, "bits": 4, "m": [2**31 - 1, -(2**31), 12345, 3],
          "s": [62, 40, 16, 1]}, corner_rows),
        # disabled: the accumulators pass through unchanged
        ({"en": 0, "signed": 1, "bits": 8, "m": [7] * C, "s": [3] * C}, corner_rows),
    ]
    rng = np.random.default_rng(11)
    for _ in range(6):
        signed = int(rng.integers(0, 2))
        params = {"en": 1, "signed": signed, "bits": int(rng.integers(1, W + signed)),
                  "m": [int(v) for v in rng.integers(-(2**31), 2**31, C)],
                  "s": [int(v) for v in rng.integers(1, 63, C)]}
        rows = [[int(v) for v in rng.integers(lo_acc, hi_acc + 1, C)] for _ in range(3)]
        tiles.append((params, rows))
    got, latencies = run_requantizer(W, C, tiles)
    expect = [[requant_by_hand(acc, p["m"][c], p["s"][c], p["bits"], bool(p["signed"]),
                               bool(p["en"])) for c, acc in enumerate(row)]
              for p, rows in tiles for row in rows]
    assert got == expect
    assert latencies == [2] * len(expect)  # two pipeline stages
    # the hand-worked values, so the reference itself is pinned
    assert got[0] == [2, -1, 1, 0] and got[1] == [3, -2, 4, -3]
    assert got[2] == [127, -128, 0, -1]
    assert got[5][0] == 0 and got[5][1] == 15  # unsigned: negatives to 0, top at 2^4 - 1
    assert got[6:9] == corner_rows


# -- tile controller -------------------------------------------------------------------------


def expected_steps(ks, gap):
    """Cycles of every step for commands with reductions `ks`, operands always valid and
    the first command taken at edge 0: tile i's steps are consecutive from F_i, its last
    at L_i = max(F_i + K_i - 1, L_{i-1} + gap), and the next tile starts at L_i + 1."""
    cycles, first, prev_last = [], 1, None
    for k in ks:
        last = first + k - 1 if prev_last is None else max(first + k - 1, prev_last + gap)
        cycles += list(range(first, first + k - 1)) + [last]
        prev_last, first = last, last + 1
    return cycles


def run_controller(ks, R, C, max_tiles, a_idle=None, rows_out_at=(), cycles=200):
    mult = parse_spec("exact@s4")
    gap = max(R, C)
    dut = TileController(mult, R, C, max_k=16, min_tile_gap=gap, max_tiles=max_tiles)
    n = sum(ks)
    rng = np.random.default_rng(4)
    a_beats = [[int(v) for v in rng.integers(-8, 8, R)] for _ in range(n)]
    b_beats = [[int(v) for v in rng.integers(-8, 8, C)] for _ in range(n)]
    steps, params, taken = [], [], []

    async def commands(ctx):  # (may still wait for credits when the run ends)
        for i, k in enumerate(ks):
            await put(ctx, dut.cmd, {"k_minus_1": k - 1,
                                     "rq": {"en": 1, "bits": i + 1, "m": [i] * C}})
            taken.append(i)

    async def watch(ctx):
        for cycle in range(cycles):
            ctx.set(dut.row_out, int(cycle in rows_out_at))
            if ctx.get(dut.step.valid):
                s = ctx.get(dut.step.payload)
                steps.append((cycle, list(s.a), list(s.b), s.first, s.last))
            if ctx.get(dut.params.valid):
                p = ctx.get(dut.params.payload)
                params.append((cycle, p.bits, list(p.m)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(commands, background=True)
    sim.add_testbench(feeder(dut.a, a_beats, idle=a_idle), background=True)
    sim.add_testbench(feeder(dut.b, b_beats), background=True)
    sim.add_testbench(watch)
    sim.run()  # ends with `watch`; a command refused for want of credits still waits
    return steps, params, a_beats, b_beats


@pytest.mark.parametrize("R, C, ks", [(2, 3, [5, 1, 4, 3, 3]), (4, 4, [1, 1, 2, 6]),
                                      (1, 1, [1, 1, 2]), (3, 2, [3, 3, 3])])
def test_controller_schedule_against_reference(R, C, ks):
    steps, params, a_beats, b_beats = run_controller(ks, R, C, max_tiles=len(ks))
    gap = max(R, C)
    assert [s[0] for s in steps] == expected_steps(ks, gap)
    assert [s[1] for s in steps] == a_beats and [s[2] for s in steps] == b_beats
    firsts = np.cumsum([0] + ks[:-1])
    lasts = np.cumsum(ks) - 1
    assert [i for i, s in enumerate(steps) if s[3]] == firsts.tolist()
    assert [i for i, s in enumerate(steps) if s[4]] == lasts.tolist()
    # one params beat per command, in order, in the cycle the command is taken: at
    # edge 0, then in the cycle of the previous tile's last step
    assert [(b, m) for _, b, m in params] == [(i + 1, [i] * C) for i in range(len(ks))]
    assert [c for c, _, _ in params] == [0] + [steps[i][0] for i in lasts[:-1]]


def test_controller_keeps_order_under_operand_stalls():
    ks = [4, 2, 5]
    rng = np.random.default_rng(9)
    steps, _, a_beats, b_beats = run_controller(ks, 2, 2, max_tiles=3,
                                                a_idle=random_idle(rng, 0.5))
    assert [s[1] for s in steps] == a_beats and [s[2] for s in steps] == b_beats
    lasts = [s[0] for s in steps if s[4]]
    assert all(b - a >= 2 for a, b in zip(lasts, lasts[1:]))  # the gap rule holds


def test_controller_credits():
    # max_tiles = 2 and no result rows leave: the third command waits; R = 2 rows out
    # (the first tile done) lets it in
    R, C = 2, 2
    ks = [3, 3, 3]
    steps, params, _, _ = run_controller(ks, R, C, max_tiles=2, cycles=60)
    assert len(params) == 2 and len(steps) == 6
    steps, params, _, _ = run_controller(ks, R, C, max_tiles=2, rows_out_at=(30, 31),
                                         cycles=60)
    assert len(params) == 3 and params[2][0] == 32 and len(steps) == 9


# -- queue -----------------------------------------------------------------------------------

def test_queue_latency_order_and_backpressure():
    from amaranth.lib import data
    layout = data.StructLayout({"x": 5, "y": data.ArrayLayout(3, 2)})
    dut = Queue(layout, 3)
    beats = [{"x": i, "y": [i % 8, (3 * i) % 8]} for i in range(12)]
    first_offered = []
    got = []

    async def watch(ctx):
        for cycle in range(20):
            if ctx.get(dut.o.valid) and not first_offered:
                first_offered.append(cycle)
            await ctx.tick()

    async def consume(ctx):
        for _ in range(8):  # not ready at first: the queue fills up and stalls its input
            await ctx.tick()
        await get_all(ctx, dut.o, len(beats), into=got)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feeder(dut.i, beats))
    sim.add_testbench(consume)
    sim.add_testbench(watch)
    sim.run()
    assert first_offered == [2]  # taken at edge 0, offered two edges later
    assert [(g.x, list(g.y)) for g in got] == [(b["x"], b["y"]) for b in beats]

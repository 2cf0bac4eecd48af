"""The engine API on the pysim engine: payload words, stream timing, state, VCD, bad input.

The compiled engines (CXXRTL, Verilator) run the same designs in test_compiled.py and
must agree to the cycle.
"""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from axsa.rtl.multipliers import parse_spec
from axsa.sim.engine import (
    SimulationTimeout,
    ints_to_words,
    make_engine,
    pack_fields,
    plain_ports,
    stream_ports,
    unpack_fields,
    words_to_ints,
)
from axsa.sim.pysim_engine import PysimEngine
from stream_designs import (
    LFSR_INIT,
    StreamMac,
    StreamMultiplier,
    pair_payloads,
    products,
    stream_mac_cycles,
    stream_mac_items,
    vcd_changes,
)

from axsa.errors import InputError, ToolError

# -- payload words -------------------------------------------------------------------------


@pytest.mark.parametrize("width, signed", [(1, False), (2, True), (4, True), (7, False),
                                           (8, True), (8, False), (13, True), (32, True)])
def test_pack_unpack_round_trip(width, signed):
    rng = np.random.default_rng(width)
    lo, hi = (-(1 << (width - 1)), 1 << (width - 1)) if signed else (0, 1 << width)
    values = rng.integers(lo, hi, size=(50, 11))
    values[0] = lo
    values[1] = hi - 1
    words = pack_fields(values, width, signed=signed)
    assert words.dtype == np.uint32 and words.shape == (50, (11 * width + 31) // 32)
    assert np.array_equal(unpack_fields(words, 11, width, signed=signed), values)


def test_pack_layout_is_lsb_first():
    # fields 3 bits wide: -1 -> 0b111 at bit 0, 2 -> 0b010 at bit 3, -4 -> 0b100 at bit 6
    words = pack_fields([[-1, 2, -4]], 3, signed=True)
    assert words.tolist() == [[0b100_010_111]]
    # a 12-bit field straddling a word boundary: bits 30..41
    vals = np.zeros((1, 4), np.int64)
    vals[0, 3] = 0xABC  # offset 36 with width 12 -> word 1, bits 4..15
    vals[0, 2] = 0xFFF  # offset 24: bits 24..35 -> 0xFF in word 0 top, 0xF in word 1 low
    words = pack_fields(vals, 12, signed=False)
    assert words.tolist() == [[0xFF000000, 0x0000ABCF]]
    assert words_to_ints(words) == [0xABCFFF000000]
    assert ints_to_words([0xABCFFF000000], 48).tolist() == [[0xFF000000, 0xABCF]]
    assert ints_to_words([-1], 40).tolist() == [[0xFFFFFFFF, 0xFF]]


def test_pack_rejects_out_of_range():
    with pytest.raises(InputError, match=r"value 8 \(row 1, field 0\).*signed 4-bit"):
        pack_fields([[0, 1], [8, 0]], 4, signed=True)
    with pytest.raises(InputError, match=r"value -1 .*unsigned 4-bit"):
        pack_fields([[-1]], 4, signed=False)
    with pytest.raises(InputError, match="width 33"):
        pack_fields([[0]], 33, signed=False)


# -- stream timing, state and inputs ---------------------------------------------------------

def mac_job(rng, groups, width=8):
    sizes = rng.integers(1, 6, size=groups)
    n = int(sizes.sum())
    lo, hi = -(1 << (width - 1)), 1 << (width - 1)
    a, b = rng.integers(lo, hi, n), rng.integers(lo, hi, n)
    a[:3] = lo  # extreme operands: (-128)^2 sums
    b[:3] = lo
    last = np.zeros(n, np.int64)
    last[np.cumsum(sizes) - 1] = 1
    group = np.repeat(np.arange(groups), sizes)
    sums = np.bincount(group, weights=a * b, minlength=groups).astype(np.int64)
    return stream_mac_items(a, b, last), sums


def run_mac_twice(engine, rng):
    """Two runs back to back on one engine: (sums, cycles) of each, plus expected ones."""
    got, want = [], []
    for groups, bias in ((7, -5), (4, 300)):
        items, sums = mac_job(rng, groups)
        out, cycles = engine.run_streams(feeds={"i": items}, drains={"o": groups},
                                         inputs={"bias": bias}, max_cycles=1000)
        got.append((unpack_fields(out["o"], 1, 32, signed=True)[:, 0], cycles))
        want.append((sums + bias, len(items)))
    return got, want


def check_mac_runs(got, want, stall=True):
    lfsr = LFSR_INIT
    for (sums, cycles), (want_sums, n_items) in zip(got, want):
        assert np.array_equal(sums, want_sums)
        want_cycles, lfsr = stream_mac_cycles(n_items, lfsr, stall)
        assert cycles == want_cycles


@pytest.mark.parametrize("stall", [False, True])
def test_pysim_stream_mac_sums_and_cycles(stall):
    engine = PysimEngine(StreamMac(stall=stall))
    got, want = run_mac_twice(engine, np.random.default_rng(1))
    check_mac_runs(got, want, stall)
    assert engine.read("count") == 11
    assert engine.cycle == got[0][1] + got[1][1]
    assert engine.accepted == {"i": want[1][1]}
    if not stall:  # no stalls: one item per cycle, plus the registered output
        assert [c for _, c in got] == [n + 1 for _, n in want]


def test_pysim_reset_returns_to_initial_state():
    engine = PysimEngine(StreamMac())
    rng = np.random.default_rng(2)
    first, _ = run_mac_twice(engine, rng)
    engine.reset()
    assert engine.cycle == 0 and engine.read("count") == 0
    again, want = run_mac_twice(engine, rng)
    check_mac_runs(again, want)  # the LFSR restarted from its init value


def test_feed_only_run_stops_at_last_accepted_item():
    engine = PysimEngine(StreamMac(stall=False))
    items = stream_mac_items([1, 2, 3], [4, 5, 6], [0, 0, 0])  # no `last`: no output
    out, cycles = engine.run_streams(feeds={"i": items})
    assert out == {} and cycles == 3 and engine.accepted == {"i": 3}
    # the open group continues in the next run: 4 + 10 + 18 + 7 * 1
    out, cycles = engine.run_streams(feeds={"i": stream_mac_items([7], [1], [1])},
                                     drains={"o": 1}, inputs={"bias": 0})
    assert unpack_fields(out["o"], 1, 32, signed=True).tolist() == [[39]] and cycles == 2


@pytest.mark.parametrize("spec", ["drum(k=3)@s6", "booth@u4", "bam(h=1,v=3)@s4x2"])
def test_pysim_multiplier_matches_model_table(spec):
    mult = parse_spec(spec)
    rng = np.random.default_rng(3)
    a = rng.integers(0, 1 << mult.fmt.a_width, 150)
    b = rng.integers(0, 1 << mult.fmt.b_width, 150)
    engine = PysimEngine(StreamMultiplier(mult))
    out, cycles = engine.run_streams(feeds={"i": pair_payloads(mult, a, b)},
                                     drains={"o": 150})
    assert np.array_equal(products(mult, out["o"]), mult.model_table()[a, b])
    assert cycles == 151


def test_pysim_vcd_parses_back(tmp_path):
    path = tmp_path / "mac.vcd"
    with PysimEngine(StreamMac(stall=False), vcd=path) as engine:
        items = stream_mac_items([3, -2], [5, 7], [0, 1])
        out, cycles = engine.run_streams(feeds={"i": items}, drains={"o": 1},
                                         inputs={"bias": 1})
    assert cycles == 3
    ids, changes = vcd_changes(path)
    assert {"clk", "o__payload", "o__valid", "i__ready"} <= set(ids)
    rising = [t for t, i, v in changes if i == ids["clk"] and v == "1"]
    assert len(rising) == 3  # one rising edge per counted cycle
    payload = [v for t, i, v in changes if i == ids["o__payload"]]
    assert 3 * 5 - 2 * 7 + 1 in payload


# -- ports and bad input -------------------------------------------------------------------

class Nested(wiring.Component):
    """Streams inside a sub-interface, to check dotted names and directions."""

    def __init__(self):
        bus = wiring.Signature({"rd": Out(stream.Signature(8)), "wr": In(stream.Signature(8)),
                                "sel": Out(2)})
        super().__init__({"bus": In(bus), "go": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.bus.rd.ready.eq(1)]
        reg = Signal(8)
        with m.If(self.bus.rd.valid):
            m.d.sync += reg.eq(self.bus.rd.payload)
        m.d.comb += [self.bus.wr.payload.eq(reg), self.bus.wr.valid.eq(self.go)]
        return m


def test_port_discovery_follows_flips():
    dut = Nested()
    s = stream_ports(dut)
    # the flipped `bus` makes `rd` an input (feed) and `wr` an output (drain)
    assert (s["bus.rd"].is_feed, s["bus.wr"].is_feed) == (True, False)
    assert s["bus.rd"].rtl_name == "bus__rd" and s["bus.rd"].width == 8
    p = plain_ports(dut)
    assert (p["bus.sel"].is_input, p["go"].is_input) == (True, True)
    engine = PysimEngine(dut)
    out, cycles = engine.run_streams(feeds={"bus.rd": [0xAB]}, drains={"bus.wr": 2},
                                     inputs={"go": 1})
    assert out["bus.wr"].tolist() == [[0], [0xAB]] and cycles == 2


@pytest.fixture(scope="module")
def mac_engine():
    return PysimEngine(StreamMac())


@pytest.mark.parametrize("kwargs, needle", [
    ({"feeds": {"x": [1]}, "drains": {"o": 1}}, "unknown feed port 'x'"),
    ({"feeds": {"o": [1]}}, "feed port 'o' is an output stream"),
    ({"drains": {"i": 1}}, "drain port 'i' is an input stream"),
    ({"drains": {"q": 1}}, r"unknown drain port 'q'.*\['o'\]"),
    ({"drains": {"o": -1}}, "drain 'o': item count"),
    ({"feeds": {"i": [1, 1 << 17]}}, r"feed 'i' item 1: value 131072 does not fit the "
                                     "17-bit payload"),
    ({"feeds": {"i": np.array([5, -70000])}}, r"feed 'i' item 1: value -70000"),
    ({"feeds": {"i": np.array([[1 << 17]], np.uint32)}}, r"feed 'i' item 0: payload wider "
                                                          "than 17 bits"),
    ({"feeds": {"i": np.zeros((2, 2), np.uint32)}}, "takes 1 words per item, got 2"),
    ({"feeds": {"i": np.zeros((2, 1), np.int64)}}, "must be uint32"),
    ({"feeds": {"i": "abc"}}, "expected payload words"),
    ({"drains": {"o": 1}, "inputs": {"biass": 1}}, r"unknown input port 'biass'"),
    ({"drains": {"o": 1}, "inputs": {"count": 1}}, r"unknown input port 'count'"),
    ({"drains": {"o": 1}, "inputs": {"bias": 40000}}, r"input 'bias': value 40000.*signed\(16\)"),
    ({"drains": {"o": 1}, "max_cycles": 0}, "max_cycles"),
    ({}, "at least one feed or drain"),
])
def test_bad_input_names_the_bad_value(mac_engine, kwargs, needle):
    with pytest.raises(InputError, match=needle):
        mac_engine.run_streams(**kwargs)


def test_timeout_is_a_tool_error_naming_the_missing_items():
    engine = PysimEngine(StreamMac())
    items = stream_mac_items([1, 2], [3, 4], [0, 1])
    with pytest.raises(SimulationTimeout, match=r"max_cycles=20.*\{'o': 1\} of \{'o': 2\}"):
        engine.run_streams(feeds={"i": items}, drains={"o": 2}, max_cycles=20)
    assert isinstance(SimulationTimeout("x"), ToolError)
    # the engine is still usable after a timeout
    out, _ = engine.run_streams(feeds={"i": items}, drains={"o": 1}, inputs={"bias": 0})
    assert unpack_fields(out["o"], 1, 32, signed=True).tolist() == [[11]]


def test_make_engine_rejects_unknown_engine():
    with pytest.raises(InputError, match="unknown engine 'icarus' .known: pysim, cxxrtl, "
                                         "verilator"):
        make_engine("icarus", None)
    assert isinstance(make_engine("pysim", StreamMac()), PysimEngine)


def test_pysim_refuses_multiplier_cells():
    # a design in the cell view needs a compiled engine to fill its cells
    mult = parse_spec("drum(k=3)@s6")
    with pytest.raises(InputError, match=r"pysim cannot simulate the multiplier cell "
                                         r"'axsamuls6p\d+s' .*circuit or table view"):
        PysimEngine(StreamMultiplier(mult, "cell"))

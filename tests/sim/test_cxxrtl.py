"""The compiled CXXRTL engine: same outputs and cycle counts as pysim, multipliers against
their product tables (exhaustive at 8 bits), imported Verilog, the compile cache, VCD.

Compiles are shared through module-scoped fixtures (each small design compiles once, a
few seconds of g++); the session's cache directory starts empty (tests/conftest.py).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from axsa.rtl.multipliers import parse_spec
from axsa.sim.cxxrtl import CxxrtlEngine, cache_dir
from axsa.sim.engine import SimulationTimeout, unpack_fields, words_to_ints
from axsa.sim.pysim_engine import PysimEngine
from stream_designs import (
    StreamMac,
    StreamMultiplier,
    imported_lsb0,
    pair_payloads,
    products,
    stream_mac_items,
    vcd_changes,
)
from test_engines import check_mac_runs, run_mac_twice

from axsa.errors import InputError, ToolError


@pytest.fixture(scope="module")
def mac_cxxrtl():
    return CxxrtlEngine(StreamMac())


def test_stream_mac_matches_model_and_pysim(mac_cxxrtl):
    mac_cxxrtl.reset()
    got_c, want = run_mac_twice(mac_cxxrtl, np.random.default_rng(1))
    check_mac_runs(got_c, want)
    got_p, _ = run_mac_twice(PysimEngine(StreamMac()), np.random.default_rng(1))
    for (sums_c, cyc_c), (sums_p, cyc_p) in zip(got_c, got_p):
        assert np.array_equal(sums_c, sums_p) and cyc_c == cyc_p
    assert mac_cxxrtl.read("count") == 11
    assert mac_cxxrtl.cycle == got_c[0][1] + got_c[1][1]


def test_reset_returns_to_initial_state(mac_cxxrtl):
    rng = np.random.default_rng(2)
    mac_cxxrtl.reset()
    run_mac_twice(mac_cxxrtl, rng)
    assert mac_cxxrtl.read("count") == 11
    mac_cxxrtl.reset()
    assert mac_cxxrtl.cycle == 0 and mac_cxxrtl.read("count") == 0
    again, want = run_mac_twice(mac_cxxrtl, rng)
    check_mac_runs(again, want)


def test_timeout_then_usable(mac_cxxrtl):
    mac_cxxrtl.reset()
    items = stream_mac_items([1, 2], [3, 4], [0, 1])
    with pytest.raises(SimulationTimeout, match=r"cxxrtl: .*max_cycles=20.*\{'o': 1\} of"):
        mac_cxxrtl.run_streams(feeds={"i": items}, drains={"o": 2}, max_cycles=20)
    out, _ = mac_cxxrtl.run_streams(feeds={"i": items}, drains={"o": 1}, inputs={"bias": 0})
    assert unpack_fields(out["o"], 1, 32, signed=True).tolist() == [[11]]


@pytest.mark.parametrize("kwargs, needle", [
    ({"feeds": {"x": [1]}, "drains": {"o": 1}}, "unknown feed port 'x'"),
    ({"feeds": {"i": [1 << 17]}}, "value 131072 does not fit the 17-bit payload"),
    ({"drains": {"o": 1}, "inputs": {"nope": 1}}, "unknown input port 'nope'"),
])
def test_bad_input(mac_cxxrtl, kwargs, needle):
    with pytest.raises(InputError, match=needle):
        mac_cxxrtl.run_streams(**kwargs)


def test_cache_hit_reuses_the_library(mac_cxxrtl):
    lib = mac_cxxrtl.library
    assert lib.is_file() and lib.parent.parent == cache_dir()
    stat = lib.stat()
    again = CxxrtlEngine(StreamMac())
    assert again.cache_hit and again.library == lib
    assert (lib.stat().st_ino, lib.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    # a different design (no stalls) is a different library
    other = CxxrtlEngine(StreamMac(stall=False))
    assert other.library != lib
    # the cache serves a fresh process too (the hash does not depend on the process)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from stream_designs import StreamMac;"
            "from axsa.sim.cxxrtl import CxxrtlEngine; e = CxxrtlEngine(StreamMac());"
            "print(e.cache_hit, e.library)")
    out = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", str(lib)]


def test_vcd_parses_back(tmp_path):
    path = tmp_path / "mac.vcd"
    with CxxrtlEngine(StreamMac(stall=False), vcd=path) as engine:
        items = stream_mac_items([3, -2], [5, 7], [0, 1])
        _, cycles = engine.run_streams(feeds={"i": items}, drains={"o": 1},
                                       inputs={"bias": 1})
    assert cycles == 3
    ids, changes = vcd_changes(path)
    assert {"clk", "o__payload", "o__valid", "i__ready"} <= set(ids)
    rising = [t for t, i, v in changes if i == ids["clk"] and v == "1"]
    assert rising == [10, 20, 30]  # 10 ns period, one rising edge per counted cycle
    assert 3 * 5 - 2 * 7 + 1 in [v for _, i, v in changes if i == ids["o__payload"]]


class Wide(wiring.Component):
    """100-bit payloads: out = in rotated left by 33 bits (crosses every chunk boundary)."""

    i: In(stream.Signature(100))
    o: Out(stream.Signature(100))
    key: In(70)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid),
                         self.o.payload.eq(self.i.payload.rotate_left(33) ^ self.key)]
        return m


def test_wide_payloads_on_both_engines():
    rng = np.random.default_rng(5)
    values = [int(x) for x in rng.integers(0, 1 << 62, 40)]
    values = [(v << 38) | (v >> 20) for v in values] + [(1 << 100) - 1, 0, 1 << 99]
    key = (1 << 70) - 12345
    mask = (1 << 100) - 1
    want = [(((v << 33) | (v >> 67)) & mask) ^ key for v in values]
    for engine in (PysimEngine(Wide()), CxxrtlEngine(Wide())):
        out, cycles = engine.run_streams(feeds={"i": values}, drains={"o": len(values)},
                                         inputs={"key": key})
        assert out["o"].shape == (len(values), 4)
        assert words_to_ints(out["o"]) == want and cycles == len(values) + 1
        assert engine.read("key") == key


# -- multipliers against their tables --------------------------------------------------------

def every_pair(mult):
    a, b = np.meshgrid(np.arange(1 << mult.fmt.a_width), np.arange(1 << mult.fmt.b_width),
                       indexing="ij")
    return a.ravel(), b.ravel()


@pytest.mark.parametrize("spec", ["drum(k=4)@s8", "booth@u8"])
def test_multiplier_rtl_exhaustive(spec):
    # the multiplier's own gate-level RTL, compiled, against its table, every pair
    mult = parse_spec(spec)
    a, b = every_pair(mult)
    engine = CxxrtlEngine(StreamMultiplier(mult, "cell"), cells="circuit")
    out, cycles = engine.run_streams(feeds={"i": pair_payloads(mult, a, b)},
                                     drains={"o": len(a)}, max_cycles=10**6)
    assert np.array_equal(products(mult, out["o"]), mult.model_table()[a, b])
    assert cycles == 65537


def test_configurable_multiplier_every_mode_rtl_and_table():
    mult = parse_spec("cfgtrunc(k=0/2/4/6)@s8")
    a, b = every_pair(mult)
    engines = [CxxrtlEngine(StreamMultiplier(mult, "cell"), cells=kind)
               for kind in ("circuit", "table")]
    tables = []
    for mode in range(mult.modes):
        got = [products(mult, e.run_streams(feeds={"i": pair_payloads(mult, a, b)},
                                            drains={"o": len(a)},
                                            inputs={"mode": mode})[0]["o"])
               for e in engines]
        assert np.array_equal(got[0], mult.model_table(mode)[a, b])
        assert np.array_equal(got[1], got[0])
        tables.append(got[0])
    assert np.array_equal(tables[0], (mult.fmt.a_values()[a] * mult.fmt.b_values()[b]))
    assert not np.array_equal(tables[0], tables[3])  # the modes really differ


def test_table_mode_substitutes_and_shares_the_library():
    # same operand and product shapes, different circuits: one compiled library
    drum, trunc = parse_spec("drum(k=4)@s8"), parse_spec("trunc(k=4)@s8")
    assert drum.p_shape == trunc.p_shape and not np.array_equal(drum.model_table(),
                                                                trunc.model_table())
    e_drum = CxxrtlEngine(StreamMultiplier(drum, "cell"))
    e_trunc = CxxrtlEngine(StreamMultiplier(trunc, "cell"))
    assert e_trunc.library == e_drum.library and e_trunc.cache_hit
    il = (e_drum.library.parent / "design.il").read_text()
    assert "cell \\axsamuls8p16s " in il and "$and" not in il  # no partial-product gates
    a, b = every_pair(drum)
    for mult, engine in ((drum, e_drum), (trunc, e_trunc)):
        out, _ = engine.run_streams(feeds={"i": pair_payloads(mult, a, b)},
                                    drains={"o": len(a)})
        assert np.array_equal(products(mult, out["o"]), mult.model_table()[a, b])
    circuit = CxxrtlEngine(StreamMultiplier(drum, "cell"), cells="circuit")
    assert circuit.library != e_drum.library
    # a design that does not list the cells it instantiates is refused
    undeclared = StreamMultiplier(drum, "cell")
    undeclared.cells = ()
    with pytest.raises(InputError, match=r"cells \['axsamuls8p16s'\] that its `cells`"):
        CxxrtlEngine(undeclared)


@pytest.mark.parametrize("spec", ["mitchell(t=2)@s6x4", "exact@s2"])
def test_multiplier_random_pairs_pysim_and_rtl(spec):
    mult = parse_spec(spec)
    rng = np.random.default_rng(6)
    a = rng.integers(0, 1 << mult.fmt.a_width, 300)
    b = rng.integers(0, 1 << mult.fmt.b_width, 300)
    feeds = {"i": pair_payloads(mult, a, b)}
    results = [e.run_streams(feeds=feeds, drains={"o": 300})
               for e in (PysimEngine(StreamMultiplier(mult)),
                         CxxrtlEngine(StreamMultiplier(mult, "cell"), cells="circuit"))]
    (out_p, cyc_p), (out_c, cyc_c) = results
    assert np.array_equal(out_p["o"], out_c["o"]) and cyc_p == cyc_c == 301
    assert np.array_equal(products(mult, out_c["o"]), mult.model_table()[a, b])


def test_imported_verilog_multiplier(tmp_path):
    mult, table = imported_lsb0(tmp_path)  # u4 product with its lowest bit cleared
    a, b = every_pair(mult)
    # the Verilog itself (circuit), and its table (no Verilog needed)
    for kw in ({"cells": "circuit", "verilog_sources": mult.verilog_sources}, {}):
        engine = CxxrtlEngine(StreamMultiplier(mult, "cell"), **kw)
        out, _ = engine.run_streams(feeds={"i": pair_payloads(mult, a, b)},
                                    drains={"o": 256})
        assert np.array_equal(products(mult, out["o"]), table[a, b])
    # pysim would leave the instance's output at 0: refused instead
    with pytest.raises(InputError, match="pysim cannot simulate the Verilog instance 'lsb0'"):
        PysimEngine(StreamMultiplier(mult))
    with pytest.raises(InputError, match="nosuch.v"):
        CxxrtlEngine(StreamMultiplier(mult), verilog_sources=[tmp_path / "nosuch.v"])
    with pytest.raises(InputError, match="cells='gates'"):
        CxxrtlEngine(engine.component, cells="gates")


def test_missing_compiler_is_a_tool_error(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(ToolError, match="/nonexistent/g\\+\\+"):
        CxxrtlEngine(StreamMac(width=5))

"""The compiled engines, CXXRTL and Verilator, every test on both: same outputs and cycle
counts as pysim, multipliers against their product tables (exhaustive at 8 bits),
imported Verilog, the compile cache, VCD.

Compiles are shared through module-scoped fixtures and the compile cache (each small
design compiles once per engine, a few seconds); the session's cache directory starts
empty (tests/conftest.py).
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
from axsa.sim.engine import SimulationTimeout, engine_class, unpack_fields, words_to_ints
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

COMPILED = ["cxxrtl", "verilator"]


@pytest.fixture(scope="module", params=COMPILED)
def Compiled(request):
    """The engine class under test (every test here runs on each compiled engine)."""
    return engine_class(request.param)


@pytest.fixture(scope="module")
def mac_compiled(Compiled):
    return Compiled(StreamMac())


def test_stream_mac_matches_model_and_pysim(mac_compiled):
    mac_compiled.reset()
    got_c, want = run_mac_twice(mac_compiled, np.random.default_rng(1))
    check_mac_runs(got_c, want)
    got_p, _ = run_mac_twice(PysimEngine(StreamMac()), np.random.default_rng(1))
    for (sums_c, cyc_c), (sums_p, cyc_p) in zip(got_c, got_p):
        assert np.array_equal(sums_c, sums_p) and cyc_c == cyc_p
    assert mac_compiled.read("count") == 11
    assert mac_compiled.cycle == got_c[0][1] + got_c[1][1]


def test_reset_returns_to_initial_state(mac_compiled):
    rng = np.random.default_rng(2)
    mac_compiled.reset()
    run_mac_twice(mac_compiled, rng)
    assert mac_compiled.read("count") == 11
    mac_compiled.reset()
    assert mac_compiled.cycle == 0 and mac_compiled.read("count") == 0
    again, want = run_mac_twice(mac_compiled, rng)
    check_mac_runs(again, want)


def test_timeout_then_usable(mac_compiled):
    mac_compiled.reset()
    items = stream_mac_items([1, 2], [3, 4], [0, 1])
    with pytest.raises(SimulationTimeout,
                       match=rf"{mac_compiled.name}: .*max_cycles=20.*\{{'o': 1\}} of"):
        mac_compiled.run_streams(feeds={"i": items}, drains={"o": 2}, max_cycles=20)
    out, _ = mac_compiled.run_streams(feeds={"i": items}, drains={"o": 1}, inputs={"bias": 0})
    assert unpack_fields(out["o"], 1, 32, signed=True).tolist() == [[11]]


@pytest.mark.parametrize("kwargs, needle", [
    ({"feeds": {"x": [1]}, "drains": {"o": 1}}, "unknown feed port 'x'"),
    ({"feeds": {"i": [1 << 17]}}, "value 131072 does not fit the 17-bit payload"),
    ({"drains": {"o": 1}, "inputs": {"nope": 1}}, "unknown input port 'nope'"),
])
def test_bad_input(mac_compiled, kwargs, needle):
    with pytest.raises(InputError, match=needle):
        mac_compiled.run_streams(**kwargs)


def test_cache_hit_reuses_the_library(Compiled, mac_compiled):
    import importlib
    lib = mac_compiled.library
    assert lib.is_file() and lib.parent.parent == importlib.import_module(
        Compiled.__module__).cache_dir()
    stat = lib.stat()
    again = Compiled(StreamMac())
    assert again.cache_hit and again.library == lib
    assert (lib.stat().st_ino, lib.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    # a different design (no stalls) is a different library
    other = Compiled(StreamMac(stall=False))
    assert other.library != lib
    # the cache serves a fresh process too (the hash does not depend on the process)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from stream_designs import StreamMac;"
            "from axsa.sim.engine import make_engine; e = make_engine(sys.argv[2], "
            "StreamMac()); print(e.cache_hit, e.library)")
    out = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__),
                          Compiled.name],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", str(lib)]


def test_the_shared_stream_loop_is_in_the_cache_key(Compiled, mac_compiled, tmp_path,
                                                    monkeypatch):
    # both harnesses include sim/stream_run.h: a change to it is a new library
    from axsa.sim import harness
    changed = tmp_path / harness.STREAM_RUN.name
    changed.write_text(harness.STREAM_RUN.read_text() + "// changed\n")
    monkeypatch.setattr(harness, "STREAM_RUN", changed)
    other = Compiled(StreamMac())
    assert not other.cache_hit and other.library != mac_compiled.library
    got, want = run_mac_twice(other, np.random.default_rng(4))
    check_mac_runs(got, want)


def test_vcd_parses_back(Compiled, tmp_path):
    path = tmp_path / "mac.vcd"
    with Compiled(StreamMac(stall=False), vcd=path) as engine:
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


def test_wide_payloads_on_both_engines(Compiled):
    rng = np.random.default_rng(5)
    values = [int(x) for x in rng.integers(0, 1 << 62, 40)]
    values = [(v << 38) | (v >> 20) for v in values] + [(1 << 100) - 1, 0, 1 << 99]
    key = (1 << 70) - 12345
    mask = (1 << 100) - 1
    want = [(((v << 33) | (v >> 67)) & mask) ^ key for v in values]
    for engine in (PysimEngine(Wide()), Compiled(Wide())):
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
def test_multiplier_rtl_exhaustive(Compiled, spec):
    # the multiplier's own gate-level RTL, compiled, against its table, every pair
    mult = parse_spec(spec)
    a, b = every_pair(mult)
    engine = Compiled(StreamMultiplier(mult, "cell"), cells="circuit")
    out, cycles = engine.run_streams(feeds={"i": pair_payloads(mult, a, b)},
                                     drains={"o": len(a)}, max_cycles=10**6)
    assert np.array_equal(products(mult, out["o"]), mult.model_table()[a, b])
    assert cycles == 65537


def test_configurable_multiplier_every_mode_rtl_and_table(Compiled):
    mult = parse_spec("cfgtrunc(k=0/2/4/6)@s8")
    a, b = every_pair(mult)
    engines = [Compiled(StreamMultiplier(mult, "cell"), cells=kind)
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


def test_table_mode_substitutes_and_shares_the_library(Compiled):
    # same operand and product shapes, different circuits: one compiled library
    drum, trunc = parse_spec("drum(k=4)@s8"), parse_spec("trunc(k=4)@s8")
    assert drum.p_shape == trunc.p_shape and not np.array_equal(drum.model_table(),
                                                                trunc.model_table())
    e_drum = Compiled(StreamMultiplier(drum, "cell"))
    e_trunc = Compiled(StreamMultiplier(trunc, "cell"))
    assert e_trunc.library == e_drum.library and e_trunc.cache_hit
    if Compiled.name == "cxxrtl":
        il = (e_drum.library.parent / "design.il").read_text()
        assert "cell \\axsamuls8p16s " in il and "$and" not in il  # no partial products
    else:  # the cell's body is one DPI-C lookup, no gates
        v = (e_drum.library.parent / "design.v").read_text()
        body = v[v.index("module axsamuls8p16s("):]
        assert 'import "DPI-C" pure function int axsa_lookup_axsamuls8p16s' in body
        assert "&" not in body[:body.index("endmodule")]
    a, b = every_pair(drum)
    for mult, engine in ((drum, e_drum), (trunc, e_trunc)):
        out, _ = engine.run_streams(feeds={"i": pair_payloads(mult, a, b)},
                                    drains={"o": len(a)})
        assert np.array_equal(products(mult, out["o"]), mult.model_table()[a, b])
    circuit = Compiled(StreamMultiplier(drum, "cell"), cells="circuit")
    assert circuit.library != e_drum.library
    # a design that does not list the cells it instantiates is refused
    undeclared = StreamMultiplier(drum, "cell")
    undeclared.cells = ()
    with pytest.raises(InputError, match=r"cells \['axsamuls8p16s'\] that its `cells`"):
        Compiled(undeclared)


@pytest.mark.parametrize("spec", ["mitchell(t=2)@s6x4", "exact@s2"])
def test_multiplier_random_pairs_pysim_and_rtl(Compiled, spec):
    mult = parse_spec(spec)
    rng = np.random.default_rng(6)
    a = rng.integers(0, 1 << mult.fmt.a_width, 300)
    b = rng.integers(0, 1 << mult.fmt.b_width, 300)
    feeds = {"i": pair_payloads(mult, a, b)}
    results = [e.run_streams(feeds=feeds, drains={"o": 300})
               for e in (PysimEngine(StreamMultiplier(mult)),
                         Compiled(StreamMultiplier(mult, "cell"), cells="circuit"))]
    (out_p, cyc_p), (out_c, cyc_c) = results
    assert np.array_equal(out_p["o"], out_c["o"]) and cyc_p == cyc_c == 301
    assert np.array_equal(products(mult, out_c["o"]), mult.model_table()[a, b])


def test_imported_verilog_multiplier(Compiled, tmp_path):
    mult, table = imported_lsb0(tmp_path)  # u4 product with its lowest bit cleared
    a, b = every_pair(mult)
    # the Verilog itself (circuit), and its table (no Verilog needed)
    for kw in ({"cells": "circuit", "verilog_sources": mult.verilog_sources}, {}):
        engine = Compiled(StreamMultiplier(mult, "cell"), **kw)
        out, _ = engine.run_streams(feeds={"i": pair_payloads(mult, a, b)},
                                    drains={"o": 256})
        assert np.array_equal(products(mult, out["o"]), table[a, b])
    # pysim would leave the instance's output at 0: refused instead
    with pytest.raises(InputError, match="pysim cannot simulate the Verilog instance 'lsb0'"):
        PysimEngine(StreamMultiplier(mult))
    with pytest.raises(InputError, match="nosuch.v"):
        Compiled(StreamMultiplier(mult), verilog_sources=[tmp_path / "nosuch.v"])
    with pytest.raises(InputError, match="cells='gates'"):
        Compiled(engine.component, cells="gates")


def test_missing_compiler_is_a_tool_error(Compiled, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(ToolError, match="/nonexistent/g\\+\\+"):
        Compiled(StreamMac(width=5))


def test_missing_verilator_is_a_tool_error_naming_the_setup(monkeypatch):
    # what a machine without the `verilator` package sees (import blocked in this test)
    monkeypatch.setitem(sys.modules, "verilator", None)
    from axsa.sim.verilator import VerilatorEngine
    with pytest.raises(ToolError, match="Verilator is not installed: run scripts/setup"):
        VerilatorEngine(StreamMac(width=6))

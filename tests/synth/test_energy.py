"""The activity-based energy model: known answers, streams, the MAC accumulator."""

from __future__ import annotations

import numpy as np
import pytest
from axsa.rtl.multipliers import Format, parse_spec
from axsa.synth import energy
from axsa.synth.netlist import GateNetlist

from axsa.errors import InputError


def _tiny_netlist() -> GateNetlist:
    """y = NOT(NAND(a, b)) by hand, in Yosys write_json form (nets 2, 3 = a, b)."""
    data = {"modules": {"t": {
        "ports": {"a": {"direction": "input", "bits": [2]},
                  "b": {"direction": "input", "bits": [3]},
                  "y": {"direction": "output", "bits": [5]}},
        "cells": {
            "g1": {"type": "$_NAND_", "connections": {"A": [2], "B": [3], "Y": [4]}},
            "g2": {"type": "$_NOT_", "connections": {"A": [4], "Y": [5]}},
        },
        "netnames": {"a": {"bits": [2]}, "b": {"bits": [3]}, "y": {"bits": [5]}},
    }}}
    return GateNetlist(data, "t")


def test_energy_of_a_hand_netlist():
    nl = _tiny_netlist()
    nand, inv = energy.CELLS["$_NAND_"], energy.CELLS["$_NOT_"]
    cap = energy.net_capacitance(nl)
    ids = {name: nl.port_nets[name][0] for name in ("a", "b", "y")}
    nand_out = nl.cells[0].output
    assert cap[ids["a"]] == pytest.approx(nand.pins["A"])
    assert cap[ids["b"]] == pytest.approx(nand.pins["B"])
    assert cap[nand_out] == pytest.approx(nand.out + inv.pins["A"])
    assert cap[ids["y"]] == pytest.approx(inv.out + energy.PORT_LOAD)
    # a: 0 1 0 1, b: 1 1 1 1 -> a toggles 3x, nand and y toggle 3x, b never
    a, b = np.array([0, 1, 0, 1]), np.array([1, 1, 1, 1])
    toggles = nl.toggle_counts(a=a, b=b)
    e = energy.energy_from_toggles(nl, toggles, 4)
    switched = 3 * (nand.pins["A"] + nand.out + inv.pins["A"] + inv.out + energy.PORT_LOAD)
    assert e["energy_dynamic"] == pytest.approx(0.5 * energy.VDD ** 2 * switched / 3, abs=1e-4)
    assert e["gate_transistors"] == nand.transistors + inv.transistors
    leak = (nand.transistors + inv.transistors) * energy.LEAK_PER_TRANSISTOR_NW * \
        energy.PERIOD_NS * 1e-3
    assert e["energy_leakage"] == pytest.approx(leak, abs=1e-4)
    assert e["energy"] == pytest.approx(e["energy_dynamic"] + e["energy_leakage"], abs=1e-3)


@pytest.mark.parametrize("spec", ["exact@s8", "drum(k=3)@u6", "cfgtrunc(k=0/4)@u6"])
def test_constant_stream_has_zero_dynamic_energy(spec):
    mult = parse_spec(spec)
    a, b = mult.fmt.a_range()[1], mult.fmt.b_range()[0] + 1
    e = energy.multiplier_energy(mult, energy.constant_stream(mult.fmt, a, b))
    assert e["energy_dynamic"] == 0.0 and e["toggles_per_op"] == 0.0
    assert e["energy"] == e["energy_leakage"] > 0


@pytest.mark.parametrize("fmt", ["s8", "u8"])
def test_truncation_ordering_at_8_bits(fmt):
    stream = energy.uniform_stream(Format.parse(fmt))
    e = [energy.multiplier_energy(parse_spec(s), stream)["energy"]
         for s in (f"exact@{fmt}", f"trunc(k=4)@{fmt}", f"trunc(k=8)@{fmt}")]
    assert e[0] > e[1] > e[2], e


@pytest.mark.parametrize("fmt", ["u5"])
def test_deeper_truncation_never_raises_energy(fmt):
    f = Format.parse(fmt)
    stream = energy.uniform_stream(f)
    e = [energy.multiplier_energy(parse_spec(f"trunc(k={k})@{fmt}"), stream)["energy"]
         for k in range(f.a_width + f.b_width)]
    assert all(x >= y for x, y in zip(e, e[1:])), e
    assert e[-1] == 0.0  # nothing left: no gates, no leakage, constant outputs


# the 8-bit version shares its synthesis runs with the transistor check in test_targets.py


def test_operands_near_zero_switch_less_than_uniform():
    """The reason for recorded streams: small operands (as in a transformer) toggle fewer
    nets than uniform ones."""
    mult = parse_spec("exact@s8")
    rng = np.random.default_rng(3)
    small = np.clip(np.round(rng.normal(0, 6, size=(10_000, 2))), -128, 127).astype(np.int64)
    near_zero = energy.stream_from_values(small[:, 0], small[:, 1], mult.fmt)
    e_small = energy.multiplier_energy(mult, near_zero)["energy_dynamic"]
    e_uniform = energy.multiplier_energy(mult, energy.uniform_stream(mult.fmt))["energy_dynamic"]
    # measured 0.81 (sign changes of two's-complement operands still toggle high bits)
    assert e_small < 0.9 * e_uniform


def test_accumulator_sequence_matches_a_loop():
    mult = parse_spec("drum(k=3)@s6")
    rng = np.random.default_rng(0)
    a = rng.integers(-32, 32, 200)
    b = rng.integers(-32, 32, 200)
    clr = rng.random(200) < 0.1
    stream = energy.Stream(a, b, "t", clr)
    acc, want = 0, []
    for x, y, c in zip(a, b, clr):
        want.append(acc)
        acc = (0 if c else acc) + int(mult.model(np.int64(x), np.int64(y)))
        acc = (acc + (1 << 11)) % (1 << 12) - (1 << 11)  # 12-bit wrap
    assert energy.accumulator_sequence(mult, stream, 12).tolist() == want


def test_accumulator_sequence_is_what_the_mac_netlist_computes():
    """The flip-flop inputs (D) the netlist computes at t are the accumulator at t+1."""
    from amaranth.back import rtlil
    from axsa.rtl.mac import Mac
    from axsa.synth.netlist import synthesize_gates

    from axsa import toolchain
    toolchain.configure()
    mult = parse_spec("trunc(k=2)@s4")
    nl = synthesize_gates("top", rtlil=rtlil.convert(Mac(mult, 10), name="top"))
    rng = np.random.default_rng(5)
    n = 300
    stream = energy.Stream(rng.integers(-8, 8, n), rng.integers(-8, 8, n), "t",
                           rng.random(n) < 0.15)
    acc = energy.accumulator_sequence(mult, stream, 10)
    values = nl.net_values(a=stream.a & 15, b=stream.b & 15, clr=stream.clr.astype(int),
                           en=np.ones(n, int), clk=np.zeros(n, int), rst=np.zeros(n, int),
                           acc=acc & 1023)
    q_to_d = {f.output: f.inputs["D"] for f in nl.flops}
    acc_nets = nl.signal_nets["acc"]
    d = np.array([values[q_to_d[q]] for q in acc_nets])  # (10 bits, n)
    d_codes = (d.astype(np.int64) << np.arange(10)[:, None]).sum(axis=0)
    assert np.array_equal(d_codes[:-1], acc[1:] & 1023)


def test_mac_energy_exceeds_the_bare_multiplier():
    mult = parse_spec("exact@u4")
    stream = energy.uniform_stream(mult.fmt, 2000)
    bare = energy.multiplier_energy(mult, stream)["energy"]
    mac = energy.mac_energy(mult, 12, stream)["energy"]
    assert mac > bare


def test_uniform_stream_is_reproducible_and_in_range():
    f = Format.parse("s5x3")
    s1, s2 = energy.uniform_stream(f, 500, seed=4), energy.uniform_stream(f, 500, seed=4)
    assert np.array_equal(s1.a, s2.a) and s1.identity == s2.identity
    assert s1.a.min() >= -16 and s1.a.max() <= 15 and s1.b.min() >= -4 and s1.b.max() <= 3
    assert set(np.unique(s1.b)) == set(range(-4, 4))


def test_load_stream_npy_and_npz_agree(tmp_path):
    f = Format.parse("s8")
    rng = np.random.default_rng(2)
    pairs = rng.integers(-128, 128, size=(100, 2))
    np.save(tmp_path / "s.npy", pairs)
    np.savez(tmp_path / "s.npz", a=pairs[:, 0], b=pairs[:, 1])
    s1 = energy.load_stream(tmp_path / "s.npy", f)
    s2 = energy.load_stream(tmp_path / "s.npz", f)
    assert np.array_equal(s1.a, pairs[:, 0]) and np.array_equal(s2.b, pairs[:, 1])
    assert s1.identity == s2.identity and s1.identity.startswith("sha256:")
    # another stream, another identity
    np.save(tmp_path / "t.npy", pairs[::-1])
    assert energy.load_stream(tmp_path / "t.npy", f).identity != s1.identity


def test_load_stream_with_clr(tmp_path):
    np.savez(tmp_path / "s.npz", a=[1, 2, 3], b=[4, 5, 6], clr=[1, 0, 0])
    s = energy.load_stream(tmp_path / "s.npz", Format.parse("u4"))
    assert s.clr.tolist() == [True, False, False]


@pytest.mark.parametrize("make,match", [
    (lambda p: np.save(p, np.zeros((10, 3), int)), r"shape \(10, 3\).*\(n, 2\)"),
    (lambda p: np.save(p, np.zeros((10, 2))), "must hold integers"),
    (lambda p: np.save(p, np.array([[1, 2], [300, 1]])), "operand a value 300 is outside"),
    (lambda p: p.write_text("not numpy"), "not a readable"),
    (lambda p: np.save(p, np.array([[1, 2]])), "at least 2 operations"),
])
def test_bad_stream_files_are_input_errors_naming_the_file(tmp_path, make, match):
    p = tmp_path / "bad.npy"
    make(p)
    with pytest.raises(InputError, match=match) as info:
        energy.load_stream(p, Format.parse("s8"))
    assert "bad.npy" in str(info.value)


def test_npz_without_b_is_refused(tmp_path):
    np.savez(tmp_path / "s.npz", a=[1, 2, 3])
    with pytest.raises(InputError, match="s.npz.*lacks array.*b"):
        energy.load_stream(tmp_path / "s.npz", Format.parse("u4"))


def test_missing_stream_file(tmp_path):
    with pytest.raises(InputError, match="nothere.npy.*does not exist"):
        energy.load_stream(tmp_path / "nothere.npy", Format.parse("u4"))


def _hazard_netlist() -> GateNetlist:
    """y = AND(a, NOT a): constant 0 at zero delay, a 1-step glitch on every rising a."""
    data = {"modules": {"h": {
        "ports": {"a": {"direction": "input", "bits": [2]},
                  "y": {"direction": "output", "bits": [4]}},
        "cells": {
            "n": {"type": "$_NOT_", "connections": {"A": [2], "Y": [3]}},
            "g": {"type": "$_AND_", "connections": {"A": [2], "B": [3], "Y": [4]}},
        },
        "netnames": {"a": {"bits": [2]}, "y": {"bits": [4]}},
    }}}
    return GateNetlist(data, "h")


def test_unit_delay_counts_a_known_hazard():
    nl = _hazard_netlist()
    a = np.array([0, 1, 0, 1, 1, 0])  # rises twice, falls twice
    zero = nl.toggle_counts(a=a)
    unit = energy.unit_delay_toggle_counts(nl, a=a)
    y, n = nl.port_nets["y"][0], nl.cells[0].output
    assert zero[y] == 0 and unit[y] == 4  # up and down at each rising edge of a
    assert zero[n] == unit[n] == 4
    assert zero[nl.port_nets["a"][0]] == unit[nl.port_nets["a"][0]] == 4


def test_unit_delay_toggles_exceed_zero_delay_by_an_even_count():
    mult = parse_spec("exact@s5")
    nl, ports = energy.multiplier_netlist(mult)
    stream = energy.uniform_stream(mult.fmt, 3000)
    signals = {ports["a"]: stream.a & 31, ports["b"]: stream.b & 31}
    zero = nl.toggle_counts(**signals)
    unit = energy.unit_delay_toggle_counts(nl, **signals)
    assert (unit >= zero).all() and ((unit - zero) % 2 == 0).all()
    assert unit.sum() > zero.sum()  # an array multiplier does glitch
    e = energy.multiplier_energy(mult, energy.constant_stream(mult.fmt, 3, -7), glitches=True)
    assert e["energy_dynamic"] == 0.0

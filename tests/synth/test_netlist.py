"""RTL, netlist and model agree: every family's product table read off its synthesized
netlist equals its numpy model on every operand pair (exhaustive), and the gate evaluator
itself is checked on hand-built netlists."""

import numpy as np
import pytest
from axsa.rtl.multipliers import exact_table, parse_spec
from axsa.synth.netlist import GateNetlist, gate_netlist, product_table

from axsa.errors import ToolError

SAMPLES = ["exact", "booth", "mul", "trunc(k=3)", "trunc(k=5,comp=1)", "bam(h=1,v=3)",
           "perf(i=1,j=2)", "drum(k=2)", "drum(k=3)", "mitchell", "mitchell(t=2)", "roba",
           "kulkarni", "ssm(m=2)", "ssm(m=3)"]


@pytest.mark.parametrize("fmt", ["s4", "u4", "s8", "u8"])
@pytest.mark.parametrize("spec", SAMPLES)
def test_netlist_table_equals_model(spec, fmt):
    m = parse_spec(f"{spec}@{fmt}")
    assert np.array_equal(product_table(m), m.model_table())


@pytest.mark.parametrize("spec", ["exact@s8x4", "booth@u6x3", "drum(k=3)@s7x5",
                                  "mitchell(t=1)@u5x8", "trunc(k=4,comp=1)@s3x8",
                                  "kulkarni@s5x3", "roba@u2x7"])
def test_asymmetric_formats(spec):
    m = parse_spec(spec)
    assert np.array_equal(product_table(m), m.model_table())


@pytest.mark.parametrize("fmt", ["s8", "u8"])
def test_mode_configurable_table_per_mode(fmt):
    m = parse_spec(f"cfgtrunc(k=0/3/6/9)@{fmt}")
    for mode in range(4):
        assert np.array_equal(product_table(m, mode), m.model_table(mode))
    assert np.array_equal(product_table(m, 0), exact_table(m.fmt))


@pytest.mark.parametrize("spec", ["exact@s8", "booth@s8", "mul@s8", "exact@u8", "booth@u8"])
def test_exact_architectures_are_exact(spec):
    t = product_table(parse_spec(spec))
    a = np.arange(256)
    va = np.where(a >= 128, a - 256, a) if spec.endswith("s8") else a
    assert np.array_equal(t, va[:, None] * va[None, :])
    if spec.endswith("s8"):
        assert t[128, 128] == 16384  # (-128) * (-128)


def _net(cells, ports):
    """A tiny Yosys-style JSON netlist by hand."""
    return {"modules": {"t": {
        "ports": ports,
        "cells": {f"c{i}": {"type": t, "connections": c} for i, (t, c) in enumerate(cells)},
        "netnames": {n: {"bits": p["bits"]} for n, p in ports.items()}}}}


def test_evaluator_gate_functions():
    # y0 = a XOR b, y1 = MUX(s ? b : a), y2 = NOT(a AND b), cells listed out of order
    data = _net([("$_NOT_", {"A": [6], "Y": [7]}),
                 ("$_AND_", {"A": [2], "B": [3], "Y": [6]}),
                 ("$_XOR_", {"A": [2], "B": [3], "Y": [5]}),
                 ("$_MUX_", {"A": [2], "B": [3], "S": [4], "Y": [8]})],
                {"a": {"direction": "input", "bits": [2]}, "b": {"direction": "input", "bits": [3]},
                 "s": {"direction": "input", "bits": [4]},
                 "y": {"direction": "output", "bits": [5, 8, 7]}})
    nl = GateNetlist(data, "t")
    a, b, s = np.array([0, 0, 1, 1, 0, 1, 0, 1]), np.array([0, 1, 0, 1, 1, 0, 0, 1]), \
        np.array([0, 0, 0, 0, 1, 1, 1, 1])
    y = nl.evaluate(a=a, b=b, s=s)["y"]
    expect = (a ^ b) | (np.where(s, b, a) << 1) | ((1 - (a & b)) << 2)
    assert np.array_equal(y, expect)
    assert nl.depth == 2


def test_combinational_loop_is_refused_naming_its_cells():
    # y = NOT(a AND y'), y' = NOT(y): a loop through c0 and c1, beside a loop-free gate
    data = _net([("$_AND_", {"A": [2], "B": [6], "Y": [5]}),
                 ("$_NOT_", {"A": [5], "Y": [6]}),
                 ("$_XOR_", {"A": [2], "B": [3], "Y": [4]})],
                {"a": {"direction": "input", "bits": [2]}, "b": {"direction": "input", "bits": [3]},
                 "y": {"direction": "output", "bits": [4, 5]}})
    with pytest.raises(ToolError, match=r"combinational loop through c\d .*c\d") as err:
        GateNetlist(data, "t")
    assert "c2" not in str(err.value)


def test_toggle_counts_count_changes_between_consecutive_vectors():
    data = _net([("$_AND_", {"A": [2], "B": [3], "Y": [4]})],
                {"a": {"direction": "input", "bits": [2]}, "b": {"direction": "input", "bits": [3]},
                 "y": {"direction": "output", "bits": [4]}})
    nl = GateNetlist(data, "t")
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 1000)  # spans several 64-bit words, ragged end
    b = rng.integers(0, 2, 1000)
    toggles = nl.toggle_counts(a=a, b=b)
    assert toggles[nl.port_nets["a"][0]] == np.count_nonzero(np.diff(a))
    assert toggles[nl.port_nets["b"][0]] == np.count_nonzero(np.diff(b))
    assert toggles[nl.port_nets["y"][0]] == np.count_nonzero(np.diff(a & b))
    const = nl.toggle_counts(a=np.ones(300, int), b=np.zeros(300, int))
    assert const.sum() == 0


def test_toggle_counts_on_a_real_multiplier_match_net_values():
    nl = gate_netlist(parse_spec("drum(k=3)@s6"))
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 64, 777), rng.integers(0, 64, 777)
    values = nl.net_values(a=a, b=b)
    expect = np.count_nonzero(values[:, 1:] != values[:, :-1], axis=1)
    assert np.array_equal(nl.toggle_counts(a=a, b=b), expect)

"""DESIGN.md's requantization, `clamp((acc * m + 2^(s-1)) >> s)`, is written twice: in
numpy for the simulation reference (sim/reference.py) and in torch for the integer model
(models/quant.py). Both must equal a plain Python-integer evaluation of the formula, bit
for bit, over random and edge-case accumulators, multipliers and shifts."""

import numpy as np
import pytest
import torch
from axsa.models.quant import requantize as requantize_torch
from axsa.sim.reference import requantize as requantize_numpy


def by_hand(acc, m, s, bits, signed):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return [min(max((int(x) * m + (1 << (s - 1))) >> s, lo), hi) for x in acc]


@pytest.mark.parametrize("bits, signed", [(8, True), (8, False), (4, True), (4, False),
                                          (2, True), (6, True), (16, True), (16, False)])
def test_numpy_torch_and_python_agree(bits, signed):
    rng = np.random.default_rng(bits * 2 + signed)
    acc = np.concatenate([rng.integers(-(1 << 30), 1 << 30, 400),
                          rng.integers(-5000, 5000, 400),
                          [0, 1, -1, (1 << 30) - 1, -(1 << 30), 127, -128, 255]])
    for m, s in [(1, 1), (3, 2), (12345, 20), (-7, 3), ((1 << 31) - 1, 31), (1 << 20, 24),
                 (77, 8), (1, 30), (-(1 << 31), 33)]:
        expect = by_hand(acc, m, s, bits, signed)
        got_np = requantize_numpy(acc, m, s, bits, signed)
        got_t = requantize_torch(torch.from_numpy(acc), m, s, bits, signed)
        assert got_np.tolist() == expect, (m, s)
        assert got_t.tolist() == expect, (m, s)


def test_per_column_parameters_agree():
    rng = np.random.default_rng(5)
    acc = rng.integers(-(1 << 20), 1 << 20, (37, 6))
    m = rng.integers(1, 1 << 16, 6)
    s = rng.integers(1, 24, 6)
    got_np = requantize_numpy(acc, m, s, 8, True)
    got_t = requantize_torch(torch.from_numpy(acc), torch.from_numpy(m), torch.from_numpy(s),
                             8, True)
    for c in range(6):
        assert got_np[:, c].tolist() == by_hand(acc[:, c], int(m[c]), int(s[c]), 8, True)
    assert np.array_equal(got_np, got_t.numpy())

"""Integer operators of models/ops.py against plain-Python definitions."""

import math

import numpy as np
import pytest
import torch
from axsa.models import ops
from axsa.models.quant import fixed_point


def test_isqrt_exhaustive_small_and_large():
    v = torch.arange(0, 200_000, dtype=torch.int64)
    assert ops.isqrt(v).tolist() == [math.isqrt(int(x)) for x in v]
    big = torch.tensor([(1 << 40) - 1, 1 << 40, (1 << 40) + 1, 999_999_999_999,
                        (2 ** 20 + 1) ** 2 - 1, (2 ** 20 + 1) ** 2])
    assert ops.isqrt(big).tolist() == [math.isqrt(int(x)) for x in big]


def softmax_by_hand(row, scale, bits):
    p = (1 << (bits - 1)) - 1
    table = [math.floor(math.exp(-d * scale) * 2 ** 15 + 0.5) for d in range(256)]
    mx = max(row)
    e = [table[mx - q] for q in row]
    t = sum(e)
    return [(x * p + t // 2) // t for x in e]


@pytest.mark.parametrize("bits", [8, 4])
def test_int_softmax(bits):
    rng = np.random.default_rng(bits)
    q = torch.from_numpy(rng.integers(-128, 128, (20, 24)))
    scale = 0.043
    got = ops.softmax(q, scale, bits, integer=True)
    for r in range(20):
        assert got[r].tolist() == softmax_by_hand(q[r].tolist(), scale, bits)
    # a one-hot row: everything on the maximum
    one = torch.tensor([[127] + [-128] * 23])
    assert ops.softmax(one, 0.1, 8, True).tolist() == [[127] + [0] * 23]


def layernorm_by_hand(row):
    n = len(row)
    c = [n * q - sum(row) for q in row]
    v = sum(x * x for x in c) // n
    r = max(math.isqrt(v), 1)
    return [((x << 8) + r // 2) // r for x in c]


def test_int_layernorm():
    rng = np.random.default_rng(3)
    q = torch.from_numpy(rng.integers(-128, 128, (30, 32)))
    got = ops.layernorm(q, integer=True)
    for r in range(30):
        assert got[r].tolist() == layernorm_by_hand(q[r].tolist())
    assert ops.layernorm(torch.full((1, 8), 5), True).tolist() == [[0] * 8]   # var 0


def test_add_requant_by_hand():
    rng = np.random.default_rng(4)
    qx = torch.from_numpy(rng.integers(-128, 128, 500))
    qy = torch.from_numpy(rng.integers(-128, 128, 500))
    sx, sy, so = 0.0213, 0.0517, 0.0609
    got = ops.add_requant(qx, sx, qy, sy, so, 8, True).tolist()
    _, s = fixed_point(max(sx, sy) / so)
    s = int(s)
    mx, my = math.floor(sx / so * 2 ** s + 0.5), math.floor(sy / so * 2 ** s + 0.5)
    expect = [min(max((a * mx + b * my + (1 << (s - 1))) >> s, -128), 127)
              for a, b in zip(qx.tolist(), qy.tolist())]
    assert got == expect
    # and it is the rounded real sum, except at most where m/2^s sits across a .5 boundary
    real = torch.floor((qx * sx + qy * sy) / so + 0.5).clamp(-128, 127)
    assert (torch.tensor(got) != real).sum() <= 1


@pytest.mark.parametrize("op", ["softmax", "layernorm", "add", "pool"])
def test_fake_quant_forward_equals_integer_and_has_gradients(op):
    rng = np.random.default_rng(5)
    qi = torch.from_numpy(rng.integers(-100, 100, (4, 6, 16)))
    qf = qi.to(torch.float32).requires_grad_()
    if op == "softmax":
        fi, ff = (ops.softmax(q, 0.05, 6, i) for q, i in ((qi, True), (qf, False)))
    elif op == "layernorm":
        fi, ff = (ops.layernorm(q, i) for q, i in ((qi, True), (qf, False)))
    elif op == "add":
        fi, ff = (ops.add_requant(q, 0.01, q.flip(-1), 0.03, 0.04, 8, i)
                  for q, i in ((qi, True), (qf, False)))
    else:
        fi, ff = (ops.avg_pool(q, 1, 0.01, 0.012, 8, i) for q, i in ((qi, True), (qf, False)))
    assert torch.equal(fi, ff.detach().round().to(torch.int64))
    ff.pow(2).sum().backward()
    assert qf.grad is not None and qf.grad.abs().sum() > 0

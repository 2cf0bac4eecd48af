"""Quantizers, observers and the fixed-point requantization of models/quant.py."""

import math

import numpy as np
import pytest
import torch
from axsa.models.quant import (
    M_BITS,
    Observer,
    Quantizer,
    fake_quant,
    fixed_point,
    qrange,
    quantize,
    requantize,
    requantize_ste,
)


def test_qrange():
    assert qrange(8) == (-128, 127)
    assert qrange(4, signed=False) == (0, 15)
    assert qrange(2) == (-2, 1)
    with pytest.raises(ValueError, match="1"):
        qrange(1)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_quantize_codes_and_clipped_ste(bits):
    qmin, qmax = qrange(bits)
    scale = torch.tensor(0.1, dtype=torch.float64)
    x = torch.linspace(-2 ** bits * 0.1, 2 ** bits * 0.1, 301, requires_grad=True)
    q = quantize(x, scale, qmin, qmax)
    t = x.detach().double() / 0.1
    expect = [min(max(math.floor(v + 0.5), qmin), qmax) for v in t.tolist()]
    assert q.tolist() == expect
    q.sum().backward()
    inside = (t >= qmin - 0.5) & (t <= qmax + 0.5)
    assert torch.allclose(x.grad, torch.where(inside, 10.0, 0.0).float())


def test_fake_quant_is_codes_times_scale():
    x = torch.tensor([0.26, -0.26, 0.05, 1.0, -5.0])
    out = fake_quant(x, torch.tensor(0.1, dtype=torch.float64), 4)
    assert torch.allclose(out, torch.tensor([0.3, -0.3, 0.1, 0.7, -0.8]))


def test_fixed_point_precision_and_range():
    ratios = torch.tensor([1e-6, 3.3e-4, 0.0123, 0.5, 0.999999, 1.0, 7.25])
    m, s = fixed_point(ratios)
    assert bool(((m >= 1 << (M_BITS - 1)) & (m < 1 << M_BITS)).all())
    assert bool((s >= 1).all())
    approx = m.double() / torch.pow(2.0, s.double())
    assert torch.allclose(approx, ratios.double(), rtol=2.0 ** -M_BITS, atol=0)
    # 0.5 is exactly representable: m = 2^23, s = 24
    m, s = fixed_point(0.5)
    assert (int(m), int(s)) == (1 << 23, 24)


def test_requantize_matches_python_integers():
    rng = np.random.default_rng(1)
    acc = rng.integers(-(1 << 28), 1 << 28, 2000)
    for ratio in (1e-5, 0.00731, 0.41, 0.9):
        m, s = (int(v) for v in fixed_point(ratio))
        got = requantize(torch.from_numpy(acc), m, s, 8).tolist()
        expect = [min(max((int(a) * m + (1 << (s - 1))) >> s, -128), 127) for a in acc]
        assert got == expect


def test_requantize_ste_fake_and_integer_agree():
    rng = np.random.default_rng(2)
    acc = torch.from_numpy(rng.integers(-(1 << 20), 1 << 20, (50, 7)))
    ratio = torch.from_numpy(rng.uniform(1e-6, 1e-3, 7))
    qi = requantize_ste(acc, ratio, -128, 127, integer=True)
    accf = acc.to(torch.float32).requires_grad_()
    qf = requantize_ste(accf, ratio, -128, 127, integer=False)
    assert torch.equal(qi, qf.detach().to(torch.int64))
    qf.sum().backward()
    inside = (qi > -128) & (qi < 127)
    assert torch.allclose(accf.grad[inside], ratio.float().expand(50, 7)[inside])


def test_observers():
    a = torch.tensor([[1.0, -3.0], [2.0, 0.5]])
    b = torch.tensor([[0.5, 0.5], [-1.0, 0.25]])
    mm = Observer("minmax", 8)
    mm(a)
    mm(b)
    assert float(mm.scale()) == pytest.approx(3.0 / 127)
    ema = Observer("ema", 8, momentum=0.5)
    ema(a)
    ema(b)
    assert float(ema.scale()) == pytest.approx((0.5 * 3 + 0.5 * 1) / 127)
    pc = Observer("minmax", 4, channel_axis=0, channels=2)
    pc(a)
    assert pc.scale().tolist() == pytest.approx([3.0 / 7, 2.0 / 7])
    pct = Observer("percentile", 8, pct=50.0)
    pct(torch.arange(1.0, 102.0))
    assert float(pct.scale()) == pytest.approx(51.0 / 127)
    with pytest.raises(ValueError, match="bogus"):
        Observer("bogus")


def test_quantizer_freezes_in_eval():
    q = Quantizer(8, observer="minmax")
    q.train()
    q(torch.tensor([1.0, -2.0]))
    q.eval()
    q(torch.tensor([10.0]))
    assert float(q.scale()) == pytest.approx(2.0 / 127)

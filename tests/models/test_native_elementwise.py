"""The native elementwise kernels of the quantized paths (`axsa.models._native.quantize`,
`codes`, `dequantize`) equal, bit for bit, the torch expressions they replace, on every
layout they take, at 1 and 2 threads; they decline (None) what they do not take."""

from __future__ import annotations

import math

import pytest
import torch
from axsa.models import _native
from axsa.models.approx import ProductTable, approx_matmul
from axsa.rtl.multipliers import parse_spec

from axsa import formats

pytestmark = pytest.mark.skipif(not _native.available(), reason="no C++ compiler")


def _torch_quantize(x, scale, qmin, qmax):
    q = torch.div(x, torch.tensor(scale, dtype=torch.float64).to(x.dtype))
    return q.add_(0.5).floor_().clamp_(qmin, qmax)


def _edge_values(dtype, scale):
    """Values on the rounding edges (x / s = k + 0.5 and its neighbours), the clamp
    bounds, zeros of both signs, infinities and NaN, then random ones (> 2^15 of them,
    so that two threads split the work)."""
    s = torch.tensor(scale, dtype=torch.float64).to(dtype)
    ks = torch.arange(-140, 140, dtype=dtype)
    halves = (ks + 0.5) * s
    edges = torch.cat([halves, torch.nextafter(halves, halves + 1),
                       torch.nextafter(halves, halves - 1), ks * s,
                       torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1e30, -1e30],
                                    dtype=dtype)])
    gen = torch.Generator().manual_seed(3)
    rand = (torch.randn(70_000, generator=gen, dtype=torch.float64) * 60 * scale).to(dtype)
    return torch.cat([edges, rand])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quantize_equals_the_torch_chain(dtype, threads):
    scale = 0.0213
    x = _edge_values(dtype, scale)
    got = _native.quantize(x, scale, -128, 127)
    want = _torch_quantize(x, scale, -128, 127)
    assert got.dtype == dtype
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))
    assert torch.equal(torch.signbit(got), torch.signbit(want))    # -0.0 kept as torch does


def test_quantize_keeps_a_dense_layout_and_declines_others(threads):
    x = torch.randn(6, 50, 40) * 3
    xt = x.transpose(1, 2)                                     # dense, not contiguous
    got = _native.quantize(xt, 0.05, -8, 7)
    assert got.stride() == xt.stride()
    assert torch.equal(got, _torch_quantize(xt, 0.05, -8, 7))
    assert _native.quantize(x[:, ::2], 0.05, -8, 7) is None    # not dense
    assert _native.quantize(x.to(torch.float16), 0.05, -8, 7) is None
    assert _native.quantize(x.to(torch.int32), 0.05, -8, 7) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.int32,
                                   torch.int16, torch.int8, torch.uint8])
def test_codes_of_every_dtype(dtype, threads):
    lo, hi, width = (0, 200, 8) if dtype == torch.uint8 else (-100, 100, 8)
    gen = torch.Generator().manual_seed(4)
    v = torch.randint(lo, hi + 1, (300, 130), generator=gen).to(dtype)
    got = _native.codes(v, lo, hi, width)
    assert got.dtype == torch.int64
    assert torch.equal(got, formats.to_codes(v.to(torch.int64), width))
    vt = v.t()
    assert torch.equal(_native.codes(vt, lo, hi, width), formats.to_codes(vt.to(torch.int64),
                                                                           width))
    bad = v.clone()
    bad[7, 11] = hi + 1 if dtype != torch.int8 or hi < 127 else lo - 1
    assert _native.codes(bad, lo, hi, width) is False


def test_codes_of_signed_range_on_unsigned_bytes(threads):
    # a uint8 operand against a signed table: 200 is outside -128..127 (not wrapped)
    v = torch.tensor([0, 5, 127], dtype=torch.uint8)
    assert torch.equal(_native.codes(v, -128, 127, 8), torch.tensor([0, 5, 127]))
    assert _native.codes(torch.tensor([0, 200], dtype=torch.uint8), -128, 127, 8) is False


@pytest.mark.parametrize("value", [0.5, -3.25, math.nan, math.inf, -math.inf, 2.0**70, 128.0,
                                   -129.0])
def test_codes_refuse_what_is_not_an_integer_in_range(value, threads):
    x = torch.zeros(40_000)
    x[-1] = value
    assert _native.codes(x, -128, 127, 8) is False
    assert _native.codes(x.double(), -128, 127, 8) is False


@pytest.mark.parametrize("acc_dtype,dtype", [(torch.int64, torch.float32),
                                             (torch.float32, torch.float32),
                                             (torch.int64, torch.float64),
                                             (torch.float64, torch.float64)])
@pytest.mark.parametrize("per_column", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_dequantize_equals_mul_then_add(acc_dtype, dtype, per_column, with_bias, threads):
    gen = torch.Generator().manual_seed(5)
    acc = torch.randint(-2**22, 2**22, (9, 37, 120), generator=gen).to(acc_dtype)
    scale = (torch.rand(120 if per_column else (), generator=gen, dtype=torch.float64)
             * 1e-3)
    bias = torch.randn(120, generator=gen, dtype=torch.float64) if with_bias else None
    want = torch.mul(acc.to(dtype), scale.to(dtype))
    if bias is not None:
        want.add_(bias.to(dtype))
    got = _native.dequantize(acc, scale, bias, dtype)
    assert got.dtype == dtype
    assert torch.equal(got, want)


def test_dequantize_declines_other_layouts():
    acc = torch.zeros(4, 6, dtype=torch.int64)
    assert _native.dequantize(acc.t(), torch.ones(4), None, torch.float32) is None
    assert _native.dequantize(acc, torch.ones(1, 6), None, torch.float32) is None
    assert _native.dequantize(acc, torch.ones(5), None, torch.float32) is None
    assert _native.dequantize(acc.float(), torch.ones(6), None, torch.float64) is None


@pytest.mark.parametrize("spec", ["drum(k=4)@s8", "trunc(k=4)@s8", "mitchell@s8"])
def test_approx_matmul_dtype_is_the_int64_result_converted(spec, threads):
    table = ProductTable.from_multiplier(parse_spec(spec))
    gen = torch.Generator().manual_seed(6)
    for sa, sb in (((3, 40, 64), (64, 50)), ((2, 3, 17, 32), (2, 3, 32, 19))):
        a = torch.randint(-128, 128, sa, generator=gen).float()
        b = torch.randint(-128, 128, sb, generator=gen).float()
        want = approx_matmul(a, b, table)
        for _ in range(3):          # the first calls fit the engine, later ones reuse it
            got = approx_matmul(a, b, table, dtype=torch.float32)
            assert got.dtype == torch.float32
            assert torch.equal(got, want.to(torch.float32))

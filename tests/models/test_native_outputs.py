"""The native GEMM's float32 results: converted and dequantized in the kernel
(`NativeCall(..., torch.float32)`, `NativeCall.scaled`, ``approx_matmul(..., scale=,
bias=)``), they equal, bit for bit, the int64 result converted by torch and dequantized
by `_native.dequantize` and by the torch chain it replaces; on every path of the kernel
(one pass and several K' passes, several groups, partial tiles, matrix-vector products,
b packed once or per chunk of rows, the portable loops), at 1 and 2 threads. The int8
quantizer equals the float one; a model's fused GEMMs equal its unfused ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from axsa.models import _native
from axsa.models.approx import ProductTable, approx_matmul
from axsa.models.byom import approximate
from axsa.rtl.multipliers import parse_spec
from torch import nn

from axsa.errors import InputError

pytestmark = pytest.mark.skipif(not _native.available(), reason="no C++ compiler")


def _random_table() -> ProductTable:
    v = np.arange(256)
    v = np.where(v < 128, v, v - 256)
    rng = np.random.default_rng(0)
    return ProductTable(np.outer(v, v) + rng.integers(-512, 513, (256, 256)), signed=True,
                        name="random@s8")


TABLES = {spec: None for spec in ("trunc(k=4)@s8", "drum(k=4)@s8", "exact@s8",
                                  "mitchell@s8", "exact@s4", "trunc(k=2)@u8", "random@s8")}


def table(spec: str) -> ProductTable:
    if TABLES[spec] is None:
        TABLES[spec] = _random_table() if spec == "random@s8" else \
            ProductTable.from_multiplier(parse_spec(spec))
    return TABLES[spec]


# (M, K, N): one element; partial tiles; a matrix-vector product; several K' passes of a
# 32-column tile (mitchell: 64 digits per code); 8- and 16-column tails; a DeiT shape;
# b too big to pack once (mitchell: 600 * 64 digits * 320 columns > 8 MB)
SHAPES = [(1, 1, 1), (3, 5, 7), (17, 9, 1), (40, 300, 33), (70, 600, 24), (9, 192, 768),
          (300, 64, 40), (20, 600, 320)]


def _operands(t: ProductTable, M, K, N, seed, transposed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(t.a_range[0], t.a_range[1] + 1, (M, K), generator=gen).float()
    b = torch.randint(t.b_range[0], t.b_range[1] + 1, (K, N), generator=gen).float()
    return a, (b.t().contiguous().t() if transposed else b)


def _stages(N, seed):
    gen = torch.Generator().manual_seed(seed)
    for n in (1, N):
        scale = torch.rand(n, generator=gen, dtype=torch.float64) * 1e-3
        yield scale, None
        yield scale, torch.randn(N, generator=gen)


@pytest.mark.parametrize("generic", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("spec", list(TABLES))
def test_float_results_equal_the_int64_ones(spec, generic, threads):
    t = table(spec)
    for i, (M, K, N) in enumerate(SHAPES):
        if generic and M * K * N > 2_000_000:
            continue                      # (the portable loops are slow; shapes above cover them)
        for engine in ("native", "native-gather"):
            if engine == "native" and t.plan.int8 is None:
                continue
            for transposed in (False, True):
                a, b = _operands(t, M, K, N, i, transposed)
                call = _native.NativeCall(t, engine, a, b, (), generic=generic)
                ref = call(a, b)
                assert torch.equal(call(a, b, torch.float32), ref.to(torch.float32)), \
                    (spec, M, K, N, engine)
                for scale, bias in _stages(N, i):
                    got = call.scaled(a, b, scale, bias)
                    want = torch.mul(ref.to(torch.float32), scale.to(torch.float32))
                    if bias is not None:
                        want.add_(bias)
                    assert torch.equal(got, want), (spec, M, K, N, engine, scale.numel())
                    assert torch.equal(got, _native.dequantize(ref, scale, bias,
                                                               torch.float32))


def test_the_portable_loops_on_a_thread_split_tile():
    """mitchell@s8 70x600x24 on the portable loops at 2 threads crashed (GCC 12's -O3 loop
    vectorizer read past the digit rows of a thread's 30-row block)."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        t = table("mitchell@s8")
        a, b = _operands(t, 70, 600, 24, 0, False)
        generic = _native.NativeCall(t, "native", a, b, (), generic=True)
        assert torch.equal(generic(a, b), _native.NativeCall(t, "native", a, b, ())(a, b))
    finally:
        torch.set_num_threads(old)


def test_batched_float_results(threads):
    t = table("trunc(k=4)@s8")
    gen = torch.Generator().manual_seed(5)
    a = torch.randint(-128, 128, (6, 37, 64), generator=gen).float()
    b = torch.randint(-128, 128, (6, 37, 64), generator=gen).float().transpose(-1, -2)
    want = approx_matmul(a, b, t, engine="native").to(torch.float32)
    scale = torch.tensor(0.0123, dtype=torch.float64)
    for _ in range(3):      # the first calls pick the engine, later ones take the fast path
        assert torch.equal(approx_matmul(a, b, t, dtype=torch.float32), want)
        got = approx_matmul(a, b, t, dtype=torch.float32, scale=scale)
        assert torch.equal(got, want * scale.to(torch.float32))


@pytest.mark.parametrize("spec", ["trunc(k=4)@s8", "drum(k=4)@s8", "exact@s8", "random@s8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_approx_matmul_stage(spec, dtype):
    t = table(spec)
    a, b = _operands(t, 50, 70, 40, 1, True)
    acc = approx_matmul(a, b, t)
    scale = torch.rand(40, dtype=torch.float64) + 0.5
    bias = torch.randn(40)
    if not dtype.is_floating_point:
        with pytest.raises(InputError, match="floating result dtype"):
            approx_matmul(a, b, t, dtype=dtype, scale=scale)
        return
    want = torch.mul(acc.to(dtype), scale.to(dtype)).add_(bias.to(dtype))
    for operands in ((a, b), (a.to(torch.int8), b.to(torch.int8))):
        for _ in range(3):
            got = approx_matmul(*operands, t, dtype=dtype, scale=scale, bias=bias)
            assert got.dtype == dtype and torch.equal(got, want)


def test_approx_matmul_stage_errors():
    t = table("trunc(k=4)@s8")
    a, b = _operands(t, 5, 6, 7, 2, False)
    with pytest.raises(InputError, match=r"scale must be one value or one per column \(7\)"):
        approx_matmul(a, b, t, dtype=torch.float32, scale=torch.ones(3))
    with pytest.raises(InputError, match=r"bias must hold one value per column \(7\)"):
        approx_matmul(a, b, t, dtype=torch.float32, scale=torch.ones(1), bias=torch.ones(6))
    a[2, 3] = 1000                       # a bad value on the fast path is still named
    for _ in range(2):
        with pytest.raises(InputError, match="1000"):
            approx_matmul(a, b, t, dtype=torch.float32, scale=torch.ones(7))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quantize_int8_equals_the_float_codes(dtype, threads):
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(300, 301, generator=gen, dtype=torch.float64) * 3).to(dtype)
    x[0, :6] = torch.tensor([math.inf, -math.inf, 0.0, -0.0, 1e30, -1e30], dtype=dtype)
    for view in (x, x.t()):                        # dense, in either order
        got = _native.quantize_int8(view, 0.0213, -127, 127)
        assert got.dtype == torch.int8 and got.stride() == view.stride()
        assert torch.equal(got, _native.quantize(view, 0.0213, -127, 127).to(torch.int8))
    y = x.clone()
    y[7, 9] = math.nan
    assert _native.quantize_int8(y, 0.0213, -127, 127) is None      # NaN: no int8 code
    assert _native.quantize_int8(x, 0.0213, 0, 255) is None          # outside int8
    assert _native.quantize_int8(x[:, ::2], 0.0213, -127, 127) is None   # not dense


class _Attention(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(((q @ k.transpose(-1, -2)).softmax(-1)) @ v)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, stride=2, padding=1)
        self.attn = _Attention(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        t = self.conv(x).flatten(2).transpose(1, 2)       # (B, 16 tokens, 16)
        return self.head(self.attn(t).mean(1))


@pytest.mark.parametrize("spec", ["trunc(k=4)@s8", "drum(k=4)@s8", "mitchell@s8"])
def test_fused_gemms_equal_the_unfused_ones(spec, threads):
    """Under no_grad every routed GEMM with a table runs fused (int8 codes in, the output
    stage in the kernel); with gradients on, the same GEMMs run unfused: equal outputs."""
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(6, 1, 8, 8)
    model = approximate(net, [x])
    t = table(spec)
    model.hook.assign({n: t for n in model.gemm_names()})
    assert all(model.hook.fuses(n) for n in model.gemm_names())
    with torch.no_grad():
        fused = [model(x) for _ in range(3)]     # (engine choice, then the fast path)
    unfused = model(x.requires_grad_())
    assert unfused.requires_grad
    for y in fused:
        assert torch.equal(y, unfused.detach())

"""Approximate GEMM emulation: bit-exact against a plain table gather, every engine."""

import numpy as np
import pytest
import torch
from axsa.models import _lowrank, _native, approx
from axsa.models.approx import ProductTable, approx_matmul, approx_matmul_grad
from axsa.rtl.multipliers import FAMILIES, parse_spec

from axsa.errors import InputError

# Two parameter settings per family (one for parameterless families); every one is run
# at s8 and u8 below.
FAMILY_SPECS = {
    "exact": ["exact"],
    "booth": ["booth"],
    "mul": ["mul"],
    "trunc": ["trunc(k=4)", "trunc(k=8,comp=1)"],
    "bam": ["bam(h=2,v=6)", "bam(h=4,v=9)"],
    "perf": ["perf(j=2)", "perf(i=2,j=3)"],
    "drum": ["drum(k=3)", "drum(k=6)"],
    "mitchell": ["mitchell", "mitchell(t=3)"],
    "roba": ["roba"],
    "kulkarni": ["kulkarni"],
    "ssm": ["ssm(m=4)", "ssm(m=6)"],
    "cfgtrunc": ["cfgtrunc"],
}
SPECS = [f"{s}@{fmt}" for specs in FAMILY_SPECS.values() for s in specs for fmt in ("s8", "u8")]


def test_every_family_is_covered():
    assert set(FAMILY_SPECS) == set(FAMILIES)


def gather_reference(a: np.ndarray, b: np.ndarray, lut: np.ndarray, wa: int, wb: int):
    """sum_k lut[code(a[..., m, k]), code(b[..., k, n])], straight from the definition."""
    ca = np.asarray(a, dtype=np.int64) & ((1 << wa) - 1)
    cb = np.asarray(b, dtype=np.int64) & ((1 << wb) - 1)
    ia, ib = np.broadcast_arrays(ca[..., :, :, None], cb[..., None, :, :])
    return lut[ia, ib].sum(axis=-2)


def operands(rng, table: ProductTable, shape_a, shape_b):
    """Random operands with the extreme values forced into some rows and columns."""
    lo, hi = table.a_range
    a = rng.integers(lo, hi + 1, size=shape_a)
    blo, bhi = table.b_range
    b = rng.integers(blo, bhi + 1, size=shape_b)
    a[..., 0, :] = lo
    a[..., 1, :] = hi
    a[..., 2, ::2] = lo
    a[..., 2, 1::2] = hi
    b[..., :, 0] = blo
    b[..., :, 1] = bhi
    b[..., ::2, 2] = bhi
    b[..., 1::2, 2] = blo
    return a, b


def wide_factor_table() -> ProductTable:
    """A 4-bit table whose exact factors need base-256 digits in several int8 GEMM groups
    of different scales."""
    u = np.arange(16) * (2**25 + 1)
    table = ProductTable(np.outer(u, np.arange(16)) + np.outer(np.arange(16) % 3,
                                                               np.arange(16) ** 2) * 7,
                         signed=False, name="wide factors")
    assert len(table.plan.groups) > 1
    return table


def tables_of(spec):
    mult = parse_spec(spec)
    return [ProductTable.from_multiplier(mult, mode) for mode in range(mult.modes)]


@pytest.mark.parametrize("spec", SPECS)
def test_auto_engine_equals_gather_every_family(spec):
    rng = np.random.default_rng(abs(hash(spec)) % 2**32)
    for table in tables_of(spec):
        a, b = operands(rng, table, (23, 37), (37, 19))
        got = approx_matmul(torch.from_numpy(a), torch.from_numpy(b), table)
        assert got.dtype == torch.int64
        np.testing.assert_array_equal(got.numpy(), gather_reference(a, b, table.table, 8, 8))


@pytest.mark.parametrize("spec", ["trunc(k=8)@s8", "drum(k=4)@u8", "mitchell(t=3)@s8",
                                  "bam(h=2,v=6)@u8", "cfgtrunc@s8x4", "drum(k=3)@s8x4",
                                  "roba@s8x4", "mitchell@u8"])
@pytest.mark.parametrize("engine", ["lowrank", "bag", "gather", "native", "native-gather"])
def test_every_engine_is_exact(spec, engine):
    rng = np.random.default_rng(7)
    for table in tables_of(spec):
        if engine in ("lowrank", "native") and table.plan.int8 is None:
            continue
        a, b = operands(rng, table, (11, 29), (29, 13))
        got = approx_matmul(torch.from_numpy(a), torch.from_numpy(b), table, engine=engine)
        np.testing.assert_array_equal(got.numpy(),
                                      gather_reference(a, b, table.table, table.wa, table.wb))


def test_random_unstructured_table_uses_fallback_and_is_exact():
    rng = np.random.default_rng(3)
    lut = rng.integers(-40000, 40000, size=(256, 256))
    table = ProductTable(lut, signed=True, name="random")
    # the plane gather (AVX512-VBMI) is estimated below the embedding bags; else the bags
    planes = _native.available() and _native.library().axsa_approx_simd() == 2
    assert table.engine == ("native-gather" if planes else "bag")
    assert table.plan.int8 is None  # no integer pivot: no exact int8 factorization
    assert table.rank is None
    a, b = operands(rng, table, (30, 41), (41, 17))
    np.testing.assert_array_equal(approx_matmul(a, b, table).numpy(),
                                  gather_reference(a, b, lut, 8, 8))


def test_tables_above_float32_range_stay_exact():
    # |lut| up to 2^30: the bag engine switches to float64 rows, the int8 plan to digits
    rng = np.random.default_rng(4)
    lut = rng.integers(-2**30, 2**30, size=(16, 16))
    table = ProductTable(lut, signed=False)
    a, b = operands(rng, table, (9, 300), (300, 7))
    want = gather_reference(a, b, lut, 4, 4)
    for engine in ("bag", "gather", "auto", "native-gather"):
        np.testing.assert_array_equal(approx_matmul(a, b, table, engine=engine).numpy(), want)
    lowrank = wide_factor_table()
    want = gather_reference(a, b, lowrank.table, 4, 4)
    for engine in ("lowrank", "native"):
        np.testing.assert_array_equal(approx_matmul(a, b, lowrank, engine=engine).numpy(), want)


@pytest.mark.parametrize("shape_a, shape_b", [
    ((2, 3, 5, 7), (2, 3, 7, 4)),      # attention: (B, H, T, d) @ (B, H, d, T)
    ((4, 5, 7), (7, 6)),               # Linear: batch on a only
    ((5, 7), (4, 7, 6)),               # batch on b only
    ((3, 1, 5, 7), (2, 7, 4)),         # broadcast both ways
    ((1, 5, 7), (1, 7, 4)),
    ((7,), (7, 4)),                    # 1-D operands, like torch.matmul
    ((5, 7), (7,)),
    ((7,), (7,)),
])
@pytest.mark.parametrize("spec", ["trunc(k=4)@s8", "mitchell@u8"])
def test_batched_shapes_follow_torch_matmul(spec, shape_a, shape_b):
    table = tables_of(spec)[0]
    rng = np.random.default_rng(5)
    lo, hi = table.a_range
    a = rng.integers(lo, hi + 1, size=shape_a)
    b = rng.integers(lo, hi + 1, size=shape_b)
    want_shape = torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).shape
    a2 = a[None] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    want = gather_reference(a2, b2, table.table, 8, 8)
    if a.ndim == 1:
        want = want[..., 0, :]
    if b.ndim == 1:
        want = want[..., 0]
    for engine in approx.ENGINES:
        if engine in ("lowrank", "native") and table.plan.int8 is None:
            continue
        got = approx_matmul(torch.from_numpy(a), torch.from_numpy(b), table, engine=engine)
        assert got.shape == want_shape, engine
        np.testing.assert_array_equal(got.numpy(), want.reshape(want_shape), err_msg=engine)


def test_blocking_and_chunking_paths(monkeypatch):
    # tiny block budgets force the P-, K- and k-chunk loops of both engines
    monkeypatch.setattr(approx.lowrank, "BLOCK_ELEMENTS", 300)
    monkeypatch.setattr(approx.bag, "BAG_BLOCK_ELEMENTS", 600)
    monkeypatch.setattr(approx.lowrank, "PART_ELEMENTS", 40)
    rng = np.random.default_rng(6)
    for spec in ("trunc(k=8)@u8", "mitchell@s8"):
        table = tables_of(spec)[0]
        a, b = operands(rng, table, (2, 21, 45), (45, 10))
        want = gather_reference(a, b, table.table, 8, 8)
        for engine in ("lowrank", "bag", "gather"):
            if engine == "lowrank" and table.plan.int8 is None:
                continue
            np.testing.assert_array_equal(
                approx_matmul(a, b, table, engine=engine).numpy(), want, err_msg=engine)


def test_int32_accumulator_bound_chunks_long_reductions():
    # all-extreme u8 operands: every int8 digit product is at the maximum magnitude
    table = tables_of("exact@u8")[0]
    K = 70000
    a = np.full((2, K), 255)
    b = np.zeros((K, 3), dtype=np.int64)
    b[:, 0], b[:, 1], b[:, 2] = 255, 0, 128
    got = approx_matmul(a, b, table, engine="lowrank").numpy()
    np.testing.assert_array_equal(got, [[K * 255 * 255, 0, K * 255 * 128]] * 2)


def test_float_fallback_when_int_mm_unavailable(monkeypatch):
    monkeypatch.setitem(approx.cache.PROBES, "int_mm", False)
    rng = np.random.default_rng(8)
    table = tables_of("bam(h=2,v=6)@s8")[0]
    a, b = operands(rng, table, (13, 1100), (1100, 5))  # K*T*2^14 >= 2^24: float64
    np.testing.assert_array_equal(approx_matmul(a, b, table, engine="lowrank").numpy(),
                                  gather_reference(a, b, table.table, 8, 8))


def test_operand_dtypes():
    table = tables_of("drum(k=4)@s8")[0]
    rng = np.random.default_rng(9)
    a, b = operands(rng, table, (6, 10), (10, 4))
    want = gather_reference(a, b, table.table, 8, 8)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.float32, torch.float64):
        ta = torch.from_numpy(a).to(dtype)
        tb = torch.from_numpy(b).to(dtype)
        np.testing.assert_array_equal(approx_matmul(ta, tb, table).numpy(), want)
    np.testing.assert_array_equal(approx_matmul(a, b, table).numpy(), want)  # numpy in


def test_bad_operands_name_the_value():
    table = tables_of("drum(k=4)@s8")[0]
    ok = torch.zeros(3, 4, dtype=torch.int64)
    with pytest.raises(InputError, match=r"operand a holds 128, outside the range -128\.\.127"):
        approx_matmul(torch.full((2, 3), 128), ok, table)
    with pytest.raises(InputError, match=r"operand b holds -129"):
        approx_matmul(torch.zeros(2, 3), torch.full((3, 4), -129.0), table)
    with pytest.raises(InputError, match=r"operand a holds 1\.5, not an integer"):
        approx_matmul(torch.tensor([[1.5, 0, 0]]), ok, table)
    with pytest.raises(InputError, match="not an integer"):
        approx_matmul(torch.tensor([[float("nan"), 0, 0]]), ok, table)
    with pytest.raises(InputError, match="operand a holds inf, not an integer"):
        approx_matmul(torch.tensor([[0, float("inf"), 0]]), ok, table)
    with pytest.raises(InputError, match=r"operand b holds 1e\+30, outside the range"):
        approx_matmul(ok.T, torch.full((3, 4), 1e30, dtype=torch.float64), table)
    with pytest.raises(InputError, match="inner sizes 3 and 5 differ"):
        approx_matmul(torch.zeros(2, 3), torch.zeros(5, 4), table)
    with pytest.raises(InputError, match="do not broadcast"):
        approx_matmul(torch.zeros(2, 2, 3), torch.zeros(3, 3, 4), table)
    with pytest.raises(InputError, match="unknown engine 'fast': expected one of auto, "):
        approx_matmul(ok.T, ok, table, engine="fast")
    unsigned = tables_of("exact@u8")[0]
    with pytest.raises(InputError, match=r"operand a holds -1, outside the range 0\.\.255"):
        approx_matmul(torch.full((1, 3), -1), ok, unsigned)


def test_bad_tables():
    with pytest.raises(InputError, match=r"axis 0 has 3 entries"):
        ProductTable(np.zeros((3, 4), dtype=np.int64), signed=False)
    with pytest.raises(InputError, match="must be 2-D"):
        ProductTable(np.zeros(4, dtype=np.int64), signed=False)
    with pytest.raises(InputError, match=r"axis 0 has 2048 entries: expected 2\^w codes with "
                                         r"1 <= w <= 8"):
        ProductTable(np.zeros((2048, 2), dtype=np.int64), signed=False)
    with pytest.raises(InputError, match="must hold integers"):
        ProductTable(np.full((4, 4), 0.5), signed=False)


def test_product_table_attributes():
    table = tables_of("trunc(k=4)@s8x4")[0]
    assert (table.wa, table.wb) == (8, 4)
    assert table.a_range == (-128, 127) and table.b_range == (-8, 7)
    assert not table.is_exact
    assert tables_of("booth@u8")[0].is_exact
    assert table.name == "trunc(k=4)@s8x4"
    modes = tables_of("cfgtrunc@u8")
    assert [t.name for t in modes][1] == "cfgtrunc@u8 mode 1"
    # identical tables share one cached plan
    again = ProductTable(table.table.copy(), signed=True)
    assert again.key == table.key and again.plan is table.plan


def test_factorization_is_exact_and_rank_revealing():
    # peeling stops after exactly rank(table) integer terms
    for spec in ("trunc(k=4)@u8", "drum(k=4)@s8", "mitchell(t=3)@u8", "kulkarni@s8"):
        lut = parse_spec(spec).model_table()
        terms = _lowrank.peel(lut)
        assert len(terms) == np.linalg.matrix_rank(lut.astype(float)), spec
        assert np.array_equal(sum(np.outer(u, v) for u, v in terms), lut)
    # known structure: DRUM is a product of two rounded operands (rank 1);
    # dropping k=4 columns leaves an error of rank 4 (one term per dropped column)
    assert len(_lowrank.peel(parse_spec("drum(k=4)@u8").model_table())) == 1
    t = parse_spec("trunc(k=4)@u8")
    err = t.model_table() - np.outer(t.fmt.a_values(), t.fmt.b_values())
    assert len(_lowrank.peel(err)) == 4


def test_int8_plan_digits_and_centering():
    u = np.array([0, 301, -200, 7])          # gcd 1, span 501: two base-256 digits
    v = np.array([1, 2, 3])
    plan = _lowrank.Int8Plan.build([(u, v)], (4, 3))
    assert np.array_equal(plan.reconstruct(), np.outer(u, v))
    for _, f, g in plan.groups:
        assert f.dtype == np.int8 and g.dtype == np.int8
    assert plan.stacks == 2


# -- gradients -------------------------------------------------------------------------

def test_ste_gradients_equal_exact_matmul():
    table = tables_of("mitchell(t=3)@s8")[0]
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (2, 3, 5, 7), generator=gen).double().requires_grad_()
    b = torch.randint(-128, 128, (3, 7, 4), generator=gen).double().requires_grad_()
    w = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64)
    out = approx_matmul_grad(a, b, table)
    assert torch.equal(out, approx_matmul(a, b, table).double())
    (out * w).sum().backward()
    a2 = a.detach().clone().requires_grad_()
    b2 = b.detach().clone().requires_grad_()
    (torch.matmul(a2, b2) * w).sum().backward()
    assert torch.equal(a.grad, a2.grad) and torch.equal(b.grad, b2.grad)


def test_table_gradient_hand_computed():
    # unsigned 2-bit operands (values 0..3); lut[x, y] given directly
    lut = np.array([[0, 0, 0, 0],
                    [0, 1, 3, 3],
                    [0, 2, 4, 7],
                    [0, 3, 6, 8]])
    table = ProductTable(lut, signed=False)
    a = torch.tensor([[1.0, 3.0]], requires_grad=True)        # (1, 2)
    b = torch.tensor([[2.0, 0.0], [1.0, 3.0]], requires_grad=True)  # (2, 2)
    out = approx_matmul_grad(a, b, table, grad="table")
    # forward: [lut[1,2] + lut[3,1], lut[1,0] + lut[3,3]] = [3 + 3, 0 + 8]
    assert out.tolist() == [[6.0, 8.0]]
    out.backward(torch.tensor([[1.0, 10.0]]))
    # dL/da[0,0] = 1 * Da(1, 2) + 10 * Da(1, 0); Da(1, y) = (lut[2,y] - lut[0,y]) / 2
    #            = 1 * (4 - 0)/2 + 10 * 0 = 2
    # dL/da[0,1] = 1 * Da(3, 1) + 10 * Da(3, 3); Da(3, y) = lut[3,y] - lut[2,y] (top end)
    #            = 1 * (3 - 2) + 10 * (8 - 7) = 11
    assert a.grad.tolist() == [[2.0, 11.0]]
    # dL/db[0,0] = 1 * Db(1, 2) = (lut[1,3] - lut[1,1]) / 2 = 1
    # dL/db[0,1] = 10 * Db(1, 0) = 10 * (lut[1,1] - lut[1,0]) = 10   (bottom end)
    # dL/db[1,0] = 1 * Db(3, 1) = (lut[3,2] - lut[3,0]) / 2 = 3
    # dL/db[1,1] = 10 * Db(3, 3) = 10 * (lut[3,3] - lut[3,2]) = 20
    assert b.grad.tolist() == [[1.0, 10.0], [3.0, 20.0]]


def test_table_gradient_matches_brute_force_and_exact_table_gives_ste():
    rng = np.random.default_rng(11)
    for spec in ("drum(k=3)@s8", "mitchell@u8"):
        table = tables_of(spec)[0]
        lo, hi = table.a_range
        a_np = rng.integers(lo, hi + 1, size=(2, 4, 6))
        b_np = rng.integers(lo, hi + 1, size=(6, 3))
        g_np = rng.standard_normal((2, 4, 3))
        a = torch.tensor(a_np, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(b_np, dtype=torch.float64, requires_grad=True)
        approx_matmul_grad(a, b, table, grad="table").backward(torch.from_numpy(g_np))
        # brute force over the value-indexed table
        vals = np.arange(lo, hi + 1)
        tv = table.table[np.ix_(vals & 255, vals & 255)].astype(float)
        da = np.gradient(tv, axis=0)   # central inside, one-sided at the ends
        db = np.gradient(tv, axis=1)
        ia, ib = a_np - lo, b_np - lo
        ga = np.einsum("bmn,bmkn->bmk", g_np, da[ia[:, :, :, None], ib[None, None, :, :]])
        gb = np.einsum("bmn,bmkn->kn", g_np, db[ia[:, :, :, None], ib[None, None, :, :]])
        np.testing.assert_allclose(a.grad.numpy(), ga, rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(b.grad.numpy(), gb, rtol=1e-9, atol=1e-6)
    exact = tables_of("exact@s8")[0]
    a = torch.randint(-128, 128, (5, 6)).float().requires_grad_()
    b = torch.randint(-128, 128, (6, 2)).float().requires_grad_()
    approx_matmul_grad(a, b, exact, grad="table").sum().backward()
    assert torch.equal(a.grad, torch.ones(5, 2) @ b.detach().T)
    assert torch.equal(b.grad, a.detach().T @ torch.ones(5, 2))


def test_bad_gradient_kind():
    table = tables_of("exact@s8")[0]
    with pytest.raises(InputError, match="unknown gradient 'fd'"):
        approx_matmul_grad(torch.zeros(2, 2), torch.zeros(2, 2), table, grad="fd")


def test_batched_float_path_chunks_beyond_2_53():
    # |lut| ~ 2^38.8: K = 20000 pushes K * bound past 2^53, so K is chunked in float64
    lut = np.outer(np.arange(16), np.arange(16)) << 31
    table = ProductTable(lut, signed=False)
    rng = np.random.default_rng(12)
    a = rng.integers(0, 16, size=(2, 2, 20000))
    b = rng.integers(0, 16, size=(2, 20000, 2))
    a[0, 0] = 15
    b[0, :, 0] = 15
    got = approx_matmul(a, b, table, engine="lowrank").numpy()
    np.testing.assert_array_equal(got, gather_reference(a, b, lut, 4, 4))
    assert got[0, 0, 0] == 20000 * 225 << 31


def test_reduced_float32_matmul_precision_is_not_trusted():
    table = tables_of("trunc(k=4)@s8")[0]
    rng = np.random.default_rng(13)
    a, b = operands(rng, table, (3, 9, 40), (3, 40, 8))
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")   # may use bf16 inside float32 GEMMs
        got = approx_matmul(a, b, table, engine="lowrank").numpy()
    finally:
        torch.set_float32_matmul_precision(before)
    np.testing.assert_array_equal(got, gather_reference(a, b, table.table, 8, 8))


@pytest.mark.parametrize("variant", [0, 1])
def test_both_batched_lowrank_variants(monkeypatch, variant):
    # variant 0: one batched float GEMM over the terms; 1: a loop of int8 GEMMs
    costs = [(0.0, 1.0), (1.0, 0.0)][variant]
    monkeypatch.setattr(approx.lowrank, "batched_costs", lambda *args: costs)
    table = tables_of("bam(h=2,v=6)@u8")[0]
    rng = np.random.default_rng(14)
    a, b = operands(rng, table, (2, 3, 6, 11), (3, 11, 5))
    np.testing.assert_array_equal(approx_matmul(a, b, table, engine="lowrank").numpy(),
                                  gather_reference(a, b, table.table, 8, 8))


@pytest.mark.parametrize("shape_a, shape_b", [((3, 0), (0, 4)), ((0, 5), (5, 2)),
                                              ((2, 5), (5, 0)), ((0, 2, 5), (5, 3))])
def test_empty_operands_follow_torch_matmul(shape_a, shape_b):
    table = tables_of("drum(k=4)@u8")[0]
    a = torch.zeros(shape_a, dtype=torch.int64)
    b = torch.zeros(shape_b, dtype=torch.int64)
    for engine in approx.ENGINES:
        got = approx_matmul(a, b, table, engine=engine)
        assert got.shape == torch.matmul(a, b).shape and not got.any()


@pytest.mark.parametrize("spec", ["drum(k=4)@s8", "trunc(k=4)@u8", "mitchell@s8"])
@pytest.mark.parametrize("shape_a, shape_b", [((4, 6, 9), (9, 5)), ((2, 1, 5, 7), (2, 3, 7, 4)),
                                              ((7, 10), (10, 3))])
def test_repeated_auto_calls_tune_and_stay_exact(spec, shape_a, shape_b):
    # the first call of a class times the engines and stores the fastest; every call,
    # before and after, equals the plain gather
    table = tables_of(spec)[0]
    rng = np.random.default_rng(15)
    a, b = operands(rng, table, shape_a, shape_b)
    want = gather_reference(a, b, table.table, 8, 8)
    for _ in range(4):
        got = approx_matmul(torch.from_numpy(a), torch.from_numpy(b), table)
        np.testing.assert_array_equal(got.numpy(), want)
    tuned = approx.cache.tuned(table, shape_a, shape_b)
    assert tuned in ("lowrank", "terms", "bag", "gather", "native", "native-gather")
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    batch = torch.broadcast_shapes(ta.shape[:-2], tb.shape[:-2])
    walkable = all(_native.batch_stride(t.shape[:-2], t.stride()[:-2], batch) is not None
                   for t in (ta, tb))
    if tuned.startswith("native") and walkable:   # later calls took the prepared call
        assert approx.native.fast_key(table, ta, tb) in approx.cache.FAST


@pytest.mark.parametrize("shape_a, shape_b", [((3, 6, 9), (9, 5)), ((2, 1, 5, 7), (2, 3, 7, 4)),
                                              ((7, 10), (10, 3)), ((6, 11), (2, 11, 4))])
def test_terms_engine_is_exact(shape_a, shape_b):
    table = tables_of("bam(h=2,v=6)@s8")[0]
    rng = np.random.default_rng(16)
    a, b = operands(rng, table, shape_a, shape_b)
    ca = torch.from_numpy(a) & 255
    cb = torch.from_numpy(b) & 255
    batch = torch.broadcast_shapes(ca.shape[:-2], cb.shape[:-2])
    got = approx.tuner.ENGINE_FUNCTIONS["terms"](ca, cb, batch, table.plan)
    np.testing.assert_array_equal(got.numpy(), gather_reference(a, b, table.table, 8, 8))


def strided_cases(rng, table: ProductTable):
    """Operand pairs as the models hand them over: views, not copies."""
    lo, hi = table.a_range
    blo, bhi = table.b_range

    def a_(*shape):
        return torch.from_numpy(rng.integers(lo, hi + 1, size=shape))

    def b_(*shape):
        return torch.from_numpy(rng.integers(blo, bhi + 1, size=shape))

    a, w = a_(3, 10, 12), b_(7, 12)
    k = b_(2, 9, 3, 12)                                # attention keys (B, T, H, dh)
    q = a_(2, 3, 8, 12)
    return [
        (a, w.t()),                                    # a Linear layer: b a transposed view
        (a_(4, 40, 48), b_(64, 48).t()),               # ... beyond one gather block
        (a[:, ::2, 1:10], w.t()[1:10]),                # sliced rows and columns
        (a.transpose(-1, -2).contiguous().transpose(-1, -2), w.t()),   # column-major a
        (q, k.permute(0, 2, 3, 1)),                    # Q K^T: batch dims that do not
        (q.float(), k.permute(0, 2, 3, 1).float()),    # collapse into one stride
        (a[:1].expand(4, 10, 12), b_(4, 5, 12).transpose(-1, -2)),   # expanded a, b^T
        (a[:, None], b_(3, 2, 12, 5).transpose(0, 1).contiguous().transpose(0, 1)),
    ]


@pytest.mark.parametrize("spec", ["trunc(k=4)@s8", "mitchell@s8", "bam(h=2,v=6)@u8", None])
def test_every_engine_reads_strided_operands(spec):
    # the GemmHook hands operands over without copies: every engine, native kernels
    # included, reads transposed, sliced, permuted and broadcast views bit-exactly
    rng = np.random.default_rng(21)
    table = (tables_of(spec)[0] if spec else
             ProductTable(rng.integers(-3000, 3000, size=(256, 256)), signed=True,
                          name="random"))
    for x, y in strided_cases(rng, table):
        want = gather_reference(x.numpy(), y.numpy(), table.table, 8, 8)
        for engine in approx.ENGINES:
            if engine in ("lowrank", "native") and table.plan.int8 is None:
                continue
            for _ in range(3 if engine == "auto" else 1):    # auto: tuned, then fast path
                got = approx_matmul(x, y, table, engine=engine)
                np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{engine} "
                                              f"{tuple(x.shape)} @ {tuple(y.shape)}")
        if approx.cache.tuned(table, x.shape, y.shape).startswith("native"):
            # the third call took the prepared call, on copies where one stride cannot
            # walk the batch dimensions (Q K^T)
            batch = tuple(got.shape[:-2])

            def walkable(*ts, batch=batch):
                return all(_native.batch_stride(tuple(t.shape[:-2]), tuple(t.stride()[:-2]),
                                                batch) is not None for t in ts)
            call = approx.cache.FAST.get(approx.native.fast_key(table, x, y))
            if walkable(x, y):
                assert not call.contiguous
            elif walkable(x.contiguous(), y.contiguous()):
                assert call.contiguous
            else:
                assert call is None
        if table.plan.int8 is not None:
            ca, cb = x.to(torch.int64) & 255, y.to(torch.int64) & 255
            batch = tuple(torch.broadcast_shapes(x.shape[:-2], y.shape[:-2]))
            got = approx.tuner.ENGINE_FUNCTIONS["terms"](ca, cb, batch, table.plan)
            np.testing.assert_array_equal(got.numpy(), want, err_msg="terms")

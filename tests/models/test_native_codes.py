"""The kernels' operand check and code conversion, the plane gather's lane orders and
row tables, and the int16 pairs engine (models/approx_kernels.cc), bit for bit against
the definition: the vector conversion of contiguous integer rows in every integer
dtype, a bad value in every lane position and in the tail; the gather along rows, down
columns and by row tables on the shapes where the choice between them changes, for
tables of 1 to 4 byte planes; narrow blocks with 2 or 4 rows a vector and row tables of
16 or 32 lanes an entry; DRUM's int16 pairs on odd K, tails, the int8 digits'
fallbacks and a split by columns; the huge-page arena the planes live in."""

import numpy as np
import pytest
import torch
from axsa.models.approx import ProductTable, approx_matmul
from test_approx import gather_reference, tables_of
from test_native import kinds, native

from axsa.errors import InputError

K = 131   # two 64-lane int8 vectors and a tail; 16 int64 vectors and a tail


def bad_values(dtype, lo, hi):
    """Values `dtype` holds that are outside lo..hi (2^40: beyond int32 too)."""
    info = torch.iinfo(dtype)
    return [v for v in (lo - 1, hi + 1, info.min, info.max, 2**40, -2**40)
            if info.min <= v <= info.max and not lo <= v <= hi]


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8, torch.uint8])
@pytest.mark.parametrize("spec", ["exact@s8", "exact@u8", "exact@s4", "drum(k=4)@s8"])
def test_codes_of_contiguous_rows(spec, dtype):
    table = tables_of(spec)[0]
    info = torch.iinfo(dtype)
    lo, hi = max(table.a_range[0], info.min), min(table.a_range[1], info.max)
    rng = np.random.default_rng(K)
    a = rng.integers(lo, hi + 1, size=(3, K + 5))
    b = rng.integers(lo, hi + 1, size=(K, 6))
    a[0], a[1] = lo, hi
    b[:, 0], b[:, 1] = lo, hi
    want = gather_reference(a[:, :K], b, table.table, table.wa, table.wb)
    ta, tb = torch.from_numpy(a).to(dtype), torch.from_numpy(b).to(dtype)
    # rows back to back (one run of values) and rows of a wider tensor (one run a row)
    for x in (ta[:, :K].contiguous(), ta[:, :K]):
        for kind in kinds(table):
            np.testing.assert_array_equal(native(table, kind, x, tb).numpy(), want,
                                          err_msg=f"{kind} {tuple(x.stride())}")
        for pos in (0, 1, 7, 8, 15, 16, 63, 64, 127, 128, K - 1):
            for value in bad_values(dtype, *table.a_range):
                y = x.clone() if x.is_contiguous() else ta.clone()[:, :K]
                y[1, pos] = value
                assert native(table, kinds(table)[0], y, tb) is None, (pos, value)
                with pytest.raises(InputError, match=f"operand a holds {value},"):
                    approx_matmul(y, tb, table)
    for value in bad_values(dtype, *table.b_range):
        y = tb.clone()
        y[K - 1, 5] = value             # the last value of b: the tail of its run
        assert native(table, kinds(table)[0], ta[:, :K], y) is None
        with pytest.raises(InputError, match=f"operand b holds {value},"):
            approx_matmul(ta[:, :K], y, table)


@pytest.mark.parametrize("m, k, n", [(64, 32, 10), (24, 24, 32), (130, 40, 9), (64, 5, 64),
                                     (200, 7, 100), (256, 16, 8), (16, 16, 16)])
def test_plane_gather_along_rows_and_down_columns(m, k, n, threads):
    # vit's head (64 rows, 10 columns) runs down the columns, attention's 24x32 along
    # the rows; the others lie on either side of the choice
    rng = np.random.default_rng(m * k + n)
    lut = rng.integers(-2**15, 2**15, size=(256, 256))
    table = ProductTable(lut, signed=True, name="random")
    a = rng.integers(-128, 128, size=(3, m, k))
    b = rng.integers(-128, 128, size=(3, k, n))
    got = native(table, "native-gather", torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_array_equal(got.numpy(), gather_reference(a, b, lut, 8, 8))


PLANES = pytest.mark.parametrize("bound", [2**7, 2**15, 2**23, 2**30],
                                 ids=["1-plane", "2-planes", "3-planes", "4-planes"])


def table_of_planes(rng, bound):
    """A random table of values in [-bound, bound) (1 to 4 byte planes), both extremes in
    it: lut[0, 0] = bound - 1, lut[255, 255] = -bound."""
    lut = rng.integers(-bound, bound, size=(256, 256))
    lut[0, 0], lut[255, 255] = bound - 1, -bound
    return lut, ProductTable(lut, signed=True, name="random")


def with_extremes(a, b):
    """a and b with the output's first row and column k * -bound (codes 255, values -1)
    and its last k * (bound - 1) (codes 0): the sums' full width."""
    a[..., 0, :], b[..., :, 0] = -1, -1
    a[..., -1, :], b[..., :, -1] = 0, 0
    return torch.from_numpy(a), torch.from_numpy(b)


def gather_by_k(a, b, lut):
    """sum_k lut[code(a[..., :, k]), code(b[..., k, :])] one k at a time (the definition,
    in the memory of one output)."""
    ca, cb = np.asarray(a) & 255, np.asarray(b) & 255
    out = np.zeros((*ca.shape[:-1], cb.shape[-1]), dtype=np.int64)
    for k in range(ca.shape[-1]):
        out += lut[ca[..., :, k][..., :, None], cb[..., k, :][..., None, :]]
    return out


# (batch, m, k, n) and the way the plane gather takes each, at one thread (at two the
# rows split in halves of 64-row blocks, which may take another way)
WAYS = {
    # row tables of 64 lanes an entry (k in chunks of 16 to 64)
    "tables-64": [(1, 512, 5, 64), (1, 600, 40, 100), (1, 4096, 200, 40)],
    # down the columns in two chunks of 256 rows, then along the last 8 rows (4 a vector)
    "down-then-along": [(1, 520, 300, 9)],
    # at most 16 (32) columns along the rows: 4 (2) rows share a vector, a short last
    # group (5, 9, 7 rows) repeats its last row
    "packed-rows": [(3, 5, 40, 9), (3, 9, 300, 16), (3, 7, 33, 17), (3, 24, 300, 32)],
    # row tables of 16 or 32 lanes an entry, where the cost model takes them: 1030 x 32
    # and 4096 x 20 at 1-4 planes (32 lanes), 4096 x 12 and 2200 x 12 at 2-4 (16 lanes;
    # at 1 plane down the columns); planes at byte 16 j or 32 j, two vectors an entry
    # from 3 planes of 32 lanes
    "tables-16-32": [(1, 1030, 33, 32), (1, 4096, 300, 20), (1, 4096, 100, 12),
                     (1, 2200, 70, 12)],
}


@PLANES
@pytest.mark.parametrize("g, m, k, n", [s for shapes in WAYS.values() for s in shapes],
                         ids=[f"{way}-{'x'.join(map(str, s))}" for way, shapes in WAYS.items()
                              for s in shapes])
def test_plane_gather_ways(g, m, k, n, bound, threads):
    # every way with 1-4 planes, the 16-bit sums weighed every 256 k (K = 300) and kept
    # across chunks of k
    rng = np.random.default_rng(bound % 1000 + m + k + n)
    lut, table = table_of_planes(rng, bound)
    a, b = with_extremes(rng.integers(-128, 128, size=(g, m, k)),
                         rng.integers(-128, 128, size=(g, k, n)))
    got = native(table, "native-gather", a, b)
    np.testing.assert_array_equal(got.numpy(), gather_by_k(a, b, lut))


@pytest.mark.parametrize("generic", [False, True], ids=["simd", "generic"])
@pytest.mark.parametrize("m, k, n", [(9, 33, 40), (24, 24, 32), (300, 64, 17), (5, 1, 9),
                                     (7, 20, 1), (3, 110000, 3)])
def test_int16_pairs_of_a_rank1_table(m, k, n, generic, threads):
    # DRUM at 8 bits: lut == outer(u, v) with factors of 264 values (two int8 parts each),
    # so the kernel multiplies int16 pairs of k; odd K pads a pair, K < 4 and N = 1 take
    # the int8 digits, and K = 110000 too (int32 pair sums would overflow: K * 144^2)
    table = tables_of("drum(k=4)@s8")[0]
    assert table.plan.native_data.get("u16")
    rng = np.random.default_rng(m + k + n)
    a = rng.integers(-128, 128, size=(2, m, k))
    b = rng.integers(-128, 128, size=(2, k, n))
    a[0, 0], b[0, :, 0] = -128, -128    # u(-128) v(-128) = 144^2 in every product
    want = gather_reference(a, b, table.table, 8, 8) if k < 1000 else \
        native(table, "native-gather", torch.from_numpy(a), torch.from_numpy(b))
    for planes in (True, False):         # pairs, and the int8 digits of the same call
        got = native(table, "native", torch.from_numpy(a), torch.from_numpy(b), generic,
                     planes=planes)
        np.testing.assert_array_equal(got.numpy(), np.asarray(want), err_msg=str(planes))


def test_huge_page_arena_hands_out_zeroed_disjoint_arrays():
    from axsa.models import _native
    arena = _native._HugeArena()
    arrays = [arena.zeros((256, 2, 256)) for _ in range(40)]   # 40 x 128 KB: two chunks
    big = arena.zeros((8 << 20,))                                # beyond a chunk: numpy's
    for i, x in enumerate(arrays):
        assert x.dtype == np.uint8 and not x.any() and x.ctypes.data % 4096 == 0
        x[...] = i + 1
    assert [int(x[0, 0, 0]) for x in arrays] == list(range(1, 41))   # none overlaps
    assert all(int(x[-1, -1, -1]) == i + 1 for i, x in enumerate(arrays))
    assert big.shape == (8 << 20,) and not big.any()


def test_int16_pairs_split_by_columns(threads):
    # one GEMM of fewer rows than columns: at 2 threads each takes a block of columns,
    # and looks up b's factors of its own columns only
    table = tables_of("drum(k=4)@s8")[0]
    rng = np.random.default_rng(12)
    a = rng.integers(-128, 128, size=(40, 50))
    b = rng.integers(-128, 128, size=(50, 100))
    got = native(table, "native", torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_array_equal(got.numpy(), gather_reference(a, b, table.table, 8, 8))

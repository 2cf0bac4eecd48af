"""The fused C++ kernels (models/approx_kernels.cc): exact for every family, both builds
(AVX512-VNNI where the CPU has it, and the portable loops), any strides, dtypes, tails."""

from pathlib import Path

import numpy as np
import pytest
import torch
from axsa.models import _fastcall, _native, approx
from axsa.models.approx import ProductTable, approx_matmul
from axsa.rtl.multipliers import parse_spec
from test_approx import SPECS, gather_reference, operands, tables_of, wide_factor_table

from axsa.errors import InputError, ToolError


def native(table, kind, a, b, generic=False, codes=False, planes=True):
    """One kernel call on these operands (values, or codes with `codes`)."""
    batch = tuple(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    return _native.NativeCall(table, kind, a, b, batch, codes=codes, generic=generic,
                              planes=planes)(a, b)


def kinds(table):
    return ["native", "native-gather"] if table.plan.int8 is not None else ["native-gather"]


@pytest.mark.parametrize("generic", [False, True], ids=["simd", "generic"])
@pytest.mark.parametrize("spec", SPECS + ["cfgtrunc@s8x4", "drum(k=3)@s8x4", "mitchell(t=2)@u8"])
def test_every_family_both_builds(spec, generic):
    # M, N not multiples of the 8x32 micro tile; K not a multiple of 4 / width
    rng = np.random.default_rng(abs(hash(spec)) % 2**32)
    for table in tables_of(spec):
        a, b = operands(rng, table, (13, 37), (37, 19))
        want = gather_reference(a, b, table.table, table.wa, table.wb)
        for kind in kinds(table):
            got = native(table, kind, torch.from_numpy(a), torch.from_numpy(b), generic)
            np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{table.name} {kind}")


def test_simd_build_is_used_where_the_cpu_has_vnni():
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    has = all(f" {f}" in flags for f in ("avx512f", "avx512bw", "avx512dq", "avx512_vnni"))
    assert bool(_native.library().axsa_approx_simd()) == has
    assert _native.library(generic=True).axsa_approx_simd() == 0
    # 2: also the digit-plane front end (AVX512-VBMI byte permutations)
    assert (_native.library().axsa_approx_simd() == 2) == (has and " avx512vbmi" in flags)


@pytest.mark.parametrize("spec", ["exact@s8", "trunc(k=4)@s8", "trunc(k=8)@u8", "roba@s8",
                                  "drum(k=4)@u8", "bam(h=4,v=9)@u8", "mitchell(t=3)@s8",
                                  "cfgtrunc@s8x4", "trunc(k=2)@s4", "wide"])
def test_digit_planes_equal_the_scalar_front_end(spec):
    # the plane front end (K >= 8 on AVX512-VBMI CPUs) against the scalar one and the
    # definition: short rows packed 4 and 2 to a vector (K <= 16, <= 32) with row tails,
    # rows over several 64-byte chunks, column tails of 16-column blocks, K tails of 4,
    # matrix-vector products
    rng = np.random.default_rng(abs(hash(spec)) % 2**32)
    tables = [wide_factor_table()] if spec == "wide" else tables_of(spec)
    shapes = [(1, 8, 1), (3, 15, 7), (5, 16, 16), (6, 17, 24), (9, 24, 32), (2, 31, 17),
              (7, 32, 40), (5, 33, 9), (4, 63, 3), (3, 64, 33), (2, 65, 2), (3, 130, 8),
              (5, 16, 1), (6, 24, 1), (9, 33, 1), (3, 130, 1),   # N = 1: dot products
              (7, 1, 5), (4, 3, 9), (3, 7, 17)]   # K < 8: the scalar front end, padded
    for table in tables:
        for m, k, n in shapes:
            lo, hi = table.a_range
            blo, bhi = table.b_range
            a = rng.integers(lo, hi + 1, size=(m, k))
            b = rng.integers(blo, bhi + 1, size=(k, n))
            a[0, ::2], b[::3, 0] = lo, bhi           # extremes in the row and column terms
            a[-1, 1::2], b[1::3, -1] = hi, blo
            want = gather_reference(a, b, table.table, table.wa, table.wb)
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            for planes in (True, False):
                got = native(table, "native", ta, tb, planes=planes)
                np.testing.assert_array_equal(got.numpy(), want,
                                              err_msg=f"{table.name} {m}x{k}x{n} {planes}")
        # batched, b per batch and b shared (a Linear layer's weight)
        a, b = operands(rng, table, (3, 2, 5, 24), (3, 2, 24, 6))
        want = gather_reference(a, b, table.table, table.wa, table.wb)
        got = native(table, "native", torch.from_numpy(a), torch.from_numpy(b))
        np.testing.assert_array_equal(got.numpy(), want)
        got = native(table, "native", torch.from_numpy(a), torch.from_numpy(b[0, 0]))
        np.testing.assert_array_equal(got.numpy(), gather_reference(a, b[0, 0], table.table,
                                                                    table.wa, table.wb))


@pytest.mark.parametrize("generic", [False, True], ids=["simd", "generic"])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (8, 4, 16), (9, 3, 33), (17, 129, 47),
                                     (300, 20, 5), (7, 768, 200)])
def test_tile_tails_panels_and_row_chunks(m, k, n, generic):
    # 300 rows: two row chunks; K=768 with width 8: column panels narrower than N
    rng = np.random.default_rng(m * 1000 + k + n)
    for spec in ("bam(h=2,v=6)@s8", "roba@u8", "drum(k=4)@s8", "mitchell(t=3)@s8"):
        table = tables_of(spec)[0]
        lo, hi = table.a_range
        a = rng.integers(lo, hi + 1, size=(m, k))
        b = rng.integers(lo, hi + 1, size=(k, n))
        got = native(table, "native", torch.from_numpy(a), torch.from_numpy(b), generic)
        np.testing.assert_array_equal(got.numpy(), gather_reference(a, b, table.table, 8, 8),
                                      err_msg=spec)


def test_int32_chunks_of_long_digit_rows():
    # full Mitchell at u8 has width 128: K=600 gives K' = 76800 > 65536 digits per row,
    # so the int32 partial sums are cut into chunks; all-extreme operands
    table = tables_of("mitchell@u8")[0]
    rng = np.random.default_rng(4)
    a, b = operands(rng, table, (9, 600), (600, 5))
    want = gather_reference(a, b, table.table, 8, 8)
    for generic in (False, True):
        got = native(table, "native", torch.from_numpy(a), torch.from_numpy(b), generic)
        np.testing.assert_array_equal(got.numpy(), want)
        # one column: digit rows longer than the dot products' exact int32 bound
        got = native(table, "native", torch.from_numpy(a), torch.from_numpy(b[:, 3:4]),
                     generic)
        np.testing.assert_array_equal(got.numpy(), want[:, 3:4])
    exact = tables_of("exact@u8")[0]
    K = 70000
    a = torch.full((2, K), 255)
    b = torch.zeros((K, 3), dtype=torch.int64)
    b[:, 0], b[:, 2] = 255, 128
    np.testing.assert_array_equal(native(exact, "native", a, b).numpy(),
                                  [[K * 255 * 255, 0, K * 255 * 128]] * 2)


@pytest.mark.parametrize("n", [6, 1])    # 1: the matrix-vector loop
def test_gather_accumulators_and_wide_tables(n):
    rng = np.random.default_rng(5)
    for bound in (2**15, 2**30, 2**39):   # int32 sums; int64 sums; int64 table
        lut = rng.integers(-bound, bound, size=(256, 256))
        lut[0, 0] = bound - 1
        table = ProductTable(lut, signed=True, name=f"random {bound}")
        lo, hi = table.a_range
        a = rng.integers(lo, hi + 1, size=(5, 40))
        b = rng.integers(lo, hi + 1, size=(40, n))
        a[0] = 0
        b[:, 0] = 0                        # out[0, 0] = 40 * (bound - 1): beyond int32
        got = native(table, "native-gather", torch.from_numpy(a), torch.from_numpy(b))
        np.testing.assert_array_equal(got.numpy(), gather_reference(a, b, lut, 8, 8))


def test_strided_broadcast_and_batched_operands():
    table = tables_of("trunc(k=4)@s8")[0]
    rng = np.random.default_rng(6)
    a = torch.from_numpy(rng.integers(-128, 128, size=(3, 10, 12)))
    w = torch.from_numpy(rng.integers(-128, 128, size=(7, 12)))
    cases = [
        (a, w.t()),                                   # a Linear layer: b a transposed view
        (a[:, ::2, 1:10], w.t()[1:10]),               # sliced rows and columns
        (a.transpose(-1, -2).contiguous().transpose(-1, -2), w.t()),   # column-major a
        (a[:1], torch.from_numpy(rng.integers(-128, 128, size=(3, 12, 4)))),  # a broadcast
        (a[:, None], torch.from_numpy(rng.integers(-128, 128, size=(3, 2, 12, 5)))),
        (a[None, :2], torch.from_numpy(rng.integers(-128, 128, size=(4, 1, 12, 5)))),
    ]
    for x, y in cases:
        want = gather_reference(x.numpy(), y.numpy(), table.table, 8, 8)
        for engine in ("native", "native-gather", "auto"):
            for _ in range(3 if engine == "auto" else 1):    # auto: tuned, then fast path
                got = approx_matmul(x, y, table, engine=engine)
                np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{engine} "
                                              f"{tuple(x.shape)} @ {tuple(y.shape)}")


class CountingCall:
    """Stands in for a prepared call's C function and counts the calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


def test_fast_path_dtypes_and_bad_values(monkeypatch):
    table = tables_of("drum(k=4)@s8")[0]
    rng = np.random.default_rng(9)
    a, b = operands(rng, table, (6, 40), (40, 4))
    want = gather_reference(a, b, table.table, 8, 8)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.float32,
                  torch.float64):
        ta, tb = torch.from_numpy(a).to(dtype), torch.from_numpy(b).to(dtype)
        batch = ()
        approx.native.prepare_fast(table, "native", ta, tb, batch)
        call = approx.cache.FAST[approx.native.fast_key(table, ta, tb)]
        call.fn = counter = CountingCall(call.fn)
        with monkeypatch.context() as m:   # the path in Python (without the extension)
            m.setattr(_fastcall, "run", None)
            np.testing.assert_array_equal(approx_matmul(ta, tb, table).numpy(), want,
                                          err_msg=str(dtype))
        assert counter.calls == 1          # the inline key found the prepared call
        if _fastcall.run is not None:      # the same path in C++ (tests/models/test_fastcall.py)
            found = _fastcall.found()
            np.testing.assert_array_equal(approx_matmul(ta, tb, table).numpy(), want,
                                          err_msg=str(dtype))
            assert _fastcall.found() == found + 1 and counter.calls == 1
    pos = np.clip(a, 0, 127)
    ua = torch.from_numpy(pos).to(torch.uint8)
    np.testing.assert_array_equal(native(table, "native", ua, torch.from_numpy(b)).numpy(),
                                  gather_reference(pos, b, table.table, 8, 8))
    # a prepared call refuses a bad value; approx_matmul then names it
    bad = torch.from_numpy(a).float()
    approx.native.prepare_fast(table, "native", bad, torch.from_numpy(b).float(), ())
    for value, message in ((128.0, "holds 128, outside the range -128..127"),
                           (-129.0, "holds -129, outside"), (0.5, "holds 0.5, not an integer"),
                           (float("nan"), "not an integer"), (float("inf"), "holds inf")):
        x = bad.clone()
        x[3, 17] = value
        assert native(table, "native", x, torch.from_numpy(b).float()) is None
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
            approx_matmul(x, torch.from_numpy(b).float(), table)
    y = torch.from_numpy(b).to(torch.int32)
    y[5, 2] = 300
    with pytest.raises(InputError, match=r"operand b holds 300"):
        approx_matmul(torch.from_numpy(a).to(torch.int32), y, table)


def test_disabled_kernels_leave_the_torch_engines(monkeypatch):
    monkeypatch.setenv("AXSA_NATIVE", "0")
    table = tables_of("bam(h=2,v=6)@s8")[0]
    rng = np.random.default_rng(10)
    a, b = operands(rng, table, (2, 9, 20), (20, 7))
    assert not _native.available()
    costs = approx.costs.estimate(table.plan, 2, 1, 9, 20, 7)
    assert not any(name.startswith("native") for name in costs)
    np.testing.assert_array_equal(approx_matmul(a, b, table).numpy(),
                                  gather_reference(a, b, table.table, 8, 8))
    with pytest.raises(ToolError, match="disabled by AXSA_NATIVE=0"):
        approx_matmul(a, b, table, engine="native")


NO_KERNELS = """
import numpy as np, torch
from axsa.models.approx import ProductTable, approx_matmul
from axsa.rtl.multipliers import parse_spec
rng = np.random.default_rng(4)
for spec in ("drum(k=4)@s8", "mitchell@s8"):
    table = ProductTable.from_multiplier(parse_spec(spec))
    for shape_a, shape_b in (((7, 30), (30, 5)), ((2, 3, 9, 16), (2, 3, 16, 4))):
        a = torch.from_numpy(rng.integers(-128, 128, shape_a))
        b = torch.from_numpy(rng.integers(-128, 128, shape_b))
        for _ in range(3):                    # estimate, tune, tuned
            np.save(f"{spec}-{len(shape_a)}.npy", approx_matmul(a, b, table).numpy())
        np.save(f"{spec}-{len(shape_a)}-a.npy", a.numpy())
        np.save(f"{spec}-{len(shape_a)}-b.npy", b.numpy())
print("done")
"""


@pytest.mark.parametrize("compiler", ["missing", "failing"])
def test_no_compiler_leaves_the_torch_engines_with_one_warning(tmp_path, compiler):
    import os
    import subprocess
    import sys
    if compiler == "missing":
        cxx = str(tmp_path / "no-such-g++")
    else:   # answers --version, fails every compilation
        cxx = tmp_path / "broken-g++"
        cxx.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'broken 1.0'; exit 0; fi\n"
                       "echo 'broken: internal compiler error' >&2; exit 1\n")
        cxx.chmod(0o755)
        cxx = str(cxx)
    env = {**os.environ, "CXX": cxx, "AXSA_CACHE": str(tmp_path / "cache"), "AXSA_NATIVE": "1"}
    proc = subprocess.run([sys.executable, "-c", NO_KERNELS], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2, proc.stderr        # one warning, two lines: why, and the fix
    assert Path(cxx).name in warnings[0] and "unavailable" in warnings[0]
    assert "apt-get install g++" in warnings[1] and "set CXX" in warnings[1]
    assert proc.stderr.count("native emulation kernels are unavailable") == 1
    for spec in ("drum(k=4)@s8", "mitchell@s8"):
        for dims in (2, 4):
            got = np.load(tmp_path / f"{spec}-{dims}.npy")
            a, b = (np.load(tmp_path / f"{spec}-{dims}-{x}.npy") for x in "ab")
            lut = parse_spec(spec).model_table()
            np.testing.assert_array_equal(got, gather_reference(a, b, lut, 8, 8))
    assert not list((tmp_path / "cache").glob("approx/*/approx.so"))

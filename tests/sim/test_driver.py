"""The GEMM driver on every engine: equal to the table-based reference for odd shapes,
extreme operands, exact and approximate multipliers, signed and unsigned, 2/4/8 bits;
cycles equal to the cycle model; bad input named."""

import functools

import numpy as np
import pytest
from axsa.rtl.accelerator import Accelerator
from axsa.rtl.multipliers import parse_spec
from axsa.sim.cycles import predict_cycles
from axsa.sim.driver import Requant, emulate_gemm, run_gemm
from axsa.sim.reference import reference_gemm
from stream_designs import imported_lsb0

from axsa.errors import InputError


def operands(mult, M, K, N, kind, seed=0):
    """Random, all-minimum, all-maximum or alternating min/max operands."""
    rng = np.random.default_rng(seed)
    (alo, ahi), (blo, bhi) = mult.fmt.a_range(), mult.fmt.b_range()
    if kind == "random":
        return rng.integers(alo, ahi + 1, (M, K)), rng.integers(blo, bhi + 1, (K, N))
    if kind == "min":
        return np.full((M, K), alo), np.full((K, N), blo)
    if kind == "max":
        return np.full((M, K), ahi), np.full((K, N), bhi)
    A = np.where(rng.random((M, K)) < 0.5, alo, ahi)
    return A, np.where(rng.random((K, N)) < 0.5, blo, bhi)


def test_reference_gemm_by_hand():
    mult = parse_spec("exact@s2")
    # s2 values -2..1: [-2 1] @ [[1], [-2]] = -2 - 2 = -4
    assert reference_gemm([[-2, 1]], [[1], [-2]], mult.model_table(), mult.fmt).tolist() == [[-4]]
    # a table that is not a*b: every product 1 -> the sum counts K
    t = np.ones((4, 4), dtype=np.int64)
    assert reference_gemm(np.zeros((2, 5), int), np.zeros((5, 3), int), t, mult.fmt).tolist() \
        == [[5] * 3] * 2


def test_reference_gemm_is_blocked_and_exact(monkeypatch):
    import axsa.sim.reference as reference
    mult = parse_spec("drum(k=3)@u8")
    A, B = operands(mult, 9, 31, 6, "random", 4)
    full = reference_gemm(A, B, mult.model_table(), mult.fmt)
    monkeypatch.setattr(reference, "BLOCK_ELEMENTS", 7)  # many tiny blocks
    assert np.array_equal(reference_gemm(A, B, mult.model_table(), mult.fmt), full)
    assert np.array_equal(full, mult.model(A[:, :, None], B[None, :, :]).sum(axis=1))


# -- pysim --------------------------------------------------------------------------------

PYSIM_SPECS = [
    ("exact@s2", 0), ("exact@u2", 0), ("exact@s4", 0), ("exact@u4", 0), ("exact@s8", 0),
    ("exact@u8", 0), ("booth@s8", 0), ("drum(k=3)@u8", 0), ("mitchell@s8", 0),
    ("trunc(k=3,comp=1)@s4", 0), ("bam(h=1,v=2)@u2", 0), ("cfgtrunc(k=0/3/6)@s8", 2),
    ("ssm(m=4)@u8x4", 0),
]


@functools.cache
def pysim_engine(spec, R, C):
    from axsa.sim.pysim_engine import PysimEngine
    return PysimEngine(Accelerator(parse_spec(spec), R, C, max_k=64))


@pytest.mark.parametrize("spec, mode", PYSIM_SPECS)
def test_pysim_equals_reference(spec, mode):
    mult = parse_spec(spec)
    eng = pysim_engine(spec, 3, 2)
    table = mult.model_table(mode)
    cases = [((1, 1, 1), "random"), ((7, 13, 5), "random"), ((4, 6, 3), "min"),
             ((4, 6, 3), "max"), ((5, 4, 5), "minmax")]
    for (M, K, N), kind in cases:
        A, B = operands(mult, M, K, N, kind, seed=M * K)
        res = run_gemm(A, B, mult, engine=eng, mode=mode)
        assert np.array_equal(res.C, reference_gemm(A, B, table, mult.fmt)), (M, K, N, kind)
        assert res.cycles == res.predicted_cycles == predict_cycles(M, K, N, 3, 2)
        assert res.macs == M * K * N


def test_pysim_extremes_are_not_trivial():
    # the all-minimum case really reaches the top of the accumulator range
    mult = parse_spec("exact@s8")
    A, B = operands(mult, 2, 64, 2, "min")
    res = run_gemm(A, B, mult, engine=pysim_engine("exact@s8", 3, 2))
    assert res.C.tolist() == [[64 * 16384] * 2] * 2


@pytest.mark.parametrize("spec, mode", [("exact@s8", 0), ("drum(k=3)@u8", 0),
                                        ("cfgtrunc(k=0/4)@s4", 1), ("mitchell@u2", 0)])
def test_table_view_equals_reference(spec, mode):
    # word-level products (a*b for exact, a shared product ROM otherwise): same results
    mult = parse_spec(spec)
    A, B = operands(mult, 7, 13, 5, "random", 2)
    res = run_gemm(A, B, mult, engine="pysim", rows=3, cols=2, mode=mode, view="table")
    assert np.array_equal(res.C, reference_gemm(A, B, mult.model_table(mode), mult.fmt))
    assert res.cycles == predict_cycles(7, 13, 5, 3, 2)


# -- emulate ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, mode", [("exact@s8", 0), ("mitchell@u4", 0),
                                        ("cfgtrunc(k=0/5)@s8", 1), ("drum(k=2)@s8x4", 0)])
def test_emulate_equals_reference(spec, mode):
    mult = parse_spec(spec)
    A, B = operands(mult, 37, 53, 19, "random", 9)
    ref = reference_gemm(A, B, mult.model_table(mode), mult.fmt)
    res = run_gemm(A, B, mult, engine="emulate", mode=mode)
    assert np.array_equal(res.C, ref)
    assert (res.cycles, res.predicted_cycles, res.utilization) == (None, None, None)
    rq = Requant(77, 10, bits=6, signed=mult.fmt.signed)
    assert np.array_equal(run_gemm(A, B, mult, engine="emulate", mode=mode, requant=rq).C,
                          rq.apply(ref))
    assert np.array_equal(emulate_gemm(A, B, mult, mode), ref)


# -- the compiled engines: cxxrtl, verilator ------------------------------------------------

# (spec, mode, R, C, cells): the multiplier cells filled with the family's circuit (its
# gates) or with the engine's product tables (CXXRTL black boxes, Verilator DPI-C)
CXXRTL_SPECS = [("exact@s8", 0, 2, 2, "circuit"), ("drum(k=3)@u4", 0, 3, 5, "table"),
                ("cfgtrunc(k=0/2)@s2", 1, 2, 3, "circuit"), ("mitchell@s8", 0, 4, 4, "table")]
COMPILED = ["cxxrtl", "verilator"]


@functools.cache
def compiled_engine(engine, spec, R, C, cells):
    from axsa.sim.engine import make_engine
    return make_engine(engine, Accelerator(parse_spec(spec), R, C, max_k=128, view="cell"),
                       cells=cells)


@pytest.mark.slow
@pytest.mark.parametrize("engine", COMPILED)
@pytest.mark.parametrize("spec, mode, R, C, cells", CXXRTL_SPECS)
def test_compiled_equals_reference(engine, spec, mode, R, C, cells):
    mult = parse_spec(spec)
    eng = compiled_engine(engine, spec, R, C, cells)
    table = mult.model_table(mode)
    cases = [((1, 1, 1), "random"), ((7, 13, 5), "random"), ((37, 53, 19), "random"),
             ((37, 53, 19), "min"), ((8, 128, 8), "max"), ((9, 11, 13), "minmax")]
    for (M, K, N), kind in cases:
        A, B = operands(mult, M, K, N, kind, seed=M + K)
        res = run_gemm(A, B, mult, engine=eng, mode=mode)
        assert np.array_equal(res.C, reference_gemm(A, B, table, mult.fmt)), (M, K, N, kind)
        assert res.cycles == predict_cycles(M, K, N, R, C)
    # requantized, per-column parameters
    A, B = operands(mult, 11, 17, 2 * C + 1, "random", 1)
    m = np.arange(2 * C + 1) * 1000 - 3000
    s = np.arange(2 * C + 1) % 5 + 3
    rq = Requant(m, s, bits=5, signed=True)
    res = run_gemm(A, B, mult, engine=eng, mode=mode, requant=rq)
    assert np.array_equal(res.C, rq.apply(reference_gemm(A, B, table, mult.fmt)))


@pytest.mark.slow
def test_imported_verilog_on_compiled_and_pysim_table(tmp_path):
    mult, table = imported_lsb0(tmp_path)
    A, B = operands(mult, 7, 13, 5, "random", 3)
    expect = reference_gemm(A, B, table, mult.fmt)
    assert not np.array_equal(expect, A @ B)  # the circuit really is not exact
    for engine, view in (("cxxrtl", "circuit"), ("verilator", "circuit"),
                         ("pysim", "table")):
        res = run_gemm(A, B, mult, engine=engine, rows=2, cols=2, view=view)
        assert np.array_equal(res.C, expect), engine
        assert res.cycles == predict_cycles(7, 13, 5, 2, 2)
    with pytest.raises(InputError, match="pysim cannot"):
        run_gemm(A, B, mult, engine="pysim", view="circuit")


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("A, B, needle", [
    (np.array([[1, 2]]), np.array([[1], [2], [3]]), "1x2 and B is 3x1"),
    (np.array([[1.5]]), np.array([[1]]), "dtype float64"),
    (np.array([[200]]), np.array([[1]]), "A[0, 0] = 200"),
    (np.array([[1]]), np.array([[-129]]), "B[0, 0] = -129"),
    (np.array([1, 2]), np.array([[1], [2]]), "shape (2,)"),
])
def test_bad_operands_are_named(A, B, needle):
    with pytest.raises(InputError) as err:
        run_gemm(A, B, "exact@s8", engine="emulate")
    assert needle in str(err.value)


def test_bad_settings_are_named():
    A = np.ones((2, 3), int)
    B = np.ones((3, 2), int)
    with pytest.raises(InputError, match="mode 4"):
        run_gemm(A, B, "cfgtrunc(k=0/2)@s4", engine="emulate", mode=4)
    with pytest.raises(InputError, match="3 values but the GEMM has 2"):
        run_gemm(A, B, "exact@s4", engine="emulate", requant=Requant([1, 2, 3], 4))
    with pytest.raises(InputError, match="shift s = 0"):
        Requant(1, 0)
    with pytest.raises(InputError, match="rows"):
        run_gemm(A, B, "exact@s4", engine="pysim", rows=0)
    with pytest.raises(InputError, match="K = 3 exceeds"):
        run_gemm(A, B, "exact@s4", engine="pysim", rows=1, cols=1, max_k=2)
    with pytest.raises(InputError, match="unknown engine 'icarus' .known: emulate, pysim, "
                                         "cxxrtl, verilator"):
        run_gemm(A, B, "exact@s4", engine="icarus")
    with pytest.raises(InputError, match="unknown view 'fast'"):
        run_gemm(A, B, "exact@s4", engine="pysim", view="fast")

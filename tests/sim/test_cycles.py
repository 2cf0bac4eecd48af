"""The analytic cycle model: hand-computed values, and equality with the RTL over a grid."""

import numpy as np
import pytest
from axsa.rtl.accelerator import Accelerator
from axsa.rtl.multipliers import parse_spec
from axsa.sim.cycles import predict_cycles, steady_state_utilization, tile_count, utilization
from axsa.sim.driver import run_gemm
from axsa.sim.pysim_engine import PysimEngine


def test_formula_by_hand():
    # 1 tile on 16x16, K=64: 64 + 0 + 16 + 16 + 7
    assert predict_cycles(16, 64, 16, 16, 16) == 103
    # 64x64 output on 16x16: 16 tiles, K=64 >= 16: 64 + 15*64 + 39
    assert predict_cycles(64, 64, 64, 16, 16) == 1063
    # K=3 < max(R, C)=5 on 2x5: tiles 3*2=6 spaced 5 apart: 3 + 5*5 + 2 + 5 + 7
    assert predict_cycles(5, 3, 6, 2, 5) == 42
    assert tile_count(37, 19, 4, 4) == 10 * 5
    assert utilization(64, 64, 64, 16, 16, 1063) == pytest.approx(262144 / (1063 * 256))
    assert steady_state_utilization(8, 16, 4) == 0.5


def test_utilization_target():
    # K >= 4 x rows, M and N multiples of the array, enough tiles to fill it: >= 90%
    for R, C, M, N in ((16, 16, 64, 64), (16, 16, 128, 128), (8, 8, 64, 32), (4, 4, 16, 16)):
        K = 4 * R
        assert utilization(M, K, N, R, C, predict_cycles(M, K, N, R, C)) >= 0.90


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="K"):
        predict_cycles(4, 0, 4, 2, 2)


ARRAYS = [(1, 1), (2, 3), (3, 2), (4, 4), (1, 5)]
SHAPES = [(1, 1, 1), (5, 7, 4), (9, 1, 11), (8, 2, 3), (6, 12, 7)]


@pytest.mark.parametrize("R, C", ARRAYS)
def test_rtl_matches_the_model_on_pysim(R, C):
    mult = parse_spec("exact@s4")
    rng = np.random.default_rng(R * 10 + C)
    eng = PysimEngine(Accelerator(mult, R, C, max_k=64))
    shapes = SHAPES + [(R, 1, C), (2 * R, max(R, C), 2 * C), (R + 1, max(R, C) - 1 or 1, C)]
    for M, K, N in shapes:
        A = rng.integers(-8, 8, (M, K))
        B = rng.integers(-8, 8, (K, N))
        res = run_gemm(A, B, mult, engine=eng)
        assert res.cycles == predict_cycles(M, K, N, R, C), (M, K, N)
        assert np.array_equal(res.C, A @ B)

"""Analytic cycle model of `axsa.rtl.accelerator.Accelerator`: exact, for any GEMM shape.

The driver (`axsa.sim.driver`) cuts an M x K x N GEMM into ``T = ceil(M/R) * ceil(N/C)``
output tiles of K steps each, and the engines present every feed item as soon as the
previous one is taken and take every result as soon as it is offered
(`axsa.sim.engine`). Under those conditions the accelerator never starves and never
stalls on its output, and the run takes exactly

    cycles = K + (T - 1) * max(K, max(R, C)) + R + C + 7

clock edges, from the first edge to the one taking the last result row:

- the controller issues one step per cycle and takes the next tile's command in the
  cycle of the current tile's last step, so tiles follow each other every K cycles;
  two last steps must however stay ``max(R, C)`` cycles apart (the array's output rows
  of a tile take R cycles, and a PE's parked sum must be read before the next tile's
  replaces it, C cycles after), hence ``max(K, max(R, C))`` per tile after the first;
- after the last step of the last tile: the de-skew (row r of the tile is complete
  ``C + 1 + r`` edges later, the last row R - 1), then the pipeline;
- the constant 7 is the fixed pipeline: the operand buffers' write-to-read latency,
  the array's output register, two requantization stages, and the output buffer's
  write-to-read latency and transfer. It was read off the RTL, and the test grid in
  tests/sim/test_cycles.py pins the whole formula against it.

Utilization is useful MACs over the MAC slots the array had: ``M K N / (cycles R C)``;
padding of partial tiles counts as idle. It tends to
``K / max(K, max(R, C))`` for many tiles, i.e. 100% when K >= max(R, C); the fixed
``K + R + C + 7`` of the first tile and the pipeline is what a small GEMM pays.
"""

from __future__ import annotations

__all__ = ["PIPELINE_CYCLES", "predict_cycles", "tile_count", "utilization"]

#: operand buffer latency + array output register + 2 requant stages + output buffer
PIPELINE_CYCLES = 7


def _check(**dims) -> None:
    for name, v in dims.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")


def tile_count(M: int, N: int, rows: int, cols: int) -> int:
    """Output tiles of an M x N result on an R x C array: ceil(M/R) * ceil(N/C)."""
    _check(M=M, N=N, rows=rows, cols=cols)
    return -(-M // rows) * -(-N // cols)


def predict_cycles(M: int, K: int, N: int, rows: int, cols: int) -> int:
    """Clock edges the accelerator takes for an M x K x N GEMM on an R x C array.

    Exact for the engines' always-valid feeds and always-ready result consumer, from the
    first edge of a run to the edge taking the last result row (see the module
    docstring for the formula and where each term comes from).
    """
    _check(M=M, K=K, N=N, rows=rows, cols=cols)
    tiles = tile_count(M, N, rows, cols)
    return K + (tiles - 1) * max(K, rows, cols) + rows + cols + PIPELINE_CYCLES


def utilization(M: int, K: int, N: int, rows: int, cols: int, cycles: int) -> float:
    """Useful MACs / (cycles x R x C), in 0..1."""
    _check(M=M, K=K, N=N, rows=rows, cols=cols, cycles=int(cycles))
    return M * K * N / (int(cycles) * rows * cols)


def steady_state_utilization(K: int, rows: int, cols: int) -> float:
    """Utilization approached by a GEMM of many tiles: K / max(K, R, C)."""
    _check(K=K, rows=rows, cols=cols)
    return K / max(K, rows, cols)

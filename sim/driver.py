"""Host GEMM driver: any M x K x N integer GEMM on the accelerator, over any engine.

>>> from axsa.sim.driver import run_gemm
>>> res = run_gemm(A, B, "exact@s8", engine="cxxrtl", rows=16, cols=16)
>>> res.C, res.cycles, res.predicted_cycles, res.utilization

The GEMM is cut into ceil(M/R) x ceil(N/C) output tiles (row-major order), each a full
K-long reduction. A and B are zero-padded to whole tiles; per tile the host sends one
command, K beats of A (a column of the A block each) and K beats of B (a row of the B
block each), and reads R result rows. All packing is numpy-vectorised over tiles and
beats (one Python step per distinct command only), so the host stays well ahead of the
compiled engine.

Engines: ``"pysim"``, ``"cxxrtl"``, ``"verilator"`` (names for
`axsa.sim.engine.make_engine`), an `Engine` already built around an `Accelerator`, or
``"emulate"``: no RTL, the product-table GEMM
(`reference_gemm`, or the ``emulator`` the caller passes: `axsa gemm` passes the models'
fast one, `axsa.models.approx.emulate_gemm`; `sim` itself knows no torch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from axsa.errors import InputError
from axsa.formats import DEFAULT_MAX_REDUCTION

from .cycles import predict_cycles, utilization
from .reference import check_operands, reference_gemm, requantize

__all__ = ["BatchResult", "GemmResult", "Requant", "build_accelerator", "emulate_gemm",
           "gather_tiles", "predict_batch_cycles", "run_gemm", "run_gemm_batch", "tile_feeds"]

#: longest K a design built here is sized for, unless told
DEFAULT_MAX_K = DEFAULT_MAX_REDUCTION


@dataclass(frozen=True)
class Requant:
    """Requantization of the accumulators: ``clamp((acc * m + 2^(s-1)) >> s)``.

    Parameters
    ----------
    m, s : int or sequence of int
        Multiplier (signed 32-bit) and shift (1..62): one value for every column, or one
        per output column (length N).
    bits : int
        Output width (default 8).
    signed : bool
        Signed (default) or unsigned output range.
    """

    m: int | tuple = 1
    s: int | tuple = 1
    bits: int = 8
    signed: bool = True

    def __post_init__(self):
        for name in ("m", "s"):
            v = getattr(self, name)
            if isinstance(v, (list, tuple, np.ndarray)):
                v = tuple(int(x) for x in np.asarray(v).ravel())
            elif isinstance(v, (int, np.integer)):
                v = int(v)
            else:
                raise InputError(f"requantization {name} = {v!r} is not an integer")
            object.__setattr__(self, name, v)
        from axsa.rtl.requantizer import check_requant
        check_requant(self.m, self.s, self.bits, max_bits=32)

    def per_column(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(m, s) as int64 arrays of length `n`."""
        out = []
        for name in ("m", "s"):
            v = np.asarray(getattr(self, name), dtype=np.int64).ravel()
            if v.size == 1:
                v = np.full(n, v[0], dtype=np.int64)
            elif v.size != n:
                raise InputError(f"requantization {name} has {v.size} values but the GEMM "
                                 f"has {n} output columns")
            out.append(v)
        return out[0], out[1]

    def apply(self, acc: np.ndarray) -> np.ndarray:
        m, s = self.per_column(acc.shape[-1])
        return requantize(acc, m, s, self.bits, self.signed)


@dataclass(frozen=True)
class GemmResult:
    """Outcome of one GEMM.

    Attributes
    ----------
    C : numpy.ndarray of int64, shape (M, N)
        Accumulators, or requantized outputs.
    cycles, predicted_cycles : int or None
        Clock edges the RTL took, and what `axsa.sim.cycles` predicted (None: emulate).
    utilization : float or None
        Useful MACs / (cycles x R x C).
    macs : int
        Useful multiply-accumulates, M x K x N.
    wall_s : float
        Wall-clock seconds of the call (checks, packing, simulation, gathering), without
        the one-off design build.
    engine : str
    build_s : float
        Seconds spent building the design and engine in this call (elaboration, and for
        CXXRTL compilation unless cached); 0 when an engine was passed in.
    """

    C: np.ndarray = field(repr=False)
    cycles: int | None
    predicted_cycles: int | None
    utilization: float | None
    macs: int
    wall_s: float
    engine: str
    build_s: float = 0.0

    @property
    def mac_per_s(self) -> float:
        return self.macs / self.wall_s if self.wall_s > 0 else float("inf")


def _multiplier(mult):
    if isinstance(mult, str):
        from axsa.rtl.multipliers import parse_spec
        return parse_spec(mult)
    return mult


def emulate_gemm(A, B, mult, mode: int = 0) -> np.ndarray:
    """Product-table GEMM without RTL, in numpy (`reference_gemm`)."""
    mult = _multiplier(mult)
    mult._check_mode(mode)
    A, B = check_operands(A, B, mult.fmt)
    return reference_gemm(A, B, mult.model_table(mode), mult.fmt)


def build_accelerator(mult, rows: int, cols: int, max_k: int = DEFAULT_MAX_K,
                      view: str = "circuit"):
    """The `Accelerator` for `mult` (spec string or Multiplier) and an R x C array, in
    RTL view `view` (`axsa.rtl.cells.VIEWS`)."""
    from axsa.rtl.accelerator import Accelerator
    return Accelerator(_multiplier(mult), rows, cols, max_k=max_k, view=view)


def _check_dims(rows, cols):
    for name, v in (("rows", rows), ("cols", cols)):
        if not isinstance(v, (int, np.integer)) or not 1 <= v <= 256:
            raise InputError(f"--{name} {v!r} is outside 1..256")


def _command_words(acc, nt: int, K: int, requant: Requant | None, m_cols, s_cols):
    """One command per column block of tiles: (nt, n_words) uint32."""
    from .engine import ints_to_words
    fields = dict(acc.cmd_layout)
    rq_offset = fields["rq"].offset
    rq = dict(fields["rq"].shape)
    C = acc.cols

    def put(value, fld, offset=0, idx=None):
        shape = fld.shape if idx is None else fld.shape.elem_shape
        w = shape.width
        off = offset + fld.offset + (idx * w if idx is not None else 0)
        return (int(value) & ((1 << w) - 1)) << off

    words = []
    for j in range(nt):
        word = put(K - 1, fields["k_minus_1"])
        if requant is not None:
            word |= put(1, rq["en"], rq_offset) | put(int(requant.signed), rq["signed"],
                                                      rq_offset)
            word |= put(requant.bits, rq["bits"], rq_offset)
            for c in range(C):
                word |= put(m_cols[j * C + c], rq["m"], rq_offset, c)
                word |= put(s_cols[j * C + c], rq["s"], rq_offset, c)
        words.append(word)
    return ints_to_words(words, acc.cmd_layout.size, "command")


def _unpack_rows(words: np.ndarray, count: int, width: int) -> np.ndarray:
    """Result payload words -> (n, count) signed int64 (fields of `width` bits)."""
    from .engine import unpack_fields
    if width <= 32:
        return unpack_fields(words, count, width, signed=True)
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=1,
                         bitorder="little")[:, :count * width]
    bits = bits.reshape(len(words), count, width).astype(np.int64)
    out = (bits << np.arange(width, dtype=np.int64)).sum(axis=2)
    return out - (bits[:, :, -1] << width)


def run_gemm(A, B, mult, engine="pysim", rows: int = 4, cols: int = 4, mode: int = 0,
             requant: Requant | None = None, max_k: int = DEFAULT_MAX_K,
             vcd=None, view: str | None = None, emulator=None) -> GemmResult:
    """Run ``A @ B`` (through the multiplier) on the accelerator, bit-exact.

    Parameters
    ----------
    A : array_like of int, shape (M, K)
    B : array_like of int, shape (K, N)
        Operand values in the multiplier's format.
    mult : str or Multiplier
    engine : {"pysim", "cxxrtl", "verilator", "emulate"} or Engine
        An `Engine` built around an `Accelerator` is reused (its array size wins).
    rows, cols : int
        Array size when the engine is built here.
    mode : int
        Multiplier mode (cfgtrunc); 0 otherwise.
    requant : Requant, optional
        Requantize in the output stage (and in the emulation).
    max_k : int
        Longest K the design built here is sized for (accumulator width); a larger K is
        an InputError.
    vcd : path, optional
        Waveform file of the run (when the engine is built here).
    view : {"circuit", "table"}, optional
        How the multipliers of a design built here are simulated (`axsa.rtl.cells`;
        same results either way). ``"circuit"``: the family's own circuits, gate for
        gate (g++ takes many minutes for a 16x16 array on CXXRTL). ``"table"``: their
        product tables. Each engine realises the view its own way
        (`Engine.design_view`): pysim through the array's word-level table view, CXXRTL
        through ``a * b`` for exact multipliers and multiplier cells filled with their
        tables or circuits for the others, so one compiled library serves every
        multiplier of the same widths. Default: the engine's `default_view` (circuit on
        pysim, table on CXXRTL).
    emulator : callable, optional
        ``emulator(A, B, mult, mode) -> C`` (int64 (M, N)) for ``engine="emulate"``, on
        operands already checked; default `emulate_gemm`.

    Returns
    -------
    GemmResult
    """
    t0 = time.perf_counter()
    mult = _multiplier(mult)
    mult._check_mode(mode)
    A, B = check_operands(A, B, mult.fmt)
    M, K = A.shape
    N = B.shape[1]
    macs = M * K * N
    if requant is not None:
        requant.per_column(N)  # length check before any work
    if isinstance(engine, str) and engine == "emulate":
        C = (emulator or emulate_gemm)(A, B, mult, mode)
        if requant is not None:
            C = requant.apply(C)
        return GemmResult(C, None, None, None, macs, time.perf_counter() - t0, "emulate")

    from axsa.rtl.accelerator import Accelerator
    from axsa.rtl.cells import SIM_VIEWS
    from axsa.rtl.mac import acc_width_for

    from .engine import Engine, engine_class, make_engine
    if isinstance(engine, Engine):
        acc = engine.component
        if not isinstance(acc, Accelerator):
            raise InputError(f"engine runs a {type(acc).__name__}, not an Accelerator")
        if acc.multiplier != mult:
            raise InputError(f"engine runs multiplier {acc.multiplier.spec}, not {mult.spec}")
        design_k, width = acc.max_k, acc.acc_width
    else:
        _check_dims(rows, cols)
        design_k, width = max_k, acc_width_for(mult, max_k)
    # checks before anything is built
    if K > design_k:
        raise InputError(f"K = {K} exceeds the design's max_k = {design_k} (raise max_k)")
    if requant is not None and requant.bits > width - (0 if requant.signed else 1):
        raise InputError(f"requantization bits = {requant.bits} does not fit the "
                         f"{width}-bit result elements")
    build_s = 0.0
    if isinstance(engine, Engine):
        eng, own = engine, False
    else:
        if engine not in ("pysim", "cxxrtl", "verilator"):
            raise InputError(f"unknown engine {engine!r} "
                             "(known: emulate, pysim, cxxrtl, verilator)")
        eng_cls = engine_class(engine)
        view = eng_cls.default_view if view is None else view
        if view not in SIM_VIEWS:
            raise InputError(f"unknown view {view!r} (known: {', '.join(SIM_VIEWS)})")
        if engine == "pysim" and getattr(mult, "verilog_sources", None) and view == "circuit":
            raise InputError(f"{mult.spec} is imported Verilog, which pysim cannot "
                             "simulate: use the cxxrtl engine or the table view")
        design_view = eng_cls.design_view(view, mult)
        t_build = time.perf_counter()
        acc = build_accelerator(mult, int(rows), int(cols), max_k=max_k, view=design_view)
        kwargs = {"vcd": vcd} if vcd is not None else {}
        if design_view == "cell":
            kwargs["cells"] = view
            if view == "circuit" and acc.verilog_sources:
                kwargs["verilog_sources"] = acc.verilog_sources
        eng, own = make_engine(engine, acc, **kwargs), True
        build_s = time.perf_counter() - t_build
    try:
        predicted = predict_cycles(M, K, N, acc.rows, acc.cols)
        feeds, n_rows = tile_feeds(acc, A[None], B[None], requant)
        inputs = {"mode": mode} if mult.modes > 1 else {}
        outputs, cycles = eng.run_streams(feeds=feeds, drains={"result": n_rows},
                                          inputs=inputs, max_cycles=2 * predicted + 1000)
        C = gather_tiles(acc, outputs["result"], 1, M, N)[0]
    finally:
        if own:
            eng.close()
    util = utilization(M, K, N, acc.rows, acc.cols, cycles)
    return GemmResult(C, int(cycles), predicted, util, macs,
                      time.perf_counter() - t0 - build_s, getattr(eng, "name", str(engine)),
                      build_s)


def tile_feeds(acc, A: np.ndarray, B: np.ndarray, requant: Requant | None):
    """Feeds of G GEMMs ``A[g] @ B[g]`` run back to back on accelerator `acc`: tiles in
    (g, row block, column block) order. A (G, M, K), B (G or 1, K, N) int64 values.
    Returns (feeds, result rows)."""
    from .engine import pack_fields
    R, Cc = acc.rows, acc.cols
    G, M, K = A.shape
    N = B.shape[2]
    mt, nt = -(-M // R), -(-N // Cc)
    fmt = acc.multiplier.fmt
    Ap = np.zeros((G, mt * R, K), dtype=np.int64)
    Ap[:, :M] = A
    Bp = np.zeros((B.shape[0], K, nt * Cc), dtype=np.int64)
    Bp[:, :, :N] = B
    # beat k of tile (g, i, j): A[g, i*R:(i+1)*R, k] and B[g, k, j*C:(j+1)*C]
    a_panel = pack_fields(Ap.reshape(G, mt, R, K).transpose(0, 1, 3, 2).reshape(-1, R),
                          fmt.a_width, signed=fmt.signed)
    b_panel = pack_fields(Bp.reshape(-1, K, nt, Cc).transpose(0, 2, 1, 3).reshape(-1, Cc),
                          fmt.b_width, signed=fmt.signed)
    wa, wb = a_panel.shape[1], b_panel.shape[1]
    a_words = np.broadcast_to(a_panel.reshape(G, mt, 1, K, wa), (G, mt, nt, K, wa))
    b_words = np.broadcast_to(b_panel.reshape(-1, 1, nt, K, wb), (G, mt, nt, K, wb))
    m_cols = s_cols = None
    if requant is not None:
        m_cols, s_cols = requant.per_column(N)
        m_cols = np.concatenate([m_cols, np.zeros(nt * Cc - N, np.int64)])
        s_cols = np.concatenate([s_cols, np.ones(nt * Cc - N, np.int64)])
    cmd = _command_words(acc, nt, K, requant, m_cols, s_cols)
    feeds = {"cmd": np.ascontiguousarray(np.tile(cmd, (G * mt, 1))),
             "a": np.ascontiguousarray(a_words.reshape(-1, wa)),
             "b": np.ascontiguousarray(b_words.reshape(-1, wb))}
    return feeds, G * mt * nt * R


def gather_tiles(acc, words: np.ndarray, G: int, M: int, N: int) -> np.ndarray:
    """Result rows of `tile_feeds`' tiles -> (G, M, N) int64."""
    R, Cc = acc.rows, acc.cols
    mt, nt = -(-M // R), -(-N // Cc)
    rows_out = _unpack_rows(words, Cc, acc.acc_width)
    C = rows_out.reshape(G, mt, nt, R, Cc).transpose(0, 1, 3, 2, 4).reshape(
        G, mt * R, nt * Cc)
    return np.ascontiguousarray(C[:, :M, :N])


@dataclass(frozen=True)
class BatchResult:
    """Outcome of `run_gemm_batch`: G GEMMs of one shape in one engine run.

    Attributes
    ----------
    C : numpy.ndarray of int64, shape (G, M, N)
    cycles, predicted_cycles : int
        Clock edges of the whole run, and the cycle model's figure for its
        ``G ceil(M/R) ceil(N/C)`` tiles (`predict_batch_cycles`).
    macs : int
        Useful MACs, G M K N.
    wall_s : float
    """

    C: np.ndarray = field(repr=False)
    cycles: int
    predicted_cycles: int
    macs: int
    wall_s: float


def predict_batch_cycles(G: int, M: int, K: int, N: int, rows: int, cols: int) -> int:
    """Cycles of G M x K x N GEMMs run back to back (`run_gemm_batch`): the cycle model
    of one GEMM with all their ``G ceil(M/R) ceil(N/C)`` tiles."""
    return predict_cycles(G * -(-M // rows) * rows, K, N, rows, cols)


def run_gemm_batch(A, B, engine, mode: int = 0,
                   requant: Requant | None = None) -> BatchResult:
    """``A[g] @ B[g]`` for every g on an engine built around an `Accelerator`, in one run.

    The tiles of all G GEMMs follow each other in the command stream (no idle cycles in
    between, each tile with its own command), so many small GEMMs of one shape (the
    attention products of every sample and head) keep the array as busy as one large
    one. Results are bit-exact with `run_gemm` on each GEMM.

    Parameters
    ----------
    A : array_like of int, shape (G, M, K)
    B : array_like of int, shape (G, K, N) or (1, K, N) (one B for every g)
        Operand values in the multiplier's format (checked).
    engine : Engine
        Running an `Accelerator` (its multiplier and array size apply).
    mode : int
        Multiplier mode for the whole run (a mode-configurable multiplier switches modes
        between runs, without a new design).
    requant : Requant, optional
        Requantize in the output stage (the same parameters for every g).
    """
    from axsa.rtl.accelerator import Accelerator

    from .engine import Engine
    t0 = time.perf_counter()
    if not isinstance(engine, Engine) or not isinstance(engine.component, Accelerator):
        raise InputError("run_gemm_batch needs an engine built around an Accelerator")
    acc = engine.component
    mult = acc.multiplier
    mult._check_mode(mode)
    A = np.asarray(A)
    B = np.asarray(B)
    if A.ndim != 3 or B.ndim != 3 or A.shape[2] != B.shape[1] \
            or B.shape[0] not in (1, A.shape[0]) or 0 in A.shape or 0 in B.shape:
        raise InputError(f"batched operands of shapes {A.shape} and {B.shape} do not "
                         "chain: expected (G, M, K) and (G or 1, K, N)")
    for name, x, (lo, hi) in (("A", A, mult.fmt.a_range()), ("B", B, mult.fmt.b_range())):
        if x.dtype.kind not in "iub":
            raise InputError(f"operand {name} has dtype {x.dtype}: GEMM operands must be "
                             "integer arrays")
        bad = (x < lo) | (x > hi)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"operand {name}{list(idx)} = {int(x[idx])} is outside the "
                             f"{mult.fmt} range {lo}..{hi}")
    G, M, K = A.shape
    N = B.shape[2]
    if K > acc.max_k:
        raise InputError(f"K = {K} exceeds the design's max_k = {acc.max_k}")
    if requant is not None:
        requant.per_column(N)
        if requant.bits > acc.acc_width - (0 if requant.signed else 1):
            raise InputError(f"requantization bits = {requant.bits} does not fit the "
                             f"{acc.acc_width}-bit result elements")
    predicted = predict_batch_cycles(G, M, K, N, acc.rows, acc.cols)
    feeds, n_rows = tile_feeds(acc, A.astype(np.int64, copy=False),
                                B.astype(np.int64, copy=False), requant)
    inputs = {"mode": mode} if mult.modes > 1 else {}
    outputs, cycles = engine.run_streams(feeds=feeds, drains={"result": n_rows},
                                         inputs=inputs, max_cycles=2 * predicted + 1000)
    C = gather_tiles(acc, outputs["result"], G, M, N)
    return BatchResult(C, int(cycles), predicted, G * M * K * N, time.perf_counter() - t0)

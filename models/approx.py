"""Bit-exact approximate-multiplier GEMM for PyTorch, at near exact-GEMM speed.

An approximate GEMM replaces every product of an integer GEMM by a product-table lookup:

    C[m, n] = sum_k lut[code(A[m, k]), code(B[k, n])]

with codes as in ../shared/DESIGN.md (the operand's bit pattern read unsigned). A plain
gather does M*K*N lookups; the engines below, all exact, avoid it where it matters:

``native`` / ``native-gather``
    One C++ call (`models/approx_kernels.cc` through `axsa.models._native`) for the
    whole GEMM, reading the operands in place (any dtype, any strides): value check,
    codes, then the low-rank plan below as one int8 GEMM on AVX512-VNNI (portable loops
    elsewhere), or the plain gather. Compiled on first use and cached; without a C++
    compiler the torch engines below do all the work.
``lowrank``
    Most approximate multipliers have a product table of small exact rank (truncation,
    broken arrays, DRUM, ROBA, Kulkarni, SSM, Mitchell with truncation: rank <= 32 at
    8 bits, <= 9 for most). The table is factored once with integers
    (`axsa.models._lowrank`), every factor centred and split into int8 parts, and the
    GEMM becomes one int8 x int8 -> int32 GEMM (``torch._int_mm``, exact) on
    element-wise mapped operands, plus per-code row and column sums. Operands batched on
    both sides (attention) use either a loop of those, or one batched float GEMM over
    the integer terms whose every partial sum is an integer below 2^24 (float32) or
    2^53 (float64), hence exact.
``bag``
    Tables without low-rank structure: one operand's rows of the table are gathered into
    a per-k embedding matrix and ``torch.nn.functional.embedding_bag`` sums them per
    output column; float32 partial sums are kept below 2^24 by blocking K, so exact.
``gather``
    The plain gather, ``lut[a_code, b_code]`` for every (m, k, n), blocked: the
    reference, and the cheapest for tiny GEMMs.

``engine="auto"`` picks, on the first call with a given (table, operand shapes), the
engine of least estimated cost (`_estimate`; constants measured with
scripts/bench_emulation.py); on the second call with the same key it times the plausible
engines on those operands (all exact) and keeps the fastest (`_tune`), which on the
models' small GEMMs, dominated by fixed per-call costs, often differs. Besides the
engines above it may pick ``terms``: the low-rank engine's batched float GEMM over the
integer terms, for any batch shape. Once a native engine is chosen, later calls with the
same operand layout go straight to a prepared kernel call (`_FAST`). See
docs/emulation.md.
"""

from __future__ import annotations

import collections
import hashlib
import math
import threading
from typing import Literal

import numpy as np
import torch

from axsa.errors import InputError, ToolError

from . import _lowrank, _native

#: elements of the temporary per-block tensors (bounds memory of both engines)
BLOCK_ELEMENTS = 1 << 22

#: elements of the int32/int64 partial-product blocks of the int8 engine (kept per thread)
PART_ELEMENTS = 1 << 20

#: index elements per block of the plain gather engine
GATHER_BLOCK_ELEMENTS = 1 << 16

#: elements of the embedding-bag engine's gathered block (fits in L2)
BAG_BLOCK_ELEMENTS = 1 << 19

Engine = Literal["auto", "lowrank", "bag", "gather", "native", "native-gather"]
#: engines a caller may name
ENGINES = ("auto", "lowrank", "bag", "gather", "native", "native-gather")

#: widest operand a table may have (the factorization search is O(4^w) per step)
MAX_WIDTH = 10

#: plans kept (least recently used dropped first); a plan is 1-3 MB for an 8x8-bit table
MAX_PLANS = 64

_PLANS: collections.OrderedDict[str, dict] = collections.OrderedDict()
_PLANS_LOCK = threading.Lock()


class ProductTable:
    """A multiplier's product table ``lut[a_code, b_code]`` and its fast-GEMM plan.

    Parameters
    ----------
    table : np.ndarray
        Integer array of shape (2^wa, 2^wb) indexed by operand codes (bit patterns read
        as unsigned, two's complement for signed operands).
    signed : bool
        Whether both operands are signed.
    name : str
        Shown in error messages (e.g. the multiplier's spec).

    Attributes
    ----------
    table : np.ndarray
        Read-only int64 copy of the table.
    wa, wb : int
        Operand widths in bits.
    a_range, b_range : tuple of int
        Inclusive (min, max) operand values.
    key : str
        Hash of (table, signed); the plan cache key.
    """

    def __init__(self, table: np.ndarray, signed: bool, name: str = ""):
        arr = np.asarray(table)
        label = f" {name!r}" if name else ""
        if arr.ndim != 2:
            raise InputError(f"product table{label} must be 2-D, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.integer) or
                (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))):
            raise InputError(f"product table{label} must hold integers, got dtype {arr.dtype}")
        widths = []
        for axis, size in enumerate(arr.shape):
            w = size.bit_length() - 1
            if size < 2 or size != 1 << w or w > MAX_WIDTH:
                raise InputError(f"product table{label} axis {axis} has {size} entries: "
                                 f"expected 2^w codes with 1 <= w <= {MAX_WIDTH}")
            widths.append(w)
        if np.abs(arr).max(initial=0) >= 2**40:
            raise InputError(f"product table{label} holds {np.abs(arr).max()}, beyond "
                             "the supported magnitude 2^40")
        self.table = np.array(arr, dtype=np.int64)
        self.table.setflags(write=False)
        self.signed = bool(signed)
        self.name = name
        self.wa, self.wb = widths
        self.key = hashlib.sha1(self.table.tobytes() + bytes([self.signed, self.wa,
                                                              self.wb])).hexdigest()

    @classmethod
    def from_multiplier(cls, multiplier, mode: int = 0) -> ProductTable:
        """The table of an `axsa.rtl.multipliers` multiplier (duck-typed: `.model_table`,
        `.fmt.signed`, `.spec`), for one `mode` of a configurable one."""
        name = multiplier.spec if multiplier.modes == 1 else f"{multiplier.spec} mode {mode}"
        return cls(multiplier.model_table(mode), multiplier.fmt.signed, name)

    def __repr__(self) -> str:
        return f"<ProductTable {self.name or self.key[:10]} {self.wa}x{self.wb}>"

    # -- operand values ----------------------------------------------------------------
    def _values(self, width: int) -> np.ndarray:
        codes = np.arange(1 << width, dtype=np.int64)
        if self.signed:
            codes = np.where(codes >= 1 << (width - 1), codes - (1 << width), codes)
        return codes

    @property
    def a_values(self) -> np.ndarray:
        """Value of every code of operand `a` (int64)."""
        return self._values(self.wa)

    @property
    def b_values(self) -> np.ndarray:
        return self._values(self.wb)

    @property
    def a_range(self) -> tuple[int, int]:
        return _range(self.wa, self.signed)

    @property
    def b_range(self) -> tuple[int, int]:
        return _range(self.wb, self.signed)

    @property
    def is_exact(self) -> bool:
        """True when the table is the exact product a*b everywhere."""
        return bool(np.array_equal(self.table, np.outer(self.a_values, self.b_values)))

    # -- the fast-path plan (computed once per distinct table) -------------------------
    @property
    def plan(self) -> dict:
        """Precomputed structure (exact integer terms, int8 plan, float copies), shared
        by every ProductTable holding the same table."""
        with _PLANS_LOCK:
            found = _PLANS.get(self.key)
            if found is not None:
                _PLANS.move_to_end(self.key)
        if found is None:
            found = _make_plan(self)
            with _PLANS_LOCK:
                _PLANS[self.key] = found
                while len(_PLANS) > MAX_PLANS:
                    _PLANS.popitem(last=False)
        return found

    @property
    def rank(self) -> int | None:
        """Number of exact integer rank-1 terms the fast path uses (the table's rank
        over the rationals), or None when the table has no integer factorization."""
        terms = self.plan["terms"]
        return None if terms is None else len(terms)

    @property
    def engine(self) -> str:
        """The engine ``approx_matmul(engine="auto")`` picks for this table on the
        reference shape 197x192 @ 192x576 (the choice depends on the shape)."""
        costs = _estimate(self.plan, 1, 1, 197, 192, 576)
        return min(costs, key=costs.get)


def _range(width: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)


class _Group:
    """int8 factor tables of one scale, packed so that one 1-D gather (torch's fastest)
    fetches all T digits of a code: T padded to 1, 2, 4 or 8 bytes and read as one
    int8/16/32/64 element per code; wider groups use several int64 tables."""

    def __init__(self, scale: int, f: np.ndarray, g: np.ndarray):
        self.scale = int(scale)
        self.stacks = f.shape[1]
        self.f = torch.from_numpy(np.ascontiguousarray(f))
        self.g = torch.from_numpy(np.ascontiguousarray(g))
        t = self.stacks
        self.width = t if t in (1, 2, 4) else (4 if t == 3 else -(-t // 8) * 8)
        self.f_packed = self._pack(f)
        self.g_packed = self._pack(g)

    def _pack(self, x: np.ndarray) -> list[torch.Tensor]:
        padded = np.zeros((x.shape[0], self.width), dtype=np.int8)
        padded[:, :x.shape[1]] = x
        dtype = {1: np.int8, 2: np.int16, 4: np.int32}.get(self.width, np.int64)
        packed = padded.view(dtype)                      # (codes, width / itemsize)
        return [torch.from_numpy(packed[:, j].copy()) for j in range(packed.shape[1])]

    def gather(self, codes: torch.Tensor, which: str, transpose: bool = False) -> torch.Tensor:
        """(R, K) codes -> (R, K * width) int8 digits; with `transpose`, (K, R) codes in.

        Digit order along the second axis is (table, k, digit): the same for both
        operands, which is all the GEMM needs. The result lives in a reused workspace
        (valid until the next gather of the same operand).
        """
        tables = self.f_packed if which == "f" else self.g_packed
        flat = codes.reshape(-1)
        rows, k = (codes.shape[1], codes.shape[0]) if transpose else codes.shape
        dtype = tables[0].dtype
        out = _workspace(f"digits-{which}", (rows, len(tables), k), dtype)
        for j, table in enumerate(tables):
            if transpose:
                got = torch.index_select(table, 0, flat,
                                         out=_workspace("gather-t", (flat.numel(),), dtype))
                out[:, j, :].copy_(got.view(k, rows).t())
            elif len(tables) == 1:
                torch.index_select(table, 0, flat, out=out.view(-1))
            else:
                out[:, j, :].copy_(torch.index_select(table, 0, flat).view(rows, k))
        return out.view(torch.int8).reshape(rows, -1)


_WORKSPACE = threading.local()


def _workspace(slot: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A reused scratch tensor per (thread, slot): fresh multi-megabyte allocations cost
    page faults that, at these sizes, take longer than the GEMMs themselves."""
    cache = getattr(_WORKSPACE, "tensors", None)
    if cache is None:
        cache = _WORKSPACE.tensors = {}
    n = math.prod(shape)
    buf = cache.get((slot, dtype))
    if buf is None or buf.numel() < n:
        buf = cache[(slot, dtype)] = torch.empty(max(n, 1), dtype=dtype)
    return buf[:n].view(shape)


def _make_plan(pt: ProductTable) -> dict:
    terms = _lowrank.factor(pt.table, pt.a_values, pt.b_values)
    int8 = None
    if terms is not None:
        int8 = _lowrank.Int8Plan.build(terms, pt.table.shape)
        if not np.array_equal(int8.reconstruct(), pt.table):  # never expected; be exact
            terms, int8 = None, None
    lut_f32 = torch.from_numpy(pt.table.astype(np.float32 if np.abs(pt.table).max() < 2**24
                                               else np.float64))
    plan = {
        "terms": terms,
        "int8": int8,
        "lut": torch.from_numpy(pt.table.copy()),
        "lut_gather": torch.from_numpy(pt.table.reshape(-1).astype(
            np.int32 if np.abs(pt.table).max() < 2**31 else np.int64)),
        "lut_float": lut_f32,
        "max_abs": int(np.abs(pt.table).max()),
        "table": pt,
    }
    if int8 is not None:
        plan["groups"] = [_Group(scale, f, g) for scale, f, g in int8.groups]
        plan["width"] = sum(g.width for g in plan["groups"])
        plan["row"] = torch.from_numpy(int8.row)
        plan["col"] = torch.from_numpy(int8.col)
        plan["const"] = int8.const
        plan["has_row"] = bool(int8.row.any())
        us = np.stack([u for u, _ in terms], axis=1)
        vs = np.stack([v for _, v in terms], axis=1)
        plan["term_bound"] = int(sum(int(np.abs(u).max()) * int(np.abs(v).max())
                                     for u, v in terms))
        plan["term_tables"] = {
            dt: tuple(torch.from_numpy(np.ascontiguousarray(x.astype(npdt)))
                      for x in (us, vs, us.T, vs.T))
            for dt, npdt in ((torch.float32, np.float32), (torch.float64, np.float64))}
        plan["has_col"] = bool(int8.col.any())
    return plan


# -- operand checks --------------------------------------------------------------------

def _as_codes(x, which: str, lo: int, hi: int, width: int, table: ProductTable) -> torch.Tensor:
    """Integer operand values -> int64 codes; InputError naming a bad value."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"operand {which} must be a torch tensor, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise InputError(f"operand {which} has dtype {x.dtype}: expected integer values")
    x = x.detach()
    v = x.to(torch.int64)
    # a float that does not survive the round trip is fractional, NaN, inf or huge
    # (one torch.equal first: on the small GEMMs of the models per-op costs dominate)
    if x.is_floating_point() and not torch.equal(v.to(x.dtype), x):
        bad = x[v.to(x.dtype) != x][0].item()
        if math.isfinite(bad) and bad == round(bad):   # integral but beyond int64
            raise InputError(f"operand {which} holds {bad!r}, outside the range {lo}..{hi} "
                             f"of product table {table.name or table.key[:10]}")
        raise InputError(f"operand {which} holds {bad!r}, not an integer value")
    if v.numel():
        vmin, vmax = (int(m) for m in torch.aminmax(v))
        if vmin < lo or vmax > hi:
            bad_v = vmin if vmin < lo else vmax
            raise InputError(f"operand {which} holds {bad_v}, outside the range {lo}..{hi} "
                             f"of product table {table.name or table.key[:10]}")
        if vmin >= 0:            # non-negative values in range are their own codes
            return v
    return v & ((1 << width) - 1)


def _shapes(a: torch.Tensor, b: torch.Tensor):
    if a.dim() < 1 or b.dim() < 1:
        raise InputError(f"approx_matmul needs tensors of at least 1 dimension, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    squeeze = []
    if a.dim() == 1:
        a = a.unsqueeze(0)
        squeeze.append(-2)
    if b.dim() == 1:
        b = b.unsqueeze(-1)
        squeeze.append(-1)
    if a.shape[-1] != b.shape[-2]:
        raise InputError(f"approx_matmul shapes {tuple(a.shape)} and {tuple(b.shape)}: "
                         f"inner sizes {a.shape[-1]} and {b.shape[-2]} differ")
    ba, bb = a.shape[:-2], b.shape[:-2]
    try:
        batch = ba if (ba == bb or not bb) else bb if not ba else \
            torch.broadcast_shapes(ba, bb)
    except RuntimeError:
        raise InputError(f"approx_matmul batch shapes {tuple(a.shape[:-2])} and "
                         f"{tuple(b.shape[:-2])} do not broadcast") from None
    return a, b, tuple(batch), squeeze


# -- public API ------------------------------------------------------------------------

def approx_matmul(a, b, table: ProductTable, *, engine: Engine = "auto") -> torch.Tensor:
    """Approximate GEMM ``C[..., m, n] = sum_k lut[code(a[..., m, k]), code(b[..., k, n])]``.

    Bit-exact with the product table for every operand, like ``torch.matmul`` in shapes
    (1-D operands and broadcast batch dimensions included).

    Parameters
    ----------
    a, b : torch.Tensor
        Integer operand VALUES (any integer dtype, or floats holding exact integers), of
        shapes (..., M, K) and (..., K, N). numpy arrays are accepted too.
    table : ProductTable
        The multiplier's product table.
    engine : {"auto", "lowrank", "bag", "gather", "native", "native-gather"}
        Force an engine (all give the same result); "auto" picks the fastest.

    Returns
    -------
    torch.Tensor
        int64, shape (..., M, N). Every result is exact (no float rounding anywhere).

    Raises
    ------
    InputError
        An operand value outside the table's range, a non-integer value, or shapes that
        do not multiply.
    ToolError
        A native engine forced where the kernels cannot be compiled.
    """
    if engine == "auto" and type(a) is torch.Tensor and type(b) is torch.Tensor:
        # the prepared native kernel call for these operands, once `auto` picked it
        # (`_fast_key` and `NativeCall.__call__` inlined: on a model's head a whole call
        # is a few microseconds)
        call = _FAST.get((getattr(table, "key", None), a.shape, a.stride(), a.dtype,
                          a.is_cpu, b.shape, b.stride(), b.dtype, b.is_cpu))
        if call is not None:
            out = torch.from_numpy(np.empty(call.shape, dtype=np.int64))
            if not call.fn(call.ref, a.data_ptr(), b.data_ptr(), out.data_ptr()):
                return out                 # else a bad value: found and named below
    if not isinstance(table, ProductTable):
        raise InputError(f"table must be a ProductTable, got {type(table).__name__}")
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(a)
    if isinstance(b, np.ndarray):
        b = torch.from_numpy(b)
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise InputError("operands a and b must be torch tensors, got "
                         f"{type(a).__name__} and {type(b).__name__}")
    a, b, batch, squeeze = _shapes(a, b)
    ca = _as_codes(a, "a", *table.a_range, table.wa, table)
    cb = _as_codes(b, "b", *table.b_range, table.wb, table)
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if 0 in (ca.shape[-2], ca.shape[-1], cb.shape[-1]) or 0 in batch:   # empty sum: 0
        out = torch.zeros(*batch, ca.shape[-2], cb.shape[-1], dtype=torch.int64)
        for dim in squeeze:
            out = out.squeeze(dim)
        return out
    plan = table.plan
    auto = engine == "auto"
    if auto:
        key = (table.key, tuple(ca.shape), tuple(cb.shape))
        engine = _TUNED.get(key)
        if engine is None:
            engine = (_tune(key, plan, ca, cb, batch) if _tune_now(key)
                      else _auto_engine(plan, ca, cb, batch))
    if engine in ("native", "native-gather"):
        if engine == "native" and plan["int8"] is None:
            raise InputError(f"engine 'native' needs an exact low-rank factorization, which "
                             f"table {table.name or table.key[:10]} does not have")
        if not _native.available():
            raise ToolError(f"engine {engine!r} needs the compiled kernels: "
                            f"{_native.unavailable_reason}")
        out = _native_matmul(ca, cb, batch, plan, engine)
        if auto and _TUNED.get(key) == engine:   # later calls skip the checks in Python
            _prepare_fast(table, engine, a, b, batch)
    elif engine == "terms":                # auto only: the float GEMM over integer terms
        out = _lowrank_batched(ca, cb, plan)
        out = out if out.shape == (*batch, ca.shape[-2], cb.shape[-1]) else \
            out.expand(*batch, ca.shape[-2], cb.shape[-1]).contiguous()
    elif engine == "lowrank":
        if plan["int8"] is None:
            raise InputError(f"engine 'lowrank' needs an exact low-rank factorization, which "
                             f"table {table.name or table.key[:10]} does not have")
        out = _lowrank_matmul(ca, cb, batch, plan)
    elif engine == "bag":
        out = _bag_matmul(ca, cb, batch, plan)
    elif engine == "gather":
        out = _gather_matmul(ca, cb, batch, plan)
    else:
        raise InputError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    for dim in squeeze:
        out = out.squeeze(dim)
    return out


def _estimate(plan, ga: int, gb: int, M: int, K: int, N: int) -> dict[str, float]:
    """Rough cost (ns, one core) of each engine for (ga, M, K) @ (gb, K, N) operands.

    Constants fitted to scripts/bench_emulation.py runs (docs/emulation.md): int8 GEMM
    ~0.005 ns per multiply-accumulate and digit, digit gathers ~0.2 ns per element,
    embedding-bag rows ~0.5 ns per gathered element and ~0.1 ns per summed one, plain
    gather ~1.3 ns per lookup, small batched float GEMMs ~0.13 ns per MAC and term
    (0.035 from 64 rows/columns up), plus fixed per-call overheads.
    """
    G = max(ga, gb)
    macs = G * M * K * N
    codes = max(plan["lut"].shape)

    def bag(P, Q):                       # one 2-D embedding-bag GEMM, its block loop
        side = min(P, Q)
        pc = max(1, min(side, BAG_BLOCK_ELEMENTS // (codes * 4)))
        kk = max(1, min(K, BAG_BLOCK_ELEMENTS // (codes * pc)))
        calls = -(-side // pc) * -(-K // kk)
        return 40e3 + 10e3 * calls + 0.5 * K * side * codes + 0.1 * P * Q * K

    costs = {"gather": 30e3 + 1.3 * macs}
    if _native.available():
        costs.update(_native_costs(plan, ga, gb, M, K, N))
    if ga == 1 or gb == 1:                                 # one 2-D GEMM
        P, Q = (ga * M, N) if gb == 1 else (M, gb * N)
        costs["bag"] = bag(P, Q)
        if plan["int8"] is not None:
            W = plan["width"]
            costs["lowrank"] = 45e3 + 0.0054 * P * Q * K * W + 0.2 * (P + Q) * K * W
    else:                                                  # batched on both sides
        costs["bag"] = G * bag(M, N)
        if plan["int8"] is not None:
            costs["lowrank"] = min(_batched_costs(plan, G, M, K, N))
    return costs


def _native_costs(plan, ga: int, gb: int, M: int, K: int, N: int) -> dict[str, float]:
    """Estimated ns of the native kernels (fitted to scripts/bench_emulation.py runs):
    per operand element (check, code, digits: ~1 ns plus ~0.1 ns per digit), per output
    (~0.3 ns), per int8 multiply-accumulate (VNNI, ~0.0025 ns) and per lookup of the
    gather (~0.45 ns)."""
    G = max(ga, gb)
    rows = G * M
    passes = 1 if gb == 1 else G          # b's digits are packed once per batch of b
    n_pad = -(-N // 8) * 8
    costs = {"native-gather": 3e3 + 0.45 * rows * K * N + 1.0 * (rows * K + passes * K * N)}
    if plan["int8"] is not None:
        W = plan["width"]
        k_pad = -(-K * W // 4) * 4
        costs["native"] = (3e3 + (1.0 + 0.1 * W) * rows * K +
                           passes * (1.0 + 0.15 * W) * K * N + 0.3 * rows * N +
                           0.0025 * rows * k_pad * n_pad)
    return costs


def _batched_costs(plan, G: int, M: int, K: int, N: int) -> tuple[float, float]:
    """Estimated ns of the two batched low-rank variants: one batched float GEMM over
    the integer terms, or a loop of int8 GEMMs (better for few, large matrices)."""
    r = len(plan["terms"])
    W = plan["width"]
    per_mac = 0.13 if min(M, N) < 64 else 0.035
    terms = 45e3 + per_mac * G * M * K * N * r + 0.2 * G * (M + N) * K * r
    loop = G * (45e3 + 0.0054 * M * N * K * W + 0.2 * (M + N) * K * W)
    return terms, loop


#: measured engine choice per (table, shape of a, shape of b), see `_tune`
_TUNED: dict[tuple, str] = {}
_CALLS: dict[tuple, int] = {}
#: shapes whose best estimated cost is above this (ns) keep the estimate's choice
TUNE_MAX_NS = 20e6
#: engines estimated this many times slower than the best are not timed
TUNE_SPREAD = 30.0
MAX_TUNED = 4096


def _tune_now(key) -> bool:
    """Tune on the second call with a (table, shapes) key: one-off GEMMs (tests, the
    simulator's checks) never pay for it, a model's repeated GEMMs do once."""
    with _PLANS_LOCK:
        n = _CALLS.get(key, 0) + 1
        if len(_CALLS) > MAX_TUNED:
            _CALLS.clear()
        _CALLS[key] = n
    return n == 2


def _candidates(plan, ca, cb, batch) -> list[str]:
    costs = _estimate(plan, math.prod(ca.shape[:-2]), math.prod(cb.shape[:-2]),
                      ca.shape[-2], ca.shape[-1], cb.shape[-1])
    if plan["int8"] is not None:
        G = math.prod(batch)
        costs["terms"] = _batched_costs(plan, G, ca.shape[-2], ca.shape[-1],
                                        cb.shape[-1])[0]
    best = min(costs.values())
    if best > TUNE_MAX_NS:
        return [min(costs, key=costs.get)]
    return sorted((e for e, c in costs.items() if c <= TUNE_SPREAD * best), key=costs.get)


def _tune(key, plan, ca, cb, batch) -> str:
    """Time every plausible engine on these very operands (all are exact, so only the
    speed differs) and remember the fastest for the key: the cost model's constants
    are rough, and on small GEMMs fixed per-call costs decide."""
    import time
    names = _candidates(plan, ca, cb, batch)
    if len(names) > 1:
        times = {}
        for name in names:
            if name.startswith("native"):    # timed as the prepared call later calls make
                xa, xb = _native_operands(ca, cb, batch)
                call = _native_call(plan, name, xa, xb, batch)
                fn = lambda *_, call=call, xa=xa, xb=xb: call(xa, xb)   # noqa: E731
            else:
                fn = _ENGINES[name]
            fn(ca, cb, batch, plan)           # warm-up: scratch buffers, caches
            best = math.inf
            for _ in range(3):
                t0 = time.perf_counter()
                fn(ca, cb, batch, plan)
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        names = [min(times, key=times.get)]
    with _PLANS_LOCK:
        if len(_TUNED) > MAX_TUNED:
            _TUNED.clear()
        _TUNED[key] = names[0]
    return names[0]


def _auto_engine(plan, ca, cb, batch) -> str:
    costs = _estimate(plan, math.prod(ca.shape[:-2]), math.prod(cb.shape[:-2]),
                      ca.shape[-2], ca.shape[-1], cb.shape[-1])
    return min(costs, key=costs.get)


def _split_batch(ca, cb, batch):
    """Decide how batch dimensions map onto 2-D GEMMs.

    Returns ("a", A2, B2) when b carries no batch (rows of all a's batches stacked),
    ("b", ...) when only b is batched (computed transposed), or ("both", A, B) expanded.
    """
    bsize_a = math.prod(ca.shape[:-2])
    bsize_b = math.prod(cb.shape[:-2])
    K = ca.shape[-1]
    if bsize_b == 1:
        return "a", ca.reshape(-1, K), cb.reshape(K, -1)
    if bsize_a == 1:
        return "b", ca.reshape(-1, K), cb
    return "both", ca.expand(*batch, *ca.shape[-2:]), cb.expand(*batch, *cb.shape[-2:])


# -- engine: low rank ------------------------------------------------------------------

_INT_MM_OK: bool | None = None


def _int_mm_works() -> bool:
    """torch._int_mm is exact on this machine (some back-ends saturate int16 pairs)."""
    global _INT_MM_OK
    if _INT_MM_OK is None:
        ok = hasattr(torch, "_int_mm")
        if ok:
            try:
                gen = torch.Generator().manual_seed(1)
                x = torch.randint(-128, 128, (40, 600), dtype=torch.int8, generator=gen)
                y = torch.randint(-128, 128, (600, 24), dtype=torch.int8, generator=gen)
                x[:8] = -128
                x[8:16] = 127
                y[:, :8] = -128
                y[:, 8:16] = 127
                ok = torch.equal(torch._int_mm(x, y).to(torch.int64),
                                 x.to(torch.int64) @ y.to(torch.int64))
            except RuntimeError:
                ok = False
        _INT_MM_OK = ok
    return _INT_MM_OK


def _lowrank_matmul(ca, cb, batch, plan) -> torch.Tensor:
    kind, A, B = _split_batch(ca, cb, batch)
    K = ca.shape[-1]
    if kind == "b":  # C^T = B^T (x) A^T with the transposed table: b's rows stacked
        At = B.transpose(-1, -2).reshape(-1, K)
        out = _lowrank_2d(At, A.t(), plan, transposed=True)  # (bb*N, M)
        out = out.reshape(*cb.shape[:-2], cb.shape[-1], ca.shape[-2]).transpose(-1, -2)
        return out.expand(*batch, *out.shape[-2:]).contiguous()
    if kind == "a":
        out = _lowrank_2d(A, B, plan)
        return out.reshape(*ca.shape[:-2], ca.shape[-2], cb.shape[-1]).expand(
            *batch, ca.shape[-2], cb.shape[-1]).contiguous()
    G = math.prod(batch)
    terms, loop = _batched_costs(plan, G, A.shape[-2], K, B.shape[-1])
    if loop < terms:
        flat_a = A.reshape(G, *A.shape[-2:])
        flat_b = B.reshape(G, *B.shape[-2:])
        out = torch.stack([_lowrank_2d(x, y, plan) for x, y in zip(flat_a, flat_b)])
        return out.reshape(*batch, A.shape[-2], B.shape[-1])
    return _lowrank_batched(A, B, plan)


def _lowrank_2d(A, B, plan, transposed: bool = False) -> torch.Tensor:
    """(P, K) codes x (K, Q) codes -> (P, Q) int64 through int8 GEMMs.

    With `transposed`, A holds codes of operand b and B codes of operand a (the product
    is C^T): factor tables and row/column terms swap roles.
    """
    P, K = A.shape
    Q = B.shape[1]
    row, col = (plan["col"], plan["row"]) if transposed else (plan["row"], plan["col"])
    fa, fb = ("g", "f") if transposed else ("f", "g")
    A = A.contiguous()
    # b's digits are wanted as rows (Q, K): free when b is a transposed weight
    b_rows = B.t().is_contiguous()
    B = B.t() if b_rows else B.contiguous()
    # per-row and per-column terms (skipped when the plan has none, e.g. exact tables)
    rowsum = (torch.index_select(row, 0, A.view(-1)).view(P, K).sum(1) if plan["has_row"]
              else None)
    colsum = (torch.index_select(col, 0, B.reshape(-1)).view(B.shape).sum(1 if b_rows else 0)
              if plan["has_col"] else torch.zeros(Q, dtype=torch.int64))
    colsum += K * plan["const"]
    out = torch.empty(P, Q, dtype=torch.int64)
    groups = plan["groups"]
    if not groups:
        out.copy_(colsum[None, :].expand(P, Q))
        return out.add_(rowsum[:, None]) if rowsum is not None else out
    width = max(g.width for g in groups)
    # K chunk: int32 bound (|int8 product| <= 2^14) and temporaries of bounded size;
    # P block: the int32/int64 partial products stay within PART_ELEMENTS
    kc = max(1, min(K, (2**31 - 1) // (2**14 * width),
                    BLOCK_ELEMENTS // max(1, (P + Q) * width)))
    pc = max(1, min(P, PART_ELEMENTS // max(1, Q)))
    use_int = _int_mm_works()
    for p0 in range(0, P, pc):
        p = min(pc, P - p0)
        acc = out[p0:p0 + p]
        part32 = _workspace("part32", (p, Q), torch.int32)
        first = True
        for k0 in range(0, K, kc):
            a_blk = A[p0:p0 + p, k0:k0 + kc]
            b_blk = B[:, k0:k0 + kc] if b_rows else B[k0:k0 + kc]
            for grp in groups:
                G = grp.gather(b_blk, fb, transpose=not b_rows)    # (Q, kc*width) int8
                F = grp.gather(a_blk, fa)                          # (p, kc*width) int8
                part = (torch._int_mm(F, G.t(), out=part32) if use_int
                        else _float_exact_mm(F, G.t()))
                # (mixed int32/int64 adds with broadcasting are slow: cast first)
                part64 = _workspace("part64", (p, Q), torch.int64)
                part64.copy_(part)
                if first:
                    torch.add(colsum[None, :], part64, alpha=grp.scale, out=acc)
                    first = False
                else:
                    acc.add_(part64, alpha=grp.scale)
        if rowsum is not None:
            acc.add_(rowsum[p0:p0 + p, None])
    return out


def _float_exact_mm(F: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """int8 x int8 GEMM in float32 (every partial sum < 2^24 when K <= 1023) or float64."""
    K = F.shape[-1]
    dtype = torch.float32 if K * 2**14 < 2**24 else torch.float64
    return torch.matmul(F.to(dtype), G.to(dtype)).to(torch.int64)


def _rows(table: torch.Tensor, columns: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """table[codes] flattened over the last two axes: (..., K) codes -> (..., K * r).

    The order along the last axis depends on r only (both operands of a GEMM use the
    same r, hence the same order, which is all the GEMM needs): one 1-D gather per
    column (`columns` = table transposed, contiguous) concatenated as (term, k) for
    r <= 4, where that is ~2x faster than `embedding` (torch.stack on the last axis is
    several times slower still); `embedding`'s (k, term) order above.
    """
    r = table.shape[1]
    if r > 4:
        return torch.nn.functional.embedding(codes, table).flatten(-2)
    flat = codes.reshape(-1)
    cols = [torch.index_select(columns[t], 0, flat).view(codes.shape) for t in range(r)]
    return cols[0] if r == 1 else torch.cat(cols, dim=-1)


def _lowrank_batched(A, B, plan) -> torch.Tensor:
    """Both operands batched (attention): one batched float GEMM over the exact integer
    terms, ``C = sum_t u_t(A) @ v_t(B)`` with the K*r mapped operands stacked. Exact: every
    partial sum is an integer of magnitude at most K * sum_t max|u_t| max|v_t|, kept below
    2^24 (float32) or 2^53 (float64, K chunked beyond)."""
    K = A.shape[-1]
    bound = plan["term_bound"]
    if K * bound < 2**24 and torch.get_float32_matmul_precision() == "highest":
        dtype, kc = torch.float32, K
    else:
        dtype, kc = torch.float64, max(1, min(K, (2**53 - 1) // bound))
    U, V, Ut, Vt = plan["term_tables"][dtype]
    Bt = B.transpose(-1, -2)
    out = None
    for k0 in range(0, K, kc):
        a, b = (A, Bt) if kc == K else (A[..., k0:k0 + kc], Bt[..., k0:k0 + kc])
        F = _rows(U, Ut, a)                                      # (..., M, kc*r)
        G = _rows(V, Vt, b)                                      # (..., N, kc*r)
        part = torch.matmul(F, G.transpose(-1, -2)).to(torch.int64)
        out = part if out is None else out.add_(part)
    return out


# -- engine: embedding bag -------------------------------------------------------------

def _bag_matmul(ca, cb, batch, plan) -> torch.Tensor:
    kind, A, B = _split_batch(ca, cb, batch)
    lut = plan["lut_float"]
    if kind in ("a", "b"):
        if kind == "b":  # a has no batch: fold b's batch into its columns
            K = A.shape[1]
            Bf = B.movedim(-2, 0).reshape(K, -1)             # (K, bb*N)
            out = _bag_2d(A, Bf, lut, plan["max_abs"])       # (M, bb*N)
            out = out.reshape(A.shape[0], *cb.shape[:-2], cb.shape[-1]).movedim(0, -2)
            return out.expand(*batch, *out.shape[-2:]).contiguous()
        out = _bag_2d(A, B, lut, plan["max_abs"])
        return out.reshape(*ca.shape[:-2], ca.shape[-2], cb.shape[-1]).expand(
            *batch, ca.shape[-2], cb.shape[-1]).contiguous()
    flat_a = A.reshape(-1, *A.shape[-2:])
    flat_b = B.reshape(-1, *B.shape[-2:])
    out = torch.stack([_bag_2d(x, y, lut, plan["max_abs"]) for x, y in zip(flat_a, flat_b)])
    return out.reshape(*batch, A.shape[-2], B.shape[-1])


def _bag_2d(A, B, lut, max_abs) -> torch.Tensor:
    """(P, K) x (K, Q) codes -> (P, Q) int64 via embedding_bag over per-k table rows.

    For a block of k, ``W[(c, k), i] = lut[A[i, k], c]`` is gathered (rows of length P)
    and ``embedding_bag`` sums, for every output column q, the K rows ``(B[k, q], k)``.
    The smaller of P and Q is the gathered side (build cost K * 2^w * min(P, Q), bag
    cost P * K * Q). Blocks of k are small enough for W to stay in cache and for every
    float partial sum to stay below 2^24 (float32; 2^53 for a float64 table): exact.
    """
    P, K = A.shape
    Q = B.shape[1]
    if Q < P:  # gather from b's side: C^T = B^T (x) A^T with lut^T
        return _bag_2d(B.t(), A.t(), lut.t().contiguous(), max_abs).t()
    lut_t = lut.t().contiguous()                         # lut_t[c, a] = lut[a, c]
    nb = lut_t.shape[0]
    bits = 24 if lut.dtype == torch.float32 else 53
    pc = max(1, min(P, BAG_BLOCK_ELEMENTS // (nb * 4)))
    kk = max(1, min(K, BAG_BLOCK_ELEMENTS // (nb * pc), (2**bits - 1) // max(1, max_abs)))
    buf = torch.empty(nb * kk * pc, dtype=lut.dtype)
    out = torch.zeros(Q, P, dtype=torch.float64)         # exact below 2^53
    ks = torch.arange(kk)
    for p0 in range(0, P, pc):
        a_t = A[p0:p0 + pc].t().contiguous()             # (K, p)
        p = a_t.shape[1]
        acc = out[:, p0:p0 + p]
        for k0 in range(0, K, kk):
            kb = min(kk, K - k0)
            w = buf[:nb * kb * p].view(nb, kb * p)
            torch.index_select(lut_t, 1, a_t[k0:k0 + kb].reshape(-1), out=w)
            idx = B[k0:k0 + kb].t() * kb + ks[:kb]         # (Q, kb): row c*kb + k
            acc += torch.nn.functional.embedding_bag(idx, w.view(nb * kb, p), mode="sum")
    return out.t().to(torch.int64)


# -- engine: naive gather (reference, benchmarks) --------------------------------------

def _gather_matmul(ca, cb, batch, plan) -> torch.Tensor:
    """Plain table gather, ``lut[a_code, b_code]`` for every (m, k, n), summed over k;
    blocked over rows so the index block stays in cache. M*K*N lookups: the reference,
    and the cheapest engine for tiny GEMMs."""
    nb = plan["lut"].shape[1]
    M, K, N = ca.shape[-2], ca.shape[-1], cb.shape[-1]
    # float32 lookups summed in float32 when every partial sum stays below 2^24 (exact;
    # ~15 % faster than int32 lookups summed into int64)
    lut = (plan["lut_float"].view(-1) if plan["lut_float"].dtype == torch.float32 and
           K * plan["max_abs"] < 2**24 else plan["lut_gather"])
    if math.prod(batch) * M * K * N <= GATHER_BLOCK_ELEMENTS:   # tiny: one shot
        idx = (ca * nb).unsqueeze(-1) + cb.unsqueeze(-3)
        out = torch.take(plan["lut"], idx).sum(-2)       # take: no advanced-indexing cost
        return out if out.shape == (*batch, M, N) else \
            out.expand(*batch, M, N).contiguous()
    if math.prod(cb.shape[:-2]) == 1:           # b unbatched: one GEMM over a's rows
        A = ca.reshape(1, -1, ca.shape[-1]).to(torch.int32)
        B = cb.reshape(1, *cb.shape[-2:]).to(torch.int32)
        out = _gather_blocks(A, B, lut, nb)
        return out.reshape(*ca.shape[:-1], cb.shape[-1]).expand(
            *batch, ca.shape[-2], cb.shape[-1]).contiguous()
    A = ca.expand(*batch, *ca.shape[-2:]).reshape(-1, *ca.shape[-2:]).to(torch.int32)
    B = cb.expand(*batch, *cb.shape[-2:]).reshape(-1, *cb.shape[-2:]).to(torch.int32)
    return _gather_blocks(A, B, lut, nb).reshape(*batch, A.shape[-2], B.shape[-1])


def _gather_blocks(A, B, lut, nb) -> torch.Tensor:
    """(G, M, K) x (G, K, N) int32 codes -> (G, M, N) int64 by blocked lookups."""
    G, M, K = A.shape
    N = B.shape[-1]
    acc = torch.float32 if lut.dtype == torch.float32 else torch.int64
    out = torch.empty(G, M, N, dtype=acc)
    A = A * nb
    mc = max(1, min(M, GATHER_BLOCK_ELEMENTS // max(1, K * N)))
    gc = max(1, GATHER_BLOCK_ELEMENTS // max(1, M * K * N)) if mc == M else 1
    for g0 in range(0, G, gc):                 # several small matrices per block
        for m0 in range(0, M, mc):
            idx = A[g0:g0 + gc, m0:m0 + mc, :, None] + B[g0:g0 + gc, None, :, :]
            vals = torch.index_select(lut, 0, idx.view(-1)).view(idx.shape)
            torch.sum(vals, dim=2, dtype=acc, out=out[g0:g0 + gc, m0:m0 + mc])
    return out.to(torch.int64)


def _terms_matmul(ca, cb, batch, plan) -> torch.Tensor:
    return _lowrank_batched(ca, cb, plan)


# -- engines: the native kernels (models/approx_kernels.cc) -----------------------------

#: prepared native calls on raw operands, by (table key, shape, stride, dtype, is_cpu of
#: a and b; only CPU operands are registered):
#: `approx_matmul`'s fast path, filled once `auto` has tuned a native engine for them
_FAST: dict[tuple, _native.NativeCall] = {}
#: prepared native calls on codes (the engine as `_tune` and forced engines run it)
_PREPARED: dict[tuple, _native.NativeCall] = {}


def _native_call(plan, kind: str, ca, cb, batch) -> _native.NativeCall:
    """The prepared kernel call on these code tensors (see `_native_operands`)."""
    key = (plan["table"].key, kind, ca.shape, ca.stride(), cb.shape, cb.stride())
    call = _PREPARED.get(key)
    if call is None:
        if len(_PREPARED) > MAX_TUNED:
            _PREPARED.clear()
        call = _PREPARED[key] = _native.NativeCall(plan["table"], kind, ca, cb, batch,
                                                   codes=True)
    return call


def _native_operands(ca, cb, batch):
    """Code tensors whose batch dimensions the kernel can walk with one stride each
    (expanded copies for the rare broadcasts that do not collapse)."""
    if _native.batch_stride(tuple(ca.shape[:-2]), tuple(ca.stride()[:-2]), batch) is None or \
            _native.batch_stride(tuple(cb.shape[:-2]), tuple(cb.stride()[:-2]), batch) is None:
        ca = ca.expand(*batch, *ca.shape[-2:]).contiguous()
        cb = cb.expand(*batch, *cb.shape[-2:]).contiguous()
    return ca, cb


def _native_matmul(ca, cb, batch, plan, kind: str) -> torch.Tensor:
    """The native kernel on int64 codes (checked already, so it cannot refuse them)."""
    ca, cb = _native_operands(ca, cb, batch)
    return _native_call(plan, kind, ca, cb, batch)(ca, cb)


def _fast_key(table, a, b) -> tuple:
    """The key of `_FAST` (built inline in `approx_matmul`, for speed)."""
    return (table.key, a.shape, a.stride(), a.dtype, a.is_cpu, b.shape, b.stride(), b.dtype,
            b.is_cpu)


def _prepare_fast(table, kind: str, a, b, batch) -> None:
    """Register the native call on these raw operands for `approx_matmul`'s fast path."""
    if not _native.supported(a, b):
        return
    key = _fast_key(table, a, b)
    if key in _FAST:
        return
    try:
        call = _native.NativeCall(table, kind, a, b, batch)
    except ValueError:
        return
    if len(_FAST) > MAX_TUNED:
        _FAST.clear()
    _FAST[key] = call


_ENGINES = {"lowrank": lambda ca, cb, batch, plan: _lowrank_matmul(ca, cb, batch, plan),
            "terms": _terms_matmul,
            "bag": lambda ca, cb, batch, plan: _bag_matmul(ca, cb, batch, plan),
            "gather": lambda ca, cb, batch, plan: _gather_matmul(ca, cb, batch, plan),
            "native": lambda ca, cb, batch, plan: _native_matmul(ca, cb, batch, plan, "native"),
            "native-gather": lambda ca, cb, batch, plan: _native_matmul(ca, cb, batch, plan,
                                                                        "native-gather")}


# -- gradients -------------------------------------------------------------------------

Grad = Literal["ste", "table"]


def _unbroadcast(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum `grad` down to `shape` (undo torch.matmul-style batch broadcasting)."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(i, keepdim=True)
    return grad


def _central_difference(values: np.ndarray, f: np.ndarray) -> np.ndarray:
    """d f / d value at every code: central difference over neighbouring operand values,
    one-sided at the ends of the range. `f` is indexed by code; so is the result."""
    order = np.argsort(values)
    fv = f[order].astype(np.float64)
    d = np.empty_like(fv)
    d[1:-1] = (fv[2:] - fv[:-2]) / 2
    d[0] = fv[1] - fv[0]
    d[-1] = fv[-1] - fv[-2]
    out = np.empty_like(d)
    out[order] = d
    return out


def _gradient_factors(table: ProductTable) -> dict:
    """Float factors of the finite-difference tables, read off the exact terms:
    lut = sum_t u_t v_t^T, so d lut/da = sum_t (D u_t) v_t^T and d lut/db = sum_t u_t (D v_t)^T
    (D: central difference over operand values; linear, so the rank is kept)."""
    plan = table.plan
    if "grad" not in plan:
        terms = plan["terms"]
        if terms is None:  # no integer factorization: one-hot rows, always exact
            eye = np.eye(1 << table.wa, dtype=np.int64)
            terms = [(eye[c], table.table[c]) for c in range(1 << table.wa)]
        us = np.stack([u for u, _ in terms], axis=1).astype(np.float64)
        vs = np.stack([v for _, v in terms], axis=1).astype(np.float64)
        dus = np.stack([_central_difference(table.a_values, u) for u, _ in terms], 1)
        dvs = np.stack([_central_difference(table.b_values, v) for _, v in terms], 1)
        plan["grad"] = {name: torch.from_numpy(x) for name, x in
                        (("u", us), ("v", vs), ("du", dus), ("dv", dvs))}
    return plan["grad"]


def _table_grads(ca, cb, grad_out, table: ProductTable):
    """grad_a[m,k] = sum_n g[m,n] * dlut/da(a_mk, b_kn), grad_b likewise, through the
    rank-T factors: grad_a = sum_t Du_t(A) * (g @ v_t(B)^T), grad_b = sum_t
    Dv_t(B) * (u_t(A)^T @ g). T GEMMs of the exact GEMM's size, in grad_out's dtype."""
    f = _gradient_factors(table)
    dt = grad_out.dtype
    u, v, du, dv = (f[k].to(dt) for k in ("u", "v", "du", "dv"))
    grad_a = torch.zeros(*grad_out.shape[:-1], ca.shape[-1], dtype=dt)
    grad_b = torch.zeros(*grad_out.shape[:-2], cb.shape[-2], grad_out.shape[-1], dtype=dt)
    for t in range(u.shape[1]):
        vb = v[:, t][cb]                                  # (..., K, N)
        ua = u[:, t][ca]                                  # (..., M, K)
        grad_a = grad_a + du[:, t][ca] * torch.matmul(grad_out, vb.transpose(-1, -2))
        grad_b = grad_b + dv[:, t][cb] * torch.matmul(ua.transpose(-1, -2), grad_out)
    return grad_a, grad_b


class ApproxMatmul(torch.autograd.Function):
    """Autograd face of `approx_matmul`: ``ApproxMatmul.apply(a, b, table, grad)``.

    Forward: the exact table GEMM, returned in the floating dtype of the operands
    (float32 results are exact while |C| < 2^24, float64 while |C| < 2^53).
    Backward, by `grad`:

    ``"ste"`` (default)
        Straight-through: the gradients of the exact ``a @ b``
        (``g @ b^T`` and ``a^T @ g``).
    ``"table"``
        Finite differences of the product table over operand values:
        ``dL/da[m,k] = sum_n g[m,n] * Da(a[m,k], b[k,n])`` with
        ``Da(x, y) = (lut(x+1, y) - lut(x-1, y)) / 2`` (one-sided at the range ends),
        and ``dL/db`` likewise with ``Db``. For the exact table this equals "ste".
    """

    @staticmethod
    def forward(ctx, a, b, table: ProductTable, grad: Grad = "ste"):
        if grad not in ("ste", "table"):
            raise InputError(f"unknown gradient {grad!r}: expected 'ste' or 'table'")
        out = approx_matmul(a, b, table)
        dtype = torch.promote_types(a.dtype, b.dtype)
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        ctx.save_for_backward(a, b)
        ctx.table, ctx.grad = table, grad
        return out.to(dtype)

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        squeeze_a, squeeze_b = a.dim() == 1, b.dim() == 1
        a2 = a.unsqueeze(0) if squeeze_a else a
        b2 = b.unsqueeze(-1) if squeeze_b else b
        g = grad_out
        if squeeze_a:
            g = g.unsqueeze(-2)
        if squeeze_b:
            g = g.unsqueeze(-1)
        if ctx.grad == "ste":
            ga = torch.matmul(g, b2.to(g.dtype).transpose(-1, -2))
            gb = torch.matmul(a2.to(g.dtype).transpose(-1, -2), g)
        else:
            t = ctx.table
            ca = a2.detach().to(torch.int64) & ((1 << t.wa) - 1)
            cb = b2.detach().to(torch.int64) & ((1 << t.wb) - 1)
            ga, gb = _table_grads(ca, cb, g, t)
        ga = _unbroadcast(ga, a2.shape)
        gb = _unbroadcast(gb, b2.shape)
        if squeeze_a:
            ga = ga.squeeze(0)
        if squeeze_b:
            gb = gb.squeeze(-1)
        ga = ga.to(a.dtype) if a.is_floating_point() else None
        gb = gb.to(b.dtype) if b.is_floating_point() else None
        return ga, gb, None, None


def approx_matmul_grad(a: torch.Tensor, b: torch.Tensor, table: ProductTable,
                       grad: Grad = "ste") -> torch.Tensor:
    """Differentiable `approx_matmul` (see `ApproxMatmul` for the two gradients)."""
    return ApproxMatmul.apply(a, b, table, grad)

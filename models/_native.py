"""The fused C++ approximate-GEMM kernels (``approx_kernels.cc``), called through ctypes.

One call of `NativeCall` computes a whole approximate GEMM from the operands' memory:
value check, codes, the exact low-rank int8 GEMM (AVX512-VNNI where the CPU has it) or
the gather (64 lookups per byte permutation with AVX512-VBMI, else the plain loop), int64
result, on ``torch.get_num_threads()`` threads (OpenMP, passed per call). The library is
compiled once per machine with the system C++ compiler (``-O3 -march=native -fopenmp``)
and cached (`axsa.native`, keyed by the CPU's model and flags); without a
compiler (or with one that fails) `available()` is False, one warning on stderr says
why and how to get a compiler, and `axsa.models.approx` uses its torch engines only (same
results, slower). ``AXSA_NATIVE=0`` disables the kernels (no warning).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from axsa import formats, native
from axsa.errors import ToolError

SOURCE = Path(__file__).with_name("approx_kernels.cc")
#: bump when the build recipe changes in a way the hashed inputs do not show
RECIPE = "axsa-approx-2"
#: -march=native: the cache key holds the CPU model and flags (`axsa.native.build_cached`),
#: so a cached library only ever runs on the CPU it was built for; -fopenmp: the kernels'
#: threads (the libgomp torch has loaded already, when it ships one: one thread pool);
#: -ffp-contract=off: the elementwise kernels round like the torch expressions they replace
#: (-fno-trapping-math lets their floor vectorize; it changes no value)
FLAGS = ("-O3", "-march=native", "-fno-strict-aliasing", "-ffp-contract=off",
         "-fno-trapping-math", "-fopenmp")

_i64, _i32, _vp = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p

#: operand dtype codes of the kernel
DTYPES = {torch.float32: 0, torch.float64: 1, torch.int64: 2, torch.int32: 3,
          torch.int16: 4, torch.int8: 5, torch.uint8: 6}


class _Operand(ctypes.Structure):
    _fields_ = [("batch_stride", _i64), ("outer_stride", _i64), ("inner_stride", _i64),
                ("lo", _i64), ("hi", _i64), ("dtype", _i32), ("width", _i32)]


class _Group(ctypes.Structure):
    _fields_ = [("f", _vp), ("g", _vp), ("width", _i64), ("stride", _i64), ("scale", _i64),
                ("f_planes", _vp), ("g_planes", _vp)]


class _Terms(ctypes.Structure):
    _fields_ = [("planes", _vp), ("count", _i64), ("offset", _i64)]


class _Plan(ctypes.Structure):
    _fields_ = [("batches", _i64), ("m", _i64), ("k", _i64), ("n", _i64),
                ("a", _Operand), ("b", _Operand), ("engine", _i32), ("ngroups", _i32),
                ("groups", _vp), ("row", _vp), ("col", _vp), ("lut32", _vp), ("lut64", _vp),
                ("acc32", _i32), ("row_terms", _Terms), ("col_terms", _Terms),
                ("planes", _i32), ("lut_planes", _Terms),
                ("lut_planes_t", _Terms), ("u16", _vp), ("v16", _vp), ("pair_bound", _i64),
                ("u_planes", _vp), ("v_planes", _vp)]


_LIBS: dict[bool, ctypes.CDLL | None] = {}
_LOCK = threading.Lock()
#: why the kernels are unavailable (compiler missing or failing), for messages
unavailable_reason = ""


def library(generic: bool = False) -> ctypes.CDLL:
    """The compiled kernels (built on first use); `generic` forces the portable loops.

    Raises ToolError when there is no working C++ compiler.
    """
    with _LOCK:
        lib = _LIBS.get(generic)
        if lib is None:
            flags = (*FLAGS, *(["-DAXSA_GENERIC"] if generic else []))
            cxx = native.cxx("the native emulation kernels")

            def compile_into(work: Path) -> None:
                native.run_compiler([cxx, "-std=c++17", *flags, "-fPIC", "-shared",
                                     str(SOURCE), "-o", "approx.so"], work,
                                    "the emulation kernels")

            path, _ = native.build_cached(
                "approx", [RECIPE, SOURCE.read_text(), native.cxx_version(cxx)], flags,
                "approx.so", compile_into)
            lib = ctypes.CDLL(str(path))
            lib.axsa_approx_gemm.argtypes = [_vp, _vp, _vp, _vp, _i32]
            lib.axsa_approx_gemm.restype = _i32
            lib.axsa_approx_gemm_f32.argtypes = [_vp, _vp, _vp, _vp, _i32, _vp, _i64, _vp]
            lib.axsa_approx_gemm_f32.restype = _i32
            lib.axsa_quantize.argtypes = [_vp, _i32, _i64, ctypes.c_double, ctypes.c_double,
                                          ctypes.c_double, _vp, _i32]
            lib.axsa_quantize.restype = _i32
            lib.axsa_quantize_i8.argtypes = [_vp, _i32, _i64, ctypes.c_double, ctypes.c_double,
                                             ctypes.c_double, _vp, _i32]
            lib.axsa_quantize_i8.restype = _i32
            lib.axsa_codes.argtypes = [_vp, _i32, _i64, _i64, _i64, _i32, _vp, _vp, _i32]
            lib.axsa_codes.restype = _i32
            lib.axsa_dequantize.argtypes = [_vp, _i32, _i64, _i64, _vp, _i64, _vp, _i32, _vp,
                                            _i32]
            lib.axsa_dequantize.restype = _i32
            lib.axsa_approx_openmp.argtypes = []
            lib.axsa_approx_openmp.restype = _i32
            lib.axsa_approx_simd.argtypes = []
            lib.axsa_approx_simd.restype = _i32
            _LIBS[generic] = lib
        return lib


def available() -> bool:
    """True when the kernels are compiled (or compile now) and not disabled.

    The first failure (no C++ compiler, a compiler that fails, a library that does not
    load) prints one warning on stderr; later calls return False at once."""
    global unavailable_reason
    if os.environ.get("AXSA_NATIVE", "1") == "0":
        unavailable_reason = "disabled by AXSA_NATIVE=0"
        return False
    if _LIBS.get(False, True) is None:
        return False
    try:
        library()
        return True
    except (ToolError, OSError) as exc:
        unavailable_reason = str(exc)
        with _LOCK:
            _LIBS[False] = None
        print(f"warning: the native emulation kernels are unavailable: {exc}\n"
              "warning: emulation goes on with the torch engines (same results, slower); "
              "for the kernels, install a C++ compiler (apt-get install g++) or set CXX "
              "to a working one", file=sys.stderr)
        return False


def table_data(plan) -> dict:
    """Per-table arrays for the kernel (kept in the table's plan): digit tables, zero
    padded to 1, 2, 4 or 8k bytes per code, with a's digits shifted to unsigned (+128;
    the shift's -128 * sum of b's digits goes into the column term, with the plan's
    constant), and the table itself for the gather. With codes of at most 8 bits, also
    each digit of every code side by side, and the row and column terms as byte planes
    (`_byte_planes`): the kernel's SIMD front end looks them up 64 codes at a time.

    `plan` is the table's `axsa.models.approx.Plan`, which keeps the result
    (`Plan.native_data`)."""
    table = plan.table
    data = {"keep": []}
    narrow = narrow_table(table)   # codes are bytes
    if plan.int8 is not None:
        col = plan.col.numpy().astype(np.int64) + plan.const
        groups = (_Group * max(1, len(plan.groups)))()
        for i, grp in enumerate(plan.groups):
            t = grp.f.shape[1]   # digits per code; stored in 1, 2, 4 or 8k bytes
            stride = t if t in (1, 2, 4) else (4 if t == 3 else -(-t // 8) * 8)
            f = np.zeros((grp.f.shape[0], stride), dtype=np.uint8)   # padding digits: 0
            g = np.zeros((grp.g.shape[0], stride), dtype=np.int8)
            f[:, :t] = grp.f.numpy().astype(np.int16) + 128
            g[:, :t] = grp.g.numpy()
            col = col - 128 * grp.scale * g.astype(np.int64).sum(axis=1)
            data["keep"] += [f, g]
            groups[i] = _Group(f.ctypes.data, g.ctypes.data, t, stride, grp.scale)
            if narrow:   # digit t of every code side by side, for the SIMD front end
                fp = np.zeros((t, 256), dtype=np.uint8)
                gp = np.zeros((t, 256), dtype=np.int8)
                fp[:, :f.shape[0]] = f[:, :t].T
                gp[:, :g.shape[0]] = g[:, :t].T
                data["keep"] += [fp, gp]
                groups[i].f_planes, groups[i].g_planes = fp.ctypes.data, gp.ctypes.data
        row = np.ascontiguousarray(plan.row.numpy().astype(np.int64))
        col = np.ascontiguousarray(col)
        data["keep"] += [row, col, groups]
        data["groups"], data["ngroups"] = groups, len(plan.groups)
        data["row"] = row.ctypes.data if plan.has_row else None
        data["col"] = col.ctypes.data
        data["row_terms"] = _byte_planes(row, data["keep"]) if narrow and plan.has_row \
            else _Terms()
        data["col_terms"] = _byte_planes(col, data["keep"]) if narrow else _Terms()
        data.update(_pairs(plan, data["keep"]))
    lut = np.ascontiguousarray(table.table)
    data["lut_planes"] = _lut_planes(lut, data["keep"]) if narrow else _Terms()
    data["lut_planes_t"] = _lut_planes(lut.T, data["keep"]) if narrow else _Terms()
    fits = plan.max_abs < 2**31
    lut32 = lut.astype(np.int32) if fits else None
    data["keep"] += [lut, lut32]
    data["lut32"] = lut32.ctypes.data if fits else None
    data["lut64"] = lut.ctypes.data
    return data


def _pairs(plan, keep: list) -> dict:
    """The kernel's int16 engine (2) for a rank-1 table, ``lut == outer(u, v)``, whose
    factors need two int8 parts each (four int8 products a pair of codes in the digit
    engine, one int16 product here): u and v per code, and max|u| * max|v|; empty where
    it does not apply."""
    terms = plan.terms
    if terms is None or len(terms) != 1 or plan.width <= 2 or not narrow_table(plan.table):
        return {}
    u, v = (np.asarray(x, dtype=np.int64) for x in terms[0])
    if np.abs(u).max() >= 2**15 or np.abs(v).max() >= 2**15 or \
            not np.array_equal(np.outer(u, v), plan.table.table):
        return {}
    u16, v16 = u.astype(np.int16), v.astype(np.int16)
    # low bytes then high bytes of every code's factor (256 codes each), for the SIMD
    # front end's byte lookups
    planes = [np.zeros((2, 256), dtype=np.uint8) for _ in range(2)]
    for f, pl in zip((u16, v16), planes):
        pl[:, :len(f)] = f.view(np.uint8).reshape(-1, 2).T
    keep += [u16, v16, *planes]
    return {"u16": u16.ctypes.data, "v16": v16.ctypes.data,
            "pair_bound": int(np.abs(u).max()) * int(np.abs(v).max()),
            "u_planes": planes[0].ctypes.data, "v_planes": planes[1].ctypes.data}


def narrow_table(table) -> bool:
    """Whether both codes of `table` are bytes (the SIMD front ends' lookups)."""
    return table.wa <= 8 and table.wb <= 8


def _lut_planes(lut: np.ndarray, keep: list) -> _Terms:
    """The table as byte planes for the plane gather: lut[a, b] = offset + sum_j 256^j
    planes[a, j, b], (256, count, 256) uint8 (no planes beyond 4 bytes of span; offset
    and count are those of lut.T too)."""
    offset = int(lut.min())
    span = lut - offset
    count = max(1, (int(span.max()).bit_length() + 7) // 8)
    if count > 4:
        return _Terms()
    planes = _ARENA.zeros((256, count, 256))
    for j in range(count):
        planes[:lut.shape[0], j, :lut.shape[1]] = (span >> (8 * j)) & 255
    keep.append(planes)
    return _Terms(planes.ctypes.data, count, offset)


class _HugeArena:
    """uint8 arrays carved from 2 MB-aligned anonymous mappings with transparent huge
    pages requested (Linux; elsewhere plain pages). The plane gather loads a table row
    of 256-1024 bytes at random for every product's (row, k): in 4 KB pages the same call
    took 1.1-1.3x as long in some processes as in others (their placement in L2), in a
    2 MB page it does not. Carved once per table and never returned (a table's plan
    lives as long as the process's table cache)."""

    CHUNK = 4 << 20
    HUGE = 2 << 20

    def __init__(self):
        self._lock = threading.Lock()
        self._maps: list[mmap.mmap] = []
        self._free: np.ndarray | None = None

    def zeros(self, shape: tuple) -> np.ndarray:
        n = int(np.prod(shape))
        if n > self.CHUNK // 2:
            return np.zeros(shape, dtype=np.uint8)
        with self._lock:
            if self._free is None or self._free.size < n:
                self._free = self._chunk()
            used = -(-n // 4096) * 4096   # (the next array on its own 4 KB page)
            out, self._free = self._free[:n], self._free[used:]
        return out.reshape(shape)   # (a fresh mapping is zero)

    def _chunk(self) -> np.ndarray:
        # private: shared anonymous memory is shmem, which gets no huge pages
        flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
        mm = mmap.mmap(-1, self.CHUNK + self.HUGE, **({"flags": flags} if flags else {}))
        self._maps.append(mm)
        buf = np.frombuffer(mm, dtype=np.uint8)
        start = -buf.ctypes.data % self.HUGE
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                mm.madvise(mmap.MADV_HUGEPAGE, start, self.CHUNK)
            except OSError:   # no transparent huge pages: plain pages still work
                pass
        return buf[start:start + self.CHUNK]


_ARENA = _HugeArena()


def _byte_planes(values: np.ndarray, keep: list) -> _Terms:
    """An int64 term per code as byte planes: values[c] = offset + sum_j 256^j plane_j[c]
    (no planes when the terms span more than 7 bytes: the kernel then sums them itself)."""
    offset = int(values.min())
    span = [int(v) - offset for v in values]
    count = max(1, (max(span).bit_length() + 7) // 8)
    if count > 7:
        return _Terms()
    planes = np.zeros((count, 256), dtype=np.uint8)
    for j in range(count):
        planes[j, :len(span)] = [(v >> (8 * j)) & 255 for v in span]
    keep.append(planes)
    return _Terms(planes.ctypes.data, count, offset)


def batch_stride(shape: tuple, strides: tuple, batch: tuple) -> int | None:
    """One element stride that walks an operand's batch dimensions (given by `shape` and
    `strides`, right-aligned with the broadcast `batch` shape) in row-major order: 0 when
    broadcast over all of them; None when they do not collapse into one stride."""
    pad = len(batch) - len(shape)
    st = [0] * pad + [0 if n == 1 else s for n, s in zip(shape, strides)]
    dims = [(n, s) for n, s in zip(batch, st) if n != 1]
    if all(s == 0 for _, s in dims):
        return 0
    for (_, s0), (n1, s1) in zip(dims, dims[1:]):
        if s0 != s1 * n1:
            return None
    return dims[-1][1]


class NativeCall:
    """A prepared kernel call for one (table, engine, operand shapes, strides, dtypes).

    ``call(a, b)`` returns the int64 result of shape (*batch, M, N) (``call(a, b,
    torch.float32)``: float32, converted in the kernel), or None when an operand holds a
    value outside the table's range or not an integer (the caller then finds and names
    the value). `codes`: the operands hold codes (0..2^w-1), not values;
    `generic`: the library built with the portable loops instead of AVX512-VNNI;
    `planes`: False keeps the scalar front end where the digit planes would run, the
    int8 digits where the int16 pairs would, and the plain lookup loop where the gather
    would run on the table's byte planes.
    Raises ValueError when a batch dimension cannot be walked with one stride.
    """

    def __init__(self, table, engine: str, a: torch.Tensor, b: torch.Tensor,
                 batch: tuple, codes: bool = False, generic: bool = False,
                 planes: bool = True):
        plan = table.plan
        data = plan.native_data
        self.lib = library(generic)
        self.fn = self.lib.axsa_approx_gemm
        #: the kernel's address, for the C++ fast path (`axsa.models._fastcall`)
        self.fn_address = ctypes.cast(self.fn, ctypes.c_void_p).value
        self.fn_f32 = self.lib.axsa_approx_gemm_f32
        M, K = a.shape[-2:]
        N = b.shape[-1]
        G = int(np.prod(batch)) if batch else 1
        sa = batch_stride(tuple(a.shape[:-2]), tuple(a.stride()[:-2]), batch)
        sb = batch_stride(tuple(b.shape[:-2]), tuple(b.stride()[:-2]), batch)
        if sa is None or sb is None:
            raise ValueError("batch dimensions do not collapse")
        p = _Plan()
        p.batches, p.m, p.k, p.n = G, M, K, N
        for op, t, width, rng, bs in ((p.a, a, table.wa, table.a_range, sa),
                                      (p.b, b, table.wb, table.b_range, sb)):
            op.batch_stride, op.outer_stride, op.inner_stride = bs, t.stride(-2), t.stride(-1)
            op.lo, op.hi = formats.value_range(width, False) if codes else rng
            op.dtype, op.width = DTYPES[t.dtype], width
        if engine == "native":
            p.engine = 0
            p.ngroups = data["ngroups"]
            p.groups = ctypes.addressof(data["groups"])
            p.row, p.col = data["row"], data["col"]
            p.row_terms, p.col_terms, p.planes = data["row_terms"], data["col_terms"], planes
            if data.get("u16") and planes:   # int16 pairs (the digits above: for a K too
                p.engine = 2                 # long for their int32 sums)
                p.u16, p.v16, p.pair_bound = data["u16"], data["v16"], data["pair_bound"]
                p.u_planes, p.v_planes = data["u_planes"], data["v_planes"]
        else:
            p.engine = 1
            p.lut32, p.lut64 = data["lut32"], data["lut64"]
            p.acc32 = int(data["lut32"] is not None and K * plan.max_abs < 2**31)
            if planes:
                p.lut_planes, p.lut_planes_t = data["lut_planes"], data["lut_planes_t"]
        self.plan, self.data = p, data
        self.ref = ctypes.addressof(p)
        self.shape = (*batch, M, N)
        #: the operands must be made contiguous before the call (set by the caller that
        #: prepared it on contiguous copies, see `axsa.models.approx.native.prepare_fast`)
        self.contiguous = False

    def __call__(self, a: torch.Tensor, b: torch.Tensor,
                 dtype: torch.dtype = torch.int64) -> torch.Tensor | None:
        if dtype is torch.float32:
            return self.scaled(a, b)
        out = torch.from_numpy(np.empty(self.shape, dtype=np.int64))   # (faster than
        if self.fn(self.ref, a.data_ptr(), b.data_ptr(), out.data_ptr(),   # torch.empty)
                   torch.get_num_threads()):
            return None
        return out if dtype is torch.int64 else out.to(dtype)

    def scaled(self, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | None = None,
               bias: torch.Tensor | None = None) -> torch.Tensor | None:
        """``call(a, b).to(float32)`` converted in the kernel, with `scale` (one value or
        one per column) times it plus `bias` (one per column) in the same pass
        (`dequantize`'s float32 operations); None as for a call."""
        s32 = None if scale is None else scale.detach().to(torch.float32).contiguous()
        b32 = None if bias is None else bias.detach().to(torch.float32).contiguous()
        out = torch.from_numpy(np.empty(self.shape, dtype=np.float32))
        if self.fn_f32(self.ref, a.data_ptr(), b.data_ptr(), out.data_ptr(),
                       torch.get_num_threads(), None if s32 is None else s32.data_ptr(),
                       int(s32 is not None and s32.numel() != 1),
                       None if b32 is None else b32.data_ptr()):
            return None
        return out


def supported(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Operands the kernel reads directly: CPU tensors of a kernel dtype, at least 2-D."""
    return (a.device.type == "cpu" and b.device.type == "cpu" and a.dtype in DTYPES and
            b.dtype in DTYPES and a.dim() >= 2 and b.dim() >= 2)


# -- elementwise kernels of the quantized paths ------------------------------------------
# Each returns None where it does not apply (kernels unavailable, a dtype or layout it
# does not take): the caller then runs the torch expression it replaces, which gives the
# same result bit for bit (tests/models/test_native_elementwise.py).

def dense(t: torch.Tensor) -> bool:
    """Whether `t`'s elements fill its memory span exactly (a contiguous block in some
    order of the dimensions): a kernel then walks it, and a tensor ``empty_like`` it,
    as one flat array."""
    expect = 1
    for stride, n in sorted((s, n) for n, s in zip(t.shape, t.stride()) if n != 1):
        if stride != expect:
            return False
        expect *= n
    return True


def empty_like(x: torch.Tensor, dtype: torch.dtype, alloc) -> torch.Tensor:
    """A tensor of `x`'s shape and strides (`x` dense) from ``alloc(shape, dtype)``, which
    returns a contiguous tensor (e.g. a reused workspace): allocated with the dimensions
    in memory order, then permuted back."""
    order = sorted(range(x.dim()), key=lambda d: -x.stride(d))
    buf = alloc(tuple(x.shape[d] for d in order), dtype)
    return buf.permute(*sorted(range(x.dim()), key=order.__getitem__))


def _elementwise(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and dense(t) for t in tensors) and available()


def quantize(x: torch.Tensor, scale: float, qmin: int, qmax: int) -> torch.Tensor | None:
    """``clamp(floor(x / scale + 0.5), qmin, qmax)`` of a float32 / float64 tensor, in its
    dtype and layout, with `scale` rounded to that dtype (what ``torch.div(x, s)``,
    ``add_(0.5)``, ``floor_()``, ``clamp_(qmin, qmax)`` give); None where not applicable."""
    if x.dtype not in (torch.float32, torch.float64) or not x.numel() or not _elementwise(x):
        return None
    out = torch.empty_like(x)
    library().axsa_quantize(x.data_ptr(), DTYPES[x.dtype], x.numel(), scale, qmin, qmax,
                            out.data_ptr(), torch.get_num_threads())
    return out


def quantize_int8(x: torch.Tensor, scale: float, qmin: int, qmax: int) -> torch.Tensor | None:
    """`quantize`'s values as int8 (``-128 <= qmin``, ``qmax <= 127``), in one pass; None
    where not applicable, or when some value is NaN."""
    if x.dtype not in (torch.float32, torch.float64) or not x.numel() or not _elementwise(x) \
            or qmin < -128 or qmax > 127:
        return None
    out = torch.empty_like(x, dtype=torch.int8)
    bad = library().axsa_quantize_i8(x.data_ptr(), DTYPES[x.dtype], x.numel(), scale, qmin,
                                     qmax, out.data_ptr(), torch.get_num_threads())
    return None if bad else out


def codes(x: torch.Tensor, lo: int, hi: int, width: int,
          table: torch.Tensor | None = None, out: torch.Tensor | None = None
          ) -> torch.Tensor | bool | None:
    """int64 codes (the low `width` bits) of integer values in ``lo..hi``, in `x`'s layout;
    with `table` (2^width float32 values, contiguous) ``table[code]`` as float32 instead;
    into `out` when given (`x`'s shape and strides, see `empty_like`). False when some
    element is not such a value (the caller finds and names it); None where not
    applicable."""
    if x.dtype not in DTYPES or not x.numel() or not _elementwise(x) or \
            (table is not None and not -2**31 <= lo <= hi < 2**31):
        return None
    if out is None:
        out = torch.empty_like(x, dtype=torch.int64 if table is None else torch.float32)
    bad = library().axsa_codes(x.data_ptr(), DTYPES[x.dtype], x.numel(), lo, hi, width,
                               None if table is None else table.data_ptr(), out.data_ptr(),
                               torch.get_num_threads())
    return False if bad else out


def dequantize(acc: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
               dtype: torch.dtype) -> torch.Tensor | None:
    """``acc.to(dtype) * scale (+ bias)`` (torch.mul then add_, in `dtype`) for a 1-D
    `scale` and `bias` along the last dimension (or a single scale), `acc` contiguous;
    None where not applicable."""
    n = acc.shape[-1] if acc.dim() else 1
    codes_ok = {torch.float32: (torch.float32, torch.int64),
                torch.float64: (torch.float64, torch.int64)}.get(dtype, ())
    if (acc.dtype not in codes_ok or not acc.is_contiguous() or not acc.numel()
            or scale.dim() > 1 or scale.numel() not in (1, n)
            or (bias is not None and (bias.dim() != 1 or bias.numel() != n))
            or acc.device.type != "cpu" or not available()):
        return None
    s = scale.detach().to(dtype).contiguous()
    b = None if bias is None else bias.detach().to(dtype).contiguous()
    out = torch.empty(acc.shape, dtype=dtype)
    library().axsa_dequantize(acc.data_ptr(), DTYPES[acc.dtype], acc.numel() // n, n,
                              s.data_ptr(), int(s.numel() != 1),
                              None if b is None else b.data_ptr(), DTYPES[dtype],
                              out.data_ptr(), torch.get_num_threads())
    return out

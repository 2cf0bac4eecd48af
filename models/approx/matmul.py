"""`approx_matmul`: the public entry, its checks, and the dispatch to the engines."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from axsa.errors import InputError, ToolError

from .. import _fastcall, _native
from . import cache
from .bag import bag_matmul
from .gather import gather_matmul
from .lowrank import lowrank_matmul, rank1_matmul, terms_matmul
from .native import native_matmul, prepare_fast
from .operands import as_codes, shapes
from .table import ProductTable
from .tuner import choose

Engine = Literal["auto", "lowrank", "bag", "gather", "native", "native-gather"]
#: engines a caller may name
ENGINES = ("auto", "lowrank", "bag", "gather", "native", "native-gather")

# bound once: the fast path's lookup is a dict `get` (the cache never rebinds it)
_FAST = cache.FAST
_TUNED = cache.TUNED


def approx_matmul(a, b, table: ProductTable, *, engine: Engine = "auto",
                  dtype: torch.dtype = torch.int64, scale: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """Approximate GEMM ``C[..., m, n] = sum_k lut[code(a[..., m, k]), code(b[..., k, n])]``.

    Bit-exact with the product table for every operand, like ``torch.matmul`` in shapes
    (1-D operands and broadcast batch dimensions included).

    Parameters
    ----------
    a, b : torch.Tensor
        Integer operand VALUES (any integer dtype, or floats holding exact integers), of
        shapes (..., M, K) and (..., K, N), any strides. numpy arrays are accepted too.
    table : ProductTable
        The multiplier's product table.
    engine : {"auto", "lowrank", "bag", "gather", "native", "native-gather"}
        Force an engine (all give the same result); "auto" picks the fastest.
    dtype : torch.dtype
        Of the result: always ``approx_matmul(a, b, table).to(dtype)``, but without the
        int64 round trip where an engine computes in that float dtype already (a caller
        that wants floats anyway, like the fake-quant models).
    scale, bias : torch.Tensor, optional
        A dequantizing output stage (float `dtype` only): the result is then
        ``approx_matmul(a, b, table).to(dtype) * scale.to(dtype) (+ bias.to(dtype))``
        (torch.mul, then add_), `scale` one value or one per column (N), `bias` one per
        column. The native kernel applies it while the sums are in cache (float32).

    Returns
    -------
    torch.Tensor
        int64 (or `dtype`), shape (..., M, N). Every int64 result is exact (no float
        rounding anywhere).

    Raises
    ------
    InputError
        An operand value outside the table's range, a non-integer value, shapes that
        do not multiply, or a scale or bias of the wrong shape.
    ToolError
        A native engine forced where the kernels cannot be compiled.
    """
    if engine == "auto" and type(a) is torch.Tensor and type(b) is torch.Tensor:
        # the prepared native kernel call for these operands, once `auto` picked it
        # (`native.fast_key` and `NativeCall.__call__` inlined: on a model's head a whole
        # call is a few microseconds), found and run in C++ where the extension is built
        if scale is None and dtype is torch.int64 and _fastcall.run is not None:
            out = _fastcall.run(getattr(table, "key", None), a, b)
            if out is not None:
                return out
        threads = torch.get_num_threads()
        call = _FAST.get((getattr(table, "key", None), a.shape, a.stride(), a.dtype,
                          a.is_cpu, b.shape, b.stride(), b.dtype, b.is_cpu, threads))
        if call is not None:
            if call.contiguous:
                a, b = a.contiguous(), b.contiguous()
            if scale is None and dtype is torch.int64:   # (NativeCall.__call__ inlined)
                out = torch.from_numpy(np.empty(call.shape, dtype=np.int64))
                if not call.fn(call.ref, a.data_ptr(), b.data_ptr(), out.data_ptr(), threads):
                    return out
            elif scale is None:
                out = call(a, b, dtype)
                if out is not None:
                    return out
            elif dtype is torch.float32:
                _check_stage(scale, bias, call.shape[-1], dtype)
                out = call.scaled(a, b, scale, bias)
                if out is not None:
                    return out
            # else a bad value (found and named below), or a stage the kernel cannot do
    if not isinstance(table, ProductTable):
        raise InputError(f"table must be a ProductTable, got {type(table).__name__}")
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(a)
    if isinstance(b, np.ndarray):
        b = torch.from_numpy(b)
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise InputError("operands a and b must be torch tensors, got "
                         f"{type(a).__name__} and {type(b).__name__}")
    a, b, batch, squeeze = shapes(a, b)
    if scale is not None:
        _check_stage(scale, bias, b.shape[-1], dtype)
    plan = table.plan
    auto = engine == "auto"
    floats = dtype.is_floating_point
    if auto:
        key = (table.key, tuple(a.shape), tuple(b.shape), torch.get_num_threads(), floats)
        engine = _TUNED.get(key)
        if engine == "terms" and floats:   # a rank-1 table: straight from the values
            out = rank1_matmul(a, b, batch, plan)
            if out is not None:
                for dim in squeeze:
                    out = out.squeeze(dim)
                return out.to(dtype) if scale is None else _scaled(out.to(dtype), scale,
                                                                   bias, dtype)
    ca = as_codes(a, "a", *table.a_range, table.wa, table)
    cb = as_codes(b, "b", *table.b_range, table.wb, table)
    if not auto and engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if 0 in (ca.shape[-2], ca.shape[-1], cb.shape[-1]) or 0 in batch:   # empty sum: 0
        out = torch.zeros(*batch, ca.shape[-2], cb.shape[-1], dtype=dtype)
        for dim in squeeze:
            out = out.squeeze(dim)
        return out if scale is None else _scaled(out, scale, bias, dtype)
    if auto and engine is None:
        engine = choose(key, plan, ca, cb, batch, floats)
    if engine in ("native", "native-gather"):
        if engine == "native" and plan.int8 is None:
            raise InputError(f"engine 'native' needs an exact low-rank factorization, which "
                             f"table {table.label} does not have")
        if not _native.available():
            raise ToolError(f"engine {engine!r} needs the compiled kernels: "
                            f"{_native.unavailable_reason}")
        out = native_matmul(ca, cb, batch, plan, engine, dtype)
        if auto and _TUNED.get(key) == engine:   # later calls skip the checks in Python
            prepare_fast(table, engine, a, b, batch)
    elif engine == "terms":                # auto only: the float GEMM over integer terms
        out = terms_matmul(ca, cb, batch, plan, dtype)
    elif engine == "lowrank":
        if plan.int8 is None:
            raise InputError(f"engine 'lowrank' needs an exact low-rank factorization, which "
                             f"table {table.label} does not have")
        out = lowrank_matmul(ca, cb, batch, plan)
    elif engine == "bag":
        out = bag_matmul(ca, cb, batch, plan)
    elif engine == "gather":
        out = gather_matmul(ca, cb, batch, plan)
    else:
        raise InputError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    for dim in squeeze:
        out = out.squeeze(dim)
    return out.to(dtype) if scale is None else _scaled(out.to(dtype), scale, bias, dtype)


def _check_stage(scale, bias, n: int, dtype: torch.dtype) -> None:
    """A dequantizing stage's scale and bias, for results of `n` columns in `dtype`."""
    if not dtype.is_floating_point:
        raise InputError(f"a scale needs a floating result dtype, got {dtype}")
    if not isinstance(scale, torch.Tensor) or scale.dim() > 1 or scale.numel() not in (1, n):
        raise InputError(f"scale must be one value or one per column ({n}), got shape "
                         f"{tuple(getattr(scale, 'shape', ()))}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dim() != 1
                             or bias.numel() != n):
        raise InputError(f"bias must hold one value per column ({n}), got shape "
                         f"{tuple(getattr(bias, 'shape', ()))}")


def _scaled(out: torch.Tensor, scale, bias, dtype: torch.dtype) -> torch.Tensor:
    """``out * scale (+ bias)`` in `dtype` (`out` already in it): torch.mul, then add_."""
    y = _native.dequantize(out, scale, bias, dtype) if out.is_contiguous() else None
    if y is None:
        y = torch.mul(out, scale.detach().to(dtype))
        if bias is not None:
            y.add_(bias.detach().to(dtype))
    return y


def emulate_gemm(A, B, multiplier, mode: int = 0) -> np.ndarray:
    """``A @ B`` through a multiplier's product table: int64 numpy (M, N).

    The emulation `axsa gemm --engine emulate` runs (`axsa.sim.driver.run_gemm`'s
    ``emulator``): `multiplier` is an `axsa.rtl.multipliers` multiplier (duck-typed, see
    `ProductTable.from_multiplier`), A and B integer operand values.
    """
    table = ProductTable.from_multiplier(multiplier, mode)
    return approx_matmul(A, B, table).numpy()

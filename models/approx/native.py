"""Engines ``native`` and ``native-gather``: the C++ kernels (`axsa.models._native`),
and the prepared calls `approx_matmul`'s fast path goes straight to."""

from __future__ import annotations

import torch

from .. import _fastcall, _native
from . import cache

ENGINES = ("native", "native-gather")


def native_call(plan, kind: str, ca, cb, batch) -> _native.NativeCall:
    """The prepared kernel call on these code tensors (see `native_operands`), cached in
    `cache.PREPARED`."""
    key = (plan.table.key, kind, ca.shape, ca.stride(), cb.shape, cb.stride())
    call = cache.PREPARED.get(key)
    if call is None:
        call = _native.NativeCall(plan.table, kind, ca, cb, batch, codes=True)
        cache.remember(cache.PREPARED, key, call)
    return call


def native_operands(ca, cb, batch):
    """Code tensors whose batch dimensions the kernel can walk with one stride each
    (expanded copies for the rare broadcasts that do not collapse)."""
    if _native.batch_stride(tuple(ca.shape[:-2]), tuple(ca.stride()[:-2]), batch) is None or \
            _native.batch_stride(tuple(cb.shape[:-2]), tuple(cb.stride()[:-2]), batch) is None:
        ca = ca.expand(*batch, *ca.shape[-2:]).contiguous()
        cb = cb.expand(*batch, *cb.shape[-2:]).contiguous()
    return ca, cb


def native_matmul(ca, cb, batch, plan, kind: str,
                  dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """The native kernel on int64 codes (checked already, so it cannot refuse them);
    the result in `dtype`."""
    ca, cb = native_operands(ca, cb, batch)
    return native_call(plan, kind, ca, cb, batch)(ca, cb, dtype)


def fast_key(table, a, b) -> tuple:
    """The key of `cache.FAST` (built inline in `approx_matmul`, for speed)."""
    return (table.key, a.shape, a.stride(), a.dtype, a.is_cpu, b.shape, b.stride(), b.dtype,
            b.is_cpu, torch.get_num_threads())


def prepare_fast(table, kind: str, a, b, batch) -> None:
    """Register the native call on these raw operands for `approx_matmul`'s fast path."""
    if not _native.supported(a, b):
        return
    key = fast_key(table, a, b)
    if key in cache.FAST:
        return
    try:
        call = _native.NativeCall(table, kind, a, b, batch)
    except ValueError:
        # batch dimensions one stride cannot walk (attention's K^T, a permuted view):
        # the call runs on contiguous copies, still without the checks in Python
        try:
            call = _native.NativeCall(table, kind, a.contiguous(), b.contiguous(), batch)
        except ValueError:     # broadcasts that do not collapse either: no fast path
            return
        call.contiguous = True
    cache.remember(cache.FAST, key, call)
    _fastcall.keep(table.key, a, b, call, cache.MAX_TUNED)

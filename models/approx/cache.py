"""Every cache of the approximate GEMM, in one place.

All of them are process-local and bounded; none changes a result, only how fast it comes
(every engine is exact). `clear` empties them all (tests, a long-running process that
wants the memory back).

``PLANS``
    Fast-GEMM plans by table key, least recently used dropped first (`plan_of`).
``TUNED``, ``CALLS``, ``FITS``
    The engine choice per (table, shape of a, shape of b, thread count), from the stored
    choices of its class (`approx.choices`); how often each (table, shapes) key was
    looked up there; how many fits (timings of the engines) this process made.
``FAST``
    Prepared native kernel calls on raw operands, by (table key, shape, stride, dtype,
    is_cpu of a and b, thread count): `approx_matmul`'s fast path, filled once `auto` has
    chosen a native engine for them; the int64 ones also kept in C++ by
    `axsa.models._fastcall` (emptied with it, by `clear`).
``PREPARED``
    Prepared native kernel calls on code tensors (the native engines as the tuner and
    forced engines run them).
``PROBES``
    Facts about this machine found once (``"int_mm"``: `torch._int_mm` is exact here).
`workspace`
    Reused scratch tensors, per thread and slot.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable
from typing import Any

import torch

from .. import _fastcall

#: plans kept; a plan is 1-3 MB for an 8x8-bit table
MAX_PLANS = 64
#: entries kept in each of TUNED, CALLS, FAST and PREPARED (emptied when full)
MAX_TUNED = 4096

PLANS: collections.OrderedDict[str, Any] = collections.OrderedDict()
#: the engine of each (table key, shape of a, shape of b, threads, float result) call
TUNED: dict[tuple, str] = {}
CALLS: dict[tuple, int] = {}
FITS = [0]
FAST: dict[tuple, Any] = {}
PREPARED: dict[tuple, Any] = {}
PROBES: dict[str, bool] = {}

#: guards PLANS, CALLS and TUNED (the models' GEMMs may run on several threads)
LOCK = threading.Lock()

_WORKSPACE = threading.local()


def tuned(table, shape_a, shape_b, floats: bool = False) -> str | None:
    """The engine ``auto`` took for this call in this process (at the current thread
    count, for an int64 or a float result), or None before its first call."""
    import torch

    return TUNED.get((table.key, tuple(shape_a), tuple(shape_b), torch.get_num_threads(),
                      floats))


def plan_of(key: str, build: Callable[[Any], Any], source: Any) -> Any:
    """The plan cached under `key`, built by ``build(source)`` on a miss."""
    with LOCK:
        found = PLANS.get(key)
        if found is not None:
            PLANS.move_to_end(key)
    if found is None:
        found = build(source)
        with LOCK:
            PLANS[key] = found
            while len(PLANS) > MAX_PLANS:
                PLANS.popitem(last=False)
    return found


def remember(cache: dict, key, value) -> None:
    """``cache[key] = value``, emptying `cache` first when it holds MAX_TUNED entries."""
    if len(cache) > MAX_TUNED:
        cache.clear()
    cache[key] = value


def count_call(key) -> int:
    """Count one more call with `key`; returns the count."""
    with LOCK:
        n = CALLS.get(key, 0) + 1
        remember(CALLS, key, n)
    return n


def workspace(slot: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A reused scratch tensor per (thread, slot): fresh multi-megabyte allocations cost
    page faults that, at these sizes, take longer than the GEMMs themselves."""
    tensors = getattr(_WORKSPACE, "tensors", None)
    if tensors is None:
        tensors = _WORKSPACE.tensors = {}
    n = math.prod(shape)
    buf = tensors.get((slot, dtype))
    if buf is None or buf.numel() < n:
        buf = tensors[(slot, dtype)] = torch.empty(max(n, 1), dtype=dtype)
    return buf[:n].view(shape)


def clear() -> None:
    """Empty every cache (the workspace of the calling thread included); the stored
    engine choices are read again from their file on next use."""
    from . import choices
    choices.forget()
    with LOCK:
        for cache in (PLANS, TUNED, CALLS, FAST, PREPARED, PROBES):
            cache.clear()
        FITS[0] = 0
    _fastcall.clear()
    _WORKSPACE.tensors = {}

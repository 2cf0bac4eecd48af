"""Engine choice for ``engine="auto"``: the cost model's pick on the first call with a
(table, operand shapes) key, the fastest measured engine from the second call on."""

from __future__ import annotations

import math
import time

from . import cache
from .bag import bag_matmul
from .costs import batched_costs, estimate
from .gather import gather_matmul
from .lowrank import lowrank_matmul, terms_matmul
from .native import native_call, native_matmul, native_operands

#: shapes whose best estimated cost is above this (ns) keep the estimate's choice
TUNE_MAX_NS = 20e6
#: engines estimated this many times slower than the best are not timed
TUNE_SPREAD = 30.0

#: every engine on int64 codes: ``fn(ca, cb, batch, plan) -> (*batch, M, N) int64``
ENGINE_FUNCTIONS = {
    "lowrank": lowrank_matmul,
    "terms": terms_matmul,
    "bag": bag_matmul,
    "gather": gather_matmul,
    "native": lambda ca, cb, batch, plan: native_matmul(ca, cb, batch, plan, "native"),
    "native-gather": lambda ca, cb, batch, plan: native_matmul(ca, cb, batch, plan,
                                                               "native-gather"),
}


def tune_now(key) -> bool:
    """Tune on the second call with a (table, shapes) key: one-off GEMMs (tests, the
    simulator's checks) never pay for it, a model's repeated GEMMs do once."""
    return cache.count_call(key) == 2


def candidates(plan, ca, cb, batch) -> list[str]:
    """Engines worth timing on these operands, cheapest estimate first."""
    costs = estimate(plan, math.prod(ca.shape[:-2]), math.prod(cb.shape[:-2]),
                     ca.shape[-2], ca.shape[-1], cb.shape[-1])
    if plan.int8 is not None:
        G = math.prod(batch)
        costs["terms"] = batched_costs(plan, G, ca.shape[-2], ca.shape[-1],
                                       cb.shape[-1])[0]
    best = min(costs.values())
    if best > TUNE_MAX_NS:
        return [min(costs, key=costs.get)]
    return sorted((e for e, c in costs.items() if c <= TUNE_SPREAD * best), key=costs.get)


def tune(key, plan, ca, cb, batch) -> str:
    """Time every plausible engine on these very operands (all are exact, so only the
    speed differs) and remember the fastest for the key (`cache.TUNED`): the cost
    model's constants are rough, and on small GEMMs fixed per-call costs decide."""
    names = candidates(plan, ca, cb, batch)
    if len(names) > 1:
        times = {}
        for name in names:
            if name.startswith("native"):    # timed as the prepared call later calls make
                xa, xb = native_operands(ca, cb, batch)
                call = native_call(plan, name, xa, xb, batch)
                fn = lambda *_, call=call, xa=xa, xb=xb: call(xa, xb)   # noqa: E731
            else:
                fn = ENGINE_FUNCTIONS[name]
            fn(ca, cb, batch, plan)           # warm-up: scratch buffers, caches
            best = math.inf
            for _ in range(3):
                t0 = time.perf_counter()
                fn(ca, cb, batch, plan)
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        names = [min(times, key=times.get)]
    with cache.LOCK:
        cache.remember(cache.TUNED, key, names[0])
    return names[0]


def auto_engine(plan, ca, cb, batch) -> str:
    """The engine of least estimated cost."""
    costs = estimate(plan, math.prod(ca.shape[:-2]), math.prod(cb.shape[:-2]),
                     ca.shape[-2], ca.shape[-1], cb.shape[-1])
    return min(costs, key=costs.get)

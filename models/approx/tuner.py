"""Engine choice for ``engine="auto"``: per class of call (`choices.class_key`), the
engine fitted once on this machine and stored (`choices`); a class met for the first time
is fitted on the spot, by timing the engines the cost model finds plausible on the call's
own operands."""

from __future__ import annotations

import math
import time

import torch

from . import cache, choices
from .bag import bag_matmul
from .costs import batched_costs, estimate
from .gather import gather_matmul
from .lowrank import lowrank_matmul, rank1_matmul, terms_matmul
from .native import native_call, native_matmul, native_operands

#: shapes whose best estimated cost is above this (ns) keep the estimate's choice
TUNE_MAX_NS = 20e6
#: engines estimated this many times slower than the best are not timed
TUNE_SPREAD = 30.0
#: rounds of a fit (each plausible engine once per round), at least
FIT_ROUNDS = 5
#: ... and more, up to FIT_MAX_ROUNDS, until the rounds took this long (s): on a call of
#: a few microseconds five rounds last about a millisecond, which one burst of load can
#: cover (a guard: the wrong picks measured on ts's head, 1 fit in 30 at 2 threads, came
#: from the cache evictions FIT_DROP removes; with this alone they were 1 in 60)
FIT_MIN_S = 0.02
FIT_MAX_ROUNDS = 50
#: from the third round on, engines whose best time is this many times the best one's
#: leave the rounds: the slow ones' calls (hundreds of microseconds, large scratch)
#: otherwise evict the caches between the close ones' calls, and slowed the fastest
#: engine of a 4 µs call to 5-8 µs, as slow as the runner-up
FIT_DROP = 2.0

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


def choose(key, plan, ca, cb, batch, floats: bool = False) -> str:
    """The engine of ``auto`` for a call with key `key` (table, shapes, threads, float
    result), kept in `cache.TUNED`: its class's stored engine, else the one `fit` finds
    (and stores)."""
    cache.count_call(key[:3])
    cls = choices.class_key(plan, math.prod(ca.shape[:-2]), math.prod(cb.shape[:-2]),
                            ca.shape[-2], ca.shape[-1], cb.shape[-1], floats)
    engine = choices.get(cls)
    if engine is None or not applies(engine, plan):
        engine = fit(plan, ca, cb, batch, floats)
        if applies(engine, plan):
            engine = choices.store(cls, engine)
    with cache.LOCK:
        cache.remember(cache.TUNED, key, engine)
    return engine


def applies(engine: str, plan) -> bool:
    """Whether `engine` can run a GEMM of `plan`'s table (a stored class's engine always
    can; this guards against a file edited by hand)."""
    return engine in ENGINE_FUNCTIONS and (plan.int8 is not None or
                                           engine in ("bag", "gather", "native-gather"))


def _float_terms(ca, cb, batch, plan) -> torch.Tensor:
    """Engine ``terms`` with a float32 result, as a call gets it: a rank-1 table's values
    mapped straight to its factors (`rank1_matmul`) where that applies."""
    out = rank1_matmul(ca, cb, batch, plan, codes=True)
    return terms_matmul(ca, cb, batch, plan, torch.float32) if out is None else out


def fit(plan, ca, cb, batch, floats: bool = False) -> str:
    """Time every plausible engine on these very operands (all are exact, so only the
    speed differs) and return the fastest: the cost model's constants are rough, and on
    small GEMMs fixed per-call costs decide. The engines take turns, `FIT_ROUNDS` rounds
    (more on small calls, `FIT_MIN_S`; the slow ones dropped, `FIT_DROP`), best time
    of each (each timed on its second call of a round: warm), so that a burst
    of load on a shared machine falls on one round of every engine rather than on all of
    one engine's. With `floats`, each is timed with its result in float32, as such a call
    gets it. Counted in `cache.FITS`."""
    names = candidates(plan, ca, cb, batch)
    if len(names) > 1:
        cache.FITS[0] += 1
        fns = {}
        for name in names:
            if name.startswith("native"):    # timed as the prepared call later calls make
                xa, xb = native_operands(ca, cb, batch)
                call = native_call(plan, name, xa, xb, batch)
                dt = torch.float32 if floats else torch.int64
                fns[name] = lambda *_, c=call, xa=xa, xb=xb, dt=dt: c(xa, xb, dt)  # noqa: E731
            elif floats:       # as `approx_matmul(..., dtype=float32)` runs each
                fns[name] = (_float_terms if name == "terms" else
                             lambda *args, fn=ENGINE_FUNCTIONS[name]: fn(*args).to(torch.float32))
            else:
                fns[name] = ENGINE_FUNCTIONS[name]
            fns[name](ca, cb, batch, plan)    # warm-up: scratch buffers, caches
        times = dict.fromkeys(names, math.inf)
        start = time.perf_counter()
        for done in range(FIT_MAX_ROUNDS):
            if done >= FIT_ROUNDS and time.perf_counter() - start >= FIT_MIN_S:
                break
            for name, fn in fns.items():
                fn(ca, cb, batch, plan)    # warm: a model calls the same engine over and
                t0 = time.perf_counter()   # over (cold, a tiny GEMM's engines differ by
                fn(ca, cb, batch, plan)    # what the previous engine left in the caches)
                times[name] = min(times[name], time.perf_counter() - t0)
            if done >= 1:
                best = min(times.values())
                fns = {n: fn for n, fn in fns.items() if times[n] <= FIT_DROP * best}
        names = [min(times, key=times.get)]
    return names[0]



"""Sweeps: many designs x targets characterized in parallel, every result into the store.

A sweep is a list of `Request`s (`plan`): family grids x formats x targets. `run` answers
what the store already holds, then characterizes the rest on a local process pool
(``jobs``) or an existing Dask cluster (``dask_address``), and records each result the
moment it arrives, in the parent process (workers never need the database file, so Dask
workers on other machines work too). Killed and restarted, a sweep finds the finished
designs in the store and runs only the others: every design is recorded exactly once
(the store's key is unique).

Family grids (``--families``) are parsed and expanded by the multiplier registry
(`axsa.rtl.multipliers.expand_grid`: ``trunc``, ``trunc(k=2..6)``, ``bam(h=0|2,v=4..6)``,
``cfgtrunc(k=0/4)``); a grid is counted before it is expanded and refused above
`axsa.rtl.multipliers.MAX_GRID_POINTS`. Values out of a format's range are skipped for
that format (and reported).

Local workers die with their parent: they are spawned children of the sweep process,
and on Linux each asks the kernel for SIGKILL when that parent dies
(`axsa.processes.die_with_parent`). An interrupted sweep (SIGINT, or SIGTERM, which
`axsa sweep` turns into the same) cancels what has not started and terminates its
workers; every result recorded before stays in the store.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace

from axsa.errors import InputError, ToolError
from axsa.formats import DEFAULT_ACC_WIDTH

from .characterize import Request, compute, reference_energy, stream_for
from .targets import TARGETS

#: seconds to wait for a Dask scheduler before giving up
DASK_CONNECT_TIMEOUT = 10

@dataclass
class Plan:
    """The requests of a sweep, and the grid points skipped as invalid."""

    requests: list[Request]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def plan(families: str, formats: Iterable[str], targets: Iterable[str], *, dsp: bool = False,
         unit: str = "mult", acc_width: int = DEFAULT_ACC_WIDTH, specs: Iterable[str] = (),
         fmax: bool = True, glitches: bool = False) -> Plan:
    """Every (spec, target) request of a sweep, deduplicated, in a stable order."""
    from axsa.rtl.multipliers import expand_grid, parse_spec
    targets = list(targets)
    for t in targets:
        if t not in TARGETS:
            raise InputError(f"target {t!r} is not one of {', '.join(TARGETS)}")
    grid = expand_grid(families or "", formats)
    mults = grid.multipliers + [parse_spec(s) for s in specs]
    seen, requests = set(), []
    for spec in (m.spec for m in mults):
        for t in targets:
            r = Request(spec, t, dsp=dsp and t != "generic", unit=unit, acc_width=acc_width,
                        fmax=fmax, glitches=glitches)
            if r not in seen:
                seen.add(r)
                requests.append(r)
    if not requests:
        raise InputError("the sweep is empty: give --families and --formats (or --spec), "
                         "and --targets")
    return Plan(requests, grid.skipped)


# -- running -----------------------------------------------------------------------------

def _task(request: Request, stream, ref_energy) -> tuple[dict | None, str | None, float]:
    """Worker: characterize one request; failures come back as text, not exceptions, so
    one bad design does not stop a sweep."""
    t0 = time.perf_counter()
    try:
        return compute(request, stream, ref_energy), None, time.perf_counter() - t0
    except (InputError, ToolError) as exc:
        return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0


@dataclass
class Outcome:
    """What a sweep did: every result (stored or new), failures, and counts."""

    results: list[dict]
    failures: list[tuple[Request, str]]
    cached: int
    computed: int
    seconds: float


def run(requests: list[Request], store, *, streams: dict | None = None, jobs: int = 1,
        dask_address: str | None = None,
        progress: Callable[[int, int], None] | None = None) -> Outcome:
    """Characterize `requests`, answering from and recording into `store`.

    Parameters
    ----------
    streams : dict
        Format string -> `Stream` for recorded streams; formats not in it use the
        default uniform stream.
    jobs : int
        Local worker processes (1: in this process).
    dask_address : str
        Scheduler address of an existing Dask cluster; overrides `jobs`.
    progress : callable
        ``progress(done, total)`` after each finished design (cached ones included).
    """
    t0 = time.perf_counter()
    streams = streams or {}
    total = len(requests)
    results: dict[int, dict] = {}
    pending: list[tuple[int, Request, dict, object]] = []
    for i, r in enumerate(requests):
        mult = r.multiplier()
        stream = streams.get(str(mult.fmt))
        key = r.key(mult, stream)
        found = store.get("synth", key)
        if found is not None:
            results[i] = found
        else:
            pending.append((i, r, key, stream))
    cached = len(results)
    done = cached
    if progress:
        progress(done, total)

    # the exact references first (few, shared by every design of a format), via the store
    refs: dict[tuple, float] = {}
    jobs_args = []
    for i, r, key, stream in pending:
        ref = None
        if r.has_energy:
            mult = r.multiplier()
            rk = (str(mult.fmt), r.unit, r.acc_width, r.reduction, r.glitches)
            if rk not in refs:
                refs[rk] = reference_energy(r, mult, stream_for(mult, stream), store)
            ref = refs[rk]
        jobs_args.append((i, r, key, stream, ref))

    failures: list[tuple[Request, str]] = []

    def finish(i, r, key, result, error, seconds):
        nonlocal done
        if error is None:
            store.put("synth", key, result, seconds=seconds)
            results[i] = result
        else:
            failures.append((r, error))
        done += 1
        if progress:
            progress(done, total)

    if dask_address:
        _run_dask(dask_address, jobs_args, finish)
    elif jobs <= 1 or len(jobs_args) <= 1:
        for i, r, key, stream, ref in jobs_args:
            finish(i, r, key, *_task(r, stream, ref))
    else:
        _run_pool(jobs, jobs_args, finish)
    ordered = [results[i] for i in sorted(results)]
    return Outcome(ordered, failures, cached, len(jobs_args) - len(failures),
                   time.perf_counter() - t0)


def _worker_init() -> None:
    from axsa.processes import die_with_parent
    die_with_parent()
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():
        os._exit(1)  # the parent died before the death signal was armed


def _run_pool(jobs: int, jobs_args, finish) -> None:
    """Run on `jobs` local processes; on any interruption (KeyboardInterrupt, SIGTERM
    turned into one) cancel what has not started and end the workers at once.

    Workers are spawned, so they are children of this very process and the kernel's
    parent-death signal reaches them when it dies (a forkserver's children would be the
    server's, and they keep the server alive).
    """
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init)
    try:
        futures = {pool.submit(_task, r, stream, ref): (i, r, key)
                   for i, r, key, stream, ref in jobs_args}
        for fut in as_completed(futures):
            i, r, key = futures[fut]
            finish(i, r, key, *fut.result())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in multiprocessing.active_children():
            proc.terminate()
        raise
    pool.shutdown()


def _run_dask(address: str, jobs_args, finish) -> None:
    try:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise ToolError(f"dask.distributed is not installed: {exc}") from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {address!r}: {exc}") from None
    try:
        futures = {}
        for i, r, key, stream, ref in jobs_args:
            fut = client.submit(_task, r, stream, ref, pure=False)
            futures[fut] = (i, r, key)
        for fut in dask_completed(list(futures)):
            i, r, key = futures[fut]
            finish(i, r, key, *fut.result())
    finally:
        client.close()


def with_options(requests: list[Request], **changes) -> list[Request]:
    return [replace(r, **changes) for r in requests]

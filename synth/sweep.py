"""Sweeps: many designs x targets characterized in parallel, every result into the store.

A sweep is a list of `Request`s (`plan`): family grids x formats x targets. `run` answers
what the store already holds, then characterizes the rest on a local process pool
(``jobs``) or an existing Dask cluster (``dask_address``), and records each result the
moment it arrives, in the parent process (workers never need the database file, so Dask
workers on other machines work too). Killed and restarted, a sweep finds the finished
designs in the store and runs only the others: every design is recorded exactly once
(the store's key is unique).

Family grid syntax (``--families``), items separated by commas outside parentheses::

    trunc                 every value of each required parameter, defaults for the rest
    trunc(k=2..6)         k = 2, 3, 4, 5, 6
    bam(h=0|2,v=4..6)     the cartesian product h in {0, 2} x v in {4, 5, 6}
    cfgtrunc(k=0/4)       a list parameter takes one '/'-joined value per alternative

Values out of a format's range are skipped for that format (and reported).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace

from axsa.errors import InputError, ToolError

from .characterize import Request, compute, reference_energy, stream_for
from .targets import TARGETS

#: seconds to wait for a Dask scheduler before giving up
DASK_CONNECT_TIMEOUT = 10

_ITEM = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*")


def split_top(text: str) -> list[str]:
    """Split at commas that are not inside parentheses."""
    items, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise InputError(f"unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise InputError(f"unbalanced '(' in {text!r}")
    items.append("".join(cur))
    return [i.strip() for i in items if i.strip()]


def _values(raw: str, item: str) -> list[str]:
    out = []
    for alt in raw.split("|"):
        alt = alt.strip()
        m = re.fullmatch(r"(-?\d+)\s*\.\.\s*(-?\d+)", alt)
        if m:
            lo, hi = int(m[1]), int(m[2])
            if hi < lo:
                raise InputError(f"empty range {alt!r} in {item!r}")
            out += [str(v) for v in range(lo, hi + 1)]
        elif re.fullmatch(r"-?\d+(/-?\d+)*", alt):
            out.append(alt)
        else:
            raise InputError(f"bad value {alt!r} in {item!r}: expected N, A..B, or "
                             "alternatives joined by '|'")
    return out


def family_specs(item: str, fmt: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Spec strings of one grid item at one format, and (spec, reason) for skipped ones."""
    from axsa.rtl.multipliers import FAMILIES, Format, SpecError, parse_spec
    m = _ITEM.fullmatch(item)
    if not m:
        raise InputError(f"bad family item {item!r}: expected FAMILY or FAMILY(P=V,...)")
    family, body = m[1], m[2]
    f = Format.parse(fmt)
    grid: dict[str, list[str]] = {}
    if body and body.strip():
        for part in body.split(","):
            name, eq, raw = part.partition("=")
            if not eq:
                raise InputError(f"bad parameter {part.strip()!r} in {item!r}: expected P=V")
            grid[name.strip()] = _values(raw, item)
    cls = FAMILIES.get(family)
    if cls is not None:
        for p in cls.params:
            if p.name not in grid and p.default is None:
                lo, hi = p.bounds(f)
                grid[p.name] = [str(v) for v in range(lo, hi + 1)]
    names = list(grid)
    specs, skipped = [], []
    for combo in itertools.product(*(grid[n] for n in names)):
        body = ",".join(f"{n}={v}" for n, v in zip(names, combo))
        text = f"{family}({body})@{fmt}" if body else f"{family}@{fmt}"
        try:
            specs.append(parse_spec(text).spec)
        except SpecError as exc:
            if cls is None and not names:
                raise  # an unknown family is the user's typo, not a grid point
            skipped.append((text, str(exc)))
    return specs, skipped


@dataclass
class Plan:
    """The requests of a sweep, and the grid points skipped as invalid."""

    requests: list[Request]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def plan(families: str, formats: Iterable[str], targets: Iterable[str], *, dsp: bool = False,
         unit: str = "mult", acc_width: int = 24, specs: Iterable[str] = (),
         fmax: bool = True, glitches: bool = False) -> Plan:
    """Every (spec, target) request of a sweep, deduplicated, in a stable order."""
    from axsa.rtl.multipliers import parse_spec
    targets = list(targets)
    for t in targets:
        if t not in TARGETS:
            raise InputError(f"target {t!r} is not one of {', '.join(TARGETS)}")
    all_specs, skipped = [], []
    for fmt in formats:
        for item in split_top(families or ""):
            got, skip = family_specs(item, fmt)
            all_specs += got
            skipped += skip
    all_specs += [parse_spec(s).spec for s in specs]
    seen, requests = set(), []
    for spec in all_specs:
        for t in targets:
            r = Request(spec, t, dsp=dsp and t != "generic", unit=unit, acc_width=acc_width,
                        fmax=fmax, glitches=glitches)
            if r not in seen:
                seen.add(r)
                requests.append(r)
    if not requests:
        raise InputError("the sweep is empty: give --families and --formats (or --spec), "
                         "and --targets")
    return Plan(requests, skipped)


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
        import multiprocessing
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_task, r, stream, ref): (i, r, key)
                       for i, r, key, stream, ref in jobs_args}
            for fut in as_completed(futures):
                i, r, key = futures[fut]
                finish(i, r, key, *fut.result())
    ordered = [results[i] for i in sorted(results)]
    return Outcome(ordered, failures, cached, len(jobs_args) - len(failures),
                   time.perf_counter() - t0)


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

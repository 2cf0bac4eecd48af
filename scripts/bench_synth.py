#!/usr/bin/env python
"""Benchmarks of the synthesis part (issue 3), printed side by side in one run.

1. one 8-bit multiplier characterized on `generic` (synthesis + product table read off the
   netlist + energy over 10^4 operations), YoWASP warm, netlist cache cold (target < 3 s);
2. a sweep of >= 60 designs on 2 worker processes into a fresh store (target < 5 min);
3. a repeated request answered from the store inside the process (target < 0.2 s);
4. CLI start-up: `axsa --help`, `axsa synth --help` against a bare `python -c pass`, and
   whether `axsa synth` imports torch (it must not).

Usage: .venv/bin/python scripts/bench_synth.py [--quick]   (--quick: 20-design sweep)
The machine is shared: load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP_FAMILIES = "exact,booth,roba,kulkarni,mitchell,bam(h=1..5),cfgtrunc,trunc,drum,perf,ssm"


def _fresh_env(tmp: Path) -> None:
    os.environ["AXSA_CACHE"] = str(tmp / "cache")  # cold netlist cache
    os.environ["AXSA_DB"] = str(tmp / "unused.sqlite")


def bench_single(tmp: Path) -> dict:
    from axsa.rtl.multipliers import parse_spec
    from axsa.synth.characterize import Request, compute, reference_energy, stream_for
    # warm-up: YoWASP compiled, Amaranth imported (a different design, so nothing is reused)
    compute(Request("exact@u3"))
    req = Request("drum(k=4)@s8")
    mult = parse_spec(req.spec)
    t0 = time.perf_counter()
    ref = reference_energy(req, mult, stream_for(mult, None))
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = compute(req, ref_energy=ref)
    t_one = time.perf_counter() - t0
    return {"design": req.spec, "seconds": t_one, "reference_seconds": t_ref,
            "transistors": r["transistors"], "energy": r["energy"], "ops": 10_000}


def bench_sweep(tmp: Path, quick: bool) -> dict:
    from axsa.synth import sweep

    from axsa.store import Store
    families = "exact,trunc(k=1..9),drum(k=2..6),ssm(m=2..6)" if quick else SWEEP_FAMILIES
    requests = sweep.plan(families, ["s8"], ["generic"]).requests
    store = Store(tmp / "sweep.sqlite")
    t0 = time.perf_counter()
    outcome = sweep.run(requests, store, jobs=2)
    seconds = time.perf_counter() - t0
    return {"designs": len(requests), "computed": outcome.computed,
            "failed": len(outcome.failures), "seconds": seconds, "store": store}


def bench_store_hit(store) -> dict:
    from axsa.synth.characterize import Request, characterize

    from axsa.store import Store
    req = Request("trunc(k=4)@s8")
    characterize(req, store=store)  # recorded by the sweep (or now)
    t0 = time.perf_counter()
    characterize(req, store=store)
    hit = time.perf_counter() - t0
    t0 = time.perf_counter()
    characterize(req, store=Store(store.path))  # a fresh connection too
    hit_open = time.perf_counter() - t0
    return {"seconds": hit, "seconds_with_open": hit_open}


def _wall(cmd: list[str], n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def bench_cli(tmp: Path) -> dict:
    py = sys.executable
    base = _wall([py, "-c", "pass"])
    help_ = _wall([py, "-m", "axsa.cli", "--help"])
    synth_help = _wall([py, "-m", "axsa.cli", "synth", "--help"])
    probe = ("import sys; from axsa.cli import main; "
             f"main(['synth', 'exact@u3', '--json', '--db', {str(tmp / 'cli.sqlite')!r}]); "
             "print(sorted(m for m in ('torch', 'amaranth', 'matplotlib', 'dask') "
             "if m in sys.modules), file=sys.stderr)")
    r = subprocess.run([py, "-c", probe], capture_output=True, text=True, check=True)
    return {"python": base, "axsa_help": help_, "synth_help": synth_help,
            "modules_after_synth": r.stderr.strip().splitlines()[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20-design sweep instead of 60")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="axsa-bench-", dir=Path.home()) as tmp:
        tmp = Path(tmp)
        _fresh_env(tmp)
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        one = bench_single(tmp)
        print(f"1. single characterization {one['design']} on generic (synthesis + table + "
              f"energy over {one['ops']} ops): {one['seconds']:.2f} s (target 3 s, "
              f"{one['seconds'] / 3:.2f}x of it); exact reference once per format: "
              f"{one['reference_seconds']:.2f} s")
        sw = bench_sweep(tmp, args.quick)
        print(f"2. sweep of {sw['designs']} designs (s8, generic) on 2 processes: "
              f"{sw['seconds']:.1f} s = {sw['seconds'] / sw['designs']:.2f} s/design "
              f"(target 300 s, {sw['seconds'] / 300:.2f}x of it); failed: {sw['failed']}")
        hit = bench_store_hit(sw["store"])
        print(f"3. repeated request from the store, in process: {hit['seconds'] * 1e3:.2f} ms "
              f"(with a fresh connection: {hit['seconds_with_open'] * 1e3:.2f} ms; target "
              f"200 ms)")
        cli = bench_cli(tmp)
        print(f"4. start-up: python -c pass {cli['python']:.2f} s, axsa --help "
              f"{cli['axsa_help']:.2f} s ({cli['axsa_help'] / cli['python']:.1f}x), axsa synth "
              f"--help {cli['synth_help']:.2f} s ({cli['synth_help'] / cli['python']:.1f}x); "
              f"heavy modules loaded by `axsa synth exact@u3`: {cli['modules_after_synth']}")
        print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Simulation speed benchmark: every engine side by side on the same 16x16 8-bit array.

One run, every figure measured in this process, engines alternated within each repeat
and medians reported (the machine may be shared):

1. the bare systolic array (`axsa.rtl.array.SystolicArray` behind a thin stream wrapper),
   fed one step per cycle, in the table view (``a * b`` for exact multipliers) and, with
   ``--circuit``, in the cell view with cells filled by product tables and by the
   multipliers' circuits (compiled engines);
2. the whole accelerator through the host GEMM driver (`axsa.sim.driver.run_gemm`), end
   to end (packing, simulation, gathering): 256x1024x256 on the compiled engines;
3. utilization (useful MACs / (cycles x R x C), cycles from the RTL) on GEMMs with
   K >= 4 x rows and M, N multiples of the array (target >= 90%), on the fastest engine.

For each run: MAC/s (useful multiply-accumulates per wall-clock second of the run
itself), build time (elaboration and compile, cached by design hash: "cached" when the
library came from the cache), and the ratio to CXXRTL and to pysim. Every result is
checked bit-exact against the numpy reference, and every engine's cycle count against
the cycle model (`axsa.sim.cycles.predict_cycles`; bare array: T*K + R + C + 1).

Targets (issue 12): the fastest engine at least 3x CXXRTL on the bare array and end to
end, and at least 100x pysim.

    .venv/bin/python scripts/bench_sim.py [--engines pysim,cxxrtl,verilator]
        [--repeats 5] [--circuit] [--rows 16 --cols 16 --spec exact@s8] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from axsa.rtl.array import SystolicArray
from axsa.rtl.multipliers import parse_spec
from axsa.sim.engine import engine_class, pack_fields, unpack_fields

from axsa.formats import to_codes


class BareArray(wiring.Component):
    """The array behind streams: ``step`` in (a column of A, a row of B, first, last),
    ``row`` out (one output row). Always ready: the array takes one step per cycle.
    `view` as for `SystolicArray` (``cells`` lists the multiplier cell of the cell view)."""

    def __init__(self, mult, rows, cols, view="table"):
        self.array = SystolicArray(mult, rows, cols, view=view)
        self.cells = self.array.cells
        super().__init__({
            # a stream the engine can pace (the array's own step stream is always ready)
            "step": In(stream.Signature(self.array.step.payload.shape())),
            "row": Out(stream.Signature(self.array.out.payload.row.shape())),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = arr = self.array
        m.d.comb += [
            self.step.ready.eq(1),
            arr.step.valid.eq(self.step.valid), arr.step.payload.eq(self.step.payload),
            self.row.valid.eq(arr.out.valid), self.row.payload.eq(arr.out.payload.row),
        ]
        return m


def bare_job(mult, rows, cols, tiles, k, seed=0):
    """Step payloads for `tiles` back-to-back R x K x C tiles, and the expected rows."""
    fmt = mult.fmt
    rng = np.random.default_rng(seed)
    (lo_a, hi_a), (lo_b, hi_b) = fmt.a_range(), fmt.b_range()
    A = rng.integers(lo_a, hi_a + 1, size=(tiles, rows, k))
    B = rng.integers(lo_b, hi_b + 1, size=(tiles, k, cols))
    a_steps = A.transpose(0, 2, 1).reshape(-1, rows)            # (tiles*k, R)
    b_steps = B.reshape(-1, cols)                               # (tiles*k, C)
    assert fmt.a_width == fmt.b_width, "the bench packs a and b as one field width"
    words = pack_fields(np.concatenate([a_steps, b_steps], axis=1), fmt.a_width,
                        signed=fmt.signed)
    flag_bit = (rows + cols) * fmt.a_width
    n_words = (flag_bit + 2 + 31) // 32
    if words.shape[1] < n_words:
        words = np.concatenate([words, np.zeros((len(words), n_words - words.shape[1]),
                                                np.uint32)], axis=1)
    pos = np.arange(tiles * k) % k
    w, sh = divmod(flag_bit, 32)
    flags = (pos == 0).astype(np.uint64) | ((pos == k - 1).astype(np.uint64) << np.uint64(1))
    words[:, w] |= ((flags << np.uint64(sh)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    if sh > 30:
        words[:, w + 1] |= (flags >> np.uint64(32 - sh)).astype(np.uint32)
    table = mult.model_table()
    ac, bc = to_codes(A, fmt.a_width), to_codes(B, fmt.b_width)
    want = table[ac[:, :, :, None], bc[:, None, :, :]].sum(axis=2)  # (tiles, R, C)
    return words, want.reshape(-1, cols)


class Run:
    """One benchmark case on one engine: built once, timed `repeats` times."""

    def __init__(self, kind, engine_name, build, job):
        self.kind, self.engine = kind, engine_name
        t0 = time.perf_counter()
        self.eng = build()
        self.build_s = time.perf_counter() - t0
        self.cache_hit = getattr(self.eng, "cache_hit", None)
        self.job = job
        self.walls, self.results = [], []

    def once(self):
        t0 = time.perf_counter()
        result = self.job(self.eng)
        self.walls.append(result.pop("wall_s", time.perf_counter() - t0))
        self.results.append(result)

    def summary(self) -> dict:
        first = self.results[0]
        wall = statistics.median(self.walls)
        return {**first, "kind": self.kind, "engine": self.engine, "wall_s": wall,
                "walls": self.walls, "mac_per_s": first["macs"] / wall,
                "cycles_per_s": first["cycles"] / wall, "build_s": self.build_s,
                "cache_hit": self.cache_hit,
                "bit_exact": all(r["bit_exact"] for r in self.results),
                "cycles_ok": all(r["cycles"] == r["predicted_cycles"] for r in self.results)}


def bare_run(name, mult, rows, cols, tiles, k, view="table", cells=None) -> Run:
    """The bare array on engine `name`: `tiles` back-to-back K-long tiles."""
    words, want = bare_job(mult, rows, cols, tiles, k)
    kwargs = {"cells": cells} if cells else {}

    def job(eng):
        out, cycles = eng.run_streams(feeds={"step": words}, drains={"row": tiles * rows},
                                      max_cycles=tiles * k + 10 * (rows + cols) + 100)
        got = unpack_fields(out["row"], cols, eng.component.array.acc_width, signed=True)
        macs = tiles * k * rows * cols
        return {"what": f"{tiles} x K={k}", "macs": macs, "cycles": cycles,
                "predicted_cycles": tiles * k + rows + cols + 1,
                "bit_exact": bool(np.array_equal(got, want)),
                "utilization": macs / (cycles * rows * cols)}

    kind = "bare array" + (f", cells={cells}" if cells else "")
    return Run(kind, name, lambda: engine_class(name)(BareArray(mult, rows, cols, view),
                                                      **kwargs), job)


def gemm_job(mult, shape, seed=1):
    """A run of an M x K x N GEMM through the driver, checked against the reference."""
    from axsa.sim.driver import run_gemm
    from axsa.sim.reference import reference_gemm

    M, K, N = shape
    fmt = mult.fmt
    rng = np.random.default_rng(seed)
    (lo_a, hi_a), (lo_b, hi_b) = fmt.a_range(), fmt.b_range()
    A = rng.integers(lo_a, hi_a + 1, (M, K))
    B = rng.integers(lo_b, hi_b + 1, (K, N))
    want = reference_gemm(A, B, mult.model_table(), fmt)

    def job(eng):
        res = run_gemm(A, B, mult, engine=eng)
        return {"what": "x".join(map(str, shape)), "shape": list(shape), "macs": res.macs,
                "cycles": res.cycles, "predicted_cycles": res.predicted_cycles,
                "wall_s": res.wall_s, "utilization": res.utilization,
                "bit_exact": bool(np.array_equal(res.C, want))}
    return job


def driver_run(name, mult, rows, cols, shape, view="table") -> Run:
    from axsa.sim.driver import build_accelerator

    cls = engine_class(name)
    design_view = cls.design_view(view, mult)
    kwargs = {"cells": view} if design_view == "cell" else {}
    return Run(f"driver e2e, {view}", name,
               lambda: cls(build_accelerator(mult, rows, cols, view=design_view), **kwargs),
               gemm_job(mult, shape))


def baseline_tree(rev: str) -> Path:
    """An importable copy of axsa at git revision `rev` of this checkout: its files
    (``git archive``) under a temporary folder, and a folder ``pkg`` in which ``axsa``
    and its subpackages sit where the revision's pyproject package-dir maps them."""
    import io
    import subprocess
    import tarfile
    import tempfile
    import tomllib

    root = Path(__file__).resolve().parent.parent
    dest = Path(tempfile.mkdtemp(prefix=f"axsa-{rev}-"))
    archive = subprocess.run(["git", "-C", str(root), "archive", rev], capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest / "src", filter="data")
    mapping = tomllib.loads((dest / "src" / "pyproject.toml").read_text())
    mapping = mapping["tool"]["setuptools"]["package-dir"]
    for package in sorted(mapping, key=lambda k: k.count(".")):
        link = dest / "pkg" / package.replace(".", "/")
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(dest / "src" / mapping[package], target_is_directory=True)
    return dest / "pkg"


class BaselineRun:
    """A case on CXXRTL with the code of another revision (`baseline_tree`), run in a child
    process that times one run per request, so it alternates with this process's runs."""

    def __init__(self, kind, rev, tree, case, case_args):
        import subprocess
        self.kind, self.engine = kind, f"cxxrtl@{rev}"
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", case, *case_args], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready = json.loads(self.proc.stdout.readline())
        self.build_s, self.cache_hit = ready["build_s"], ready["cache_hit"]
        self.walls, self.results = [], []

    def once(self):
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        result = json.loads(self.proc.stdout.readline())
        self.walls.append(result.pop("wall_s"))
        self.results.append(result)

    def summary(self) -> dict:
        self.proc.stdin.close()
        self.proc.wait()
        return Run.summary(self)


def serve(case: str, args) -> None:
    """The child of `BaselineRun`: build `case` on CXXRTL, then one timed run per line."""
    mult = parse_spec(args.spec)
    R, C = args.rows, args.cols
    if case == "bare":
        run = bare_run("cxxrtl", mult, R, C, args.tiles, args.k)
    else:
        run = driver_run("cxxrtl", mult, R, C, gemm_shape(args.gemm))
    print(json.dumps({"build_s": run.build_s, "cache_hit": run.cache_hit}), flush=True)
    for _ in sys.stdin:
        run.once()
        print(json.dumps({**run.results[-1], "wall_s": run.walls[-1]}), flush=True)


def gemm_shape(text: str) -> tuple[int, int, int]:
    M, K, N = (int(v) for v in text.lower().split("x"))
    return M, K, N


def measure(runs: list[Run], repeats: int, log) -> list[dict]:
    """Time every run `repeats` times, alternating the engines within each repeat."""
    for rep in range(repeats):
        for run in runs:
            run.once()
        log(f"  repeat {rep + 1}/{repeats}: " + ", ".join(
            f"{r.engine} {r.results[-1]['macs'] / r.walls[-1] / 1e6:.1f}" for r in runs)
            + " M MAC/s")
    return [run.summary() for run in runs]


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's MAC/s over CXXRTL's and pysim's of the same case."""
    by = {r["engine"]: r["mac_per_s"] for r in rows}
    baseline = next((e for e in by if e.startswith("cxxrtl@")), None)
    for r in rows:
        for base in ("cxxrtl", "pysim"):
            r[f"over_{base}"] = r["mac_per_s"] / by[base] if base in by else None
        r["over_baseline"] = r["mac_per_s"] / by[baseline] if baseline else None
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default="pysim,cxxrtl,verilator",
                    help="comma-separated engines to compare")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--spec", default="exact@s8")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed runs per case and engine (medians reported)")
    ap.add_argument("--pysim-tiles", type=int, default=2)
    ap.add_argument("--tiles", type=int, default=2000,
                    help="bare-array tiles on the compiled engines")
    ap.add_argument("--k", type=int, default=256, help="reduction length of the bare tiles")
    ap.add_argument("--gemm", default="256x1024x256",
                    help="M x K x N of the end-to-end GEMM on the compiled engines")
    ap.add_argument("--skip-driver", action="store_true")
    ap.add_argument("--circuit", action="store_true",
                    help="also time the bare array in the cell view on the compiled engines, "
                         "cells filled with product tables and with the multipliers' circuits")
    ap.add_argument("--baseline", metavar="REV",
                    help="also time CXXRTL with the code of git revision REV (e.g. main), "
                         "alternated with the others: 'today's CXXRTL' in the same run")
    ap.add_argument("--serve", metavar="CASE", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve, args)
        return 0

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        engine_class(e)
    compiled = [e for e in engines if e != "pysim"]
    mult = parse_spec(args.spec)
    R, C = args.rows, args.cols
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    try:
        M, K, N = gemm_shape(args.gemm)
    except ValueError:
        ap.error(f"--gemm {args.gemm!r}: expected MxKxN")
    case_args = [f"--rows={R}", f"--cols={C}", f"--spec={args.spec}", f"--tiles={args.tiles}",
                 f"--k={args.k}", f"--gemm={args.gemm}"]
    tree = baseline_tree(args.baseline) if args.baseline else None
    report = {"rows": R, "cols": C, "spec": mult.spec, "repeats": args.repeats,
              "engines": engines, "baseline": args.baseline,
              "load_average": list(os.getloadavg()), "cases": {}}

    cases = {"bare": lambda e: bare_run(
        e, mult, R, C, args.pysim_tiles if e == "pysim" else args.tiles, args.k)}
    if args.circuit:
        for cells in ("table", "circuit"):
            cases[f"bare_cells_{cells}"] = (lambda e, cells=cells: None if e == "pysim" else
                                            bare_run(e, mult, R, C, args.tiles // 10, args.k,
                                                     view="cell", cells=cells))
    if not args.skip_driver:
        cases["driver"] = lambda e: driver_run(
            e, mult, R, C, (2 * R, 8 * R, 2 * C) if e == "pysim" else (M, K, N))
    for name, make in cases.items():
        log(f"{name}: building {', '.join(engines)} (compiled designs are cached) ...")
        runs = [run for run in (make(e) for e in engines) if run is not None]
        if tree is not None and name in ("bare", "driver"):
            runs.insert(0, BaselineRun(runs[0].kind, args.baseline, tree, name, case_args))
        report["cases"][name] = with_ratios(measure(runs, args.repeats, log))

    if not args.skip_driver and compiled:
        fastest = max(report["cases"]["driver"], key=lambda r: r["mac_per_s"])["engine"]
        fastest = fastest if fastest != "pysim" else compiled[0]
        log(f"utilization on {fastest} ...")
        util, eng = [], driver_run(fastest, mult, R, C, (R, R, C)).eng  # one engine for all
        for shape in [(R, 4 * R, C), (4 * R, 4 * R, 4 * C), (4 * R, 16 * R, 4 * C),
                      (8 * R, 64 * R, 8 * C), (3 * R, 256 * R, 5 * C)]:
            run = Run("utilization", fastest, lambda: eng, gemm_job(mult, shape))
            run.once()
            util.append(run.summary())
        report["utilization"] = util
    report["load_average_end"] = list(os.getloadavg())
    report["targets"] = targets(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


def targets(rep) -> dict:
    """Issue 12's targets, None where this run did not measure them. "Today's CXXRTL" is
    the `--baseline` revision's CXXRTL when it ran, else this code's."""
    def best(case, key):
        rows = rep["cases"].get(case) or []
        ratios = [r[key] for r in rows if r.get(key) is not None
                  and r["engine"] != "pysim" and not r["engine"].startswith("cxxrtl")]
        return max(ratios) if ratios else None

    out = {}
    for case in ("bare", "driver"):
        rows = rep["cases"].get(case) or []
        today = "over_baseline" if any(r["engine"].startswith("cxxrtl@") for r in rows) \
            else "over_cxxrtl"
        over_c, over_p = best(case, today), best(case, "over_pysim")
        out[f"{case}_fastest_ge_3x_todays_cxxrtl"] = None if over_c is None else over_c >= 3
        out[f"{case}_fastest_ge_100x_pysim"] = None if over_p is None else over_p >= 100
    util = rep.get("utilization")
    out["utilization_ge_90pct"] = (min(u["utilization"] for u in util) >= 0.9
                                   if util else None)
    rows = [r for case in rep["cases"].values() for r in case] + (util or [])
    out["all_bit_exact"] = all(r["bit_exact"] for r in rows)
    out["cycles_equal_cycle_model"] = all(r["cycles_ok"] for r in rows)
    return out


def _print(rep) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=160)
    t = Table(title=f"simulation speed, {rep['rows']}x{rep['cols']} array, {rep['spec']}, "
                    f"medians of {rep['repeats']} alternated runs")
    base = f"x cxxrtl@{rep['baseline']}" if rep.get("baseline") else None
    for col in ("run", "engine", "GEMM / tiles", "MACs", "cycles", "wall s", "M MAC/s",
                *([base] if base else []), "x cxxrtl", "x pysim", "util", "build s", "exact"):
        t.add_column(col, justify="right" if col not in ("run", "engine") else "left")

    def ratio(v):
        return "" if v is None else f"{v:,.2f}" if v < 10 else f"{v:,.0f}"

    def row(r):
        t.add_row(r["kind"], r["engine"], r["what"], f"{r['macs']:,}", f"{r['cycles']:,}",
                  f"{r['wall_s']:.3f}", f"{r['mac_per_s'] / 1e6:.2f}",
                  *([ratio(r.get("over_baseline"))] if base else []),
                  ratio(r.get("over_cxxrtl")), ratio(r.get("over_pysim")),
                  f"{r['utilization']:.1%}",
                  "" if r["kind"] == "utilization" else
                  f"{r['build_s']:.1f}" + (" (cached)" if r.get("cache_hit") else ""),
                  "yes" if r["bit_exact"] and r["cycles_ok"] else "NO")

    for rows in rep["cases"].values():
        for r in rows:
            row(r)
    for r in rep.get("utilization", []):
        row(r)
    con.print(t)
    if rep.get("utilization"):
        con.print(f"utilization, K >= 4 x rows: min "
                  f"{min(u['utilization'] for u in rep['utilization']):.1%} (target >= 90%)")
    con.print("load average at start {:.2f} {:.2f} {:.2f}, at end {:.2f} {:.2f} {:.2f}".format(
        *rep["load_average"], *rep["load_average_end"]))
    con.print("targets: " + ", ".join(
        f"{k}={'not measured' if v is None else 'met' if v else 'MISSED'}"
        for k, v in rep["targets"].items()))


if __name__ == "__main__":
    sys.exit(main())

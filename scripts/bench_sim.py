#!/usr/bin/env python3
"""Simulation speed benchmark (issue 4): pysim vs CXXRTL on the same 16x16 8-bit array.

One run, every figure measured side by side in this process:

1. the bare systolic array (`axsa.rtl.array.SystolicArray` behind a thin stream wrapper),
   fed one step per cycle: MAC/s of each engine and their ratio (target >= 100x);
2. the whole accelerator through the host GEMM driver (`axsa.sim.driver.run_gemm`):
   MAC/s end to end (packing, simulation, gathering; target >= 50 million MAC/s on
   CXXRTL) and the ratio to pysim;
3. utilization (useful MACs / (cycles x R x C), cycles from the RTL) on GEMMs with
   K >= 4 x rows and M, N multiples of the array (target >= 90%).

MAC/s counts useful multiply-accumulates per wall-clock second of the run itself; the
one-off elaboration and compile (cached by design hash) are reported separately.
Every result is checked bit-exact against the numpy reference.

    .venv/bin/python scripts/bench_sim.py [--rows 16 --cols 16 --spec exact@s8] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from axsa.rtl.array import SystolicArray
from axsa.rtl.cells import SIM_VIEWS
from axsa.rtl.multipliers import parse_spec
from axsa.sim.engine import pack_fields, unpack_fields


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
    from axsa.rtl.multipliers import to_codes
    ac, bc = to_codes(A, fmt.a_width), to_codes(B, fmt.b_width)
    want = table[ac[:, :, :, None], bc[:, None, :, :]].sum(axis=2)  # (tiles, R, C)
    return words, want.reshape(-1, cols)


def bench_bare(engine_cls, mult, rows, cols, tiles, k, view="table", **kwargs):
    """Time `tiles` K-long tiles on the bare array; `view` the array's RTL view,
    `kwargs` for the engine (``cells=`` for the cell view)."""
    t0 = time.perf_counter()
    eng = engine_cls(BareArray(mult, rows, cols, view), **kwargs)
    build_s = time.perf_counter() - t0
    words, want = bare_job(mult, rows, cols, tiles, k)
    acc_width = eng.component.array.acc_width
    t0 = time.perf_counter()
    out, cycles = eng.run_streams(feeds={"step": words}, drains={"row": tiles * rows},
                                  max_cycles=tiles * k + 10 * (rows + cols) + 100)
    wall = time.perf_counter() - t0
    got = unpack_fields(out["row"], cols, acc_width, signed=True)
    macs = tiles * k * rows * cols
    label = eng.name if view == "table" else f"{eng.name} cells/{kwargs['cells']}"
    return {
        "engine": label, "view": view, "tiles": tiles, "k": k, "macs": macs, "cycles": cycles,
        "wall_s": wall, "mac_per_s": macs / wall, "cycles_per_s": cycles / wall,
        "build_s": build_s, "cache_hit": getattr(eng, "cache_hit", None),
        "bit_exact": bool(np.array_equal(got, want)),
        "utilization": macs / (cycles * rows * cols),
    }


def bench_driver(engine, mult, shape, seed=1):
    from axsa.sim.driver import run_gemm
    from axsa.sim.reference import reference_gemm

    M, K, N = shape
    fmt = mult.fmt
    rng = np.random.default_rng(seed)
    (lo_a, hi_a), (lo_b, hi_b) = fmt.a_range(), fmt.b_range()
    A = rng.integers(lo_a, hi_a + 1, (M, K))
    B = rng.integers(lo_b, hi_b + 1, (K, N))
    res = run_gemm(A, B, mult, engine=engine)
    want = reference_gemm(A, B, mult.model_table(), fmt)
    return {
        "engine": res.engine, "shape": [M, K, N], "macs": res.macs, "cycles": res.cycles,
        "predicted_cycles": res.predicted_cycles, "wall_s": res.wall_s,
        "mac_per_s": res.mac_per_s, "utilization": res.utilization,
        "bit_exact": bool(np.array_equal(res.C, want)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--spec", default="exact@s8")
    ap.add_argument("--pysim-tiles", type=int, default=2)
    ap.add_argument("--cxxrtl-tiles", type=int, default=2000)
    ap.add_argument("--k", type=int, default=256, help="reduction length of the bare tiles")
    ap.add_argument("--skip-driver", action="store_true")
    ap.add_argument("--circuit", action="store_true",
                    help="also time the bare array in the cell view on CXXRTL, cells filled "
                         "with the multipliers' circuits and with product-table black boxes")
    ap.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    args = ap.parse_args(argv)

    from axsa.sim.cxxrtl import CxxrtlEngine
    from axsa.sim.pysim_engine import PysimEngine

    mult = parse_spec(args.spec)
    R, C = args.rows, args.cols
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    report = {"rows": R, "cols": C, "spec": mult.spec}

    log(f"bare {R}x{C} array, {mult.spec}: pysim ...")
    p = bench_bare(PysimEngine, mult, R, C, args.pysim_tiles, args.k)
    log(f"bare {R}x{C} array: cxxrtl (compile unless cached) ...")
    c = bench_bare(CxxrtlEngine, mult, R, C, args.cxxrtl_tiles, args.k)
    report["bare"] = {"pysim": p, "cxxrtl": c, "ratio": c["mac_per_s"] / p["mac_per_s"]}
    if args.circuit:
        report["bare_circuit"] = []
        for kind in SIM_VIEWS:
            log(f"bare {R}x{C} array, cell view, cxxrtl cells={kind} ...")
            report["bare_circuit"].append(bench_bare(
                CxxrtlEngine, mult, R, C, args.cxxrtl_tiles // 10, args.k, view="cell",
                cells=kind))

    if not args.skip_driver:
        from axsa.sim.driver import build_accelerator

        log("accelerator through the GEMM driver: building both engines ...")
        t0 = time.perf_counter()
        acc_p = PysimEngine(build_accelerator(mult, R, C,
                                              view=PysimEngine.design_view("table", mult)))
        pysim_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc_c = CxxrtlEngine(build_accelerator(mult, R, C,
                                               view=CxxrtlEngine.design_view("table", mult)))
        cxxrtl_build = time.perf_counter() - t0
        dp = bench_driver(acc_p, mult, (2 * R, 8 * R, 2 * C))
        dc = bench_driver(acc_c, mult, (16 * R, 64 * R, 16 * C))
        dp["build_s"], dc["build_s"], dc["cache_hit"] = pysim_build, cxxrtl_build, \
            acc_c.cache_hit
        report["driver"] = {"pysim": dp, "cxxrtl": dc, "ratio": dc["mac_per_s"] / dp["mac_per_s"]}
        util = []
        for shape in [(R, 4 * R, C), (4 * R, 4 * R, 4 * C), (4 * R, 16 * R, 4 * C),
                      (8 * R, 64 * R, 8 * C), (3 * R, 256 * R, 5 * C)]:
            util.append(bench_driver(acc_c, mult, shape))
        report["utilization"] = util

    ok_ratio = report["bare"]["ratio"] >= 100
    # None: not measured in this run (--skip-driver)
    ok_e2e = report["driver"]["cxxrtl"]["mac_per_s"] >= 50e6 if "driver" in report else None
    ok_util = (min(u["utilization"] for u in report["utilization"]) >= 0.9
               if "utilization" in report else None)
    exact = all(r["bit_exact"] for r in (p, c, *report.get("utilization", []),
                                         *report.get("bare_circuit", []),
                                         *[report["driver"][e] for e in ("pysim", "cxxrtl")
                                           if "driver" in report]))
    report["targets"] = {"cxxrtl_over_pysim_ge_100x": ok_ratio,
                         "end_to_end_ge_50M_mac_per_s": ok_e2e,
                         "utilization_ge_90pct": ok_util, "all_bit_exact": exact}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


def _print(rep) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=150)
    t = Table(title=f"simulation speed, {rep['rows']}x{rep['cols']} array, {rep['spec']}")
    for col in ("run", "engine", "GEMM / tiles", "MACs", "cycles", "wall s", "M MAC/s",
                "util", "build s", "exact"):
        t.add_column(col, justify="right" if col not in ("run", "engine") else "left")

    def row(run, r, what):
        t.add_row(run, r["engine"], what, f"{r['macs']:,}", f"{r['cycles']:,}",
                  f"{r['wall_s']:.3f}", f"{r['mac_per_s'] / 1e6:.2f}",
                  f"{r['utilization']:.1%}" if r.get("utilization") is not None else "",
                  f"{r['build_s']:.1f}" + (" (cached)" if r.get("cache_hit") else "")
                  if "build_s" in r else "", "yes" if r["bit_exact"] else "NO")

    for r in (rep["bare"]["pysim"], rep["bare"]["cxxrtl"], *rep.get("bare_circuit", [])):
        row("bare array", r, f"{r['tiles']} x K={r['k']}")
    if "driver" in rep:
        for eng in ("pysim", "cxxrtl"):
            r = rep["driver"][eng]
            row("driver e2e", r, "x".join(map(str, r["shape"])))
        for r in rep["utilization"]:
            row("utilization", r, "x".join(map(str, r["shape"])))
    con.print(t)
    con.print(f"bare array: cxxrtl / pysim = {rep['bare']['ratio']:.0f}x (target >= 100x)")
    if "driver" in rep:
        con.print(f"driver end to end: cxxrtl {rep['driver']['cxxrtl']['mac_per_s'] / 1e6:.1f} "
                  f"M MAC/s (target >= 50), cxxrtl / pysim = {rep['driver']['ratio']:.0f}x")
        con.print(f"utilization, K >= 4 x rows: min "
                  f"{min(u['utilization'] for u in rep['utilization']):.1%} (target >= 90%); "
                  "below 90%: " + (", ".join("x".join(map(str, u["shape"]))
                                            for u in rep["utilization"]
                                            if u["utilization"] < 0.9) or "none"))
    con.print("targets: " + ", ".join(
        f"{k}={'not measured' if v is None else 'met' if v else 'MISSED'}"
        for k, v in rep["targets"].items()))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Approximate-GEMM emulation speed, wall clock, at 1 and at N threads (issue 17).

For every shape, table and thread count, three GEMMs on the same integer operands are
timed alternately, round after round (so that the load of a shared machine falls on all
three alike), wall clock (``time.perf_counter``), the median over the rounds:

- the exact GEMM: ``torch.matmul`` on float32 copies (what the float model runs);
- `axsa.models.approx.approx_matmul` with ``engine="auto"`` (bit-exact with the table);
- the plain LUT loop: one table lookup per product, ``#pragma omp parallel for`` over
  output rows, int32 accumulation, ``-O3 -march=native -fopenmp`` (the algorithm of the
  open CPU emulators, AdaPT's kernel; `LUT_SOURCE` below, built through axsa's checked
  build cache, given its operands already as byte codes: its best case). Its result is
  checked equal to axsa's.

Printed per row: the three times, approx / fp32 (targets: 3x for tables whose error
has rank <= 8, 10x for any table) and LUT loop / approx (target: above 1). The whole
integer forward passes of both built-in models with one table in every GEMM are timed
against the exact integer pass (target 1.5x). The load average is printed before and
after: on a shared machine the N-thread figures are noisy.

    .venv/bin/python scripts/bench_emulation.py --threads 1,2          # everything
    .venv/bin/python scripts/bench_emulation.py --quick                # one shape, smoke
    .venv/bin/python scripts/bench_emulation.py --retune ...           # refit auto first
    .venv/bin/python scripts/bench_emulation.py --ranks                # error ranks
    .venv/bin/python scripts/bench_emulation.py --fits --threads 1     # fits of a sweep
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from axsa.models.approx import ProductTable, approx_matmul, cache, retune
from axsa.rtl.multipliers import parse_spec

from axsa import native

#: (name, shape of a, shape of b): DeiT-tiny sized GEMMs (TransAxx's ViT)
SHAPES = [
    ("deit-qkv 197x192@192x576", (197, 192), (192, 576)),
    ("deit-fc1 197x192@192x768", (197, 192), (192, 768)),
    ("deit-fc2 197x768@768x192", (197, 768), (768, 192)),
]

#: exact, a low-rank approximate table, a full-rank one; the random table is added
SPECS = ["exact@s8", "drum(k=4)@s8", "mitchell@s8"]

#: targets: approx / fp32 for error rank <= 8 and for any table; forward / exact forward
TARGET_LOW, TARGET_ANY, TARGET_FORWARD = 3.0, 10.0, 1.5

LUT_SOURCE = r"""
// The plain LUT loop (AdaPT-style): one lookup per product, parallel over output rows,
// int32 sums; loops (m, k, n), so that the innermost loop runs along a row of b and of
// the output (measured faster here than (m, n, k) over a transposed b).
#include <cstdint>
extern "C" void lut_gemm(const uint8_t* a, const uint8_t* b, const int32_t* lut,
                         int64_t G, int64_t M, int64_t K, int64_t N, int64_t a_batch,
                         int64_t b_batch, int32_t* out, int32_t threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t gm = 0; gm < G * M; ++gm) {
        const int64_t g = gm / M, m = gm % M;
        const uint8_t* ar = a + g * a_batch + m * K;
        int32_t* o = out + gm * N;
        for (int64_t n = 0; n < N; ++n) o[n] = 0;
        for (int64_t k = 0; k < K; ++k) {
            const int32_t* row = lut + (int32_t(ar[k]) << 8);
            const uint8_t* br = b + g * b_batch + k * N;
            for (int64_t n = 0; n < N; ++n) o[n] += row[br[n]];
        }
    }
}
"""
LUT_FLAGS = ("-O3", "-march=native", "-fopenmp")


@functools.cache
def lut_library() -> ctypes.CDLL:
    """The plain LUT loop, compiled once into axsa's build cache (`axsa.native`)."""
    cxx = native.cxx("the benchmark's plain LUT loop")
    source = LUT_SOURCE

    def build(work: Path) -> None:
        (work / "lut.cc").write_text(source)
        native.run_compiler([cxx, "-std=c++17", *LUT_FLAGS, "-fPIC", "-shared", "lut.cc",
                             "-o", "lut.so"], work, "the plain LUT loop")

    path, _ = native.build_cached("bench-lut", [source, native.cxx_version(cxx)], LUT_FLAGS,
                                  "lut.so", build)
    lib = ctypes.CDLL(str(path))
    v, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.lut_gemm.argtypes = [v, v, v, i64, i64, i64, i64, i64, i64, v, ctypes.c_int32]
    lib.lut_gemm.restype = None
    return lib


def lut_call(a: torch.Tensor, b: torch.Tensor, table: ProductTable):
    """The plain LUT loop on these operands: a function of no arguments returning the
    int32 result (the byte codes and the int32 table made beforehand)."""
    lib = lut_library()
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    G = math.prod(batch)
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    ca = (a & 255).to(torch.uint8).expand(*batch, M, K).contiguous()
    cb = (b & 255).to(torch.uint8).expand(*batch, K, N).contiguous()
    lut = torch.from_numpy(table.table.astype(np.int32).reshape(-1).copy())
    assert table.table.shape == (256, 256)

    def run():
        out = torch.empty(*batch, M, N, dtype=torch.int32)
        lib.lut_gemm(ca.data_ptr(), cb.data_ptr(), lut.data_ptr(), G, M, K, N, M * K,
                     N * K, out.data_ptr(), torch.get_num_threads())
        return out
    return run


#: every built-in family, a few parameter values each, for --ranks
RANK_SPECS = [
    "exact", "booth", "mul", "trunc(k=2)", "trunc(k=4)", "trunc(k=6)", "trunc(k=8)",
    "trunc(k=8,comp=1)", "bam(h=2,v=6)", "bam(h=4,v=9)", "bam(h=0,v=10)", "perf(j=1)",
    "perf(j=2)", "perf(i=2,j=3)", "drum(k=3)", "drum(k=4)", "drum(k=6)", "mitchell",
    "mitchell(t=2)", "mitchell(t=3)", "mitchell(t=5)", "roba", "kulkarni", "ssm(m=3)",
    "ssm(m=4)", "ssm(m=6)", "cfgtrunc",
]


def rank_report(as_json: bool) -> int:
    """Rank of every built-in family's error table at 8 bits, and the int8 plan."""
    rows = []
    for spec in RANK_SPECS:
        for fmt in ("s8", "u8"):
            mult = parse_spec(f"{spec}@{fmt}")
            for mode in range(mult.modes):
                t = ProductTable.from_multiplier(mult, mode)
                int8 = t.plan.int8
                rows.append({"table": t.name, "error_rank": error_rank(t),
                             "table_rank": int(np.linalg.matrix_rank(
                                 t.table.astype(np.float64))),
                             "integer_terms": len(t.plan.terms) if int8 else None,
                             "int8_gemms": len(int8.groups) if int8 else None,
                             "int8_width": t.plan.width if int8 else None,
                             "engine_197x192x576": t.engine})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'table':26} {'rank(lut-a*b)':>13} {'rank(lut)':>9} {'int terms':>9} "
          f"{'int8 GEMMs':>10} {'width':>5} {'engine':>8}")
    for r in rows:
        def show(x):
            return "-" if x is None else str(x)
        print(f"{r['table']:26} {r['error_rank']:>13} {r['table_rank']:>9} "
              f"{show(r['integer_terms']):>9} {show(r['int8_gemms']):>10} "
              f"{show(r['int8_width']):>5} {r['engine_197x192x576']:>8}")
    return 0


def error_rank(table: ProductTable) -> int:
    """Rank of lut - a*b over the reals (float SVD of an integer table: exact here)."""
    err = table.table - np.outer(table.a_values, table.b_values)
    return int(np.linalg.matrix_rank(err.astype(np.float64)))


def tables() -> list[ProductTable]:
    out = [ProductTable.from_multiplier(parse_spec(spec)) for spec in SPECS]
    rng = np.random.default_rng(0)
    out.append(ProductTable(rng.integers(-2**15, 2**15, size=(256, 256)), signed=True,
                            name="random@s8"))
    return out


def model_shapes() -> list[tuple[str, tuple, tuple]]:
    """The GEMM shapes of the two axsa models at batch 64 (read off their GEMM hook)."""
    try:
        from axsa.models.gemm import GemmHook
        from axsa.models.ts import TSConfig, TSTransformer
        from axsa.models.vit import TinyViT, ViTConfig
    except ImportError:
        return []
    seen: dict[str, tuple[tuple, tuple]] = {}

    class Spy(GemmHook):
        def __call__(self, name, a, b, integer):
            seen.setdefault(f"{prefix}.{name}", (tuple(a.shape), tuple(b.shape)))
            return super().__call__(name, a, b, integer)

    shapes = []
    for prefix, model, x in (
            ("ts", TSTransformer(TSConfig()), None),
            ("vit", TinyViT(ViTConfig()), torch.rand(64, 8, 8))):
        try:
            model.rt.hook.__class__ = Spy
            if x is None:
                c = model.config
                x = torch.randn(64, c.window, c.channels)
            model.set_mode("fake_quant")
            model.train()
            with torch.no_grad():
                model(x)
        except Exception as exc:  # the models are another part: never break the bench
            print(f"(model shapes of {prefix} unavailable: {exc})", file=sys.stderr)
    # one entry per distinct shape pair, named after its first GEMM
    by_shape: dict[tuple, list[str]] = {}
    for name, sh in seen.items():
        by_shape.setdefault(sh, []).append(name)
    for (sa, sb), names in by_shape.items():
        label = names[0] + (f" (+{len(names) - 1})" if len(names) > 1 else "")
        shapes.append((f"{label} {'x'.join(map(str, sa))}@{'x'.join(map(str, sb))}", sa, sb))
    return shapes



def per_call(fn, min_time: float) -> float:
    """Wall seconds per call of `fn`, over enough calls to last `min_time`."""
    n, total = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        total = time.perf_counter() - t0
        if total >= min_time:
            return total / n
        n *= 2


def alternate(fns: list, rounds: int, min_time: float) -> list[float]:
    """Median seconds per call of each of `fns`, timed in turn, round after round (after
    three warm-up calls each: `auto` fits its engine choice on a class's first call)."""
    for fn in fns:
        for _ in range(3):
            fn()
    times = [[] for _ in fns]
    for _ in range(rounds):
        for t, fn in zip(times, fns):
            t.append(per_call(fn, min_time))
    return [float(np.median(t)) for t in times]


def gemm_rows(shapes, tabs, threads: list[int], rounds: int, min_time: float,
              as_json: bool) -> list[dict]:
    rng = np.random.default_rng(1)
    rows = []
    for shape_name, sa, sb in shapes:
        for nt in threads:
            torch.set_num_threads(nt)
            if not as_json:
                print(f"\n{shape_name}, {nt} thread(s)")
                print(f"  {'table':14} {'err rank':>8} {'engine':>13} {'fp32 ms':>9} "
                      f"{'approx ms':>9} {'LUT ms':>9} {'/fp32':>6} {'target':>6} "
                      f"{'LUT/approx':>10}")
            for table in tabs:
                lo, hi = table.a_range
                a = torch.from_numpy(rng.integers(lo, hi + 1, size=sa))
                b = torch.from_numpy(rng.integers(lo, hi + 1, size=sb))
                af, bf = a.float(), b.float()
                lut = lut_call(a, b, table)
                if not torch.equal(lut().to(torch.int64), approx_matmul(a, b, table)):
                    raise SystemExit(f"the LUT loop and approx_matmul differ on {shape_name} "
                                     f"{table.name}")
                t_f, t_a, t_l = alternate([functools.partial(torch.matmul, af, bf),
                                           functools.partial(approx_matmul, a, b, table), lut],
                                          rounds, min_time)
                rank = error_rank(table)
                target = TARGET_LOW if rank <= 8 else TARGET_ANY
                row = {"shape": shape_name, "table": table.name, "threads": nt,
                       "error_rank": rank,
                       "engine": cache.tuned(table, sa, sb) or "?",
                       "exact_ms": t_f * 1e3, "approx_ms": t_a * 1e3, "lut_ms": t_l * 1e3,
                       "ratio": t_a / t_f, "target": target, "lut_speedup": t_l / t_a}
                row["met"] = row["ratio"] <= target and row["lut_speedup"] > 1
                rows.append(row)
                if not as_json:
                    print(f"  {table.name:14} {rank:>8} {row['engine']:>13} {t_f * 1e3:>9.3f} "
                          f"{t_a * 1e3:>9.3f} {t_l * 1e3:>9.3f} {row['ratio']:>5.1f}x "
                          f"{target:>5.0f}x {row['lut_speedup']:>9.1f}x "
                          f"{'met' if row['met'] else 'MISSED'}", flush=True)
    return rows


def forward_rows(tabs, threads: list[int], rounds: int, min_time: float,
                 as_json: bool) -> list[dict]:
    """Whole integer forward passes of the two built-in models at batch 64: the exact
    integer pass against the same table in every GEMM."""
    from axsa.models.train import load_checkpoint, predict
    rows = []
    gen = torch.Generator().manual_seed(2)
    for kind in ("ts", "vit"):
        model = load_checkpoint(None, kind)[0]
        c = model.config
        x = (torch.randn(64, c.window, c.channels, generator=gen) if kind == "ts"
             else torch.rand(64, c.image, c.image, generator=gen) * 16)
        for nt in threads:
            torch.set_num_threads(nt)
            if not as_json:
                print(f"\nforward pass, {kind} model, batch 64, integer mode, {nt} thread(s), "
                      f"every GEMM ({len(model.hook.names)}) through the table")
            for table in tabs:
                def exact(model=model, x=x):
                    model.hook.clear()
                    return predict(model, x, "integer")

                def approx(model=model, x=x, table=table):
                    model.hook.assign({name: table for name in model.hook.names})
                    return predict(model, x, "integer")

                t_exact, t_approx = alternate([exact, approx], rounds, min_time)
                model.hook.clear()
                row = {"shape": f"forward {kind} batch 64", "table": table.name,
                       "threads": nt, "exact_ms": t_exact * 1e3, "approx_ms": t_approx * 1e3,
                       "ratio": t_approx / t_exact, "target": TARGET_FORWARD}
                row["met"] = row["ratio"] <= TARGET_FORWARD
                rows.append(row)
                if not as_json:
                    print(f"  {table.name:14} exact {row['exact_ms']:8.3f} ms  approx "
                          f"{row['approx_ms']:8.3f} ms  {row['ratio']:5.2f}x "
                          f"{'met' if row['met'] else 'MISSED'}", flush=True)
    return rows


def fits_report() -> int:
    """The engine fits a search's sweep pays in this process: every default search
    candidate in every GEMM of both built-in models, one GEMM at a time and all at once,
    integer forward passes at batch 512. Run twice with the same AXSA_CACHE: the second
    run reads the stored choices and fits nothing."""
    from axsa.models.train import load_checkpoint, predict
    from axsa.search.model_eval import default_candidates
    t0 = time.perf_counter()
    for kind in ("ts", "vit"):
        model = load_checkpoint(None, kind)[0]
        c = model.config
        gen = torch.Generator().manual_seed(2)
        x = (torch.randn(512, c.window, c.channels, generator=gen) if kind == "ts"
             else torch.rand(512, c.image, c.image, generator=gen) * 16)
        for cand in default_candidates(c.bits):
            table = ProductTable.from_multiplier(parse_spec(cand.spec), cand.mode)
            for name in model.hook.names:
                model.hook.assign({name: table})
                predict(model, x, "integer")
            model.hook.assign({name: table for name in model.hook.names})
            predict(model, x, "integer")
    print(f"engine fits: {cache.FITS[0]} for {len(cache.CALLS)} (table, shapes) keys, "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def parse_threads(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--threads {text!r}: expected counts like 1,2")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="first shape and the model GEMMs' smallest, fewer rounds, no "
                         "forward passes")
    ap.add_argument("--rounds", type=int, default=None, help="default 7 (2 with --quick)")
    ap.add_argument("--min-time", type=float, default=0.02, help="seconds per timing")
    ap.add_argument("--threads", type=parse_threads, default=[1, os.cpu_count() or 1],
                    help="thread counts, joined by ',' (default 1 and all cores)")
    ap.add_argument("--only", default="",
                    help="table names to run, joined by ';' (e.g. 'exact@s8;random@s8')")
    ap.add_argument("--shapes", default="",
                    help="run only the shapes whose name contains one of these words, "
                         "joined by ';' (e.g. 'ts.head;attn')")
    ap.add_argument("--retune", action="store_true",
                    help="drop this machine's stored engine choices first (refit them)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--ranks", action="store_true",
                    help="print the error-table rank of every built-in family and exit")
    ap.add_argument("--fits", action="store_true",
                    help="count the engine fits of a search's sweep over both models and exit")
    ap.add_argument("--no-forward", action="store_true",
                    help="skip the whole-forward-pass rows of the two built-in models")
    args = ap.parse_args(argv)
    if args.ranks:
        return rank_report(args.json)
    if args.retune:
        retune()
    if args.fits:
        torch.set_num_threads(min(args.threads))
        return fits_report()
    threads = sorted(set(args.threads))
    rounds = args.rounds or (2 if args.quick else 7)
    shapes = SHAPES + model_shapes()
    if args.quick:
        shapes = shapes[:1] + [s for s in shapes if s[0].startswith("ts.")][:1]
    if args.shapes:
        words = args.shapes.split(";")
        shapes = [s for s in shapes if any(w in s[0] for w in words)]
        if not shapes:
            print(f"error: --shapes {args.shapes!r} matches no shape", file=sys.stderr)
            return 2
    tabs = tables()
    if args.only:
        wanted = set(args.only.split(";"))
        tabs = [t for t in tabs if t.name in wanted]
    load = os.getloadavg()
    if not args.json:
        print(f"torch {torch.__version__}, threads {threads}, load average before "
              f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    rows = gemm_rows(shapes, tabs, threads, rounds, args.min_time, args.json)
    forward = [] if args.quick or args.no_forward else \
        forward_rows(tabs, threads, rounds, args.min_time, args.json)
    after = os.getloadavg()
    if args.json:
        print(json.dumps({"load_before": load, "load_after": after,
                          "rows": rows + forward}, indent=2))
        return 0
    print(f"\nload average after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    for nt in threads:
        mine = [r for r in rows if r["threads"] == nt]
        low = [r["ratio"] for r in mine if r["error_rank"] <= 8]
        print(f"{nt} thread(s): worst approx/fp32, error rank <= 8: "
              f"{max(low, default=math.nan):.1f}x (target {TARGET_LOW:.0f}x); any table: "
              f"{max((r['ratio'] for r in mine), default=math.nan):.1f}x (target "
              f"{TARGET_ANY:.0f}x); least LUT loop / approx: "
              f"{min((r['lut_speedup'] for r in mine), default=math.nan):.1f}x (target > 1)")
        fw = [r["ratio"] for r in forward if r["threads"] == nt]
        if fw:
            print(f"{nt} thread(s): worst forward pass / exact integer pass: {max(fw):.2f}x "
                  f"(target {TARGET_FORWARD}x)")
    missed = [r for r in rows + forward if not r["met"]]
    print(f"rows meeting their targets: {len(rows) + len(forward) - len(missed)} of "
          f"{len(rows) + len(forward)}")
    for r in missed:
        print(f"  MISSED {r['shape']}  {r['table']}  {r['threads']} thread(s): "
              f"{r['ratio']:.2f}x" + (f", LUT loop / approx {r['lut_speedup']:.2f}x"
                                      if "lut_speedup" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

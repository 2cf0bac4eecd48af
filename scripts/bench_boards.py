#!/usr/bin/env python
"""LUTs (and DSPs) per MAC on the boards: the multiplier alone, and in the board top.

For each board (iCE40UP5K on the iCEBreaker, ECP5-85F on the ULX3S), operand width (8
and 4 bits) and multiplier (exact and approximate ones), three figures:

- ``mult``: the bare multiplier (``axsa synth SPEC --target ice40|ecp5``, the synth
  package's characterization);
- ``per_mac``: the marginal cost of a MAC in the real board build (`axsa.synth.board`,
  the UART board top `BoardTop` through the board's Amaranth platform and Yosys): the
  build at ``R x C`` minus the build at ``R/2 x C``, divided by the MACs added. It
  includes what grows with the rows: the PE's accumulator and registers, the operand
  queues' width;
- ``total_per_mac``: the whole ``R x C`` build over its MACs (UART, controller, queues and
  requantizer included).

The arrays are a fixed 4x2 and 2x2 (not the boards' defaults: a 16x16 ECP5 build takes
tens of minutes here); synthesis only by default (LUT, DSP counts are the synthesized
design's; ``--pnr`` also places, routes and packs the 4x2 build and reports its Fmax).

    .venv/bin/python scripts/bench_boards.py            # every row (about 15 minutes)
    .venv/bin/python scripts/bench_boards.py --quick    # iCE40, 4 bits, exact and one other
    .venv/bin/python scripts/bench_boards.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from axsa.rtl.boards.platforms import BOARDS
from axsa.rtl.multipliers import parse_spec
from axsa.synth import board as flow
from axsa.synth.targets import Unit, synthesize

#: multipliers per operand width: exact, truncated, DRUM, Mitchell
SPECS = {
    8: ["exact@s8", "trunc(k=6)@s8", "drum(k=4)@s8", "mitchell(t=3)@s8"],
    4: ["exact@s4", "trunc(k=3)@s4", "drum(k=2)@s4", "mitchell@s4"],
}
#: the array measured and the one subtracted for the marginal figure
ARRAY, HALF = (4, 2), (2, 2)


def synth_counts(board, spec: str, rows: int, cols: int, work: Path, pnr: bool) -> dict:
    """Used LUT/DSP/... of the board top (`flow.build`, synthesis only unless `pnr`)."""
    config = flow.resolve(board, rows, cols, spec)
    out = work / f"{board.name}-{rows}x{cols}-{spec}"
    result = flow.build(board, flow.board_top(config), out, place=pnr, progress=lambda _: None)
    counts = {cat: u["used"] for cat, u in result.utilization.items()}
    if pnr:
        counts["fmax_mhz"] = round(result.min_fmax_mhz, 2)
    return counts


def row(board, spec: str, work: Path, pnr: bool) -> dict:
    mult = parse_spec(spec)
    alone = synthesize(Unit(mult), board.family, fmax=False)
    full = synth_counts(board, spec, *ARRAY, work, pnr)
    half = synth_counts(board, spec, *HALF, work, False)
    added = ARRAY[0] * ARRAY[1] - HALF[0] * HALF[1]
    macs = ARRAY[0] * ARRAY[1]
    out = {"board": board.name, "spec": spec, "array": f"{ARRAY[0]}x{ARRAY[1]}",
           "mult_luts": alone["luts"], "mult_dsps": alone.get("dsps", 0),
           "luts_per_mac": round((full["LUT"] - half["LUT"]) / added, 1),
           "dsps_per_mac": round((full["DSP"] - half["DSP"]) / added, 2),
           "total_luts_per_mac": round(full["LUT"] / macs, 1),
           "total_dsps": full["DSP"], "total_luts": full["LUT"]}
    if pnr:
        out["fmax_mhz"] = full["fmax_mhz"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="Smoke run: iCE40, 4 bits, exact and truncated only.")
    ap.add_argument("--pnr", action="store_true",
                    help="Also place and route the 4x2 builds (Fmax; slower).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    boards = ["icebreaker"] if args.quick else list(BOARDS)
    widths = [4] if args.quick else [8, 4]
    rows = []
    with tempfile.TemporaryDirectory(prefix="axsa-bench-boards-") as tmp:
        for name in boards:
            for bits in widths:
                for spec in SPECS[bits][:2] if args.quick else SPECS[bits]:
                    t = time.monotonic()
                    rows.append(row(BOARDS[name], spec, Path(tmp), args.pnr))
                    print(f"{name} {spec}: {time.monotonic() - t:.0f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = (f"{'board':<11} {'multiplier':<17} {'mult LUT':>8} {'LUT/MAC':>8} "
            f"{'DSP/MAC':>8} {'all LUT/MAC':>11} {'all DSP':>7}" + (" Fmax" if args.pnr else ""))
    print(head)
    for r in rows:
        print(f"{r['board']:<11} {r['spec']:<17} {r['mult_luts']:>8} {r['luts_per_mac']:>8} "
              f"{r['dsps_per_mac']:>8} {r['total_luts_per_mac']:>11} {r['total_dsps']:>7}"
              + (f" {r['fmax_mhz']:.1f}" if args.pnr else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

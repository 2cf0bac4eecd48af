#!/usr/bin/env python3
"""Benchmark: whole test splits through the accelerator RTL (`axsa sim model`'s library).

For each model, the whole test split (or --samples) runs with every GEMM on the CXXRTL
accelerator (default 16x16) under an approximate assignment, next to the emulation of the
same pass in the same run. Prints wall time (host ops included, design builds excluded:
the designs are built, or loaded from the compile cache, by a one-sample warm-up run
first), useful MAC/s, utilization, cycles measured and predicted, the metric from the RTL
beside the emulation's (they must be equal: the script exits 1 otherwise), the energy
figures and the time their pricing took, and the load average.

    .venv/bin/python scripts/bench_model_sim.py [--models ts vit] [--rows 16 --cols 16]
        [--samples N] [--no-energy] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

#: the approximate assignment: drum on the FFN, two modes of cfgtrunc on attention
ASSIGNMENT = {"layers.0.ffn.fc1": "drum(k=4)@s8", "layers.0.ffn.fc2": "drum(k=4)@s8",
              "layers.0.attn.qk": {"spec": "cfgtrunc(k=0/2/4/6)@s8", "mode": 1},
              "layers.0.attn.av": {"spec": "cfgtrunc(k=0/2/4/6)@s8", "mode": 2}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["ts", "vit"], choices=["ts", "vit"])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--samples", type=int, default=None, help="default: the whole split")
    ap.add_argument("--no-energy", action="store_true")
    ap.add_argument("--json", type=str, default=None, help="write the reports here")
    args = ap.parse_args()

    from axsa.models import train as T
    from axsa.sim.network import DesignCache

    from axsa.model_sim import simulate_model, split_head

    reports = {}
    failed = False
    with DesignCache("cxxrtl", args.rows, args.cols) as designs:
        for kind in args.models:
            model, source, _ = T.load_checkpoint(None, kind)
            ds = T.load_data(kind, source, model)
            t0 = time.perf_counter()
            simulate_model(model, split_head(ds.test, 1), ASSIGNMENT, designs, energy=False)
            warm = time.perf_counter() - t0
            split = split_head(ds.test, args.samples)
            load = os.getloadavg()
            c0 = time.process_time()
            rep = simulate_model(model, split, ASSIGNMENT, designs,
                                 energy=not args.no_energy)
            cpu = time.process_time() - c0
            rep["load_average"] = load
            rep["cpu_s"] = cpu
            reports[kind] = rep
            m, e = rep["metric"], rep["emulated_metric"]
            same = rep["bit_exact"] and m == e
            failed |= not same
            print(f"{kind}: {rep['samples']} test samples on the {args.rows}x{args.cols} "
                  f"CXXRTL accelerator, assignment {json.dumps(ASSIGNMENT)}")
            print(f"  warm-up (design build or cache load + 1 sample): {warm:.1f} s")
            print(f"  RTL pass        {rep['wall_s']:.2f} s wall (host ops included), "
                  f"{rep['macs'] / 1e6:.1f} M useful MACs, "
                  f"{rep['mac_per_s'] / 1e6:.1f} M MAC/s, utilization "
                  f"{100 * rep['utilization']:.1f}%")
            print(f"  RTL pass CPU    {rep['cpu_s']:.2f} s of this process "
                  f"({rep['macs'] / rep['cpu_s'] / 1e6:.1f} M MAC per CPU second)")
            print(f"  cycles          {rep['cycles']} (model: {rep['predicted_cycles']})")
            print(f"  emulated pass   {rep['emulate_s']:.2f} s "
                  f"({rep['wall_s'] / max(rep['emulate_s'], 1e-9):.1f}x faster than the RTL)")
            print(f"  {m['name']:<15} RTL {m['value']:.6f}, emulation {e['value']:.6f}: "
                  f"{'equal' if same else 'DIFFERENT'}; bit-exact {rep['bit_exact']}")
            if rep["energy"] is not None:
                print(f"  energy          multipliers {rep['energy']:.1f} pJ/inference "
                      f"(ratio {rep['energy_ratio']:.3f}), whole MACs "
                      f"{rep['pe_energy']:.1f} pJ ({rep['pe_energy_ratio']:.3f}); "
                      f"pricing took {rep['energy_s']:.1f} s")
            print(f"  process CPU     {cpu:.1f} s in all; load average {load[0]:.2f} "
                  f"{load[1]:.2f} {load[2]:.2f}")
            print("  per GEMM: name, cycles, utilization, wall s, M MAC/s")
            for g in rep["gemms"]:
                print(f"    {g['name']:<18} {g['cycles']:>8} {100 * g['utilization']:5.1f}% "
                      f"{g['wall_s']:6.2f} {g['mac_per_s'] / 1e6:7.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

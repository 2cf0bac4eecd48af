#!/usr/bin/env python
"""Accuracy of the integer-only models at 8, 6 and 4 bits against fp32; writes a
markdown table into docs/models.md (between the accuracy-table markers) and prints it.

Protocol, per model and seed: pre-train in fp32 (E epochs); from those weights, train
Q more epochs either in fp32 (the fp32 reference) or with QAT at 8, 6 and 4 bits (same
optimizer, learning rate and schedule: only quantization differs). Metrics are on the
test split; the quantized figures are the INTEGER path's (bit-identical to fake-quant).
ts: RMSE/MAE in ppm of co2 (one-week-ahead forecast from 24 weeks); vit: top-1 on digits.

    .venv/bin/python scripts/accuracy_table.py [--seeds 0 1] [--no-write]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from axsa.models import train as T

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "models.md"
START, END = "<!-- accuracy-table:start -->", "<!-- accuracy-table:end -->"
BITS = (8, 6, 4)


def run(kind: str, seed: int, **config) -> dict:
    tc = T.TrainConfig(**{**T.default_train_config(kind).__dict__, "seed": seed})
    ds = T.load_data(kind)
    torch.manual_seed(seed)
    base = T.build_model(kind, bits=8, **config)
    T.run_epochs(base, ds, "fp32", tc.epochs, tc.lr, tc.batch, seed)
    state = base.state_dict()
    out = {}
    for bits in (None, *BITS):
        model = T.build_model(kind, bits=bits or 8, **config)
        model.load_state_dict(state)
        if bits is None:
            T.run_epochs(model, ds, "fp32", tc.qat_epochs, tc.qat_lr, tc.batch, seed + 1)
            out["fp32"] = T.metrics(model, ds.test, "fp32")
        else:
            T.calibrate(model, ds.train.x, tc.calib_batches, tc.batch)
            T.run_epochs(model, ds, "fake_quant", tc.qat_epochs, tc.qat_lr, tc.batch,
                         seed + 1)
            out[bits] = T.metrics(model, ds.test, "integer")
        print(f"  {kind} seed {seed} {bits or 'fp32'}: {out[bits or 'fp32']}",
              file=sys.stderr, flush=True)
    return out


def mean(runs: list[dict], key, metric) -> float:
    return statistics.fmean(r[key][metric] for r in runs)


def table(results: dict, seeds: list[int]) -> tuple[str, list[str]]:
    lines = ["| model | metric | fp32 | 8-bit | 6-bit | 4-bit |",
             "|---|---|---|---|---|---|"]
    checks = []
    for kind, metric, fmt, label in (("ts", "rmse", "{:.4f}", "RMSE (ppm)"),
                                     ("ts", "mae", "{:.4f}", "MAE (ppm)"),
                                     ("vit", "top1", "{:.2%}", "top-1")):
        if kind not in results:
            continue
        runs = results[kind]
        ref = mean(runs, "fp32", metric)
        cells = [fmt.format(ref)]
        for b in BITS:
            v = mean(runs, b, metric)
            rel = (v - ref) / ref
            cells.append(f"{fmt.format(v)} ({rel:+.1%})")
            if metric == "rmse" and b in (8, 4):
                limit = 0.02 if b == 8 else 0.10
                checks.append(f"ts {b}-bit RMSE {rel:+.2%} vs fp32 (limit +{limit:.0%}): "
                              f"{'PASS' if rel <= limit else 'FAIL'}")
        name = "ts (co2, 24 -> 1 week)" if kind == "ts" else "ViT (digits 8x8)"
        lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    seeds_txt = ", ".join(map(str, seeds))
    lines.append("")
    lines.append(f"Integer-only path, test split, mean over seed(s) {seeds_txt}; "
                 "relative change vs fp32 in parentheses. Made by "
                 "`scripts/accuracy_table.py" + (f" --seeds {' '.join(map(str, seeds))}"
                                                 if seeds != [0] else "") + "`.")
    return "\n".join(lines), checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--models", nargs="+", choices=T.KINDS, default=list(T.KINDS))
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--d-model", type=int, default=None, help="override the default width")
    ap.add_argument("--ff", type=int, default=None, help="override the default FFN width")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    config = {k: v for k, v in (("d_model", args.d_model), ("ff", args.ff)) if v is not None}
    results = {k: [run(k, s, **config) for s in args.seeds] for k in args.models}
    md, checks = table(results, args.seeds)
    print(md)
    for c in checks:
        print(c)
    print(f"({time.time() - t0:.0f} s)")
    if not args.no_write:
        text = DOC.read_text() if DOC.exists() else f"# Models\n\n{START}\n{END}\n"
        if START not in text:
            text += f"\n{START}\n{END}\n"
        text = re.sub(re.escape(START) + ".*?" + re.escape(END),
                      lambda _: f"{START}\n{md}\n{END}", text, flags=re.S)
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text)
        print(f"wrote {DOC}")
    return 0 if all(c.endswith("PASS") for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

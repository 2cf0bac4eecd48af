#!/usr/bin/env python
"""Bring-your-own-model speed: timm's DeiT-tiny with one approximate table in every GEMM
against the same model in fp32, side by side.

The model is ``deit_tiny_patch16_224`` (random weights, ``pretrained=False``), a batch of
8 images of 224x224. For each table, `axsa.models.byom.approximate` routes its 74 GEMMs
(every Linear, the patch Conv2d, both attention products of every block) through that
table; the fp32 forward and the approximate forward (fake-quant mode under
``torch.no_grad``, what an evaluation runs) are timed alternately, rounds of one call
each after three warm-up calls (the emulation picks its engines on the first two), and
the medians are compared. Times are CPU time of this thread (``time.thread_time``) at
``--threads`` torch threads (default 1), so other jobs on a shared machine disturb the
ratio little.

Targets (issue 14): ratio <= 2 for tables whose error ``lut - a*b`` has rank <= 8, <= 10
for any table (the rank as scripts/bench_emulation.py computes it).

    .venv/bin/python scripts/bench_byom.py                 # batch 8, 5 rounds
    .venv/bin/python scripts/bench_byom.py --quick         # batch 1, 1 round: a smoke run
    .venv/bin/python scripts/bench_byom.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from axsa.models.approx import ProductTable  # noqa: E402
from axsa.models.byom import approximate  # noqa: E402
from axsa.models.vision import import_timm  # noqa: E402
from axsa.rtl.multipliers import parse_spec  # noqa: E402
from bench_emulation import error_rank  # noqa: E402

from axsa.errors import InputError  # noqa: E402

#: (label, spec or None for the random table)
TABLES = [("exact@s8", "exact@s8"), ("drum(k=4)@s8", "drum(k=4)@s8"),
          ("trunc(k=4)@s8", "trunc(k=4)@s8"), ("mitchell@s8", "mitchell@s8"),
          ("random@s8", None)]


def random_table(seed: int = 0) -> ProductTable:
    """Signed 8-bit products plus uniform noise: an error of full rank."""
    v = np.arange(256)
    v = np.where(v < 128, v, v - 256)
    rng = np.random.default_rng(seed)
    lut = np.outer(v, v) + rng.integers(-512, 513, (256, 256))
    return ProductTable(lut, signed=True, name="random@s8")


def table_of(label: str, spec: str | None) -> ProductTable:
    return random_table() if spec is None else ProductTable.from_multiplier(parse_spec(spec))


def target(rank: int) -> float:
    return 2.0 if rank <= 8 else 10.0


def cpu_time(fn) -> float:
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 1, 1 round, two tables")
    ap.add_argument("--batch", type=int, default=None, help="images (default 8)")
    ap.add_argument("--rounds", type=int, default=None, help="default 5 (1 with --quick)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        timm = import_timm()
    except InputError as exc:
        print(f"bench_byom: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    batch = args.batch or (1 if args.quick else 8)
    rounds = args.rounds or (1 if args.quick else 5)
    tables = TABLES[1:2] + TABLES[3:4] if args.quick else TABLES
    torch.manual_seed(0)
    net = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    x = torch.randn(batch, 3, 224, 224)
    base = approximate(net, [x])
    rows = []
    for label, spec in tables:
        table = table_of(label, spec)
        rank = error_rank(table)
        model = approximate(net, [x])
        model.load_state_dict(base.state_dict())      # the same scales for every table
        model.hook.assign({n: table for n in model.gemm_names()})
        with torch.no_grad():
            for _ in range(3):
                model(x)
            fp32, approx = [], []
            for _ in range(rounds):
                fp32.append(cpu_time(lambda: net(x)))
                approx.append(cpu_time(lambda m=model: m(x)))
        f, a = float(np.median(fp32)), float(np.median(approx))
        rows.append({"table": label, "error_rank": rank, "batch": batch,
                     "threads": args.threads, "rounds": rounds, "fp32_ms": 1e3 * f,
                     "approx_ms": 1e3 * a, "ratio": a / f, "target": target(rank),
                     "ok": a / f <= target(rank)})
        if not args.json:
            r = rows[-1]
            print(f"{label:16} rank {rank:>3}  fp32 {r['fp32_ms']:8.1f} ms  approx "
                  f"{r['approx_ms']:8.1f} ms  ratio {r['ratio']:5.2f}  target "
                  f"<= {r['target']:g}  {'ok' if r['ok'] else 'MISSED'}", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

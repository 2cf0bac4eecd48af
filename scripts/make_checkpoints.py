#!/usr/bin/env python
"""Reproduce the demo checkpoints shipped in models/checkpoints/ (ts.pt, vit.pt).

Each is an 8-bit QAT model trained from a fixed seed with the default settings of
`axsa train` (axsa.models.train.default_train_config); deterministic, a few minutes on
one CPU core:

    .venv/bin/python scripts/make_checkpoints.py [--out models/checkpoints] [--only ts]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from axsa.models import train as T

SEEDS = {"ts": 0, "vit": 0}
BITS = 8


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "models"
                                         / "checkpoints"))
    ap.add_argument("--only", choices=T.KINDS, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for kind in ([args.only] if args.only else T.KINDS):
        t0 = time.time()
        tc = T.TrainConfig(**{**T.default_train_config(kind).__dict__, "seed": SEEDS[kind]})

        def progress(phase, ep, total, rec, kind=kind):
            print(f"\r{kind} {phase} epoch {ep}/{total}", end="", file=sys.stderr, flush=True)
        model, _ = T.fit(kind, BITS, tc, progress=progress)
        print(file=sys.stderr)
        ds = T.load_data(kind, model=model)
        res = T.evaluate(model, ds)
        path = T.save_checkpoint(model, Path(args.out) / f"{kind}.pt", meta={
            "seed": SEEDS[kind], "epochs": tc.epochs, "qat_epochs": tc.qat_epochs,
            "test": res})
        print(f"{kind}: {path} {path.stat().st_size} bytes, {time.time() - t0:.0f} s, "
              f"test {res}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

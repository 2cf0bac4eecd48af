"""Approximate-aware fine-tuning on a small case recovers at least half of the loss."""

import torch
from axsa.models import train as T
from axsa.models.approx import ProductTable
from axsa.rtl.multipliers import parse_spec

torch.set_num_threads(1)


def test_finetuning_recovers_half_of_the_rmse_lost():
    ds = T.load_data("ts")
    model, _ = T.fit("ts", 8, T.TrainConfig(epochs=3, qat_epochs=1, calib_batches=4), ds=ds,
                     d_model=16, ff=32)
    table = ProductTable.from_multiplier(parse_spec("trunc(k=8)@s8"))
    tables = {n: table for n in model.gemm_names()}
    exact = T.metrics(model, ds.test, "integer")["rmse"]
    model.hook.assign(tables)
    before = T.metrics(model, ds.test, "integer")["rmse"]
    assert before > exact * 1.2          # the assignment really hurts
    T.finetune(model, ds, tables, epochs=2, lr=1e-3)
    model.hook.assign(tables)
    after = T.metrics(model, ds.test, "integer")["rmse"]
    assert before - after >= 0.5 * (before - exact)

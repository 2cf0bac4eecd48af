"""`axsa train`, `axsa eval`, `axsa finetune`: the quantized transformers of axsa.models.

torch and the multiplier library are imported inside the commands so that `axsa --help`
stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from axsa.errors import InputError

from ._common import emit, json_option

MODEL_KINDS = ("ts", "vit")

model_option = click.option("--model", "kind", type=click.Choice(MODEL_KINDS),
                            help="ts: co2 forecaster; vit: tiny ViT on digits.")
csv_option = click.option("--csv", "csv_path", type=click.Path(dir_okay=False),
                          help="ts only: a CSV series (date column + value columns) "
                               "instead of co2.")
date_option = click.option("--date-column", help="Date column of --csv (default: 'date' "
                                                 "or the first column).")
columns_option = click.option("--columns", help="Comma-separated value columns of --csv "
                                                "(default: all but the date column).")


def _source(kind, csv_path, date_column, columns, fallback=None):
    if csv_path is None:
        if date_column or columns:
            raise InputError("--date-column and --columns need --csv")
        return fallback
    if kind != "ts":
        raise InputError(f"--csv is for --model ts, not {kind!r}")
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    return {"source": "csv", "path": str(Path(csv_path).resolve()),
            "date_column": date_column, "columns": cols}


def _progress():
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                    console=Console(file=sys.stderr))


def _epoch_info(rec: dict) -> str:
    if "rmse" in rec:
        return f"loss {rec['loss']:.4f} val rmse {rec['rmse']:.4f}"
    return f"loss {rec['loss']:.4f} val top-1 {100 * rec['top1']:.1f}%"


ckpt_option = click.option("--ckpt", type=click.Path(dir_okay=False), default=None,
                           help="Checkpoint (default: the demo checkpoint shipped with axsa).")
mult_option = click.option("--mult", default=None, help="One multiplier spec for every GEMM.")
assign_option = click.option(
    "--assign", default=None, type=click.Path(dir_okay=False),
    help='JSON file {gemm name: spec} (or {"spec": ..., "mode": m}); GEMMs not named '
         "multiply exactly.")


torch_model_option = click.option(
    "--torch-model", default=None, metavar="MODULE:FACTORY",
    help="Your own PyTorch model: 'package.module:factory' or 'path/to/file.py:factory', "
         "a function returning the fp32 nn.Module (docs/models.md); needs --data.")
#: --data of eval and finetune (`axsa search` splits the rest into validation and test)
DATA_HELP = ("--torch-model only: .npz with 'x' (inputs) and 'y' (integer labels); the first "
             "--calib samples calibrate, the rest are evaluated.")


def _data_option(help_text: str):
    return click.option("--data", "data_path", default=None,
                        type=click.Path(dir_okay=False), help=help_text)


calib_option = click.option(
    "--calib", type=int, default=256, show_default=True,
    help="--torch-model only: samples at the front of --data that calibrate the "
         "quantization (and are fine-tuning's training data).")
bits_option = click.option("--bits", type=click.IntRange(2, 8), default=None,
                           help="--torch-model only: bits of every GEMM operand (default 8).")
observer_option = click.option(
    "--observer", "observer", type=click.Choice(["minmax", "percentile"]), default=None,
    help="--torch-model only: activation scales from the largest magnitude (default) or "
         "a percentile of |x|.")
percentile_option = click.option(
    "--percentile", type=float, default=None,
    help="--torch-model only: the percentile of --observer percentile (default 99.99).")


def torch_model_options(f=None, *, data_help: str = DATA_HELP):
    """The options of a user's own model (`axsa.models.byom`), shared by eval, finetune
    and search (which gives its own --data help)."""
    def add(f):
        for opt in reversed((torch_model_option, _data_option(data_help), calib_option,
                             bits_option, observer_option, percentile_option)):
            f = opt(f)
        return f
    return add(f) if f is not None else add


def no_torch_model_options(**given):
    """InputError naming the --torch-model options given (not None) without it."""
    bad = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
    if bad:
        raise InputError(f"{', '.join(bad)} need(s) --torch-model")


def assignment_entries(model, mult: str | None, assign: str | None):
    """(entries, source) of --mult / --assign for `axsa.models.assignment`; (None, None)
    when neither is given."""
    if mult is not None and assign is not None:
        raise InputError("give either --mult or --assign, not both")
    from axsa.models import assignment as A
    if mult is not None:
        return A.uniform_assignment(model, mult), "--mult"
    if assign is not None:
        return A.read_assignment(assign), f"assignment file {assign!r}"
    return None, None


def _assignment(model, mult: str | None, assign: str | None):
    """(tables {gemm: ProductTable}, shown {gemm: spec}) from --mult / --assign, through
    `axsa.models.assignment` (which checks them against the model)."""
    entries, source = assignment_entries(model, mult, assign)
    if entries is None:
        return None, None
    from axsa.models import assignment as A
    resolved = A.resolve_assignment(model, entries, source)
    return resolved.tables, resolved.specs


def _print_metrics(kind: str, res: dict) -> None:
    for mode, m in res.items():
        if kind == "ts":
            click.echo(f"{mode:>11}: RMSE {m['rmse']:.4f}  MAE {m['mae']:.4f}")
        else:
            click.echo(f"{mode:>11}: top-1 {100 * m['top1']:.2f}%")


@click.command()
@model_option
@click.option("--bits", type=click.IntRange(2, 8), default=8, show_default=True,
              help="Bits of every GEMM operand and activation.")
@click.option("--epochs", type=click.IntRange(0), default=None,
              help="fp32 pre-training epochs (default 60 ts, 80 vit).")
@click.option("--qat-epochs", type=click.IntRange(0), default=None,
              help="Quantization-aware training epochs (default 30 ts, 20 vit).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--d-model", type=click.IntRange(1), default=None)
@click.option("--heads", type=click.IntRange(1), default=None)
@click.option("--layers", type=click.IntRange(1), default=None)
@click.option("--ff", type=click.IntRange(1), default=None, help="FFN hidden width.")
@click.option("--window", type=click.IntRange(1), default=None, help="ts only.")
@click.option("--horizon", type=click.IntRange(1), default=None, help="ts only.")
@click.option("--observer", type=click.Choice(["minmax", "ema", "percentile"]), default=None)
@csv_option
@date_option
@columns_option
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint file to write.")
@json_option
def train(kind, bits, epochs, qat_epochs, seed, d_model, heads, layers, ff, window, horizon,
          observer, csv_path, date_column, columns, out, as_json):
    """Train a model in fp32, then with quantization-aware training at --bits."""
    if kind is None:
        raise InputError("--model is required (ts or vit)")
    import torch

    from axsa.models import train as T
    T.check_run(1.0, seed=seed)       # a bad seed is an InputError, before torch sees it
    torch.manual_seed(seed)
    cfg = {k: v for k, v in dict(d_model=d_model, heads=heads, layers=layers, ff=ff,
                                 observer=observer).items() if v is not None}
    if kind == "ts":
        cfg.update({k: v for k, v in dict(window=window, horizon=horizon).items()
                    if v is not None})
    elif window is not None or horizon is not None:
        raise InputError("--window and --horizon are for --model ts")
    source = _source(kind, csv_path, date_column, columns, {"source": "co2"}
                     if kind == "ts" else {"source": "digits"})
    if source["source"] == "csv":
        from axsa.models import data as D
        values, _ = D.load_csv(source["path"], source["date_column"], source["columns"])
        cfg["channels"] = values.shape[1]
    defaults = T.default_train_config(kind)
    tc = T.TrainConfig(**{**defaults.__dict__, "seed": seed,
                          **({"epochs": epochs} if epochs is not None else {}),
                          **({"qat_epochs": qat_epochs} if qat_epochs is not None else {})})
    try:
        probe = T.build_model(kind, bits=bits, **cfg)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    ds = T.load_data(kind, source, probe)
    with _progress() as bar:
        tasks = {"fp32": bar.add_task("fp32 training", total=tc.epochs, info=""),
                 "qat": bar.add_task(f"QAT {bits}-bit", total=tc.qat_epochs, info="")}

        def progress(phase, ep, total, rec):
            bar.update(tasks[phase], completed=ep, info=_epoch_info(rec))
        model, hist = T.fit(kind, bits, tc, ds=ds, progress=progress, **cfg)
    res = T.evaluate(model, ds)
    path = T.save_checkpoint(model, out, source, {"seed": seed, "epochs": tc.epochs,
                                                  "qat_epochs": tc.qat_epochs, "test": res})
    data = {"model": kind, "bits": bits, "checkpoint": str(path),
            "size_bytes": path.stat().st_size, "config": model.config.to_dict(), **res}
    emit(data, as_json, lambda d: (click.echo(f"wrote {d['checkpoint']} "
                                              f"({d['size_bytes']} bytes)"),
                                   _print_metrics(kind, res)))


@click.command("eval")
@model_option
@torch_model_options
@ckpt_option
@mult_option
@assign_option
@click.option("--list-gemms", is_flag=True, help="List the model's GEMMs and exit.")
@click.option("--record", "record_dir", type=click.Path(file_okay=False), default=None,
              help="Write each GEMM's integer operand streams (<gemm>.npz) to this folder.")
@click.option("--samples", type=click.IntRange(1), default=1, show_default=True,
              help="Test samples whose GEMM operands --record writes.")
@click.option("--export", "export_path", type=click.Path(dir_okay=False), default=None,
              help="Write the integer model (weights, biases, m, s per GEMM) as .npz.")
@csv_option
@date_option
@columns_option
@json_option
def eval_(kind, torch_model, data_path, calib, bits, observer, percentile, ckpt, mult, assign,
          list_gemms, record_dir, samples, export_path, csv_path, date_column, columns,
          as_json):
    """Metrics in fp32, fake-quant, integer and (with --mult/--assign) approximate mode.

    Of a built-in model (--model / --ckpt), or of your own PyTorch model (--torch-model
    with --data): every Linear, Conv2d and attention product routed, post-training
    quantized at --bits."""
    if torch_model is not None:
        return _eval_torch_model(torch_model, data_path, calib, bits, observer, percentile,
                                 ckpt, kind, mult, assign, list_gemms, record_dir, samples,
                                 export_path, csv_path, as_json)
    no_torch_model_options(data=data_path, bits=bits, observer=observer,
                            percentile=percentile)
    if kind is None and ckpt is None:
        raise InputError("give --model (ts or vit) or --ckpt")
    from axsa.models import train as T
    model, source, meta = T.load_checkpoint(ckpt, kind)
    kind = model.kind
    if list_gemms:
        ds = T.load_data(kind, _source(kind, csv_path, date_column, columns, source), model)
        T.predict(model, ds.test.x[:1], "integer")
        rows = [{"name": n, "shape": list(model.hook.shapes[n])} for n in model.gemm_names()]
        emit({"model": kind, "bits": model.config.bits, "gemms": rows}, as_json,
             lambda d: [click.echo(f"{r['name']:<22} G,M,K,N = {tuple(r['shape'])}")
                        for r in d["gemms"]])
        return
    tables, shown = _assignment(model, mult, assign)
    ds = T.load_data(kind, _source(kind, csv_path, date_column, columns, source), model)
    res = T.evaluate(model, ds, tables)
    data = {"model": kind, "bits": model.config.bits, "checkpoint": str(
        ckpt or T.demo_checkpoint(kind)), **res}
    if shown is not None:
        data["assignment"] = shown
    if record_dir is not None:
        recs = T.record_streams(model, ds.test.x[:samples], tables)
        data["streams"] = [str(p) for p in model.hook.save_streams(recs, record_dir)]
    if export_path is not None:
        import numpy as np
        arrays = T.export_integer(model)
        Path(export_path).parent.mkdir(parents=True, exist_ok=True)
        np.savez(export_path, **arrays)
        data["export"] = str(export_path)

    def human(d):
        click.echo(f"{kind} model, {d['bits']}-bit, {d['checkpoint']}")
        _print_metrics(kind, res)
        if "streams" in d:
            click.echo(f"wrote {len(d['streams'])} operand stream files to {record_dir}")
        if "export" in d:
            click.echo(f"wrote the integer model to {d['export']}")
    emit(data, as_json, human)


def _list_gemms(model, x, as_json, extra: dict) -> None:
    from axsa.models import train as T
    T.predict(model, x, "integer")
    rows = [{"name": n, "shape": list(model.hook.shapes[n])} for n in model.gemm_names()
            if n in model.hook.shapes]
    emit({**extra, "bits": model.config.bits, "gemms": rows}, as_json,
         lambda d: [click.echo(f"{r['name']:<22} G,M,K,N = {tuple(r['shape'])}")
                    for r in d["gemms"]])


def _eval_torch_model(spec, data_path, calib, bits, observer, percentile, ckpt, kind, mult,
                      assign, list_gemms, record_dir, samples, export_path, csv_path,
                      as_json):
    """`axsa eval --torch-model` (axsa.models.byom)."""
    if kind is not None or export_path is not None or csv_path is not None:
        raise InputError("--torch-model takes no --model, --export or --csv")
    from axsa.models import byom as B
    from axsa.models import train as T
    model, ds = B.load_torch_model(spec, data_path, calib, bits, observer, percentile, ckpt)
    head = {"torch_model": spec, "data": str(data_path), "calib": calib}
    if list_gemms:
        _list_gemms(model, ds.test.x[:1], as_json, head)
        return
    tables, shown = _assignment(model, mult, assign)
    res = T.evaluate(model, ds, tables)
    data = {**head, "bits": model.config.bits, "observer": model.config.observer,
            "test_samples": len(ds.test), **res}
    if ckpt is not None:
        data["checkpoint"] = str(ckpt)
    if shown is not None:
        data["assignment"] = shown
    if record_dir is not None:
        recs = T.record_streams(model, ds.test.x[:samples], tables)
        data["streams"] = [str(p) for p in model.hook.save_streams(recs, record_dir)]

    def human(d):
        click.echo(f"{spec}, {d['bits']}-bit, calibrated on {calib} samples of {data_path}, "
                   f"{d['test_samples']} evaluated")
        _print_metrics("classifier", res)
        if "streams" in d:
            click.echo(f"wrote {len(d['streams'])} operand stream files to {record_dir}")
    emit(data, as_json, human)


@click.command()
@model_option
@torch_model_options
@click.option("--list-gemms", is_flag=True,
              help="--torch-model only: list the model's GEMMs and exit.")
@click.option("--ckpt", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint to start from (default: the demo checkpoint).")
@click.option("--assign", default=None, type=click.Path(dir_okay=False),
              help="JSON file {gemm name: spec}.")
@click.option("--mult", default=None, help="One multiplier spec for every GEMM.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True,
              help="Learning rate (positive, finite).")
@click.option("--grad", type=click.Choice(["ste", "table"]), default="ste", show_default=True,
              help="Gradient of approximate GEMMs: straight-through or table differences.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@json_option
def finetune(kind, torch_model, data_path, calib, bits, observer, percentile, list_gemms, ckpt,
             assign, mult, epochs, lr, grad, seed, out, as_json):
    """Approximate-aware fine-tuning: QAT with the assigned multipliers in the loop.

    With --torch-model and --data: your own PyTorch model, trained on the first --calib
    samples (the epoch of best accuracy on them is kept), measured on the rest."""
    if torch_model is not None:
        return _finetune_torch_model(torch_model, data_path, calib, bits, observer,
                                     percentile, list_gemms, kind, ckpt, assign, mult,
                                     epochs, lr, grad, seed, out, as_json)
    no_torch_model_options(data=data_path, bits=bits, observer=observer,
                            percentile=percentile, list_gemms=list_gemms or None)
    if kind is None and ckpt is None:
        raise InputError("give --model (ts or vit) or --ckpt")
    if assign is None and mult is None:
        raise InputError("finetune needs --assign FILE.json (or --mult SPEC)")
    import torch

    from axsa.models import train as T
    T.check_run(lr, seed=seed)         # --lr nan, inf, <= 0 and bad seeds, before any work
    torch.manual_seed(seed)
    model, source, meta = T.load_checkpoint(ckpt, kind)
    kind = model.kind
    tables, shown = _assignment(model, mult, assign)
    ds = T.load_data(kind, source, model)
    before = T.evaluate(model, ds, tables)
    with _progress() as bar:
        task = bar.add_task("approximate-aware fine-tuning", total=epochs, info="")
        T.finetune(model, ds, tables, epochs, lr, seed=seed, grad=grad,
                   progress=lambda ep, rec: bar.update(task, completed=ep,
                                                       info=_epoch_info(rec)))
    after = T.evaluate(model, ds, tables)
    path = T.save_checkpoint(model, out, source, {**meta, "finetuned": {
        "assignment": shown, "epochs": epochs, "lr": lr, "grad": grad, "test": after}})
    data = {"model": kind, "checkpoint": str(path), "assignment": shown,
            "before": before, "after": after}

    def human(d):
        click.echo(f"wrote {d['checkpoint']}")
        click.echo("before:")
        _print_metrics(kind, before)
        click.echo("after:")
        _print_metrics(kind, after)
    emit(data, as_json, human)


def _finetune_torch_model(spec, data_path, calib, bits, observer, percentile, list_gemms,
                          kind, ckpt, assign, mult, epochs, lr, grad, seed, out, as_json):
    """`axsa finetune --torch-model` (axsa.models.byom)."""
    if kind is not None:
        raise InputError("--torch-model takes no --model")
    import torch

    from axsa.models import byom as B
    from axsa.models import train as T
    T.check_run(lr, seed=seed)
    torch.manual_seed(seed)
    model, ds = B.load_torch_model(spec, data_path, calib, bits, observer, percentile, ckpt)
    head = {"torch_model": spec, "data": str(data_path), "calib": calib}
    if list_gemms:
        _list_gemms(model, ds.test.x[:1], as_json, head)
        return
    if assign is None and mult is None:
        raise InputError("finetune needs --assign FILE.json (or --mult SPEC)")
    tables, shown = _assignment(model, mult, assign)
    before = T.evaluate(model, ds, tables)
    with _progress() as bar:
        task = bar.add_task("approximate-aware fine-tuning", total=epochs, info="")
        B.checked_run(lambda: T.finetune(
            model, ds, tables, epochs, lr, seed=seed, grad=grad,
            progress=lambda ep, rec: bar.update(task, completed=ep, info=_epoch_info(rec))),
            f"fine-tuning the model of {spec!r}")
    after = T.evaluate(model, ds, tables)
    path = B.save_checkpoint(model, out, spec, {"assignment": shown, "epochs": epochs,
                                                "lr": lr, "grad": grad, "calib": calib,
                                                "data": str(data_path), "test": after})
    data = {**head, "checkpoint": str(path), "assignment": shown, "before": before,
            "after": after}

    def human(d):
        click.echo(f"wrote {d['checkpoint']} (axsa eval --torch-model {spec} --ckpt ...)")
        click.echo("before:")
        _print_metrics("classifier", before)
        click.echo("after:")
        _print_metrics("classifier", after)
    emit(data, as_json, human)

"""`axsa search`: per-GEMM multiplier assignments by MCTS (or a baseline), with the
Pareto front, a plot and the chosen assignment as a file `--assign` takes."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import emit, json_option, progress_bar
from .model import no_torch_model_options, torch_model_options

#: --data of `axsa search --torch-model`: how the file splits (axsa.models.byom.search_splits)
SEARCH_DATA_HELP = (
    "--torch-model only: .npz with 'x' (inputs) and 'y' (integer labels); the first "
    "--calib samples calibrate, the rest alternate validation (the search's accuracy: "
    "samples calib, calib+2, ...) and test (calib+1, calib+3, ...; the final front).")


@click.command()
@click.option("--model", "kind", type=click.Choice(["ts", "vit"]),
              help="ts: co2 forecaster; vit: tiny ViT on digits.")
@torch_model_options(data_help=SEARCH_DATA_HELP)
@click.option("--ckpt", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint (default: the demo checkpoint shipped with axsa); with "
                   "--torch-model, a state `axsa finetune --torch-model --out` wrote.")
@click.option("--candidates", default=None,
              help="Comma-separated specs, SPEC#MODE for one mode of a configurable "
                   "multiplier (default: about 15 specs over several families and "
                   "cfgtrunc's modes; the exact multiplier is always added).")
@click.option("--budget", type=int, default=64, show_default=True,
              help="Distinct assignments evaluated.")
@click.option("--accuracy-budget", type=float, default=0.02, show_default=True,
              help="Largest relative accuracy loss vs all-exact (0.02: 2% worse RMSE or "
                   "2% lower top-1), validation split.")
@click.option("--method", type=click.Choice(["mcts", "random", "greedy", "nsga2"]),
              default="mcts", show_default=True)
@click.option("--compare", is_flag=True,
              help="Also run the other methods on the same budget; their fronts in the plot.")
@click.option("--target", type=click.Choice(["generic", "ice40", "ecp5"]), default=None,
              help="Also report the array's multiplier area on this target.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-j", "--jobs", type=int, default=1, show_default=True,
              help="Local worker processes for accuracy evaluations.")
@click.option("--dask", "dask_address", metavar="ADDRESS",
              help="Evaluate on an existing Dask cluster (scheduler address).")
@click.option("--finetune-top", type=int, default=0, show_default=True,
              help="Fine-tune the K lowest-energy front points (validation loss within "
                   "twice the budget) and re-measure them.")
@click.option("--db", type=click.Path(dir_okay=False),
              help="Results store (default $AXSA_DB or .axsa/results.sqlite).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".axsa/search",
              show_default=True,
              help="Folder for front.json/.csv/.png and assignment.json.")
@json_option
def search(kind, torch_model, data_path, calib, bits, observer, percentile, ckpt, candidates,
           budget, accuracy_budget, method, compare, target, seed, jobs, dask_address,
           finetune_top, db, out_dir, as_json):
    """Search per-GEMM multiplier assignments: lowest multiplier energy per inference
    within an accuracy budget.

    Of a built-in model (--model / --ckpt) or of your own PyTorch model (--torch-model
    with --data, calibrated as `axsa eval --torch-model` does; top-1 on the validation
    part of --data, see --data).

    \b
    Example:
      axsa search --model ts --budget 64 --compare
      axsa eval --model ts --assign .axsa/search/assignment.json
      axsa search --torch-model axsa.examples.digits_cnn:factory --data digits.npz \\
          --calib 1257 --budget 32
    """
    from axsa.errors import InputError
    from axsa.search.job import SearchJob
    from axsa.search.parallel import ModelSource
    from axsa.store import Store

    if torch_model is not None:
        if kind is not None:
            raise InputError("--torch-model takes no --model")
        source = ModelSource.byom(torch_model, data_path, calib, bits, observer, percentile,
                                  ckpt)
    else:
        no_torch_model_options(data=data_path, bits=bits, observer=observer,
                               percentile=percentile)
        if kind is None and ckpt is None:
            raise InputError("give --model (ts or vit), --ckpt or --torch-model")
        source = ModelSource.builtin(kind, ckpt)
    job = SearchJob(source, candidates, budget, accuracy_budget, method, compare, target,
                    seed, jobs, dask_address, finetune_top, out=Path(out_dir))
    job.check()
    store = Store(db)
    bar = progress_bar()
    with bar:
        tasks = {}

        def progress(what, done, total):
            if what not in tasks:
                label = "cost model" if what == "costs" else f"{what} evaluations"
                tasks[what] = bar.add_task(label, total=total)
            bar.update(tasks[what], completed=done)
            if not bar.console.is_terminal and done == total:
                click.echo(f"search: {what} {done}/{total}", err=True)

        data = job.run(store, progress)
    data["db"] = str(store.path)
    emit(data, as_json, _show)


def _show(d: dict) -> None:
    metric = d["metric"]
    click.echo(f"{d['model']}: {d['method']}, {d['evaluations']} evaluations (seed "
               f"{d['seed']}), hypervolume {d['hypervolume']:.5f} (reference point "
               f"{tuple(d['reference_point'])})")
    click.echo(f"{'delta val':>9} {'delta test':>10} {'energy':>7} {'PE energy':>9} "
               f"{metric + ' test':>10}  assignment")
    for p in d["pareto"]:
        shown = ", ".join(f"{g}={label}" for g, label in p["approximate"].items()) \
            or "all exact"
        click.echo(f"{100 * p['delta']:8.2f}% {100 * p['metric']['test_delta']:9.2f}% "
                   f"{p['energy_ratio']:7.3f} {p['pe_energy_ratio']:9.3f} "
                   f"{p['metric']['test'][metric]:10.4f}  {shown}")
    if d.get("compare"):
        for m, c in d["compare"].items():
            click.echo(f"  {m:7s} hypervolume {c['hypervolume']:.5f} "
                       f"({c['evaluations']} evaluations)")
    if d.get("chosen"):
        c = d["chosen"]
        click.echo(f"chosen: energy {c['energy_ratio']:.3f} of all-exact at "
                   f"{100 * c['delta']:.2f}% validation / "
                   f"{100 * c['metric']['test_delta']:.2f}% test loss")
    else:
        click.echo("no evaluated assignment is within the accuracy budget")
    click.echo("files: " + ", ".join(d["files"]))

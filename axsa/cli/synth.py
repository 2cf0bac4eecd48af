"""`axsa synth` (one design on one target) and `axsa sweep` (many, in parallel).

Heavy modules (Amaranth, the synth package, matplotlib, dask) load inside the commands,
so `axsa --help` and `axsa synth --help` stay fast; torch is never imported here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from axsa.errors import InputError
from axsa.processes import sigterm_as_interrupt

from ._common import emit, json_option

TARGETS = ("generic", "ice40", "ecp5")  # mirrors axsa.synth.targets (not imported: start-up)
UNITS = ("mult", "mac", "pe")

db_option = click.option("--db", type=click.Path(dir_okay=False),
                         help="Results store (default $AXSA_DB or .axsa/results.sqlite).")
unit_option = click.option("--unit", type=click.Choice(UNITS), default="mult", show_default=True,
                           help="Bare multiplier, MAC (multiplier + accumulator) or "
                                "systolic PE.")
acc_option = click.option("--acc-width", type=int, default=None,
                          help="Accumulator width of a MAC or PE [default: "
                               "axsa.formats.DEFAULT_ACC_WIDTH, 24].")
stream_option = click.option("--stream", "stream_path", type=click.Path(dir_okay=False),
                             help="Operand stream for energy: .npy (n, 2) operand values, or "
                                  ".npz with arrays a, b (and optional clr). "
                                  "Default: 10,000 uniform random pairs.")
glitch_option = click.option("--glitches", is_flag=True,
                              help="Energy from unit-delay toggles (glitches counted) "
                                   "instead of zero-delay ones.")
dsp_option = click.option("--dsp", is_flag=True,
                          help="Let FPGA synthesis map multiplications ($mul cells) to DSP "
                               "blocks (ice40: -dsp; ecp5 maps them unless this is off).")


def _store(db):
    from axsa.store import Store
    return Store(db)


def _stream(path, fmt):
    if path is None:
        return None
    from axsa.synth.energy import load_stream
    return load_stream(path, fmt)


@click.command()
@click.argument("spec")
@click.option("--target", type=click.Choice(TARGETS), default="generic", show_default=True)
@dsp_option
@unit_option
@acc_option
@click.option("--mode", type=int, default=0, show_default=True,
              help="Runtime mode of a mode-configurable multiplier (cfgtrunc).")
@click.option("--reduction", type=int, default=64, show_default=True,
              help="MAC energy: clear the accumulator every this many operations when the "
                   "stream has no clr.")
@click.option("--no-fmax", is_flag=True, help="FPGA targets: skip place-and-route (no Fmax).")
@stream_option
@glitch_option
@db_option
@click.option("--no-store", is_flag=True, help="Compute afresh; neither read nor write the store.")
@json_option
def synth(spec, target, dsp, unit, acc_width, mode, reduction, no_fmax, stream_path, glitches,
          db, no_store, as_json):
    """Synthesize SPEC on a target: area, delay, energy and error metrics.

    \b
    Examples:
      axsa synth 'exact@s8' --target ice40 --json
      axsa synth 'drum(k=4)@s8' --stream gemm0.npz
    """
    from axsa.synth.characterize import Request, characterize

    acc_width = _acc_width(acc_width)
    request = Request(spec, target, dsp=dsp, unit=unit, acc_width=acc_width, mode=mode,
                      reduction=reduction, fmax=not no_fmax, glitches=glitches)
    mult = request.multiplier()
    stream = _stream(stream_path, mult.fmt)
    _status(f"characterizing {mult.spec} on {target}")
    result = characterize(request, stream, store=None if no_store else _store(db))
    result = {k: v for k, v in result.items()}
    emit(result, as_json, _show_one)


def _acc_width(given: int | None) -> int:
    from axsa.formats import DEFAULT_ACC_WIDTH
    return DEFAULT_ACC_WIDTH if given is None else given


def _status(text: str) -> None:
    if sys.stderr.isatty():
        click.echo(text + " ...", err=True)


def _show_one(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"{r['spec']} on {r['target']} ({r['unit']})", show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    units = {"energy": "fJ/op", "energy_dynamic": "fJ/op", "energy_leakage": "fJ/op",
             "fmax_mhz": "MHz"}
    for k, v in r.items():
        if k in ("spec", "target", "unit"):
            continue
        if isinstance(v, dict):
            v = ", ".join(f"{a.strip('$_')}={b}" for a, b in v.items())
        elif isinstance(v, float):
            v = f"{v:.6g}"
        t.add_row(k, f"{v} {units.get(k, '')}".strip())
    Console().print(t)


def _csv(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


@click.command()
@click.option("--families", default="",
              help="Family grid, e.g. 'exact,trunc(k=2..8),bam(h=0|2,v=4..6)'; a bare family "
                   "sweeps every value of its required parameters.")
@click.option("--formats", default="", help="Comma-separated formats, e.g. 's8,u8,s4'.")
@click.option("--targets", default="generic", show_default=True,
              help="Comma-separated targets: generic, ice40, ecp5.")
@click.option("--spec", "specs", multiple=True, help="An extra design (repeatable).")
@dsp_option
@unit_option
@acc_option
@click.option("--no-fmax", is_flag=True, help="FPGA targets: skip place-and-route (no Fmax).")
@stream_option
@glitch_option
@click.option("-j", "--jobs", type=int, default=1, show_default=True,
              help="Local worker processes.")
@click.option("--dask", "dask_address", metavar="ADDRESS",
              help="Run on an existing Dask cluster (scheduler address, e.g. tcp://host:8786).")
@db_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".axsa/sweep",
              show_default=True, help="Folder for results.csv/.json, summary.md, Pareto PNGs.")
@click.option("--no-plots", is_flag=True, help="Skip the Pareto PNGs.")
@click.option("--dry-run", is_flag=True, help="List the designs, run nothing.")
@json_option
def sweep(families, formats, targets, specs, dsp, unit, acc_width, no_fmax, stream_path,
          glitches, jobs, dask_address, db, out_dir, no_plots, dry_run, as_json):
    """Characterize many designs in parallel; results go to the store (resumable), then to
    CSV/JSON, a cost-vs-error table and Pareto plots.

    \b
    Example:
      axsa sweep --families 'exact,trunc,drum' --formats s8,u8 -j 2
    """
    from axsa.synth import report
    from axsa.synth import sweep as sweeps

    if jobs < 1:
        raise InputError(f"--jobs {jobs} must be at least 1")
    the_plan = sweeps.plan(families, _csv(formats), _csv(targets), dsp=dsp, unit=unit,
                           acc_width=_acc_width(acc_width), specs=specs, fmax=not no_fmax,
                           glitches=glitches)
    requests = the_plan.requests
    if dry_run:
        data = {"designs": [{"spec": r.spec, "target": r.target} for r in requests],
                "skipped": [{"spec": s, "reason": why} for s, why in the_plan.skipped]}
        emit(data, as_json, lambda d: [click.echo(f"{x['spec']}  {x['target']}")
                                       for x in d["designs"]])
        return
    streams = {}
    if stream_path:
        for fmt in {r.multiplier().fmt: None for r in requests}:
            streams[str(fmt)] = _stream(stream_path, fmt)
    store = _store(db)
    # SIGTERM ends a sweep as Ctrl-C does: workers stopped, finished results kept
    with sigterm_as_interrupt():
        outcome = _run_with_bar(sweeps, requests, store, streams, jobs, dask_address)
    exported = report.export(outcome.results, Path(out_dir), plots=not no_plots)
    data = {
        "designs": len(requests), "cached": outcome.cached, "computed": outcome.computed,
        "failed": [{"spec": r.spec, "target": r.target, "error": e}
                   for r, e in outcome.failures],
        "skipped": [{"spec": s, "reason": why} for s, why in the_plan.skipped],
        "seconds": round(outcome.seconds, 2), "db": str(store.path),
        "files": exported["files"], "summary": report.summary(exported["rows"]),
    }
    emit(data, as_json, _show_sweep)
    if outcome.failures:
        from axsa.errors import ToolError
        raise ToolError(f"{len(outcome.failures)} of {len(requests)} designs failed "
                        f"(first: {outcome.failures[0][0].spec}: {outcome.failures[0][1]})")


def _run_with_bar(sweeps, requests, store, streams, jobs, dask_address):
    from ._common import progress_bar
    bar = progress_bar()
    console = bar.console
    with bar:
        task = bar.add_task("sweep", total=len(requests))
        last = [0]

        def progress(done, total):
            bar.update(task, completed=done)
            if not console.is_terminal and done - last[0] >= max(1, total // 20):
                # not a terminal (CI, a log file): a plain counter line now and then
                click.echo(f"sweep: {done}/{total}", err=True)
                last[0] = done

        return sweeps.run(requests, store, streams=streams, jobs=jobs,
                          dask_address=dask_address, progress=progress)


def _show_sweep(d: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console(width=None if sys.stdout.isatty() else 200)
    t = Table(title="what do I pay for what error (area, delay, energy vs exact; error)")
    cols = [c for c in ("spec", "target", "transistors", "luts", "area_ratio", "depth",
                        "fmax_mhz", "energy", "energy_ratio", "mred", "mae", "wce")
            if any(c in r for r in d["summary"])]
    for c in cols:
        t.add_column(c, justify="left" if c in ("spec", "target") else "right")
    for r in d["summary"]:
        t.add_row(*(_short(r.get(c)) for c in cols))
    console.print(t)
    console.print(f"{d['designs']} designs: {d['cached']} from the store, {d['computed']} "
                  f"computed, {len(d['failed'])} failed, {len(d['skipped'])} grid points "
                  f"skipped; {d['seconds']} s; store {d['db']}")
    console.print("files: " + ", ".join(d["files"]))


def _short(v) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)

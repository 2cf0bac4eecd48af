"""`axsa sim model`: a quantized model's integer forward pass with every GEMM on the RTL."""

from __future__ import annotations

import click

from axsa.errors import InputError, ToolError

from ._common import emit, json_option, progress_bar
from .model import MODEL_KINDS, assign_option, assignment_entries, ckpt_option, mult_option


@click.group()
def sim():
    """Cycle simulation of whole workloads on the accelerator RTL."""


@sim.command("model")
@click.option("--model", "kind", type=click.Choice(MODEL_KINDS),
              help="ts: co2 forecaster; vit: tiny ViT on digits.")
@ckpt_option
@mult_option
@assign_option
@click.option("--engine", type=click.Choice(["cxxrtl", "verilator", "pysim"]),
              default="cxxrtl",
              show_default=True, help="Simulation engine.")
@click.option("--rows", type=int, default=16, show_default=True, help="Array rows R.")
@click.option("--cols", type=int, default=16, show_default=True, help="Array columns C.")
@click.option("--samples", type=click.IntRange(1), default=None,
              help="Test samples to run (default: the whole test split).")
@click.option("--view", type=click.Choice(["table", "circuit"]), default="table",
              show_default=True,
              help="Multipliers simulated by their product tables or their gates (same "
                   "results; gates are much slower to compile and run).")
@click.option("--batch", type=click.IntRange(1), default=None,
              help="Samples per forward pass (default: all; their tokens fill the rows "
                   "of each Linear GEMM).")
@click.option("--check-gemms", is_flag=True,
              help="Check every GEMM's RTL result against the bit-exact reference (by "
                   "default the outputs are, and a differing pass is rerun GEMM by GEMM).")
@click.option("--energy/--no-energy", default=True, show_default=True,
              help="Price the operand streams each PE saw (multiplier and MAC energy).")
@click.option("--energy-ops", type=click.IntRange(2), default=None,
              help="Operations priced per GEMM (more: evenly spaced whole tiles); "
                   "default 262144.")
@click.option("--vcd", type=click.Path(dir_okay=False),
              help="Write a waveform of the run (one file per design).")
@json_option
def model(kind, ckpt, mult, assign, engine, rows, cols, samples, view, batch, check_gemms,
          energy, energy_ops, vcd, as_json):
    """Run test samples through the model with every GEMM on the accelerator RTL.

    Each Linear (all samples' tokens stacked into its rows) and the attention products
    Q.K^T and A.V of every sample and head run on the RTL with the multiplier and mode
    the assignment gives them; softmax, LayerNorm, residuals and pooling run on the host
    in the model's integer code. Reports cycles (measured and predicted), utilization,
    energy and the task metric from the RTL's outputs beside the emulation's. A result
    that differs from the integer reference exits 1 naming the GEMM, sample and element.
    """
    if kind is None and ckpt is None:
        raise InputError("give --model (ts or vit) or --ckpt")
    from axsa.model_sim import simulate_model, split_head
    from axsa.models import assignment as A
    from axsa.models import train as T
    from axsa.sim.network import DesignCache

    model_, source, _ = T.load_checkpoint(ckpt, kind)
    entries, where = assignment_entries(model_, mult, assign)
    if entries is None:
        entries, where = {}, "assignment"
    A.resolve_assignment(model_, entries, where)         # bad input before any build
    ds = T.load_data(model_.kind, source, model_)
    split = split_head(ds.test, samples)
    with progress_bar() as bar, DesignCache(engine, rows, cols, view=view, vcd=vcd) as designs:
        task = bar.add_task(f"{len(split.x)} samples of {model_.kind}, GEMMs on the "
                            f"{rows}x{cols} RTL ({engine})", total=None)

        def progress(done, total, name):
            bar.update(task, completed=done, total=total)
            if not bar.console.is_terminal:
                click.echo(f"GEMM {done}/{total} done ({name})", err=True)
        report = simulate_model(model_, split, entries, designs, batch=batch,
                                check_gemms=check_gemms, energy=energy,
                                energy_ops=energy_ops, progress=progress, source=where)
    emit(report, as_json, _human)
    if not report["bit_exact"]:
        raise ToolError(report["mismatch"])


def _ratio(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _energy(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _human(d: dict) -> None:
    R, C = d["array"]
    click.echo(f"{d['model']} model, {d['samples']} test samples, every GEMM on the "
               f"{R}x{C} accelerator RTL ({d['engine']})")
    head = (f"{'GEMM':<18} {'multiplier':<26} {'G,M,K,N':<18} {'cycles':>9} "
            f"{'model':>9} {'util':>6} {'MACs':>11} {'wall s':>7} {'E pJ/inf':>10} "
            f"{'E ratio':>7} {'PE ratio':>8}")
    click.echo(head)
    for g in d["gemms"] + [dict(d, name="total", multiplier="", shape=None)]:
        spec = g["multiplier"]
        shape = ",".join(map(str, g["shape"])) if g["shape"] else ""
        click.echo(f"{g['name']:<18} {spec:<26} {shape:<18} {g['cycles']:>9} "
                   f"{g['predicted_cycles']:>9} {100 * g['utilization']:>5.1f}% "
                   f"{g['macs']:>11} {g['wall_s']:>7.2f} {_energy(g['energy']):>10} "
                   f"{_ratio(g['energy_ratio']):>7} {_ratio(g['pe_energy_ratio']):>8}")
    m, e = d["metric"], d["emulated_metric"]
    fmt = (lambda v: f"{v:.4f}") if m["name"] == "rmse" else (lambda v: f"{100 * v:.2f}%")
    click.echo(f"{m['name']}: {fmt(m['value'])} from the RTL, {fmt(e['value'])} emulated; "
               f"bit-exact: {'yes' if d['bit_exact'] else 'NO'}")
    click.echo(f"wall {d['wall_s']:.2f} s ({d['mac_per_s'] / 1e6:.2f} million useful MAC/s, "
               f"host ops included); emulation {d['emulate_s']:.2f} s; building designs "
               f"{d['build_s']:.1f} s; energy {d['energy_s']:.1f} s")
    if d["energy"] is not None:
        click.echo(f"energy per inference (dynamic): multipliers {d['energy']:.1f} pJ "
                   f"({_ratio(d['energy_ratio'])} of all-exact), whole MACs "
                   f"{d['pe_energy']:.1f} pJ ({_ratio(d['pe_energy_ratio'])})")

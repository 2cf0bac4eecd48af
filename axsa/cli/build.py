"""`axsa build`: a bitstream of the accelerator's board top for an open FPGA board."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import emit, json_option

BOARD_NAMES = ("icebreaker", "ulx3s-85f")  # mirrors axsa.rtl.boards.platforms (start-up)


@click.command()
@click.option("--board", "board_name", type=click.Choice(BOARD_NAMES), required=True,
              help="The board (its FPGA, clock and default configuration).")
@click.option("--rows", type=int, default=None, help="Array rows [default: the board's].")
@click.option("--cols", type=int, default=None, help="Array columns [default: the board's].")
@click.option("--mult", "spec", default=None,
              help="Multiplier spec, with or without @FORMAT (e.g. 'trunc(k=4)' or "
                   "'exact@s4') [default: the board's].")
@click.option("--bits", type=int, default=None,
              help="Operand bits of a spec without @FORMAT (signed) [default: the board's].")
@click.option("--no-dsp", is_flag=True,
              help="Keep multiplications out of the DSP blocks (SB_MAC16 / MULT18X18D).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Build folder [default: build/<board>/ under the current folder].")
@json_option
def build(board_name, rows, cols, spec, bits, no_dsp, out_dir, as_json):
    """Build a bitstream for BOARD: synthesis, place and route, packing (minutes).

    Reports utilization (used of available), Fmax against the board clock, MACs per
    cycle and per second (at the board clock, which the design runs at: a build whose
    Fmax is below it fails), and the log. A design that does not fit, or misses timing,
    exits 1 naming the resource or the clock.

    \b
    Examples:
      axsa build --board icebreaker
      axsa build --board ulx3s-85f --rows 8 --cols 8 --mult 'drum(k=4)' --bits 8 --json
    """
    from axsa.rtl.boards.platforms import board
    from axsa.synth import board as flow

    b = board(board_name)
    config = flow.resolve(b, rows, cols, spec, bits)
    out = Path(out_dir) if out_dir is not None else Path.cwd() / "build" / b.name
    click.echo(f"building {config.spec}, {config.rows}x{config.cols} array, for {b.name} "
               f"({b.device}, {b.clock_mhz:g} MHz) in {out}", err=True)
    result = flow.build(b, flow.board_top(config), out, dsp=not no_dsp)
    data = {
        "board": b.name,
        "bitstream": str(result.bitstream),
        "fmax_mhz": round(result.min_fmax_mhz, 2),
        "clock_mhz": b.clock_mhz,
        "utilization": result.utilization,
        "macs_per_cycle": config.macs_per_cycle,
        "macs_per_second": config.macs_per_cycle * b.clock_hz,
        "log": str(result.log),
        "mult": config.spec,
        "rows": config.rows,
        "cols": config.cols,
        "clocks": {clk: {"fmax_mhz": round(f, 2),
                         "constraint_mhz": round(result.constraint_mhz[clk], 2)}
                   for clk, f in result.fmax_mhz.items()},
        "pnr_utilization": result.pnr_utilization,
    }
    emit(data, as_json, _human)


def _human(d: dict) -> None:
    click.echo(f"bitstream  {d['bitstream']}")
    click.echo(f"design     {d['mult']}, {d['rows']}x{d['cols']} array on {d['board']}")
    click.echo(f"Fmax       {d['fmax_mhz']:.2f} MHz (board clock {d['clock_mhz']:g} MHz)")
    click.echo(f"MACs       {d['macs_per_cycle']} per cycle, "
               f"{d['macs_per_second'] / 1e6:g} M per second at the board clock")
    for cat, u in d["utilization"].items():
        pct = 100 * u["used"] / u["available"] if u["available"] else 0.0
        click.echo(f"{cat:<10} {u['used']:>6} of {u['available']:<6} ({pct:.1f}%)")
    click.echo(f"log        {d['log']}")

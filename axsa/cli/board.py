"""`axsa run` (a GEMM on a board over its serial link) and `axsa board-sim` (the board's
simulation served on a pseudo-terminal, for `axsa run --port`)."""

from __future__ import annotations

import os
import sys

import click

from ._common import emit, json_option
from .gemm import gemm_arguments, read_gemm_arguments


@click.command("run")
@click.option("--port", required=True, metavar="DEV",
              help="Serial port of the board (or the path `axsa board-sim` printed).")
@click.option("--baud", type=click.IntRange(1), default=115200, show_default=True,
              help="Baud rate the board was built for.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=10.0,
              show_default=True, help="Seconds of silence from the board before giving up.")
@gemm_arguments
@json_option
def run(port, baud, timeout, a_path, b_path, mode, out_path, requant_text, requant_bits,
        requant_unsigned, as_json):
    """Multiply A.npy (M x K) by B.npy (K x N) on a board, bit-exact.

    The board reports its array, multiplier and limits itself; the GEMM is tiled over its
    array (a K above its max_k is split and summed here, without --requant). Reports the
    board's cycle counter (cycles with a tile in flight), bytes on the line and seconds.
    """
    import numpy as np

    from axsa.board_host import BoardLink, run_board_gemm

    A, B, requant, requant_info = read_gemm_arguments(a_path, b_path, requant_text,
                                                      requant_bits, requant_unsigned)
    with BoardLink(port, baud, timeout) as link:
        res = run_board_gemm(link, A, B, mode=mode, requant=requant)
        info = link.info
    if out_path is not None:
        np.save(out_path, res.C)
    M, K = A.shape
    N = B.shape[1]
    data = {"port": port, "mult": info.spec, "mode": mode, "rows": info.rows,
            "cols": info.cols, "max_k": info.max_k, "acc_width": info.acc_width,
            "M": M, "K": K, "N": N,
            "tiles": res.tiles, "cycles": res.cycles, "bytes_sent": res.bytes_sent,
            "bytes_received": res.bytes_received, "seconds": res.seconds,
            "requant": requant_info, "out": out_path}

    def human(d):
        click.echo(f"{d['M']}x{d['K']}x{d['N']} GEMM with {d['mult']} on the board at "
                   f"{d['port']} ({d['rows']}x{d['cols']} array)")
        click.echo(f"  tiles       {d['tiles']}")
        click.echo(f"  cycles      {d['cycles']} (with a tile in flight)")
        click.echo(f"  bytes       {d['bytes_sent']} sent, {d['bytes_received']} received")
        click.echo(f"  seconds     {d['seconds']:.3f}")
        if d["out"]:
            click.echo(f"  wrote       {d['out']}")

    emit(data, as_json, human)


@click.command("board-sim")
@click.option("--board", required=True, help="Board whose default configuration to simulate "
              "(icebreaker, ulx3s-85f).")
@click.option("--rows", type=click.IntRange(1, 256), default=None, help="Array rows R.")
@click.option("--cols", type=click.IntRange(1, 256), default=None, help="Array columns C.")
@click.option("--mult", "spec", default=None, help="Multiplier spec (default: the board's).")
@click.option("--max-k", type=click.IntRange(1, 1 << 24), default=None,
              help="Longest reduction per tile (default: the board top's).")
@click.option("--divisor", type=click.IntRange(4), default=8, show_default=True,
              help="Clock cycles per UART bit of the simulated link.")
@click.option("--view", type=click.Choice(["table", "circuit"]), default="table",
              show_default=True, help="Multipliers as product tables (fast to compile) or "
              "their gates (same results).")
@json_option
def board_sim(board, rows, cols, spec, max_k, divisor, view, as_json):
    """Serve a simulated board on a pseudo-terminal until Ctrl-C or SIGTERM.

    The board top (UART included) is compiled with CXXRTL (cached) and its serial line
    served on a new pseudo-terminal, whose path is printed: `axsa run --port PATH` talks
    to it exactly as to the real board.
    """
    from rich.console import Console

    from axsa.processes import sigterm_as_interrupt
    from axsa.rtl.boards.top import board_config
    from axsa.sim.board_sim import build_board, open_pty, serve

    conf = board_config(board, rows=rows, cols=cols, mult=spec)
    kwargs = {} if max_k is None else {"max_k": max_k}
    with sigterm_as_interrupt():
        with Console(stderr=True).status(f"building the {conf['rows']}x{conf['cols']} "
                                         f"{board} board top with CXXRTL (cached)..."):
            sim = build_board(conf["multiplier"], conf["rows"], conf["cols"], view=view,
                              clk_freq=conf["clk_freq"], divisor=divisor, **kwargs)
        master, path = open_pty()
        data = {"board": board, "port": path, "rows": conf["rows"], "cols": conf["cols"],
                "mult": conf["multiplier"].spec, "divisor": divisor,
                "library": str(sim.library)}
        emit(data, as_json, lambda d: click.echo(
            f"board-sim: {d['board']} ({d['rows']}x{d['cols']}, {d['mult']}) on {d['port']}"))
        sys.stdout.flush()
        try:
            serve(sim, master)
        finally:
            os.close(master)
            sim.close()

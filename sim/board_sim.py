"""The simulated board: a `BoardTop` compiled with CXXRTL, its serial line served on a
pseudo-terminal, so that the host driver (`axsa.board_host`) talks to it exactly as to a
real board.

The design is built through `axsa.sim.cxxrtl` (same RTLIL, Yosys, g++ and cache), with
``uart_bridge.cc`` (beside this file) compiled in: it clocks the design and does the
bit-level serialization of the ``rx``/``tx`` pins in C++, so Python hands bytes over and
takes bytes back once per call, never once per cycle.

`serve` copies bytes between the pseudo-terminal's master side and the board. Time on
the simulated board passes only while there is something to do (bytes to send, a reply
under way), so the board's frame timeout never fires while the host is quiet; instead,
when the last program that had the port open closes it, the board is reset to its
power-on state (a host that died mid-tile leaves the next one a clean board).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import time
import tty
from pathlib import Path

import numpy as np

from axsa.errors import InputError, ToolError

from . import cxxrtl

__all__ = ["BRIDGE", "SimulatedBoard", "build_board", "open_pty", "serve"]

BRIDGE = Path(__file__).with_name("uart_bridge.cc")


class SimulatedBoard:
    """A `BoardTop` on CXXRTL, driven byte-wise through `exchange`.

    Parameters
    ----------
    top : BoardTop
        Built in the view `design_view` gives for the multiplier (``"table"`` for exact
        multipliers, ``"cell"`` for the others).
    cells : {"table", "circuit"}
        What fills the multiplier cells of a ``"cell"``-view design (`CxxrtlEngine`).

    Attributes
    ----------
    library : Path
        The compiled shared library; `cache_hit` tells whether it came from the cache.
    cycles : int
        Clock cycles run so far.
    """

    def __init__(self, top, cells: str = "table"):
        design = cxxrtl._elaborate(top, cells)
        self.top = top
        self.library, self.cache_hit = cxxrtl.build(
            design.rtlil, top.verilog_sources if cells == "circuit" else (),
            cxxrtl.DEFAULT_CXXFLAGS, design.extra_cc + "\n" + BRIDGE.read_text(),
            design.keep)
        dll = ctypes.CDLL(str(self.library))
        vp, i64 = ctypes.c_void_p, ctypes.c_int64
        dll.axsa_uart_create.argtypes, dll.axsa_uart_create.restype = [i64], vp
        dll.axsa_uart_destroy.argtypes, dll.axsa_uart_destroy.restype = [vp], None
        dll.axsa_uart_reset.argtypes, dll.axsa_uart_reset.restype = [vp], None
        dll.axsa_uart_run.argtypes = [vp, ctypes.c_char_p, i64, vp, i64, vp, i64, i64]
        dll.axsa_uart_run.restype = i64
        self._dll = dll
        self._tables = [cell.lookup_table() for cell in design.tables]
        with cxxrtl._CREATE_LOCK:
            for slot, table in enumerate(self._tables):
                dll.axsa_set_table(slot, table.ctypes.data)
            self._board = dll.axsa_uart_create(top.divisor)
        if not self._board:
            raise ToolError("the compiled board top has no clk, rx or tx port")
        self._out = np.zeros(1 << 16, dtype=np.uint8)
        self._n_out = np.zeros(1, dtype=np.int64)
        self.cycles = 0
        # silence after which the board has nothing more to say: longer than any reply's
        # start takes (a tile's last rows leave the array R + C + ~20 cycles after its
        # last beat), in cycles
        self.quiet_cycles = 4096 + 40 * top.divisor + 4 * (top.rows + top.cols)

    def exchange(self, data: bytes = b"", max_cycles: int = 1 << 18) -> tuple[bytes, bool]:
        """Send `data` to the board and run it for at most `max_cycles` cycles.

        Returns the bytes it sent back and whether it went quiet (all of `data` sent
        and the line idle for `quiet_cycles`): then it has nothing more to say until it
        is sent more.
        """
        if not self._board:
            raise ToolError("the simulated board is closed")
        ran = self._dll.axsa_uart_run(self._board, data, len(data), self._out.ctypes.data,
                                      len(self._out), self._n_out.ctypes.data,
                                      max_cycles, self.quiet_cycles)
        self.cycles += ran
        n = int(self._n_out[0])
        return self._out[:n].tobytes(), ran < max_cycles and n < len(self._out)

    def reset(self) -> None:
        """Back to the power-on state."""
        self._dll.axsa_uart_reset(self._board)

    def close(self) -> None:
        if getattr(self, "_board", None):
            self._dll.axsa_uart_destroy(self._board)
            self._board = None

    def __del__(self):
        self.close()


def build_board(multiplier, rows: int, cols: int, *, view: str = "table",
                **top_kwargs) -> SimulatedBoard:
    """A `SimulatedBoard` of ``BoardTop(multiplier, rows, cols, **top_kwargs)`` in the
    design view the CXXRTL engine takes for the multiplier under `view` (``"table"``:
    product tables, fast to compile; ``"circuit"``: the gates)."""
    from axsa.rtl.boards.top import BoardTop

    from .cxxrtl import CxxrtlEngine
    if view not in ("table", "circuit"):
        raise InputError(f"unknown view {view!r} (known: table, circuit)")
    design_view = CxxrtlEngine.design_view(view, multiplier)
    return SimulatedBoard(BoardTop(multiplier, rows, cols, view=design_view, **top_kwargs),
                          cells=view)


def open_pty() -> tuple[int, str]:
    """A pseudo-terminal in raw mode: (master fd, slave path)."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)  # no echo, no line editing, no newline translation
        path = os.ttyname(slave)
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    return master, path


def serve(board: SimulatedBoard, master: int, stop=None) -> None:
    """Serve `board` on the pseudo-terminal `master` until `stop()` is true (forever if
    None) or an interruption (KeyboardInterrupt) ends it.

    Bytes from the host go to the board as they come; the board runs while it has
    something to do; its replies are written as the host takes them (never blocking the
    reading side, so a host that writes a lot before it reads cannot dead-lock the two);
    a hang-up (no program has the port open) resets the board and drops what was not
    yet read.
    """
    if not isinstance(master, int):
        raise InputError(f"not a file descriptor: {master!r}")
    poller = select.poll()
    connected = busy = False
    pending = bytearray()
    while stop is None or not stop():
        poller.register(master, select.POLLIN | (select.POLLOUT if pending else 0))
        ev = dict(poller.poll(0 if busy else 100)).get(master, 0)
        if ev & select.POLLHUP and not ev & select.POLLIN:
            if connected:
                board.reset()
                connected = busy = False
                pending.clear()
            time.sleep(0.05)  # nobody on the line: the master reports hang-up at once
            continue
        if pending and ev & select.POLLOUT:
            try:
                del pending[:os.write(master, pending)]
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
        data = b""
        if ev & select.POLLIN:
            try:
                data = os.read(master, 1 << 14)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                continue  # hung up in between: the next poll says so
            connected = True
        if data or busy:
            out, quiet = board.exchange(data)
            busy = not quiet
            pending += out

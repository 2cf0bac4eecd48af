"""`BoardTop`: the accelerator behind a UART command interface, for a board or its
simulation.

::

    rx ──> UartRx ──> rx_queue ──> CommandDecoder ──cmd/a/b──> Accelerator ──result──┐
                                        └──────────────ctrl────────────────┐          │
    tx <── UartTx <──────────────────────────────────────────────── ReplyEncoder <────┘

The protocol is `axsa.rtl.boards.link`'s (docs/boards.md, "Host link"). With a platform
(amaranth-boards), the UART pins come from ``platform.request("uart", 0)``, the clock is
the platform's default ``sync`` domain and LED 0, if the board has one, lights while a
tile is in flight; without one (simulation), the top's own ``rx``/``tx`` ports are the
pins.

Each board's default configuration comes from `axsa.rtl.boards.platforms.BOARDS`, the one
board table (`board_config`, `board_top_for`).
"""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from axsa.rtl.accelerator import Accelerator
from axsa.rtl.component import CheckedComponent
from axsa.rtl.mac import acc_width_for
from axsa.rtl.queue import Queue

from .link import CYCLE_BITS, CommandDecoder, ReplyEncoder, check_link, identify_payload
from .uart import UartRx, UartTx, check_divisor

__all__ = ["BoardTop", "DEFAULT_BOARD_MAX_K", "board_config", "board_top_for"]

#: longest reduction per tile of a board top unless told (a longer K is split on the host)
DEFAULT_BOARD_MAX_K = 1024


class BoardTop(CheckedComponent):
    """An `Accelerator` with a UART host link (module docstring).

    Parameters
    ----------
    multiplier : Multiplier
        Any multiplier of the library.
    rows, cols : int
        Array size R x C.
    clk_freq : float
        Clock frequency in Hz (reported to the host; sets the default divisor).
    baud : int
        Baud rate (default 115200) when `divisor` is not given.
    max_k : int
        Longest reduction per tile (default `DEFAULT_BOARD_MAX_K`).
    divisor : int, optional
        Clock cycles per UART bit; default ``round(clk_freq / baud)``. The simulated
        board uses a small one (4..16) to be fast.
    acc_width : int, optional
        Accumulator width (default: exact for `max_k`).
    view : {"circuit", "table", "cell"}
        The accelerator's multiplier view (`axsa.rtl.cells`): circuit for a bitstream.
    timeout_s : float
        A command frame that stops arriving for this long is dropped and the
        accelerator reset (default 0.25 s).

    Attributes
    ----------
    rx : In(1)
        Serial input (idles at 1); the pin when elaborated without a platform.
    tx : Out(1)
        Serial output.
    accelerator : Accelerator
    divisor, baud : int
        Cycles per bit, and the resulting baud rate ``round(clk_freq / divisor)``.
    cells, verilog_sources
        The accelerator's, for the compiled simulators.
    """

    @staticmethod
    def check(multiplier, rows, cols, clk_freq, baud, max_k, divisor, acc_width, view,
              timeout_s):
        if isinstance(clk_freq, bool) or not isinstance(clk_freq, (int, float)) \
                or not clk_freq > 0:
            raise ValueError(f"clk_freq must be a positive frequency in Hz, not {clk_freq!r}")
        if divisor is None:
            if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
                raise ValueError(f"baud must be a positive integer, not {baud!r}")
            check_divisor(round(clk_freq / baud))
        else:
            check_divisor(divisor)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) \
                or not timeout_s > 0:
            raise ValueError(f"timeout_s must be a positive number of seconds, not "
                             f"{timeout_s!r}")
        check_link(multiplier, rows, cols, acc_width_for(multiplier, max_k)
                   if acc_width is None else acc_width)

    def __init__(self, multiplier, rows: int, cols: int, *, clk_freq: float,
                 baud: int = 115200, max_k: int = DEFAULT_BOARD_MAX_K,
                 divisor: int | None = None, acc_width: int | None = None,
                 view: str = "circuit", timeout_s: float = 0.25):
        if divisor is None:
            divisor = round(clk_freq / baud)
        self.clk_freq, self.divisor = float(clk_freq), divisor
        self.baud = round(clk_freq / divisor)
        self.timeout = max(100 * divisor, round(timeout_s * clk_freq))
        self.accelerator = Accelerator(multiplier, rows, cols, max_k=max_k,
                                       acc_width=acc_width, view=view)
        self.identity = identify_payload(self.accelerator, clk_freq, divisor)
        self.multiplier, self.rows, self.cols = multiplier, rows, cols
        self.max_k, self.acc_width = max_k, self.accelerator.acc_width
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    @property
    def cells(self) -> tuple:
        return self.accelerator.cells

    @property
    def verilog_sources(self) -> list:
        return self.accelerator.verilog_sources

    def elaborate(self, platform):
        m = Module()
        acc = self.accelerator
        m.submodules.uart_rx = uart_rx = UartRx(self.divisor)
        m.submodules.uart_tx = uart_tx = UartTx(self.divisor)
        m.submodules.rx_queue = rx_queue = Queue(8, 16)
        decoder = CommandDecoder(acc, self.timeout)
        encoder = ReplyEncoder(acc, self.identity)
        m.submodules.decoder = decoder
        # a dropped frame resets what may hold a half-done tile
        m.submodules.accelerator = ResetInserter(decoder.abort)(acc)
        m.submodules.encoder = ResetInserter(decoder.abort)(encoder)

        if platform is None:
            m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx)]
        else:
            uart = platform.request("uart", 0)
            m.d.comb += [uart_rx.rx.eq(uart.rx.i), uart.tx.o.eq(uart_tx.tx),
                         self.tx.eq(uart_tx.tx)]
            from amaranth.build import ResourceError
            try:
                led = platform.request("led", 0)
            except ResourceError:
                led = None
            if led is not None:
                m.d.comb += led.o.eq(acc.busy)

        wiring.connect(m, uart_rx.o, rx_queue.i)
        wiring.connect(m, rx_queue.o, decoder.i)
        wiring.connect(m, decoder.cmd, acc.cmd)
        wiring.connect(m, decoder.a, acc.a)
        wiring.connect(m, decoder.b, acc.b)
        wiring.connect(m, acc.result, encoder.result)
        wiring.connect(m, decoder.ctrl, encoder.ctrl)
        wiring.connect(m, encoder.o, uart_tx.i)
        if self.multiplier.modes > 1:
            m.d.comb += acc.mode.eq(decoder.mode)

        # cycles with a tile in flight, read (and cleared) by the host
        cycles = Signal(CYCLE_BITS)
        with m.If(encoder.cycles_clear):
            m.d.sync += cycles.eq(acc.busy)
        with m.Elif(acc.busy):
            m.d.sync += cycles.eq(cycles + 1)
        m.d.comb += [encoder.cycles.eq(cycles), decoder.idle.eq(~acc.busy & ~encoder.busy)]
        return m


def board_config(board: str, *, rows: int | None = None, cols: int | None = None,
                 mult=None) -> dict:
    """Board `board`'s default configuration (`axsa.rtl.boards.platforms.BOARDS`) with
    `rows`, `cols` and `mult` (spec or Multiplier) overriding it: ``multiplier``
    (parsed), ``rows``, ``cols``, ``clk_freq``. An unknown board is an InputError naming
    the known ones."""
    from axsa.rtl.multipliers import parse_spec

    from .platforms import board as board_named

    conf = board_named(board)
    mult = conf.default_spec if mult is None else mult
    return {"multiplier": parse_spec(mult) if isinstance(mult, str) else mult,
            "rows": conf.rows if rows is None else rows,
            "cols": conf.cols if cols is None else cols,
            "clk_freq": conf.clock_hz}


def board_top_for(board: str, *, rows: int | None = None, cols: int | None = None,
                  mult=None, **kwargs) -> BoardTop:
    """The `BoardTop` of `board_config` (the board's defaults, overridden by `rows`,
    `cols`, `mult`), with the other `BoardTop` keywords in `kwargs`."""
    conf = board_config(board, rows=rows, cols=cols, mult=mult)
    kwargs.setdefault("clk_freq", conf["clk_freq"])
    return BoardTop(conf["multiplier"], conf["rows"], conf["cols"], **kwargs)

"""Host driver of a board running the accelerator behind its UART link (`axsa run`).

>>> from axsa.board_host import BoardLink, run_board_gemm
>>> with BoardLink("/dev/ttyUSB1") as link:
...     res = run_board_gemm(link, A, B, requant=Requant(1234, 16))
>>> res.C, res.cycles, res.bytes_sent, res.bytes_received

The protocol is `axsa.rtl.boards.link`'s (docs/boards.md, "Host link"). The board says
what it is (`BoardLink.info`, from the identify command), so the host needs no
configuration. A GEMM is tiled exactly as `axsa.sim.driver` tiles it for a simulated
accelerator (same tile order, command words and operand packing: `sim.driver`'s
`tile_feeds` and `gather_tiles`), a tile's bytes going out as its command word
followed by its K beat pairs; up to the board's tiles-in-flight limit are sent before
their replies are read. Every reply's header, length and CRC-16 are checked; a bad one,
a board that goes silent (timeout) or a port that goes away is a ToolError naming the
port and what was wrong.

A K above the board's max_k is split into chunks whose exact sums are added on the host
(the sum of products is the same however K is cut); requantization needs the whole K
in one tile, as on the simulated accelerator.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import numpy as np

from axsa.errors import InputError, ToolError

__all__ = ["BoardGemmResult", "BoardInfo", "BoardLink", "run_board_gemm"]

#: seconds of silence from the board before a read fails
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class BoardInfo:
    """What a board reports about itself (the identify reply).

    Attributes
    ----------
    rows, cols, max_k, acc_width, max_tiles : int
        Array size, longest reduction per tile, result element width, tiles in flight.
    clk_freq : float
        Clock in Hz. ``divisor``: clock cycles per UART bit.
    spec : str
        The multiplier spec; ``multiplier`` the parsed Multiplier.
    """

    rows: int
    cols: int
    max_k: int
    acc_width: int
    max_tiles: int
    clk_freq: float
    divisor: int
    spec: str
    multiplier: object = field(repr=False, compare=False)

    @property
    def cmd_layout(self):
        """The tile command layout (`axsa.rtl.accelerator.command_layout`)."""
        from axsa.rtl.controller import command_layout
        return command_layout(self.cols, self.max_k)

    @property
    def baud(self) -> int:
        return round(self.clk_freq / self.divisor)


def parse_identify(payload: bytes, port: str) -> BoardInfo:
    """`BoardInfo` from an identify payload (`axsa.rtl.boards.link.identify_payload`)."""
    from axsa.rtl.boards.link import IDENTIFY_FORMAT, MAGIC, PROTOCOL_VERSION
    from axsa.rtl.multipliers import parse_spec

    fixed = struct.calcsize(IDENTIFY_FORMAT)
    if payload[:4] != MAGIC or len(payload) < 4 + fixed:
        raise ToolError(f"{port}: the identify reply {payload[:8]!r}... is not an axsa "
                        "board's (wrong magic or too short)")
    (version, rows, cols, max_k, acc_width, max_tiles, clk, divisor,
     n_spec) = struct.unpack_from(IDENTIFY_FORMAT, payload, 4)
    if version != PROTOCOL_VERSION:
        raise ToolError(f"{port}: the board speaks protocol version {version}, this host "
                        f"version {PROTOCOL_VERSION}: rebuild the bitstream or update axsa")
    spec_bytes = payload[4 + fixed:]
    if len(spec_bytes) != n_spec:
        raise ToolError(f"{port}: the identify reply's spec is {len(spec_bytes)} bytes, "
                        f"it says {n_spec}")
    spec = spec_bytes.decode("ascii", errors="replace")
    try:
        mult = parse_spec(spec)
    except InputError as exc:
        raise ToolError(f"{port}: the board's multiplier {spec!r} is unknown here: {exc}") \
            from None
    return BoardInfo(rows, cols, max_k, acc_width, max_tiles, float(clk), divisor, spec,
                     mult)


class BoardLink:
    """An open serial link to a board: framed replies read and checked, bytes counted.

    Parameters
    ----------
    port : str
        Serial device (``/dev/ttyUSB1``, the path `axsa board-sim` prints, ...). A port
        that does not exist is an InputError naming it.
    baud : int
        Baud rate (the board's, 115200 unless built otherwise; a pseudo-terminal ignores
        it).
    timeout : float
        Seconds of silence from the board before a read is given up (ToolError).
    identify : bool
        Ask the board what it is on opening (default; `run_board_gemm` needs `info`).

    Attributes
    ----------
    info : BoardInfo or None
        The board's identify reply, read on opening.
    bytes_sent, bytes_received : int
        Totals on the line since opening.
    """

    def __init__(self, port: str, baud: int = 115200, timeout: float = DEFAULT_TIMEOUT,
                 identify: bool = True):
        import serial

        self.port, self.timeout = port, timeout
        self.bytes_sent = self.bytes_received = 0
        try:
            self._serial = serial.Serial(port, baud, timeout=timeout, write_timeout=timeout)
        except (serial.SerialException, ValueError) as exc:
            raise InputError(f"cannot open serial port {port!r}: {exc} (is the board "
                             "plugged in, or `axsa board-sim` running?)") from None
        try:
            self._serial.reset_input_buffer()  # whatever an earlier session left behind
            self.info = self.identify() if identify else None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if getattr(self, "_serial", None) is not None:
            self._serial.close()
            self._serial = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- bytes on the line ----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write `data` to the board."""
        import serial
        try:
            self._serial.write(data)
        except serial.SerialTimeoutException:
            raise ToolError(f"{self.port}: the board took no data for {self.timeout} s "
                            "(is it running?)") from None
        except (serial.SerialException, OSError) as exc:
            raise ToolError(f"{self.port}: writing to the board failed: {exc}") from None
        self.bytes_sent += len(data)

    def _read(self, n: int, what: str) -> bytes:
        """Exactly `n` bytes, or a ToolError if the board stays silent for `timeout`."""
        import serial
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self._serial.read(n - len(buf))
            except (serial.SerialException, OSError) as exc:
                raise ToolError(f"{self.port}: the link went away while reading {what} "
                                f"({len(buf)} of {n} bytes): {exc}") from None
            if not chunk:
                raise ToolError(f"{self.port}: timeout: no reply for {self.timeout} s while "
                                f"reading {what} ({len(buf)} of {n} bytes)")
            buf += chunk
        self.bytes_received += n
        return bytes(buf)

    def reply(self, kind: str, length: int | None = None) -> bytes:
        """Read one reply frame of `kind` (a key of `REPLY`) and return its payload,
        after checking its header, its `length` (if given) and its CRC. An error reply
        from the board is a ToolError saying what it rejected."""
        from axsa.rtl.boards.link import ERR_K, ERR_MODE, ERR_OPCODE, REPLY, crc16_xmodem

        head = self._read(3, f"the {kind} reply's header")
        n = int.from_bytes(head[1:], "little")
        if head[0] == REPLY["error"] and n == 2:
            body = self._read(4, "an error reply")
            code, arg = body[0], body[1]
            why = {ERR_OPCODE: f"unknown opcode 0x{arg:02x}", ERR_K: "K above its max_k",
                   ERR_MODE: f"mode {arg} out of range"}.get(code, f"error code {code}")
            raise ToolError(f"{self.port}: the board rejected a command: {why}")
        if head[0] != REPLY[kind]:
            raise ToolError(f"{self.port}: bad reply: header 0x{head[0]:02x}, expected "
                            f"0x{REPLY[kind]:02x} ({kind})")
        if length is not None and n != length:
            raise ToolError(f"{self.port}: bad {kind} reply: length {n}, expected {length}")
        body = self._read(n + 2, f"the {kind} reply's {n}-byte payload")
        payload, crc = body[:n], int.from_bytes(body[n:], "little")
        if crc16_xmodem(head + payload) != crc:
            raise ToolError(f"{self.port}: bad {kind} reply: CRC 0x{crc:04x} does not match "
                            f"its {n}-byte payload (0x{crc16_xmodem(head + payload):04x})")
        return payload

    # -- commands -------------------------------------------------------------------------

    def identify(self) -> BoardInfo:
        from axsa.rtl.boards.link import OP_IDENTIFY
        self.send(bytes([OP_IDENTIFY]))
        return parse_identify(self.reply("identify"), self.port)

    def set_mode(self, mode: int) -> None:
        from axsa.rtl.boards.link import OP_MODE
        self.send(bytes([OP_MODE, mode]))
        if self.reply("mode", 1)[0] != mode:
            raise ToolError(f"{self.port}: the board acknowledged another mode than {mode}")

    def read_cycles(self) -> int:
        """Cycles with a tile in flight since the last read (the counter is cleared)."""
        from axsa.rtl.boards.link import CYCLE_BYTES, OP_CYCLES
        self.send(bytes([OP_CYCLES]))
        return int.from_bytes(self.reply("cycles", CYCLE_BYTES), "little")


@dataclass(frozen=True)
class BoardGemmResult:
    """Outcome of `run_board_gemm`.

    Attributes
    ----------
    C : numpy.ndarray of int64, shape (M, N)
        Accumulators, or requantized outputs.
    cycles : int
        Board clock cycles with a tile in flight (its cycle counter).
    tiles : int
        Tiles sent (K chunks included).
    bytes_sent, bytes_received : int
        On the line, commands and replies of this GEMM.
    seconds : float
        Wall-clock time of the GEMM on the link.
    """

    C: np.ndarray = field(repr=False)
    cycles: int
    tiles: int
    bytes_sent: int
    bytes_received: int
    seconds: float


def _tile_bytes(info: BoardInfo, A: np.ndarray, B: np.ndarray, requant) -> np.ndarray:
    """Each tile's bytes on the link: (tiles, 1 + cmd + K (a + b)) uint8."""
    from axsa.rtl.boards.link import OP_TILE, link_sizes
    from axsa.sim.driver import tile_feeds

    sizes = link_sizes(info)
    feeds, _ = tile_feeds(info, A[None], B[None], requant)

    def as_bytes(words, n):
        return np.ascontiguousarray(words.astype("<u4")).view(np.uint8)[:, :n]

    cmd = as_bytes(feeds["cmd"], sizes["cmd"])
    tiles = len(cmd)
    beats = np.concatenate([as_bytes(feeds["a"], sizes["a"]),
                            as_bytes(feeds["b"], sizes["b"])], axis=1)
    return np.concatenate([np.full((tiles, 1), OP_TILE, np.uint8), cmd,
                           beats.reshape(tiles, -1)], axis=1)


def _rows_to_words(payloads: list[bytes], info: BoardInfo) -> np.ndarray:
    """Tile replies -> result rows as uint32 words (the engines' drain format)."""
    from axsa.rtl.boards.link import link_sizes
    row = link_sizes(info)["row"]
    data = np.frombuffer(b"".join(payloads), np.uint8).reshape(-1, row)
    padded = np.zeros((len(data), -(-row // 4) * 4), np.uint8)
    padded[:, :row] = data
    return padded.view("<u4").astype(np.uint32)


def run_board_gemm(link: BoardLink, A, B, mode: int = 0, requant=None) -> BoardGemmResult:
    """``A @ B`` through the board's multiplier, bit-exact with `axsa gemm` (emulation
    or RTL) for the same multiplier.

    Parameters
    ----------
    link : BoardLink
    A : array_like of int, shape (M, K)
    B : array_like of int, shape (K, N)
        Operand values in the board's multiplier format.
    mode : int
        Multiplier mode (mode-configurable multipliers); 0 otherwise.
    requant : axsa.sim.driver.Requant, optional
        Requantize on the board (needs K <= max_k).
    """
    from axsa.rtl.boards.link import link_sizes
    from axsa.sim.driver import gather_tiles
    from axsa.sim.reference import check_operands

    info = link.info
    mult = info.multiplier
    mult._check_mode(mode)
    A, B = check_operands(A, B, mult.fmt)
    M, K = A.shape
    N = B.shape[1]
    if requant is not None:
        requant.per_column(N)
        if K > info.max_k:
            raise InputError(f"K = {K} exceeds the board's max_k = {info.max_k}: "
                             "requantization needs the whole reduction in one tile "
                             "(without --requant a longer K is split and summed on the host)")
        if requant.bits > info.acc_width - (0 if requant.signed else 1):
            raise InputError(f"requantization bits = {requant.bits} does not fit the "
                             f"board's {info.acc_width}-bit result elements")
    t0 = time.perf_counter()
    sent0, received0 = link.bytes_sent, link.bytes_received
    if mult.modes > 1:
        link.set_mode(mode)
    link.read_cycles()  # clears the counter
    reply_len = info.rows * link_sizes(info)["row"]
    C = np.zeros((M, N), np.int64)
    n_tiles = 0
    for k0 in range(0, K, info.max_k):
        frames = _tile_bytes(info, A[:, k0:k0 + info.max_k], B[k0:k0 + info.max_k], requant)
        replies = []
        window = max(1, info.max_tiles - 1)  # tiles sent and not yet answered, at most
        for t, frame in enumerate(frames):
            if t >= window:
                replies.append(link.reply("tile", reply_len))
            link.send(frame.tobytes())
        while len(replies) < len(frames):
            replies.append(link.reply("tile", reply_len))
        C += gather_tiles(info, _rows_to_words(replies, info), 1, M, N)[0]
        n_tiles += len(frames)
    cycles = link.read_cycles()
    return BoardGemmResult(C, cycles, n_tiles, link.bytes_sent - sent0,
                           link.bytes_received - received0, time.perf_counter() - t0)

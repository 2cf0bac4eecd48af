"""The host link protocol and the two components that speak it on the board:
`CommandDecoder` (bytes from the host -> accelerator streams) and `ReplyEncoder`
(result rows and control replies -> framed bytes to the host).

Host to board, one command after another, no framing bytes (docs/boards.md, "Host link"):

- ``I`` (0x49): identify. Reply ``i``: `identify_payload`.
- ``T`` (0x54), the command word (`cmd_bytes`), then K beat pairs: the A beat
  (`a_bytes`) and the B beat (`b_bytes`) of step k. Reply ``t``: the tile's R result
  rows, `row_bytes` each. Tiles may follow each other without waiting for replies, at
  most `Accelerator.max_tiles` un-answered.
- ``M`` (0x4D), mode byte: set the multiplier mode. Reply ``m``: the mode.
- ``C`` (0x43): read and clear the cycle counter (cycles with a tile in flight).
  Reply ``c``: 8 bytes.

Every multi-byte field is little-endian, every packed value least significant bit first.
Control commands (I, M, C, and errors) are answered once every earlier tile is answered.

Board to host, every reply a frame: header byte, payload length (2 bytes), payload,
CRC-16/XMODEM (polynomial 0x1021, initial 0; 2 bytes) of header, length and payload.
A bad command gets an ``e`` reply (payload: error code, the offending byte) instead of
a hang: `ERR_OPCODE` for an unknown opcode (the decoder reads the next byte as an opcode),
`ERR_K` for a tile with K above max_k (its beats are read and dropped), `ERR_MODE` for a
mode out of range. A frame that stops arriving half-way (no byte for `timeout` cycles)
is dropped and the accelerator reset, so a host that died mid-tile leaves the board
ready for the next one.
"""

from __future__ import annotations

import struct

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from axsa.rtl.component import CheckedComponent

__all__ = ["CTRL_CYCLES", "CTRL_ERROR", "CTRL_IDENTIFY", "CTRL_MODE", "CommandDecoder",
           "ERR_K", "ERR_MODE", "ERR_OPCODE", "IDENTIFY_FORMAT", "MAGIC", "OP_CYCLES",
           "OP_IDENTIFY", "OP_MODE", "OP_TILE", "PROTOCOL_VERSION", "REPLY", "ReplyEncoder",
           "crc16_xmodem", "identify_payload", "link_sizes"]

OP_IDENTIFY, OP_TILE, OP_MODE, OP_CYCLES = b"ITMC"
#: reply header byte per reply kind
REPLY = {"identify": ord("i"), "tile": ord("t"), "mode": ord("m"), "cycles": ord("c"),
         "error": ord("e")}
ERR_OPCODE, ERR_K, ERR_MODE = 1, 2, 3
MAGIC = b"AXSA"
PROTOCOL_VERSION = 1
#: control reply kinds (`CommandDecoder.ctrl` payload ``kind``)
CTRL_IDENTIFY, CTRL_MODE, CTRL_CYCLES, CTRL_ERROR = range(4)
#: bytes of the cycle counter's reply (the counter itself has `CYCLE_BITS`)
CYCLE_BYTES = 8
CYCLE_BITS = 48

ctrl_layout = data.StructLayout({"kind": 2, "code": 8, "arg": 8})


def _bytes_for(bits: int) -> int:
    return -(-bits // 8)


def link_sizes(acc) -> dict:
    """Bytes on the link of an accelerator's values: ``cmd`` (a command word), ``a`` and
    ``b`` (one beat each), ``row`` (one result row). `acc` is an `Accelerator`, or
    anything with its ``multiplier``, ``rows``, ``cols``, ``acc_width`` and
    ``cmd_layout`` (the host's `axsa.board_host.BoardInfo`)."""
    fmt = acc.multiplier.fmt
    return {"cmd": _bytes_for(acc.cmd_layout.size),
            "a": _bytes_for(acc.rows * fmt.a_width),
            "b": _bytes_for(acc.cols * fmt.b_width),
            "row": _bytes_for(acc.cols * acc.acc_width)}


#: `identify_payload`'s fixed part after the magic (`struct` format)
IDENTIFY_FORMAT = "<BHHIBBIHB"


def identify_payload(acc, clk_freq: float, divisor: int) -> bytes:
    """The ``i`` reply's payload: magic ``AXSA``, protocol version (1 byte), rows, cols
    (2 bytes each), max_k (4), acc_width (1), tiles in flight at most
    (`Accelerator.max_tiles`, 1), clock frequency in Hz (4), baud divisor (2), the
    multiplier spec's length (1) and the spec (ASCII)."""
    spec = acc.multiplier.spec.encode("ascii")
    return (MAGIC + struct.pack(IDENTIFY_FORMAT, PROTOCOL_VERSION, acc.rows, acc.cols,
                                acc.max_k, acc.acc_width, acc.max_tiles, round(clk_freq),
                                divisor, len(spec)) + spec)


def crc16_xmodem(data_bytes: bytes, crc: int = 0) -> int:
    """CRC-16/XMODEM of `data_bytes` (what `ReplyEncoder` appends; `binascii.crc_hqx`)."""
    import binascii
    return binascii.crc_hqx(data_bytes, crc)


def _crc16_step(m: Module, crc, byte) -> Signal:
    """The next CRC-16/XMODEM register value after `byte`: 8 unrolled shift steps, each
    its own signal (an expression reused in both arms of a Mux would double per step)."""
    value = crc ^ Cat(Const(0, 8), byte)
    for i in range(8):
        stage = Signal(16, name=f"crc_step{i}")
        m.d.comb += stage.eq(Cat(Const(0, 1), value[:15]) ^ Mux(value[15], 0x1021, 0))
        value = stage
    return value


class CommandDecoder(CheckedComponent):
    """Parses the host's command bytes (module docstring) into the accelerator's streams.

    ``i`` takes bytes (from the UART receiver); ``cmd``, ``a``, ``b`` carry the tile
    commands and operand beats to the `Accelerator`; ``mode`` holds the multiplier mode;
    ``ctrl`` asks the `ReplyEncoder` for a control reply (``kind``: one of the ``CTRL_*``;
    ``code``, ``arg``: an error's code and offending byte, or the mode), offered only while
    ``idle`` (no tile in flight, no reply frame being sent), so replies keep command order.
    ``abort`` pulses when a frame stopped arriving for `timeout` cycles (the top resets the
    accelerator and the encoder with it).

    Latency: a beat is offered the cycle after its last byte. Throughput: one byte per
    cycle (a beat's push costs one more cycle), far above any UART's.

    Parameters
    ----------
    acc : Accelerator
        Sets the command and beat layouts, max_k and the modes.
    timeout : int
        Cycles without a byte after which a frame begun is dropped.
    """

    @staticmethod
    def check(acc, timeout):
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            raise ValueError(f"timeout must be a positive number of cycles, not {timeout!r}")

    def __init__(self, acc, timeout: int):
        self.acc_sig = acc.signature
        self.max_k, self.modes = acc.max_k, acc.multiplier.modes
        self.sizes = link_sizes(acc)
        self.timeout = timeout
        self.cmd_layout = acc.cmd_layout
        ports = {
            "i": In(stream.Signature(8)),
            "cmd": Out(stream.Signature(acc.cmd_layout)),
            "a": Out(acc.signature.members["a"].signature.flip()),
            "b": Out(acc.signature.members["b"].signature.flip()),
            "ctrl": Out(stream.Signature(ctrl_layout)),
            "mode": Out(range(max(2, self.modes))),
            "idle": In(1),
            "abort": Out(1),
        }
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        sizes = self.sizes
        width = 8 * max(sizes["cmd"], sizes["a"], sizes["b"])
        shreg = Signal(width)       # bytes enter at the top: the first ends lowest
        n_bytes = Signal(range(width // 8 + 1))
        k_left = Signal(range(self.max_k + 1 if self.max_k > 1 else 2))
        discard = Signal()          # a bad tile: read its beats, push nothing
        pending = Signal.like(self.ctrl.payload)
        next_mode = Signal.like(self.mode)
        idle_for = Signal(range(self.timeout + 1))

        def field(n):
            """The last `n` bytes received, first byte lowest."""
            return shreg[width - 8 * n:]

        byte = self.i.payload
        got = self.i.valid & self.i.ready
        with m.If(got):
            m.d.sync += [shreg.eq(Cat(shreg[8:], byte)), n_bytes.eq(n_bytes + 1)]

        def reply(kind, code=0, arg=0):
            return [pending.kind.eq(kind), pending.code.eq(code), pending.arg.eq(arg)]

        cmd = data.View(self.cmd_layout, field(sizes["cmd"])[:self.cmd_layout.size])
        with m.FSM() as fsm:
            with m.State("OP"):
                m.d.comb += self.i.ready.eq(1)
                m.d.sync += n_bytes.eq(0)
                with m.If(got):
                    with m.Switch(byte):
                        with m.Case(OP_TILE):
                            m.next = "CMD"
                        with m.Case(OP_IDENTIFY):
                            m.d.sync += reply(CTRL_IDENTIFY)
                            m.next = "REPLY"
                        with m.Case(OP_CYCLES):
                            m.d.sync += reply(CTRL_CYCLES)
                            m.next = "REPLY"
                        with m.Case(OP_MODE):
                            m.next = "MODE"
                        with m.Default():
                            m.d.sync += reply(CTRL_ERROR, ERR_OPCODE, byte)
                            m.next = "REPLY"
            with m.State("CMD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.abort):
                    m.next = "OP"
                with m.If(n_bytes == sizes["cmd"]):
                    m.d.comb += self.i.ready.eq(0)
                    m.d.sync += [n_bytes.eq(0), k_left.eq(cmd.k_minus_1 + 1)]
                    with m.If(cmd.k_minus_1 >= self.max_k):
                        m.d.sync += [discard.eq(1), reply(CTRL_ERROR, ERR_K, 0)]
                        m.next = "A"
                    with m.Else():
                        m.d.sync += discard.eq(0)
                        m.next = "PUSH_CMD"
            with m.State("PUSH_CMD"):
                m.d.comb += [self.cmd.valid.eq(1), self.cmd.payload.eq(cmd)]
                with m.If(self.cmd.ready):
                    m.next = "A"
            for name, after in (("a", "B"), ("b", None)):
                with m.State(name.upper()):
                    m.d.comb += self.i.ready.eq(n_bytes != sizes[name])
                    with m.If(n_bytes == sizes[name]):
                        m.d.sync += n_bytes.eq(0)
                        m.next = f"PUSH_{name.upper()}"
                    with m.Elif(self.abort):
                        m.next = "OP"
                with m.State(f"PUSH_{name.upper()}"):
                    port = getattr(self, name)
                    m.d.comb += [port.valid.eq(~discard),
                                 port.payload.eq(field(sizes[name])[:port.payload.shape().size])]
                    with m.If(port.ready | discard):
                        if after is not None:
                            m.next = after
                        else:
                            m.d.sync += k_left.eq(k_left - 1)
                            with m.If(k_left != 1):
                                m.next = "A"
                            with m.Elif(discard):
                                m.next = "REPLY"
                            with m.Else():
                                m.next = "OP"
            with m.State("MODE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.abort):
                    m.next = "OP"
                with m.Elif(got):
                    with m.If(byte < self.modes):
                        m.d.sync += [next_mode.eq(byte), reply(CTRL_MODE, 0, byte)]
                    with m.Else():
                        m.d.sync += reply(CTRL_ERROR, ERR_MODE, byte)
                    m.next = "REPLY"
            with m.State("REPLY"):
                m.d.comb += [self.ctrl.valid.eq(self.idle), self.ctrl.payload.eq(pending)]
                with m.If(self.ctrl.valid & self.ctrl.ready):
                    with m.If(pending.kind == CTRL_MODE):
                        m.d.sync += self.mode.eq(next_mode)
                    m.next = "OP"


        # a frame begun that stops arriving is dropped (the host went away)
        waiting = fsm.ongoing("CMD") | fsm.ongoing("A") | fsm.ongoing("B") \
            | fsm.ongoing("MODE")
        m.d.comb += self.abort.eq(waiting & (idle_for == self.timeout))
        with m.If(~waiting | got | self.abort):
            m.d.sync += idle_for.eq(0)
        with m.Else():
            m.d.sync += idle_for.eq(idle_for + 1)
        return m


class ReplyEncoder(CheckedComponent):
    """Frames the replies (module docstring) into bytes on ``o`` (to the UART sender).

    A tile's R result rows from ``result`` make one ``t`` frame, each row's bytes read
    straight off the row held on ``result`` (taken after its last byte); a ``ctrl``
    request makes one control frame: the identify ROM (`identify_payload`), the mode, an
    error, or the cycle counter ``cycles`` (captured when the request is taken, when
    ``cycles_clear`` pulses). Rows come before control requests; ``busy`` is high while a
    frame is being sent. The CRC-16 is worked out one byte per cycle as bytes leave.

    Latency: a frame's first byte is offered the cycle after it begins. Throughput: one
    byte per cycle.

    Parameters
    ----------
    acc : Accelerator
        Sets the result layout and rows per tile.
    ident : bytes
        The identify reply's payload.
    """

    @staticmethod
    def check(acc, ident):
        tile = acc.rows * link_sizes(acc)["row"]
        if tile > 0xFFFF:
            raise ValueError(f"a tile reply of {tile} bytes exceeds the 16-bit length "
                             "field: use fewer rows or columns")
        if not 1 <= len(ident) <= 255:
            raise ValueError(f"identify payload of {len(ident)} bytes is outside 1..255")

    def __init__(self, acc, ident: bytes):
        self.rows = acc.rows
        self.row_bytes = link_sizes(acc)["row"]
        self.ident = bytes(ident)
        super().__init__({
            "result": In(stream.Signature(acc.result_layout)),
            "ctrl": In(stream.Signature(ctrl_layout)),
            "cycles": In(CYCLE_BITS),
            "cycles_clear": Out(1),
            "o": Out(stream.Signature(8)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        R, row_bytes = self.rows, self.row_bytes
        tile_len = R * row_bytes
        is_tile = Signal()
        req = Signal.like(self.ctrl.payload)
        captured = Signal(8 * CYCLE_BYTES)
        length = Signal(16)
        index = Signal(16)          # payload byte of the frame
        col = Signal(range(max(2, row_bytes)))  # byte of the current result row
        crc = Signal(16)
        out = self.o.payload
        sent = self.o.valid & self.o.ready
        next_crc = _crc16_step(m, crc, out)

        ctrl_header = Array(Const(REPLY[name], 8)
                            for name in ("identify", "mode", "cycles", "error"))[req.kind]
        header = Mux(is_tile, REPLY["tile"], ctrl_header)

        ctrl_byte = Signal(8)
        ident = Array(Const(b, 8) for b in self.ident)
        with m.Switch(req.kind):
            with m.Case(CTRL_IDENTIFY):
                m.d.comb += ctrl_byte.eq(ident[index[:max(1, (len(self.ident) - 1)
                                                          .bit_length())]])
            with m.Case(CTRL_MODE):
                m.d.comb += ctrl_byte.eq(req.arg)
            with m.Case(CTRL_CYCLES):
                m.d.comb += ctrl_byte.eq(captured.word_select(index[:3], 8))
            with m.Case(CTRL_ERROR):
                m.d.comb += ctrl_byte.eq(Mux(index[0], req.arg, req.code))
        row = self.result.payload.as_value()
        row_byte = Cat(row, Const(0, 8 * row_bytes - len(row))).word_select(col, 8)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.sync += [crc.eq(0), index.eq(0), col.eq(0)]
                with m.If(self.result.valid):
                    m.d.sync += [is_tile.eq(1), length.eq(tile_len)]
                    m.next = "HEADER"
                with m.Elif(self.ctrl.valid):
                    m.d.comb += self.ctrl.ready.eq(1)
                    lengths = {CTRL_IDENTIFY: len(self.ident), CTRL_MODE: 1,
                               CTRL_CYCLES: CYCLE_BYTES, CTRL_ERROR: 2}
                    m.d.sync += [is_tile.eq(0), req.eq(self.ctrl.payload),
                                 length.eq(Array(Const(lengths[k], 16) for k in range(4))
                                           [self.ctrl.payload.kind])]
                    with m.If(self.ctrl.payload.kind == CTRL_CYCLES):
                        m.d.comb += self.cycles_clear.eq(1)
                        m.d.sync += captured.eq(self.cycles)
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += [self.o.valid.eq(1), out.eq(header)]
                with m.If(sent):
                    m.d.sync += crc.eq(next_crc)
                    m.next = "LEN0"
            with m.State("LEN0"):
                m.d.comb += [self.o.valid.eq(1), out.eq(length[:8])]
                with m.If(sent):
                    m.d.sync += crc.eq(next_crc)
                    m.next = "LEN1"
            with m.State("LEN1"):
                m.d.comb += [self.o.valid.eq(1), out.eq(length[8:])]
                with m.If(sent):
                    m.d.sync += crc.eq(next_crc)
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [self.o.valid.eq(1), out.eq(Mux(is_tile, row_byte, ctrl_byte))]
                with m.If(sent):
                    m.d.sync += [index.eq(index + 1), crc.eq(next_crc)]
                    with m.If(is_tile):
                        m.d.sync += col.eq(Mux(col == row_bytes - 1, 0, col + 1))
                        with m.If(col == row_bytes - 1):
                            m.d.comb += self.result.ready.eq(1)
                    with m.If(index == length - 1):
                        m.next = "CRC0"
            with m.State("CRC0"):
                m.d.comb += [self.o.valid.eq(1), out.eq(crc[:8])]
                with m.If(sent):
                    m.next = "CRC1"
            with m.State("CRC1"):
                m.d.comb += [self.o.valid.eq(1), out.eq(crc[8:])]
                with m.If(sent):
                    m.next = "IDLE"
            m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m

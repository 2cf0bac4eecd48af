"""The board top on pysim, at the pins: bytes sent bit by bit on ``rx``, the reply read
off ``tx`` sample by sample and its framing checked against the divisor's timing."""

import binascii
import struct

import pytest
from amaranth.sim import Simulator
from axsa.rtl.boards.top import BoardTop
from axsa.rtl.multipliers import parse_spec

DIVISOR = 5


@pytest.fixture(scope="module")
def top():
    # clk_freq 1 MHz / divisor 5: a 200 kBd link; a 2x2 array of 4-bit exact multipliers
    return BoardTop(parse_spec("exact@s4"), 2, 2, clk_freq=1e6, divisor=DIVISOR, max_k=8)


def _frame_bits(byte: int) -> list[int]:
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


def run_pins(top, rx_bytes: bytes, cycles: int) -> list[int]:
    """Drive `rx_bytes` onto ``rx`` (8N1, back to back, after 3 idle bits) and return
    ``tx`` sampled once per cycle for `cycles` cycles."""
    samples = []

    async def drive(ctx):
        ctx.set(top.rx, 1)
        await ctx.tick().repeat(3 * DIVISOR)
        for byte in rx_bytes:
            for bit in _frame_bits(byte):
                ctx.set(top.rx, bit)
                await ctx.tick().repeat(DIVISOR)
        ctx.set(top.rx, 1)

    async def watch(ctx):
        for _ in range(cycles):
            samples.append(ctx.get(top.tx))
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(drive, background=True)
    sim.add_testbench(watch)
    sim.run()
    return samples


def decode_strict(samples: list[int], divisor: int) -> bytes:
    """Bytes on a sampled line, asserting every frame's shape sample by sample: the
    start bit low for exactly `divisor` samples, each data bit (LSB first) constant for
    `divisor` samples, the stop bit high for at least `divisor` samples."""
    out = []
    t = 0
    assert samples[0] == 1, "the line does not idle high"
    while True:
        try:
            t = samples.index(0, t)
        except ValueError:
            return bytes(out)
        bits = [samples[t + i * divisor:t + (i + 1) * divisor] for i in range(10)]
        assert len(bits[9]) == divisor, f"frame at sample {t} is cut off"
        assert bits[0] == [0] * divisor, f"start bit at {t}: {bits[0]}"
        for i, cell in enumerate(bits[1:9]):
            assert cell == [cell[0]] * divisor, f"data bit {i} of the frame at {t}: {cell}"
        assert bits[9] == [1] * divisor, f"stop bit of the frame at {t}: {bits[9]}"
        out.append(sum(cell[0] << i for i, cell in enumerate(bits[1:9])))
        t += 10 * divisor


def _expected_frame(header: bytes, payload: bytes) -> bytes:
    body = header + struct.pack("<H", len(payload)) + payload
    return body + struct.pack("<H", binascii.crc_hqx(body, 0))


def test_identify_at_the_pins(top):
    # the reply, written out independently of the RTL's identify_payload
    spec = b"exact@s4"
    acc_width = top.accelerator.acc_width
    payload = (b"AXSA" + bytes([1]) + (2).to_bytes(2, "little") * 2
               + (8).to_bytes(4, "little") + bytes([acc_width, top.accelerator.max_tiles])
               + (1_000_000).to_bytes(4, "little") + (DIVISOR).to_bytes(2, "little")
               + bytes([len(spec)]) + spec)
    expected = _expected_frame(b"i", payload)
    cycles = 3 * DIVISOR + 10 * DIVISOR * (1 + len(expected)) + 200
    samples = run_pins(top, b"I", cycles)
    assert decode_strict(samples, DIVISOR) == expected
    # the reply's frames follow each other without a gap: start bits 10 bits apart
    first = samples.index(0)
    starts = [first + 10 * DIVISOR * i for i in range(len(expected))]
    assert all(samples[s] == 0 and samples[s - 1] == 1 for s in starts)


def test_bad_opcode_is_an_error_reply(top):
    expected = _expected_frame(b"e", bytes([1, 0x5A]))  # ERR_OPCODE, the byte 'Z'
    cycles = 3 * DIVISOR + 10 * DIVISOR * (1 + len(expected)) + 200
    assert decode_strict(run_pins(top, b"Z", cycles), DIVISOR) == expected


def test_a_tile_at_the_pins(top):
    # one 2x2 tile, K = 2, exact 4-bit: A = [[1, -2], [3, 4]], B = [[5, 6], [-7, 0]]
    A = [[1, -2], [3, 4]]
    B = [[5, 6], [-7, 0]]
    acc = top.accelerator
    width = acc.acc_width
    cmd_bits = acc.cmd_layout.size
    cmd = (2 - 1).to_bytes(-(-cmd_bits // 8), "little")  # k_minus_1 = 1, no requant

    def nibbles(values):  # two signed 4-bit fields, first lowest
        return bytes([(values[0] & 15) | ((values[1] & 15) << 4)])

    beats = b"".join(nibbles([A[0][k], A[1][k]]) + nibbles(B[k]) for k in range(2))
    C = [[sum(A[i][k] * B[k][j] for k in range(2)) for j in range(2)] for i in range(2)]
    rows = b"".join(
        sum((C[i][j] & ((1 << width) - 1)) << (j * width) for j in range(2))
        .to_bytes(-(-2 * width // 8), "little") for i in range(2))
    expected = _expected_frame(b"t", rows)
    sent = b"T" + cmd + beats
    cycles = 3 * DIVISOR + 10 * DIVISOR * (len(sent) + len(expected) + 2) + 400
    assert decode_strict(run_pins(top, sent, cycles), DIVISOR) == expected

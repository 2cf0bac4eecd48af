"""`axsa run` against `axsa board-sim` on a real pseudo-terminal, both as CLI calls in
their own processes, results checked bit-exactly against the emulation; and what the
host does when the board misbehaves or goes away."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from axsa.rtl.multipliers import parse_spec
from axsa.sim.driver import emulate_gemm
from axsa.sim.reference import requantize

from axsa.board_host import BoardLink, run_board_gemm
from axsa.errors import InputError, ToolError

APPROX = "cfgtrunc(k=0/3/6)@s8"


def axsa(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "axsa.cli", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


class BoardSim:
    """An `axsa board-sim` process and the port it serves."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "axsa.cli", "board-sim", "--json", *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the JSON object is printed (and flushed) once the port is served
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            if line.startswith("}"):
                break
        if not lines:
            raise RuntimeError(f"board-sim did not start: {self.proc.stderr.read()}")
        self.info = json.loads("".join(lines))
        self.port = self.info["port"]

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


@pytest.fixture(scope="module")
def exact_board():
    # a 2x3 array with max_k 16: odd tiles, and K = 40 split into chunks on the host
    sim = BoardSim("--board", "icebreaker", "--rows", 2, "--cols", 3, "--max-k", 16,
                   "--mult", "exact@s8", "--divisor", 4)
    yield sim
    # SIGTERM ends it as Ctrl-C does: exit 130
    assert sim.stop() == 130


@pytest.fixture(scope="module")
def approx_board():
    sim = BoardSim("--board", "icebreaker", "--rows", 2, "--cols", 2, "--max-k", 64,
                   "--mult", APPROX, "--divisor", 5)
    yield sim
    assert sim.stop() == 130


def operands(tmp_path, M, K, N, seed, lo=-128, hi=127):
    rng = np.random.default_rng(seed)
    A = rng.integers(lo, hi + 1, (M, K))
    B = rng.integers(lo, hi + 1, (K, N))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    return A, B, str(tmp_path / "A.npy"), str(tmp_path / "B.npy")


def run_on(board, tmp_path, a_path, b_path, *extra):
    out = tmp_path / "C.npy"
    r = axsa("run", "--port", board.port, a_path, b_path, "--out", out, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), np.load(out)


@pytest.mark.parametrize("M, K, N", [(5, 7, 3), (13, 40, 9), (1, 1, 1), (2, 16, 3)])
def test_exact_gemms_of_odd_shapes(exact_board, tmp_path, M, K, N):
    A, B, a_path, b_path = operands(tmp_path, M, K, N, seed=M * K * N)
    data, C = run_on(exact_board, tmp_path, a_path, b_path)
    assert C.dtype == np.int64
    np.testing.assert_array_equal(C, A @ B)  # exact products: plain integer GEMM
    tiles = -(-M // 2) * -(-N // 3) * -(-K // 16)
    assert (data["M"], data["K"], data["N"], data["tiles"]) == (M, K, N, tiles)
    assert (data["rows"], data["cols"], data["max_k"], data["mult"]) == (2, 3, 16, "exact@s8")
    # each tile: opcode, the 127-bit command word (4 bits K - 1, 9 of output range, 3 x
    # (32 + 6) of m and s) in 16 bytes, K beats of 2 + 3 bytes (two A, three B operands);
    # before and after the tiles a cycle read, 1 byte out and 5 + 8 back
    chunks = [min(16, K - k0) for k0 in range(0, K, 16)]
    tiles_per_chunk = -(-M // 2) * -(-N // 3)
    assert data["bytes_sent"] == 2 + tiles_per_chunk * sum(17 + 5 * k for k in chunks)
    # each reply: header, length, 2 rows of 3 acc_width-bit elements, CRC
    row = -(-3 * data["acc_width"] // 8)
    assert data["bytes_received"] == 2 * 13 + tiles * (5 + 2 * row)
    assert data["cycles"] > 0


def test_requantized_gemm(exact_board, tmp_path):
    A, B, a_path, b_path = operands(tmp_path, 7, 12, 5, seed=3)
    data, C = run_on(exact_board, tmp_path, a_path, b_path, "--requant", "3,10")
    acc = A @ B
    expected = np.clip((acc * 3 + (1 << 9)) >> 10, -128, 127)  # written out, not imported
    np.testing.assert_array_equal(C, expected)
    assert data["requant"] == {"m": 3, "s": 10, "bits": 8, "signed": True}
    assert len(np.unique(C)) > 10  # mostly not clamped: a real test of the rounding


def test_requant_needs_the_whole_k(exact_board, tmp_path):
    _, _, a_path, b_path = operands(tmp_path, 3, 17, 2, seed=4)
    r = axsa("run", "--port", exact_board.port, a_path, b_path, "--requant", "3,10")
    assert r.returncode == 2
    assert "K = 17 exceeds the board's max_k = 16" in r.stderr


def test_approximate_multiplier_with_modes(approx_board, tmp_path):
    mult = parse_spec(APPROX)
    A, B, a_path, b_path = operands(tmp_path, 5, 33, 3, seed=5)
    results = {}
    for mode in (0, 2):
        _, results[mode] = run_on(approx_board, tmp_path, a_path, b_path, "--mode", mode)
        np.testing.assert_array_equal(results[mode], emulate_gemm(A, B, mult, mode))
    # mode 2 truncates 6 bits: the results differ from the exact ones
    assert (results[0] == A @ B).all() and not (results[2] == A @ B).all()
    # requantized, through the same multiplier
    _, C = run_on(approx_board, tmp_path, a_path, b_path, "--mode", 1, "--requant", "5,11",
                  "--requant-bits", 6, "--requant-unsigned")
    acc = emulate_gemm(A, B, mult, 1)
    np.testing.assert_array_equal(C, requantize(acc, np.full(3, 5), np.full(3, 11), 6, False))


def test_bad_mode_is_named(approx_board, tmp_path):
    _, _, a_path, b_path = operands(tmp_path, 2, 3, 2, seed=6)
    r = axsa("run", "--port", approx_board.port, a_path, b_path, "--mode", 3)
    assert r.returncode == 2
    assert "mode 3 is out of range 0..2" in r.stderr


def test_error_replies_and_reconnection(exact_board):
    with BoardLink(exact_board.port, timeout=30) as link:
        link.send(b"Z")  # unknown opcode
        with pytest.raises(ToolError, match="unknown opcode 0x5a"):
            link.reply("identify")
        link.send(b"M\x01")  # exact@s8 has one mode
        with pytest.raises(ToolError, match="mode 1 out of range"):
            link.reply("mode")
        assert link.identify().spec == "exact@s8"  # the board is still in step
    # a second session on the same board (the first closed its port)
    with BoardLink(exact_board.port, timeout=30) as link:
        res = run_board_gemm(link, np.eye(3, dtype=np.int64), np.arange(9).reshape(3, 3))
        np.testing.assert_array_equal(res.C, np.arange(9).reshape(3, 3))


def test_missing_port_exits_2_naming_it(tmp_path):
    _, _, a_path, b_path = operands(tmp_path, 2, 2, 2, seed=7)
    missing = tmp_path / "ttyNOPE"
    r = axsa("run", "--port", missing, a_path, b_path)
    assert r.returncode == 2
    assert str(missing) in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(InputError, match="ttyNOPE"):
        BoardLink(str(missing))


def test_killed_board_mid_transfer_is_a_tool_error():
    sim = BoardSim("--board", "icebreaker", "--rows", 2, "--cols", 3, "--max-k", 16,
                   "--mult", "exact@s8", "--divisor", 4)  # the compiled design is cached
    link = BoardLink(sim.port, timeout=30)
    try:
        link.send(b"T" + bytes(5))  # half a tile
        sim.stop(signal.SIGKILL)
        with pytest.raises(ToolError, match=sim.port):
            link.send(bytes(64))
            link.reply("tile")
    finally:
        link.close()


def test_silent_board_times_out_naming_the_port():
    sim = BoardSim("--board", "icebreaker", "--rows", 2, "--cols", 3, "--max-k", 16,
                   "--mult", "exact@s8", "--divisor", 4)
    link = BoardLink(sim.port, timeout=1.0)
    try:
        os.kill(sim.proc.pid, signal.SIGSTOP)  # alive, port open, answering nothing
        link.send(b"C")
        with pytest.raises(ToolError, match=f"{sim.port}: timeout"):
            link.reply("cycles")
    finally:
        link.close()
        os.kill(sim.proc.pid, signal.SIGCONT)
        assert sim.stop() == 130


def test_bad_reply_checksum_is_named():
    """A corrupted reply (a bit flipped on the line) is a ToolError naming the CRC, from
    a pseudo-terminal whose other end this test plays by hand."""
    from axsa.rtl.boards.link import crc16_xmodem
    from axsa.sim.board_sim import open_pty

    master, path = open_pty()
    os.set_blocking(master, True)
    try:
        link = BoardLink(path, timeout=5, identify=False)  # the test plays the board
        body = b"c\x08\x00" + (1234).to_bytes(8, "little")
        good = body + crc16_xmodem(body).to_bytes(2, "little")
        os.write(master, good)
        assert link.reply("cycles", 8) == (1234).to_bytes(8, "little")
        bad = bytearray(good)
        bad[5] ^= 0x10
        os.write(master, bytes(bad))
        with pytest.raises(ToolError, match="CRC"):
            link.reply("cycles", 8)
        os.write(master, b"t\x03\x00abc" + bytes(2))
        with pytest.raises(ToolError, match="length 3, expected 12"):
            link.reply("tile", 12)
        link.close()
    finally:
        os.close(master)


def test_simulated_board_takes_long_input_over_many_calls():
    """A block of bytes longer than one call's cycles is taken in part, and the frame
    under way at the end of a call goes on in the next: eight tiles sent in calls of
    only 1000 cycles (25 bytes at 40 cycles per byte) all come back right."""
    from axsa.sim.board_sim import build_board

    from axsa.board_host import _tile_bytes, parse_identify

    board = build_board(parse_spec("exact@s8"), 2, 3, max_k=16, clk_freq=12e6, divisor=4)
    try:
        _, reply, quiet = board.exchange(b"I")
        assert quiet
        info = parse_identify(reply[3:-2], "sim")
        rng = np.random.default_rng(8)
        A = rng.integers(-128, 128, (16, 16))  # 8 row blocks of 2: 8 tiles of K = 16
        B = rng.integers(-128, 128, (16, 3))
        data = _tile_bytes(info, A, B, None).tobytes()
        assert len(data) == 8 * (1 + 16 + 16 * 5)
        out = b""
        calls = 0
        while data:
            taken, more, _ = board.exchange(data, max_cycles=1000)
            assert taken <= 26  # a call of 1000 cycles begins at most 26 frames
            data, out = data[taken:], out + more
            calls += 1
        assert calls >= 8 * 97 // 26
        while not quiet:  # the rest of the replies
            _, more, quiet = board.exchange()
            out += more
        row = -(-3 * info.acc_width // 8)
        frame = 5 + 2 * row
        assert len(out) == 8 * frame
        mask = (1 << info.acc_width) - 1
        for t in range(8):
            payload = out[t * frame + 3:(t + 1) * frame - 2]
            for r in range(2):
                word = int.from_bytes(payload[r * row:(r + 1) * row], "little")
                got = [(word >> (c * info.acc_width)) & mask for c in range(3)]
                want = [int(v) & mask for v in (A @ B)[2 * t + r]]
                assert got == want
    finally:
        board.close()

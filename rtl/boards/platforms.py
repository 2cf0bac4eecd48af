"""The boards axsa builds bitstreams for: one table, `BOARDS`, read by every board command.

Each `Board` names its amaranth-boards platform class, the clock it runs the design at
(the board's oscillator, Amaranth's default ``sync`` clock), the device's resources that
utilization is reported against, and the default accelerator configuration (array size,
multiplier, operand bits), chosen by measurement (docs/boards.md, "Bitstreams").

>>> from axsa.rtl.boards.platforms import board
>>> b = board("icebreaker")
>>> b.clock_mhz, b.resources["LUT"]
(12.0, 5280)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from axsa.errors import InputError

#: utilization categories, in the order they are reported
RESOURCES = ("LUT", "FF", "carry", "DSP", "BRAM")


@dataclass(frozen=True)
class Board:
    """One board: its platform, clock, resources and default configuration.

    Attributes
    ----------
    name : str
        The ``--board`` name.
    platform : str
        ``module:Class`` of its amaranth-boards platform (imported on use).
    family : {"ice40", "ecp5"}
        The FPGA family (Yosys ``synth_<family>``, nextpnr-<family>).
    device : str
        The FPGA, as its vendor names it.
    clock_hz : float
        The board clock the design runs at (the platform's default clock).
    resources : dict[str, int]
        Available LUT4s, flip-flops, carry cells (iCE40 SB_CARRY: one per LUT; ECP5 CCU2C:
        one per two LUTs), DSP blocks (SB_MAC16 / MULT18X18D) and block RAMs
        (iCE40 EBR SB_RAM40_4K / ECP5 DP16KD), from the device datasheets; nextpnr's
        report agrees (checked in `axsa.synth.board`).
    rows, cols : int
        Default array size.
    mult : str
        Default multiplier spec without its format (``"exact"``, ``"trunc(k=4)"``).
    bits : int
        Default operand width (signed operands, format ``s<bits>``).
    """

    name: str
    platform: str
    family: str
    device: str
    clock_hz: float
    resources: dict[str, int] = field(default_factory=dict)
    rows: int = 2
    cols: int = 2
    mult: str = "exact"
    bits: int = 8

    @property
    def clock_mhz(self) -> float:
        return self.clock_hz / 1e6

    def platform_class(self) -> type:
        """The amaranth-boards platform class (imported here: amaranth-boards is heavy)."""
        module, _, name = self.platform.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def default_spec(self) -> str:
        return f"{self.mult}@s{self.bits}"


#: every board, by ``--board`` name
BOARDS: dict[str, Board] = {b.name: b for b in (
    Board("icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", "ice40",
          "iCE40UP5K-SG48", 12e6,
          {"LUT": 5280, "FF": 5280, "carry": 5280, "DSP": 8, "BRAM": 30},
          rows=8, cols=2, mult="exact", bits=4),
    Board("ulx3s-85f", "amaranth_boards.ulx3s:ULX3S_85F_Platform", "ecp5",
          "LFE5U-85F-6BG381C", 25e6,
          {"LUT": 83640, "FF": 83640, "carry": 41820, "DSP": 156, "BRAM": 208},
          rows=16, cols=16, mult="trunc(k=4)", bits=8),
)}


def board(name: str) -> Board:
    """The board called `name`; InputError naming the known boards otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise InputError(f"unknown board {name!r} (known: {', '.join(BOARDS)})") from None

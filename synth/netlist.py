"""Gate-level netlists: load Yosys `write_json`, evaluate in numpy.

A design is mapped by the generic target (`axsa.synth.yosys`: cmos2 gates ``$_NAND_``,
``$_NOR_``, ``$_NOT_``; the evaluator also knows Yosys's other internal gates), loaded,
and evaluated bit-parallel: each net holds a row of packed 64-bit words, one bit per
input vector, and every gate of one logic level and type is computed by a single numpy
operation. That gives a multiplier's whole product table (65,536 operand pairs at 8x8) in
one pass, and per-net toggle counts over an operand stream for the energy model.

Flip-flops are not simulated through time: their Q outputs are free inputs, set by the name
of the signal they drive (`net_values(acc=...)`), so a sequential circuit whose register
sequence is known (a MAC's accumulator is a running sum) is still evaluated vectorised.

Yosys runs are cached on disk by `axsa.synth.yosys` (``$AXSA_CACHE/netlists``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from axsa.errors import InputError, ToolError
from axsa.formats import from_codes

from . import yosys
from .yosys import GATE_SETS, YosysError, cache_dir  # noqa: F401  (public names kept here)

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
        open_: set[int] = set()  # outputs of the cells on the DFS path
        for start in cells:  # iterative DFS, so deep netlists don't hit the recursion limit
            if start.output in level:
                continue
            stack = [(start, False)]
            while stack:
                cell, expanded = stack.pop()
                if cell.output in level:
                    continue
                if expanded:
                    open_.discard(cell.output)
                    level[cell.output] = 1 + max(
                        (level.get(n, 0) for n in cell.inputs.values()), default=0)
                    order.append(cell)
                    continue
                if cell.output in open_:
                    raise ToolError(f"netlist {self.top} has a combinational loop through "
                                    f"{self._loop_names(cell, driver, open_)}: the gate "
                                    "evaluator needs an acyclic netlist")
                open_.add(cell.output)
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

    def _loop_names(self, cell: Cell, driver: dict, open_: set) -> str:
        """The cells (and named signals) of the loop through `cell`, for the message."""
        loop, seen, current = [], set(), cell
        while current is not None and current.output not in seen:
            seen.add(current.output)
            loop.append(current)
            current = next((driver[n] for n in current.inputs.values()
                            if n in open_ and n in driver), None)
        names = {}
        for name, nets in self.signal_nets.items():
            for n in nets:
                names.setdefault(n, name)
        parts = [c.name + (f" ({names[c.output]})" if c.output in names else "")
                 for c in loop[:6]]
        return ", ".join(parts) + (", ..." if len(loop) > 6 else "")

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


# -- netlists of designs ------------------------------------------------------------------

def synthesize_gates(top: str, rtlil: str | None = None, verilog: list | tuple = (),
                     cache: bool = True) -> GateNetlist:
    """A design mapped by the generic target's script (`axsa.synth.yosys.generic_script`)
    and loaded, flattened.

    Parameters
    ----------
    top : str
        Top module name.
    rtlil : str, optional
        RTLIL text (from `amaranth.back.rtlil.convert`).
    verilog : list of path
        Verilog files read before `rtlil` (imported multipliers, user designs); a Yosys
        rejection of a design with Verilog files is a `YosysError` (bad input).
    cache : bool
        Reuse the run cached on disk for the same design, script and Yosys version.
    """
    files: dict[str, bytes] = {}
    read = []
    for i, v in enumerate(Path(v) for v in verilog):
        if not v.is_file():
            raise InputError(f"Verilog file {str(v)!r} does not exist")
        local = f"src{i}_{v.name}"
        files[local] = v.read_bytes()
        read.append(f"read_verilog -sv {local}")
    if rtlil is not None:
        files["design.il"] = rtlil.encode()
        read.append("read_rtlil design.il")
    design = yosys.Design(files, tuple(read), top, user_sources=bool(verilog))
    out = yosys.run(yosys.Run(files, yosys.generic_script(design), yosys.generic_outputs(design),
                              top, design.user_sources), cache)
    stat = json.loads(out["stat.json"]).get("modules", {})
    return GateNetlist(json.loads(out["netlist.json"]), top,
                       stat.get(f"\\{top}", stat.get(top, {})))


def gate_netlist(mult, cache: bool = True) -> GateNetlist:
    """A multiplier (any family, or an imported one) as the generic target maps it.

    Its ports are the multiplier module's: ``a``, ``b``, ``p`` (and ``mode``) for a
    built-in, the entry's own names for an imported one (`Unit.ports`).
    """
    from .targets import Unit, generic_run
    return generic_run(Unit(mult), cache).mult_netlist


def all_operand_codes(fmt) -> tuple[np.ndarray, np.ndarray]:
    """Every (a_code, b_code) pair in table order (a major)."""
    a = np.repeat(np.arange(1 << fmt.a_width), 1 << fmt.b_width)
    b = np.tile(np.arange(1 << fmt.b_width), 1 << fmt.a_width)
    return a, b


def codes_to_values(codes: np.ndarray, width: int, is_signed: bool) -> np.ndarray:
    """`axsa.formats.from_codes` on an int64 array."""
    return from_codes(np.asarray(codes, dtype=np.int64), width, is_signed)


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
    """The product table of `mult` read off the generic target's netlist of it."""
    from .targets import Unit, generic_run
    mult._check_mode(mode)
    run = generic_run(Unit(mult), cache)
    ports = (run.ports["a"], run.ports["b"], run.ports["p"])
    return table_from_netlist(run.mult_netlist, mult.fmt, mode if mult.modes > 1 else None,
                              ports=ports)

"""Activity-based energy per operation: gate-level toggles under an operand stream.

The design's netlist is the generic target's one mapping of it (`axsa.synth.targets.
generic_run`: cmos2 gates, the same netlist its transistors and depth come from) and it is
evaluated over a stream of operand pairs, one pair per operation, in the order the
hardware sees them. Every net's toggles between consecutive operations (zero delay) are
weighted by the net's switched capacitance: the input pin loads of the cells it drives
plus its driver's own output load, from `CELLS`; a primary output also drives `PORT_LOAD`
(the register or adder that would take the product). Dynamic energy per operation::

    E_dyn = 1/2 * VDD^2 * sum_nets(toggles_net * C_net) / (n - 1)      [fJ, fF and V]

over n operations (n - 1 transitions). Flip-flops (a MAC's accumulator) add their clock
pin, charged and discharged every cycle: ``C_clk * VDD^2`` per flip-flop per operation.
Leakage is proportional to transistor count: ``transistors * LEAK_PER_TRANSISTOR * PERIOD``
per operation at the nominal clock `PERIOD`.

Modelled: zero-delay toggles of every gate output and primary input (or, with
``glitches=True``, unit-delay toggles: the hazards of a netlist whose gates all have the
same delay), pin and output loads per cell type, flip-flop clock pins, leakage ~
transistor count. Not modelled: real-delay glitches (gate- and wire-specific delays),
wire capacitance, the clock tree, short-circuit current, voltage/temperature, cell
sizing. The figures compare circuits under the same stream (hence `energy_ratio` against
the exact multiplier of the same format); they are not sign-off numbers. The numbers in
`CELLS` are rounded X1-drive pin capacitances of a 45 nm-class open cell library;
docs/synthesis.md lists them.

Streams: `uniform_stream` (default: 10,000 uniform random operand pairs, seed 0) or
`load_stream` of a recorded file: a ``.npy`` integer array of shape (n, 2) holding operand
values (column 0 = a, column 1 = b), or a ``.npz`` with 1-D integer arrays ``a`` and ``b``
(and optionally ``clr``, 1 where a MAC starts a new sum). A stream's identity for the
results store is a hash of its values, not of its file name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from axsa.errors import InputError

#: supply voltage (V)
VDD = 1.0
#: leakage power per transistor (nW) and the nominal clock period (ns) it is charged over
LEAK_PER_TRANSISTOR_NW = 1.0
PERIOD_NS = 10.0
#: load on every bit of a primary output (fF): the next stage's input pin
PORT_LOAD = 2.0
#: default stream
DEFAULT_OPS = 10_000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class CellModel:
    """Per cell type: input pin capacitance (fF, per pin), output (driver) capacitance
    (fF), transistor count, and (flip-flops) clock pin capacitance (fF)."""

    pins: dict
    out: float
    transistors: int
    clock: float = 0.0


def _gate(cap: float, out: float, transistors: int, pins=("A", "B")) -> CellModel:
    return CellModel({p: cap for p in pins}, out, transistors)


CELLS: dict[str, CellModel] = {
    "$_BUF_": _gate(1.0, 1.6, 4, ("A",)),
    "$_NOT_": _gate(1.6, 1.0, 2, ("A",)),
    "$_NAND_": _gate(1.6, 1.4, 4),
    "$_NOR_": _gate(1.7, 1.4, 4),
    "$_AND_": _gate(0.9, 2.0, 6),
    "$_OR_": _gate(0.9, 2.0, 6),
    "$_ANDNOT_": _gate(1.0, 2.0, 6),
    "$_ORNOT_": _gate(1.0, 2.0, 6),
    "$_XOR_": _gate(2.3, 2.8, 12),
    "$_XNOR_": _gate(2.3, 2.8, 12),
    "$_MUX_": CellModel({"A": 1.0, "B": 1.0, "S": 1.9}, 2.6, 12),
    "$_NMUX_": CellModel({"A": 1.0, "B": 1.0, "S": 1.9}, 2.2, 10),
    "$_AOI3_": _gate(1.6, 1.6, 6, ("A", "B", "C")),
    "$_OAI3_": _gate(1.6, 1.6, 6, ("A", "B", "C")),
    "$_AOI4_": _gate(1.6, 1.8, 8, ("A", "B", "C", "D")),
    "$_OAI4_": _gate(1.6, 1.8, 8, ("A", "B", "C", "D")),
}
#: every flip-flop variant Yosys maps to ($_DFF_P_, $_DFFE_PP_, $_SDFF_PP0_, ...)
FLOP = CellModel({"D": 1.1, "E": 1.0, "R": 1.0, "S": 1.0}, 2.0, 24, clock=1.0)


def cell_model(kind: str) -> CellModel:
    if kind in CELLS:
        return CELLS[kind]
    if "DFF" in kind:
        return FLOP
    raise InputError(f"the energy model has no entry for cell type {kind!r}")


# -- streams -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Stream:
    """Operand values in the order the hardware sees them (int64 arrays of equal length).

    `clr` (optional, bool): a MAC starts a new sum at that operation. `identity` names the
    stream in results-store keys.
    """

    a: np.ndarray
    b: np.ndarray
    identity: str
    clr: np.ndarray | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return int(self.a.size)


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for x in arrays:
        if x is not None:
            h.update(np.ascontiguousarray(x, dtype=np.int64).tobytes())
            h.update(b"|")
    return h.hexdigest()[:20]


def uniform_stream(fmt, n: int = DEFAULT_OPS, seed: int = DEFAULT_SEED) -> Stream:
    """`n` operand pairs drawn uniformly from the format's value ranges."""
    if n < 2:
        raise InputError(f"a stream needs at least 2 operations, not {n}")
    rng = np.random.default_rng(seed)
    (alo, ahi), (blo, bhi) = fmt.a_range(), fmt.b_range()
    a = rng.integers(alo, ahi + 1, size=n, dtype=np.int64)
    b = rng.integers(blo, bhi + 1, size=n, dtype=np.int64)
    return Stream(a, b, f"uniform(n={n},seed={seed})")


def constant_stream(fmt, a: int, b: int, n: int = 100) -> Stream:
    """The same pair `n` times (zero dynamic energy by construction)."""
    return Stream(np.full(n, a, np.int64), np.full(n, b, np.int64), f"constant(a={a},b={b},n={n})")


def stream_from_values(a, b, fmt, what: str = "stream", clr=None) -> Stream:
    """A stream from value arrays, checked against `fmt` (InputError naming `what`)."""
    a = np.asarray(a)
    b = np.asarray(b)
    for name, v in (("a", a), ("b", b)):
        if v.ndim != 1:
            raise InputError(f"{what}: operand {name} must be 1-D, got shape {v.shape}")
        if not np.issubdtype(v.dtype, np.integer):
            raise InputError(f"{what}: operand {name} must hold integers, not {v.dtype}")
    if a.size != b.size:
        raise InputError(f"{what}: {a.size} values of a but {b.size} of b")
    if a.size < 2:
        raise InputError(f"{what}: needs at least 2 operations, has {a.size}")
    for name, v, (lo, hi) in (("a", a, fmt.a_range()), ("b", b, fmt.b_range())):
        if v.min() < lo or v.max() > hi:
            bad = v[(v < lo) | (v > hi)][0]
            raise InputError(f"{what}: operand {name} value {int(bad)} is outside {lo}..{hi} "
                             f"of format {fmt}")
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    if clr is not None:
        clr = np.asarray(clr)
        if clr.shape != a.shape:
            raise InputError(f"{what}: clr has shape {clr.shape}, operands {a.shape}")
        clr = clr.astype(bool)
    return Stream(a, b, f"sha256:{_digest(a, b, clr)}", clr)


def load_stream(path: str | Path, fmt) -> Stream:
    """A recorded stream: ``.npy`` (n, 2) operand values, or ``.npz`` with ``a``, ``b``
    (and optional ``clr``)."""
    p = Path(path)
    what = f"stream file {str(path)!r}"
    if not p.is_file():
        raise InputError(f"{what} does not exist")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:  # numpy raises several kinds for a bad file
        raise InputError(f"{what} is not a readable .npy/.npz file: {exc}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            missing = {"a", "b"} - set(data.files)
            if missing:
                raise InputError(f"{what} lacks array(s) {', '.join(sorted(missing))} "
                                 f"(has: {', '.join(data.files) or 'none'})")
            return stream_from_values(data["a"], data["b"], fmt, what,
                                      data["clr"] if "clr" in data.files else None)
    if data.ndim != 2 or data.shape[1] != 2:
        raise InputError(f"{what} has shape {data.shape}; expected (n, 2): one operand pair "
                         "(a, b) per row, or an .npz with arrays a and b")
    return stream_from_values(data[:, 0], data[:, 1], fmt, what)


# -- the model ---------------------------------------------------------------------------

def net_capacitance(netlist) -> np.ndarray:
    """Switched capacitance of every net (fF): loads it drives + its driver's output."""
    cap = np.zeros(netlist.n_nets)
    for c in list(netlist.cells) + list(netlist.flops):
        model = cell_model(c.type)
        for pin, net in c.inputs.items():
            if pin in ("C", "CLK"):
                continue  # the clock pin is charged per cycle, below, not per data toggle
            cap[net] += model.pins.get(pin, 1.0)
        cap[c.output] += model.out
    for name in netlist.outputs:
        cap[netlist.port_nets[name]] += PORT_LOAD
    cap[:2] = 0.0  # constants never toggle
    return cap


def transistor_count(netlist) -> int:
    """Transistors of the gate netlist by `CELLS` (leakage is proportional to it)."""
    return int(sum(cell_model(c.type).transistors
                   for c in list(netlist.cells) + list(netlist.flops)))


def energy_from_toggles(netlist, toggles: np.ndarray, n_ops: int) -> dict:
    """Energy figures (fJ per operation) from per-net toggle counts over `n_ops` operations."""
    if n_ops < 2:
        raise InputError(f"energy needs at least 2 operations, not {n_ops}")
    cap = net_capacitance(netlist)
    transitions = n_ops - 1
    dynamic = 0.5 * VDD ** 2 * float(np.dot(toggles, cap)) / transitions
    clock = sum(cell_model(f.type).clock for f in netlist.flops) * VDD ** 2
    transistors = transistor_count(netlist)
    # nW * ns = 1e-18 J = 1e-3 fJ
    leakage = transistors * LEAK_PER_TRANSISTOR_NW * PERIOD_NS * 1e-3
    return {
        "energy": round(dynamic + clock + leakage, 4),
        "energy_dynamic": round(dynamic + clock, 4),
        "energy_leakage": round(leakage, 4),
        "toggles_per_op": round(float(toggles.sum()) / transitions, 3),
        "gate_transistors": transistors,
        "gates": len(netlist.cells),
    }


def unit_delay_toggle_counts(netlist, **signals: np.ndarray) -> np.ndarray:
    """Toggles of every net under a unit-delay model (glitches included), int64 (n_nets,).

    For every transition t -> t+1 (all evaluated at once, one column each), the inputs
    and flip-flop outputs switch at time 0 from their settled values of vector t to those
    of vector t+1; at each later step every gate takes the value of its function over its
    inputs' values of the step before. Every change counts, until the netlist settles
    (at most its depth + 1 steps) on the zero-delay values of vector t+1.
    """
    from axsa.synth.netlist import GATES
    settled = netlist.net_values(**signals)  # (n_nets, n) bool
    n = settled.shape[1]
    if n < 2:
        return np.zeros(netlist.n_nets, np.int64)
    before, after = settled[:, :-1], settled[:, 1:]
    driven = np.zeros(netlist.n_nets, bool)
    groups: dict[str, tuple[list, list]] = {}
    for c in netlist.cells:
        pins = GATES[c.type][0]
        ins, outs = groups.setdefault(c.type, ([[] for _ in pins], []))
        for k, p in enumerate(pins):
            ins[k].append(c.inputs[p])
        outs.append(c.output)
        driven[c.output] = True
    groups = {k: ([np.array(i) for i in ins], np.array(outs)) for k, (ins, outs) in
              groups.items()}
    state = before.copy()
    sources = ~driven  # primary inputs, flip-flop outputs, constants: switch at time 0
    state[sources] = after[sources]
    toggles = (before[sources] != after[sources]).sum(axis=1)
    counts = np.zeros(netlist.n_nets, np.int64)
    counts[sources] = toggles
    for _ in range(netlist.depth + 2):
        new = state.copy()
        for kind, (ins, outs) in groups.items():
            new[outs] = GATES[kind][1](*(state[i] for i in ins))
        diff = new != state
        if not diff.any():
            break
        counts += diff.sum(axis=1)
        state = new
    if not np.array_equal(state, after):  # pragma: no cover - a combinational loop
        raise InputError(f"netlist {netlist.top} does not settle under unit delay")
    return counts


def _codes(values: np.ndarray, width: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64) & ((1 << width) - 1)


def multiplier_netlist(mult):
    """The gate netlist energy is measured on, and its port names (role -> name).

    The generic target's own mapping (`axsa.synth.targets.generic_run`): a built-in
    enters as the Verilog `axsa mult export` writes and an imported multiplier as its own
    module, so an exported and re-imported built-in is the same netlist.
    """
    from axsa.synth.targets import Unit, generic_run
    run = generic_run(Unit(mult))
    return run.netlist, run.ports


def multiplier_energy(mult, stream: Stream, mode: int = 0, netlist=None,
                      glitches: bool = False) -> dict:
    """Energy per multiplication of `mult` over `stream` (see the module docstring).

    `netlist` is a (netlist, ports) pair from `multiplier_netlist`, made when not given.
    `glitches`: count toggles under unit delay (`unit_delay_toggle_counts`) instead of
    zero delay.
    """
    mult._check_mode(mode)
    netlist, ports = netlist if netlist is not None else multiplier_netlist(mult)
    fmt = mult.fmt
    signals = {ports["a"]: _codes(stream.a, fmt.a_width),
               ports["b"]: _codes(stream.b, fmt.b_width)}
    if mult.modes > 1:
        signals["mode"] = np.full(len(stream), mode, np.int64)
    toggles = unit_delay_toggle_counts(netlist, **signals) if glitches else \
        netlist.toggle_counts(**signals)
    return energy_from_toggles(netlist, toggles, len(stream))


def accumulator_sequence(mult, stream: Stream, acc_width: int, mode: int = 0) -> np.ndarray:
    """The MAC accumulator register before each operation (signed values, wrapped).

    ``acc[0] = 0``; ``acc[t+1] = (clr[t] ? 0 : acc[t]) + p[t]``, with p from the model
    (which equals the netlist's table) and wrap-around at `acc_width` bits.
    """
    p = mult.model(stream.a, stream.b, mode).astype(np.int64)
    clr = stream.clr if stream.clr is not None else np.zeros(len(stream), bool)
    # segment-wise cumulative sums: restart where clr is set
    csum = np.cumsum(p)
    starts = np.where(clr, csum - p, 0)
    base = np.maximum.accumulate(np.where(clr, np.arange(len(p)), -1))
    offset = np.where(base >= 0, starts[np.maximum(base, 0)], 0)
    after = csum - offset  # acc after operation t
    acc = np.concatenate([[0], after[:-1]])
    mask = (1 << acc_width) - 1
    acc = acc & mask
    return np.where(acc >= 1 << (acc_width - 1), acc - (1 << acc_width), acc)


def mac_energy(mult, acc_width: int, stream: Stream, mode: int = 0, netlist=None,
               glitches: bool = False) -> dict:
    """Energy per operation of `axsa.rtl.mac.Mac(mult, acc_width)` over `stream`.

    The netlist is the generic target's mapping of the MAC (`generic_run` of a ``mac``
    unit: the multiplier mapped as when bare, then the accumulator), made when not given.
    The accumulator flip-flops are evaluated as free inputs set to their known sequence
    (`accumulator_sequence`), so the netlist is still evaluated vectorised.
    """
    mult._check_mode(mode)
    if netlist is None:
        from axsa.synth.targets import Unit, generic_run
        netlist = generic_run(Unit(mult, "mac", acc_width)).netlist
    fmt = mult.fmt
    n = len(stream)
    clr = stream.clr if stream.clr is not None else np.zeros(n, bool)
    acc = accumulator_sequence(mult, stream, acc_width, mode)
    signals = {"a": _codes(stream.a, fmt.a_width), "b": _codes(stream.b, fmt.b_width),
               "clr": clr.astype(np.int64), "en": np.ones(n, np.int64),
               "acc": _codes(acc, acc_width)}
    if mult.modes > 1:
        signals["mode"] = np.full(n, mode, np.int64)
    for name in ("clk", "rst"):  # held: the clock is charged per cycle in the model
        signals[name] = np.zeros(n, np.int64)
    signals = {k: v for k, v in signals.items() if k in netlist.signal_nets}
    toggles = unit_delay_toggle_counts(netlist, **signals) if glitches else \
        netlist.toggle_counts(**signals)
    return energy_from_toggles(netlist, toggles, n)

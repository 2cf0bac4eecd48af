"""One simulation API over three engines: Amaranth pysim, compiled CXXRTL and Verilator.

An engine wraps one top-level `wiring.Component` with a single clock domain (``sync``)
and runs it stream transaction by stream transaction:

>>> from axsa.sim.pysim_engine import PysimEngine   # or CxxrtlEngine, VerilatorEngine
>>> engine = PysimEngine(component, vcd=None)
>>> outputs, cycles = engine.run_streams(
...     feeds={"cmd": cmd_words, "a": a_words},          # port name -> payload words
...     drains={"result": 64},                           # port name -> item count
...     inputs={"mode": 2},                              # plain input ports held constant
...     max_cycles=100_000)
>>> outputs["result"].shape                              # (64, n_words) uint32
(64, 2)

Ports
-----
`feeds` and `drains` name `amaranth.lib.stream` interfaces of the top component
(``In(stream.Signature(...))`` are feeds, ``Out(...)`` drains); interfaces nested inside
other interfaces are named with dots (``"dma.rd"``). `inputs` name plain input ports
(dots for nested ones). A stream payload is its flattened bits (``Value.cast(payload)``,
any width, structured layouts included), LSB first.

Payload words
-------------
A feed is given as an ``(n, n_words)`` uint32 array, word ``i`` holding payload bits
``32*i .. 32*i+31`` (``n_words = ceil(width / 32)``), or, for payloads up to 64 bits,
as a 1-D integer array of ``n`` values, or as a sequence of Python ints (any width).
Values may be given unsigned (``0 .. 2**width-1``) or as two's complement negatives
(``>= -2**(width-1)``); anything else is an `InputError` naming the port and item.
Drained payloads always come back as ``(count, n_words)`` uint32 arrays.
`pack_fields` / `unpack_fields` turn rows of small integers (say 16 signed 8-bit
operands) into payload words and back, vectorised; `words_to_ints` / `ints_to_words`
convert to and from Python ints.

Timing, identical on every engine
---------------------------------
Before each rising clock edge the engine presents, on every feed, the next unsent item
with ``valid=1`` (``valid=0`` once the feed is exhausted), and drives ``ready=1`` on every
drain that still wants items (``ready=0`` once it has its count, so nothing is lost);
streams not named in the call idle (``valid=0`` / ``ready=0``). An item transfers at an
edge where ``valid & ready`` held just before it. The run stops right after the edge at
which the last drain item transferred (with no drains: the last feed item), and
``cycles`` is the number of edges in the run. Feed items not yet accepted at that point
are dropped; `accepted` tells how many each feed transferred. Past `max_cycles` edges
the run stops with `SimulationTimeout` (a `ToolError`) naming what was still missing.

State persists from one run to the next (several GEMMs on one compiled design); plain
inputs keep their last value; no idle cycles are inserted between runs. `reset()`
returns the design to its initial state (every signal and memory to its init value).
`read(name)` returns the current value of a plain port (e.g. a status output).
`cycle` counts edges since construction or the last reset.

The design is never reset through its ``rst`` port: it starts from its ``init`` values,
as Amaranth's simulator does. Engines are context managers; `close()` finishes a VCD.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Const, Shape, Value
from amaranth.lib import stream, wiring

from axsa.errors import InputError, ToolError
from axsa.formats import from_codes, to_codes, value_range

__all__ = [
    "ENGINES",
    "CompiledEngine",
    "Engine",
    "PlainPort",
    "SimulationTimeout",
    "StreamPort",
    "engine_class",
    "ints_to_words",
    "make_engine",
    "n_words",
    "pack_fields",
    "plain_ports",
    "stream_ports",
    "unpack_fields",
    "words_to_ints",
]

#: engine name -> "module:class", imported on demand (CXXRTL pulls in the compiler path)
ENGINES = {
    "pysim": "axsa.sim.pysim_engine:PysimEngine",
    "cxxrtl": "axsa.sim.cxxrtl:CxxrtlEngine",
    "verilator": "axsa.sim.verilator:VerilatorEngine",
}


class SimulationTimeout(ToolError):
    """A run reached `max_cycles` before every drain had its items."""


def n_words(width: int) -> int:
    """Number of 32-bit words holding a `width`-bit payload."""
    return (width + 31) // 32


# -- ports -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamPort:
    """A `lib.stream` interface of the top component.

    Attributes
    ----------
    name : str
        Dotted name (``"a"``, ``"dma.rd"``).
    rtl_name : str
        Flattened prefix of its top-level port names (``"dma__rd"``).
    is_feed : bool
        True if the component consumes the stream (payload flows in).
    width : int
        Payload width in bits.
    valid, ready, payload : Value
        The interface's signals (payload cast to a plain Value); `valid` or `ready` is a
        `Const` for ``always_valid`` / ``always_ready`` streams.
    """

    name: str
    rtl_name: str
    is_feed: bool
    width: int
    valid: Value
    ready: Value
    payload: Value

    @property
    def n_words(self) -> int:
        return n_words(self.width)


@dataclass(frozen=True)
class PlainPort:
    """A plain (non-stream) port of the top component: `signal` with `shape`."""

    name: str
    rtl_name: str
    is_input: bool
    shape: Shape
    signal: Value


def _walk(signature: wiring.Signature, obj, path: tuple, streams, plains):
    # A member's `signature` is already flipped for `In` members, so every flow seen on
    # the way down is relative to the top component.
    for name, member in signature.members.items():
        sub_path = (*path, name)
        value = getattr(obj, name)
        is_in = member.flow == wiring.In
        if member.is_port:
            if member.dimensions:
                raise InputError(f"port {'.'.join(sub_path)!r} is an array of ports, "
                                 "which the simulation engines do not support")
            plains.append(PlainPort(".".join(sub_path), "__".join(sub_path), is_in,
                                    Shape.cast(member.shape), Value.cast(value)))
        elif isinstance(member.signature, stream.Signature) and not member.dimensions:
            streams.append(StreamPort(
                ".".join(sub_path), "__".join(sub_path), is_in,
                len(Value.cast(value.payload)),
                Value.cast(value.valid), Value.cast(value.ready), Value.cast(value.payload)))
        elif not member.dimensions:
            _walk(member.signature, value, sub_path, streams, plains)
        else:
            raise InputError(f"interface {'.'.join(sub_path)!r} is an array of interfaces, "
                             "which the simulation engines do not support")


def _ports(component: wiring.Component) -> tuple[dict, dict]:
    if not isinstance(component, wiring.Component):
        raise InputError(f"the simulated design must be a wiring.Component, "
                         f"not {type(component).__name__}")
    streams: list[StreamPort] = []
    plains: list[PlainPort] = []
    _walk(component.signature, component, (), streams, plains)
    return {s.name: s for s in streams}, {p.name: p for p in plains}


def stream_ports(component: wiring.Component) -> dict[str, StreamPort]:
    """Every `lib.stream` interface of `component`, by dotted name."""
    return _ports(component)[0]


def plain_ports(component: wiring.Component) -> dict[str, PlainPort]:
    """Every plain port of `component` (stream signals excluded), by dotted name."""
    return _ports(component)[1]


# -- payload words ---------------------------------------------------------------------------

def pack_fields(values, width: int, *, signed: bool) -> np.ndarray:
    """Pack rows of `width`-bit integers into payload words.

    Parameters
    ----------
    values : array_like of int, shape (n, k)
        Field ``j`` of row ``r`` goes to payload bits ``j*width .. j*width+width-1``.
    width : int
        Field width in bits, 1..32.
    signed : bool
        Range the values must lie in: ``-2**(width-1) .. 2**(width-1)-1`` if signed,
        else ``0 .. 2**width-1``. Signed values are stored two's complement.

    Returns
    -------
    numpy.ndarray of uint32, shape (n, ceil(k*width/32))
    """
    if not 1 <= width <= 32:
        raise InputError(f"field width {width} is out of range 1..32")
    vals = np.asarray(values)
    if vals.ndim != 2:
        raise InputError(f"pack_fields wants a 2-D array of rows, got shape {vals.shape}")
    if vals.dtype.kind not in "iub":
        raise InputError(f"pack_fields wants integers, got dtype {vals.dtype}")
    vals = vals.astype(np.int64)
    lo, hi = value_range(width, signed)
    bad = (vals < lo) | (vals > hi)
    if bad.any():
        r, j = np.argwhere(bad)[0]
        raise InputError(f"value {int(vals[r, j])} (row {r}, field {j}) does not fit a "
                         f"{'signed' if signed else 'unsigned'} {width}-bit field")
    n, k = vals.shape
    words = np.zeros((n, n_words(k * width)), dtype=np.uint64)
    for j in range(k):  # loop over fields (a handful), vectorised over rows
        v = to_codes(vals[:, j], width).view(np.uint64)
        offset = j * width
        w, sh = divmod(offset, 32)
        words[:, w] |= (v << np.uint64(sh)) & np.uint64(0xFFFFFFFF)
        if sh + width > 32:
            words[:, w + 1] |= v >> np.uint64(32 - sh)
    return words.astype(np.uint32)


def unpack_fields(words, count: int, width: int, *, signed: bool) -> np.ndarray:
    """Unpack payload words into rows of `count` fields of `width` bits (inverse of
    `pack_fields`); returns an ``(n, count)`` int64 array."""
    if not 1 <= width <= 32:
        raise InputError(f"field width {width} is out of range 1..32")
    w32 = np.asarray(words)
    if w32.ndim != 2 or w32.shape[1] < n_words(count * width):
        raise InputError(f"{count} fields of {width} bits need "
                         f"{n_words(count * width)} words per row, got shape {w32.shape}")
    w64 = w32.astype(np.uint64)
    mask = np.uint64((1 << width) - 1)
    out = np.empty((w64.shape[0], count), dtype=np.int64)
    for j in range(count):
        w, sh = divmod(j * width, 32)
        v = w64[:, w] >> np.uint64(sh)
        if sh + width > 32:
            v |= w64[:, w + 1] << np.uint64(32 - sh)
        out[:, j] = (v & mask).astype(np.int64)
    return from_codes(out, width, signed)


def ints_to_words(values: Sequence[int], width: int, what: str = "value") -> np.ndarray:
    """Python ints (any width; negatives as two's complement) -> ``(n, n_words)`` uint32.

    A value outside ``-2**(width-1) .. 2**width-1`` is an InputError naming `what`."""
    nw = n_words(width)
    out = np.zeros((len(values), nw), dtype=np.uint32)
    lo, hi = value_range(width, True)[0] if width else 0, value_range(width, False)[1]
    for r, v in enumerate(values):
        v = int(v)
        if not lo <= v <= hi:
            raise InputError(f"{what} item {r}: value {v} does not fit the {width}-bit payload")
        v &= hi
        for i in range(nw):
            out[r, i] = (v >> (32 * i)) & 0xFFFFFFFF
    return out


def words_to_ints(words: np.ndarray) -> list[int]:
    """``(n, n_words)`` uint32 words -> list of n non-negative Python ints."""
    w = np.asarray(words, dtype=np.uint64)
    if w.ndim != 2:
        raise InputError(f"payload words must be a 2-D array, got shape {w.shape}")
    total = np.zeros(w.shape[0], dtype=object)
    for i in range(w.shape[1]):
        total = total + (w[:, i].astype(object) << (32 * i))
    return [int(v) for v in total]


def _feed_words(data, port: StreamPort) -> np.ndarray:
    """Normalise one feed to a C-contiguous ``(n, n_words)`` uint32 array, checking width."""
    nw, width = port.n_words, port.width
    what = f"feed {port.name!r}"
    if isinstance(data, np.ndarray) and data.ndim == 2:
        if data.dtype != np.uint32:
            raise InputError(f"{what}: 2-D payload words must be uint32, got {data.dtype}")
        if data.shape[1] != nw:
            raise InputError(f"{what}: the {width}-bit payload takes {nw} words per item, "
                             f"got {data.shape[1]}")
        top = width - 32 * (nw - 1)
        if nw and top < 32:
            over = data[:, -1] >> np.uint32(top)
            if over.any():
                r = int(np.flatnonzero(over)[0])
                raise InputError(f"{what} item {r}: payload wider than {width} bits "
                                 f"(last word {int(data[r, -1]):#x})")
        return np.ascontiguousarray(data)
    if isinstance(data, np.ndarray) and data.ndim == 1 and data.dtype.kind in "iu" \
            and width <= 64:
        if data.dtype.kind == "u":
            v = data.astype(np.uint64)
            bad = v > np.uint64((1 << width) - 1) if width < 64 else np.zeros(len(v), bool)
        else:
            s = data.astype(np.int64)
            lo = -(1 << (width - 1)) if width else 0
            hi = (1 << width) - 1
            bad = (s < lo) | ((s > hi) if width < 63 else np.zeros(len(s), bool))
            v = s.view(np.uint64)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise InputError(f"{what} item {r}: value {int(data[r])} does not fit the "
                             f"{width}-bit payload")
        if width < 64:
            v = v & np.uint64((1 << width) - 1)
        words = np.empty((len(v), 2), dtype=np.uint32)
        words[:, 0] = (v & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        words[:, 1] = (v >> np.uint64(32)).astype(np.uint32)
        return np.ascontiguousarray(words[:, :nw])
    if isinstance(data, np.ndarray):
        raise InputError(f"{what}: expected (n, {nw}) uint32 words, a 1-D integer array "
                         f"(payloads up to 64 bits) or a list of ints, got "
                         f"{data.dtype} array of shape {data.shape}")
    if isinstance(data, Sequence) and all(isinstance(v, (int, np.integer)) for v in data):
        return ints_to_words(list(data), width, what)
    raise InputError(f"{what}: expected payload words, got {type(data).__name__}")


# -- the engine API --------------------------------------------------------------------------

@dataclass
class _Job:
    """One `run_streams` call, normalised (shared by every engine)."""

    feeds: list[tuple[StreamPort, np.ndarray]]
    drains: list[tuple[StreamPort, int]]
    max_cycles: int


class Engine(abc.ABC):
    """Base of the simulation engines: port discovery, argument checks, the run API.

    Parameters
    ----------
    component : wiring.Component
        The top-level design, one clock domain ``sync`` (or purely combinational).

    Attributes
    ----------
    streams : dict[str, StreamPort]
    ports : dict[str, PlainPort]
    cycle : int
        Clock edges since construction or the last `reset`.
    accepted : dict[str, int]
        Items each feed transferred in the last run.
    """

    name = "engine"
    #: the simulation view (`axsa.rtl.cells.SIM_VIEWS`) a design built for it defaults to
    default_view = "circuit"

    @classmethod
    def design_view(cls, view: str, multiplier) -> str:
        """The RTL view (`axsa.rtl.cells.VIEWS`) in which this engine simulates
        simulation view `view` of `multiplier`; the base: the view itself."""
        return view

    def __init__(self, component: wiring.Component):
        self.component = component
        self.streams, self.ports = _ports(component)
        self.cycle = 0
        self.accepted: dict[str, int] = {}
        self._inputs: dict[str, int] = {}

    # public API

    def run_streams(self, feeds: Mapping[str, object] | None = None,
                    drains: Mapping[str, int] | None = None,
                    inputs: Mapping[str, int] | None = None,
                    max_cycles: int = 1_000_000) -> tuple[dict[str, np.ndarray], int]:
        """Run stream transactions until every drain has its items.

        Parameters
        ----------
        feeds : {port name: payload words}
            Items to send into each consumed stream, in order (see the module docstring).
        drains : {port name: item count}
            How many items to take from each produced stream.
        inputs : {port name: int}
            Plain input ports to set before the run; they keep the value afterwards.
        max_cycles : int
            Clock edges after which the run fails with `SimulationTimeout`.

        Returns
        -------
        outputs : dict[str, numpy.ndarray]
            Per drain, the received payloads as ``(count, n_words)`` uint32.
        cycles : int
            Clock edges from the start of the run to the transfer of the last drain item.
        """
        job = self._job(feeds or {}, drains or {}, inputs or {}, max_cycles)
        outputs, cycles, accepted = self._run(job)
        self.cycle += cycles
        self.accepted = accepted
        if cycles < 0:  # the engine signals a timeout with a negative count
            got = {p.name: len(outputs[p.name]) for p, _ in job.drains}
            want = {p.name: n for p, n in job.drains}
            raise SimulationTimeout(
                f"{self.name}: no completion within max_cycles={max_cycles}: drains received "
                f"{got} of {want}, feeds accepted {accepted} of "
                f"{ {p.name: len(w) for p, w in job.feeds} }")
        return outputs, cycles

    def read(self, name: str) -> int:
        """Current value of a plain port (signed ports read as negative numbers)."""
        port = self._port(name, None)
        raw = self._read(port)
        if port.shape.signed and raw >> (port.shape.width - 1):
            raw -= 1 << port.shape.width
        return raw

    def reset(self) -> None:
        """Return every signal and memory to its initial value; plain inputs to 0/init."""
        self._reset()
        self.cycle = 0
        self._inputs = {}

    def close(self) -> None:  # noqa: B027 (engines without resources keep this no-op)
        """Release the engine (finishes a VCD file)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # what an engine implements

    @abc.abstractmethod
    def _run(self, job: _Job) -> tuple[dict[str, np.ndarray], int, dict[str, int]]:
        """Run `job`; return (outputs, cycles or -1 on timeout, accepted per feed)."""

    @abc.abstractmethod
    def _set_input(self, port: PlainPort, value: int) -> None:
        """Drive plain input `port` with `value` (two's complement, in range)."""

    @abc.abstractmethod
    def _read(self, port: PlainPort) -> int:
        """Raw (unsigned) current value of `port`."""

    @abc.abstractmethod
    def _reset(self) -> None:
        """Back to the initial state."""

    # checks shared by every engine

    def _stream(self, name: str, feed: bool) -> StreamPort:
        kind = "feed" if feed else "drain"
        port = self.streams.get(name)
        if port is None:
            have = [s.name for s in self.streams.values() if s.is_feed == feed]
            raise InputError(f"unknown {kind} port {name!r}: the design's "
                             f"{'input' if feed else 'output'} streams are {have}")
        if port.is_feed != feed:
            raise InputError(f"{kind} port {name!r} is an {'output' if feed else 'input'} "
                             f"stream; it cannot be a {kind}")
        return port

    def _port(self, name: str, is_input: bool | None) -> PlainPort:
        port = self.ports.get(name)
        if port is None or (is_input is not None and port.is_input != is_input):
            have = [p.name for p in self.ports.values()
                    if is_input is None or p.is_input == is_input]
            what = "input port" if is_input else "port"
            raise InputError(f"unknown {what} {name!r}: the design's "
                             f"{'plain inputs' if is_input else 'plain ports'} are {have}")
        return port

    def _job(self, feeds, drains, inputs, max_cycles) -> _Job:
        if not isinstance(max_cycles, (int, np.integer)) or max_cycles < 1:
            raise InputError(f"max_cycles must be a positive integer, got {max_cycles!r}")
        fs = [(self._stream(name, True), None) for name in feeds]
        fs = [(port, _feed_words(feeds[port.name], port)) for port, _ in fs]
        ds = []
        for name, count in drains.items():
            port = self._stream(name, False)
            if not isinstance(count, (int, np.integer)) or count < 0:
                raise InputError(f"drain {name!r}: item count must be a non-negative "
                                 f"integer, got {count!r}")
            ds.append((port, int(count)))
        if not fs and not ds:
            raise InputError("run_streams needs at least one feed or drain")
        for p, _ in fs:
            if isinstance(p.valid, Const):
                raise InputError(f"feed {p.name!r} is always_valid; the engine cannot pace it")
        for name, value in inputs.items():
            port = self._port(name, True)
            value = int(value)
            shape = port.shape
            lo, hi = value_range(shape.width, shape.signed)
            if not lo <= value <= hi:
                raise InputError(f"input {name!r}: value {value} does not fit "
                                 f"{'signed' if shape.signed else 'unsigned'}"
                                 f"({shape.width})")
            self._set_input(port, to_codes(value, shape.width))
            self._inputs[name] = value
        return _Job(fs, ds, int(max_cycles))


class CompiledEngine(Engine):
    """Base of the engines that run a compiled shared library through ctypes (CXXRTL,
    Verilator): both harnesses have one C API (``axsa_run``, ``axsa_set``, ``axsa_get``,
    ``axsa_reset``, ``axsa_destroy``, ``axsa_error``), driven here. A subclass loads the
    library into ``self._dll`` and creates the instance ``self._sim``."""

    default_view = "table"
    _sim = None

    @classmethod
    def design_view(cls, view: str, multiplier) -> str:
        """``a * b`` (the table view) for exact multipliers under the table view: one
        library for every exact multiplier of a format, quickest to build; else cells,
        filled with tables or circuits (``cells=view``)."""
        return "table" if view == "table" and multiplier.is_exact else "cell"

    def _error(self) -> str:
        return self._dll.axsa_error(self._sim).decode()

    @staticmethod
    def _names(port: StreamPort) -> list[bytes]:
        def name(sig, leaf):
            return b"" if isinstance(sig, Const) else f"{port.rtl_name}__{leaf}".encode()
        return [name(port.valid, "valid"), name(port.ready, "ready"),
                name(port.payload, "payload") if port.width else b""]

    def _run(self, job: _Job):
        import ctypes

        streams = list(job.feeds)
        outs = [(p, np.zeros((n, n_words(p.width)), dtype=np.uint32)) for p, n in job.drains]
        n = len(streams) + len(outs)
        keep = [ctypes.c_char_p(nm) for p, _ in streams + outs for nm in self._names(p)]
        name_arr = (ctypes.c_char_p * max(len(keep), 1))(*keep)
        counts = np.array([len(w) for _, w in streams + outs], dtype=np.int64)
        data_arr = (ctypes.c_void_p * max(n, 1))(*[w.ctypes.data for _, w in streams + outs])
        done = np.zeros(n, dtype=np.int64)
        cycles = self._dll.axsa_run(self._sim, len(streams), len(outs), name_arr,
                                    counts.ctypes.data, data_arr, done.ctypes.data,
                                    job.max_cycles)
        if cycles == -2:
            raise ToolError(f"{self.name}: {self._error()}")
        k = len(streams)
        outputs = {p.name: w[:done[k + i]] for i, (p, w) in enumerate(outs)}
        accepted = {p.name: int(done[i]) for i, (p, _) in enumerate(streams)}
        return outputs, int(cycles), accepted

    def _set_input(self, port: PlainPort, value: int) -> None:
        words = np.ascontiguousarray(ints_to_words([value], port.shape.width)[0])
        if self._dll.axsa_set(self._sim, port.rtl_name.encode(), words.ctypes.data) != 0:
            raise ToolError(f"{self.name}: {self._error()}")

    def _read(self, port: PlainPort) -> int:
        words = np.zeros(max(1, n_words(port.shape.width)), np.uint32)
        if self._dll.axsa_get(self._sim, port.rtl_name.encode(), words.ctypes.data) != 0:
            raise ToolError(f"{self.name}: {self._error()}")
        return sum(int(w) << (32 * i) for i, w in enumerate(words))

    def _reset(self) -> None:
        self._dll.axsa_reset(self._sim)
        for port in self.ports.values():
            if port.is_input:
                self._set_input(port, 0)

    def close(self) -> None:
        if getattr(self, "_sim", None):
            self._dll.axsa_destroy(self._sim)
            self._sim = None

    def __del__(self):
        self.close()


def engine_class(name: str) -> type[Engine]:
    """The `Engine` subclass called `name` (a key of `ENGINES`)."""
    import importlib

    target = ENGINES.get(name)
    if target is None:
        raise InputError(f"unknown engine {name!r} (known: {', '.join(ENGINES)})")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def make_engine(name: str, component: wiring.Component, **kwargs) -> Engine:
    """Build engine `name` (a key of `ENGINES`) for `component`."""
    return engine_class(name)(component, **kwargs)

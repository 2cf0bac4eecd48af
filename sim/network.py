"""A whole network's GEMMs on the accelerator RTL: the numpy backend of a model's GEMM hook.

`AcceleratorBackend` is a GEMM backend (`axsa.models.gemm.GemmBackend`: numpy integer
operands in, numpy integers out, no torch here): every GEMM call runs on the accelerator
RTL of its multiplier through the host driver (`axsa.sim.driver.run_gemm_batch`), and the
backend keeps per-GEMM statistics (`GemmStats`: runs, MACs, cycles measured and
predicted, wall time) and the operands, from which `AcceleratorBackend.energy` prices
the operand streams each processing element saw, in the array's order.

>>> designs = DesignCache("cxxrtl", rows=16, cols=16)
>>> backend = AcceleratorBackend({"layers.0.ffn.fc1": (drum4, 0)}, exact, designs)
>>> backend("layers.0.ffn.fc1", A, B, None)        # (M, K) @ (K, N) -> (M, N)
>>> backend("layers.0.attn.qk", Q, KT, stage)      # (G, M, K) @ (G, K, N) -> (G, M, N)
>>> backend.stats["layers.0.ffn.fc1"].cycles

Designs. One `Accelerator` per multiplier and array shape, built once by a `DesignCache`
and reused for every GEMM, sample and mode (a mode-configurable multiplier switches modes
between runs through the accelerator's `mode` input). Every design of one cache has the
same accumulator width, so on CXXRTL, where each multiplier is a table cell whose name
depends only on its interface, designs of multipliers with the same interface share one
compiled library, cached on disk across runs (`axsa.sim.cxxrtl`).

Energy (`energy`). PE (r, c) of an R x C array sees, tile after tile of every run of a
GEMM (tiles in the driver's order), ``a[g, i R + r, k]`` and ``b[g, k, j C + c]`` for
``k = 0..K-1``, zeros in the padding of partial tiles. Those streams (PE after PE, one
evaluation; the R C - 1 joins between PE streams count as transitions, a fraction
``(R C - 1) / ops`` of them) are priced with the synthesized netlists of the multiplier
(`axsa.synth.energy.multiplier_energy`) and of the whole MAC (multiplier, accumulator
register: `mac_energy`, the accumulator sequence restarting at every tile), and with the
exact multiplier of the same format on the same streams, for the ratios. A GEMM with more
than `energy_ops` operations is priced on whole tiles evenly spaced over its run, scaled
to all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from axsa.errors import InputError
from axsa.formats import DEFAULT_MAX_REDUCTION

from .cycles import tile_count
from .driver import Requant, run_gemm_batch

__all__ = ["DEFAULT_ENERGY_OPS", "AcceleratorBackend", "DesignCache", "GemmEnergy",
           "GemmStats", "pe_streams"]

#: operations priced per GEMM by `AcceleratorBackend.energy` (more: evenly spaced tiles)
DEFAULT_ENERGY_OPS = 1 << 18
#: operations per netlist evaluation (bounds memory: nets x ops / 8 bytes)
_CHUNK_OPS = 1 << 19


#: engines that compile the design with its multipliers as cells (tables or circuits)
COMPILED = ("cxxrtl", "verilator")


class DesignCache:
    """One engine per (multiplier, array shape, accumulator width), built on first use.

    Parameters
    ----------
    engine : {"cxxrtl", "verilator", "pysim"}
    rows, cols : int
        Array size R x C.
    max_k : int
        Longest reduction the designs are sized for.
    view : {"table", "circuit"}
        How multipliers are simulated (`axsa.sim.driver.run_gemm`'s `view`; same results).
        On CXXRTL every multiplier, exact ones too, is a cell (``"table"``: its product
        table; ``"circuit"``: its gates), so designs of one interface share a library.
    vcd : path, optional
        Waveform file; with several designs, ``<stem>-<n><suffix>`` per design.
    """

    def __init__(self, engine: str = "cxxrtl", rows: int = 16, cols: int = 16,
                 max_k: int = DEFAULT_MAX_REDUCTION, view: str = "table", vcd=None):
        from .engine import engine_class
        self.engine_cls = engine_class(engine)
        for name, v in (("rows", rows), ("cols", cols)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 256:
                raise InputError(f"--{name} {v!r} is outside 1..256")
        if view not in ("table", "circuit"):
            raise InputError(f"unknown view {view!r} (known: table, circuit)")
        self.name, self.rows, self.cols, self.max_k, self.view = engine, rows, cols, max_k, view
        self.vcd = vcd
        self.build_s = 0.0
        self._engines: dict[tuple, object] = {}

    def engine(self, mult, acc_width: int):
        """The engine running the accelerator of `mult` with `acc_width`-bit sums."""
        key = (mult.spec, acc_width)
        eng = self._engines.get(key)
        if eng is None:
            t0 = time.perf_counter()
            if self.name in COMPILED:     # compiled engines: multiplier cells
                design_view = "cell"
            else:
                if self.view == "circuit" and getattr(mult, "verilog_sources", None):
                    raise InputError(f"{mult.spec} is imported Verilog, which pysim cannot "
                                     "simulate: use the cxxrtl engine or the table view")
                design_view = self.engine_cls.design_view(self.view, mult)
            from axsa.rtl.accelerator import Accelerator
            acc = Accelerator(mult, self.rows, self.cols, max_k=self.max_k,
                              acc_width=acc_width, view=design_view)
            kwargs = {}
            if design_view == "cell":
                kwargs["cells"] = self.view
                if self.view == "circuit" and acc.verilog_sources:
                    kwargs["verilog_sources"] = acc.verilog_sources
            if self.vcd is not None:
                kwargs["vcd"] = self._vcd_path(len(self._engines))
            eng = self._engines[key] = self.engine_cls(acc, **kwargs)
            self.build_s += time.perf_counter() - t0
        return eng

    def _vcd_path(self, n: int):
        from pathlib import Path
        p = Path(self.vcd)
        return p if n == 0 else p.with_name(f"{p.stem}-{n}{p.suffix}")

    @property
    def vcd_files(self) -> list[str]:
        return [str(self._vcd_path(n)) for n in range(len(self._engines))] \
            if self.vcd is not None else []

    def close(self) -> None:
        for eng in self._engines.values():
            eng.close()
        self._engines.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class GemmStats:
    """What one GEMM (by name) cost on the RTL, summed over its runs.

    Attributes
    ----------
    name, spec : str
    mode : int
    shape : list[int]
        ``[G, M, K, N]`` over the whole simulation (a Linear: G = 1, M = every sample's
        tokens; an attention product: G = samples x heads).
    runs : int
        Engine runs (one per GEMM call).
    macs, cycles, predicted_cycles : int
        Useful MACs; clock edges measured, and predicted by the cycle model.
    wall_s : float
        Wall time of the runs (packing, simulation, gathering).
    tiles : int
        Output tiles issued.
    """

    name: str
    spec: str
    mode: int
    shape: list = field(default_factory=lambda: [0, 0, 0, 0])
    runs: int = 0
    macs: int = 0
    cycles: int = 0
    predicted_cycles: int = 0
    wall_s: float = 0.0
    tiles: int = 0

    def utilization(self, rows: int, cols: int) -> float:
        return self.macs / (self.cycles * rows * cols) if self.cycles else 0.0


@dataclass(frozen=True)
class GemmEnergy:
    """Dynamic energy of one GEMM's operand streams over the whole simulation (fJ).

    ``mult`` / ``pe``: the assigned multipliers / whole MACs; ``exact_mult`` /
    ``exact_pe``: the exact multiplier of the same format on the same streams; ``ops``:
    operations in the streams (padding included), ``priced_ops``: operations evaluated.
    """

    mult: float
    pe: float
    exact_mult: float
    exact_pe: float
    ops: int
    priced_ops: int


def pe_streams(A: np.ndarray, B: np.ndarray, rows: int, cols: int):
    """Operands each PE of an R x C array sees for ``A[g] @ B[g]`` (the driver's tiles).

    A (G, M, K), B (G or 1, K, N). Returns a, b int16 (rows, cols, T K) for T =
    G ceil(M/R) ceil(N/C) tiles, tile after tile, zeros in the padding.
    """
    G, M, K = A.shape
    N = B.shape[2]
    mt, nt = -(-M // rows), -(-N // cols)
    Ap = np.zeros((G, mt * rows, K), np.int16)
    Ap[:, :M] = A
    Bp = np.zeros((B.shape[0], K, nt * cols), np.int16)
    Bp[:, :, :N] = B
    # a[r, c, g, i, j, k] = Ap[g, i R + r, k]; b[r, c, g, i, j, k] = Bp[g, k, j C + c]
    a = np.broadcast_to(Ap.reshape(G, mt, 1, rows, 1, K).transpose(3, 4, 0, 1, 2, 5),
                        (rows, cols, G, mt, nt, K))
    b = np.broadcast_to(Bp.reshape(-1, 1, K, nt, 1, cols).transpose(4, 5, 0, 1, 3, 2),
                        (rows, cols, G, mt, nt, K))
    return a.reshape(rows, cols, -1), b.reshape(rows, cols, -1)


class AcceleratorBackend:
    """The GEMM backend that runs every GEMM on the accelerator RTL (module docstring).

    Parameters
    ----------
    multipliers : mapping
        ``{gemm name: (Multiplier, mode)}``; names absent use `default`.
    default : Multiplier
        The exact multiplier of the model's format.
    designs : DesignCache
        Where the engines come from (shared by backends, reused across runs).
    progress : callable, optional
        ``progress(name, stats)`` after every run.
    record : bool
        Keep every run's operands (for `energy`).
    """

    def __init__(self, multipliers: Mapping, default, designs: DesignCache,
                 progress: Callable | None = None, record: bool = True):
        from axsa.rtl.mac import acc_width_for
        self.multipliers = dict(multipliers)
        self.default = default
        self.designs = designs
        self.progress = progress
        self.record = record
        used = {m.spec: m for m, _ in self.multipliers.values()} | {default.spec: default}
        #: one accumulator width for every design (wide enough for each multiplier)
        self.acc_width = max(acc_width_for(m, designs.max_k) for m in used.values())
        self.stats: dict[str, GemmStats] = {}
        self._operands: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def multiplier(self, name: str):
        """(Multiplier, mode) of GEMM `name`."""
        return self.multipliers.get(name, (self.default, 0))

    def __call__(self, name: str, a: np.ndarray, b: np.ndarray, stage=None) -> np.ndarray:
        """``a @ b`` ((M, K) @ (K, N): one GEMM) or ``a[g] @ b[g]`` ((G, M, K) @ (G, K,
        N): G GEMMs of one shape, run back to back) on the RTL: the accumulators, or
        `stage`'s requantized codes (an `axsa.models.gemm.OutputStage`: ``m``, ``s``,
        ``bits``, ``signed``)."""
        single = a.ndim == 2
        if single:
            a, b = a[None], b[None]
        mult, mode = self.multiplier(name)
        eng = self.designs.engine(mult, self.acc_width)
        requant = None
        if stage is not None:
            requant = Requant(m=np.asarray(stage.m).ravel(), s=np.asarray(stage.s).ravel(),
                              bits=stage.bits, signed=stage.signed)
        res = run_gemm_batch(a, b, eng, mode=mode, requant=requant)
        G, M, K = a.shape
        N = b.shape[2]
        st = self.stats.get(name)
        if st is None:
            st = self.stats[name] = GemmStats(name, mult.spec, mode, [0, 0, K, N])
        if single:
            st.shape[0] = 1
            st.shape[1] += M        # rows: the stacked samples' tokens
        else:
            st.shape[0] += G
            st.shape[1] = M
        st.runs += 1
        st.macs += res.macs
        st.cycles += res.cycles
        st.predicted_cycles += res.predicted_cycles
        st.wall_s += res.wall_s
        st.tiles += G * tile_count(M, N, self.designs.rows, self.designs.cols)
        if self.record:
            self._operands.setdefault(name, []).append((a.astype(np.int16),
                                                        b.astype(np.int16)))
        if self.progress is not None:
            self.progress(name, st)
        return res.C[0] if single else res.C

    # -- energy ---------------------------------------------------------------------------

    def energy(self, max_ops: int = DEFAULT_ENERGY_OPS) -> dict[str, GemmEnergy]:
        """Dynamic energy of every GEMM's PE operand streams (module docstring), fJ."""
        from axsa.rtl.multipliers import exact_multiplier
        if not self.record:
            raise InputError("energy needs the operands: build the backend with record=True")
        out = {}
        nets: dict[tuple, tuple] = {}
        for name, runs in self._operands.items():
            mult, mode = self.multiplier(name)
            exact = exact_multiplier(mult.fmt)
            a, b, clr, ops = self._streams(runs, max_ops)
            figures = []
            for m, md in ((mult, mode), (exact, 0)):
                if mult.spec == exact.spec and figures:  # an exact GEMM: priced once
                    figures.append(figures[0])
                    continue
                key = (m.spec, self.acc_width)
                if key not in nets:
                    nets[key] = _netlists(m, self.acc_width)
                figures.append(_price(m, md, a, b, clr, nets[key], self.acc_width))
            scale = ops / a.size
            (em, ep), (xm, xp) = figures
            out[name] = GemmEnergy(em * scale, ep * scale, xm * scale, xp * scale, ops, a.size)
        return out

    def _streams(self, runs, max_ops: int):
        """PE streams of all runs of one GEMM, (R C, ops per PE) each, plus clr."""
        R, C = self.designs.rows, self.designs.cols
        parts_a, parts_b, parts_clr = [], [], []
        total = 0
        for A, B in runs:
            pa, pb = pe_streams(A, B, R, C)
            K = A.shape[2]
            parts_a.append(pa.reshape(R * C, -1))
            parts_b.append(pb.reshape(R * C, -1))
            clr = np.zeros(pa.shape[2], bool)
            clr[::K] = True
            parts_clr.append(clr)
            total += pa.shape[2] * R * C
        a = np.concatenate(parts_a, axis=1)
        b = np.concatenate(parts_b, axis=1)
        clr = np.concatenate(parts_clr)
        if a.size > max_ops:
            # whole tiles, evenly spaced: tile starts are where clr is set
            starts = np.flatnonzero(clr)
            ends = np.append(starts[1:], clr.size)
            keep_tiles = max(1, int(len(starts) * max_ops // a.size))
            pick = np.unique(np.linspace(0, len(starts) - 1, keep_tiles).astype(int))
            cols = np.concatenate([np.arange(starts[t], ends[t]) for t in pick])
            a, b, clr = a[:, cols], b[:, cols], clr[cols]
        return a, b, np.broadcast_to(clr, a.shape), total


def _netlists(mult, acc_width: int):
    """(multiplier netlist and ports, MAC netlist) of the generic target's mapping."""
    from axsa.synth.energy import multiplier_netlist
    from axsa.synth.targets import Unit, generic_run
    return multiplier_netlist(mult), generic_run(Unit(mult, "mac", acc_width)).netlist


def _price(mult, mode: int, a, b, clr, nets, acc_width: int) -> tuple[float, float]:
    """Total dynamic energy (fJ) of the multiplier and of the MAC over streams a, b, clr
    (rows: PEs), evaluated in chunks of whole PE streams."""
    from axsa.synth.energy import Stream, mac_energy, multiplier_energy
    mult_nl, mac_nl = nets
    per_pe = a.shape[1]
    group = max(1, _CHUNK_OPS // per_pe)
    e_mult = e_mac = 0.0
    for p0 in range(0, a.shape[0], group):
        sa = a[p0:p0 + group].ravel().astype(np.int64)
        if sa.size < 2:
            continue
        s = Stream(sa, b[p0:p0 + group].ravel().astype(np.int64), "pe-streams",
                   np.ascontiguousarray(clr[p0:p0 + group]).ravel())
        transitions = sa.size - 1
        e_mult += multiplier_energy(mult, s, mode, netlist=mult_nl)["energy_dynamic"] \
            * transitions
        e_mac += mac_energy(mult, acc_width, s, mode, netlist=mac_nl)["energy_dynamic"] \
            * transitions
    return e_mult, e_mac

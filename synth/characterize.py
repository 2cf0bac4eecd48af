"""Characterize one design on one target: area / delay figures, energy, error metrics.

This is what `axsa synth` prints and what a sweep records, one store record per
(spec, target, options, stream, toolchain versions). The result dict holds:

- ``spec``, the parsed design's ``family``, ``format`` and ``params`` (parameter values,
  defaults filled in), ``target``, ``unit`` (``mult``, ``mac(acc=24)``, ``pe(acc=24)``);
- the target's figures (`axsa.synth.targets`): ``transistors``, ``cells``, ``depth`` on
  generic; ``luts``, ``carries``, ``dsps``, ``ffs``, ``fmax_mhz`` on ice40/ecp5; for a
  MAC or PE the multiplier's share (``mult_cells_by_type``, ``mult_transistors``);
- on ``generic`` for ``mult`` and ``mac`` units: ``energy`` (fJ per operation, dynamic +
  leakage, `axsa.synth.energy`), ``energy_dynamic``, ``energy_leakage`` and
  ``energy_ratio`` (over the exact multiplier of the same format, same unit, same stream),
  with the ``stream`` identity;
- the spec's error metrics over every operand pair (`axsa.synth.metrics`): ``mae``,
  ``nmed``, ``mred``, ``wce``, ``wcre``, ``ep``, ``mse``, ``bias``. On generic the table
  is read off the multiplier's module of the very netlist the figures come from (and
  checked against the numpy model); elsewhere the model table is used (the library
  guarantees they are equal).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from axsa.errors import InputError, ToolError
from axsa.formats import DEFAULT_ACC_WIDTH

from . import energy as energy_model
from .targets import TARGETS, UNITS, GenericRun, Unit, generic_run, synthesize

#: bumped when the meaning of a record changes (energy table, metrics, flows). 2: one
#: generic mapping (cmos2) for every figure; the multiplier of a MAC/PE mapped on its own
MODEL_VERSION = "2"
#: reduction length of the default MAC stream: clr every this many operations
DEFAULT_REDUCTION = 64


@dataclass(frozen=True)
class Request:
    """One characterization: what to synthesize, where, and under which stream.

    `stream` is None for the default uniform stream; `reduction` sets the MAC's clr every
    `reduction` operations when the stream has no clr of its own; `glitches` counts
    toggles under unit delay instead of zero delay.
    """

    spec: str
    target: str = "generic"
    dsp: bool = False
    unit: str = "mult"
    acc_width: int = DEFAULT_ACC_WIDTH
    mode: int = 0
    reduction: int = DEFAULT_REDUCTION
    fmax: bool = True
    glitches: bool = False

    def __post_init__(self):
        if self.target not in TARGETS:
            raise InputError(f"target {self.target!r} is not one of {', '.join(TARGETS)}")
        if self.unit not in UNITS:
            raise InputError(f"unit {self.unit!r} is not one of {', '.join(UNITS)}")
        if self.reduction < 1:
            raise InputError(f"reduction length {self.reduction} must be at least 1")

    @property
    def has_energy(self) -> bool:
        return self.target == "generic" and self.unit in ("mult", "mac")

    def multiplier(self):
        from axsa.rtl.multipliers import parse_spec
        return parse_spec(self.spec)

    def key(self, mult, stream: energy_model.Stream | None) -> dict:
        """The results-store key (toolchain versions are added by the store)."""
        key = {"spec": mult.spec, "target": self.target, "unit": self.unit,
               "model": MODEL_VERSION}
        if self.target != "generic":
            key["dsp"] = self.dsp
            key["fmax"] = self.fmax
        if self.unit != "mult":
            key["acc_width"] = self.acc_width
        if mult.modes > 1:
            key["mode"] = self.mode
        if self.has_energy:
            key["stream"] = stream_for(mult, stream).identity
            if self.glitches:
                key["delay"] = "unit"
            if self.unit == "mac":
                key["reduction"] = self.reduction
        design = design_identity(mult)
        if design:
            key["design"] = design
        return key


def design_identity(mult) -> str | None:
    """Hash of an imported multiplier's sources and table (re-import = new records)."""
    sources = getattr(mult, "verilog_sources", None)
    if not sources:
        return None
    h = hashlib.sha256()
    for p in sources:
        h.update(p.read_bytes())
    h.update(np.ascontiguousarray(mult.model_table()).tobytes())
    return h.hexdigest()[:20]


def stream_for(mult, stream: energy_model.Stream | None) -> energy_model.Stream:
    return stream if stream is not None else energy_model.uniform_stream(mult.fmt)


def _with_clr(stream: energy_model.Stream, reduction: int) -> energy_model.Stream:
    if stream.clr is not None:
        return stream
    clr = (np.arange(len(stream)) % reduction) == 0
    return energy_model.Stream(stream.a, stream.b, stream.identity, clr)


def unit_energy(request: Request, mult, stream: energy_model.Stream | None,
                run: GenericRun | None = None) -> dict:
    """Energy figures of the request's unit (`mult` or `mac`) under `stream`, on the
    netlist of `run` (the unit's generic mapping; made when not given)."""
    stream = stream_for(mult, stream)
    if run is None:
        run = generic_run(Unit(mult, request.unit, request.acc_width))
    if request.unit == "mult":
        return energy_model.multiplier_energy(mult, stream, request.mode,
                                              (run.netlist, run.ports),
                                              glitches=request.glitches)
    return energy_model.mac_energy(mult, request.acc_width, _with_clr(stream, request.reduction),
                                   request.mode, run.netlist, glitches=request.glitches)


def exact_reference(mult):
    """The exact multiplier of `mult`'s format (the energy_ratio denominator)."""
    from axsa.rtl.multipliers import exact_multiplier
    return exact_multiplier(mult.fmt)


def reference_energy(request: Request, mult, stream, store=None) -> float:
    """Energy of the exact multiplier, same format, unit and stream (stored as kind
    ``"energy"`` so every design of a format shares one computation)."""
    exact = exact_reference(mult)
    ref = Request(exact.spec, "generic", unit=request.unit,
                  acc_width=request.acc_width, reduction=request.reduction,
                  glitches=request.glitches)

    def compute():
        return unit_energy(ref, exact, stream)

    if store is None:
        return compute()["energy"]
    key = {k: v for k, v in ref.key(exact, stream).items() if k != "target"}
    return store.get_or_compute("energy", key, compute)["energy"]


def error_figures(mult, request: Request, netlist=None) -> dict:
    """Error metrics over every operand pair; from the netlist's table when given (a
    (netlist, ports) pair: the multiplier's module and its port names)."""
    from axsa.rtl.multipliers import exact_table

    from .metrics import error_metrics
    table = mult.model_table(request.mode)
    if netlist is not None:
        from .netlist import table_from_netlist
        gates, ports = netlist
        read = table_from_netlist(gates, mult.fmt, request.mode if mult.modes > 1 else None,
                                  ports=(ports["a"], ports["b"], ports["p"]))
        if not np.array_equal(read, table):
            bad = np.argwhere(read != table)[0]
            raise ToolError(f"{mult.spec}: the synthesized netlist differs from the numpy model "
                            f"at codes a={bad[0]}, b={bad[1]} ({read[tuple(bad)]} vs "
                            f"{table[tuple(bad)]})")
    return error_metrics(table, exact_table(mult.fmt))


def compute(request: Request, stream: energy_model.Stream | None = None,
            ref_energy: float | None = None, store=None) -> dict:
    """Characterize without looking in the store for the design itself.

    `ref_energy` (the exact multiplier's energy under the same stream) is computed when
    not given, through `store` if one is given.
    """
    from axsa.rtl.multipliers import parameters
    mult = request.multiplier()
    mult._check_mode(request.mode)
    unit = Unit(mult, request.unit, request.acc_width)
    out = {"spec": mult.spec, "family": mult.family, "format": str(mult.fmt),
           "params": parameters(mult), "target": request.target, "unit": unit.name}
    run = table_netlist = None
    if request.target == "generic":
        run = generic_run(unit)
        figures = run.figures
        table_netlist = (run.mult_netlist, run.ports)
    else:
        figures = synthesize(unit, request.target, dsp=request.dsp, fmax=request.fmax)
    out |= figures
    if request.has_energy:
        stream = stream_for(mult, stream)
        e = unit_energy(request, mult, stream, run)
        if ref_energy is None:
            ref_energy = reference_energy(request, mult, stream, store)
        out |= {k: e[k] for k in ("energy", "energy_dynamic", "energy_leakage")}
        out["energy_ratio"] = round(e["energy"] / ref_energy, 6) if ref_energy else None
        out["stream"] = stream.identity
        out["delay"] = "unit" if request.glitches else "zero"
    out |= error_figures(mult, request, table_netlist)
    return out


def characterize(request: Request, stream: energy_model.Stream | None = None,
                 store=None) -> dict:
    """The request's figures, answered from `store` when recorded there (then recorded)."""
    mult = request.multiplier()
    mult._check_mode(request.mode)
    if store is None:
        return compute(request, stream)
    key = request.key(mult, stream)
    return store.get_or_compute("synth", key, lambda: compute(request, stream, store=store))

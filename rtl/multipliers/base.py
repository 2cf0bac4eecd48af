"""Spec strings, operand formats and the `Multiplier` base class every family derives from.

A multiplier has three faces, kept side by side in its family's file:

- `model(a, b, mode)`: a vectorised numpy model over operand *values*;
- `rtl(m, a, b, mode)`: the Amaranth logic, wrapped by `MultiplierComponent`;
- the product table read off the synthesized netlist (`axsa.synth.netlist`), which must
  equal `model_table()` for every operand pair.

Spec grammar: ``family(param=value, ...)@FORMAT`` with FORMAT ``s8``, ``u4`` or ``s8x4``
(first operand 8-bit, second 4-bit). Parentheses may be left out without parameters.
A value is an integer, or for list parameters integers joined by ``/`` (``k=0/4/8``).

Sweep grids (`parse_grid_item`, expanded by `axsa.rtl.multipliers.expand_grid`) extend a
value to alternatives: ``trunc(k=2..6)``, ``bam(h=0|2,v=4..6)``, ``cfgtrunc(k=0/4|0/2)``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from amaranth.hdl import Module, Shape, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from axsa import formats
from axsa.errors import InputError, SpecError  # noqa: F401  (SpecError re-exported)

MIN_WIDTH, MAX_WIDTH = formats.MIN_WIDTH, formats.MAX_WIDTH
Format = formats.Format
value_range, code_values, to_codes = formats.value_range, formats.code_values, formats.to_codes


@dataclass(frozen=True)
class Param:
    """A family parameter: integer (or list of integers) in an inclusive range.

    `lo` and `hi` are integers or callables of the `Format` (ranges often depend on width).
    A parameter without a default is required.
    """

    name: str
    lo: int | Callable[[Format], int]
    hi: int | Callable[[Format], int]
    default: Any = None
    doc: str = ""
    is_list: bool = False

    def bounds(self, fmt: Format) -> tuple[int, int]:
        lo = self.lo(fmt) if callable(self.lo) else self.lo
        hi = self.hi(fmt) if callable(self.hi) else self.hi
        return lo, hi

    def describe(self) -> str:
        def show(x):
            return "f(width)" if callable(x) else str(x)
        rng = f"{show(self.lo)}..{show(self.hi)}"
        if self.is_list:
            rng = f"list of {rng} joined by '/'"
        d = "" if self.default is None else f", default {_fmt_value(self.default)}"
        return f"{self.name} ({rng}{d}): {self.doc}"


def _fmt_value(v) -> str:
    return "/".join(str(x) for x in v) if isinstance(v, tuple) else str(v)


class Multiplier:
    """Base of every multiplier family: a combinational `a * b` circuit, exact or not.

    Subclasses set `family`, `params`, `doc`, and implement `model` and `rtl`.
    A multiplier with `modes > 1` has a runtime `mode` input; mode 0..modes-1.

    Attributes
    ----------
    fmt : Format
        Operand format.
    values : dict
        Parameter values, defaults filled in.
    spec : str
        Canonical spec string (parameters in declared order, defaults left out).
    """

    family: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    doc: ClassVar[str] = ""

    def __init__(self, fmt: Format, **values):
        self.fmt = fmt
        self.values = self._check(fmt, values)
        self.__dict__.update(self.values)
        self.validate()

    # -- parameters -------------------------------------------------------------------
    @classmethod
    def _check(cls, fmt: Format, values: dict) -> dict:
        known = {p.name: p for p in cls.params}
        for name in values:
            if name not in known:
                names = ", ".join(known) or "none"
                raise SpecError(f"unknown parameter {name!r} for family {cls.family!r} "
                                f"(parameters: {names})")
        out = {}
        for p in cls.params:
            if p.name not in values:
                if p.default is None:
                    raise SpecError(f"family {cls.family!r} needs parameter {p.name!r}")
                out[p.name] = p.default
                continue
            v = values[p.name]
            items = v if isinstance(v, tuple) else (v,)
            if isinstance(v, tuple) and not p.is_list:
                raise SpecError(f"parameter {p.name}={_fmt_value(v)} of {cls.family} takes "
                                "one integer, not a list")
            lo, hi = p.bounds(fmt)
            for x in items:
                if not isinstance(x, (int, np.integer)) or not lo <= x <= hi:
                    raise SpecError(f"parameter {p.name}={x} of {cls.family} is out of range "
                                    f"{lo}..{hi} for format {fmt}")
            out[p.name] = tuple(items) if p.is_list else v
        return out

    def validate(self) -> None:
        """Hook for checks across parameters; raise SpecError naming the bad value."""

    @property
    def spec(self) -> str:
        shown = [f"{p.name}={_fmt_value(self.values[p.name])}" for p in self.params
                 if p.default is None or self.values[p.name] != p.default]
        body = f"({','.join(shown)})" if shown else ""
        return f"{self.family}{body}@{self.fmt}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Multiplier) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    # -- shapes ----------------------------------------------------------------------
    modes: int = 1

    @property
    def a_shape(self) -> Shape:
        return signed(self.fmt.a_width) if self.fmt.signed else unsigned(self.fmt.a_width)

    @property
    def b_shape(self) -> Shape:
        return signed(self.fmt.b_width) if self.fmt.signed else unsigned(self.fmt.b_width)

    @functools.cached_property
    def p_shape(self) -> Shape:
        """Narrowest shape holding every product of every mode (read off the model)."""
        lo = min(int(self.model_table(m).min()) for m in range(self.modes))
        hi = max(int(self.model_table(m).max()) for m in range(self.modes))
        if self.fmt.signed:
            return Shape.cast(range(lo, hi + 1))
        return unsigned(max(hi, 1).bit_length())

    @property
    def is_exact(self) -> bool:
        """True when every mode equals a*b on every operand pair (checked on the model)."""
        exact = exact_table(self.fmt)
        return all(np.array_equal(self.model_table(m), exact) for m in range(self.modes))

    # -- the numpy face --------------------------------------------------------------
    def model(self, a: np.ndarray, b: np.ndarray, mode: int = 0) -> np.ndarray:
        """Products of operand values `a` and `b` (broadcast), int64."""
        raise NotImplementedError

    def model_table(self, mode: int = 0) -> np.ndarray:
        """Product table from the numpy model: lut[a_code, b_code], int64."""
        return self._model_table(mode).copy()

    def _model_table(self, mode: int) -> np.ndarray:
        # Cached per instance (read-only array): every part asks for the same tables.
        cache = self.__dict__.setdefault("_tables", {})
        if mode not in cache:
            cache[mode] = self._compute_table(mode)
        return cache[mode]

    def _compute_table(self, mode: int) -> np.ndarray:
        self._check_mode(mode)
        a = self.fmt.a_values()[:, None]
        b = self.fmt.b_values()[None, :]
        table = np.asarray(self.model(a, b, mode), dtype=np.int64)
        table = np.broadcast_to(table, (a.size, b.size))
        table.setflags(write=False)
        return table

    def _check_mode(self, mode: int) -> None:
        if not isinstance(mode, (int, np.integer)) or not 0 <= mode < self.modes:
            raise InputError(f"mode {mode} is out of range 0..{self.modes - 1} for {self.spec}")

    # -- the Amaranth face ------------------------------------------------------------
    def rtl(self, m: Module, a: Value, b: Value, mode: Value | None) -> Value:
        """Add the logic to `m` and return the product expression (any width; it is
        assigned to the `p` port, which is `p_shape`)."""
        raise NotImplementedError

    def elaboratable(self) -> MultiplierComponent:
        """A fresh combinational component with ports `a`, `b`, `p` (and `mode`)."""
        return MultiplierComponent(self)


class MultiplierComponent(wiring.Component):
    """Combinational multiplier: `p` = product of `a` and `b` under `mode`.

    Latency: 0 cycles (purely combinational). Ports: ``a``, ``b`` in the operand format,
    ``p`` of the multiplier's `p_shape`, and ``mode`` when the multiplier has modes.
    """

    def __init__(self, multiplier: Multiplier):
        self.multiplier = multiplier
        ports = {
            "a": In(multiplier.a_shape),
            "b": In(multiplier.b_shape),
            "p": Out(multiplier.p_shape),
        }
        if multiplier.modes > 1:
            ports["mode"] = In(range(multiplier.modes))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        mode = self.mode if self.multiplier.modes > 1 else None
        m.d.comb += self.p.eq(self.multiplier.rtl(m, self.a, self.b, mode))
        return m


def exact_table(fmt: Format) -> np.ndarray:
    """The exact product table a*b for `fmt`, indexed by codes (read-only int64)."""
    return fmt.exact_table()


# -- spec parsing ------------------------------------------------------------------------

_SPEC = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*")


def split_spec(text: str) -> tuple[str, dict, Format]:
    """Parse ``family(p=v,...)@FORMAT`` into (family, raw values, Format); syntax only."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("empty multiplier spec: expected FAMILY(PARAM=VALUE,...)@FORMAT, "
                        "e.g. 'drum(k=4)@u8'")
    if text.count("(") != text.count(")"):
        raise SpecError(f"malformed spec {text!r}: unbalanced parentheses")
    if "@" not in text:
        raise SpecError(f"missing format in spec {text!r}: add @FORMAT, e.g. '{text.strip()}@s8'")
    head, _, fmt_text = text.rpartition("@")
    match = _SPEC.fullmatch(head)
    if not match:
        raise SpecError(f"malformed spec {text!r}: expected FAMILY(PARAM=VALUE,...)@FORMAT")
    family, body = match[1], match[2]
    fmt = Format.parse(fmt_text)
    values: dict[str, Any] = {}
    if body is not None and body.strip():
        for item in body.split(","):
            name, eq, raw = item.partition("=")
            name, raw = name.strip(), raw.strip()
            if not eq or not re.fullmatch(r"[A-Za-z_]\w*", name):
                raise SpecError(f"malformed parameter {item.strip()!r} in spec {text!r}: "
                                "expected NAME=VALUE")
            if name in values:
                raise SpecError(f"parameter {name!r} given twice in spec {text!r}")
            try:
                parts = [int(x, 0) for x in raw.split("/")]
            except ValueError:
                raise SpecError(f"bad value {raw!r} for parameter {name!r} in spec {text!r}: "
                                "expected an integer (or integers joined by '/')") from None
            values[name] = tuple(parts) if "/" in raw else parts[0]
    return family, values, fmt


def format_spec(family: str, values: dict, fmt: Format) -> str:
    """The spec text of `family` with raw `values` at `fmt` (as given, not canonical):
    the inverse of `split_spec`, for naming a design that could not be built."""
    body = ",".join(f"{name}={_fmt_value(v)}" for name, v in values.items())
    return f"{family}({body})@{fmt}" if body else f"{family}@{fmt}"


# -- sweep grids ---------------------------------------------------------------------------

#: most designs one grid may expand to; `count_grid` is checked against it before expanding
MAX_GRID_POINTS = 10_000


def split_top(text: str) -> list[str]:
    """Split at commas that are not inside parentheses (the items of a grid)."""
    items, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SpecError(f"unbalanced '(' in {text!r}")
    items.append("".join(cur))
    return [i.strip() for i in items if i.strip()]


#: one parameter's alternatives: ranges (``A..B``, never materialized) and single values
Axis = list  # list[range | int | tuple[int, ...]]


def _grid_int(text: str, item: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than Python converts
        raise SpecError(f"bad value {text[:20]!r}... in {item!r}: too long") from None


def _axis(raw: str, item: str) -> Axis:
    out: Axis = []
    for alt in raw.split("|"):
        alt = alt.strip()
        m = re.fullmatch(r"(-?\d+)\s*\.\.\s*(-?\d+)", alt)
        if m:
            lo, hi = _grid_int(m[1], item), _grid_int(m[2], item)
            if hi < lo:
                raise SpecError(f"empty range {alt!r} in {item!r}")
            out.append(range(lo, hi + 1))
        elif re.fullmatch(r"-?\d+(/-?\d+)*", alt):
            parts = tuple(_grid_int(x, item) for x in alt.split("/"))
            out.append(parts if "/" in alt else parts[0])
        else:
            raise SpecError(f"bad value {alt!r} in {item!r}: expected N, A..B, or "
                            "alternatives joined by '|'")
    return out


def parse_grid_item(item: str) -> tuple[str, dict[str, Axis]]:
    """One grid item ``family(p=A..B|C, q=...)`` -> (family, parameter -> alternatives)."""
    m = _SPEC.fullmatch(item)
    if not m:
        raise SpecError(f"bad family item {item!r}: expected FAMILY or FAMILY(P=V,...)")
    family, body = m[1], m[2]
    axes: dict[str, Axis] = {}
    if body and body.strip():
        for part in body.split(","):
            name, eq, raw = part.partition("=")
            name = name.strip()
            if not eq or not re.fullmatch(r"[A-Za-z_]\w*", name):
                raise SpecError(f"bad parameter {part.strip()!r} in {item!r}: expected P=V")
            if name in axes:
                raise SpecError(f"parameter {name!r} given twice in {item!r}")
            axes[name] = _axis(raw, item)
    return family, axes


def axis_size(axis: Axis) -> int:
    """Number of values of one parameter's alternatives (ranges counted, not expanded)."""
    return sum(len(a) if isinstance(a, range) else 1 for a in axis)


def axis_values(axis: Axis):
    """The values of one parameter's alternatives, in order."""
    for a in axis:
        if isinstance(a, range):
            yield from a
        else:
            yield a

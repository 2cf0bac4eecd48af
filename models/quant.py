"""Symmetric quantization: fake-quant with a clipped straight-through estimator, observers,
and the fixed-point requantization every part of axsa shares.

Conventions (../shared/DESIGN.md):

* Quantization is symmetric, zero point 0. A ``bits``-wide signed code lies in
  ``[-2^(bits-1), 2^(bits-1) - 1]``, an unsigned one in ``[0, 2^bits - 1]``. The scale of a
  tensor is ``amax / qmax`` where ``amax`` comes from an observer.
* Rounding is half-up, ``floor(x + 0.5)``, everywhere (the integer path's
  ``(acc * m + 2^(s-1)) >> s`` rounds the same way).
* Requantization of an integer accumulator is ``clamp((acc * m + 2^(s-1)) >> s)`` with an
  integer multiplier ``m`` (``M_BITS`` = 24 bits of precision, ``2^23 <= m < 2^24``) and a
  shift ``s >= 1``; ``>>`` is an arithmetic shift (floor). :func:`fixed_point` turns a real
  ratio into ``(m, s)``, :func:`requantize` applies it to int64 tensors.

The straight-through estimator is written once, :func:`ste`: the forward value is an exact
tensor (integer-valued), the gradient is that of a float surrogate, zeroed where a clamp
was active (clipped STE). :func:`quantize` uses it; so do the integer operators of
:mod:`axsa.models.ops` and the fake-quant requantization.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from axsa import formats

#: bits of precision of the requantization multiplier m (2^(M_BITS-1) <= m < 2^M_BITS)
M_BITS = 24
#: largest shift fixed_point() returns; acc * m + 2^(s-1) must fit in int64
MAX_SHIFT = 62

OBSERVERS = ("minmax", "ema", "percentile")


def qrange(bits: int, signed: bool = True) -> tuple[int, int]:
    """Integer code range ``(qmin, qmax)`` of a ``bits``-wide symmetric quantizer."""
    if not isinstance(bits, int) or not 2 <= bits <= 32:
        raise ValueError(f"bits must be an integer in 2..32, got {bits!r}")
    return formats.value_range(bits, signed)


def ste(exact: torch.Tensor, surrogate: torch.Tensor, mask: torch.Tensor | None = None):
    """Straight-through estimator: value of ``exact``, gradient of ``surrogate``.

    ``mask`` (bool, broadcastable) zeroes the gradient where it is False: the clipped STE.
    The forward value is ``exact`` bit for bit (``s - s`` is exactly 0 in IEEE arithmetic),
    so integer-valued tensors stay integer-valued.
    """
    if mask is not None:
        surrogate = surrogate * mask
    return exact.detach() + (surrogate - surrogate.detach())


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


def quantize(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes of ``x`` (a float tensor holding integers), clipped STE gradient.

    ``q = clamp(floor(x / scale + 0.5), qmin, qmax)``, computed in float64 so that the
    codes do not depend on the dtype of ``x``; ``dq/dx = 1/scale`` inside the range, 0
    outside. Multiply by ``scale`` for the fake-quantized value.
    """
    scale = scale.detach().to(torch.float64)
    t = x.to(torch.float64) / scale
    q = round_half_up(t).clamp(qmin, qmax)
    return ste(q, t, (t >= qmin - 0.5) & (t <= qmax + 0.5)).to(x.dtype)


def fake_quant(x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool = True):
    """Symmetric fake quantization ``quantize(x) * scale`` with the clipped STE."""
    qmin, qmax = qrange(bits, signed)
    return quantize(x, scale, qmin, qmax) * scale.detach().to(x.dtype)


def fixed_point(ratio, m_bits: int = M_BITS) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer ``(m, s)`` with ``m / 2^s ~= ratio``, ``2^(m_bits-1) <= m < 2^m_bits``.

    Parameters
    ----------
    ratio : float or tensor
        Positive real ratio(s), e.g. ``scale_a * scale_b / scale_out``; per-channel ratios
        give per-channel ``m`` and ``s``.

    Returns
    -------
    m, s : int64 tensors of ratio's shape. ``s`` is clamped to ``1..MAX_SHIFT``: ratios
    below ``2^-(MAX_SHIFT - m_bits)`` lose precision (their outputs are 0 anyway).
    """
    r = torch.as_tensor(ratio, dtype=torch.float64).detach()
    if not bool(torch.all(r > 0)) or not bool(torch.all(torch.isfinite(r))):
        raise ValueError(f"requantization ratio must be positive and finite, got {r}")
    mant, exp = torch.frexp(r)                       # r = mant * 2^exp, mant in [0.5, 1)
    m = torch.floor(mant * (1 << m_bits) + 0.5).to(torch.int64)
    s = m_bits - exp.to(torch.int64)
    top = m == (1 << m_bits)                         # mant rounded up to 1.0
    m = torch.where(top, m >> 1, m)
    s = torch.where(top, s - 1, s)
    if bool(torch.any(s < 1)):
        raise ValueError(f"requantization ratio {r.max().item():g} too large for a shift >= 1")
    big = s > MAX_SHIFT
    if bool(torch.any(big)):
        m = torch.where(big, torch.floor(r * 2.0 ** MAX_SHIFT + 0.5).to(torch.int64), m)
        s = torch.where(big, torch.full_like(s, MAX_SHIFT), s)
    return m, s


def requantize(acc: torch.Tensor, m, s, bits: int, signed: bool = True) -> torch.Tensor:
    """``clamp((acc * m + 2^(s-1)) >> s)`` on int64 tensors (../shared/DESIGN.md).

    Parameters
    ----------
    acc : int64 tensor
        Accumulators. ``acc * m`` must fit in int64 (|acc| < 2^39 with 24-bit m).
    m, s : int or int64 tensor broadcastable to ``acc`` (per-channel along the last axis)
        Multiplier and shift, ``s >= 1``; ``>>`` is an arithmetic shift (floor).
    bits, signed : output code range, see :func:`qrange`.
    """
    qmin, qmax = qrange(bits, signed)
    return _shift_round(acc, m, s).clamp(qmin, qmax)


def _shift_round(acc, m, s):
    m = torch.as_tensor(m, dtype=torch.int64)
    s = torch.as_tensor(s, dtype=torch.int64)
    if bool(torch.any(s < 1)):
        raise ValueError(f"shift must be >= 1, got {s.min().item()}")
    half = torch.bitwise_left_shift(torch.ones_like(s), s - 1)
    return torch.bitwise_right_shift(acc.to(torch.int64) * m + half, s)


def requantize_ste(acc: torch.Tensor, ratio: torch.Tensor, qmin: int, qmax: int,
                   integer: bool) -> torch.Tensor:
    """Requantize with ``(m, s) = fixed_point(ratio)`` in either execution mode.

    ``integer=True``: ``acc`` is int64, the result is :func:`requantize`. ``integer=False``
    (fake-quant): ``acc`` is a float tensor holding integers; the forward value is the SAME
    integer (computed exactly in float64: ``acc * m`` stays below 2^53 for accumulators
    below 2^29) and the gradient is ``ratio`` inside the clamp range (clipped STE).
    """
    m, s = fixed_point(ratio)
    if integer:
        return _shift_round(acc, m, s).clamp(qmin, qmax)
    a64 = acc.to(torch.float64)
    exact = torch.floor(a64 * m.to(torch.float64) * torch.pow(2.0, -s.to(torch.float64)) + 0.5)
    t = a64 * ratio.detach().to(torch.float64)
    out = ste(exact.clamp(qmin, qmax), t, (exact >= qmin) & (exact <= qmax))
    return out.to(acc.dtype)


# ----------------------------------------------------------------------------------------
# Observers


class Observer(nn.Module):
    """Tracks ``amax`` (largest magnitude) of the tensors it sees; ``scale = amax / qmax``.

    Parameters
    ----------
    kind : "minmax" | "ema" | "percentile"
        ``minmax``: running maximum of ``|x|`` (or the current tensor's when
        ``track=False``, for weights); ``ema``: exponential moving average of each batch's
        ``max |x|``; ``percentile``: moving average of each batch's ``pct`` percentile of
        ``|x|`` (robust to outliers; values above are clipped).
    bits, signed : code range of the quantizer this observer serves.
    channel_axis : int or None
        None: one scale per tensor; otherwise one scale per index of that axis.
    momentum : float
        EMA weight of a new batch (``ema`` and ``percentile``).
    pct : float
        Percentile in (0, 100] for ``percentile``.
    track : bool
        False: the scale is computed from the current tensor only (weights).
    """

    def __init__(self, kind: str = "ema", bits: int = 8, signed: bool = True,
                 channel_axis: int | None = None, momentum: float = 0.05,
                 pct: float = 99.9, track: bool = True, channels: int = 1):
        super().__init__()
        if kind not in OBSERVERS:
            raise ValueError(f"unknown observer {kind!r} (known: {', '.join(OBSERVERS)})")
        if not 0 < pct <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {pct!r}")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
        self.kind, self.bits, self.signed = kind, bits, signed
        self.channel_axis, self.momentum, self.pct, self.track = channel_axis, momentum, pct, track
        self.qmin, self.qmax = qrange(bits, signed)
        n = channels if channel_axis is not None else 1
        self.register_buffer("amax", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    def _batch_amax(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().abs().to(torch.float64)
        if self.channel_axis is None:
            flat = x.reshape(1, -1)
        else:
            flat = x.movedim(self.channel_axis, 0).reshape(x.shape[self.channel_axis], -1)
        if self.kind == "percentile" and self.pct < 100:
            if flat.shape[1] > 1 << 16:   # torch.quantile's input limit; a strided sample
                flat = flat[:, :: -(-flat.shape[1] // (1 << 16))]
            return torch.quantile(flat, self.pct / 100.0, dim=1)
        return flat.amax(dim=1)

    def forward(self, x: torch.Tensor) -> None:
        """Update the statistics with ``x`` (call only while calibrating or training)."""
        cur = self._batch_amax(x)
        if not self.track or int(self.seen) == 0:
            self.amax.copy_(cur)
        elif self.kind == "minmax":
            torch.maximum(self.amax, cur, out=self.amax)
        else:
            self.amax.mul_(1 - self.momentum).add_(self.momentum * cur)
        self.seen += 1

    def scale(self) -> torch.Tensor:
        """float64 scale(s): per-tensor (shape ()) or per-channel (shape (C,))."""
        s = self.amax.clamp_min(1e-8) / self.qmax
        return s if self.channel_axis is not None else s.reshape(())


class Quantizer(nn.Module):
    """Observer + code range: ``codes(x)`` gives integer codes with the clipped STE.

    In training mode (``module.training`` and ``observe=True``) each call updates the
    observer; in eval mode the scale is frozen. ``track=False`` quantizers (weights)
    always use the current tensor's range.
    """

    def __init__(self, bits: int, signed: bool = True, observer: str = "ema",
                 channel_axis: int | None = None, channels: int = 1, track: bool = True,
                 **kw):
        super().__init__()
        self.bits, self.signed = bits, signed
        self.qmin, self.qmax = qrange(bits, signed)
        self.observer = Observer(observer, bits, signed, channel_axis, track=track,
                                 channels=channels, **kw)
        self.channel_axis = channel_axis

    def scale(self) -> torch.Tensor:
        return self.observer.scale()

    def _bcast(self, scale: torch.Tensor, ndim: int) -> torch.Tensor:
        if self.channel_axis is None:
            return scale
        shape = [1] * ndim
        shape[self.channel_axis] = -1
        return scale.reshape(shape)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (same dtype as ``x``), observing first when training."""
        if self.training or not self.observer.track or int(self.observer.seen) == 0:
            self.observer(x)
        return quantize(x, self._bcast(self.scale(), x.dim()), self.qmin, self.qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantized ``x`` (codes times scale)."""
        q = self.codes(x)
        return q * self._bcast(self.scale(), x.dim()).to(x.dtype)


def quantize_bias(bias: torch.Tensor, acc_scale: torch.Tensor, acc_bits: int = 32,
                  integer: bool = False) -> torch.Tensor:
    """Bias as an integer in the accumulator's scale ``scale_a * scale_b`` (int32 range).

    Float tensor holding integers with STE gradient, or int64 when ``integer``.
    """
    qmin, qmax = qrange(acc_bits, True)
    q = quantize(bias, acc_scale, qmin, qmax)
    return q.detach().to(torch.int64) if integer else q


def check_exact_float(bits: int, k: int, dtype=torch.float32) -> None:
    """Raise if a float GEMM of ``bits``-wide operands over ``k`` terms could round.

    Fake-quant GEMMs run on float tensors holding integers; they are exact while every
    partial sum stays below 2^24 (float32) or 2^53 (float64).
    """
    limit = 24 if dtype == torch.float32 else 53
    worst = k * (1 << (2 * bits - 2))
    if worst >= 1 << limit:
        raise ValueError(f"a {bits}-bit GEMM over {k} terms may reach {worst}, beyond exact "
                         f"{dtype} integers (2^{limit}); use fewer bits or a smaller layer")


def log2_ceil(n: int) -> int:
    return max(0, math.ceil(math.log2(n)))

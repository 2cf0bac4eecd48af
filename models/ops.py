"""Integer-only non-linear operators, each with a bit-exact definition and a float
counterpart used for gradients in quantization-aware training.

Every operator comes as ``op(..., integer: bool)``:

* ``integer=True``: inputs are int64 tensors of codes; the result is int64 and defined
  exactly by the ``int_*`` function below (the reference the RTL must match).
* ``integer=False`` (fake-quant): inputs are float tensors holding the same codes. The
  forward value is computed by the SAME ``int_*`` function (so the fake-quant and integer
  paths agree bit for bit), the gradient is that of the float counterpart (straight-
  through estimator, :func:`axsa.models.quant.ste`).

Widths and rounding (``n`` = length of the reduced axis, ``b`` = model bits):

softmax (:func:`int_softmax`)
    Input: ``SOFTMAX_IN_BITS`` = 8-bit signed codes ``q`` with scale ``S``. Max
    subtraction ``d = max(q) - q`` (8-bit unsigned, 0..255); ``e = EXP[d]`` from a
    256-entry table ``EXP[d] = floor(2^15 exp(-d S) + 0.5)`` (UQ1.15, <= 2^15, built in
    float64 from ``S`` at conversion); row sum ``t = sum e`` (<= n 2^15);
    output ``p = floor((e P + floor(t/2)) / t)`` with ``P = 2^(b-1) - 1``: probability codes
    in ``[0, P]``, scale ``1/P`` (so A@V keeps signed b-bit operands).
layernorm (:func:`int_layernorm`)
    Scale-free, so only the codes matter: ``c = n q - sum q`` (exact centring, times n),
    ``v = floor(sum c^2 / n)`` (= n^2 var), ``r = max(isqrt(v), 1)`` (= n std, exact
    integer square root), ``y = floor((c 2^F + floor(r/2)) / r)`` with ``F = LN_FRAC_BITS``
    = 8: the normalized value in Q.8. The affine part ``y gamma + beta`` uses
    ``GAMMA_BITS`` = 12-bit gamma codes and an integer beta in the scale ``2^-F S_gamma``
    and is requantized like any accumulator.
relu
    ``max(q, 0)``: folded into the requantization clamp of the layer it follows.
residual add (:func:`add_requant`)
    ``out = clamp((qx mx + qy my + 2^(s-1)) >> s)`` where ``(mx, s) = fixed_point(Sx/So)``
    or from ``Sy/So`` (the larger ratio sets ``s``) and the other multiplier shares ``s``.
average pooling (:func:`avg_pool`)
    Integer sum over ``n`` codes, then requantized with ratio ``S_in / (n S_out)``.
"""

from __future__ import annotations

import torch

from .quant import _shift_round, fixed_point, qrange, requantize_ste, ste

SOFTMAX_IN_BITS = 8
EXP_FRAC_BITS = 15
LN_FRAC_BITS = 8
GAMMA_BITS = 12


def _codes(x: torch.Tensor) -> torch.Tensor:
    """int64 codes of a float tensor holding integers (no gradient)."""
    return torch.floor(x.detach() + 0.5).to(torch.int64)


# ----------------------------------------------------------------------------------------
# softmax


def exp_table(scale) -> torch.Tensor:
    """The 256-entry exp table ``floor(2^15 exp(-d scale) + 0.5)``, int64, d = 0..255."""
    d = torch.arange(1 << SOFTMAX_IN_BITS, dtype=torch.float64)
    s = torch.as_tensor(scale, dtype=torch.float64).detach()
    return torch.floor(torch.exp(-d * s) * (1 << EXP_FRAC_BITS) + 0.5).to(torch.int64)


def int_softmax(q: torch.Tensor, table: torch.Tensor, out_bits: int) -> torch.Tensor:
    """Integer softmax over the last axis of int64 codes ``q`` (see module docstring)."""
    p = qrange(out_bits, True)[1]
    d = (q.amax(dim=-1, keepdim=True) - q).clamp(0, table.numel() - 1)
    e = table[d]
    t = e.sum(dim=-1, keepdim=True)
    return torch.div(e * p + t // 2, t, rounding_mode="floor")


def softmax(q: torch.Tensor, scale, out_bits: int, integer: bool) -> torch.Tensor:
    """Softmax of score codes ``q`` (scale ``scale``) -> probability codes, scale 1/P."""
    table = exp_table(scale)
    if integer:
        return int_softmax(q, table, out_bits)
    p = qrange(out_bits, True)[1]
    exact = int_softmax(_codes(q), table, out_bits).to(q.dtype)
    sur = torch.softmax(q * torch.as_tensor(scale, dtype=q.dtype), dim=-1) * p
    return ste(exact, sur)


# ----------------------------------------------------------------------------------------
# layer norm


def isqrt(v: torch.Tensor) -> torch.Tensor:
    """Exact integer square root ``floor(sqrt(v))`` of a non-negative int64 tensor (< 2^52)."""
    r = torch.floor(torch.sqrt(v.to(torch.float64))).to(torch.int64)
    r = r - (r * r > v).to(torch.int64)              # float sqrt is within 1 of the truth
    return r + ((r + 1) * (r + 1) <= v).to(torch.int64)


def int_layernorm(q: torch.Tensor) -> torch.Tensor:
    """Normalized codes ``y`` in Q.``LN_FRAC_BITS`` over the last axis (module docstring)."""
    n = q.shape[-1]
    c = n * q - q.sum(dim=-1, keepdim=True)
    v = torch.div((c * c).sum(dim=-1, keepdim=True), n, rounding_mode="floor")
    r = isqrt(v).clamp_min(1)
    return torch.div((c << LN_FRAC_BITS) + r // 2, r, rounding_mode="floor")


def layernorm(q: torch.Tensor, integer: bool) -> torch.Tensor:
    """Normalization part of LayerNorm on codes (no affine); Q.8 fixed point out."""
    if integer:
        return int_layernorm(q)
    exact = int_layernorm(_codes(q)).to(torch.float64)
    x = q.to(torch.float64)
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    sur = (x - mu) / torch.sqrt(var + 1e-3) * (1 << LN_FRAC_BITS)
    return ste(exact, sur)


# ----------------------------------------------------------------------------------------
# residual add, pooling


def add_params(sx, sy, so) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer ``(mx, my, s)`` of a residual add: ``(qx mx + qy my + 2^(s-1)) >> s``."""
    sx, sy, so = (torch.as_tensor(v, dtype=torch.float64).detach() for v in (sx, sy, so))
    rx, ry = sx / so, sy / so
    _, s = fixed_point(torch.maximum(rx, ry))
    mx = torch.floor(rx * torch.pow(2.0, s.to(torch.float64)) + 0.5).to(torch.int64)
    my = torch.floor(ry * torch.pow(2.0, s.to(torch.float64)) + 0.5).to(torch.int64)
    return mx, my, s


def add_requant(qx: torch.Tensor, sx, qy: torch.Tensor, sy, so, bits: int,
                integer: bool) -> torch.Tensor:
    """``x + y`` rescaled to scale ``so``, ``bits``-wide signed codes (module docstring)."""
    sx, sy, so = (torch.as_tensor(v, dtype=torch.float64).detach() for v in (sx, sy, so))
    rx, ry = sx / so, sy / so
    mx, my, s = add_params(sx, sy, so)
    qmin, qmax = qrange(bits, True)
    if integer:
        return _shift_round(qx * mx + qy * my, 1, s).clamp(qmin, qmax)
    acc = qx.to(torch.float64) * mx.to(torch.float64) + qy.to(torch.float64) * my.to(
        torch.float64)                               # < 2^33: exact in float64
    exact = torch.floor(acc * torch.pow(2.0, -s.to(torch.float64)) + 0.5)
    sur = qx.to(torch.float64) * rx + qy.to(torch.float64) * ry
    out = ste(exact.clamp(qmin, qmax), sur, (exact >= qmin) & (exact <= qmax))
    return out.to(qx.dtype)


def avg_pool(q: torch.Tensor, dim: int, s_in, s_out, bits: int, integer: bool):
    """Mean over ``dim`` of codes with scale ``s_in``, requantized to ``s_out``."""
    n = q.shape[dim]
    ratio = torch.as_tensor(s_in, dtype=torch.float64) / (n * torch.as_tensor(
        s_out, dtype=torch.float64))
    qmin, qmax = qrange(bits, True)
    return requantize_ste(q.sum(dim=dim), ratio, qmin, qmax, integer)

"""Gradients of the approximate GEMM: `ApproxMatmul` (straight-through, or finite
differences of the product table) and `approx_matmul_grad`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from axsa import formats
from axsa.errors import InputError

from .matmul import approx_matmul
from .table import ProductTable

if TYPE_CHECKING:
    from .plan import Plan

Grad = Literal["ste", "table"]


def _unbroadcast(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum `grad` down to `shape` (undo torch.matmul-style batch broadcasting)."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(i, keepdim=True)
    return grad


def _central_difference(values: np.ndarray, f: np.ndarray) -> np.ndarray:
    """d f / d value at every code: central difference over neighbouring operand values,
    one-sided at the ends of the range. `f` is indexed by code; so is the result."""
    order = np.argsort(values)
    fv = f[order].astype(np.float64)
    d = np.empty_like(fv)
    d[1:-1] = (fv[2:] - fv[:-2]) / 2
    d[0] = fv[1] - fv[0]
    d[-1] = fv[-1] - fv[-2]
    out = np.empty_like(d)
    out[order] = d
    return out


def gradient_factors(plan: Plan) -> dict[str, torch.Tensor]:
    """Float factors of the finite-difference tables, read off the exact terms:
    lut = sum_t u_t v_t^T, so d lut/da = sum_t (D u_t) v_t^T and d lut/db = sum_t u_t (D v_t)^T
    (D: central difference over operand values; linear, so the rank is kept).
    Kept with the plan (`Plan.gradient_factors`)."""
    table = plan.table
    terms = plan.terms
    if terms is None:  # no integer factorization: one-hot rows, always exact
        eye = np.eye(1 << table.wa, dtype=np.int64)
        terms = [(eye[c], table.table[c]) for c in range(1 << table.wa)]
    us = np.stack([u for u, _ in terms], axis=1).astype(np.float64)
    vs = np.stack([v for _, v in terms], axis=1).astype(np.float64)
    dus = np.stack([_central_difference(table.a_values, u) for u, _ in terms], 1)
    dvs = np.stack([_central_difference(table.b_values, v) for _, v in terms], 1)
    return {name: torch.from_numpy(x) for name, x in
            (("u", us), ("v", vs), ("du", dus), ("dv", dvs))}


def _table_grads(ca, cb, grad_out, table: ProductTable):
    """grad_a[m,k] = sum_n g[m,n] * dlut/da(a_mk, b_kn), grad_b likewise, through the
    rank-T factors: grad_a = sum_t Du_t(A) * (g @ v_t(B)^T), grad_b = sum_t
    Dv_t(B) * (u_t(A)^T @ g). T GEMMs of the exact GEMM's size, in grad_out's dtype."""
    f = table.plan.gradient_factors
    dt = grad_out.dtype
    u, v, du, dv = (f[k].to(dt) for k in ("u", "v", "du", "dv"))
    grad_a = torch.zeros(*grad_out.shape[:-1], ca.shape[-1], dtype=dt)
    grad_b = torch.zeros(*grad_out.shape[:-2], cb.shape[-2], grad_out.shape[-1], dtype=dt)
    for t in range(u.shape[1]):
        vb = v[:, t][cb]                                  # (..., K, N)
        ua = u[:, t][ca]                                  # (..., M, K)
        grad_a = grad_a + du[:, t][ca] * torch.matmul(grad_out, vb.transpose(-1, -2))
        grad_b = grad_b + dv[:, t][cb] * torch.matmul(ua.transpose(-1, -2), grad_out)
    return grad_a, grad_b


class ApproxMatmul(torch.autograd.Function):
    """Autograd face of `approx_matmul`: ``ApproxMatmul.apply(a, b, table, grad)``.

    Forward: the exact table GEMM, returned in the floating dtype of the operands
    (float32 results are exact while |C| < 2^24, float64 while |C| < 2^53).
    Backward, by `grad`:

    ``"ste"`` (default)
        Straight-through: the gradients of the exact ``a @ b``
        (``g @ b^T`` and ``a^T @ g``).
    ``"table"``
        Finite differences of the product table over operand values:
        ``dL/da[m,k] = sum_n g[m,n] * Da(a[m,k], b[k,n])`` with
        ``Da(x, y) = (lut(x+1, y) - lut(x-1, y)) / 2`` (one-sided at the range ends),
        and ``dL/db`` likewise with ``Db``. For the exact table this equals "ste".
    """

    @staticmethod
    def forward(ctx, a, b, table: ProductTable, grad: Grad = "ste"):
        if grad not in ("ste", "table"):
            raise InputError(f"unknown gradient {grad!r}: expected 'ste' or 'table'")
        dtype = torch.promote_types(a.dtype, b.dtype)
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        out = approx_matmul(a, b, table, dtype=dtype)
        ctx.save_for_backward(a, b)
        ctx.table, ctx.grad = table, grad
        return out

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        squeeze_a, squeeze_b = a.dim() == 1, b.dim() == 1
        a2 = a.unsqueeze(0) if squeeze_a else a
        b2 = b.unsqueeze(-1) if squeeze_b else b
        g = grad_out
        if squeeze_a:
            g = g.unsqueeze(-2)
        if squeeze_b:
            g = g.unsqueeze(-1)
        if ctx.grad == "ste":
            ga = torch.matmul(g, b2.to(g.dtype).transpose(-1, -2))
            gb = torch.matmul(a2.to(g.dtype).transpose(-1, -2), g)
        else:
            t = ctx.table
            ca = formats.to_codes(a2.detach().to(torch.int64), t.wa)
            cb = formats.to_codes(b2.detach().to(torch.int64), t.wb)
            ga, gb = _table_grads(ca, cb, g, t)
        ga = _unbroadcast(ga, a2.shape)
        gb = _unbroadcast(gb, b2.shape)
        if squeeze_a:
            ga = ga.squeeze(0)
        if squeeze_b:
            gb = gb.squeeze(-1)
        ga = ga.to(a.dtype) if a.is_floating_point() else None
        gb = gb.to(b.dtype) if b.is_floating_point() else None
        return ga, gb, None, None


def approx_matmul_grad(a: torch.Tensor, b: torch.Tensor, table: ProductTable,
                       grad: Grad = "ste") -> torch.Tensor:
    """Differentiable `approx_matmul` (see `ApproxMatmul` for the two gradients)."""
    return ApproxMatmul.apply(a, b, table, grad)

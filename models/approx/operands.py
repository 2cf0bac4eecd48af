"""Operand checks and batch layouts shared by the engines."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from axsa import formats
from axsa.errors import InputError

from .. import _native

if TYPE_CHECKING:
    from .table import ProductTable


def as_codes(x, which: str, lo: int, hi: int, width: int, table: ProductTable) -> torch.Tensor:
    """Integer operand values -> int64 codes; InputError naming a bad value."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"operand {which} must be a torch tensor, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise InputError(f"operand {which} has dtype {x.dtype}: expected integer values")
    x = x.detach()
    codes = _native.codes(x, lo, hi, width)        # one pass, where the kernels apply
    if codes is not None and codes is not False:
        return codes
    v = x.to(torch.int64)
    # a float that does not survive the round trip is fractional, NaN, inf or huge
    # (one torch.equal first: on the small GEMMs of the models per-op costs dominate)
    if x.is_floating_point() and not torch.equal(v.to(x.dtype), x):
        bad = x[v.to(x.dtype) != x][0].item()
        if math.isfinite(bad) and bad == round(bad):   # integral but beyond int64
            raise InputError(f"operand {which} holds {bad!r}, outside the range {lo}..{hi} "
                             f"of product table {table.label}")
        raise InputError(f"operand {which} holds {bad!r}, not an integer value")
    if v.numel():
        vmin, vmax = (int(m) for m in torch.aminmax(v))
        if vmin < lo or vmax > hi:
            bad_v = vmin if vmin < lo else vmax
            raise InputError(f"operand {which} holds {bad_v}, outside the range {lo}..{hi} "
                             f"of product table {table.label}")
        if vmin >= 0:            # non-negative values in range are their own codes
            return v
    return formats.to_codes(v, width)


def shapes(a: torch.Tensor, b: torch.Tensor):
    """(a, b as at least 2-D, broadcast batch shape, dims to squeeze from the result),
    following ``torch.matmul``; InputError for shapes that do not multiply."""
    if a.dim() < 1 or b.dim() < 1:
        raise InputError(f"approx_matmul needs tensors of at least 1 dimension, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    squeeze = []
    if a.dim() == 1:
        a = a.unsqueeze(0)
        squeeze.append(-2)
    if b.dim() == 1:
        b = b.unsqueeze(-1)
        squeeze.append(-1)
    if a.shape[-1] != b.shape[-2]:
        raise InputError(f"approx_matmul shapes {tuple(a.shape)} and {tuple(b.shape)}: "
                         f"inner sizes {a.shape[-1]} and {b.shape[-2]} differ")
    ba, bb = a.shape[:-2], b.shape[:-2]
    try:
        batch = ba if (ba == bb or not bb) else bb if not ba else \
            torch.broadcast_shapes(ba, bb)
    except RuntimeError:
        raise InputError(f"approx_matmul batch shapes {tuple(a.shape[:-2])} and "
                         f"{tuple(b.shape[:-2])} do not broadcast") from None
    return a, b, tuple(batch), squeeze


def split_batch(ca, cb, batch):
    """Decide how batch dimensions map onto 2-D GEMMs.

    Returns ("a", A2, B2) when b carries no batch (rows of all a's batches stacked),
    ("b", ...) when only b is batched (computed transposed), or ("both", A, B) expanded.
    """
    bsize_a = math.prod(ca.shape[:-2])
    bsize_b = math.prod(cb.shape[:-2])
    K = ca.shape[-1]
    if bsize_b == 1:
        return "a", ca.reshape(-1, K), cb.reshape(K, -1)
    if bsize_a == 1:
        return "b", ca.reshape(-1, K), cb
    return "both", ca.expand(*batch, *ca.shape[-2:]), cb.expand(*batch, *cb.shape[-2:])

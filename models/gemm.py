"""The one GEMM hook every model GEMM goes through.

Every Linear layer and both attention products (``Q K^T`` and ``A V``) of the models in
:mod:`axsa.models` call ``hook(name, a, b, integer)`` with integer operand codes, ``a``
shaped ``(..., M, K)`` and ``b`` shaped ``(..., K, N)``; for a Linear ``a`` is the
activation and ``b`` the transposed weight. The hook

* multiplies exactly (table ``None`` or an exact table) or through a product table
  (:class:`axsa.models.approx.ProductTable`, ``lut[a_code, b_code]``), per GEMM name;
* records, when asked, each GEMM's integer operands and shapes (for the energy model);
* hands, when a backend is set (:attr:`GemmHook.backend`), every GEMM of the integer
  forward pass to it instead: numpy integer operands in, numpy integers out (the
  accelerator RTL through `axsa.sim.network`, or anything else that multiplies).

Backends. ``hook.backend = backend`` (None: the hook multiplies itself) is called in
integer mode as ``backend(name, a, b, stage)`` with int64 numpy operands. A GEMM whose
``b`` has no batch dimensions (a Linear's weight) arrives as one GEMM, ``a`` ``(M, K)``
with every sample's tokens stacked into its rows, ``b`` ``(K, N)``, so one GEMM fills an
array; the attention products arrive as ``G`` = samples x heads GEMMs, ``a`` ``(G, M, K)``
and ``b`` ``(G, K, N)``. The result has ``a``'s leading shape: ``(M, N)`` or ``(G, M,
N)``. ``stage`` is None (the backend returns the exact accumulators; the layer adds its
bias and requantizes on the host) or an
:class:`OutputStage` (the backend returns the requantized codes: where the layer's
arithmetic after the GEMM is exactly the accelerator output stage's
``clamp((acc * m + 2^(s-1)) >> s)``, i.e. the attention products, which have no bias).
With ``hook.check = True`` every backend result is compared with the hook's own GEMM
(exact or through the assigned table, then the stage in torch): the first difference
raises :class:`GemmMismatch` naming the GEMM, the sample and the element.

GEMM names are stable dotted paths (``layers.0.attn.q``, ``layers.0.attn.qk``, ``head``);
``model.gemm_names()`` lists them, ``axsa eval --list-gemms`` prints them.

Operand streams (:meth:`GemmHook.save_streams`) are written one ``.npz`` per GEMM with keys

``a``, ``b``
    1-D int16 arrays of equal length: the operand pairs in the order a processing element
    of axsa's output-stationary array (`axsa.rtl.array`) sees them: output after output,
    ``(g, m, n)`` in row-major order, each fed ``a[g, m, k]`` and ``b[g, k, n]`` for
    ``k = 0 .. K-1`` (a Linear layer has one ``b`` for all tokens of all samples: its
    tokens are rows ``m``).
``clr``
    1-D uint8, 1 on the first pair of every output (``k = 0``): where the PE's
    accumulator starts afresh (the MAC energy model reads it).
``lhs``, ``rhs``
    the GEMM's operands themselves, int16 ``(G, M, K)`` and ``(G, K, N)``, so a recorded
    GEMM can be replayed (``axsa gemm`` takes ``lhs[g]`` and ``rhs[g]`` as A and B).
``shape``
    ``[G, M, K, N]``: batched GEMMs ``(G, M, K) @ (G, K, N)``; ``pairs = G*M*K*N``.
``name``
    the GEMM name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from axsa.errors import InputError, ToolError

__all__ = ["Dequantize", "GemmBackend", "GemmHook", "GemmMismatch", "OutputStage"]


@dataclass(frozen=True)
class OutputStage:
    """The requantization of a GEMM's accumulators: ``clamp((acc * m + 2^(s-1)) >> s)``
    into ``qmin..qmax`` (DESIGN.md), with ``(m, s) = fixed_point(ratio)``.

    Attributes
    ----------
    m, s : numpy.ndarray of int64
        Multiplier and shift: shape ``()`` (per tensor) or ``(N,)`` (per output column).
    qmin, qmax : int
        Output range: ``-2^(bits-1) .. 2^(bits-1)-1`` (signed) or ``0 .. 2^bits-1``.
    """

    m: np.ndarray
    s: np.ndarray
    qmin: int
    qmax: int

    @classmethod
    def of(cls, ratio, qmin: int, qmax: int) -> OutputStage:
        """The stage of a requantization ``ratio`` (what `quant.requantize_ste` uses)."""
        from .quant import fixed_point
        m, s = fixed_point(ratio)
        return cls(m.numpy().astype(np.int64), s.numpy().astype(np.int64), int(qmin),
                   int(qmax))

    @property
    def signed(self) -> bool:
        return self.qmin < 0

    @property
    def bits(self) -> int:
        """Output width of the range (the output stage's ``bits``)."""
        return int(self.qmax).bit_length() + (1 if self.signed else 0)

    def apply(self, acc: torch.Tensor) -> torch.Tensor:
        """The stage on int64 accumulators (the integer path of `quant.requantize_ste`)."""
        from .quant import _shift_round
        return _shift_round(acc, torch.from_numpy(self.m), torch.from_numpy(self.s)).clamp(
            self.qmin, self.qmax)


#: ``backend(name, a, b, stage) -> numpy int64 (M, N) or (G, M, N)`` (module docstring)
@dataclass(frozen=True)
class Dequantize:
    """A fake-quant GEMM's output stage, ``acc.to(dtype) * scale (+ bias)`` along the
    result's last dimension: `apply` computes it (with gradients) on the accumulators;
    a product table's GEMM without gradients takes `scale` (one value or one per column),
    `bias` (one per column, or None) and `dtype` into its kernel instead, with the same
    float operations."""

    scale: torch.Tensor
    bias: torch.Tensor | None
    dtype: torch.dtype
    apply: Callable[[torch.Tensor], torch.Tensor]

    def grads(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        """Whether any input of the GEMM and its stage needs a gradient."""
        return a.requires_grad or b.requires_grad or self.scale.requires_grad or (
            self.bias is not None and self.bias.requires_grad)


GemmBackend = Callable[[str, np.ndarray, np.ndarray, "OutputStage | None"], np.ndarray]


class GemmMismatch(ToolError):
    """A backend's GEMM result differs from the hook's own (bit-exact) one.

    Attributes: ``gemm`` (name), ``sample`` (index along the batch's first axis),
    ``element`` (the rest of the output index), ``got``, ``want``.
    """

    def __init__(self, gemm: str, sample: int, element: tuple, got: int, want: int):
        self.gemm, self.sample, self.element, self.got, self.want = \
            gemm, sample, element, got, want
        super().__init__(f"GEMM {gemm!r} differs from the integer reference: sample "
                         f"{sample}, element {element}: {got} instead of {want}")


class GemmHook:
    """Routes the GEMMs of one model; see the module docstring.

    Attributes
    ----------
    names : list[str]
        GEMM names in forward order (filled by the model at construction).
    tables : dict[str, ProductTable]
        Product table per GEMM name; names absent multiply exactly.
    grad : "ste" | "table"
        Gradient of approximate GEMMs in fake-quant mode (see `axsa.models.approx.autograd`).
    shapes : dict[str, tuple]
        ``(G, M, K, N)`` of the last call of each GEMM.
    backend : GemmBackend or None
        Multiplies every GEMM of the integer forward pass instead of the hook (module
        docstring); its own multipliers, not `tables`, then apply.
    check : bool
        Compare every backend result with the hook's own GEMM (GemmMismatch on the first
        difference).
    """

    def __init__(self):
        self.backend: GemmBackend | None = None
        self.check = False
        self.names: list[str] = []
        self.tables: dict = {}
        self.grad = "ste"
        self.shapes: dict[str, tuple[int, int, int, int]] = {}
        self.recording = False
        self._records: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def register(self, name: str) -> str:
        if name in self.names:
            raise ValueError(f"GEMM name {name!r} registered twice")
        self.names.append(name)
        return name

    def assign(self, tables: dict) -> None:
        """Use ``tables`` ({name: ProductTable or None}); unknown names raise InputError."""
        unknown = [n for n in tables if n not in self.names]
        if unknown:
            raise InputError(f"unknown GEMM name(s) {', '.join(map(repr, unknown))}; this "
                             f"model has: {', '.join(self.names)}")
        # exact tables take the plain GEMM path; decided once here, not per call
        self.tables = {n: t for n, t in tables.items() if t is not None and not t.is_exact}

    def clear(self) -> None:
        self.tables = {}

    # -- recording ---------------------------------------------------------------------

    def start_recording(self) -> None:
        self.recording, self._records = True, {}

    def stop_recording(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Stop; return {name: (a, b)} with a (G, M, K), b (G, K, N) int64 operand codes."""
        self.recording = False
        out = {n: (np.concatenate([r[0] for r in rs]), np.concatenate([r[1] for r in rs]))
               for n, rs in self._records.items()}
        self._records = {}
        return out

    @staticmethod
    def pe_streams(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Output-stationary operand streams of ``(G,M,K) @ (G,K,N)``: (a, b, clr), 1-D."""
        g, m, k = a.shape
        n = b.shape[2]
        sa = np.broadcast_to(a[:, :, None, :], (g, m, n, k))
        sb = np.broadcast_to(b.transpose(0, 2, 1)[:, None, :, :], (g, m, n, k))
        clr = np.zeros((g, m, n, k), np.uint8)
        clr[..., 0] = 1
        return sa.reshape(-1).astype(np.int16), sb.reshape(-1).astype(np.int16), clr.reshape(-1)

    def save_streams(self, records: dict, directory: str | Path) -> list[Path]:
        """Write ``records`` (from :meth:`stop_recording`) as ``<dir>/<name>.npz``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, (a, b) in records.items():
            sa, sb, clr = self.pe_streams(a, b)
            p = d / f"{name}.npz"
            np.savez_compressed(p, a=sa, b=sb, clr=clr, lhs=a.astype(np.int16),
                                rhs=b.astype(np.int16), name=np.array(name),
                                shape=np.array([a.shape[0], a.shape[1], a.shape[2],
                                                b.shape[2]], dtype=np.int64))
            paths.append(p)
        return paths

    # -- the GEMM -----------------------------------------------------------------------

    def __call__(self, name: str, a: torch.Tensor, b: torch.Tensor,
                 integer: bool, stage: OutputStage | None = None,
                 dequantize: Dequantize | None = None) -> torch.Tensor:
        """``a @ b`` on integer codes: exact, or through ``name``'s product table.

        ``integer``: int64 in, int64 out. Otherwise (fake-quant) float tensors holding
        codes in and out, with gradients (straight-through, or the table's gradient).
        ``stage`` (integer mode): return ``stage.apply`` of the accumulators, the
        requantized codes (a backend does it in its own output stage).
        ``dequantize`` (fake-quant): return ``dequantize.apply`` of the accumulators; a
        table's GEMM without gradients applies it while its sums are in cache.
        """
        bshape = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        g = int(np.prod(bshape)) if bshape else 1
        self.shapes[name] = (g, a.shape[-2], a.shape[-1], b.shape[-1])
        if integer and self.backend is not None:
            return self._backend_gemm(name, a, b, bshape, stage)
        if dequantize is not None and not integer and self.fuses(name) and not (
                torch.is_grad_enabled() and dequantize.grads(a, b)):
            from .approx import approx_matmul
            return approx_matmul(a, b, self.tables[name], dtype=dequantize.dtype,
                                 scale=dequantize.scale, bias=dequantize.bias)
        out = self._gemm(name, a, b, integer, bshape, g)
        if dequantize is not None:
            out = dequantize.apply(out)
        return out if stage is None else stage.apply(out)

    def fuses(self, name: str) -> bool:
        """Whether fake-quant GEMM ``name`` given a `Dequantize` stage and no gradients
        runs as one table GEMM with that stage (a table assigned, no recording); its codes
        may then be any integer dtype."""
        return not self.recording and self.tables.get(name) is not None

    def _backend_gemm(self, name, a, b, bshape, stage) -> torch.Tensor:
        """The GEMM on the backend: (M, K) @ (K, N) or (G, M, K) @ (G, K, N) in numpy."""
        M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
        if b.dim() == 2:     # a weight: every sample's tokens are rows of one GEMM
            an = a.reshape(-1, K).numpy()
            bn = b.numpy()
        else:
            an = a.expand(*bshape, M, K).reshape(-1, M, K).numpy()
            bn = b.expand(*bshape, K, N).reshape(-1, K, N).numpy()
        out = np.asarray(self.backend(name, an.astype(np.int64, copy=False),
                                      bn.astype(np.int64, copy=False), stage))
        result = torch.from_numpy(out.astype(np.int64, copy=False)).reshape(
            *a.shape[:-2] if b.dim() == 2 else bshape, M, N)
        if self.check:
            g = int(np.prod(bshape)) if bshape else 1
            ref = self._gemm(name, a, b, True, bshape, g)
            ref = ref if stage is None else stage.apply(ref)
            diff = result != ref
            if bool(diff.any()):
                idx = tuple(int(i) for i in torch.nonzero(diff)[0])
                raise GemmMismatch(name, idx[0], idx[1:], int(result[idx]), int(ref[idx]))
        return result

    def _gemm(self, name, a, b, integer, bshape, g) -> torch.Tensor:
        if self.recording:
            aa = a.detach().to(torch.int64).expand(*bshape, *a.shape[-2:])
            bb = b.detach().to(torch.int64).expand(*bshape, *b.shape[-2:])
            self._records.setdefault(name, []).append(
                (aa.reshape(g, *a.shape[-2:]).numpy().copy(),
                 bb.reshape(g, *b.shape[-2:]).numpy().copy()))
        table = self.tables.get(name)
        if table is None:
            return torch.matmul(a, b)   # int64, or float holding integers below 2^24: exact
        from .approx import approx_matmul, approx_matmul_grad
        # operands go in as they are: every engine reads any strides (weights arrive
        # transposed, attention's K^T is a view), the native kernel in place
        if integer:
            return approx_matmul(a, b, table).to(torch.int64)
        return approx_matmul_grad(a, b, table, grad=self.grad).to(a.dtype)

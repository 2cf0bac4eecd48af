"""Bring your own model: approximate multipliers in any PyTorch model.

`approximate` takes a float PyTorch model and returns a `ByomModel` whose GEMMs run through
the bit-exact approximate GEMM (`axsa.models.approx`) of the one GEMM hook
(`axsa.models.gemm.GemmHook`), a product table per GEMM:

* every ``nn.Linear`` (GEMM name: its module path, e.g. ``blocks.0.attn.qkv``, ``head``);
* every ``nn.Conv2d``, as an im2col GEMM (strides, padding and its modes, dilation and
  groups included; ``patch_embed.proj``);
* the two attention products of every attention module: ``<path>.qk`` (``Q K^T``) and
  ``<path>.av`` (``A V``), whether the module calls ``F.scaled_dot_product_attention``
  (masks, ``is_causal``, dropout and ``scale`` included) or multiplies explicitly
  (``q @ k.transpose(-2, -1)`` then ``attn @ v``, with ``@``, ``torch.matmul`` or
  ``torch.bmm``; timm's ``Attention`` either way, by its ``fused_attn``).

Routing. Linear and Conv2d modules are replaced by `RoutedLinear` / `RoutedConv2d`, which
hold the same parameters under the same names (the state dict keeps the user's keys). The
attention products are caught with a `torch.overrides.TorchFunctionMode` active while the
quantized model runs: ``F.scaled_dot_product_attention`` anywhere, and the matmuls of an
attention module's own forward (a module whose class name contains "Attention", or one
named in ``attention=``). Every other GEMM-like call outside a routed module (a matmul
elsewhere, ``einsum``, ``mm``, a direct ``F.linear`` / ``F.conv*``, fused
``nn.MultiheadAttention``, a third matmul in one attention call) raises `InputError`
naming the op and the module: nothing multiplies in float behind the user's back.

Quantization (post-training, DESIGN.md): symmetric, zero point 0, signed ``bits``-bit
codes. Weights per output channel (min-max of the current weights, so fine-tuning moves
them); activations (both operands of the attention products too) per tensor, with scales
from calibration: ``minmax`` (largest magnitude seen) or ``percentile`` (the mean over
calibration batches of each batch's ``percentile``-th percentile of ``|x|``; larger values
clip). Calibration runs the float model and observes every GEMM's float inputs; the
scales are then frozen (fine-tuning does not move them). A GEMM computes

    y = (codes(x) @ codes(W)^T) * (s_x * s_W) + b,   codes(x) = clamp(floor(x / s_x + 0.5))

with the accumulator exact (int64, or floats below 2^24 / 2^53) and the float arithmetic
around it (the codes, the rescale, the bias) in the model's float dtype (float32),

through its product table, then continues in float: everything between GEMMs (GELU,
LayerNorm, softmax, residuals) stays the user's float code. Modes (`ByomModel.set_mode`):
``fp32`` (the user's model), ``fake_quant`` (codes in float tensors, with gradients:
straight-through or the table's, ``hook.grad``) and ``integer`` (int64 codes into the
hook; a hook backend, e.g. the accelerator, sees these). Both quantized modes give the
same outputs bit for bit.

>>> model = approximate(net, [x[:64], x[64:128]], "drum(k=4)@s8", bits=8)
>>> model.gemm_names()[:3]
['patch_embed.proj', 'blocks.0.attn.qkv', 'blocks.0.attn.qk']
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from axsa.errors import InputError

from . import _native
from .gemm import Dequantize, GemmHook
from .layers import MODES
from .quant import Observer, qrange, ste

__all__ = ["ByomConfig", "ByomModel", "RoutedConv2d", "RoutedLinear", "approximate"]

#: what calibrating runs: the float model with every GEMM observing its inputs
CALIBRATE = "calibrate"
#: class-name marker of the modules whose explicit matmuls are attention products
ATTENTION_MARK = "attention"
#: the explicit matmuls an attention module may call, in order
PRODUCTS = ("qk", "av")

_MATMULS = frozenset({torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
                      torch.Tensor.__rmatmul__, torch.bmm, torch.Tensor.bmm})
#: GEMM-like calls that are never routed: an error when they run outside a routed module
_UNROUTED = {
    torch.mm: "torch.mm", torch.Tensor.mm: "Tensor.mm", torch.einsum: "torch.einsum",
    torch.addmm: "torch.addmm", torch.baddbmm: "torch.baddbmm",
    torch.addbmm: "torch.addbmm", torch.tensordot: "torch.tensordot",
    F.linear: "F.linear", F.bilinear: "F.bilinear",
    F.conv1d: "F.conv1d", F.conv2d: "F.conv2d", F.conv3d: "F.conv3d",
    F.conv_transpose1d: "F.conv_transpose1d", F.conv_transpose2d: "F.conv_transpose2d",
    F.conv_transpose3d: "F.conv_transpose3d",
    F.multi_head_attention_forward: "F.multi_head_attention_forward (nn.MultiheadAttention)",
}


@dataclass(frozen=True)
class ByomConfig:
    """The quantization of a `ByomModel` (what `assignment.resolve_assignment` reads)."""
    bits: int = 8
    observer: str = "minmax"
    percentile: float = 99.99

    def to_dict(self) -> dict:
        return asdict(self)


class _Operand(nn.Module):
    """Per-tensor activation quantizer: an observer filled by calibration, then frozen."""

    def __init__(self, cfg: ByomConfig):
        super().__init__()
        self.observer = Observer(cfg.observer, cfg.bits, True, None, pct=cfg.percentile)

    def observe(self, x: torch.Tensor) -> None:
        obs = self.observer
        if obs.kind == "percentile":        # the running mean of the batch percentiles
            obs.momentum = 1.0 / (int(obs.seen) + 1)
        obs(x)

    def codes(self, x: torch.Tensor, dtype: torch.dtype, who: str):
        """(codes of ``x`` in ``dtype``, float64 scale ()); clipped STE gradient."""
        obs = self.observer
        if int(obs.seen) == 0:
            raise InputError(f"GEMM {who!r} was not calibrated: no calibration batch "
                             "reached it (approximate() calibrates on the batches given)")
        s = obs.scale()
        return _quantize(x, s, obs.qmin, obs.qmax, dtype), s


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    """The arithmetic dtype of quantizing ``x``: its own float32 / float64, else float32."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _quantize(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int, dtype):
    """Codes ``clamp(floor(x / scale + 0.5), qmin, qmax)`` (`quant.quantize`'s formula and
    clipped straight-through gradient, `quant.ste`), computed in ``x``'s float dtype (the
    model's: no float64 pass on the hot path), returned in ``dtype``."""
    cdt = _float_dtype(x)
    s = scale.to(cdt)
    if torch.is_grad_enabled() and x.requires_grad:
        t = x.to(cdt) / s
        q = torch.floor(t + 0.5).clamp(qmin, qmax)
        return ste(q, t, (t >= qmin - 0.5) & (t <= qmax + 0.5)).to(dtype)
    if x.dtype == cdt and scale.numel() == 1:     # the one-pass kernel, same values
        x = x.detach()
        x = x if _native.dense(x) else x.contiguous()
        if dtype is torch.int8:
            q = _native.quantize_int8(x, float(scale), qmin, qmax)
            if q is not None:
                return q
        q = _native.quantize(x, float(scale), qmin, qmax)
        if q is not None:
            return _as_codes(q, dtype)
    q = torch.div(x.detach().to(cdt), s)
    q.add_(0.5).floor_().clamp_(qmin, qmax)
    return _as_codes(q, dtype)


def _as_codes(q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float codes `q` in ``dtype``; an integer dtype keeps them floats where one is NaN
    (no integer holds it: the GEMM's operand check names it)."""
    if not dtype.is_floating_point and bool(torch.isnan(q).any()):
        return q
    return q.to(dtype)


def _weight_codes(w: torch.Tensor, bits: int, dtype: torch.dtype):
    """(codes (out, ...) in ``dtype``, float64 scales (out,)): per output channel,
    min-max of the current weights (the Observer of the built-in models' weights)."""
    obs = Observer("minmax", bits, True, 0, track=False, channels=w.shape[0])
    obs(w)
    s = obs.scale()
    shape = (-1,) + (1,) * (w.dim() - 1)
    return _quantize(w, s.reshape(shape), obs.qmin, obs.qmax, dtype), s


def _code_dtype(bits: int, k: int) -> torch.dtype:
    """float32 while a K-term sum of ``bits``-bit products stays below 2^24 (exact),
    else float64."""
    return torch.float32 if k * (1 << (2 * bits - 2)) < 1 << 24 else torch.float64


def _codes_for(owner: ByomModel, name: str, k: int) -> torch.dtype:
    """The codes' dtype of GEMM `name` (K = `k`): int8 where the hook runs it as one
    table GEMM with its output stage (`GemmHook.fuses`, no gradients: a quarter of the
    bytes to write and read), else `_code_dtype`."""
    if owner.config.bits <= 8 and not torch.is_grad_enabled() and owner.hook.fuses(name):
        return torch.int8
    return _code_dtype(owner.config.bits, k)


def _dequantize(acc: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                bias_shape: tuple, dtype) -> torch.Tensor:
    """The GEMM's output ``acc * scale (+ bias)`` in the model's float ``dtype``: the
    accumulators converted (exact below 2^24 in float32), times the float64 ``scale``
    rounded to ``dtype``, plus the bias."""
    s = scale.to(dtype)
    if torch.is_grad_enabled() and (acc.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        y = acc.to(dtype) * s
        return y if bias is None else y + bias.to(dtype).reshape(bias_shape)
    if bias is None or bias_shape == (-1,):       # the one-pass kernel, same values
        y = _native.dequantize(acc.detach(), scale, bias, dtype)
        if y is not None:
            return y
    y = torch.mul(acc.detach().to(dtype), s)
    if bias is not None:
        y.add_(bias.detach().to(dtype).reshape(bias_shape))
    return y


def _stage(scale: torch.Tensor, bias: torch.Tensor | None, dtype) -> Dequantize:
    """`_dequantize` along the last dimension as a GEMM output stage (which a table's
    GEMM applies in its kernel, with the same float operations)."""
    return Dequantize(scale, bias, dtype,
                      lambda acc: _dequantize(acc, scale, bias, (-1,), dtype))


class _Routed(nn.Module):
    """A routed Linear / Conv2d: the user's parameters, an input quantizer, the owner."""

    def _setup(self, owner: ByomModel, name: str, module: nn.Module) -> None:
        object.__setattr__(self, "owner", owner)
        self.name = name
        self.weight = module.weight
        self.bias = module.bias
        self.aq = _Operand(owner.config)
        self._wcache = None

    def _wcodes(self, dtype):
        if self.training or self._wcache is None or self._wcache[0] != dtype:
            q, s = _weight_codes(self.weight, self.owner.config.bits, dtype)
            if self.training:
                return q, s
            self._wcache = (dtype, q.detach(), s)
        return self._wcache[1], self._wcache[2]

    def _out(self, acc: torch.Tensor, scale: torch.Tensor, dtype) -> torch.Tensor:
        return _dequantize(acc, scale, self.bias, self._bias_shape(), dtype)

    def _stage(self, scale: torch.Tensor, dtype) -> Dequantize:
        """The GEMM's output stage for a result whose last dimension is the output
        channels (`scale`: one per channel)."""
        return _stage(scale, self.bias, dtype)


class RoutedLinear(_Routed):
    """``nn.Linear`` whose GEMM is hook GEMM ``name`` (see the module docstring)."""

    def __init__(self, owner: ByomModel, name: str, linear: nn.Linear):
        super().__init__()
        self._setup(owner, name, linear)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def _bias_shape(self):
        return (-1,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.owner.mode
        if mode == "fp32":
            return F.linear(x, self.weight, self.bias)
        with self.owner._router.inside():
            if mode == CALIBRATE:
                self.owner._register(self.name)
                self.aq.observe(x)
                return F.linear(x, self.weight, self.bias)
            dt = _codes_for(self.owner, self.name, self.in_features)
            qx, sx = self.aq.codes(x, dt, self.name)
            qw, sw = self._wcodes(dt)
            return self.owner._gemm(self.name, qx, qw.t(), self._stage(sx * sw, x.dtype))

    def extra_repr(self) -> str:
        return f"{self.name!r}, in={self.in_features}, out={self.out_features}"


class RoutedConv2d(_Routed):
    """``nn.Conv2d`` as an im2col GEMM, hook GEMM ``name``: ``(B[, groups], L, K) @ ([groups,]
    K, C_out/groups)`` with ``L`` output pixels and ``K = C_in/groups * kh * kw``."""

    def __init__(self, owner: ByomModel, name: str, conv: nn.Conv2d):
        super().__init__()
        self._setup(owner, name, conv)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups", "padding_mode"):
            setattr(self, attr, getattr(conv, attr))

    def _bias_shape(self):
        return (1, -1, 1, 1)

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``x`` padded as the conv pads (codes 0 are values 0), and the padding left to
        unfold."""
        pad = self.padding
        if isinstance(pad, str):           # "valid" or "same" (stride 1)
            if pad == "valid":
                return x, (0, 0)
            sides = []
            for d, k in zip(reversed(self.dilation), reversed(self.kernel_size)):
                total = d * (k - 1)
                sides += [total // 2, total - total // 2]
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            return F.pad(x, sides, mode=mode), (0, 0)
        if self.padding_mode != "zeros":
            ph, pw = pad
            return F.pad(x, (pw, pw, ph, ph), mode=self.padding_mode), (0, 0)
        return x, pad

    def _float(self, x):
        padding = self.padding
        if self.padding_mode != "zeros":
            x, padding = self._pad(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation,
                        self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.owner.mode
        if mode == "fp32":
            return self._float(x)
        with self.owner._router.inside():
            if mode == CALIBRATE:
                self.owner._register(self.name)
                self.aq.observe(x)
                return self._float(x)
            g = self.groups
            k = self.in_channels // g * self.kernel_size[0] * self.kernel_size[1]
            dt = _code_dtype(self.owner.config.bits, k)   # (float: unfold has no int8)
            qx, sx = self.aq.codes(x, dt, self.name)
            qx, pad = self._pad(qx)
            batch, h, w = qx.shape[0], qx.shape[-2], qx.shape[-1]
            cols = F.unfold(qx, self.kernel_size, self.dilation, pad, self.stride)  # (B, C*kk, L)
            hout = (h + 2 * pad[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) \
                // self.stride[0] + 1
            wout = (w + 2 * pad[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) \
                // self.stride[1] + 1
            qw, sw = self._wcodes(dt)
            if g == 1:                                                          # (B, L, Co)
                y = self.owner._gemm(self.name, cols.transpose(1, 2),
                                     qw.reshape(self.out_channels, k).t(),
                                     self._stage(sx * sw, x.dtype))
                return y.transpose(1, 2).reshape(batch, self.out_channels, hout, wout)
            else:
                a = cols.reshape(batch, g, k, -1).transpose(2, 3)                # (B, g, L, K)
                b = qw.reshape(g, self.out_channels // g, k).transpose(1, 2)     # (g, K, Co/g)
                acc = self.owner._gemm(self.name, a, b).transpose(2, 3)          # (B, g, Co/g, L)
            acc = acc.reshape(batch, self.out_channels, hout, wout)
            return self._out(acc, sx * sw.reshape(1, -1, 1, 1), x.dtype)

    def extra_repr(self) -> str:
        return (f"{self.name!r}, {self.in_channels}->{self.out_channels}, "
                f"kernel={self.kernel_size}, stride={self.stride}, groups={self.groups}")


def _shown(path: str) -> str:
    """A module path in messages."""
    return repr(path) if path else "'<top level>'"


def _join(path: str, leaf: str) -> str:
    return f"{path}.{leaf}" if path else leaf


class _Product(nn.Module):
    """The operand quantizers of one attention product."""

    def __init__(self, cfg: ByomConfig):
        super().__init__()
        self.a = _Operand(cfg)
        self.b = _Operand(cfg)


class _Router(TorchFunctionMode):
    """Routes the attention products of a running `ByomModel`; refuses other GEMM-like
    calls outside routed modules (module docstring)."""

    def __init__(self, owner: ByomModel):
        super().__init__()
        self.owner = owner
        self.depth = 0            # > 0 inside a routed Linear / Conv2d
        self.stack: list[str] = []          # module paths, innermost last
        self.attention: list[list] = []     # [path, products so far] per attention call

    @contextlib.contextmanager
    def inside(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth == 0:
            if func is F.scaled_dot_product_attention:
                return self.owner._sdpa(self._where(), *args, **kwargs)
            if func in _MATMULS:
                return self._matmul(func, args, kwargs)
            if func in _UNROUTED:
                raise InputError(f"cannot route {_UNROUTED[func]} called in module "
                                 f"{_shown(self._where())}: {self._hint()}")
        return func(*args, **kwargs)

    def _where(self) -> str:
        """The innermost running module's path (``""``: the model itself)."""
        return self.stack[-1] if self.stack else ""

    def _hint(self) -> str:
        return ("axsa routes nn.Linear, nn.Conv2d, F.scaled_dot_product_attention and the "
                "q @ k^T, attn @ v matmuls of attention modules (class names containing "
                "'Attention', or approximate(attention=[...])); rewrite the op with those "
                "or leave it out of the model")

    def _matmul(self, func, args, kwargs):
        a, b = args[0], args[1]
        if func is torch.Tensor.__rmatmul__:
            a, b = b, a
        where = self._where()
        if not self.attention or self.attention[-1][0] != where:
            raise InputError(f"cannot route the matmul in module {_shown(where)} "
                             f"({func.__name__}): it is not an attention module's "
                             f"q @ k^T or attn @ v; {self._hint()}")
        entry = self.attention[-1]
        if entry[1] >= len(PRODUCTS):
            raise InputError(f"attention module {_shown(where)} calls a matmul after q @ k^T and "
                             f"attn @ v; only those two are routed")
        name = _join(where, PRODUCTS[entry[1]])
        entry[1] += 1
        return self.owner._product(name, a, b)


class ByomModel(nn.Module):
    """A user's model with every GEMM routed (module docstring). Quacks like the built-in
    `axsa.models.layers.QuantModel` where `axsa.models.train` and the assignment need it:
    ``hook``, ``gemm_names()``, ``set_mode``, ``config.bits``, ``kind``."""

    #: a classifier: `train` measures top-1 and trains with cross-entropy
    kind = "classifier"

    def __init__(self, net: nn.Module, config: ByomConfig = ByomConfig(),
                 attention: Iterable[str] | None = None):
        super().__init__()
        qrange(config.bits)
        if not 2 <= config.bits <= 8:
            raise InputError(f"bits must be in 2..8 (the multipliers' signed operands), "
                             f"got {config.bits}")
        self.config = config
        self.hook = GemmHook()
        self.mode = "fp32"
        self.products = nn.ModuleDict()
        self._router = _Router(self)
        self._names: set[str] = set()
        self._discovering = False
        if isinstance(net, nn.Linear | nn.Conv2d):
            raise InputError("the model is a single Linear/Conv2d: wrap it in a module")
        wanted = set(attention or ())
        paths = dict(net.named_modules())
        missing = sorted(wanted - set(paths))
        if missing:
            raise InputError(f"attention module(s) {', '.join(map(repr, missing))} not in "
                             "the model")
        for path, mod in list(paths.items()):
            for child_name, child in list(mod.named_children()):
                full = f"{path}.{child_name}" if path else child_name
                if isinstance(child, nn.Linear) and type(child).forward is nn.Linear.forward:
                    setattr(mod, child_name, RoutedLinear(self, full, child))
                elif (isinstance(child, nn.Conv2d)
                      and type(child).forward is nn.Conv2d.forward):
                    setattr(mod, child_name, RoutedConv2d(self, full, child))
        self.net = net
        # hooks are bound methods and the paths a dict keyed by module, so that a deep
        # copy of the model tracks its own modules
        self._paths = {mod: path for path, mod in net.named_modules()}
        self._attention = {mod for path, mod in net.named_modules()
                           if path in wanted or (ATTENTION_MARK in type(mod).__name__.lower()
                                                 and not isinstance(mod, nn.MultiheadAttention))}
        for mod in net.modules():
            mod.register_forward_pre_hook(self._enter)
            mod.register_forward_hook(self._leave)

    # -- module context (hooks) ----------------------------------------------------------
    def _enter(self, mod, args):
        if self.mode != "fp32":
            r = self._router
            r.stack.append(self._paths[mod])
            if mod in self._attention:
                r.attention.append([self._paths[mod], 0])

    def _leave(self, mod, args, out):
        if self.mode != "fp32":
            r = self._router
            if r.stack:
                r.stack.pop()
            if mod in self._attention and r.attention:
                r.attention.pop()

    # -- the QuantModel face -------------------------------------------------------------
    def gemm_names(self) -> list[str]:
        return list(self.hook.names)

    def set_mode(self, mode: str) -> ByomModel:
        if mode not in MODES + (CALIBRATE,):
            raise ValueError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
        self.mode = mode
        self._clear_caches()
        return self

    def train(self, mode: bool = True) -> ByomModel:
        super().train(mode)
        self._clear_caches()
        return self

    def _clear_caches(self) -> None:
        for m in self.modules():
            if isinstance(m, _Routed):
                m._wcache = None

    def forward(self, *args, **kwargs):
        if self.mode == "fp32":
            return self.net(*args, **kwargs)
        r = self._router
        r.stack, r.attention, r.depth = [], [], 0
        with r:
            return self.net(*args, **kwargs)

    # -- calibration ---------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, batches: Iterable) -> int:
        """Fill every activation observer from float forwards over ``batches`` (tensors,
        or tuples whose first item is the input); registers the GEMM names in forward
        order. Returns the number of batches. The mode is ``fake_quant`` afterwards."""
        for m in self.modules():
            if isinstance(m, Observer):
                m.seen.zero_()
                m.amax.zero_()
        was = self.training
        self.eval()
        self.set_mode(CALIBRATE)
        self._discovering = True
        n = 0
        try:
            for batch in batches:
                x = batch[0] if isinstance(batch, tuple | list) else batch
                self(x)
                n += 1
        finally:
            self._discovering = False
            self.set_mode("fake_quant")
            self.train(was)
        if n == 0:
            raise InputError("calibration needs at least one batch")
        for m in self.net.modules():        # routed modules no batch reached, last
            if isinstance(m, _Routed):
                self._register(m.name)
        return n

    def _register(self, name: str) -> None:
        if name not in self._names:
            try:
                self.hook.register(name)
            except ValueError:
                raise InputError(f"GEMM name {name!r} is used twice") from None
            self._names.add(name)

    # -- the GEMMs -----------------------------------------------------------------------
    def _gemm(self, name: str, qa: torch.Tensor, qb: torch.Tensor,
              stage: Dequantize | None = None) -> torch.Tensor:
        """``qa @ qb`` on codes through the hook: int64 (integer mode) or float codes;
        with `stage`, its dequantized result."""
        if self.mode == "integer":
            acc = self.hook(name, qa.detach().to(torch.int64), qb.detach().to(torch.int64),
                            True)
            return acc if stage is None else stage.apply(acc)
        return self.hook(name, qa, qb, False, dequantize=stage)

    def _operands(self, name: str) -> _Product:
        key = name.replace(".", ":")
        if key not in self.products:
            if not self._discovering:
                raise InputError(f"attention product {name!r} was not seen in calibration "
                                 "(its operand scales are unknown)")
            self.products[key] = _Product(self.config)
        return self.products[key]

    def _product(self, name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """An attention product ``a @ b`` (float operands, per-tensor scales)."""
        ops = self._operands(name)
        if self.mode == CALIBRATE:
            self._register(name)
            ops.a.observe(a)
            ops.b.observe(b)
            return torch.matmul(a, b)
        dt = _codes_for(self, name, a.shape[-1])
        qa, sa = ops.a.codes(a, dt, name)
        qb, sb = ops.b.codes(b, dt, name)
        return self._gemm(name, qa, qb,
                          _stage(sa * sb, None, torch.promote_types(a.dtype, b.dtype)))

    def _sdpa(self, where: str, query, key, value, attn_mask=None, dropout_p=0.0,
              is_causal=False, scale=None, enable_gqa=False):
        """``F.scaled_dot_product_attention`` as its two routed products: scores
        ``(Q K^T) * scale`` (+ mask), float softmax, dropout, then ``A V``."""
        if enable_gqa:
            raise InputError(f"cannot route F.scaled_dot_product_attention(enable_gqa=True) "
                             f"in module {_shown(where)}: repeat the K/V heads first")
        scores = self._product(_join(where, "qk"), query, key.transpose(-2, -1))
        scores = scores * (1 / math.sqrt(query.shape[-1]) if scale is None else scale)
        L, S = query.shape[-2], key.shape[-2]
        if is_causal:
            keep = torch.ones(L, S, dtype=torch.bool).tril()
            scores = scores.masked_fill(~keep, float("-inf"))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            else:
                scores = scores + attn_mask
        probs = torch.softmax(scores, dim=-1)
        if dropout_p > 0:
            probs = F.dropout(probs, dropout_p, training=True)
        return self._product(_join(where, "av"), probs, value)


def approximate(model: nn.Module, calibration_batches: Iterable,
                assignment_or_spec=None, bits: int = 8, observer: str = "minmax",
                percentile: float = 99.99, record: bool = False,
                attention: Iterable[str] | None = None, grad: str = "ste") -> ByomModel:
    """Route every GEMM of ``model`` through the approximate GEMM (module docstring).

    Parameters
    ----------
    model : nn.Module
        The float model; it is copied, not changed.
    calibration_batches : iterable
        Input batches (tensors, or tuples whose first item is the input) for
        post-training calibration; at least one.
    assignment_or_spec : str, Mapping, Assignment or None
        One multiplier spec for every GEMM (``"drum(k=4)@s8"``), an assignment
        ``{gemm name: spec}`` (`axsa.models.assignment`), an already resolved
        `Assignment`, or None (every GEMM exact).
    bits : int
        Signed operand bits, 2..8.
    observer : "minmax" | "percentile"
        Activation scales from the largest magnitude or the ``percentile``-th percentile.
    record : bool
        Start recording every GEMM's integer operands (``model.hook.stop_recording()``
        returns them; ``model.hook.save_streams`` writes the energy model's streams).
    attention : iterable of str, optional
        Module paths whose explicit matmuls are attention products, besides the modules
        whose class name contains "Attention".
    grad : "ste" | "table"
        Gradient of the approximate GEMMs when fine-tuning.

    Raises
    ------
    InputError
        A bad option, an op that cannot be routed (named with its module), an
        assignment that does not fit the model.
    """
    from .assignment import Assignment, resolve_assignment, uniform_assignment
    if observer not in ("minmax", "percentile"):
        raise InputError(f"unknown observer {observer!r} (minmax or percentile)")
    if not 0 < percentile <= 100:
        raise InputError(f"percentile must be in (0, 100], got {percentile!r}")
    if grad not in ("ste", "table"):
        raise InputError(f"unknown gradient {grad!r}: expected 'ste' or 'table'")
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise InputError(f"bits must be an integer, got {bits!r}")
    out = ByomModel(copy.deepcopy(model), ByomConfig(bits, observer, float(percentile)),
                    attention)
    out.calibrate(calibration_batches)
    out.eval()
    if assignment_or_spec is not None:
        if isinstance(assignment_or_spec, Assignment):
            resolved = assignment_or_spec
        else:
            entries = (assignment_or_spec if isinstance(assignment_or_spec, Mapping)
                       else uniform_assignment(out, assignment_or_spec))
            resolved = resolve_assignment(out, entries, "approximate()")
        out.hook.assign(resolved.tables)
    out.hook.grad = grad
    if record:
        out.hook.start_recording()
    return out


# ----------------------------------------------------------------------------------------
# what `axsa eval --torch-model` / `axsa finetune --torch-model` load

#: the format tag of a fine-tuned BYOM checkpoint (`axsa finetune --torch-model --out`)
CHECKPOINT_FORMAT = "axsa-byom-1"
#: calibration batch size of `calibration_batches`
CALIB_BATCH = 64


def load_factory(spec: str) -> nn.Module:
    """The fp32 model ``factory()`` of ``spec``: ``package.module:factory`` (imported) or
    ``path/to/file.py:factory`` (loaded from the file). InputError naming the module,
    the file or the factory when one is missing, fails to import, raises or returns
    something other than an ``nn.Module``."""
    if not isinstance(spec, str) or spec.count(":") < 1 or not spec.rpartition(":")[2]:
        raise InputError(f"--torch-model {spec!r} must be 'package.module:factory' or "
                         "'path/to/file.py:factory'")
    where, _, fname = spec.rpartition(":")
    try:
        if where.endswith(".py") or "/" in where:
            path = Path(where)
            if not path.is_file():
                raise InputError(f"--torch-model: file {where!r} does not exist")
            mspec = importlib.util.spec_from_file_location(f"axsa_byom_{path.stem}", path)
            module = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except InputError:
        raise
    except ModuleNotFoundError as exc:
        raise InputError(f"--torch-model: cannot import module {where!r}: {exc}") from None
    except Exception as exc:
        raise InputError(f"--torch-model: importing {where!r} raised "
                         f"{type(exc).__name__}: {exc}") from None
    factory = getattr(module, fname, None)
    if not callable(factory):
        raise InputError(f"--torch-model: module {where!r} has no callable {fname!r}")
    try:
        net = factory()
    except Exception as exc:
        raise InputError(f"--torch-model: factory {spec!r} raised {type(exc).__name__}: "
                         f"{exc}") from None
    if not isinstance(net, nn.Module):
        raise InputError(f"--torch-model: factory {spec!r} returned "
                         f"{type(net).__name__}, not a torch.nn.Module")
    return net.eval()


def load_data(path: str, calib: int):
    """The classification data of ``path`` (.npz with ``x`` (N, ...) inputs and ``y``
    (N,) integer labels) as an `axsa.models.data.Dataset`: the first ``calib`` samples
    calibrate (and train when fine-tuning; their accuracy picks the best epoch), the rest
    are the test split. InputError naming the file, the key or --calib."""
    from .data import Dataset, Split
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--data file {path!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:     # numpy raises several kinds for a bad file
        raise InputError(f"--data file {path!r} is not a readable .npz: {exc}") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise InputError(f"--data file {path!r} has no array {key!r} (it has: "
                             f"{', '.join(sorted(arrays)) or 'none'}); it needs 'x' "
                             "(inputs) and 'y' (integer labels)")
    x, y = arrays["x"], arrays["y"]
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"--data file {path!r}: 'x' must be a numeric array (N, ...), "
                         f"got shape {x.shape} of {x.dtype}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"--data file {path!r}: 'y' must be (N,) integer labels with N = "
                         f"{len(x)} (the rows of 'x'), got shape {y.shape} of {y.dtype}")
    if isinstance(calib, bool) or not isinstance(calib, int) or not 1 <= calib < len(x):
        raise InputError(f"--calib {calib!r} must leave samples of {path!r} to evaluate: "
                         f"1..{len(x) - 1} (the file has {len(x)})")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    train = Split(xt[:calib], yt[:calib])
    return Dataset(ByomModel.kind, train, train, Split(xt[calib:], yt[calib:]))


def search_splits(ds, path: str):
    """The search's splits of `load_data`'s dataset: the ``calib`` calibration samples
    stay the training split; of the samples after them, the even-positioned (``calib``,
    ``calib + 2``, ...) validate and the odd-positioned (``calib + 1``, ...) test, in file
    order (interleaved, so a file sorted by class gives both splits every class).
    InputError when fewer than 2 samples follow the calibration ones."""
    from .data import Dataset, Split
    rest = ds.test
    if len(rest) < 2:
        raise InputError(f"--calib {len(ds.train)} leaves {len(rest)} sample(s) of "
                         f"{path!r}: the search needs at least 2 after the calibration "
                         "samples (validation and test alternate)")
    return Dataset(ds.kind, ds.train, Split(rest.x[0::2], rest.y[0::2]),
                   Split(rest.x[1::2], rest.y[1::2]))


def load_torch_model(spec: str | None, data_path: str | None, calib: int,
                     bits: int | None = None, observer: str | None = None,
                     percentile: float | None = None, ckpt: str | None = None):
    """(ByomModel, Dataset) of ``--torch-model SPEC --data FILE``: the factory's model
    calibrated on the first ``calib`` samples (and, with ``ckpt``, the state of `axsa
    finetune --torch-model --out`); the dataset of `load_data`. InputError naming what is
    wrong: the factory, the data, labels the outputs cannot hold."""
    if data_path is None:
        raise InputError("--torch-model needs --data FILE.npz ('x' inputs, 'y' labels)")
    ds = load_data(data_path, calib)
    net = load_factory(spec)
    what = f"the model of {spec!r} on {data_path!r} (x of shape {tuple(ds.test.x.shape)})"
    model = checked_run(lambda: approximate(
        net, calibration_batches(ds.train.x), None, 8 if bits is None else bits,
        observer or "minmax", 99.99 if percentile is None else percentile), what)
    out = checked_run(lambda: model(ds.test.x[:2]), what)
    classes = out.shape[-1] if out.dim() == 2 else 0
    top = int(max(ds.train.y.max(), ds.test.y.max()))
    if classes <= top or int(min(ds.train.y.min(), ds.test.y.min())) < 0:
        raise InputError(f"{what} gives outputs of shape {tuple(out.shape)}: labels 'y' "
                         f"in 0..{top} need (batch, classes > {top}) logits")
    if ckpt is not None:
        load_checkpoint(model, ckpt, spec)
    return model, ds


def calibration_batches(x: torch.Tensor, batch: int = CALIB_BATCH) -> list[torch.Tensor]:
    """``x`` in batches of ``batch`` samples."""
    return list(x.split(batch))


def checked_run(fn, what: str):
    """``fn()``; an exception of the user's model (not an axsa InputError) becomes an
    InputError naming ``what``."""
    try:
        return fn()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{what} raised {type(exc).__name__}: {exc}") from None


def save_checkpoint(model: ByomModel, path: str | Path, spec: str, meta: dict) -> Path:
    """A fine-tuned model's state (the user's parameters under their own names, plus
    every scale) with the factory spec it belongs to; `load_checkpoint` restores it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "torch_model": spec,
                "config": model.config.to_dict(), "gemms": model.gemm_names(),
                "state_dict": model.state_dict(), "meta": meta}, p)
    return p


def load_checkpoint(model: ByomModel, path: str | Path, spec: str) -> dict:
    """Load `save_checkpoint`'s ``path`` into ``model`` (built by `approximate` from the
    same factory); InputError naming the file when it is not such a checkpoint or does
    not fit. Returns its ``meta``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"checkpoint {str(path)!r} does not exist")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"checkpoint {str(path)!r} is not readable: {exc}") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {str(path)!r} is not written by `axsa finetune "
                         f"--torch-model` (format {CHECKPOINT_FORMAT})")
    if ck.get("config", {}).get("bits") != model.config.bits:
        raise InputError(f"checkpoint {str(path)!r} is {ck['config'].get('bits')}-bit; "
                         f"give --bits {ck['config'].get('bits')}")
    try:
        model.load_state_dict(ck["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise InputError(f"checkpoint {str(path)!r} does not fit the model of {spec!r} "
                         f"(written for {ck.get('torch_model')!r}): {exc}") from None
    model.set_mode(model.mode)
    return ck.get("meta", {})

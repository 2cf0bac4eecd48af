"""Quantized transformer building blocks shared by the time-series model and the ViT.

Each block runs in one of three modes, set on the model's shared :class:`Runtime`:

``fp32``
    Plain float PyTorch (``nn.Linear``, softmax, LayerNorm, ReLU); tensors are floats.
``fake_quant``
    Quantization-aware training. Tensors travel as ``(codes, scale)``: float tensors
    holding integer codes plus a float64 scale. Every GEMM multiplies codes (exactly, or
    through a product table), every requantization uses the fixed-point ``(m, s)`` of the
    integer path, every non-linear op uses the integer definition of
    :mod:`axsa.models.ops`; gradients are straight-through (clipped) estimates through the
    float counterparts. Observers update their scales while ``model.training``.
``integer``
    The integer-only reference: the same computation on int64 tensors (int GEMM operands,
    int accumulators, ``requantize`` with ``(m, s)``, integer ops). Bit-identical to the
    fake-quant forward by construction; :func:`axsa.models.train.export_integer` writes its
    integer weights and ``(m, s)`` out.

Scales are frozen in eval mode; the integer path derives every integer constant (weight
codes, bias codes, ``(m, s)``, the exp table) from the frozen scales, once (cached until
the mode changes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .gemm import GemmHook, OutputStage
from .quant import (
    Quantizer,
    check_exact_float,
    fixed_point,
    qrange,
    quantize,
    quantize_bias,
    requantize_ste,
)

MODES = ("fp32", "fake_quant", "integer")
#: bits of the model's final output codes (the head's requantized accumulator)
OUT_BITS = 16
#: bits of residual sums that feed only a LayerNorm (never a multiplier)
AUX_BITS = 8


#: largest size of a model config (widths, window, horizon, classes, image side): the
#: models are small integer transformers; beyond these a config is a typo or hostile
MAX_SIZE = 4096
#: most encoder layers of a model config
MAX_LAYERS = 64


def check_config(cfg, sizes: tuple[str, ...]) -> None:
    """Checks every model config shares: `sizes` integers in 1..MAX_SIZE (`layers` up to
    MAX_LAYERS), heads dividing d_model, 2..8-bit operands, a known observer. Raises
    ValueError naming the value."""
    from .quant import OBSERVERS
    for f in sizes:
        v = getattr(cfg, f)
        top = MAX_LAYERS if f == "layers" else MAX_SIZE
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
            raise ValueError(f"{f} must be an integer in 1..{top}, got {v!r}")
    if cfg.d_model % cfg.heads:
        raise ValueError(f"d_model {cfg.d_model} is not divisible by heads {cfg.heads}")
    if not isinstance(cfg.bits, int) or not 2 <= cfg.bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {cfg.bits!r}")
    if cfg.observer not in OBSERVERS:
        raise ValueError(f"unknown observer {cfg.observer!r} (known: {OBSERVERS})")


@dataclass
class Runtime:
    """State every block of one model shares: execution mode, bits, the GEMM hook."""
    bits: int
    observer: str = "ema"
    per_channel: bool = True
    mode: str = "fp32"
    hook: GemmHook = field(default_factory=GemmHook)

    @property
    def integer(self) -> bool:
        return self.mode == "integer"


class QModule(nn.Module):
    """A block holding a reference to the model's Runtime (not a sub-module)."""

    def __init__(self, rt: Runtime):
        super().__init__()
        object.__setattr__(self, "rt", rt)
        self._cache: dict = {}

    def _exporting(self) -> bool:
        """True on the first integer-mode forward: record the integer constants then."""
        return self.rt.integer and "export" not in self._cache

    def _record(self, **values) -> None:
        self._cache["export"] = {k: torch.as_tensor(v).detach().clone()
                                 for k, v in values.items()}

    def _observe(self, quantizer: Quantizer, value_fn) -> torch.Tensor:
        """Update ``quantizer``'s observer with ``value_fn()`` when training; its scale."""
        obs = quantizer.observer
        if self.training or int(obs.seen) == 0:
            if self.rt.integer:
                raise RuntimeError("integer mode needs calibrated scales: run the model in "
                                   "fake_quant mode on data first (train.calibrate)")
            with torch.no_grad():
                obs(value_fn())
        return quantizer.scale()


class QLinear(QModule):
    """Linear layer ``y = x W^T + b`` whose GEMM is hook GEMM ``name``.

    Quantized modes: input ``(codes, scale)``; weight codes per output channel (or per
    tensor) from the current weights (min-max); bias codes in the accumulator scale
    (int32); output requantized to ``out_bits`` codes (``relu`` folds ReLU into the clamp).
    """

    def __init__(self, rt: Runtime, name: str, d_in: int, d_out: int, relu: bool = False,
                 out_bits: int | None = None, observer: str | None = None):
        super().__init__(rt)
        check_exact_float(rt.bits, d_in)
        self.name = rt.hook.register(name)
        self.linear = nn.Linear(d_in, d_out)
        self.relu = relu
        self.wq = Quantizer(rt.bits, observer="minmax", track=False, channels=d_out,
                            channel_axis=0 if rt.per_channel else None)
        self.oq = Quantizer(out_bits or rt.bits, observer=observer or rt.observer)

    def weight_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes (out, in), scale: () or (out,)) of the current weights."""
        w = self.linear.weight
        self.wq.observer(w)
        sw = self.wq.scale()
        q = quantize(w, sw.reshape(-1, 1) if sw.dim() else sw, self.wq.qmin, self.wq.qmax)
        return q, sw

    def forward(self, x):
        if self.rt.mode == "fp32":
            y = self.linear(x)
            return F.relu(y) if self.relu else y
        q, s = x
        integer = self.rt.integer
        if integer and "w" in self._cache:
            wq, sw, bq = self._cache["w"]
        else:
            wq, sw = self.weight_codes()
            bq = quantize_bias(self.linear.bias, s * sw, integer=integer)
            if integer:
                wq = wq.detach().to(torch.int64)
                self._cache["w"] = (wq, sw, bq)
        acc = self.rt.hook(self.name, q, wq.t(), integer)
        acc = acc + bq if integer else acc.to(torch.float64) + bq.to(torch.float64)
        so = self._observe(self.oq, lambda: acc.to(torch.float64) * (s * sw))
        qmin = 0 if self.relu else self.oq.qmin
        if self._exporting():
            m, sh = fixed_point(s * sw / so)
            self._record(weight=wq, bias=bq, m=m, s=sh, scale_in=s, scale_w=sw,
                         scale_out=so, relu=int(self.relu), out_bits=self.oq.bits)
        out = requantize_ste(acc, s * sw / so, qmin, self.oq.qmax, integer)
        return (out if integer else out.to(q.dtype)), so


class QAdd(QModule):
    """Residual add with rescale of both inputs to one output scale (ops.add_requant).

    ``bits`` of the output codes default to the model's; a sum that feeds only a
    LayerNorm (not a GEMM) may be wider (``AUX_BITS``).
    """

    def __init__(self, rt: Runtime, bits: int | None = None):
        super().__init__(rt)
        self.oq = Quantizer(bits or rt.bits, observer=rt.observer)

    def forward(self, x, y):
        if self.rt.mode == "fp32":
            return x + y
        (qx, sx), (qy, sy) = x, y
        so = self._observe(self.oq, lambda: qx.to(torch.float64) * sx
                           + qy.to(torch.float64) * sy)
        if self._exporting():
            mx, my, s = ops.add_params(sx, sy, so)
            self._record(mx=mx, my=my, s=s, scale_out=so, out_bits=self.oq.bits)
        return ops.add_requant(qx, sx, qy, sy, so, self.oq.bits, self.rt.integer), so


class QLayerNorm(QModule):
    """LayerNorm: integer normalization (ops.int_layernorm) then a quantized affine."""

    def __init__(self, rt: Runtime, d: int):
        super().__init__(rt)
        self.norm = nn.LayerNorm(d)
        self.gq = Quantizer(ops.GAMMA_BITS, observer="minmax", track=False)
        self.oq = Quantizer(rt.bits, observer=rt.observer)

    def forward(self, x):
        if self.rt.mode == "fp32":
            return self.norm(x)
        q, _ = x
        integer = self.rt.integer
        y = ops.layernorm(q, integer)               # Q.8 normalized codes
        g = self.norm.weight
        self.gq.observer(g)
        sg = self.gq.scale()
        s_acc = sg / (1 << ops.LN_FRAC_BITS)
        gq = quantize(g, sg, self.gq.qmin, self.gq.qmax)
        bq = quantize_bias(self.norm.bias, s_acc, integer=integer)
        if integer:
            acc = y * gq.detach().to(torch.int64) + bq
        else:
            acc = y * gq.to(torch.float64) + bq.to(torch.float64)   # < 2^24: exact
        so = self._observe(self.oq, lambda: acc.to(torch.float64) * s_acc)
        if self._exporting():
            m, s = fixed_point(s_acc / so)
            self._record(gamma=gq.to(torch.int64), beta=bq, m=m, s=s, scale_out=so)
        out = requantize_ste(acc, s_acc / so, self.oq.qmin, self.oq.qmax, integer)
        return (out if integer else out.to(q.dtype)), so


class QAttention(QModule):
    """Multi-head self-attention; GEMMs ``<p>.q``, ``.k``, ``.v``, ``.qk``, ``.av``, ``.out``.

    Scores ``Q K^T / sqrt(dh)`` are requantized to 8-bit codes (``ops.SOFTMAX_IN_BITS``),
    the integer softmax gives probability codes in ``[0, 2^(b-1)-1]`` (scale ``1/P``), and
    ``A V`` is requantized to b-bit codes before the heads merge into the output Linear.
    """

    def __init__(self, rt: Runtime, prefix: str, d: int, heads: int):
        super().__init__(rt)
        if d % heads:
            raise ValueError(f"d_model {d} is not divisible by heads {heads}")
        self.heads, self.dh = heads, d // heads
        self.q = QLinear(rt, f"{prefix}.q", d, d)
        self.k = QLinear(rt, f"{prefix}.k", d, d)
        self.v = QLinear(rt, f"{prefix}.v", d, d)
        self.qk_name = rt.hook.register(f"{prefix}.qk")
        self.av_name = rt.hook.register(f"{prefix}.av")
        self.out = QLinear(rt, f"{prefix}.out", d, d)
        self.sq = Quantizer(ops.SOFTMAX_IN_BITS, observer=rt.observer)
        self.aq = Quantizer(rt.bits, observer=rt.observer)

    def _split(self, t):
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.dh).transpose(1, 2)

    def _merge(self, t):
        b, h, n, dh = t.shape
        return t.transpose(1, 2).reshape(b, n, h * dh)

    def forward(self, x):
        if self.rt.mode == "fp32":
            q, k, v = (self._split(f(x)) for f in (self.q, self.k, self.v))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh), dim=-1)
            return self.out(self._merge(att @ v))
        integer = self.rt.integer
        (q, sq), (k, sk), (v, sv) = self.q(x), self.k(x), self.v(x)
        q, k, v = self._split(q), self._split(k), self._split(v)
        s_acc = sq * sk / math.sqrt(self.dh)
        if self._in_output_stage():
            # a backend requantizes in its output stage (the same arithmetic): scales
            # are frozen in integer mode, so the stage is known before the GEMM
            s_sc = self._observe(self.sq, None)
            scores = self.rt.hook(self.qk_name, q, k.transpose(-1, -2), integer,
                                  OutputStage.of(s_acc / s_sc, self.sq.qmin, self.sq.qmax))
        else:
            acc = self.rt.hook(self.qk_name, q, k.transpose(-1, -2), integer)
            s_sc = self._observe(self.sq, lambda: acc.to(torch.float64) * s_acc)
            scores = requantize_ste(acc, s_acc / s_sc, self.sq.qmin, self.sq.qmax, integer)
        probs = ops.softmax(scores, s_sc, self.rt.bits, integer)
        p = qrange(self.rt.bits, True)[1]
        s_acc = sv / p
        if self._in_output_stage():
            s_att = self._observe(self.aq, None)
            att = self.rt.hook(self.av_name, probs, v, integer,
                               OutputStage.of(s_acc / s_att, self.aq.qmin, self.aq.qmax))
        else:
            acc = self.rt.hook(self.av_name, probs, v, integer)
            s_att = self._observe(self.aq, lambda: acc.to(torch.float64) * s_acc)
            att = None
        if self._exporting():
            sm, ss = fixed_point(sq * sk / math.sqrt(self.dh) / s_sc)
            am, as_ = fixed_point(s_acc / s_att)
            self._record(scores_m=sm, scores_s=ss, exp_table=ops.exp_table(s_sc),
                         av_m=am, av_s=as_, scale_scores=s_sc, scale_out=s_att)
        if att is None:
            att = requantize_ste(acc, s_acc / s_att, self.aq.qmin, self.aq.qmax, integer)
        return self.out((self._merge(att), s_att))

    def _in_output_stage(self) -> bool:
        """Integer mode with a GEMM backend: hand it the attention requantizations."""
        return self.rt.integer and self.rt.hook.backend is not None


class EncoderLayer(QModule):
    """Post-norm transformer encoder layer: x = LN(x + MHA(x)); x = LN(x + FFN(x)).

    FFN = Linear(d, ff) -> ReLU -> Linear(ff, d) (GEMMs ``<p>.ffn.fc1``, ``<p>.ffn.fc2``).
    """

    def __init__(self, rt: Runtime, prefix: str, d: int, heads: int, ff: int):
        super().__init__(rt)
        self.attn = QAttention(rt, f"{prefix}.attn", d, heads)
        aux = max(rt.bits, AUX_BITS)
        self.add1 = QAdd(rt, aux)
        self.norm1 = QLayerNorm(rt, d)
        self.fc1 = QLinear(rt, f"{prefix}.ffn.fc1", d, ff, relu=True)
        self.fc2 = QLinear(rt, f"{prefix}.ffn.fc2", ff, d)
        self.add2 = QAdd(rt, aux)
        self.norm2 = QLayerNorm(rt, d)

    def forward(self, x):
        h = self.norm1(self.add1(x, self.attn(x)))
        return self.norm2(self.add2(h, self.fc2(self.fc1(h))))


class QuantModel(nn.Module):
    """Base of the models: mode switching, input quantizer, GEMM name listing."""

    def __init__(self, bits: int, observer: str, per_channel: bool):
        super().__init__()
        qrange(bits)   # validates bits
        object.__setattr__(self, "rt", Runtime(bits, observer, per_channel))
        self.iq = Quantizer(bits, observer=observer)

    @property
    def hook(self) -> GemmHook:
        return self.rt.hook

    @property
    def mode(self) -> str:
        return self.rt.mode

    def set_mode(self, mode: str) -> QuantModel:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
        self.rt.mode = mode
        for mod in self.modules():
            if isinstance(mod, QModule):
                mod._cache.clear()
        return self

    def gemm_names(self) -> list[str]:
        return list(self.rt.hook.names)

    def quantize_input(self, x: torch.Tensor):
        """Float input -> (codes, scale) in quantized modes (host-side quantization)."""
        if self.training or int(self.iq.observer.seen) == 0:
            if self.rt.integer:
                raise RuntimeError("integer mode needs calibrated scales (train.calibrate)")
            self.iq.observer(x)
        s = self.iq.scale()
        q = quantize(x, s, self.iq.qmin, self.iq.qmax)
        return (q.detach().to(torch.int64) if self.rt.integer else q), s

    @staticmethod
    def dequantize(y) -> torch.Tensor:
        """(codes, scale) -> float32 values; floats pass through."""
        if isinstance(y, tuple):
            q, s = y
            return (q.to(torch.float64) * s).to(torch.float32)
        return y


class QAvgPool(QModule):
    """Average over axis ``dim`` (tokens), requantized to a b-bit output scale."""

    def __init__(self, rt: Runtime, dim: int = 1):
        super().__init__(rt)
        self.dim = dim
        self.oq = Quantizer(rt.bits, observer=rt.observer)

    def forward(self, x):
        if self.rt.mode == "fp32":
            return x.mean(dim=self.dim)
        q, s = x
        so = self._observe(self.oq, lambda: q.to(torch.float64).mean(self.dim) * s)
        if self._exporting():
            m, sh = fixed_point(s / (q.shape[self.dim] * so))
            self._record(m=m, s=sh, scale_out=so)
        return ops.avg_pool(q, self.dim, s, so, self.rt.bits, self.rt.integer), so

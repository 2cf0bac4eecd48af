"""Time-series forecasting transformer (the QAT paper's tiny encoder), integer-ready.

Input ``(B, window, channels)`` floats (window-normalized, see :mod:`axsa.models.data`),
output ``(B, horizon, channels)``. Layers: input projection (GEMM ``embed``), a fixed
sinusoidal positional encoding quantized to the model's bits and added with rescale,
``layers`` post-norm encoder layers (multi-head attention and a ReLU FFN), average pooling
over time, and the output head (GEMM ``head``, 16-bit output codes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .layers import OUT_BITS, EncoderLayer, QAdd, QAvgPool, QLinear, QuantModel, check_config
from .quant import qrange, quantize


@dataclass(frozen=True)
class TSConfig:
    """Shape and quantization of a :class:`TSTransformer` (defaults after Ling et al.)."""
    d_model: int = 32
    heads: int = 1
    layers: int = 1
    ff: int = 64
    window: int = 24
    horizon: int = 1
    channels: int = 1
    bits: int = 8
    observer: str = "ema"
    per_channel: bool = True

    def __post_init__(self):
        check_config(self, ("d_model", "heads", "layers", "ff", "window", "horizon",
                            "channels"))

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal(window: int, d: int) -> torch.Tensor:
    pos = torch.arange(window, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64)
    ang = pos / torch.pow(10000.0, i / d)
    pe = torch.zeros(window, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang[:, : d // 2])
    return pe.to(torch.float32)


class TSTransformer(QuantModel):
    """Forecaster; ``set_mode("fp32" | "fake_quant" | "integer")`` picks the execution."""

    kind = "ts"

    def __init__(self, config: TSConfig = TSConfig()):
        super().__init__(config.bits, config.observer, config.per_channel)
        c, rt = config, self.rt
        self.config = c
        self.embed = QLinear(rt, "embed", c.channels, c.d_model)
        self.register_buffer("pe", sinusoidal(c.window, c.d_model))
        self.pe_add = QAdd(rt)
        self.layers = nn.ModuleList(EncoderLayer(rt, f"layers.{i}", c.d_model, c.heads, c.ff)
                                    for i in range(c.layers))
        self.pool = QAvgPool(rt, dim=1)
        self.head = QLinear(rt, "head", c.d_model, c.horizon * c.channels, out_bits=OUT_BITS,
                            observer="minmax")

    def _pe_codes(self):
        qmin, qmax = qrange(self.config.bits)
        s = torch.tensor(1.0 / qmax, dtype=torch.float64)      # |pe| <= 1
        q = quantize(self.pe, s, qmin, qmax)
        return (q.to(torch.int64) if self.rt.integer else q), s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, w, ch = x.shape
        c = self.config
        if w != c.window or ch != c.channels:
            raise ValueError(f"input shape {tuple(x.shape)} does not match window "
                             f"{c.window} x channels {c.channels}")
        if self.mode == "fp32":
            h = self.embed(x) + self.pe
            for layer in self.layers:
                h = layer(h)
            y = self.head(self.pool(h))
        else:
            h = self.pe_add(self.embed(self.quantize_input(x)), self._pe_codes())
            for layer in self.layers:
                h = layer(h)
            y = self.dequantize(self.head(self.pool(h)))
        return y.reshape(b, c.horizon, c.channels)

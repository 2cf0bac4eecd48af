"""A tiny Vision Transformer for 8x8 images (scikit-learn's digits), integer-ready.

Input ``(B, 8, 8)`` floats in [0, 1]; output ``(B, classes)`` logits. Patch embedding
(non-overlapping ``patch x patch`` patches flattened, GEMM ``patch``), a learned position
embedding quantized per tensor and added with rescale, post-norm encoder layers, average
pooling over tokens, classification head (GEMM ``head``, 16-bit output codes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .layers import OUT_BITS, EncoderLayer, QAdd, QAvgPool, QLinear, QuantModel, check_config
from .quant import Quantizer


@dataclass(frozen=True)
class ViTConfig:
    """Shape and quantization of a :class:`TinyViT`."""
    image: int = 8
    patch: int = 2
    d_model: int = 32
    heads: int = 2
    layers: int = 1
    ff: int = 64
    classes: int = 10
    bits: int = 8
    observer: str = "ema"
    per_channel: bool = True

    def __post_init__(self):
        check_config(self, ("image", "patch", "d_model", "heads", "layers", "ff", "classes"))
        if self.image % self.patch:
            raise ValueError(f"image size {self.image} is not a multiple of patch {self.patch}")

    @property
    def tokens(self) -> int:
        return (self.image // self.patch) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


class TinyViT(QuantModel):
    """Classifier; ``set_mode("fp32" | "fake_quant" | "integer")`` picks the execution."""

    kind = "vit"

    def __init__(self, config: ViTConfig = ViTConfig()):
        super().__init__(config.bits, config.observer, config.per_channel)
        c, rt = config, self.rt
        self.config = c
        self.patch = QLinear(rt, "patch", c.patch * c.patch, c.d_model)
        self.pos = nn.Parameter(torch.randn(c.tokens, c.d_model) * 0.1)
        self.posq = Quantizer(c.bits, observer="minmax", track=False)
        self.pos_add = QAdd(rt)
        self.layers = nn.ModuleList(EncoderLayer(rt, f"layers.{i}", c.d_model, c.heads, c.ff)
                                    for i in range(c.layers))
        self.pool = QAvgPool(rt, dim=1)
        self.head = QLinear(rt, "head", c.d_model, c.classes, out_bits=OUT_BITS,
                            observer="minmax")

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W) -> (B, tokens, patch*patch), row-major patches and pixels."""
        c = self.config
        if x.dim() != 3 or x.shape[1] != c.image or x.shape[2] != c.image:
            raise ValueError(f"input shape {tuple(x.shape)} is not (B, {c.image}, {c.image})")
        b, p, g = x.shape[0], c.patch, c.image // c.patch
        return x.reshape(b, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(b, g * g, p * p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patches(x)
        if self.mode == "fp32":
            h = self.patch(t) + self.pos
            for layer in self.layers:
                h = layer(h)
            return self.head(self.pool(h))
        q = self.posq.codes(self.pos)
        pos = (q.detach().to(torch.int64) if self.rt.integer else q), self.posq.scale()
        h = self.pos_add(self.patch(self.quantize_input(t)), pos)
        for layer in self.layers:
            h = layer(h)
        return self.dequantize(self.head(self.pool(h)))

"""A small CNN on scikit-learn's digits: the bring-your-own-model example.

``factory()`` returns the fp32 model (trained here, deterministically, in a few seconds);
``make_data(path)`` writes the ``.npz`` that `axsa eval --torch-model` reads: ``x``
``(N, 1, 8, 8)`` float32 and ``y`` ``(N,)`` int64, the training split (``CALIB`` samples:
calibration, and fine-tuning's training data), then the test split::

    python -m axsa.examples.digits_cnn digits.npz
    axsa eval --torch-model axsa.examples.digits_cnn:factory --data digits.npz \\
        --calib 1257 --mult "drum(k=2)@s8"
"""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: training samples at the front of make_data's file: the whole training split
CALIB = 1257


class DigitsCNN(nn.Module):
    """Conv(1->16, 3x3) - ReLU - grouped Conv(16->32, 3x3, stride 2, 4 groups) - ReLU -
    Linear(512->64) - ReLU - Linear(64->10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4)
        self.fc = nn.Linear(32 * 4 * 4, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(F.relu(self.fc(x.flatten(1))))


def digits():
    """`axsa.models.data.digits_dataset` with a channel axis: (N, 1, 8, 8) images."""
    from axsa.models.data import digits_dataset
    ds = digits_dataset()
    return {name: (split.x[:, None], split.y) for name, split in
            (("train", ds.train), ("val", ds.val), ("test", ds.test))}


def train_cnn(epochs: int = 10, seed: int = 0, lr: float = 3e-3) -> DigitsCNN:
    """DigitsCNN trained in fp32 on the training split (Adam, batch 64), deterministic
    (trained once per process and settings; each call returns a fresh copy)."""
    return copy.deepcopy(_trained(epochs, seed, lr))


@functools.lru_cache(maxsize=4)
def _trained(epochs: int, seed: int, lr: float) -> DigitsCNN:
    torch.manual_seed(seed)
    x, y = digits()["train"]
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def factory() -> nn.Module:
    """The fp32 model `axsa eval --torch-model axsa.examples.digits_cnn:factory` loads."""
    return train_cnn()


def make_data(path: str | Path, calib: int = CALIB) -> Path:
    """Write ``x``, ``y``: ``calib`` training samples, then the test split."""
    d = digits()
    x = torch.cat([d["train"][0][:calib], d["test"][0]]).numpy()
    y = torch.cat([d["train"][1][:calib], d["test"][1]]).numpy()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez(p, x=x.astype(np.float32), y=y.astype(np.int64))
    return p


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m axsa.examples.digits_cnn OUT.npz")
    print(f"wrote {make_data(sys.argv[1])}")

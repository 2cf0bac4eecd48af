"""Datasets: the co2 series (statsmodels), a user's CSV series, the digits images
(scikit-learn). Everything is deterministic and offline (the data ship with the packages).

Time series become sliding windows (:func:`windows`): each input window of ``window``
steps and the ``horizon`` steps after it. Windows are normalized by their own last value
(per channel: the model forecasts the change from the last observation, so the slow trend
of co2 does not push later windows out of the quantized range, and quantization errors
scale with the change, not with the level) and one global scale (the standard deviation of
the normalized training inputs);
metrics are reported in the series' own units (ppm for co2). The split is chronological
by window position: the first 70% of windows train, the next 10% validate, the last 20%
test.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from axsa.errors import InputError

SPLIT = (0.7, 0.1, 0.2)


def load_co2() -> tuple[np.ndarray, list[str]]:
    """statsmodels' weekly Mauna Loa co2 series (1958-2001), gaps linearly interpolated.

    Returns ``(values (N, 1) float64, ["co2"])``.
    """
    from statsmodels.datasets import co2
    s = co2.load_pandas().data["co2"].interpolate(method="linear").bfill().ffill()
    return s.to_numpy(dtype=np.float64)[:, None], ["co2"]


def load_csv(path: str | Path, date_column: str | None = None,
             columns: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """A user's series from an ETT-style CSV: a date column and numeric value columns.

    Parameters
    ----------
    path : CSV file with a header row.
    date_column : name of the date column; default: ``date`` if present, else the first
        column. Rows are sorted by it; gaps (empty cells) are interpolated linearly.
    columns : value columns to use; default: every column except the date column.

    Raises
    ------
    InputError
        Missing or unreadable file, unknown column, a date column that does not parse,
        a value column that is not numeric: the message names the file and the column.
    """
    import pandas as pd
    p = Path(path)
    if not p.is_file():
        raise InputError(f"CSV file {str(path)!r} does not exist")
    try:
        df = pd.read_csv(p)
    except Exception as exc:  # pandas raises several kinds for a bad file
        raise InputError(f"CSV file {str(path)!r} is not readable: {exc}") from None
    if df.shape[1] < 2:
        raise InputError(f"CSV file {str(path)!r} needs a date column and at least one "
                         f"value column, found columns {list(df.columns)}")
    if date_column is None:
        date_column = "date" if "date" in df.columns else str(df.columns[0])
    if date_column not in df.columns:
        raise InputError(f"CSV file {str(path)!r} has no date column {date_column!r} "
                         f"(columns: {list(df.columns)})")
    try:
        with warnings.catch_warnings():   # "could not infer format": fine, per element
            warnings.simplefilter("ignore", UserWarning)
            dates = pd.to_datetime(df[date_column])
    except Exception:
        raise InputError(f"column {date_column!r} of CSV file {str(path)!r} does not hold "
                         "dates") from None
    value_cols = columns or [c for c in df.columns if c != date_column]
    for c in value_cols:
        if c not in df.columns:
            raise InputError(f"CSV file {str(path)!r} has no column {c!r} "
                             f"(columns: {list(df.columns)})")
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise InputError(f"column {c!r} of CSV file {str(path)!r} is not numeric")
    vals = df.assign(_date=dates).sort_values("_date")[value_cols]
    vals = vals.interpolate(method="linear").bfill().ffill()
    if vals.isna().any().any():
        bad = [c for c in value_cols if vals[c].isna().any()]
        raise InputError(f"column(s) {bad} of CSV file {str(path)!r} hold no values")
    return vals.to_numpy(dtype=np.float64), [str(c) for c in value_cols]


@dataclass(frozen=True)
class Split:
    """Model inputs ``x``, targets ``y`` (normalized) and what maps them back to units."""
    x: torch.Tensor
    y: torch.Tensor
    offset: torch.Tensor | None = None   # (n, 1, C) last value of each window (time series)
    scale: float = 1.0

    def __len__(self) -> int:
        return len(self.x)

    def to_units(self, y: torch.Tensor) -> torch.Tensor:
        """Normalized predictions -> the series' own units."""
        return y * self.scale + self.offset if self.offset is not None else y


@dataclass(frozen=True)
class Dataset:
    kind: str
    train: Split
    val: Split
    test: Split
    names: tuple[str, ...] = ()


def windows(values: np.ndarray, window: int, horizon: int,
            names: list[str] | tuple[str, ...] = ()) -> Dataset:
    """Sliding windows of a (N, C) series, window-mean normalized, chronological split."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0] - window - horizon + 1
    if n < 20:
        raise InputError(f"series of {values.shape[0]} steps is too short for window "
                         f"{window} + horizon {horizon} (need at least {window + horizon + 19})")
    idx = np.arange(n)[:, None]
    x = values[idx + np.arange(window)]                       # (n, W, C)
    y = values[idx + window + np.arange(horizon)]              # (n, H, C)
    off = x[:, -1:, :]                                         # (n, 1, C) last value
    n_tr, n_va = int(n * SPLIT[0]), int(n * SPLIT[1])
    scale = float((x[:n_tr] - off[:n_tr]).std()) or 1.0

    def part(sl):
        t = lambda a: torch.tensor(a[sl], dtype=torch.float32)  # noqa: E731
        return Split(t((x - off) / scale), t((y - off) / scale), t(off), scale)
    return Dataset("ts", part(slice(0, n_tr)), part(slice(n_tr, n_tr + n_va)),
                   part(slice(n_tr + n_va, n)), tuple(names))


def co2_dataset(window: int = 24, horizon: int = 1) -> Dataset:
    values, names = load_co2()
    return windows(values, window, horizon, names)


def digits_dataset() -> Dataset:
    """scikit-learn's 1797 8x8 digits, pixels scaled to [0, 1]; a fixed stratified split
    70/15/15 (train/val/test, ``random_state=0``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = d.images.astype(np.float32) / 16.0
    y = d.target.astype(np.int64)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.3, stratify=y,
                                                  random_state=0)
    x_va, x_te, y_va, y_te = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest,
                                              random_state=0)
    s = lambda a, b: Split(torch.from_numpy(a), torch.from_numpy(b))  # noqa: E731
    return Dataset("vit", s(x_tr, y_tr), s(x_va, y_va), s(x_te, y_te),
                   tuple(str(i) for i in range(10)))

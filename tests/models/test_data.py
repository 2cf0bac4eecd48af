"""Data loaders: co2, a user's CSV, sliding windows, digits."""

import numpy as np
import pytest
from axsa.models import data as D

from axsa.errors import InputError


def test_co2_is_complete_weekly_series():
    values, names = D.load_co2()
    assert names == ["co2"] and values.shape == (2284, 1)
    assert not np.isnan(values).any()
    assert values[0, 0] == pytest.approx(316.1)          # 1958-03-29, as shipped


def test_windows_split_and_units():
    series = np.arange(100, dtype=float)[:, None] * 2.0 + 5.0
    ds = D.windows(series, window=4, horizon=2)
    n = 100 - 4 - 2 + 1
    assert (len(ds.train), len(ds.val), len(ds.test)) == (int(n * .7), int(n * .1),
                                                          n - int(n * .7) - int(n * .1))
    # first window: inputs 5, 7, 9, 11 -> targets 13, 15; normalized by the last value
    x0, y0 = ds.train.x[0, :, 0].tolist(), ds.train.y[0, :, 0].tolist()
    s = ds.train.scale
    assert x0 == pytest.approx([-6 / s, -4 / s, -2 / s, 0.0])
    assert ds.train.to_units(ds.train.y)[0, :, 0].tolist() == pytest.approx([13.0, 15.0])
    assert y0 == pytest.approx([2 / s, 4 / s])
    # chronological: the test part is the end of the series
    assert ds.test.to_units(ds.test.y)[-1, -1, 0].item() == pytest.approx(series[-1, 0])


def test_csv_sorted_interpolated(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("when,a,b\n2020-01-03,3,30\n2020-01-01,1,10\n2020-01-02,,20\n")
    values, names = D.load_csv(p)
    assert names == ["a", "b"]
    assert values.tolist() == [[1, 10], [2, 20], [3, 30]]
    values, names = D.load_csv(p, columns=["b"])
    assert names == ["b"] and values[:, 0].tolist() == [10, 20, 30]


def test_csv_errors_name_the_file_and_column(tmp_path):
    with pytest.raises(InputError, match="nope.csv"):
        D.load_csv(tmp_path / "nope.csv")
    p = tmp_path / "bad.csv"
    p.write_text("date,a\nnot a date,1\nneither,2\n")
    with pytest.raises(InputError, match="'date'"):
        D.load_csv(p)
    p.write_text("date,a\n2020-01-01,1\n")
    with pytest.raises(InputError, match="'zz'"):
        D.load_csv(p, columns=["zz"])
    p.write_text("date\n2020-01-01\n")
    with pytest.raises(InputError, match="value column"):
        D.load_csv(p)
    with pytest.raises(InputError, match="too short"):
        D.windows(np.zeros((30, 1)), 24, 1)


def test_digits_split_is_fixed_and_stratified():
    a, b = D.digits_dataset(), D.digits_dataset()
    assert (len(a.train), len(a.val), len(a.test)) == (1257, 270, 270)
    assert np.array_equal(a.test.y.numpy(), b.test.y.numpy())
    assert np.bincount(a.test.y.numpy()).min() >= 26
    assert float(a.train.x.max()) == 1.0 and float(a.train.x.min()) == 0.0

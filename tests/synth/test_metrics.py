"""Error metrics on tables whose answers are worked out by hand."""

import numpy as np
import pytest
from axsa.rtl.multipliers import Format
from axsa.synth.metrics import error_metrics, operand_weights

from axsa.errors import InputError


def test_metrics_by_hand():
    exact = np.array([[0, 0], [0, 4]])
    table = np.array([[1, 0], [0, 2]])  # errors +1 (exact 0) and -2 (exact 4)
    m = error_metrics(table, exact)
    assert m["mae"] == pytest.approx(3 / 4)
    assert m["nmed"] == pytest.approx(3 / 4 / 4)
    assert m["mred"] == pytest.approx(0.5)       # only the pair with exact 4: |-2|/4
    assert m["wce"] == 2
    assert m["wcre"] == pytest.approx(0.5)
    assert m["ep"] == pytest.approx(0.5)
    assert m["mse"] == pytest.approx(5 / 4)
    assert m["bias"] == pytest.approx(-1 / 4)


def test_weighted_metrics_ignore_pairs_of_zero_weight():
    exact = np.array([[0, 0], [0, 4]])
    table = np.array([[1, 0], [0, 2]])
    w = np.array([[0, 1], [0, 3]])
    m = error_metrics(table, exact, w)
    assert m["mae"] == pytest.approx(3 * 2 / 4)
    assert m["wce"] == 2 and m["ep"] == pytest.approx(0.75)
    w = np.array([[5, 1], [1, 0]])
    m = error_metrics(table, exact, w)
    assert m["wce"] == 1 and m["bias"] == pytest.approx(5 / 7) and m["mred"] == 0


def test_operand_weights_histogram():
    fmt = Format.parse("s2")
    w = operand_weights(np.array([-2, -2, 1]), np.array([1, 1, 0]), fmt)
    assert w[2, 1] == 2 and w[1, 0] == 1 and w.sum() == 3
    with pytest.raises(InputError, match="2..2"):
        operand_weights(np.array([2]), np.array([0]), fmt)

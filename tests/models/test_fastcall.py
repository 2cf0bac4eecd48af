"""approx_matmul's fast path in C++ (models/approx_fastcall.cc): the same results as the
Python path on every layout it keeps, found again only for the same table, layout and
thread count, bad values still named, bounded and emptied with the caches, a failed
build falls back with a warning, and a process that kept calls exits cleanly."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from axsa.models import _fastcall, approx
from axsa.models.approx import ProductTable, approx_matmul
from test_approx import gather_reference, operands, strided_cases, tables_of

from axsa.errors import InputError

pytestmark = pytest.mark.skipif(_fastcall.load() is None,
                                reason="the fast-call extension does not build here")


def random_table(rng) -> ProductTable:
    return ProductTable(rng.integers(-2**15, 2**15, size=(256, 256)), signed=True,
                        name="random@s8")


def head_operands(rng, table, dtype=None):
    """Operands of the ts model's head (64x32 @ 32x1), extremes included."""
    a, b = operands(rng, table, (64, 32), (32, 3))
    a, b = torch.from_numpy(a), torch.from_numpy(b[:, 2:3].copy())
    return (a, b) if dtype is None else (a.to(dtype), b.to(dtype))


def fast_calls(x, y, table):
    """approx_matmul three times (auto: estimate or tune, then the fast path); the last
    result and whether the extension found the last call."""
    for _ in range(2):
        approx_matmul(x, y, table)
    before = _fastcall.found()
    got = approx_matmul(x, y, table)
    return got, _fastcall.found() == before + 1


@pytest.mark.parametrize("spec", ["exact@s8", "drum(k=4)@s8", "mitchell@s8", "bam(h=2,v=6)@u8",
                                  None])
def test_same_results_as_the_python_path(spec, threads, monkeypatch):
    rng = np.random.default_rng(31)
    table = tables_of(spec)[0] if spec else random_table(rng)
    cases = strided_cases(rng, table) + [
        head_operands(rng, table),
        tuple(torch.from_numpy(t).to(torch.int8 if table.signed else torch.uint8)
              for t in operands(rng, table, (5, 3, 17), (17, 9)))]
    took = 0
    for x, y in cases:
        want = gather_reference(x.numpy(), y.numpy(), table.table, 8, 8)
        got, found = fast_calls(x, y, table)
        np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{tuple(x.shape)} @ "
                                      f"{tuple(y.shape)}")
        key = approx.native.fast_key(table, x, y)
        # the extension found exactly the calls the Python fast path prepared
        assert found == (key in approx.cache.FAST)
        took += found
        with monkeypatch.context() as m:       # the Python path, on the same prepared call
            m.setattr(_fastcall, "run", None)
            np.testing.assert_array_equal(approx_matmul(x, y, table).numpy(), want)
    assert took >= 2, "no case took the C++ fast path"


def test_found_only_for_the_same_table_layout_and_threads():
    rng = np.random.default_rng(32)
    exact, drum = tables_of("exact@s8")[0], tables_of("drum(k=4)@s8")[0]
    a, b = head_operands(rng, exact)
    approx.cache.clear()                        # (what earlier tests kept)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, found = fast_calls(a, b, exact)
        assert found
        kept = _fastcall.kept()
        for x, y, table in ((a, b, drum),                       # another table
                            (a.t().contiguous().t(), b, exact),  # another stride
                            (a.to(torch.int32), b, exact),      # another dtype
                            (a[:63], b, exact)):                # another shape
            before = _fastcall.found()
            got = approx_matmul(x, y, table)    # the first call of its own: not found
            assert _fastcall.found() == before
            np.testing.assert_array_equal(
                got.numpy(), gather_reference(x.numpy(), y.numpy(), table.table, 8, 8))
        torch.set_num_threads(2)                # another thread count: a call of its own
        before = _fastcall.found()
        np.testing.assert_array_equal(approx_matmul(a, b, exact).numpy(), (a @ b).numpy())
        assert _fastcall.found() == before
        assert _fastcall.kept() >= kept
    finally:
        torch.set_num_threads(old)


def test_a_bad_value_on_the_fast_path_is_named():
    rng = np.random.default_rng(33)
    table = tables_of("drum(k=4)@s8")[0]
    a, b = head_operands(rng, table, torch.float32)
    _, found = fast_calls(a, b, table)
    assert found
    for value, message in ((128.0, r"operand a holds 128, outside the range -128\.\.127"),
                           (0.5, r"holds 0\.5, not an integer")):
        x = a.clone()
        x[7, 3] = value
        with pytest.raises(InputError, match=message):
            approx_matmul(x, b, table)


def test_bounded_and_emptied_with_the_caches():
    rng = np.random.default_rng(34)
    table = tables_of("trunc(k=4)@s8")[0]
    a, b = (torch.from_numpy(t) for t in operands(rng, table, (9, 12), (12, 5)))
    fast_calls(a, b, table)
    call = approx.cache.FAST[approx.native.fast_key(table, a, b)]
    approx.cache.clear()
    assert _fastcall.kept() == 0
    for n in range(3):                          # at most `limit` kept: emptied when full
        assert _fastcall.keep(table.key, a[:, :12 - n], b[:12 - n], call, 2)
        assert 1 <= _fastcall.kept() <= 2
    assert not _fastcall.keep(table.key, a[None, None, None, None, None, None, None], b,
                              call, 2)          # 9 dimensions: no key, the Python path
    approx.cache.clear()
    _, found = fast_calls(a, b, table)          # kept again after the caches are emptied
    assert found and _fastcall.kept() == 1


def test_a_failed_build_falls_back_with_a_warning(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "approx_fastcall.cc"
    broken.write_text("this is not C++;\n")
    monkeypatch.setenv("AXSA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_fastcall, "SOURCE", broken)
    monkeypatch.setattr(_fastcall, "_STATE", {})
    monkeypatch.setattr(_fastcall, "run", _fastcall.run)
    assert _fastcall.load() is None and _fastcall.run is None
    err = capsys.readouterr().err
    assert "warning: the fast-call extension is unavailable" in err
    assert "failed compiling the fast-call extension" in err and "this is not C++" in err
    assert _fastcall.load() is None              # one warning: the failure is remembered
    assert capsys.readouterr().err == ""
    rng = np.random.default_rng(35)
    table = tables_of("drum(k=4)@s8")[0]
    a, b = head_operands(rng, table)
    approx.cache.clear()
    for _ in range(3):                           # the Python fast path, same results
        np.testing.assert_array_equal(approx_matmul(a, b, table).numpy(),
                                      gather_reference(a.numpy(), b.numpy(), table.table,
                                                       8, 8))
    assert approx.native.fast_key(table, a, b) in approx.cache.FAST


def test_a_process_that_kept_calls_exits_cleanly():
    # the kept calls hold Python objects: dropping them after the interpreter is gone
    # would crash the process at exit
    code = ("import torch\n"
            "from axsa.models import _fastcall\n"
            "from axsa.models.approx import ProductTable, approx_matmul\n"
            "from axsa.rtl.multipliers import parse_spec\n"
            "t = ProductTable.from_multiplier(parse_spec('drum(k=4)@s8'))\n"
            "a = torch.ones(64, 32, dtype=torch.int8)\n"
            "b = torch.ones(32, 1, dtype=torch.int8)\n"
            "for _ in range(4):\n"
            "    c = approx_matmul(a, b, t)\n"
            "print(_fastcall.kept(), _fastcall.found(), int(c.sum()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    kept, found, total = map(int, out.stdout.split())
    assert kept >= 1 and found >= 1 and total == 64 * 32

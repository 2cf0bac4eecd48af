"""Threaded native kernels and the stored engine choice of ``auto`` (issue 17).

The kernels are checked bit-exact against the plain gather (from the definition, numpy)
at 1, 2 and 3 threads on shapes large enough to be split (odd, prime, one row, one
column, strided, batched, broadcast), for a table of every family and random tables of
every byte span. The stored engine choice: the same call picks the same engine in two
fresh processes sharing a cache, the second fits nothing, a damaged file is refitted
with a warning. No wall-clock assertions.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from axsa.models import _native, approx
from axsa.models.approx import ProductTable, approx_matmul, cache, choices
from axsa.rtl.multipliers import parse_spec
from test_approx import FAMILY_SPECS, gather_reference, operands

#: one table per family (the first setting, signed 8-bit)
FAMILY_TABLES = [f"{specs[0]}@s8" for specs in FAMILY_SPECS.values()]

#: random tables whose span (max - min) needs 1, 2, 3, 4 and 5 bytes: the plane gather
#: with 1..4 planes, then the plain loop
SPANS = [2**7, 2**15, 2**23, 2**31, 2**38]


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def random_table(span: int, seed: int = 0) -> ProductTable:
    rng = np.random.default_rng(seed)
    t = rng.integers(-(span // 2), span // 2, size=(256, 256))
    t[0, 0], t[1, 1] = -(span // 2), span // 2 - 1       # the whole span, exactly
    return ProductTable(t, signed=True, name=f"random span {span}")


def cases(rng, table):
    """(a, b) operand pairs, each with at least 2^16 products (the kernels' threshold
    for threads), views among them as the models hand them over."""
    def vals(side, *shape):
        lo, hi = table.a_range if side == "a" else table.b_range
        return torch.from_numpy(rng.integers(lo, hi + 1, size=shape))

    def ab(sa, sb):
        a, b = operands(rng, table, sa, sb)
        return torch.from_numpy(a), torch.from_numpy(b)

    x, y = vals("a", 140, 90), vals("b", 80, 130)
    return [
        ab((131, 67), (67, 97)),                         # primes: every tile has a tail
        ab((701, 45), (45, 20)),                         # narrow output, many rows
        (vals("a", 1, 257), vals("b", 257, 311)),        # one row: the columns split
        (vals("a", 4001, 37), vals("b", 37, 1)),         # one column: the rows split
        ab((9, 601), (601, 70)),                         # K > 256: several partial sums
        ab((5, 37, 41), (5, 41, 53)),                    # batched both sides: passes
        ab((3, 67, 41), (41, 71)),                       # b shared by the batch
        (x[:, 1:81:2], y[:40, 3:]),                      # strided rows and columns
        (vals("a", 40, 140).t(), y[:40]),                # column-major a
        (x[None, :70, :40].expand(4, 70, 40), vals("b", 4, 61, 40).transpose(-1, -2)),
    ]


def check_threads(table, rng):
    for a, b in cases(rng, table):
        want = gather_reference(a.numpy(), b.numpy(), table.table, 8, 8)
        batch = tuple(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
        kinds = (["native"] if table.plan.int8 is not None else []) + ["native-gather"]
        for kind in kinds:
            for planes in (True, False):
                call = _native.NativeCall(table, kind, a, b, batch, planes=planes)
                for threads in (1, 2, 3):
                    torch.set_num_threads(threads)
                    got = call(a, b)
                    np.testing.assert_array_equal(
                        got.numpy(), want, err_msg=f"{table.name} {kind} planes={planes} "
                        f"{threads} threads {tuple(a.shape)} @ {tuple(b.shape)}")


@pytest.mark.parametrize("spec", FAMILY_TABLES)
def test_threaded_kernels_equal_the_plain_gather_every_family(spec):
    mult = parse_spec(spec)
    table = ProductTable.from_multiplier(mult, mult.modes - 1)   # cfgtrunc: not exact
    check_threads(table, np.random.default_rng(3))


@pytest.mark.parametrize("span", SPANS)
def test_threaded_gather_on_random_tables_of_every_span(span):
    table = random_table(span)
    planes = table.plan.native_data["lut_planes"]
    count = ((span - 1).bit_length() + 7) // 8           # bytes of max - min
    assert (planes.count, bool(planes.planes)) == ((count, True) if count <= 4 else (0, False))
    check_threads(table, np.random.default_rng(4))


def test_the_kernels_are_built_with_openmp():
    assert _native.library().axsa_approx_openmp() == 1


def test_plane_tables_rebuild_the_table():
    # the plane gather's bytes, weighed and offset, are the table itself
    table = random_table(2**23, seed=5)
    t = table.plan.native_data["lut_planes"]
    planes = np.ctypeslib.as_array(
        (np.ctypeslib.ctypes.c_uint8 * (256 * t.count * 256)).from_address(t.planes)
    ).reshape(256, t.count, 256).astype(np.int64)
    weights = 256 ** np.arange(t.count)
    np.testing.assert_array_equal(t.offset + np.einsum("ajb,j->ab", planes, weights),
                                  table.table)


# ---- the stored engine choice ---------------------------------------------------------

CHOOSER = textwrap.dedent("""
    import json, sys, torch
    import numpy as np
    from axsa.models.approx import ProductTable, approx_matmul, cache, choices
    from axsa.rtl.multipliers import parse_spec
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    tables = [ProductTable.from_multiplier(parse_spec(s))
              for s in ("drum(k=4)@s8", "mitchell@s8", "exact@s8")]
    tables.append(ProductTable(rng.integers(-999, 999, size=(256, 256)), True, "random"))
    picked = {}
    for t in tables:
        for sa, sb in (((24, 32), (32, 64)), ((64, 24, 16), (64, 16, 24)),
                       ((40, 96), (96, 1))):
            a = torch.from_numpy(rng.integers(-128, 128, size=sa))
            b = torch.from_numpy(rng.integers(-128, 128, size=sb))
            approx_matmul(a, b, t)
            picked[f"{t.label} {sa} {sb}"] = cache.tuned(t, sa, sb)
            approx_matmul(a.float(), b.float(), t, dtype=torch.float32)  # its own class
            picked[f"{t.label} {sa} {sb} float"] = cache.tuned(t, sa, sb, floats=True)
    print(json.dumps({"picked": picked, "fits": cache.FITS[0],
                      "file": str(choices.path())}))
""")


def choose_in_fresh_process(cache_dir, **env):
    run = subprocess.run([sys.executable, "-c", CHOOSER], capture_output=True, text=True,
                         env={**os.environ, "AXSA_CACHE": str(cache_dir), **env})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout), run.stderr


def test_same_engine_for_the_same_call_in_two_fresh_processes(tmp_path):
    first, _ = choose_in_fresh_process(tmp_path)
    second, _ = choose_in_fresh_process(tmp_path)
    assert first["picked"] == second["picked"]
    assert first["fits"] > 0            # the first process timed the engines ...
    assert second["fits"] == 0          # ... the second only read what it stored
    stored = json.loads(open(first["file"]).read())
    assert stored["version"] == choices.VERSION
    assert set(stored["choices"].values()) >= set(first["picked"].values())
    assert all(k.startswith("t1|") for k in stored["choices"])
    # a re-tune on request fits again (and may or may not land on the same engines)
    third, _ = choose_in_fresh_process(tmp_path, AXSA_RETUNE="1")
    assert third["fits"] > 0


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"version": 1}',
                                     '{"version": 99, "choices": {}}',
                                     '{"version": 1, "choices": {"t1|w1|u-u:4.5.6": "fast"}}',
                                     '{"version": 1, "choices": ["native"]}'])
def test_damaged_stored_choices_are_refitted_with_a_warning(tmp_path, monkeypatch, capsys,
                                                            content):
    monkeypatch.setenv("AXSA_CACHE", str(tmp_path))
    cache.clear()
    torch.set_num_threads(1)
    file = choices.path()
    file.parent.mkdir(parents=True)
    file.write_text(content)
    table = ProductTable.from_multiplier(parse_spec("drum(k=4)@s8"))
    rng = np.random.default_rng(6)
    a, b = operands(rng, table, (24, 32), (32, 64))
    got = approx_matmul(torch.from_numpy(a), torch.from_numpy(b), table)
    np.testing.assert_array_equal(got.numpy(), gather_reference(a, b, table.table, 8, 8))
    err = capsys.readouterr().err
    assert f"the stored engine choices {file} are damaged; refitting them" in err
    assert cache.FITS[0] == 1
    stored = json.loads(file.read_text())          # rewritten whole, with the refit
    key = choices.class_key(table.plan, 1, 1, 24, 32, 64)
    assert stored == {"version": choices.VERSION,
                      "choices": {key: cache.tuned(table, (24, 32), (32, 64))}}
    cache.clear()


def test_retune_deletes_the_stored_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("AXSA_CACHE", str(tmp_path))
    cache.clear()
    table = ProductTable.from_multiplier(parse_spec("mitchell@s8"))
    a = torch.ones(24, 32, dtype=torch.int64)
    b = torch.ones(32, 64, dtype=torch.int64)
    approx_matmul(a, b, table)
    assert choices.path().is_file() and cache.FITS[0] == 1
    approx.retune()
    assert not choices.path().exists() and not cache.TUNED
    approx_matmul(a, b, table)
    assert cache.FITS[0] == 1 and choices.path().is_file()   # fitted afresh
    cache.clear()


def test_classes_of_calls():
    plan = ProductTable.from_multiplier(parse_spec("drum(k=4)@s8")).plan
    torch.set_num_threads(2)
    assert choices.class_key(plan, 1, 1, 197, 192, 576) == f"t2|w{choices.octave(plan.width)}" \
        "|u-u:7.7.9"
    assert choices.shape_class(64, 1, 24, 32, 64) == "6-u:4.5.6"
    assert choices.shape_class(3, 3, 197, 64, 197) == "1-1:7.6.7"
    rand = random_table(2**15).plan
    assert choices.rank_class(rand) == "g"
    assert [choices.octave(x) for x in (0, 1, 2, 3, 4, 7, 8)] == [0, 0, 1, 1, 2, 2, 3]


def test_an_unwritable_cache_keeps_the_choices_in_the_process(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("AXSA_CACHE", str(blocker))      # no directory can be made in it
    cache.clear()
    table = ProductTable.from_multiplier(parse_spec("mitchell@s8"))
    rng = np.random.default_rng(8)
    for shape_a, shape_b in (((24, 32), (32, 64)), ((6, 24, 16), (6, 16, 24))):
        a, b = operands(rng, table, shape_a, shape_b)
        got = approx_matmul(torch.from_numpy(a), torch.from_numpy(b), table)
        np.testing.assert_array_equal(got.numpy(), gather_reference(a, b, table.table, 8, 8))
    err = capsys.readouterr().err
    assert err.count("warning: cannot store the engine choices") == 1
    assert "hold for this process only" in err
    cache.clear()

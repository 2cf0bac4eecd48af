"""`axsa mult ...` end to end, as a user runs it (subprocesses, real files)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from axsa.rtl.multipliers import exact_table, parse_spec


def axsa(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "axsa.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=os.environ | {"COLUMNS": "120"})


def test_show_json_metrics_equal_hand_computation_from_table(tmp_path):
    show = axsa("mult", "show", "drum(k=4)@u8", "--json")
    assert show.returncode == 0, show.stderr
    data = json.loads(show.stdout)
    assert set(data) >= {"spec", "mae", "nmed", "mred", "wce", "wcre", "ep", "mse", "bias"}
    out = tmp_path / "t.npy"
    assert axsa("mult", "table", "drum(k=4)@u8", "--out", str(out)).returncode == 0
    t = np.load(out)
    assert t.shape == (256, 256) and t.dtype == np.int64
    a = np.arange(256)
    exact = a[:, None] * a[None, :]
    err = t - exact
    nz = exact != 0
    assert data["mae"] == pytest.approx(np.abs(err).mean())
    assert data["nmed"] == pytest.approx(np.abs(err).mean() / 65025)
    assert data["mred"] == pytest.approx((np.abs(err[nz]) / exact[nz]).mean())
    assert data["wce"] == np.abs(err).max()
    assert data["wcre"] == pytest.approx((np.abs(err[nz]) / exact[nz]).max())
    assert data["ep"] == pytest.approx(np.count_nonzero(err) / err.size)
    assert data["mse"] == pytest.approx((err.astype(float) ** 2).mean())
    assert data["bias"] == pytest.approx(err.mean())
    assert data["spec"] == "drum(k=4)@u8"


def test_table_mode_slices(tmp_path):
    out = tmp_path / "m2.npy"
    r = axsa("mult", "table", "cfgtrunc(k=0/3/6)@s8", "--mode", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(out), parse_spec("trunc(k=6)@s8").model_table())
    r = axsa("mult", "table", "cfgtrunc(k=0/3/6)@s8", "--mode", "3", "--out", str(out))
    assert r.returncode == 2 and "mode 3" in r.stderr


def test_verilog_round_trip(tmp_path):
    v = tmp_path / "m.v"
    r = axsa("mult", "export", "mitchell(t=1)@s8", "--verilog", str(v), "--top", "mymitch")
    assert r.returncode == 0, r.stderr
    r = axsa("mult", "import", str(v), "--top", "mymitch", "--format", "s8", "--y", "p",
             "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["spec"] == "mymitch@s8"
    out = tmp_path / "t.npy"
    r = axsa("mult", "table", "mymitch@s8", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(out), parse_spec("mitchell(t=1)@s8").model_table())


def test_imported_multiplier_is_usable_as_a_spec(tmp_path):
    src = tmp_path / "sq.v"
    # a deliberately approximate user circuit: the product with its lowest bit cleared
    src.write_text("module lsb0(input [3:0] x, input [3:0] y, output [7:0] z);\n"
                   "  wire [7:0] p = x * y;\n  assign z = {p[7:1], 1'b0};\nendmodule\n")
    r = axsa("mult", "import", str(src), "--top", "lsb0", "--format", "u4", "--a", "x",
             "--b", "y", "--y", "z")
    assert r.returncode == 0, r.stderr
    m = parse_spec("lsb0@u4")
    a = np.arange(16)
    assert np.array_equal(m.model_table(), (a[:, None] * a[None, :]) & ~1)
    assert not m.is_exact
    # the Instance-based RTL face synthesizes together with its Verilog source
    from axsa.synth.netlist import product_table
    assert np.array_equal(product_table(m), m.model_table())


@pytest.mark.parametrize("args, needle", [
    (["mult", "show", "nosuch@s8"], "'nosuch'"),
    (["mult", "show", "drum(k=99)@s8"], "k=99"),
    (["mult", "show", "drum(k=4)@s17"], "width 17"),
    (["mult", "show", "drum(k=4)@s0"], "width 0"),
    (["mult", "show", "drum(k=4)"], "missing format"),
    (["mult", "show", "drum(k=4@u8"], "unbalanced"),
    (["mult", "show", "drum(z=4)@u8"], "'z'"),
    (["mult", "table", "exact@s8"], "--out"),
])
def test_bad_input_exits_2_without_traceback(args, needle):
    r = axsa(*args)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_import_reports_yosys_errors(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input [7:0] a, b, output [15:0] y);\n"
                   "  assign y = a * ;\nendmodule\n")
    r = axsa("mult", "import", str(bad), "--top", "bad", "--format", "u8")
    assert r.returncode == 2
    assert "bad.v:2: ERROR" in r.stderr and "Traceback" not in r.stderr
    good = tmp_path / "w.v"
    good.write_text("module w(input [7:0] a, b, output [15:0] y); assign y = a * b; endmodule\n")
    r = axsa("mult", "import", str(good), "--top", "w", "--format", "u4")
    assert r.returncode == 2 and "8 bits wide" in r.stderr


def test_list_and_plot(tmp_path):
    r = axsa("mult", "list", "--json")
    assert r.returncode == 0
    fams = {f["family"]: f for f in json.loads(r.stdout)["families"]}
    assert fams["drum"]["params"][0] == {"name": "k", "min": 1, "max": 16, "default": None,
                                         "list": False, "doc": fams["drum"]["params"][0]["doc"]}
    png = tmp_path / "e.png"
    r = axsa("mult", "show", "roba@s6", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exact_table_helper_is_exact():
    t = exact_table(parse_spec("exact@s8").fmt)
    assert t[128, 128] == 16384 and t[127, 129] == 127 * -127


def test_unwritable_output_path_exits_2_naming_it(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "t.npy"
    r = axsa("mult", "table", "exact@s4", "--out", str(target))
    assert r.returncode == 2
    assert str(target) in r.stderr and "Traceback" not in r.stderr

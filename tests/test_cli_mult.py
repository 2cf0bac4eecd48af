"""`axsa mult ...` end to end, as a user runs it (subprocesses, real files)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from axsa.rtl.multipliers import exact_table, parse_spec


def axsa(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "axsa.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=os.environ | {"COLUMNS": "120"} | (env or {}))


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


# -- hostile files -------------------------------------------------------------------------

LATIN1_V = (b"// Multiplikation mit Abk\xfcrzung, \xa9 J. M\xfcller\n"
            b"module lat(input [3:0] a, input [3:0] b, output [7:0] y);\n"
            b"  assign y = a * b; // \xbd-Addierer\nendmodule\n")


def test_latin1_verilog_imports_and_is_stored_as_utf8(tmp_path):
    src = tmp_path / "lat in.v"
    src.write_bytes(LATIN1_V)
    lib = tmp_path / "lib"
    r = axsa("mult", "import", str(src), "--top", "lat", "--format", "u4", "--json",
             env={"AXSA_LIB": str(lib)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["exact"] is True
    assert (lib / "lat" / "lat.v").read_text(encoding="utf-8") == LATIN1_V.decode("latin-1")
    out = tmp_path / "t.npy"
    r = axsa("mult", "table", "lat@u4", "--out", str(out), env={"AXSA_LIB": str(lib)})
    assert r.returncode == 0, r.stderr
    a = np.arange(16)
    assert np.array_equal(np.load(out), a[:, None] * a[None, :])


def test_combinational_loop_is_refused_naming_its_signals(tmp_path):
    src = tmp_path / "loopy.v"
    src.write_text("module loopy(input [3:0] a, input [3:0] b, output [7:0] y);\n"
                   "  wire [7:0] t;\n"
                   "  assign t = (a * b) ^ {t[6:0], t[7]};\n"
                   "  assign y = t;\nendmodule\n")
    lib = tmp_path / "lib"
    r = axsa("mult", "import", str(src), "--top", "loopy", "--format", "u4",
             env={"AXSA_LIB": str(lib)})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "combinational loop through t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7] " \
           "(line 3 of loopy.v)" in r.stderr
    assert not (lib / "loopy").exists() and not list(lib.iterdir())  # nothing left behind


def test_bitwise_chain_in_one_vector_is_not_a_loop(tmp_path, monkeypatch):
    # c[i] depends on c[i-1]: one vector feeding itself, but no bit depends on itself
    src = tmp_path / "chain.v"
    src.write_text("module chain(input [3:0] a, input [3:0] b, output [7:0] y);\n"
                   "  wire [7:0] c;\n"
                   "  assign c = {c[6:0] & {a, b[3:1]}, b[0]};\n"
                   "  assign y = c ^ (a * b);\nendmodule\n")
    r = axsa("mult", "import", str(src), "--top", "chain", "--format", "u4",
             env={"AXSA_LIB": str(tmp_path / "lib")})
    assert r.returncode == 0, r.stderr
    monkeypatch.setenv("AXSA_LIB", str(tmp_path / "lib"))
    m = parse_spec("chain@u4")
    a, b = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    c = np.zeros_like(a)
    c |= b & 1
    for i in range(1, 8):
        term = ((a << 3) | (b >> 1)) >> (i - 1) & 1
        c |= ((c >> (i - 1)) & 1 & term) << i
    assert np.array_equal(m.model_table(), c ^ (a * b))


def test_force_reimport_of_the_library_copy_and_failed_force_keeps_the_entry(tmp_path):
    src = tmp_path / "lat.v"
    src.write_bytes(LATIN1_V)
    lib = tmp_path / "lib"
    env = {"AXSA_LIB": str(lib)}
    assert axsa("mult", "import", str(src), "--top", "lat", "--format", "u4",
                env=env).returncode == 0
    before = json.loads((lib / "lat" / "entry.json").read_text())
    r = axsa("mult", "import", str(lib / "lat" / "lat.v"), "--top", "lat", "--format", "u4",
             "--force", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((lib / "lat" / "entry.json").read_text()) == before  # origin kept
    # a --force import that fails leaves the old entry as it was
    bad = tmp_path / "broken.v"
    bad.write_text("module lat(input [3:0] a, b, output [7:0] y); assign y = ; endmodule\n")
    r = axsa("mult", "import", str(bad), "--top", "lat", "--format", "u4", "--force", env=env)
    assert r.returncode == 2 and "broken.v" in r.stderr
    assert json.loads((lib / "lat" / "entry.json").read_text()) == before
    assert sorted(p.name for p in lib.iterdir()) == ["lat"]
    assert axsa("mult", "show", "lat@u4", env=env).returncode == 0


def test_export_refuses_a_bad_module_name(tmp_path):
    out = tmp_path / "m.v"
    r = axsa("mult", "export", "exact@u4", "--verilog", str(out), "--top", "1bad name")
    assert r.returncode == 2
    assert "--top '1bad name' is not a Verilog module name" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_import_of_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "m.v"
    os.mkfifo(fifo)
    r = axsa("mult", "import", str(fifo), "--top", "m", "--format", "u4",
             env={"AXSA_LIB": str(tmp_path / "lib")})
    assert r.returncode == 2 and f"{fifo}' is not a regular file" in r.stderr

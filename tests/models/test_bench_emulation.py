"""`scripts/bench_emulation.py` as a user runs it: rows, targets and filters at several
thread counts (no timing assertions: the machine is shared; only the shape of the report
is checked)."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_emulation.py"


def bench(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, env=os.environ)


def test_filtered_json_rows_carry_ratios_targets_and_verdicts():
    run = bench("--shapes", "ts.head", "--only", "exact@s8;mitchell@s8;random@s8",
                "--rounds", "1", "--min-time", "0.001", "--threads", "1,2", "--no-forward",
                "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert len(report["load_before"]) == len(report["load_after"]) == 3
    rows = report["rows"]
    assert {r["shape"] for r in rows} == {"ts.head 64x32@32x1"}
    assert [(r["table"], r["threads"]) for r in rows] == [
        ("exact@s8", 1), ("mitchell@s8", 1), ("random@s8", 1),
        ("exact@s8", 2), ("mitchell@s8", 2), ("random@s8", 2)]
    ranks = {r["table"]: r["error_rank"] for r in rows}
    assert ranks == {"exact@s8": 0, "mitchell@s8": 63, "random@s8": 256}
    for r in rows:
        assert r["ratio"] == r["approx_ms"] / r["exact_ms"] > 0
        assert r["lut_speedup"] == r["lut_ms"] / r["approx_ms"] > 0
        assert r["target"] == (3.0 if r["error_rank"] <= 8 else 10.0)
        assert r["met"] == (r["ratio"] <= r["target"] and r["lut_speedup"] > 1)
        assert r["engine"] in ("lowrank", "terms", "bag", "gather", "native", "native-gather")


def test_bad_thread_counts_are_a_clear_error():
    run = bench("--threads", "0,x", "--no-forward")
    assert run.returncode == 2
    assert "--threads '0,x': expected counts like 1,2" in run.stderr
    assert "Traceback" not in run.stderr


def test_unknown_shape_filter_is_a_clear_error():
    run = bench("--shapes", "no-such-shape", "--no-forward")
    assert run.returncode == 2
    assert "--shapes 'no-such-shape' matches no shape" in run.stderr
    assert "Traceback" not in run.stderr

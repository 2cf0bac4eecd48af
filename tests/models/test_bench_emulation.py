"""`scripts/bench_emulation.py` as a user runs it: rows, targets and filters (no timing
assertions: the machine is shared; only the shape of the report is checked)."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_emulation.py"


def bench(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, env=os.environ)


def test_filtered_json_rows_carry_ratio_target_and_verdict():
    run = bench("--shapes", "ts.head", "--only", "exact@s8;trunc(k=4)@s8;mitchell@s8",
                "--rounds", "1", "--min-time", "0.001", "--no-gather", "--no-forward",
                "--json")
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    tables = [r for r in rows if "error_rank" in r]
    assert {r["shape"] for r in rows} == {"ts.head 64x32@32x1"}
    assert [r["table"] for r in tables] == ["exact@s8", "trunc(k=4)@s8", "mitchell@s8"]
    ranks = {r["table"]: r["error_rank"] for r in tables}
    assert ranks["exact@s8"] == 0 and ranks["mitchell@s8"] == 63
    for r in tables:
        assert r["ratio"] == r["approx_ms"] / r["exact_ms"] > 0
        assert r["target"] == (3.0 if r["error_rank"] <= 8 else 30.0)
        assert r["met"] == (r["ratio"] <= r["target"])


def test_unknown_shape_filter_is_a_clear_error():
    run = bench("--shapes", "no-such-shape", "--no-forward")
    assert run.returncode == 2
    assert "--shapes 'no-such-shape' matches no shape" in run.stderr
    assert "Traceback" not in run.stderr

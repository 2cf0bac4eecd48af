"""`axsa search` end to end on the built-in ts model, as a user runs it (subprocesses, a
real SQLite store, the real cost model), with a small candidate set and budget."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from proctools import descendants, wait_gone

CANDS = "trunc(k=8)@s8,cfgtrunc@s8#3"
KEYS = {"method", "budget", "evaluations", "seed", "hypervolume", "reference_point",
        "pareto", "chosen", "computed", "files"}


def axsa(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "axsa.cli", *args], capture_output=True,
                          text=True, env=os.environ | (env or {}), **kw)


def _search(db, out, *extra):
    return axsa("search", "--model", "ts", "--candidates", CANDS, "--db", str(db),
                "--out", str(out), "--json", *extra)


def _evals(db) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {k for (k,) in con.execute(
            "SELECT key_hash FROM results WHERE kind = 'search-eval'")}
    finally:
        con.close()


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """One search of budget 8 into a store; its costs and evaluations are reused."""
    d = tmp_path_factory.mktemp("search")
    run = _search(d / "r.sqlite", d / "out", "--budget", "8")
    assert run.returncode == 0, run.stderr
    return d, json.loads(run.stdout)


def test_search_json_files_and_chosen_assignment(warm, tmp_path):
    d, data = warm
    assert KEYS <= set(data)
    assert data["method"] == "mcts" and data["budget"] == 8 and data["evaluations"] == 8
    assert data["reference_point"] == [0.02, 1.0]
    assert "Traceback" not in json.dumps(data)
    for p in data["pareto"]:
        assert set(p["assignment"]) == set(data["pareto"][0]["assignment"])  # every GEMM
        assert {"delta", "energy_ratio", "pe_energy_ratio", "metric"} <= set(p)
        assert set(p["metric"]) == {"val", "test", "test_delta"}
    ratios = [p["energy_ratio"] for p in data["pareto"]]
    assert ratios == sorted(ratios, reverse=True)          # a front: less loss, more energy
    for name in ("front.json", "front.csv", "front.png", "assignment.json"):
        assert (d / "out" / name).stat().st_size > 0
    chosen = data["chosen"]
    assert chosen is not None and chosen["delta"] <= 0.02 and chosen["energy_ratio"] < 1
    # The assignment file is what `axsa eval --assign` takes, and eval measures on the
    # test split exactly the figure the search reported for it.
    ev = axsa("eval", "--model", "ts", "--assign", str(d / "out" / "assignment.json"),
              "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["approx"]["rmse"] == chosen["metric"]["test"]["rmse"]


def test_a_repeated_search_is_answered_from_the_store(warm, tmp_path):
    d, data = warm
    db = tmp_path / "r.sqlite"
    shutil.copy(d / "r.sqlite", db)
    again = _search(db, tmp_path / "out", "--budget", "8")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["computed"] == 0
    assert second["pareto"] == data["pareto"] and second["hypervolume"] == data["hypervolume"]


def test_a_killed_search_resumes_without_reevaluating(warm, tmp_path):
    d, _ = warm
    db = tmp_path / "r.sqlite"
    shutil.copy(d / "r.sqlite", db)          # warm costs; 8 evaluations of budget 20 known
    before = _evals(db)
    proc = subprocess.Popen([sys.executable, "-m", "axsa.cli", "search", "--model", "ts",
                             "--candidates", CANDS, "--db", str(db), "--out",
                             str(tmp_path / "o1"), "--budget", "20"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):                     # until it has recorded something new
        if proc.poll() is not None or len(_evals(db)) >= len(before) + 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    mid = _evals(db)
    assert len(mid) > len(before)
    rerun = _search(db, tmp_path / "o2", "--budget", "20")
    assert rerun.returncode == 0, rerun.stderr
    data = json.loads(rerun.stdout)
    after = _evals(db)
    # nothing evaluated twice: the rerun computed exactly what was missing
    assert data["computed"] == len(after) - len(mid)
    # and the result is that of one uninterrupted run
    fresh_db = tmp_path / "fresh.sqlite"
    shutil.copy(d / "r.sqlite", fresh_db)
    fresh = json.loads(_search(fresh_db, tmp_path / "o3", "--budget", "20").stdout)
    assert fresh["pareto"] == data["pareto"] and _evals(fresh_db) == after


@pytest.mark.slow
def test_finetune_top_writes_a_checkpoint_eval_agrees_with(warm, tmp_path):
    d, _ = warm
    db = tmp_path / "r.sqlite"
    shutil.copy(d / "r.sqlite", db)
    run = _search(db, tmp_path / "out", "--budget", "8", "--finetune-top", "1")
    assert run.returncode == 0, run.stderr
    tuned = [p for p in json.loads(run.stdout)["pareto"] if "finetuned" in p]
    assert len(tuned) == 1
    ft = tuned[0]["finetuned"]
    assign = tmp_path / "a.json"
    assign.write_text(json.dumps(tuned[0]["assignment"]))
    # the fine-tuned checkpoint, evaluated by `axsa eval` with the same assignment,
    # measures exactly what the search reported for it
    ev = axsa("eval", "--ckpt", ft["checkpoint"], "--assign", str(assign), "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["approx"]["rmse"] == ft["test"]["rmse"]


def test_a_killed_parallel_search_leaves_no_worker(warm, tmp_path):
    d, _ = warm
    db = tmp_path / "r.sqlite"
    shutil.copy(d / "r.sqlite", db)
    before = _evals(db)
    proc = subprocess.Popen([sys.executable, "-m", "axsa.cli", "search", "--model", "ts",
                             "--candidates", CANDS, "--db", str(db), "--out",
                             str(tmp_path / "o"), "--budget", "40", "-j", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    seen: set[int] = set()
    try:
        for _ in range(1200):            # until its two workers have recorded something
            assert proc.poll() is None, "the search ended before it could be killed"
            seen |= descendants(proc.pid)
            if len(seen) >= 2 and len(_evals(db)) > len(before):
                break
            time.sleep(0.1)
        seen |= descendants(proc.pid)
        assert len(seen) >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        survivors = wait_gone(seen)
        assert not survivors, f"workers outlived the killed search: {sorted(survivors)}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # clean up after a failure
        except ProcessLookupError:
            pass


def _same_as_serial(warm, tmp_path, budget: str, *extra) -> None:
    """A search with `extra` options gives the front of a serial one, from equal stores."""
    d, _ = warm
    runs = []
    for name, opts in (("par", extra), ("serial", ())):
        db = tmp_path / f"{name}.sqlite"
        shutil.copy(d / "r.sqlite", db)
        run = _search(db, tmp_path / name, "--budget", budget, *opts)
        assert run.returncode == 0, run.stderr
        runs.append(json.loads(run.stdout))
    assert runs[0]["computed"] == runs[1]["computed"] > 0
    assert runs[0]["pareto"] == runs[1]["pareto"]


@pytest.mark.slow
def test_two_workers_give_the_same_search(warm, tmp_path):
    _same_as_serial(warm, tmp_path, "12", "-j", "2")


@pytest.mark.slow
def test_search_on_a_real_dask_cluster(warm, tmp_path):
    from dask.distributed import LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        _same_as_serial(warm, tmp_path, "11", "--dask", cluster.scheduler_address)


@pytest.mark.parametrize("args, named", [
    (["--budget", "0"], "budget"),
    (["--accuracy-budget", "1.5"], "1.5"),
    (["--accuracy-budget", "nan"], "nan"),
    (["--candidates", "nope@s8"], "'nope'"),
    (["--candidates", "cfgtrunc@s8#9"], "mode 9"),
    (["--candidates", "drum(k=4)@u8"], "drum(k=4)@u8"),
    (["--finetune-top", "-1"], "-1"),
    (["-j", "0"], "0"),
])
def test_bad_arguments_exit_2_naming_the_value(args, named, tmp_path):
    run = axsa("search", "--model", "ts", "--db", str(tmp_path / "r.sqlite"),
               "--out", str(tmp_path / "out"), *args)
    assert run.returncode == 2, run.stderr
    assert named in run.stderr and "Traceback" not in run.stderr

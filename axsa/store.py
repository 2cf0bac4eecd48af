"""The results store: every synthesis, characterization and evaluation, in one SQLite file.

A record is ``(kind, key) -> result``: `kind` names what was computed (``"synth"``,
``"energy"``, ``"eval"``, ...), `key` is a JSON-able dict saying exactly what it was
computed from (spec, target, options, stream identity, ...) and `result` is a JSON-able
dict. Toolchain versions (`axsa.toolchain.versions()`) are added to every key unless the
caller says otherwise, so a toolchain upgrade never answers from stale results.

The file lives at ``--db PATH``, else ``$AXSA_DB``, else ``.axsa/results.sqlite`` in the
working directory. It runs in WAL mode with a busy timeout, so several processes may read
and write at once; a record is written once (``INSERT OR IGNORE`` on the key hash), which
is what lets an interrupted sweep resume without recording any design twice.

A file that is not an axsa results store (another SQLite database, a text file, a damaged
database, a newer or unreadable schema version, a directory, a FIFO or other special file)
raises `InputError` naming it; it is never modified (and a FIFO is never opened, so it
cannot hang). A record whose stored JSON is damaged is a miss: `get` warns on stderr and
returns None, and the next `put` of that key replaces it.

Locks: while another process holds the write lock, a writer waits quietly for a couple of
seconds, then says on stderr that it is waiting (naming the file) and waits up to
``$AXSA_DB_TIMEOUT`` seconds in all (default `DEFAULT_LOCK_TIMEOUT_S`); then it gives up
with a `ToolError`. Every record written before that is committed and kept.

>>> store = Store(":memory:")
>>> store.get_or_compute("demo", {"x": 1}, lambda: {"y": 2}, versions=False)
{'y': 2}
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

from axsa.errors import InputError, ToolError

#: bumped when the table layout changes; a newer file is refused, never migrated down
SCHEMA_VERSION = 1
#: the `meta` row that marks a file as ours
APPLICATION = "axsa-results"
DEFAULT_PATH = Path(".axsa") / "results.sqlite"
#: seconds a writer waits in all for another process's write lock ($AXSA_DB_TIMEOUT)
DEFAULT_LOCK_TIMEOUT_S = 600.0
#: seconds of that wait spent quietly before saying so on stderr
QUIET_WAIT_S = 2.0
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    key_json TEXT NOT NULL,
    result_json TEXT NOT NULL,
    created REAL NOT NULL,
    seconds REAL
);
CREATE INDEX IF NOT EXISTS results_kind ON results (kind);
"""


def default_path() -> Path:
    """``$AXSA_DB`` if set, else ``.axsa/results.sqlite`` in the working directory."""
    return Path(os.environ.get("AXSA_DB") or DEFAULT_PATH)


def lock_timeout() -> float:
    """Seconds to wait for another process's write lock: ``$AXSA_DB_TIMEOUT`` or the default."""
    raw = os.environ.get("AXSA_DB_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InputError(f"AXSA_DB_TIMEOUT={raw!r} is not a positive number of seconds")
    return value


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)


def canonical_json(data: Any) -> str:
    """Compact JSON with sorted keys: equal dicts give equal text (and equal hashes)."""
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_plain)
    except TypeError as exc:
        raise InputError(f"results-store key or result is not JSON-able: {exc}") from None


def _plain(x):
    # numpy scalars and arrays, Paths: what characterizations naturally produce
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON serializable")


def key_hash(kind: str, key: dict) -> str:
    return hashlib.sha256(f"{kind}\n{canonical_json(key)}".encode()).hexdigest()


class Store:
    """An open results store.

    Parameters
    ----------
    path : str or Path, optional
        Database file; ``None`` uses `default_path()`; ``":memory:"`` keeps it in memory.
    create : bool
        Create the file (and its folder) when missing. When False a missing file is an
        InputError.

    Notes
    -----
    One `Store` holds one connection; make one per process (connections do not survive
    `fork`/pickling, and a `Store` refuses to be pickled).
    """

    def __init__(self, path: str | os.PathLike | None = None, create: bool = True):
        self.path = Path(path) if path is not None else default_path()
        memory = str(path) == ":memory:"
        self.lock_timeout = lock_timeout()
        self._quiet_s = min(QUIET_WAIT_S, self.lock_timeout)
        if not memory:
            self._check_file(create)
        try:
            self._db = sqlite3.connect(":memory:" if memory else str(self.path),
                                       timeout=self._quiet_s,
                                       isolation_level=None, check_same_thread=False)
            self._locked(lambda: self._init_schema(memory))
        except sqlite3.DatabaseError as exc:
            raise InputError(f"results store {str(self.path)!r} is not a usable axsa results "
                             f"database ({exc}); move it away or pass another --db") from None

    # -- the write lock ---------------------------------------------------------------
    def _locked(self, op: Callable[[], Any]) -> Any:
        """``op()``, waiting (and saying so) while another process holds the lock."""
        try:
            return op()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
        rest = self.lock_timeout - self._quiet_s
        _warn(f"waiting for the store lock held by another process: {self.path} (up to "
              f"{rest:g} s more; AXSA_DB_TIMEOUT sets the limit in seconds)")
        self._db.execute(f"PRAGMA busy_timeout = {int(rest * 1000)}")
        try:
            return op()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            raise ToolError(f"gave up after {self.lock_timeout:g} s waiting for the store lock "
                            f"held by another process: {self.path}; every result recorded "
                            "before is kept in it. Run again when that process is done, or "
                            "set AXSA_DB_TIMEOUT=SECONDS to wait longer") from None
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {int(self._quiet_s * 1000)}")

    # -- opening ----------------------------------------------------------------------
    def _check_file(self, create: bool) -> None:
        p = self.path
        try:
            mode = os.stat(p).st_mode  # before any open: a FIFO would block it
        except FileNotFoundError:
            mode = None
        except OSError as exc:
            raise InputError(f"results store {str(p)!r} cannot be examined ({exc.strerror}): "
                             "pass another --db") from None
        if mode is None:
            if not create:
                raise InputError(f"results store {str(p)!r} does not exist")
            p.parent.mkdir(parents=True, exist_ok=True)
            return
        if stat.S_ISDIR(mode):
            raise InputError(f"results store {str(p)!r} is a directory, not a database file")
        if not stat.S_ISREG(mode):
            raise InputError(f"results store {str(p)!r} is not a regular file (a FIFO, device "
                             "or socket): pass a database file with --db or AXSA_DB")
        with open(p, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
        if head and head != _SQLITE_MAGIC:
            raise InputError(f"results store {str(p)!r} is not an SQLite database (foreign "
                             "or corrupt file); it was left untouched: move it away or "
                             "pass another --db")

    def _init_schema(self, memory: bool) -> None:
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise InputError(f"results store {str(self.path)!r} is an SQLite database of "
                             f"another program (tables: {', '.join(sorted(tables))}); it was "
                             "left untouched: pass another --db")
        if tables:
            meta = dict(db.execute("SELECT name, value FROM meta"))
            if meta.get("application") != APPLICATION:
                raise InputError(f"results store {str(self.path)!r} is an SQLite database of "
                                 "another program (no axsa marker); it was left untouched: "
                                 "pass another --db")
            raw = meta.get("schema_version", "0")
            try:
                version = int(raw)
            except (TypeError, ValueError):
                raise InputError(f"results store {str(self.path)!r} is damaged: its schema "
                                 f"version {raw!r} is not an integer; it was left untouched: "
                                 "move it away or pass another --db") from None
            if version > SCHEMA_VERSION:
                raise InputError(f"results store {str(self.path)!r} has schema version {version}, "
                                 f"newer than this axsa ({SCHEMA_VERSION}): upgrade axsa or "
                                 "pass another --db")
            # integrity: a damaged page shows up here rather than in the middle of a sweep
            db.execute("SELECT count(*) FROM results").fetchone()
        if not memory:
            db.execute("PRAGMA journal_mode = WAL")
        if tables and "schema_version" in meta:
            return  # nothing to write: opening needs no write lock
        with self._transaction():
            if not tables:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('application', ?)", (APPLICATION,))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))

    def _transaction(self):
        return _Transaction(self._db)

    def __getstate__(self):
        raise TypeError("a Store holds an SQLite connection: open one per process "
                        "(pass the path, not the Store)")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- records ----------------------------------------------------------------------
    @staticmethod
    def full_key(key: dict, versions: bool = True) -> dict:
        """`key` plus the toolchain versions (unless `versions` is False)."""
        if not isinstance(key, dict):
            raise TypeError(f"results-store key must be a dict, not {type(key).__name__}")
        if versions:
            from axsa.toolchain import versions as toolchain_versions
            key = {**key, "toolchain": toolchain_versions()}
        return key

    def get(self, kind: str, key: dict, versions: bool = True) -> dict | None:
        """The stored result for (kind, key), or None (also when the stored row is damaged:
        a warning says so, and the next `put` replaces it)."""
        h = key_hash(kind, self.full_key(key, versions))
        row = self._query("SELECT result_json FROM results WHERE key_hash = ?", (h,)).fetchone()
        if row is None:
            return None
        result = _decode(row[0])
        if result is None:
            _warn(f"results store {self.path}: the stored {kind!r} result {h[:12]} is damaged "
                  "(not a JSON object); recomputing and replacing it")
        return result

    def put(self, kind: str, key: dict, result: dict, seconds: float | None = None,
            versions: bool = True) -> bool:
        """Record a result; returns False (and keeps the first) if the key is already there.
        A damaged row of the same key is replaced."""
        if not isinstance(result, dict):
            raise TypeError(f"results-store result must be a dict, not {type(result).__name__}")
        full = self.full_key(key, versions)
        h = key_hash(kind, full)
        row = (kind, h, canonical_json(full), canonical_json(result), time.time(), seconds)

        def write() -> bool:
            with self._transaction():
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO results (kind, key_hash, key_json, result_json,"
                    " created, seconds) VALUES (?, ?, ?, ?, ?, ?)", row)
                if cur.rowcount == 1:
                    return True
                (old,) = self._db.execute("SELECT result_json FROM results WHERE key_hash = ?",
                                          (h,)).fetchone()
                if _decode(old) is not None:
                    return False
                self._db.execute("UPDATE results SET kind = ?, key_json = ?, result_json = ?, "
                                 "created = ?, seconds = ? WHERE key_hash = ?",
                                 (*row[:1], *row[2:], h))
                return True

        return self._locked(write)

    def get_or_compute(self, kind: str, key: dict, compute: Callable[[], dict],
                       versions: bool = True) -> dict:
        """The stored result for (kind, key), computing and recording it when missing."""
        found = self.get(kind, key, versions)
        if found is not None:
            return found
        t0 = time.perf_counter()
        result = compute()
        self.put(kind, key, result, seconds=time.perf_counter() - t0, versions=versions)
        # another process may have won the race: answer what is recorded, so every
        # caller sees the same figures
        return self.get(kind, key, versions)

    def records(self, kind: str | None = None) -> Iterator[dict]:
        """Every record (of `kind`), oldest first: dicts with kind, key, result, created."""
        sql = "SELECT kind, key_json, result_json, created, seconds FROM results"
        args: tuple = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            args = (kind,)
        for k, key, res, created, seconds in self._query(sql + " ORDER BY id", args):
            key, res = _decode(key), _decode(res)
            if key is None or res is None:
                _warn(f"results store {self.path}: skipping a damaged {k!r} record (not a "
                      "JSON object); it is recomputed when next asked for")
                continue
            yield {"kind": k, "key": key, "result": res, "created": created,
                   "seconds": seconds}

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return self._query("SELECT count(*) FROM results").fetchone()[0]
        return self._query("SELECT count(*) FROM results WHERE kind = ?", (kind,)).fetchone()[0]

    def _query(self, sql: str, args: tuple = ()):
        try:
            return self._locked(lambda: self._db.execute(sql, args))
        except sqlite3.DatabaseError as exc:
            raise InputError(f"results store {str(self.path)!r} cannot be read ({exc}); it "
                             "may be damaged: move it away or pass another --db") from None


def _decode(text) -> dict | None:
    """A stored JSON object, or None when the row is damaged."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front (waits on busy_timeout)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def open_store(path: str | os.PathLike | None = None) -> Store:
    """`Store(path)`; the CLI's `--db` lands here."""
    return Store(path)

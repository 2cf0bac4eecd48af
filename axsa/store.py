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
database, a newer schema) raises `InputError` naming it; it is never modified.

>>> store = Store(":memory:")
>>> store.get_or_compute("demo", {"x": 1}, lambda: {"y": 2}, versions=False)
{'y': 2}
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

from axsa.errors import InputError

#: bumped when the table layout changes; a newer file is refused, never migrated down
SCHEMA_VERSION = 1
#: the `meta` row that marks a file as ours
APPLICATION = "axsa-results"
DEFAULT_PATH = Path(".axsa") / "results.sqlite"
BUSY_TIMEOUT_MS = 60_000
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
        if not memory:
            self._check_file(create)
        try:
            self._db = sqlite3.connect(":memory:" if memory else str(self.path),
                                       timeout=BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._init_schema(memory)
        except sqlite3.DatabaseError as exc:
            raise InputError(f"results store {str(self.path)!r} is not a usable axsa results "
                             f"database ({exc}); move it away or pass another --db") from None

    # -- opening ----------------------------------------------------------------------
    def _check_file(self, create: bool) -> None:
        p = self.path
        if p.exists():
            if p.is_dir():
                raise InputError(f"results store {str(p)!r} is a directory, not a database file")
            with open(p, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
            if head and head != _SQLITE_MAGIC:
                raise InputError(f"results store {str(p)!r} is not an SQLite database (foreign "
                                 "or corrupt file); it was left untouched: move it away or "
                                 "pass another --db")
        elif not create:
            raise InputError(f"results store {str(p)!r} does not exist")
        else:
            p.parent.mkdir(parents=True, exist_ok=True)

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
            version = int(meta.get("schema_version", "0"))
            if version > SCHEMA_VERSION:
                raise InputError(f"results store {str(self.path)!r} has schema version {version}, "
                                 f"newer than this axsa ({SCHEMA_VERSION}): upgrade axsa or "
                                 "pass another --db")
            # integrity: a damaged page shows up here rather than in the middle of a sweep
            db.execute("SELECT count(*) FROM results").fetchone()
        if not memory:
            db.execute("PRAGMA journal_mode = WAL")
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
        """The stored result for (kind, key), or None."""
        h = key_hash(kind, self.full_key(key, versions))
        row = self._query("SELECT result_json FROM results WHERE key_hash = ?", (h,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, kind: str, key: dict, result: dict, seconds: float | None = None,
            versions: bool = True) -> bool:
        """Record a result; returns False (and keeps the first) if the key is already there."""
        full = self.full_key(key, versions)
        h = key_hash(kind, full)
        with self._transaction():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO results (kind, key_hash, key_json, result_json, created,"
                " seconds) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, h, canonical_json(full), canonical_json(result), time.time(), seconds))
        return cur.rowcount == 1

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
            yield {"kind": k, "key": json.loads(key), "result": json.loads(res),
                   "created": created, "seconds": seconds}

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return self._query("SELECT count(*) FROM results").fetchone()[0]
        return self._query("SELECT count(*) FROM results WHERE kind = ?", (kind,)).fetchone()[0]

    def _query(self, sql: str, args: tuple = ()):
        try:
            return self._db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            raise InputError(f"results store {str(self.path)!r} cannot be read ({exc}); it "
                             "may be damaged: move it away or pass another --db") from None


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

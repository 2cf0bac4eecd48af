"""Damaged state, tool faults and unexpected failures, as a user meets them at the CLI.

The `damage` fixture breaks each kind of state axsa keeps (a user-library entry, a store
row, the store file, a compiled cache entry) the way a crash, a full disk or a stray edit
does. Every test asserts the exit code, that no traceback reaches stderr, and that the
message names the damaged file or the bad value.
"""

import ctypes
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import numpy as np
import pytest
from axsa.rtl.multipliers import parse_spec

from axsa import cli, native
from axsa.errors import ToolError
from axsa.store import Store

#: an exact 4x4-bit multiplier with a Latin-1 comment (as real files have)
MULT_V = (b"// Multiplikation 4x4, \xa9 M\xfcller (Latin-1)\n"
          b"module good(input [3:0] a, input [3:0] b, output [7:0] y);\n"
          b"  assign y = a * b;\nendmodule\n")


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def axsa(*args, env=None, cwd=None, **kw):
    return subprocess.run([sys.executable, "-m", "axsa.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd,
                          env=os.environ | {"COLUMNS": "120"} | (env or {}), **kw)


@pytest.fixture(scope="module")
def entry_template(tmp_path_factory):
    """A sound library entry `good` (u4), imported once from Latin-1 Verilog."""
    from axsa.synth.importer import import_verilog
    root = tmp_path_factory.mktemp("template")
    source = root / "good.v"
    source.write_bytes(MULT_V)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AXSA_LIB", str(root / "lib"))
        import_verilog(source, "good", "u4")
    return root / "lib" / "good"


class Damage:
    """Breaks one piece of state the way crashes and stray edits do."""

    LIBRARY = {
        "json-syntax": ("entry.json", "not valid JSON"),
        "json-list": ("entry.json", "not an object"),
        "json-no-ports": ("entry.json", "'ports'"),
        "json-bad-format": ("entry.json", "'format'"),
        "json-latin1": ("entry.json", "not UTF-8"),
        "json-fifo": ("entry.json", "not a regular file"),
        "table-text": ("table.npy", "not a readable .npy"),
        "table-pickled": ("table.npy", "not a readable .npy"),
        "table-shape": ("table.npy", "shape (16, 8)"),
        "table-dtype": ("table.npy", "dtype float64"),
        "table-range": ("table.npy", "outside 0..255"),
        "table-npz": ("table.npy", ".npz"),
        "table-missing": ("table.npy", "is missing"),
        "source-missing": ("good.v", "is missing"),
    }

    def __init__(self, tmp_path, monkeypatch, template):
        self.tmp = tmp_path
        self.lib = tmp_path / "lib"
        monkeypatch.setenv("AXSA_LIB", str(self.lib))
        self.template = template

    def library_entry(self, case: str, name: str = "bad") -> Path:
        """A copy of the template as entry `name`, damaged; returns the damaged file."""
        folder = self.lib / name
        shutil.copytree(self.template, folder)
        meta = folder / "entry.json"
        entry = json.loads(meta.read_text())
        if name != "good":
            entry["top"] = name
            meta.write_text(json.dumps(entry))
        file, _ = self.LIBRARY[case]
        target = folder / ("good.v" if file == "good.v" else file)
        table = np.load(folder / "table.npy")
        match case:
            case "json-syntax":
                meta.write_text('{"top": "bad", "format": ')
            case "json-list":
                meta.write_text("[1, 2]")
            case "json-no-ports":
                meta.write_text(json.dumps({k: v for k, v in entry.items() if k != "ports"}))
            case "json-bad-format":
                meta.write_text(json.dumps(entry | {"format": "q9"}))
            case "json-latin1":
                text = json.dumps(entry | {"imported_from": "M\xfcller"}, ensure_ascii=False)
                meta.write_bytes(text.encode("latin-1"))
            case "json-fifo":
                meta.unlink()
                os.mkfifo(meta)
            case "table-text":
                target.write_text("not a numpy file\n")
            case "table-pickled":
                np.save(target, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
            case "table-shape":
                np.save(target, table[:, :8])
            case "table-dtype":
                np.save(target, table.astype(np.float64))
            case "table-range":
                np.save(target, table + 1000)
            case "table-npz":
                target.unlink()
                np.savez(folder / "table", table=table)
                (folder / "table.npz").rename(target)
            case "table-missing" | "source-missing":
                target.unlink()
        return target

    def store_row(self, path: Path, kind: str = "synth", text: str = '{"cells": 1') -> int:
        """Replace the stored JSON of every `kind` row with `text`; returns how many."""
        con = sqlite3.connect(path)
        n = con.execute("UPDATE results SET result_json = ? WHERE kind = ?", (text, kind)).rowcount
        con.commit()
        con.close()
        return n

    def store_file(self, case: str) -> Path:
        path = self.tmp / f"store-{case}.sqlite"
        match case:
            case "text":
                path.write_text("my notes\n" * 50)
            case "fifo":
                os.mkfifo(path)
            case "directory":
                path.mkdir()
            case "schema":
                Store(path).close()
                con = sqlite3.connect(path)
                con.execute("UPDATE meta SET value = 'one' WHERE name = 'schema_version'")
                con.commit()
                con.close()
        return path

    @staticmethod
    def compiled(lib: Path, case: str) -> None:
        """Damage a cached shared library (or its manifest) in place."""
        size = lib.stat().st_size
        match case:
            case "truncated":
                os.truncate(lib, size // 3)
            case "empty":
                os.truncate(lib, 0)
            case "zeroed":  # same size, other bytes: only the hash notices
                lib.write_bytes(bytes(size))
            case "no-manifest":
                (lib.parent / native.MANIFEST).unlink()
            case "bad-manifest":
                (lib.parent / native.MANIFEST).write_text("{")
            case "missing":
                lib.unlink()


@pytest.fixture
def damage(tmp_path, monkeypatch, entry_template):
    return Damage(tmp_path, monkeypatch, entry_template)


# -- the user library ----------------------------------------------------------------------

@pytest.mark.parametrize("case", list(Damage.LIBRARY))
def test_damaged_library_entry_is_listed_and_refused_by_name(capsys, damage, case):
    bad = damage.library_entry(case)
    shutil.copytree(damage.template, damage.lib / "good")
    _, needle = Damage.LIBRARY[case]

    code, out, _ = run(capsys, "mult", "list", "--json")
    assert code == 0
    listed = {e["name"]: e for e in json.loads(out)["imported"]}
    assert set(listed) == {"bad", "good"}  # the bad entry hides nothing
    assert listed["good"]["damaged"] is None and listed["good"]["format"] == "u4"
    assert str(bad) in listed["bad"]["damaged"] and needle in listed["bad"]["damaged"]

    code, out, _ = run(capsys, "mult", "list")
    assert code == 0
    assert "good@u4" in out and "bad  DAMAGED" in out and str(bad) in out

    code, _, err = run(capsys, "mult", "show", "bad@u4")
    assert code == 1
    assert str(bad) in err and needle in err and "--force" in err


def test_damaged_entry_in_synth_and_sweep_exits_1_naming_it(capsys, damage, tmp_path):
    bad = damage.library_entry("table-pickled")
    for args in (("synth", "bad@u4"), ("sweep", "--spec", "bad@u4", "--no-plots")):
        code, _, err = run(capsys, *args, "--db", tmp_path / "r.sqlite")
        assert code == 1, args
        assert f"user library entry 'bad' is damaged: {bad}" in err


def test_sound_entry_still_works_beside_a_damaged_one(capsys, damage):
    damage.library_entry("json-syntax")
    shutil.copytree(damage.template, damage.lib / "good")
    m = parse_spec("good@u4")
    a = np.arange(16)
    assert np.array_equal(m.model_table(), a[:, None] * a[None, :])


# -- the results store ---------------------------------------------------------------------

def test_damaged_store_row_is_recomputed_and_replaced(capsys, damage, tmp_path):
    db = tmp_path / "r.sqlite"
    code, out, _ = run(capsys, "synth", "trunc(k=1)@u2", "--db", db, "--json")
    assert code == 0
    first = json.loads(out)
    assert damage.store_row(db) == 1
    code, out, err = run(capsys, "synth", "trunc(k=1)@u2", "--db", db, "--json")
    assert code == 0
    assert f"results store {db}" in err and "damaged" in err and "recomputing" in err
    again = json.loads(out)
    assert again["cells"] == first["cells"] and again["mae"] == first["mae"]
    store = Store(db)
    assert store.count("synth") == 1
    (row,) = [r for r in store.records("synth")]
    assert row["result"]["cells"] == first["cells"]
    # and now it is answered from the store, without a warning
    code, out, err = run(capsys, "synth", "trunc(k=1)@u2", "--db", db, "--json")
    assert code == 0 and "damaged" not in err


@pytest.mark.parametrize("case, needle", [
    ("text", "not an SQLite database"), ("fifo", "not a regular file"),
    ("directory", "is a directory"), ("schema", "schema version 'one' is not an integer")])
def test_damaged_store_file_exits_2_naming_it(capsys, damage, case, needle):
    path = damage.store_file(case)
    code, _, err = run(capsys, "synth", "exact@u2", "--db", path)
    assert code == 2
    assert str(path) in err and needle in err


_HOLDER = textwrap.dedent("""
    import sqlite3, sys
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    con.execute("COMMIT")
""")


def _hold_lock(path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_store_lock_held_too_long_gives_up_keeping_every_result(tmp_path):
    db = tmp_path / "r.sqlite"
    done = axsa("sweep", "--spec", "exact@u2", "--spec", "trunc(k=1)@u2", "--db", db,
                "--no-plots", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    before = Store(db).count("synth")
    assert before == 2
    holder = _hold_lock(db)
    try:
        r = axsa("sweep", "--spec", "exact@u2", "--spec", "trunc(k=1)@u2",
                 "--spec", "trunc(k=2)@u2", "--db", db, "--no-plots", "--out", tmp_path / "out",
                 env={"AXSA_DB_TIMEOUT": "3"})
    finally:
        holder.communicate("\n")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"waiting for the store lock held by another process: {db}" in r.stderr
    assert "gave up after 3 s" in r.stderr and "AXSA_DB_TIMEOUT" in r.stderr
    assert Store(db).count("synth") == before  # the finished results are all there
    again = axsa("sweep", "--spec", "exact@u2", "--spec", "trunc(k=1)@u2",
                 "--spec", "trunc(k=2)@u2", "--db", db, "--no-plots", "--out", tmp_path / "out",
                 "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["cached"] == 2 and Store(db).count("synth") == 3


def test_store_lock_released_while_waiting_lets_synth_finish(tmp_path):
    db = tmp_path / "r.sqlite"
    Store(db).close()
    holder = _hold_lock(db)
    proc = subprocess.Popen([sys.executable, "-m", "axsa.cli", "synth", "exact@u2", "--db",
                             str(db), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ | {"AXSA_DB_TIMEOUT": "600"})
    # release the lock only once the synth says it is waiting for it
    line = proc.stderr.readline()
    assert f"waiting for the store lock held by another process: {db}" in line
    assert "up to 598 s more" in line
    holder.communicate("\n")
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["spec"] == "exact@u2"
    assert Store(db).count("synth") == 1


def test_bad_store_timeout_setting_exits_2_naming_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("AXSA_DB_TIMEOUT", "soon")
    code, _, err = run(capsys, "synth", "exact@u2", "--db", tmp_path / "r.sqlite")
    assert code == 2 and "AXSA_DB_TIMEOUT='soon'" in err


# -- compiled caches -----------------------------------------------------------------------

_ADD_CC = 'extern "C" int axsa_test_add(int a, int b) { return a + b + %d; }\n'


def _build_adder(offset: int = 7):
    cxx = native.cxx("the test library")

    def build(work: Path) -> None:
        (work / "add.cc").write_text(_ADD_CC % offset)
        native.run_compiler([cxx, "-shared", "-fPIC", "add.cc", "-o", "add.so"], work,
                            "the test library")

    key = [_ADD_CC, str(offset), native.cxx_version(cxx)]  # as the real callers do
    return native.build_cached("reliability-test", key, ["-O0"],
                               "add.so", build)


def _add(lib: Path, a: int, b: int) -> int:
    return ctypes.CDLL(str(lib)).axsa_test_add(a, b)


@pytest.mark.parametrize("case", ["truncated", "empty", "zeroed", "no-manifest",
                                  "bad-manifest", "missing"])
def test_damaged_compiled_library_is_rebuilt_and_works(capfd, case):
    offset = 100 + ["truncated", "empty", "zeroed", "no-manifest", "bad-manifest",
                    "missing"].index(case)  # one cache entry per case
    lib, cached = _build_adder(offset)
    assert not cached and _add(lib, 2, 3) == 5 + offset
    assert _build_adder(offset) == (lib, True)
    Damage.compiled(lib, case)
    capfd.readouterr()
    again, cached = _build_adder(offset)
    assert again == lib and not cached
    err = capfd.readouterr().err
    if case != "missing":
        assert f"{lib} is damaged" in err and "rebuilding" in err
    manifest = json.loads((lib.parent / native.MANIFEST).read_text())
    assert manifest["size"] == lib.stat().st_size > 0
    # a fresh process loads and runs it (this one still has the first copy mapped)
    r = subprocess.run([sys.executable, "-c", "import ctypes, sys; print(ctypes.CDLL("
                        "sys.argv[1]).axsa_test_add(40, 2))", str(lib)],
                       capture_output=True, text=True)
    assert r.stdout.strip() == str(42 + offset)
    assert _build_adder(offset) == (lib, True)
    assert not [p for p in lib.parent.parent.iterdir() if p.name.startswith(".")]


def test_truncated_cxxrtl_design_is_rebuilt_and_gives_the_right_result(tmp_path):
    rng = np.random.default_rng(5)
    A, B = rng.integers(-8, 8, (3, 4)), rng.integers(-8, 8, (4, 2))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    cache = tmp_path / "cache"
    args = ("gemm", tmp_path / "A.npy", tmp_path / "B.npy", "--mult", "exact@s4", "--engine",
            "cxxrtl", "--rows", 2, "--cols", 2, "--out", tmp_path / "C.npy", "--json")
    first = axsa(*args, env={"AXSA_CACHE": str(cache)})
    assert first.returncode == 0, first.stderr
    (so,) = cache.glob("cxxrtl/*/design.so")
    for case in ("truncated", "empty"):
        Damage.compiled(so, case)
        (tmp_path / "C.npy").unlink()
        r = axsa(*args, env={"AXSA_CACHE": str(cache)})
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr and f"{so} is damaged" in r.stderr
        assert np.array_equal(np.load(tmp_path / "C.npy"), A @ B)
        assert json.loads(r.stdout)["cycles"] == json.loads(first.stdout)["cycles"]


@pytest.mark.parametrize("compiler, needle", [
    ("/nonexistent/bin/g++", "'/nonexistent/bin/g++' (from $CXX)"),
    ("false", "does not run (`--version` exited 1)")])
def test_no_working_compiler_is_one_message(monkeypatch, tmp_path, compiler, needle):
    monkeypatch.setenv("CXX", compiler)
    native.cxx_version.cache_clear()
    with pytest.raises(ToolError, match="install g\\+\\+ from your OS.*or set CXX"):
        _build_adder(999)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "A.npy", rng.integers(-8, 8, (2, 2)))
    r = axsa("gemm", tmp_path / "A.npy", tmp_path / "A.npy", "--mult", "exact@s4", "--engine",
             "cxxrtl", "--rows", 2, "--cols", 2, env={"CXX": compiler})
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# -- the top-level CLI ---------------------------------------------------------------------

@click.command()
@click.argument("what")
def boom(what):
    """Fails the way an axsa bug would."""
    match what:
        case "bug":
            raise RuntimeError("kaboom\nsecond line")
        case "interrupt":
            raise KeyboardInterrupt
        case "pipe":
            raise BrokenPipeError(32, "Broken pipe")


@pytest.fixture
def boom_command(monkeypatch, tmp_path):
    monkeypatch.setitem(cli.COMMANDS, "boom", f"{__name__}:boom")
    monkeypatch.setenv("AXSA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AXSA_DEBUG", raising=False)
    return tmp_path / "cache" / "last-error.log"


def test_unexpected_exception_is_one_line_and_a_log(capsys, boom_command):
    code, out, err = run(capsys, "boom", "bug")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert lines[0] == "axsa: internal error: RuntimeError: kaboom"
    assert str(boom_command) in lines[1] and "--debug" in lines[1]
    assert len(lines) == 2
    log = boom_command.read_text()
    assert "Traceback" in log and "RuntimeError: kaboom" in log and "def boom" not in log
    assert 'raise RuntimeError("kaboom' in log


def test_debug_shows_the_stack(capsys, boom_command):
    with pytest.raises(RuntimeError, match="kaboom"):
        cli.main(["--debug", "boom", "bug"])


def test_interrupt_and_broken_pipe(capsys, boom_command):
    code, _, err = run(capsys, "boom", "interrupt")
    assert code == 130 and err.strip() == "interrupted"
    code, out, err = run(capsys, "boom", "pipe")
    assert code == 1 and out == "" and err == ""


def test_debug_is_listed_in_help(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "--debug" in out

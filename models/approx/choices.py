"""The engine choices of ``engine="auto"``, fitted once per machine and stored.

A choice is made per *class* of call: the thread count, the table's rank class
(`rank_class`), the operands' shape class (`shape_class`) and whether the caller wants
an int64 or a float result. The first call of a class
on a machine times the plausible engines on its operands (`tuner.fit`) and stores the
winner in ``$AXSA_CACHE/emulation/engines-<machine>.json``; every later call of the class,
in this process or any other, takes the stored engine without timing anything, so the
same call picks the same engine in every process. ``<machine>`` hashes what the timings
depend on: the CPU's model and flags, torch's version, the native kernels' source and
whether they are available.

The file is read once per process and checked where it is read: a damaged file (not
JSON, another layout, an unknown engine) gives one warning on stderr and is refitted,
class by class, never a crash. Writes merge under a lock and replace the file atomically
(a temporary file renamed over it); an entry another process stored first wins, so that
processes agree. ``AXSA_RETUNE=1`` (or `retune`) drops the stored choices and refits.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

import torch

from axsa import native

from .. import _native

#: bump when what a class means changes (its stored choices then no longer apply)
VERSION = 1
#: engines a stored choice may name
STORABLE = ("lowrank", "terms", "bag", "gather", "native", "native-gather")

_LOCK = threading.Lock()
#: the stored choices by class (loaded on first use), None before
_CHOICES: dict[str, str] | None = None
#: the file, once it could not be written (warned once)
_UNWRITABLE: list[Path] = []


def octave(x: int) -> int:
    """The octave of a size: 0 for 0 and 1, 1 for 2..3, 2 for 4..7, ..."""
    return max(0, int(x).bit_length() - 1)


def rank_class(plan) -> str:
    """``g`` for a table without an integer factorization (only the gathers apply), else
    ``w<octave of the digits per code>``: what the low-rank engines' costs grow with."""
    return "g" if plan.int8 is None else f"w{octave(plan.width)}"


def shape_class(ga: int, gb: int, M: int, K: int, N: int) -> str:
    """Octaves of the batch of each operand and of M, K, N (``1`` for an unbatched
    operand, so a shared b and an outer batch stay apart)."""
    return "-".join(str(octave(x)) if x > 1 else "u" for x in (ga, gb)) + \
        f":{octave(M)}.{octave(K)}.{octave(N)}"


def class_key(plan, ga: int, gb: int, M: int, K: int, N: int, floats: bool = False) -> str:
    """The stored choice's key: thread count, rank class, shape class, and ``|f`` for a
    call that wants a float result (the float engines then skip their int64 round trip)."""
    return f"t{torch.get_num_threads()}|{rank_class(plan)}|{shape_class(ga, gb, M, K, N)}" + \
        ("|f" if floats else "")


@functools.cache
def _machine() -> str:
    kernels = _native.SOURCE.read_text() if _native.SOURCE.is_file() else ""
    h = hashlib.sha256("\0".join((native.cpu_id(), torch.__version__, _native.RECIPE,
                                  kernels, str(VERSION))).encode())
    return h.hexdigest()[:16]


def path() -> Path:
    """The stored choices of this machine (and of whether the native kernels are on)."""
    on = "native" if _native.available() else "torch"
    return native.cache_dir("emulation") / f"engines-{_machine()}-{on}.json"


def _read(file: Path, warn: bool = True) -> dict[str, str]:
    """The choices in `file`; {} when there is none; a warning (with `warn`) and {} when
    it is damaged (the caller refits)."""
    try:
        text = file.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if not warn:
            return {}
        print(f"warning: cannot read the stored engine choices {file} ({exc.strerror}); "
              "refitting them", file=sys.stderr)
        return {}
    try:
        data = json.loads(text)
        choices = data["choices"]
        ok = (data.get("version") == VERSION and isinstance(choices, dict) and
              all(isinstance(k, str) and v in STORABLE for k, v in choices.items()))
    except (ValueError, TypeError, KeyError, AttributeError):
        ok = False
    if not ok:
        if not warn:
            return {}
        print(f"warning: the stored engine choices {file} are damaged; refitting them "
              "(the file is rewritten as they are refitted)", file=sys.stderr)
        return {}
    return dict(choices)


def _retune() -> bool:
    return os.environ.get("AXSA_RETUNE", "0") not in ("", "0")


def _loaded() -> dict[str, str]:
    global _CHOICES
    if _CHOICES is None:
        _CHOICES = {} if _retune() else _read(path())
    return _CHOICES


def get(key: str) -> str | None:
    """The stored engine of class `key`, or None (not fitted yet on this machine)."""
    with _LOCK:
        return _loaded().get(key)


@contextlib.contextmanager
def _file_lock(file: Path):
    try:
        import fcntl
    except ImportError:           # no advisory locks here: merges may race, still atomic
        yield
        return
    with open(file.with_name(file.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def store(key: str, engine: str) -> str:
    """Store `engine` for class `key` and return the class's engine: the one another
    process stored first, if any (unless re-tuning), else `engine`. A file that cannot
    be written leaves the choices in this process only (one warning per process)."""
    global _CHOICES
    file = path()
    with _LOCK:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            with _file_lock(file):
                on_disk = _read(file, warn=False)
                if key in on_disk and not _retune():
                    engine = on_disk[key]
                merged = {**on_disk, **_loaded(), key: engine}
                _write(file, merged)
        except OSError as exc:
            if not _UNWRITABLE:
                print(f"warning: cannot store the engine choices in {file} ({exc}); they "
                      "hold for this process only", file=sys.stderr)
                _UNWRITABLE.append(file)
            merged = {**_loaded(), key: engine}
        _CHOICES = merged
    return engine


def _write(file: Path, choices: dict[str, str]) -> None:
    """Replace `file` atomically: a temporary file beside it, renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{file.stem}-", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"version": VERSION, "choices": dict(sorted(choices.items()))}, f,
                      indent=0)
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def forget() -> None:
    """Drop the choices read in this process (read again on next use)."""
    global _CHOICES
    with _LOCK:
        _CHOICES = None


def retune() -> None:
    """Delete this machine's stored choices: every class is refitted on its next call
    (the in-process caches are emptied too, `cache.clear`)."""
    from . import cache
    global _CHOICES
    with _LOCK:
        with contextlib.suppress(FileNotFoundError):
            path().unlink()
        _CHOICES = {}
    cache.clear()

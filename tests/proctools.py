"""Processes seen through /proc, for tests that kill a parent and look for survivors."""

from __future__ import annotations

import time
from pathlib import Path


def parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            out[int(d.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    return out


def descendants(pid: int) -> set[int]:
    """Every process below `pid`."""
    ppids = parents()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in ppids.items() if pp in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    """True while `pid` runs (not ended, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has ended (init reaps it later)


def wait_gone(pids: set[int]) -> set[int]:
    """Wait (at most 120 s) for `pids` to end; the ones still running."""
    deadline = time.monotonic() + 120
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return {p for p in pids if running(p)}

"""Child processes that die with their parent.

A worker pool or a tool process left behind by a killed parent (SIGKILL gives the parent
no chance to clean up) would go on computing for nobody. On Linux the kernel can send
such a child SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere these
are no-ops.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager

__all__ = ["die_with_parent", "sigterm_as_interrupt"]


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None


_PRCTL = _load_prctl()
PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


def die_with_parent() -> None:
    """Have the kernel send SIGKILL to this process when its parent dies: the initializer
    of every worker process, and the ``preexec_fn`` of every tool process (only the
    pre-loaded prctl call runs between fork and exec: no imports, no allocation worth
    mentioning)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)


@contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so a long-running
    command (a sweep, a served simulated board) ends the same way for both: cleaned up,
    ``interrupted``, exit 130."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

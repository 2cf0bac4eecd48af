"""Helpers every sub-command shares: --json output, spec options, numpy file I/O."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from axsa.errors import InputError

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Machine-readable JSON on stdout.")


def emit(data, as_json: bool, human) -> None:
    """Print `data` as JSON, or call `human(data)` for the readable form."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=_jsonable))
    else:
        human(data)


def _jsonable(x):
    import numpy as np
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def parse_spec_arg(text: str):
    """Parse a multiplier spec given on the command line (InputError names the bad part)."""
    from axsa.rtl.multipliers import parse_spec
    return parse_spec(text)


def load_npy(path: str, what: str):
    """Load a .npy file; a missing or unreadable file is an InputError naming it."""
    import numpy as np
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} file {path!r} does not exist")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:  # numpy raises several kinds for a bad file
        raise InputError(f"{what} file {path!r} is not a readable .npy array: {exc}") from None


def progress_bar(transient: bool = False):
    """A rich progress bar on stderr (counts, elapsed and remaining time) for long work.

    Off when stderr is not a terminal (CI, a log file): callers print a plain counter line
    now and then instead (`bar.console.is_terminal` tells which).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    console = Console(file=sys.stderr)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    transient=transient, disable=not console.is_terminal)

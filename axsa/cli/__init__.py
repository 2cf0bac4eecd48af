"""The `axsa` command. Sub-command groups live one per module and load lazily, so that
commands which need no torch (or no Amaranth) start fast.

Conventions (../shared/DESIGN.md): every command prints human-readable output and takes
`--json`; exit 0 on success, 2 on bad input (InputError, click usage errors), 1 on a tool or
internal failure; progress on stderr. No traceback reaches the user: a known failure
(InputError, ToolError and its StateError, click usage errors) is one message; Ctrl-C is
``interrupted``, exit 130; a closed stdout pipe ends quietly (exit 1); anything else is
one line ``axsa: internal error: TYPE: MESSAGE``, exit 1, with the stack written to
`error_log_path()` (``$AXSA_CACHE/last-error.log``). ``axsa --debug ...`` (or
``AXSA_DEBUG=1``) lets every exception propagate with its stack instead.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path

import click

from axsa import __version__
from axsa.errors import InputError, ToolError

#: command name -> "module:attribute" of its click command or group
COMMANDS = {
    "mult": "axsa.cli.mult:mult",
    "synth": "axsa.cli.synth:synth",
    "sweep": "axsa.cli.synth:sweep",
    "gemm": "axsa.cli.gemm:gemm",
    "train": "axsa.cli.model:train",
    "eval": "axsa.cli.model:eval_",
    "finetune": "axsa.cli.model:finetune",
    "search": "axsa.cli.search:search",
    "sim": "axsa.cli.sim:sim",
    "build": "axsa.cli.build:build",
    "run": "axsa.cli.board:run",
    "board-sim": "axsa.cli.board:board_sim",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._load(name, quiet=True) is not None]

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name, quiet=False):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            if quiet:
                return None  # a part not built yet does not break `axsa --help`
            raise


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="axsa")
@click.option("--debug", is_flag=True,
              help="Show the full Python stack of an internal error (and of every error).")
def cli(debug):
    """axsa: approximate systolic arrays, from multiplier to bitstream."""


def error_log_path() -> Path:
    """Where the traceback of the last internal error is written."""
    from axsa.native import cache_dir
    return cache_dir("last-error.log")


def main(argv=None) -> int:
    """Run the command; known failures become one message and an exit code (module doc)."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = _debug_requested(args)
    try:
        cli.main(args=args, prog_name="axsa", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            if debug:
                raise exc.__cause__ from None
            click.echo("interrupted", err=True)
            return 130
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:  # usage errors: exit 2
        exc.show()
        return exc.exit_code
    except InputError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        return 2
    except ToolError as exc:  # StateError too: a damaged file of axsa's own state
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        if debug:
            raise
        click.echo("interrupted", err=True)
        return 130
    except SystemExit as exc:
        # click's own exit: a closed stdout pipe (`axsa ... | head`), which it has already
        # silenced, exits 1 quietly
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except OSError as exc:
        if exc.filename is None or debug:
            return _internal_error(exc, debug)
        # a path the user gave cannot be read or written (missing folder, permissions)
        click.echo(f"error: {exc.filename}: {exc.strerror}", err=True)
        return 2
    except Exception as exc:
        return _internal_error(exc, debug)
    return 0


def _debug_requested(args: list[str]) -> bool:
    """`--debug` among the options before the sub-command (or AXSA_DEBUG=1)."""
    if os.environ.get("AXSA_DEBUG", "") not in ("", "0"):
        return True
    for a in args:
        if a == "--debug":
            return True
        if not a.startswith("-"):
            return False
    return False


def _internal_error(exc: BaseException, debug: bool) -> int:
    """One line for a failure axsa did not foresee; the stack goes to the error log."""
    if debug:
        raise exc
    text = "".join(traceback.format_exception(exc))
    where = error_log_path()
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(f"axsa {__version__}: {' '.join(sys.argv)}\n{text}")
        saved = f"the stack is in {where}; "
    except OSError:
        saved = ""
    message = str(exc).strip().splitlines()
    click.echo(f"axsa: internal error: {type(exc).__name__}: "
               f"{message[0] if message else '(no message)'}", err=True)
    click.echo(f"({saved}`axsa --debug ...` shows it here; please report it)", err=True)
    return 1



if __name__ == "__main__":
    sys.exit(main())

"""The `axsa` command. Sub-command groups live one per module and load lazily, so that
commands which need no torch (or no Amaranth) start fast.

Conventions (../shared/DESIGN.md): every command prints human-readable output and takes
`--json`; exit 0 on success, 2 on bad input (InputError, click usage errors), 1 on a tool or
internal failure; no traceback for bad input; progress on stderr.
"""

from __future__ import annotations

import importlib
import sys

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
def cli():
    """axsa: approximate systolic arrays, from multiplier to bitstream."""


def main(argv=None) -> int:
    try:
        cli.main(args=argv, prog_name="axsa", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:  # usage errors: exit 2
        exc.show()
        return exc.exit_code
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except ToolError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except OSError as exc:
        if exc.filename is None:
            raise
        # a path the user gave cannot be read or written (missing folder, permissions)
        click.echo(f"error: {exc.filename}: {exc.strerror}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

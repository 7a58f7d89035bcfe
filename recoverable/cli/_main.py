"""The `recoverable` command: its group of commands, and `main`, which runs it and turns errors into exit statuses.

Exit statuses: 0 when the command did what it was asked; 1 when it could not (one line on stderr,
`recoverable <command>: error: ...`: every error of the library and of the operating system ends so, never
with a traceback); 2 for wrong usage (an unknown option, a missing argument, a value of the wrong kind); 130
after Ctrl-C; 141 when the reader of the output went away (`| head`).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn

import click

from recoverable._version import VERSION
from recoverable.cli._history import diff, history, rollback
from recoverable.cli._options import storage_options
from recoverable.cli._output import describe_error, print_error
from recoverable.cli._records import delete, get, keys, set_, stores
from recoverable.cli._serve import serve
from recoverable.cli._state import lease, reset
from recoverable.cli._transfer import copy, export, import_
from recoverable.errors import RecoverableError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["cli", "main"]

_INTERRUPTED = 130
_BROKEN_PIPE = 141


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.version_option(VERSION, "--version", prog_name="recoverable", message="%(prog)s %(version)s")
@storage_options()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Look into and change the stores of recoverable states, move them between storages, and serve them.

    STORE is `default`, a store name or a store id. The storage options may be given here or after the
    command, alike; what they do not say comes from the RECOVERABLE_* environment variables.
    """
    if ctx.invoked_subcommand is None:
        raise click.UsageError("a command is required", ctx=ctx)


for _command in (stores, keys, get, set_, delete, export, import_, copy, reset, lease, history, diff, rollback, serve):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `recoverable` command with `argv` (the process's arguments when None); return its exit status.

    Wrong usage, `--help` and `--version` end with `SystemExit` (status 2, 0 and 0), as click ends them.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        with cli.make_context("recoverable", args) as ctx:
            return _invoke(ctx)
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.UsageError as exc:
        _usage_error(exc, "recoverable")
    except BrokenPipeError:  # `--help` or `--version` into a reader that went away
        return _reader_gone()


def _reader_gone() -> int:
    """The reader of the output went away: no message (nobody reads it), no error at exit either; status 141."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return _BROKEN_PIPE


def _usage_error(exc: click.UsageError, command: str) -> NoReturn:
    """Print a usage error on one line, pointing at the help, and end with its status (2)."""
    where = exc.ctx.command_path if exc.ctx is not None else command
    print_error(where, f"{exc.format_message()} (see '{where} --help')")
    raise SystemExit(exc.exit_code) from None


def _invoke(ctx: click.Context) -> int:
    """Run the command of `ctx`; its failures become one line on stderr and the exit status."""
    try:
        status = cli.invoke(ctx)
    except click.UsageError as exc:
        _usage_error(exc, f"recoverable {ctx.invoked_subcommand}")
    except click.exceptions.Exit:
        raise
    except click.ClickException as exc:
        message, status = exc.format_message(), exc.exit_code
    except click.Abort:  # Ctrl-C (or the end of stdin) at a question
        message, status = "aborted: nothing more was done", _INTERRUPTED
    except BrokenPipeError:
        return _reader_gone()
    except (RecoverableError, OSError) as exc:
        message, status = describe_error(exc), 1
    except KeyboardInterrupt:
        return _INTERRUPTED
    else:
        return status if isinstance(status, int) else 0
    print_error(f"recoverable {ctx.invoked_subcommand}", message)
    return status

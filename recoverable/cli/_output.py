"""What the commands print: rich consoles on stdout and stderr, JSON for scripts, and the one line of an error."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import click
from rich.console import Console

from recoverable.errors import RecoverableError

__all__ = [
    "CommandError",
    "counted",
    "describe_error",
    "print_error",
    "print_json",
    "printable",
    "stderr_console",
    "stdout_console",
]

_PIPED_WIDTH = 4096
"""The width rich lays lines out in when the output is not a terminal: wide enough that no key is folded."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LINE_BREAK = re.compile(r"[ \t]*[\r\n]+[ \t]*")


class CommandError(click.ClickException):
    """A command could not do what it was asked: `main` prints `recoverable <command>: error: <message>`, exit 1."""

    exit_code = 1


def stdout_console() -> Console:
    """A rich console on stdout: colours on a terminal; piped, no colours and no line folded."""
    return _console(sys.stdout)


def stderr_console() -> Console:
    """A rich console on stderr, where progress bars are drawn (on a terminal only)."""
    return _console(sys.stderr)


class _Console(Console):
    """A rich console whose broken pipe is the command's to handle (`main` ends with 141), not rich's (1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def _console(file: Any) -> Console:
    terminal = file.isatty()
    return _Console(file=file, highlight=False, width=None if terminal else _PIPED_WIDTH, soft_wrap=not terminal)


def counted(number: int, thing: str) -> str:
    """`1 key`, `2 keys`: a number and what it counts, in the plural when it is not one."""
    return f"{number:,} {thing}{'' if number == 1 else 's'}"


def print_json(data: object) -> None:
    """Print `data` as JSON on stdout, for scripts: indented, UTF-8, one document."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def printable(text: str, *, newlines: bool = False) -> str:
    r"""`text` as it can be shown on a terminal: control characters written as `\xNN` (newlines kept if asked).

    Keys and values are data: one holding an escape sequence must not move the cursor or change colours.
    """
    pattern = _CONTROL if newlines else _CONTROL_OR_NEWLINE
    return pattern.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def describe_error(exc: BaseException) -> str:
    """The message of an error, on one line: the library's own, or what the operating system said and about what."""
    if isinstance(exc, OSError) and not isinstance(exc, RecoverableError) and exc.strerror:
        names = [name for name in (exc.filename, exc.filename2) if name is not None]
        message = exc.strerror + "".join(f": {name}" for name in names)
    else:
        message = str(exc) or type(exc).__name__
    return _one_line(message)


def _one_line(message: str) -> str:
    return _LINE_BREAK.sub(" ", message).strip()


def print_error(command: str, message: str) -> None:
    """Print `<command>: error: <message>` on stderr, on one line."""
    click.echo(f"{command}: error: {printable(_one_line(message))}", err=True)

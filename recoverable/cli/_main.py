"""Parsing the command line of `recoverable` and dispatching to its subcommands."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING

from recoverable.storages._registry import BACKENDS

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

DEFAULT_PORT = 8321
_SIZE = re.compile(r"(?i)\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _size(text: str) -> int:
    match = _SIZE.fullmatch(text)
    if match is None or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: use bytes, or a number with KiB, MiB or GiB")
    return int(match.group(1)) * _UNITS[match.group(2)[:1].lower()]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recoverable", description="Tools of the recoverable library.", allow_abbrev=False
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a storage over the Apify key-value store API v2",
        description=(
            "Serve the key-value stores of a storage client over HTTP, speaking the Apify platform's key-value "
            "store API v2, so that HttpStorageClient and apify-client on other machines can use them. "
            "Binds 127.0.0.1 unless told otherwise; any other address needs a token. SIGTERM or Ctrl-C stops "
            "it gracefully: requests in flight finish, then the process exits with status 0."
        ),
        allow_abbrev=False,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to bind, 0 for any (default: %(default)s)")
    serve.add_argument(
        "--storage-client",
        choices=[backend.name for backend in BACKENDS if backend.served],
        default="file_system",
        help="where the stores live (default: %(default)s)",
    )
    serve.add_argument(
        "--redis-url",
        help="server of the redis storage client (default: RECOVERABLE_REDIS_URL)",
    )
    serve.add_argument(
        "--sql-url",
        help="database of the sql storage client, e.g. sqlite+aiosqlite:///state.db (default: RECOVERABLE_SQL_URL)",
    )
    serve.add_argument(
        "--storage-dir",
        help="root folder of the file_system storage client (default: RECOVERABLE_STORAGE_DIR or ./storage)",
    )
    serve.add_argument(
        "--token",
        help=(
            "bearer token every request must carry (default: RECOVERABLE_HTTP_TOKEN). Prefer the variable: "
            "a command-line argument is visible to other users of the machine"
        ),
    )
    serve.add_argument(
        "--max-body-size",
        type=_size,
        default=None,
        help="largest record accepted, e.g. 9MiB (default: 64MiB)",
    )
    serve.add_argument(
        "--max-bytes-in-flight",
        type=_size,
        default=None,
        help="most bytes of request bodies held at once, across all requests; a body that does not fit is "
        "answered 503 with Retry-After (default: 4 times --max-body-size)",
    )
    serve.add_argument(
        "--max-key-length", type=int, default=None, help="longest record key accepted, at most 1024 (default: 1024)"
    )
    serve.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=10.0,
        help="seconds a connection has to send a request's line and headers, or it gets 408 and is closed "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--body-timeout",
        type=_positive_float,
        default=30.0,
        help="longest pause, in seconds, within a request body; a body taking longer than this must also "
        "average 64 KiB/s, or it gets 408 (default: %(default)s)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=_positive_float,
        default=30.0,
        help="seconds to wait for requests in flight when stopping, before cancelling them (default: %(default)s); "
        "writes already started always finish",
    )
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        default="info",
        help="(default: %(default)s)",
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `recoverable` command with `argv` (the process's arguments when None); return its exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from recoverable.cli._serve import serve  # noqa: PLC0415 - the server's dependencies are optional

        return serve(args)
    return 2  # pragma: no cover - argparse refuses unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

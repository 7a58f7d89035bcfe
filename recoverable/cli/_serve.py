"""`recoverable serve`: a storage client served over the key-value store API v2 by uvicorn."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from typing import TYPE_CHECKING, Any

import click

from recoverable.cli._options import (
    backend_names,
    check_backend,
    open_storage,
    storage_configuration,
    storage_options,
)
from recoverable.cli._output import print_error
from recoverable.errors import ConfigurationError, MissingDependencyError

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from recoverable.configuration import Configuration
    from recoverable.server._uvicorn import ForegroundServer
    from recoverable.storages import StorageClient

__all__ = ["DEFAULT_PORT", "is_loopback", "serve"]

logger = logging.getLogger("recoverable.server")

DEFAULT_PORT = 8321
_SIZE = re.compile(r"(?i)\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A number of bytes: `65536`, `64KiB`, `9MiB`, `1GiB` (K, KB and KiB all mean 1024)."""
    del ctx, param
    if value is None:
        return None
    match = _SIZE.fullmatch(value)
    if match is None or int(match.group(1)) < 1:
        raise click.BadParameter(f"{value!r} is not a size: use bytes, or a number with KiB, MiB or GiB")
    return int(match.group(1)) * _UNITS[match.group(2)[:1].lower()]


def _positive(ctx: click.Context, param: click.Parameter, value: str | float) -> float:
    """A number of seconds greater than 0."""
    del ctx, param
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number < float("inf"):
        raise click.BadParameter(f"{value!r} is not a positive number")
    return number


def is_loopback(host: str) -> bool:
    """Tell whether binding `host` keeps the server reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _ServeError(Exception):
    """Why the server cannot start, and the exit status to end with."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="port to bind, 0 for any"
)
@storage_options(served_only=True)
@click.option(
    "--max-body-size", callback=_size, metavar="SIZE", help="largest record accepted, e.g. 9MiB [default: 64MiB]"
)
@click.option(
    "--max-bytes-in-flight",
    callback=_size,
    metavar="SIZE",
    help="most bytes of request bodies held at once, across all requests; a body that does not fit is answered "
    "503 with Retry-After [default: 4 times --max-body-size]",
)
@click.option("--max-key-length", type=int, help="longest record key accepted, at most 1024 [default: 1024]")
@click.option(
    "--header-timeout",
    callback=_positive,
    metavar="SECONDS",
    default=10.0,
    show_default=True,
    help="seconds a connection has to send a request's line and headers, or it gets 408 and is closed",
)
@click.option(
    "--body-timeout",
    callback=_positive,
    metavar="SECONDS",
    default=30.0,
    show_default=True,
    help="longest pause, in seconds, within a request body; a body taking longer than this must also average "
    "64 KiB/s, or it gets 408",
)
@click.option(
    "--graceful-timeout",
    callback=_positive,
    metavar="SECONDS",
    default=30.0,
    show_default=True,
    help="seconds to wait for requests in flight when stopping, before cancelling them; writes already started "
    "always finish",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option("--access-log", is_flag=True, help="log every request")
@click.pass_context
def serve(ctx: click.Context, /, **options: Any) -> int:
    """Serve the stores of a storage client over the Apify platform's key-value store API v2.

    HttpStorageClient and apify-client on other machines can then use them. Binds 127.0.0.1 unless told
    otherwise; any other address needs a token. SIGTERM or Ctrl-C stops it gracefully: requests in flight
    finish, then the process exits with status 0. A setting that keeps it from starting exits with status 2,
    an address that cannot be bound with 1.
    """
    try:
        server, sock, storage_client = _prepare(ctx, options)
    except _ServeError as exc:
        print_error("recoverable serve", str(exc))
        return exc.status
    asyncio.run(_run(server, sock, storage_client))
    if not server.started:
        print_error("recoverable serve", "the server did not start; see the log above")
        return 1
    logger.info("stopped gracefully")
    return 0


def _prepare(ctx: click.Context, options: dict[str, Any]) -> tuple[ForegroundServer, socket.socket, StorageClient]:
    """Check the settings, build the app and bind its socket.

    Raises:
        _ServeError: A setting is wrong, a dependency is missing, or the address cannot be bound.
    """
    try:
        configuration = storage_configuration(ctx)
    except ConfigurationError as exc:
        raise _ServeError(str(exc)) from None
    try:
        check_backend(configuration.storage_client, backend_names(served_only=True))
    except click.BadParameter as exc:
        exc.ctx, exc.param_hint = ctx, "'--storage-client' (or RECOVERABLE_STORAGE_CLIENT)"
        raise
    host: str = options["host"]
    token = configuration.http_token or None
    if token is None and not is_loopback(host):
        raise _ServeError(
            f"binding {host} makes the stores reachable from other machines, so a token is required: set "
            "RECOVERABLE_HTTP_TOKEN (or pass --token), and give the same token to the clients"
        )
    try:
        from recoverable.server import create_app  # noqa: PLC0415 - optional dependencies
        from recoverable.server._app import DEFAULT_MAX_BODY_SIZE  # noqa: PLC0415
        from recoverable.server._uvicorn import ForegroundServer, bind, url_of, uvicorn_config  # noqa: PLC0415
    except MissingDependencyError as exc:
        raise _ServeError(str(exc)) from None
    try:
        storage_client = open_storage(configuration)
    except (MissingDependencyError, ConfigurationError) as exc:
        raise _ServeError(str(exc)) from None
    limits = {name: options[name] for name in ("max_key_length", "max_bytes_in_flight") if options[name] is not None}
    try:
        app = create_app(
            storage_client=storage_client,
            token=token,
            max_body_size=options["max_body_size"] or DEFAULT_MAX_BODY_SIZE,
            body_timeout=options["body_timeout"],
            **limits,
        )
    except ConfigurationError as exc:
        raise _ServeError(str(exc)) from None
    try:
        sock = bind(host, options["port"])
    except OSError as exc:
        raise _ServeError(f"cannot listen on {host}:{options['port']}: {exc.strerror or exc}", 1) from None

    log_level: str = options["log_level"]
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = ForegroundServer(
        uvicorn_config(
            app,
            host=host,
            port=sock.getsockname()[1],
            log_level=log_level,
            access_log=options["access_log"],
            timeout_graceful_shutdown=options["graceful_timeout"],
            header_timeout=options["header_timeout"],
        )
    )
    logger.info(
        "serving the key-value stores of %s on %s/v2 (%s)",
        _where(configuration, storage_client),
        url_of(sock),
        "a bearer token is required" if token else "no token: reachable from this machine only",
    )
    return server, sock, storage_client


def _where(configuration: Configuration, client: StorageClient) -> str:
    """How the log names where the served stores are."""
    details: Any = client
    described: dict[str, Callable[[], str]] = {
        "file_system": lambda: f"the folder {configuration.storage_dir.resolve()}",
        "memory": lambda: "memory (the stores are gone when the server stops)",
        "redis": lambda: f"Redis at {details.server}",
        "sql": lambda: f"the database {details.database}",
    }
    describe = described.get(configuration.storage_client)
    return describe() if describe is not None else f"the {configuration.storage_client} storage client"


async def _run(server: ForegroundServer, sock: socket.socket, storage_client: StorageClient) -> None:
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
        await storage_client.aclose()

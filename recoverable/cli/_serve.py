"""`recoverable serve`: a storage client served over the key-value store API v2 by uvicorn."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import sys
from typing import TYPE_CHECKING

from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError, MissingDependencyError
from recoverable.storages import FileSystemStorageClient, MemoryStorageClient

if TYPE_CHECKING:
    import argparse
    import socket

    from recoverable.server._uvicorn import ForegroundServer
    from recoverable.storages import StorageClient

__all__ = ["is_loopback", "serve"]

logger = logging.getLogger("recoverable.server")


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


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM or SIGINT; return the exit status (0 after a graceful stop)."""
    try:
        server, sock, storage_client = _prepare(args)
    except _ServeError as exc:
        print(f"recoverable serve: error: {exc}", file=sys.stderr, flush=True)  # noqa: T201 - a command's output
        return exc.status
    asyncio.run(_run(server, sock, storage_client))
    if not server.started:
        print("recoverable serve: error: the server did not start; see the log above", file=sys.stderr)  # noqa: T201
        return 1
    logger.info("stopped gracefully")
    return 0


def _prepare(args: argparse.Namespace) -> tuple[ForegroundServer, socket.socket, StorageClient]:
    """Check the settings, build the app and bind its socket.

    Raises:
        _ServeError: A setting is wrong, a dependency is missing, or the address cannot be bound.
    """
    try:
        configuration = Configuration.from_env()
    except ConfigurationError as exc:
        raise _ServeError(str(exc)) from None
    token: str | None = (args.token if args.token is not None else configuration.http_token) or None
    if token is None and not is_loopback(args.host):
        raise _ServeError(
            f"binding {args.host} makes the stores reachable from other machines, so a token is required: set "
            "RECOVERABLE_HTTP_TOKEN (or pass --token), and give the same token to the clients"
        )
    try:
        from recoverable.server import create_app  # noqa: PLC0415 - optional dependencies
        from recoverable.server._app import DEFAULT_MAX_BODY_SIZE  # noqa: PLC0415
        from recoverable.server._uvicorn import ForegroundServer, bind, url_of, uvicorn_config  # noqa: PLC0415
    except MissingDependencyError as exc:
        raise _ServeError(str(exc)) from None

    storage_client: StorageClient
    if args.storage_client == "memory":
        storage_client = MemoryStorageClient()
        where = "memory (the stores are gone when the server stops)"
    elif args.storage_client in ("redis", "sql"):
        storage_client, where = _database_client(args, configuration)
    else:
        file_system = FileSystemStorageClient(storage_dir=args.storage_dir or configuration.storage_dir)
        storage_client = file_system
        where = f"the folder {file_system.storage_dir.resolve()}"
    limits: dict[str, int] = {}
    if args.max_key_length is not None:
        limits["max_key_length"] = args.max_key_length
    if args.max_bytes_in_flight is not None:
        limits["max_bytes_in_flight"] = args.max_bytes_in_flight
    try:
        app = create_app(
            storage_client=storage_client,
            token=token,
            max_body_size=args.max_body_size or DEFAULT_MAX_BODY_SIZE,
            body_timeout=args.body_timeout,
            **limits,
        )
    except ConfigurationError as exc:
        raise _ServeError(str(exc)) from None
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise _ServeError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", 1) from None

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = ForegroundServer(
        uvicorn_config(
            app,
            host=args.host,
            port=sock.getsockname()[1],
            log_level=args.log_level,
            access_log=args.access_log,
            timeout_graceful_shutdown=args.graceful_timeout,
            header_timeout=args.header_timeout,
        )
    )
    logger.info(
        "serving the key-value stores of %s on %s/v2 (%s)",
        where,
        url_of(sock),
        "a bearer token is required" if token else "no token: reachable from this machine only",
    )
    return server, sock, storage_client


async def _run(server: ForegroundServer, sock: socket.socket, storage_client: StorageClient) -> None:
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
        await storage_client.aclose()


def _database_client(args: argparse.Namespace, configuration: Configuration) -> tuple[StorageClient, str]:
    """The Redis or SQL storage client the arguments ask for, and how to name it in the log."""
    try:
        if args.storage_client == "redis":
            from recoverable.storages import RedisStorageClient  # noqa: PLC0415 - redis is optional

            redis = RedisStorageClient(args.redis_url or configuration.redis_url)
            return redis, f"Redis at {redis.server}"
        from recoverable.storages import SqlStorageClient  # noqa: PLC0415 - SQLAlchemy is optional

        sql = SqlStorageClient(args.sql_url or configuration.sql_url)
    except (MissingDependencyError, ConfigurationError) as exc:
        raise _ServeError(str(exc)) from None
    return sql, f"the database {sql.database}"

"""Running the app with uvicorn: in the foreground (`recoverable serve`) or as a task of a running program."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from typing import TYPE_CHECKING, Any

from recoverable.errors import MissingDependencyError

try:
    import uvicorn
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise MissingDependencyError(
        "`recoverable serve` needs uvicorn and Starlette: pip install 'recoverable[server]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator
    from types import FrameType

    from starlette.types import ASGIApp

__all__ = ["ForegroundServer", "bind", "serve_in_background", "uvicorn_config"]

_MAX_REQUEST_HEAD = 128 * 1024
"""Longest request line and headers: a key of 1024 emoji is 12 KiB once percent-encoded."""


def uvicorn_config(app: ASGIApp, **options: Any) -> uvicorn.Config:
    """A uvicorn configuration for the app: HTTP/1.1 only, no websockets, lifespan on, long request heads."""
    settings: dict[str, Any] = {
        "lifespan": "on",
        "ws": "none",
        "h11_max_incomplete_event_size": _MAX_REQUEST_HEAD,
        "server_header": False,
    }
    settings.update(options)
    return uvicorn.Config(app, **settings)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host and port (port 0 picks a free one).

    Raises:
        OSError: The address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP rather than 0: asyncio turns Nagle's algorithm off only on sockets that say they are TCP,
    # and with it on, every answer written in two parts waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)  # noqa: FBT003 - the socket API takes a positional flag
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    """The http:// URL a listening socket is reached at."""
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the signals to the program it runs in."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ForegroundServer(uvicorn.Server):
    """A uvicorn server owning the process: SIGTERM and SIGINT shut it down gracefully, then it returns.

    Unlike plain uvicorn, it does not raise the signal again after the shutdown, so a graceful stop ends
    the process with exit status 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.handle_exit(sig, frame)


@contextlib.asynccontextmanager
async def serve_in_background(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in a task of the running loop; yield its URL; shut it down gracefully on exit.

    Args:
        app: The ASGI app, e.g. from `create_app()`.
        host: The address to bind.
        port: The port; 0 picks a free one.
        options: More `uvicorn.Config` settings (`log_config=None` and `access_log=False` by default).

    Raises:
        OSError: The address cannot be bound.
        RuntimeError: The server did not start (its lifespan failed).
    """
    options.setdefault("log_config", None)
    options.setdefault("access_log", False)
    server = _EmbeddedServer(uvicorn_config(app, host=host, port=port, **options))
    sock = bind(host, port)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="recoverable uvicorn server")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"the server on {url_of(sock)} stopped before it started")
            await asyncio.sleep(0.005)
        yield url_of(sock)
    finally:
        server.should_exit = True
        try:
            await task
        finally:
            sock.close()

"""Running the app with uvicorn: in the foreground (`recoverable serve`) or as a task of a running program."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import socket
from typing import TYPE_CHECKING, Any

from recoverable.errors import ConfigurationError, MissingDependencyError

try:
    import h11
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise MissingDependencyError(
        "`recoverable serve` needs uvicorn and Starlette: pip install 'recoverable[server]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator
    from types import FrameType

    from starlette.types import ASGIApp

__all__ = ["DEFAULT_HEADER_TIMEOUT", "ForegroundServer", "bind", "serve_in_background", "uvicorn_config"]

logger = logging.getLogger("recoverable.server")

_MAX_REQUEST_HEAD = 128 * 1024
"""Longest request line and headers: a key of 1024 emoji is 12 KiB once percent-encoded."""

DEFAULT_HEADER_TIMEOUT = 10.0
"""Seconds a connection has to send a whole request line and headers."""

DEFAULT_SEND_TIMEOUT = 30.0
"""Seconds a client may leave an answer unread, with the server's send buffer full, before it is cut off."""

_DRAIN_TIMEOUT = 30.0
"""Seconds the rest of a body the app refused without reading may take to arrive, before the connection is closed."""

_CLOSE_GRACE = 5.0
"""Seconds a connection closed for being too slow has to take its last answer, before it is cut."""


def uvicorn_config(
    app: ASGIApp,
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    send_timeout: float = DEFAULT_SEND_TIMEOUT,
    **options: Any,
) -> uvicorn.Config:
    """A uvicorn configuration for the app: HTTP/1.1 only, no websockets, lifespan on, long request heads.

    Args:
        app: The ASGI app.
        header_timeout: Seconds a connection has to send its request line and headers, from when it opens
            or from the first byte of its next request; then it gets 408 and is closed.
        send_timeout: Seconds a client may read nothing of an answer while the server's send buffer is
            full; then the connection is cut, and the answer's memory freed.
        options: More `uvicorn.Config` settings.

    Raises:
        ConfigurationError: A timeout is not a positive number.
    """
    for name, value in (("header_timeout", header_timeout), ("send_timeout", send_timeout)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    guarded = {"header_timeout": float(header_timeout), "send_timeout": float(send_timeout)}
    settings: dict[str, Any] = {
        "lifespan": "on",
        "ws": "none",
        # Always h11 (never httptools), with the timeouts uvicorn lacks.
        "http": type("GuardedH11Protocol", (_GuardedH11Protocol,), guarded),
        "h11_max_incomplete_event_size": _MAX_REQUEST_HEAD,
        "server_header": False,
    }
    settings.update(options)
    return uvicorn.Config(app, **settings)


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that take too long to send a request or to read an answer.

    uvicorn has no such timeout: its keep-alive timer runs only between requests, and stops at the first
    byte of the next one, so a client sending half a request line (or nothing at all on a new connection)
    keeps its connection, and its file descriptor, for ever. Here the request line and headers must be
    complete within `header_timeout` of the connection opening, or of the first byte of the next request;
    otherwise the client gets 408 and the connection is closed. The rest of a body the app answered
    without reading (413, 503, ...) is read and thrown away for at most `_DRAIN_TIMEOUT`, so that the
    client gets to read the answer, then the connection is closed (uvicorn's keep-alive timeout closes it
    sooner when nothing comes). The app bounds how slowly a body it reads may arrive.

    uvicorn has no write timeout either: a client that stops reading an answer keeps its connection and
    the answer's memory for ever. Here a connection whose send buffer stays full for `send_timeout` is cut.
    """

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    send_timeout: float = DEFAULT_SEND_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard: asyncio.TimerHandle | None = None
        self._guarding: str | None = None
        self._stalled: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._update_guard()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._update_guard()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._update_guard()

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_guard(None)
        self._set_stalled(stalled=False)
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._set_stalled(stalled=True)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._set_stalled(stalled=False)

    def _set_stalled(self, *, stalled: bool) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        if stalled:
            self._stalled = self.loop.call_later(self.send_timeout, self._cut_off)

    def _cut_off(self) -> None:
        self._stalled = None
        logger.debug("cutting off %s: it read nothing of its answer for %g s", self.client, self.send_timeout)
        self.transport.abort()

    def _update_guard(self) -> None:
        """Arm the timer that matches what the connection waits for, keeping its deadline while it waits."""
        if self.transport.is_closing():
            self._set_guard(None)
            return
        waiting = None
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self.conn.their_state is h11.IDLE:
            # A request head is due on a new connection, or has begun; an idle keep-alive connection is
            # left to uvicorn's keep-alive timeout.
            if self.cycle is None or self.conn.trailing_data[0]:
                waiting = "head"
        elif idle and self.conn.their_state is h11.SEND_BODY:
            waiting = "drain"
        self._set_guard(waiting)

    def _set_guard(self, waiting: str | None) -> None:
        if waiting == self._guarding:
            return
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        self._guarding = waiting
        if waiting is not None:
            delay = self.header_timeout if waiting == "head" else _DRAIN_TIMEOUT
            self._guard = self.loop.call_later(delay, self._expire)

    def _expire(self) -> None:
        self._guard = None
        if self.transport.is_closing():
            return
        if self._guarding == "head" and self.conn.trailing_data[0]:
            # h11 cannot answer a request it has not parsed yet, so the answer is written as it is.
            message = f"the request line and headers did not arrive within {self.header_timeout:g} s"
            body = json.dumps(
                {"error": {"type": "request-timeout", "message": message}}, separators=(",", ":")
            ).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json; charset=utf-8\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
        logger.debug("closing the connection of %s: its %s took too long", self.client, self._guarding)
        self.transport.close()
        # close() waits until what was written is sent, which a client that reads nothing can hold off.
        self.loop.call_later(_CLOSE_GRACE, self.transport.abort)


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
